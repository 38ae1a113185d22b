//! The kernel log from a point on: [`KmsgTail`] opens /dev/kmsg and seeks to its end
//! before the action under test, so that what it reads afterwards is exactly the records
//! logged since.  Records overwritten before they were read (the ring wrapped) are an
//! error, never silently skipped: a lost record could be the splat the test looks for.
//! [`judge`] and [`splats`] find the kernel's problems in what was read, with vmrun's
//! classifier: a test's kernel log is judged as the console log of the whole run is.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use vmrun::verdict;
pub use vmrun::verdict::{Kind, Splats};

pub struct KmsgTail {
    f: File,
}

impl KmsgTail {
    /// Opens /dev/kmsg positioned after the last record logged so far.
    pub fn from_now() -> Result<KmsgTail> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .context("opening /dev/kmsg")?;
        // SAFETY: lseek on a descriptor we own; /dev/kmsg supports SEEK_END (to the end
        // of the ring: only records logged from now on are read).
        let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("lseek(/dev/kmsg, SEEK_END)");
        }
        Ok(KmsgTail { f })
    }

    /// The messages logged since the last call (or since [`KmsgTail::from_now`]).
    pub fn lines(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16384];
        loop {
            match self.f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some((_, msg)) = rec.split_once(';') {
                        out.push(msg.lines().next().unwrap_or("").to_string());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => bail!(
                    "kernel log records were overwritten before this test read them (the ring \
                     wrapped; {} read so far): a splat could be among them",
                    out.len()
                ),
                Err(e) => return Err(e).context("reading /dev/kmsg"),
            }
        }
        Ok(out)
    }
}

/// The kernel problems in `lines` (messages as [`KmsgTail::lines`] gives them), judged
/// as vmrun judges the console log of a run (`vmrun::verdict`): a panic, an Oops, a BUG,
/// a KASAN, KFENCE or UBSAN report, a lockdep splat, a WARNING, a hung task, a lockup or
/// an RCU stall.
pub fn judge(lines: &[String]) -> Splats {
    verdict::judge_messages(lines)
}

