//! The command: found in the job's PATH, prepared before the fork, run in a session of its
//! own, and waited for.

use super::console::{console_device, say};
use crate::job::{GuestStatus, Job, TermSize};
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{dup2, setsid, Pid};
use std::ffi::{CString, OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The shell's view of a wait status: the exit code, or 128 + the signal number.
pub fn shell_status(ws: &WaitStatus) -> Option<GuestStatus> {
    match *ws {
        WaitStatus::Exited(_, code) => Some(GuestStatus {
            code,
            detail: format!("exited with code {code}"),
        }),
        WaitStatus::Signaled(_, sig, core) => Some(GuestStatus {
            code: 128 + sig as i32,
            detail: format!(
                "killed by signal {} ({}){}",
                sig as i32,
                sig.as_str(),
                if core { ", core dumped" } else { "" }
            ),
        }),
        _ => None,
    }
}

/// Finds `cmd` the way execvp does, but in the job's PATH rather than our own.
pub fn resolve_command(cmd: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if cmd.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(cmd));
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"));
    std::env::split_paths(path_var)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
            .join(cmd)
        })
        .find(|p| {
            p.is_file() && nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
}

/// Everything the child needs, prepared before fork so that the child only makes syscalls.
pub(super) struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// For a shell: the console's tty device, and the terminal size to give it.
    tty: Option<(CString, TermSize)>,
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte"))
}

pub(super) fn prepare(job: &Job) -> Result<std::result::Result<Prepared, GuestStatus>> {
    let cmd = &job.args[0];
    let Some(path) = resolve_command(cmd, job.var("PATH")) else {
        say(&format!("{}: command not found", cmd.to_string_lossy()));
        return Ok(Err(GuestStatus {
            code: 127,
            detail: "command not found".into(),
        }));
    };
    let mut cwd = job.cwd.clone();
    if !cwd.is_dir() {
        say(&format!(
            "warning: the working directory {} does not exist in the guest (the guest has \
             its own /tmp, /run and /dev); using /",
            cwd.display()
        ));
        cwd = PathBuf::from("/");
    }
    let envp = job
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = OsString::from(k);
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<Result<_>>()?;
    let tty = match job.shell {
        Some(size) => {
            let active =
                std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
            Some((cstring(console_device(&active).as_os_str())?, size))
        }
        None => None,
    };
    Ok(Ok(Prepared {
        path: cstring(path.as_os_str())?,
        argv: job.args.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        envp,
        cwd: cstring(cwd.as_os_str())?,
        tty,
    }))
}

/// In the child: a session of its own, stdout and stderr on the console (inherited from
/// init), /dev/null as stdin, then exec. Never returns.
///
/// The console is deliberately not the session's controlling terminal: when a session
/// leader with a controlling serial tty exits, the kernel hangs the tty up
/// (disassociate_ctty -> tty_vhangup_session), and the hangup throws away the output still
/// waiting in the UART's buffer: a quick `uname -r` would print nothing.
///
/// A shell instead gets the console's tty as stdin, stdout, stderr and controlling
/// terminal, in the foreground: job control and ctrl-c work.
pub(super) fn exec_child(p: &Prepared) -> ! {
    let _ = setsid();
    let stdin = match &p.tty {
        Some((tty, size)) => {
            // SAFETY: open(2) on a NUL-terminated path prepared before the fork. Without
            // O_NOCTTY the tty becomes the controlling terminal of our new session.
            let fd = unsafe { libc::open(tty.as_ptr(), libc::O_RDWR) };
            if fd >= 0 {
                // SAFETY: ioctls on a descriptor we own, with arguments of their types.
                unsafe {
                    libc::ioctl(fd, libc::TIOCSCTTY, 0);
                    if size.rows > 0 && size.cols > 0 {
                        let ws = libc::winsize {
                            ws_row: size.rows,
                            ws_col: size.cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
                    }
                }
                for target in 1..3 {
                    let _ = dup2(fd, target);
                }
            }
            fd
        }
        None => open("/dev/null", OFlag::O_RDONLY, Mode::empty()).unwrap_or(-1),
    };
    if stdin >= 0 {
        let _ = dup2(stdin, 0);
        if stdin > 2 {
            let _ = nix::unistd::close(stdin);
        }
    }
    let _ = nix::unistd::chdir(p.cwd.as_c_str());
    let err = nix::unistd::execve(&p.path, &p.argv, &p.envp).unwrap_err();
    let _ = writeln!(
        std::io::stderr(),
        "vmrun: cannot execute {}: {err}",
        p.path.to_string_lossy()
    );
    // SAFETY: _exit is async-signal-safe and ends the child at once.
    unsafe { libc::_exit(if err == Errno::ENOENT { 127 } else { 126 }) }
}

/// Waits for `child`, reaping every other process that ends meanwhile.
pub(super) fn wait_for(child: Pid) -> Result<GuestStatus> {
    loop {
        match waitpid(None, None) {
            Ok(ws) if ws.pid() == Some(child) => {
                if let Some(st) = shell_status(&ws) {
                    return Ok(st);
                }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => bail!("waiting for the command: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn statuses() {
        let pid = Pid::from_raw(5);
        let st = shell_status(&WaitStatus::Exited(pid, 7)).unwrap();
        assert_eq!(st.code, 7);
        assert_eq!(st.detail, "exited with code 7");
        let st = shell_status(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)).unwrap();
        assert_eq!(st.code, 137);
        assert_eq!(st.detail, "killed by signal 9 (SIGKILL)");
        assert!(shell_status(&WaitStatus::StillAlive).is_none());
    }

    #[test]
    fn command_lookup() {
        let sh = resolve_command(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        );
        assert!(sh.is_some_and(|p| p.ends_with("sh")));
        assert_eq!(
            resolve_command(OsStr::new("no-such-cmd-xyz"), Some(OsStr::new("/bin"))),
            None
        );
        // A name with a slash is taken as it is, as execvp does.
        assert_eq!(
            resolve_command(OsStr::new("./x"), None),
            Some(PathBuf::from("./x"))
        );
        // A directory is not a command.
        assert_eq!(
            resolve_command(OsStr::new("bin"), Some(OsStr::new("/"))),
            None
        );
    }
}
