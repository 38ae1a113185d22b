//! The guest's init (PID 1), run by `src/bin/vm-init.rs`.
//!
//! It mounts the pseudo filesystems, tmpfs on the writable places, tracefs, debugfs and the
//! run directory (9p), reads the job the host wrote there, runs the command as root in its
//! own session, reaps every process while it waits, kills what the command left behind,
//! syncs, writes the exit status to the run directory, prints `vmrun: exit-status N` on the
//! console and powers off. An error of its own is printed as `vmrun: init-failed: WHY`, and
//! it powers off all the same: with nobody else to tell, the console is its only voice.
//!
//! For an interactive shell (`vmrun run --shell`) the console is the shell's controlling
//! terminal, `poweroff`, `reboot` and `halt` (links to vm-init, first in the shell's PATH)
//! send PID 1 the busybox signals (SIGUSR2, SIGTERM, SIGUSR1), a runlevel 0 or 6 request on
//! the sysvinit FIFO `/run/initctl` (where systemctl's `/sbin/poweroff` falls back to when
//! systemd is not PID 1) does the same, and any of them, like the end of the shell, powers
//! the VM off the same clean way.

use crate::job::{
    tmp_entries, GuestStatus, Job, TermSize, GUEST_SHARE, GUEST_SHIM_DIR, HOST_TMP, JOB_FILE,
    MARK_EXIT, MARK_INIT_FAILED, MARK_START, NINEP_MSIZE, SHARE_TAG, SHIM_NAMES, STATUS_FILE,
};
use crate::report::shell_words;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2, fork, setsid, ForkResult, Pid};
use std::ffi::{CString, OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// What asked PID 1 to power off: 0 none yet, a signal number, or [`VIA_INITCTL`] plus the
/// runlevel asked for on /run/initctl.
static POWEROFF_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signals that ask PID 1 to power off, as busybox's init has them.
const POWEROFF_SIGNALS: [Signal; 3] = [Signal::SIGUSR2, Signal::SIGTERM, Signal::SIGUSR1];
/// See [`POWEROFF_SIGNAL`].
const VIA_INITCTL: i32 = 0x100;

/// Prints a line on the console as it is.
fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints a line on the console, prefixed with `vmrun: `.
fn say(msg: &str) {
    console(&format!("vmrun: {msg}"));
}

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

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => bail!("mounting {fstype} on {target}: {e}"),
    }
}

fn mkdir(path: &str) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {path}")),
    }
}

/// Makes /dev/console our stdin, stdout and stderr: the kernel gives init the console of
/// the root filesystem's /dev, which the host's root may not have.
fn console_stdio() {
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

fn mount_all() -> Result<()> {
    let _ = nix::unistd::sethostname("vmrun");
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    console_stdio();
    mount_fs(
        "proc",
        "/proc",
        "proc",
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        "sysfs",
        "/sys",
        "sysfs",
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
    )?;
    mkdir("/dev/pts")?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    )?;
    mkdir("/dev/shm")?;
    mount_fs(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        nosuid_nodev,
        Some("mode=1777"),
    )?;
    mount_fs("tmpfs", "/run", "tmpfs", nosuid_nodev, Some("mode=0755"))?;
    // Keep the host's /tmp reachable before covering it: the job may live there.
    mkdir(HOST_TMP)?;
    mount(
        Some("/tmp"),
        HOST_TMP,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding the host's /tmp to {HOST_TMP}"))?;
    mount_fs("tmpfs", "/tmp", "tmpfs", nosuid_nodev, Some("mode=1777"))?;
    mkdir(GUEST_SHARE)?;
    let share_opts =
        format!("trans=virtio,version=9p2000.L,msize={NINEP_MSIZE},cache=none,access=any");
    mount_fs(
        SHARE_TAG,
        GUEST_SHARE,
        "9p",
        nosuid_nodev,
        Some(&share_opts),
    )?;
    // Optional: a kernel without them still runs commands that do not need them.
    let optional = [
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
    ];
    for (src, target, fstype) in optional {
        if let Err(e) = mount_fs(src, target, fstype, nosuid_nodev | MsFlags::MS_NOEXEC, None) {
            say(&format!("warning: {e:#}"));
        }
    }
    Ok(())
}

/// Everything the child needs, prepared before fork so that the child only makes syscalls.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// For a shell: the console's tty device, and the terminal size to give it.
    tty: Option<(CString, TermSize)>,
}

/// The device behind /dev/console (`ttyS0` gives `/dev/ttyS0`): /dev/console itself never
/// becomes a controlling terminal.
pub fn console_device(active: &str) -> PathBuf {
    let name = active.split_whitespace().last().unwrap_or("ttyS0");
    Path::new("/dev").join(name)
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte"))
}