/// The kernel problems in `lines`, for a test's failure message: one entry per stretch of
/// the log with problems, naming them, then the stretch itself. Empty for a clean log.
pub fn splats(lines: &[String]) -> Vec<String> {
    let s = judge(lines);
    s.excerpts
        .iter()
        .map(|ex| {
            let stretch = ex.first_line..ex.first_line + ex.lines.len();
            let found = s.findings.iter().filter(|f| stretch.contains(&f.line_no));
            let mut out: Vec<String> = found
                .map(|f| format!("{} (kernel log line {}): {}", f.kind, f.line_no, f.message))
                .collect();
            out.extend(ex.lines.iter().map(|l| format!("  | {l}")));
            out.join("\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    /// Messages a test's kernel log has when all is well, some of which name a problem
    /// of the device, not of the kernel.
    const CLEAN: &str = "\
ublk_drv: device 0 added
 ublkb0: p1
EXT4-fs (ublkb0): mounted filesystem with ordered data mode. Quota mode: none.
I/O error, dev ublkb0, sector 2048 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2
Buffer I/O error on dev ublkb0, logical block 256, lost async page write
loop0: detected capacity change from 0 to 131072
INFO: lockdep is turned off.
sysrq: Show Blocked State";

    const KASAN: &str = "\
==================================================================
BUG: KASAN: slab-use-after-free in ublk_ch_splice_read+0x1c/0x80
Read of size 8 at addr ffff888004d21448 by task iou-wrk-231/236

CPU: 1 PID: 236 Comm: iou-wrk-231 Not tainted 6.1.192-ublkzc-debug #1
Call Trace:
 <TASK>
 dump_stack_lvl+0x5b/0x77
 kasan_report+0xb1/0xe0
 ublk_ch_splice_read+0x1c/0x80
 </TASK>
==================================================================
ublk_drv: device 0 removed";

    // lockdep opens with an empty message
    const LOCKDEP: &str = "\n\
======================================================
WARNING: possible circular locking dependency detected
6.1.192-ublkzc-debug #1 Not tainted
------------------------------------------------------
iou-wrk-231/236 is trying to acquire lock:
ffff888003c8a0b8 (&pipe->mutex/1){+.+.}-{3:3}, at: splice_direct_to_actor+0x11a/0x4f0";

    const WARNING: &str = "\
------------[ cut here ]------------
WARNING: CPU: 1 PID: 213 at fs/splice.c:1123 splice_dismiss_pipe+0x7/0x90
Modules linked in:
CPU: 1 PID: 213 Comm: ublk-suite Not tainted 6.1.192-ublkzc #1
RIP: 0010:splice_dismiss_pipe+0x7/0x90
---[ end trace 0000000000000000 ]---
after the trace";

    const HUNG_TASK: &str = "\
INFO: task fio:201 blocked for more than 120 seconds.
      Not tainted 6.1.192-ublkzc #1
\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.
task:fio             state:D stack:0     pid:201   ppid:1      flags:0x00004000";

    #[test]
    fn clean_log() {
        let l = log(CLEAN);
        assert!(judge(&l).clean(), "{:?}", judge(&l).findings);
        assert!(splats(&l).is_empty());
        assert!(splats(&[]).is_empty());
    }

    #[test]
    fn kasan_report() {
        let l = log(&format!("{CLEAN}\n{KASAN}"));
        let s = judge(&l);
        assert_eq!(s.kinds(), [Kind::Kasan]);
        assert_eq!(s.findings[0].line_no, 10);
        let bad = splats(&l);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with(
            "KASAN report (kernel log line 10): BUG: KASAN: slab-use-after-free in \
             ublk_ch_splice_read+0x1c/0x80\n"
        ));
        assert!(bad[0].contains("  | Read of size 8 at addr"), "{}", bad[0]);
        // the excerpt ends with the report's closing rule
        assert!(bad[0]
            .ends_with("  | =================================================================="));
    }

    #[test]
    fn lockdep_splat() {
        let l = log(LOCKDEP);
        assert_eq!(l[0], "");
        let s = judge(&l);
        assert_eq!(s.kinds(), [Kind::Lockdep]);
        assert_eq!(s.findings[0].line_no, 3);
        assert_eq!(
            s.findings[0].message,
            "WARNING: possible circular locking dependency detected"
        );
    }

    #[test]
    fn warning() {
        let l = log(WARNING);
        assert_eq!(judge(&l).kinds(), [Kind::Warning]);
        let bad = splats(&l);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with(
            "WARNING (kernel log line 2): WARNING: CPU: 1 PID: 213 at fs/splice.c:1123"
        ));
        assert!(bad[0].contains("  | ------------[ cut here ]------------"));
        assert!(
            !bad[0].contains("after the trace"),
            "the excerpt ends at the end marker"
        );
    }

    #[test]
    fn hung_task() {
        let s = judge(&log(HUNG_TASK));
        assert_eq!(s.kinds(), [Kind::HungTask]);
        assert_eq!(
            s.findings[0].message,
            "INFO: task fio:201 blocked for more than 120 seconds."
        );
    }

    /// Problems that no keyword such as WARNING, BUG, Oops or KASAN names: an RCU stall,
    /// lockdep's INFO report of an unregistered key, a panic.
    #[test]
    fn more_than_keywords() {
        let l = log("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
                     INFO: trying to register non-static key.\n\
                     Kernel panic - not syncing: Fatal exception");
        assert_eq!(
            judge(&l).kinds(),
            [Kind::Panic, Kind::Lockdep, Kind::RcuStall]
        );
    }

    #[test]
    fn separate_splats_are_separate_entries() {
        let gap = vec!["ublkb0: p1"; 200].join("\n");
        let l = log(&format!("{WARNING}\n{gap}\n{HUNG_TASK}"));
        let bad = splats(&l);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("WARNING "));
        assert!(bad[1].starts_with("hung task "));
    }
}
