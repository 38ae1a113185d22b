//! Judging a console log: kernel splats, and what the guest's init reported.
//!
//! Kernel messages are told from the command's own output by their printk timestamp
//! (`[    1.234567] `; the kernels are built with CONFIG_PRINTK_TIME): a test that prints
//! "WARNING: ..." itself is not a kernel warning. The timestamp may sit in the middle of a
//! line, where the kernel interrupted a line of the command's output. A log with no
//! timestamped line at all is judged line by line as it is.
//!
//! [`judge_messages`] judges kernel messages alone, as a program in the guest reads them
//! from /dev/kmsg: the in-guest suite judges the kernel log of a test with it.

use crate::job::{MARK_EXIT, MARK_INIT_FAILED, MARK_START};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Panic,
    Oops,
    Bug,
    Kasan,
    Kfence,
    Ubsan,
    Lockdep,
    Warning,
    HungTask,
    Lockup,
    RcuStall,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Panic => "kernel panic",
            Kind::Oops => "Oops",
            Kind::Bug => "BUG",
            Kind::Kasan => "KASAN report",
            Kind::Kfence => "KFENCE report",
            Kind::Ubsan => "UBSAN report",
            Kind::Lockdep => "lockdep splat",
            Kind::Warning => "WARNING",
            Kind::HungTask => "hung task",
            Kind::Lockup => "lockup",
            Kind::RcuStall => "RCU stall",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line that shows a kernel problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    /// 1-based line number in the log.
    pub line_no: usize,
    /// The kernel message, without its timestamp.
    pub message: String,
}

/// A stretch of the log around one or more findings, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// 1-based line number of the first line.
    pub first_line: usize,
    pub lines: Vec<String>,
}

/// The kernel problems in a log, and the log around them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Splats {
    pub findings: Vec<Finding>,
    pub excerpts: Vec<Excerpt>,
}

impl Splats {
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The kinds found, each once, most severe first.
    pub fn kinds(&self) -> Vec<Kind> {
        kinds_of(&self.findings)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    pub excerpts: Vec<Excerpt>,
    /// The kernel's `Linux version ...` banner.
    pub kernel_version: Option<String>,
    /// Whether init said it started the command.
    pub started: bool,
    /// The status in init's last `vmrun: exit-status N` line.
    pub exit_status: Option<i32>,
    /// What init said when it failed (`vmrun: init-failed: ...`).
    pub init_failed: Option<String>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The kinds found, each once, most severe first.
    pub fn kinds(&self) -> Vec<Kind> {
        kinds_of(&self.findings)
    }
}

fn kinds_of(findings: &[Finding]) -> Vec<Kind> {
    let mut k: Vec<Kind> = findings.iter().map(|f| f.kind).collect();
    k.sort();
    k.dedup();
    k
}

/// Lines shown before a finding.
const CONTEXT_BEFORE: usize = 2;
/// Lines shown after a finding at most; a splat's end marker ends the excerpt earlier.
const CONTEXT_AFTER: usize = 100;

/// The printk timestamp `[ seconds.micros]` that starts at `s[0]`, its length if so.
fn timestamp_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    if s.first() != Some(&b'[') {
        return None;
    }
    while s.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if digits(&mut i) == 0 || s.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    if digits(&mut i) != 6 || s.get(i) != Some(&b']') {
        return None;
    }
    Some(i + 1)
}

/// The kernel message in a console line: the text after the first printk timestamp (and
/// after a `[T123]`/`[C1]` caller id, if the kernel prints those).
pub fn kernel_message(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let (start, len) = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'[')
        .find_map(|(i, _)| timestamp_len(&bytes[i..]).map(|n| (i, n)))?;
    let mut rest = &line[start + len..];
    if let Some(r) = rest.strip_prefix('[') {
        if let Some(end) = r.find(']') {
            let id = r[..end].trim_start();
            if id.len() > 1
                && id.starts_with(['T', 'C'])
                && id[1..].bytes().all(|b| b.is_ascii_digit())
            {
                rest = &r[end + 1..];
            }
        }
    }
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