fn prepare(job: &Job) -> Result<std::result::Result<Prepared, GuestStatus>> {
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
fn exec_child(p: &Prepared) -> ! {
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
fn wait_for(child: Pid) -> Result<GuestStatus> {
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

/// Waits for the shell `child` to end, or for a signal asking PID 1 to power off; reaps
/// every other process meanwhile.
fn wait_for_shell(child: Pid) -> Result<GuestStatus> {
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
fn serve_initctl() -> Result<()> {
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
fn setup_shell() -> Result<()> {
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
fn kill_leftovers(hangup: bool) {
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
fn sync_bounded(limit: Duration) {
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

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn write_status(st: &GuestStatus) -> Result<()> {
    let path = Path::new(GUEST_SHARE).join(STATUS_FILE);
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(st.encode().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Binds the host's entries under /tmp that the job names back in place, over the
/// guest's own /tmp (a repo cloned into /tmp runs as it would anywhere else).
fn expose_host_tmp(job: &Job) -> Result<()> {
    for name in tmp_entries(job) {
        let host = Path::new(HOST_TMP).join(&name);
        let guest = Path::new("/tmp").join(&name);
        if host.is_dir() {
            std::fs::create_dir_all(&guest)
        } else if host.exists() {
            std::fs::File::create(&guest).map(drop)
        } else {
            continue;
        }
        .with_context(|| format!("creating {}", guest.display()))?;
        mount(
            Some(&host),
            &guest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("binding the host's {} in place", guest.display()))?;
    }
    Ok(())
}

/// Mounts, runs the job, cleans up; the command's status.
fn run() -> Result<GuestStatus> {
    mount_all()?;
    let job_path = Path::new(GUEST_SHARE).join(JOB_FILE);
    let data =
        std::fs::read(&job_path).with_context(|| format!("reading {}", job_path.display()))?;
    let job = Job::decode(&data).with_context(|| format!("parsing {}", job_path.display()))?;
    expose_host_tmp(&job)?;
    if job.shell.is_some() {
        setup_shell()?;
    }
    let prepared = match prepare(&job)? {
        Ok(p) => p,
        Err(status) => return Ok(status),
    };
    console(&format!(
        "{MARK_START} (guest uptime {} s): {}",
        uptime(),
        shell_words(&job.args)
    ));
    // SAFETY: we are single-threaded here (no thread has been spawned yet), and the child
    // only makes syscalls on data prepared before the fork.
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => exec_child(&prepared),
        ForkResult::Parent { child } => child,
    };
    if job.shell.is_some() {
        // A thread: only now that the child has been forked.
        if let Err(e) = serve_initctl() {
            say(&format!(
                "warning: {e:#} (/sbin/poweroff will not work; `poweroff` will)"
            ));
        }
    }
    let status = match job.shell {
        Some(_) => wait_for_shell(child)?,
        None => wait_for(child)?,
    };
    kill_leftovers(job.shell.is_some());
    drain_console();
    Ok(status)
}

/// Waits until the console has sent what is written to it, so that nothing is lost at
/// power-off and init's lines come after the command's.
fn drain_console() {
    // SAFETY: tcdrain on our stdout; it only waits.
    unsafe { libc::tcdrain(1) };
}

fn power_off() -> ! {
    drain_console();
    use nix::sys::reboot::{reboot, RebootMode};
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // Without ACPI poweroff a reboot does it: QEMU runs with -no-reboot.
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The whole life of PID 1. Never returns: init must not exit.
pub fn main() -> ! {
    if std::process::id() != 1 {
        shim_main();
    }
    let outcome =
        std::panic::catch_unwind(run).unwrap_or_else(|_| Err(anyhow::anyhow!("init panicked")));
    match outcome {
        Ok(status) => {
            sync_bounded(Duration::from_secs(10));
            if let Err(e) = write_status(&status) {
                console(&format!("{MARK_INIT_FAILED}{e:#}"));
            }
            console(&format!("{MARK_EXIT}{} ({})", status.code, status.detail));
        }
        Err(e) => {
            console(&format!("{MARK_INIT_FAILED}{e:#}"));
            sync_bounded(Duration::from_secs(10));
        }
    }
    power_off()
}

/// vm-init run as `poweroff`, `reboot` or `halt` (see [`GUEST_SHIM_DIR`]): asks PID 1 to
/// power off, the way busybox's commands of these names do.
fn shim_main() -> ! {
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

    #[test]
    fn console_devices() {
        assert_eq!(console_device("ttyS0\n"), PathBuf::from("/dev/ttyS0"));
        assert_eq!(console_device("tty0 ttyS0\n"), PathBuf::from("/dev/ttyS0"));
        assert_eq!(console_device(""), PathBuf::from("/dev/ttyS0"));
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
