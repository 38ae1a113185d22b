//! The interactive shell (`vmrun run --shell`): the console is its controlling terminal,
//! and every way a user asks to power off ends the VM the same clean way. `poweroff`,
//! `reboot` and `halt` (links to vm-init, first in the shell's PATH) send PID 1 the busybox
//! signals (SIGUSR2, SIGTERM, SIGUSR1), a runlevel 0 or 6 request on the sysvinit FIFO
//! `/run/initctl` (where systemctl's `/sbin/poweroff` falls back to when systemd is not
//! PID 1) does the same, and so does the end of the shell.

use super::console::say;
use super::exec::shell_status;
use super::mounts::mkdir;
use crate::job::{GuestStatus, GUEST_SHIM_DIR, SHIM_NAMES};
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// What asked PID 1 to power off: 0 none yet, a signal number, or [`VIA_INITCTL`] plus the
/// runlevel asked for on /run/initctl.
static POWEROFF_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signals that ask PID 1 to power off, as busybox's init has them.
const POWEROFF_SIGNALS: [Signal; 3] = [Signal::SIGUSR2, Signal::SIGTERM, Signal::SIGUSR1];
/// See [`POWEROFF_SIGNAL`].
const VIA_INITCTL: i32 = 0x100;

/// Waits for the shell `child` to end, or for a signal asking PID 1 to power off; reaps
/// every other process meanwhile.
pub(super) fn wait_for_shell(child: Pid) -> Result<GuestStatus> {
    loop {
        let what = POWEROFF_SIGNAL.load(Ordering::SeqCst);
        if what != 0 {
            let how = match what {
                VIA_INITCTL.. => format!(
                    "runlevel {} on {INITCTL}",
                    char::from(u8::try_from(what - VIA_INITCTL).unwrap_or(b'?'))
                ),
                sig => format!(
                    "{} to init",
                    Signal::try_from(sig)
                        .map(Signal::as_str)
                        .unwrap_or("a signal")
                ),
            };
            say(&format!("power-off requested ({how})"));
            return Ok(GuestStatus {
                code: 0,
                detail: format!("powered off from the shell ({how})"),
            });
        }
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(ws) if ws.pid() == Some(child) => {
                if let Some(st) = shell_status(&ws) {
                    return Ok(st);
                }
            }
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => bail!("waiting for the shell: {e}"),
        }
    }
}

/// The sysvinit control FIFO that `systemctl poweroff` writes to when systemd is not PID 1.
const INITCTL: &str = "/run/initctl";
/// `struct init_request` of sysvinit's initreq.h: magic, cmd, runlevel, sleeptime, 368
/// bytes of data.
const INIT_REQUEST_SIZE: usize = 384;
const INIT_MAGIC: i32 = 0x0309_1969;
const INIT_CMD_RUNLVL: i32 = 1;

/// The runlevel that an init_request on [`INITCTL`] asks for, if it asks for a power-off:
/// 0 (poweroff, halt) or 6 (reboot; a power-off here: QEMU runs with -no-reboot).
pub fn initctl_request(req: &[u8]) -> Option<u8> {
    let field = |i: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(
            req.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    if req.len() != INIT_REQUEST_SIZE || field(0)? != INIT_MAGIC || field(1)? != INIT_CMD_RUNLVL {
        return None;
    }
    let runlevel = u8::try_from(field(2)?).ok()?;
    matches!(runlevel, b'0' | b'6').then_some(runlevel)
}

/// Serves [`INITCTL`] in a thread: a runlevel 0 or 6 request asks for the power-off.
pub(super) fn serve_initctl() -> Result<()> {
    nix::unistd::mkfifo(INITCTL, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("creating {INITCTL}"))?;
    // Read and write, so that the FIFO never reports end-of-file between writers.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(INITCTL)
        .with_context(|| format!("opening {INITCTL}"))?;
    std::thread::spawn(move || {
        use std::io::Read;
        let mut req = [0u8; INIT_REQUEST_SIZE];
        while fifo.read_exact(&mut req).is_ok() {
            if let Some(runlevel) = initctl_request(&req) {
                POWEROFF_SIGNAL.store(VIA_INITCTL + i32::from(runlevel), Ordering::SeqCst);
            }
        }
    });
    Ok(())
}

extern "C" fn on_poweroff_signal(sig: libc::c_int) {
    POWEROFF_SIGNAL.store(sig, Ordering::SeqCst);
}

/// For a shell: catches the power-off signals, and puts `poweroff`, `reboot` and `halt`
/// (links to this program) in [`GUEST_SHIM_DIR`].
pub(super) fn setup_shell() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::Handler(on_poweroff_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in POWEROFF_SIGNALS {
        // SAFETY: the handler only stores into an atomic.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("catching {sig}"))?;
    }
    let me = std::env::current_exe().context("finding vm-init's own path")?;
    mkdir(GUEST_SHIM_DIR)?;
    for name in SHIM_NAMES {
        let link = Path::new(GUEST_SHIM_DIR).join(name);
        std::os::unix::fs::symlink(&me, &link)
            .with_context(|| format!("linking {} to {}", link.display(), me.display()))?;
    }
    Ok(())
}

/// vm-init run as `poweroff`, `reboot` or `halt` (see [`GUEST_SHIM_DIR`]): asks PID 1 to
/// power off, the way busybox's commands of these names do.
pub(super) fn shim_main() -> ! {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sig = match name.as_str() {
        "poweroff" => Signal::SIGUSR2,
        "reboot" => Signal::SIGTERM,
        "halt" => Signal::SIGUSR1,
        _ => {
            eprintln!("vm-init: this is the guest's init and must run as PID 1 inside the VM");
            std::process::exit(2);
        }
    };
    match kill(Pid::from_raw(1), sig) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: cannot signal init: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initctl_requests() {
        let req = |magic: i32, cmd: i32, runlevel: u8, len: usize| {
            let mut r = vec![0u8; len];
            for (i, v) in [magic, cmd, runlevel as i32].into_iter().enumerate() {
                if let Some(dst) = r.get_mut(i * 4..i * 4 + 4) {
                    dst.copy_from_slice(&v.to_ne_bytes());
                }
            }
            r
        };
        assert_eq!(
            initctl_request(&req(INIT_MAGIC, INIT_CMD_RUNLVL, b'0', 384)),
            Some(b'0')
        );
        assert_eq!(
            initctl_request(&req(INIT_MAGIC, INIT_CMD_RUNLVL, b'6', 384)),
            Some(b'6')
        );
        assert_eq!(
            initctl_request(&req(INIT_MAGIC, INIT_CMD_RUNLVL, b'3', 384)),
            None
        );
        assert_eq!(initctl_request(&req(INIT_MAGIC, 2, b'0', 384)), None);
        assert_eq!(
            initctl_request(&req(0x1234, INIT_CMD_RUNLVL, b'0', 384)),
            None
        );
        assert_eq!(
            initctl_request(&req(INIT_MAGIC, INIT_CMD_RUNLVL, b'0', 12)),
            None
        );
    }
}