const LOCKDEP_WARNINGS: &[&str] = &[
    "possible circular locking dependency detected",
    "possible recursive locking detected",
    "inconsistent lock state",
    "possible irq lock inversion dependency detected",
    "-unsafe lock order detected",
    "suspicious RCU usage",
    "bad unlock balance detected",
    "held lock freed",
    "still has locks held",
    "lock held when returning to user space",
    "Nested lock was not taken",
    "bad contention detected",
    "chain_key collision",
];

/// "Oops: 0002 [#1] PREEMPT SMP", "general protection fault, ...: 0000 [#1] ...",
/// "invalid opcode: 0000 [#1] ...": the header line of arch/x86 __die().
fn is_die_header(m: &str) -> bool {
    let Some(pos) = m.find(" [#") else {
        return false;
    };
    let (head, tail) = (&m[..pos], &m[pos + 3..]);
    let code_ok = head.len() >= 6
        && head.as_bytes()[head.len() - 6..head.len() - 4] == *b": "
        && head[head.len() - 4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit());
    let n = tail.bytes().take_while(u8::is_ascii_digit).count();
    code_ok && n > 0 && tail.as_bytes().get(n) == Some(&b']')
}

/// The kind of problem a kernel message starts, if it starts one.
pub fn classify(m: &str) -> Option<Kind> {
    let m = m.trim_end();
    // pr_fmt prefixes of the reporters.
    let bare = m
        .strip_prefix("watchdog: ")
        .or_else(|| m.strip_prefix("rcu: "))
        .unwrap_or(m);
    if m.starts_with("Kernel panic - not syncing") {
        return Some(Kind::Panic);
    }
    if bare.starts_with("BUG: KASAN: ") {
        return Some(Kind::Kasan);
    }
    if bare.starts_with("BUG: KFENCE: ") {
        return Some(Kind::Kfence);
    }
    if bare.starts_with("UBSAN: ") {
        return Some(Kind::Ubsan);
    }
    if bare.starts_with("BUG: soft lockup")
        || bare.starts_with("BUG: workqueue lockup")
        || bare.contains("Watchdog detected hard LOCKUP")
    {
        return Some(Kind::Lockup);
    }
    if bare.starts_with("INFO: task ") && bare.contains(" blocked for more than ") {
        return Some(Kind::HungTask);
    }
    if bare.starts_with("INFO: ")
        && (bare.contains("detected stall") || bare.contains("detected expedited stall"))
    {
        return Some(Kind::RcuStall);
    }
    if let Some(w) = bare.strip_prefix("WARNING: ") {
        if LOCKDEP_WARNINGS.iter().any(|l| w.contains(l)) {
            return Some(Kind::Lockdep);
        }
        if w.starts_with("CPU: ") {
            return Some(Kind::Warning);
        }
    }
    if bare.starts_with("INFO: trying to register non-static key")
        || (bare.starts_with("BUG: MAX_") && bare.ends_with("too low!"))
        || (bare.starts_with("BUG: key ") && bare.contains("has not been registered"))
        || bare.starts_with("BUG: looking up invalid subclass")
    {
        return Some(Kind::Lockdep);
    }
    if is_die_header(bare) {
        return Some(Kind::Oops);
    }
    if bare.starts_with("BUG: ")
        || bare.starts_with("kernel BUG at ")
        || bare.starts_with("Kernel BUG at ")
    {
        return Some(Kind::Bug);
    }
    None
}

/// Whether a kernel message ends a splat: the end markers of oops_exit() and panic(), and
/// the closing rule of a KASAN report.
fn ends_splat(m: &str) -> bool {
    m.starts_with("---[ end ") || m.starts_with("=================================")
}

/// The findings in `lines` and the excerpts around them; `msg_of` gives the kernel
/// message of a line, None for a line that is not one.
fn find_splats(lines: &[&str], msg_of: impl Fn(&str) -> Option<String>) -> Splats {
    let mut s = Splats::default();
    let mut ranges: Vec<(usize, usize)> = Vec::new(); // [start, end) indices
    for (i, line) in lines.iter().enumerate() {
        let Some(m) = msg_of(line) else { continue };
        let Some(kind) = classify(&m) else { continue };
        s.findings.push(Finding {
            kind,
            line_no: i + 1,
            message: m.trim_end().to_string(),
        });
        let start = i.saturating_sub(CONTEXT_BEFORE);
        let mut end = (i + 1 + CONTEXT_AFTER).min(lines.len());
        // The search starts after the finding: a KASAN report's opening rule precedes it.
        if let Some(j) = (i + 1..end).find(|&j| msg_of(lines[j]).is_some_and(|m| ends_splat(&m))) {
            end = j + 1;
        }
        match ranges.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => ranges.push((start, end)),
        }
    }
    s.excerpts = ranges
        .into_iter()
        .map(|(a, b)| Excerpt {
            first_line: a + 1,
            lines: lines[a..b].iter().map(|l| l.to_string()).collect(),
        })
        .collect();
    s
}

