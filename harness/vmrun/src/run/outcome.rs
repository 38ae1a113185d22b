//! The outcome of a run: one exit status out of the command's status, the timeout, QEMU's
//! failure and the kernel log, so that scripts can tell a kernel problem from a failing
//! command.

use crate::console::ConsoleRun;
use crate::job::GuestStatus;
use crate::verdict::Verdict;
use std::time::Duration;

/// The VM failed: QEMU did not start, init failed, or no exit status came back.
pub const EXIT_VM_FAILURE: u8 = 123;
/// The timeout struck.
pub const EXIT_TIMEOUT: u8 = 124;
/// The kernel log shows a problem. It wins over the command's status and the timeout: a
/// command that fails or hangs after a kernel splat most likely does so because of it.
pub const EXIT_KERNEL_PROBLEM: u8 = 125;

/// `6.1.192-base` out of `Linux version 6.1.192-base (gcc ...) #1 ...`.
pub fn release_of(banner: &str) -> Option<&str> {
    banner
        .strip_prefix("Linux version ")?
        .split_whitespace()
        .next()
}

/// The outcome of a run, decided from what QEMU, the console and the status file said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: u8,
    pub command_status: String,
    pub verdict: String,
    /// A failure of the VM or the timeout, to be said as an error.
    pub error: Option<String>,
}

/// Decides the exit status (see `EXIT_*` and `vmrun --help`).
pub fn decide(
    v: &Verdict,
    status: Option<&GuestStatus>,
    timed_out: Option<Duration>,
    qemu_failure: Option<String>,
) -> Outcome {
    let status = status.cloned().or_else(|| {
        v.exit_status.map(|code| GuestStatus {
            code,
            detail: format!("exit status {code} (from the console)"),
        })
    });
    let command_status = match (&status, timed_out) {
        (Some(st), _) => format!("{} ({})", st.code, st.detail),
        (None, Some(t)) if v.started => format!("still running after {} s", t.as_secs()),
        (None, _) if v.started => "started, no exit status".into(),
        (None, _) => "never started".into(),
    };
    if !v.clean() {
        let kinds: Vec<&str> = v.kinds().iter().map(|k| k.name()).collect();
        return Outcome {
            exit_code: EXIT_KERNEL_PROBLEM,
            command_status,
            verdict: format!("KERNEL PROBLEM: {}", kinds.join(", ")),
            error: timed_out.map(|t| format!("timeout after {} s", t.as_secs())),
        };
    }
    if let Some(t) = timed_out {
        let msg = format!("timeout after {} s: killed QEMU", t.as_secs());
        return Outcome {
            exit_code: EXIT_TIMEOUT,
            command_status,
            verdict: "clean log, timeout".into(),
            error: Some(msg),
        };
    }
    match status {
        Some(st) => Outcome {
            exit_code: u8::try_from(st.code).unwrap_or(EXIT_VM_FAILURE),
            command_status,
            verdict: "clean".into(),
            error: None,
        },
        None => {
            let why = match (&v.init_failed, qemu_failure) {
                (Some(msg), _) => format!("the guest's init failed: {msg}"),
                (None, Some(q)) => q,
                (None, None) => "the guest ended without an exit status".into(),
            };
            Outcome {
                exit_code: EXIT_VM_FAILURE,
                command_status,
                verdict: "clean log, VM failure".into(),
                error: Some(why),
            }
        }
    }
}

/// What QEMU's own failure looks like, if it failed.
pub(super) fn qemu_failure(run: &ConsoleRun) -> Option<String> {
    let status = run.status?;
    let first_error = run
        .stderr
        .lines()
        .find(|l| !l.contains("warning:") && !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    if !status.success() || run.log.is_empty() {
        return Some(format!(
            "QEMU exited ({status}) before the guest reported a status{first_error}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::judge;

    #[test]
    fn release() {
        assert_eq!(
            release_of("Linux version 6.1.192-ublkzc (u@h) (gcc) #1 SMP"),
            Some("6.1.192-ublkzc")
        );
        assert_eq!(release_of("nope"), None);
    }

    const CLEAN: &str =
        "[    0.000000] Linux version 6.1.192-base\nvmrun: start (guest uptime 1.0 s): x\n";

    #[test]
    fn exit_codes() {
        let v = judge(CLEAN);
        let st = |code| GuestStatus {
            code,
            detail: format!("exited with code {code}"),
        };
        // Clean: the command's status.
        assert_eq!(decide(&v, Some(&st(0)), None, None).exit_code, 0);
        let o = decide(&v, Some(&st(7)), None, None);
        assert_eq!(
            (o.exit_code, o.verdict.as_str(), o.error),
            (7, "clean", None)
        );
        // Only the console marker: still the command's status.
        let v7 = judge(&format!(
            "{CLEAN}vmrun: exit-status 7 (exited with code 7)\n"
        ));
        assert_eq!(decide(&v7, None, None, None).exit_code, 7);
        // Timeout.
        let o = decide(&v, None, Some(Duration::from_secs(20)), None);
        assert_eq!(o.exit_code, EXIT_TIMEOUT);
        assert!(o.error.unwrap().contains("timeout after 20 s"));
        assert_eq!(o.command_status, "still running after 20 s");
        // A kernel problem wins over the status and the timeout.
        let bad = judge(&format!(
            "{CLEAN}[    2.000000] Kernel panic - not syncing: sysrq triggered crash\n"
        ));
        let o = decide(&bad, Some(&st(3)), None, None);
        assert_eq!(o.exit_code, EXIT_KERNEL_PROBLEM);
        assert!(o.verdict.contains("kernel panic"), "{}", o.verdict);
        assert_eq!(o.command_status, "3 (exited with code 3)");
        assert_eq!(
            decide(&bad, None, Some(Duration::from_secs(5)), None).exit_code,
            EXIT_KERNEL_PROBLEM
        );
        // No status at all.
        let o = decide(&v, None, None, None);
        assert_eq!(o.exit_code, EXIT_VM_FAILURE);
        assert_eq!(o.command_status, "started, no exit status");
        let o = decide(
            &judge(""),
            None,
            None,
            Some("QEMU exited (exit status: 1): bad option".into()),
        );
        assert_eq!(o.exit_code, EXIT_VM_FAILURE);
        assert!(o.error.unwrap().contains("bad option"));
        assert_eq!(o.command_status, "never started");
        let failed = judge("vmrun: init-failed: reading /run/vmrun/job: ENOENT\n");
        let o = decide(&failed, None, None, None);
        assert!(o
            .error
            .unwrap()
            .contains("init failed: reading /run/vmrun/job"));
    }
}
