//! Everything vmrun shows the user, in one place: the guest console goes to stdout as it
//! comes, vmrun's own progress lines (`==> vmrun: ...`), problems and the run summary go to
//! stderr. The logic elsewhere only hands data over.

use crate::verdict::Verdict;
use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Reporter;

/// An argv as a shell would need it typed: words with special characters single-quoted.
pub fn shell_words<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let word = |a: &S| {
        let s = a.as_ref().to_string_lossy();
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c);
        if !s.is_empty() && s.chars().all(plain) {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    args.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// What the summary shows.
#[derive(Debug, Clone)]
pub struct Summary {
    pub accel: String,
    pub kernel: PathBuf,
    pub release: Option<String>,
    pub boot_to_command: Option<Duration>,
    pub total: Duration,
    pub command_status: String,
    pub verdict: String,
    pub results: PathBuf,
    pub exit_code: u8,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

impl Reporter {
    /// A progress line.
    pub fn step(&self, msg: impl Display) {
        eprintln!("==> vmrun: {msg}");
    }

    pub fn warn(&self, msg: impl Display) {
        eprintln!("==> vmrun: warning: {msg}");
    }

    pub fn error(&self, msg: impl Display) {
        eprintln!("==> vmrun: ERROR: {msg}");
    }

    /// A line of the guest's serial console.
    pub fn console_line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Output of an interactive console, passed on as it comes.
    pub fn console_raw(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// A line QEMU wrote to its stderr.
    pub fn qemu_stderr(&self, line: &str) {
        eprintln!("qemu: {line}");
    }

    /// The kernel problems of a verdict, loudly.
    pub fn problems(&self, v: &Verdict) {
        if v.clean() {
            return;
        }
        let bar = "!".repeat(78);
        let mut out = String::new();
        out.push_str(&format!(
            "{bar}\n!!! vmrun: the kernel log shows problems:\n"
        ));
        for f in &v.findings {
            out.push_str(&format!(
                "!!!   line {}: {}: {}\n",
                f.line_no, f.kind, f.message
            ));
        }
        for ex in &v.excerpts {
            out.push_str(&format!("!!! console.log, from line {}:\n", ex.first_line));
            for l in &ex.lines {
                out.push_str(&format!("!!! | {l}\n"));
            }
        }
        out.push_str(&bar);
        eprintln!("{out}");
    }

    pub fn summary(&self, s: &Summary) {
        let boot = match s.boot_to_command {
            Some(d) => format!("{} (QEMU start to the first guest command)", secs(d)),
            None => "- (the command never started)".into(),
        };
        let rows = [
            ("accelerator", s.accel.clone()),
            ("kernel", s.kernel.display().to_string()),
            (
                "release",
                s.release
                    .clone()
                    .unwrap_or_else(|| "- (no `Linux version` line)".into()),
            ),
            ("boot", boot),
            ("total", secs(s.total)),
            ("command", s.command_status.clone()),
            ("verdict", s.verdict.clone()),
            ("results", s.results.display().to_string()),
            ("exit", s.exit_code.to_string()),
        ];
        let mut out = String::from("==> vmrun: summary\n");
        for (k, v) in rows {
            out.push_str(&format!("      {k:<12} {v}\n"));
        }
        eprint!("{out}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_words(&["sh", "-c", "exit 7"]), "sh -c 'exit 7'");
        assert_eq!(shell_words(&["echo", "it's", ""]), r"echo 'it'\''s' ''");
        assert_eq!(shell_words(&["/bin/x", "--a=b,c"]), "/bin/x --a=b,c");
    }
}
