//! After the command: nothing left running, the data synced and the status written, then
//! power-off, so that every run ends the same way whatever the command did.

use super::console::{drain_console, say};
use crate::job::{GuestStatus, GUEST_SHARE, STATUS_FILE};
use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Reaps without blocking until no children are left (true) or `deadline` passes (false).
fn reap_until(deadline: Instant) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) | Err(_) => {}
        }
    }
}

/// Ends whatever the command left running: SIGTERM (and SIGHUP, which an interactive shell
/// heeds, with `hangup`), a grace second, then SIGKILL.
pub(super) fn kill_leftovers(hangup: bool) {
    // Every process of the guest but the kernel's threads is ours (orphans come to init).
    if reap_until(Instant::now()) {
        return;
    }
    if !hangup {
        say("terminating leftover processes");
    }
    if hangup {
        let _ = kill(Pid::from_raw(-1), Signal::SIGHUP);
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if reap_until(Instant::now() + Duration::from_secs(1)) {
        return;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    if !reap_until(Instant::now() + Duration::from_secs(5)) {
        say("warning: some processes survived SIGKILL (stuck in the kernel?)");
    }
}

/// sync(2) in a thread, so that I/O stuck in the kernel cannot keep us from powering off.
pub(super) fn sync_bounded(limit: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::unistd::sync();
        let _ = tx.send(());
    });
    if rx.recv_timeout(limit).is_err() {
        say(&format!(
            "warning: sync did not finish within {} s",
            limit.as_secs()
        ));
    }
}

pub(super) fn write_status(st: &GuestStatus) -> Result<()> {
    let path = Path::new(GUEST_SHARE).join(STATUS_FILE);
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(st.encode().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn power_off() -> ! {
    drain_console();
    use nix::sys::reboot::{reboot, RebootMode};
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // Without ACPI poweroff a reboot does it: QEMU runs with -no-reboot.
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
