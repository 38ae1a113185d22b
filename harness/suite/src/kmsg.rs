//! The kernel log from a point on: [`KmsgTail`] opens /dev/kmsg and seeks to its end
//! before the action under test, so that what it reads afterwards is exactly the records
//! logged since.  Records overwritten before they were read (the ring wrapped) are an
//! error, never silently skipped: a lost record could be the splat the test looks for.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

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

/// The lines of a kernel log that are splats: WARNING, BUG, Oops, hung tasks, KASAN, ...
pub fn splats(lines: &[String]) -> Vec<String> {
    const MARKS: &[&str] = &[
        "WARNING:",
        "BUG:",
        "blocked for more than",
        "Oops",
        "general protection",
        "kernel BUG",
        "RCU stall",
        "KASAN",
        "possible circular locking",
        "UBSAN",
    ];
    lines
        .iter()
        .filter(|l| MARKS.iter().any(|m| l.contains(m)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splat_lines() {
        let l: Vec<String> = ["ok", "WARNING: CPU: 0 PID: 1", "BUG: KASAN: use-after-free"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(splats(&l).len(), 2);
    }
}
