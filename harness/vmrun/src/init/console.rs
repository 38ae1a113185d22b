//! The console: with nobody else to tell, it is init's only voice, and the shell's
//! terminal.

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::dup2;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Prints a line on the console as it is.
pub(super) fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints a line on the console, prefixed with `vmrun: `.
pub(super) fn say(msg: &str) {
    console(&format!("vmrun: {msg}"));
}

/// Makes /dev/console our stdin, stdout and stderr: the kernel gives init the console of
/// the root filesystem's /dev, which the host's root may not have.
pub(super) fn console_stdio() {
    if let Ok(fd) = open(
        "/dev/console",
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    ) {
        for target in 0..3 {
            let _ = dup2(fd, target);
        }
        if fd > 2 {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// The device behind /dev/console (`ttyS0` gives `/dev/ttyS0`): /dev/console itself never
/// becomes a controlling terminal.
pub fn console_device(active: &str) -> PathBuf {
    let name = active.split_whitespace().last().unwrap_or("ttyS0");
    Path::new("/dev").join(name)
}

/// Waits until the console has sent what is written to it, so that nothing is lost at
/// power-off and init's lines come after the command's.
pub(super) fn drain_console() {
    // SAFETY: tcdrain on our stdout; it only waits.
    unsafe { libc::tcdrain(1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_devices() {
        assert_eq!(console_device("ttyS0\n"), PathBuf::from("/dev/ttyS0"));
        assert_eq!(console_device("tty0 ttyS0\n"), PathBuf::from("/dev/ttyS0"));
        assert_eq!(console_device(""), PathBuf::from("/dev/ttyS0"));
    }
}