/// Judges kernel messages alone, one a line and without printk timestamps, as
/// /dev/kmsg gives them (the text after the `;` of each record): the same findings,
/// each message classified by [`classify`], and excerpts as [`judge`] makes them, with
/// line numbers counted from 1 in `messages`.
pub fn judge_messages<S: AsRef<str>>(messages: &[S]) -> Splats {
    let lines: Vec<&str> = messages.iter().map(AsRef::as_ref).collect();
    find_splats(&lines, |l| Some(l.to_string()))
}

/// Judges a whole console log.
pub fn judge(log: &str) -> Verdict {
    let lines: Vec<&str> = log.lines().map(|l| l.trim_end_matches('\r')).collect();
    let timestamped = lines.iter().any(|l| kernel_message(l).is_some());
    let msg_of = |l: &str| -> Option<String> {
        if timestamped {
            kernel_message(l).map(str::to_string)
        } else {
            Some(l.to_string())
        }
    };

    let mut v = Verdict::default();
    for line in &lines {
        if let Some(pos) = line.find(MARK_EXIT) {
            let rest = &line[pos + MARK_EXIT.len()..];
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            if let Ok(code) = digits.parse() {
                v.exit_status = Some(code);
            }
        }
        if let Some(pos) = line.find(MARK_INIT_FAILED) {
            v.init_failed = Some(line[pos + MARK_INIT_FAILED.len()..].to_string());
        }
        if line.contains(MARK_START) {
            v.started = true;
        }
        if v.kernel_version.is_none() {
            if let Some(m) = msg_of(line) {
                if let Some(pos) = m.find("Linux version ") {
                    v.kernel_version = Some(m[pos..].to_string());
                }
            }
        }
    }
    let s = find_splats(&lines, msg_of);
    v.findings = s.findings;
    v.excerpts = s.excerpts;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn timestamps() {
        assert_eq!(kernel_message("[    1.234567] hello"), Some("hello"));
        assert_eq!(kernel_message("[12345.000001] x"), Some("x"));
        assert_eq!(
            kernel_message("[    1.234567][    T1] with caller"),
            Some("with caller")
        );
        assert_eq!(
            kernel_message("user text[    0.500000] WARNING: CPU: 0"),
            Some("WARNING: CPU: 0")
        );
        assert_eq!(kernel_message("[1.23] short"), None);
        assert_eq!(kernel_message("no stamp"), None);
        assert_eq!(kernel_message("[ x.123456] bad"), None);
    }

    #[test]
    fn classification() {
        let cases: &[(&str, Option<Kind>)] = &[
            ("Kernel panic - not syncing: sysrq triggered crash", Some(Kind::Panic)),
            ("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100", Some(Kind::Panic)),
            ("Oops: 0002 [#1] PREEMPT SMP NOPTI", Some(Kind::Oops)),
            ("general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP", Some(Kind::Oops)),
            ("invalid opcode: 0000 [#1] PREEMPT SMP", Some(Kind::Oops)),
            ("BUG: unable to handle page fault for address: 0000000000001234", Some(Kind::Bug)),
            ("kernel BUG at drivers/block/ublk_drv.c:123!", Some(Kind::Bug)),
            ("BUG: sleeping function called from invalid context at mm/slab.h:737", Some(Kind::Bug)),
            ("BUG: KASAN: slab-use-after-free in ublk_ch_splice_read+0x1c/0x80", Some(Kind::Kasan)),
            ("BUG: KFENCE: out-of-bounds read in foo+0x1/0x2", Some(Kind::Kfence)),
            ("UBSAN: array-index-out-of-bounds in fs/splice.c:42:7", Some(Kind::Ubsan)),
            ("WARNING: CPU: 1 PID: 187 at fs/splice.c:123 splice_dismiss_pipe+0x7/0x90", Some(Kind::Warning)),
            ("WARNING: possible circular locking dependency detected", Some(Kind::Lockdep)),
            ("WARNING: possible recursive locking detected", Some(Kind::Lockdep)),
            ("WARNING: inconsistent lock state", Some(Kind::Lockdep)),
            ("WARNING: suspicious RCU usage", Some(Kind::Lockdep)),
            ("WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected", Some(Kind::Lockdep)),
            ("WARNING: fio/201 still has locks held!", Some(Kind::Lockdep)),
            ("INFO: trying to register non-static key.", Some(Kind::Lockdep)),
            ("BUG: MAX_LOCKDEP_ENTRIES too low!", Some(Kind::Lockdep)),
            ("INFO: task fio:201 blocked for more than 120 seconds.", Some(Kind::HungTask)),
            ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [fio:201]", Some(Kind::Lockup)),
            ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", Some(Kind::RcuStall)),
            ("rcu: INFO: rcu_sched self-detected stall on CPU", Some(Kind::RcuStall)),
            ("INFO: rcu_tasks detected stalls on tasks:", Some(Kind::RcuStall)),
            // Harmless lines of a normal boot.
            ("Linux version 6.1.192-base (gcc) #1 SMP", None),
            ("Unstable clock detected, switching default tracing clock to \"global\"", None),
            ("reboot: Power down", None),
            ("INFO: lockdep is turned off.", None),
            ("---[ end trace 0000000000000000 ]---", None),
        ];
        for (m, want) in cases {
            assert_eq!(classify(m), *want, "{m}");
        }
    }

    #[test]
    fn clean_log() {
        let v = judge(&data("clean.log"));
        assert!(v.clean(), "{:?}", v.findings);
        assert!(v.excerpts.is_empty());
        assert!(v.started);
        assert_eq!(v.exit_status, Some(0));
        assert_eq!(v.init_failed, None);
        assert!(v
            .kernel_version
            .as_deref()
            .is_some_and(|k| k.starts_with("Linux version 6.1.")));
    }

    #[test]
    fn panic_log() {
        let v = judge(&data("panic.log"));
        assert_eq!(v.kinds(), [Kind::Panic]);
        assert!(v.findings[0]
            .message
            .starts_with("Kernel panic - not syncing: sysrq triggered crash"));
        assert_eq!(
            v.exit_status, None,
            "the guest never got to report a status"
        );
        assert!(v.started);
        assert_eq!(v.excerpts.len(), 1);
        let ex = &v.excerpts[0];
        assert!(ex.lines.iter().any(|l| l.contains("Call Trace:")));
        // panic=-1 reboots before the end marker: the excerpt runs to the end of the log.
        assert!(
            ex.lines.last().unwrap().contains("Kernel Offset: disabled"),
            "{:?}",
            ex.lines.last()
        );
    }

    #[test]
    fn warning_log() {
        let v = judge(&data("warning.log"));
        assert_eq!(v.kinds(), [Kind::Warning]);
        assert!(v.findings[0]
            .message
            .starts_with("WARNING: CPU: 1 PID: 213 at fs/splice.c:"));
        assert_eq!(
            v.exit_status,
            Some(0),
            "a clean exit does not hide a WARNING"
        );
        let ex = &v.excerpts[0];
        assert!(
            ex.lines[1].contains("------------[ cut here ]------------"),
            "{:?}",
            ex.lines
        );
        assert!(ex.lines.last().unwrap().contains("---[ end trace"));
    }

    #[test]
    fn kasan_log() {
        let v = judge(&data("kasan.log"));
        assert_eq!(v.kinds(), [Kind::Kasan]);
        assert!(v.findings[0]
            .message
            .starts_with("BUG: KASAN: use-after-free in ublk_ch_splice_read"));
        let ex = &v.excerpts[0];
        assert!(ex
            .lines
            .iter()
            .any(|l| l.contains("Read of size 8 at addr")));
        assert!(ex
            .lines
            .last()
            .unwrap()
            .ends_with("=================================================================="));
        assert_eq!(
            v.exit_status,
            Some(0),
            "a clean exit does not hide a KASAN report"
        );
    }

    #[test]
    fn lockdep_log() {
        let v = judge(&data("lockdep.log"));
        assert_eq!(v.kinds(), [Kind::Lockdep]);
        assert!(v.findings[0]
            .message
            .contains("possible circular locking dependency detected"));
        assert_eq!(v.exit_status, Some(1));
        let ex = &v.excerpts[0];
        assert!(ex.lines[1].ends_with("======================================================"));
    }

    /// The kernel messages of each sample log alone, as /dev/kmsg gives them (no
    /// timestamps, no lines of the command), are judged as the log is.
    #[test]
    fn messages_alone_are_judged_as_the_log() {
        for name in [
            "clean.log",
            "panic.log",
            "warning.log",
            "kasan.log",
            "lockdep.log",
        ] {
            let log = data(name);
            let messages: Vec<&str> = log.lines().filter_map(kernel_message).collect();
            let s = judge_messages(&messages);
            let v = judge(&log);
            assert_eq!(s.kinds(), v.kinds(), "{name}");
            let texts = |f: &[Finding]| f.iter().map(|f| f.message.clone()).collect::<Vec<_>>();
            assert_eq!(texts(&s.findings), texts(&v.findings), "{name}");
            assert_eq!(s.excerpts.len(), v.excerpts.len(), "{name}");
            for f in &s.findings {
                assert_eq!(messages[f.line_no - 1].trim_end(), f.message, "{name}");
            }
        }
    }

    #[test]
    fn messages_are_judged_one_a_line() {
        let s = judge_messages(&["WARNING: CPU: 0 PID: 9 at fs/splice.c:1 f+0x0/0x1", "ok"]);
        assert_eq!(s.kinds(), [Kind::Warning]);
        assert_eq!(s.findings[0].line_no, 1);
        assert_eq!(s.excerpts[0].lines.len(), 2);
        assert!(judge_messages(&["ublkb0: p1", "loop0: detected capacity change"]).clean());
    }

    #[test]
    fn user_output_is_not_a_kernel_message() {
        let log = "[    0.000000] Linux version 6.1.192-ublkzc\n\
                   vmrun: start (guest uptime 0.9 s): ./t\n\
                   WARNING: CPU: 0 PID: 1 at fake\n\
                   BUG: this is just a test printing\n\
                   Kernel panic - not syncing: also fake\n\
                   vmrun: exit-status 3 (exited with code 3)\n";
        let v = judge(log);
        assert!(v.clean(), "{:?}", v.findings);
        assert_eq!(v.exit_status, Some(3));
    }

    #[test]
    fn kernel_message_inside_a_user_line() {
        let log = "[    0.000000] Linux version 6.1.192\n\
                   progress 50%[   12.000000] ------------[ cut here ]------------\n\
                   [   12.000001] WARNING: CPU: 0 PID: 77 at fs/splice.c:1 f+0x0/0x1\n";
        let v = judge(log);
        assert_eq!(v.kinds(), [Kind::Warning]);
        assert_eq!(v.findings[0].line_no, 3);
    }

    #[test]
    fn untimestamped_log_is_judged_as_is() {
        let v =
            judge("Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs\n");
        assert_eq!(v.kinds(), [Kind::Panic]);
        assert_eq!(v.kernel_version.as_deref(), Some("Linux version 6.1"));
    }

    #[test]
    fn init_failure_and_nearby_findings_merge() {
        let log = "[    1.000000] BUG: unable to handle page fault for address: 0000000000000008\n\
                   [    1.000001] #PF: supervisor read access in kernel mode\n\
                   [    1.000002] Oops: 0000 [#1] PREEMPT SMP NOPTI\n\
                   [    1.000003] ---[ end trace 0000000000000000 ]---\n\
                   [    1.000004] Kernel panic - not syncing: Fatal exception\n\
                   vmrun: init-failed: mounting 9p on /run/vmrun: ENOENT\n";
        let v = judge(log);
        assert_eq!(v.kinds(), [Kind::Panic, Kind::Oops, Kind::Bug]);
        assert_eq!(v.excerpts.len(), 1, "overlapping contexts are one excerpt");
        assert_eq!(
            v.init_failed.as_deref(),
            Some("mounting 9p on /run/vmrun: ENOENT")
        );
    }
}
