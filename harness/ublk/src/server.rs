//! The server process of `ublk add`: serve a device until SIGTERM/SIGINT/
//! SIGHUP or until the device is stopped from outside, then stop and delete
//! it.  Optionally detached (fork, setsid, log file), reporting "live" to the
//! waiting parent through a pipe.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::device::{Device, DeviceConfig, TargetConfig};
use crate::state::{self, DevState};

/// The signals that end a server.
fn stop_signals() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGINT);
    s.add(Signal::SIGHUP);
    s
}

/// Wait up to `ms` for one of `set`; returns the signal number.
fn wait_signal(set: &SigSet, ms: i64) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    // SAFETY: valid set and timeout; no siginfo wanted.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

fn dev_state(dev: &Device, tcfg: &TargetConfig, log: Option<&PathBuf>) -> DevState {
    let cfg = dev.config();
    DevState {
        id: dev.id(),
        pid: std::process::id() as i32,
        target: dev.target().kind().to_string(),
        backing: dev.target().backing(),
        zero_copy: cfg.zero_copy,
        buffered: tcfg.buffered(),
        queues: dev.info().nr_hw_queues,
        depth: dev.info().queue_depth,
        size: dev.target().dev_size(),
        log: log.map(|p| p.display().to_string()),
    }
}

/// Serve `cfg` in this process until a stop signal or an outside stop.
/// `on_live` runs once the device is live (its state file written).
pub fn serve(
    cfg: &DeviceConfig,
    tcfg: &TargetConfig,
    log: Option<PathBuf>,
    on_live: impl FnOnce(&Device) -> Result<()>,
) -> Result<()> {
    // Block the stop signals before any thread exists: the queue threads
    // inherit the mask, and this thread takes them with sigtimedwait.
    let set = stop_signals();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("blocking SIGTERM/SIGINT/SIGHUP")?;
    let dev = Device::start(cfg, tcfg)?;
    let id = dev.id();
    if let Err(e) = state::write(&dev_state(&dev, tcfg, log.as_ref())) {
        eprintln!("ublk{id}: warning: no state file: {e:#}");
    }
    if let Err(e) = on_live(&dev) {
        state::remove(id);
        let _ = dev.stop_and_delete();
        return Err(e);
    }
    eprintln!("ublk{id}: live, serving (pid {})", std::process::id());
    loop {
        if let Some(sig) = wait_signal(&set, 200) {
            eprintln!("ublk{id}: signal {sig}: stopping the device");
            break;
        }
        if dev.queues_exited() > 0 {
            eprintln!("ublk{id}: device stopped (queues exited): deleting it");
            break;
        }
    }
    let stats = dev.stats();
    let r = dev.stop_and_delete();
    state::remove(id);
    eprintln!("ublk{id}: deleted; {stats:?}");
    r
}

/// Where a detached server logs.
pub fn log_path() -> PathBuf {
    let name = format!("ublk-server.{}.log", std::process::id());
    let dir = state::state_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        dir.join(name)
    } else {
        std::env::temp_dir().join(name)
    }
}

fn redirect_stdio(log: &PathBuf) -> Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .context("/dev/null")?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("log file {}", log.display()))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).context("dup2 stdin")?;
    nix::unistd::dup2(out.as_raw_fd(), 1).context("dup2 stdout")?;
    nix::unistd::dup2(out.as_raw_fd(), 2).context("dup2 stderr")?;
    Ok(())
}

/// Fork a detached server for `cfg` and wait until it reports the device
/// live.  Returns (device id, server pid, log path) in the parent; the child
/// never returns.  Must be called while the process has a single thread.
pub fn spawn_detached(cfg: &DeviceConfig, tcfg: &TargetConfig) -> Result<(u32, i32, PathBuf)> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the caller guarantees a single-threaded process.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            child(cfg, tcfg, wr)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = String::new();
            let mut f = std::fs::File::from(rd);
            let _ = f.read_to_string(&mut buf);
            let log_hint = format!("/run/ublk/ublk-server.{child}.log");
            if let Some(rest) = buf.strip_prefix("OK ") {
                let mut it = rest.split_whitespace();
                let id = it.next().and_then(|s| s.parse::<u32>().ok());
                let log = it.next().map(PathBuf::from);
                if let Some(id) = id {
                    return Ok((id, child.as_raw(), log.unwrap_or_else(|| log_hint.into())));
                }
            }
            // Failed: reap the child (it has cleaned up before exiting).
            let _ = nix::sys::wait::waitpid(child, None);
            if let Some(msg) = buf.strip_prefix("ERR ") {
                bail!("{}", msg.trim_end());
            }
            bail!("the server process {child} exited before the device was live (see {log_hint})")
        }
    }
}

fn child(cfg: &DeviceConfig, tcfg: &TargetConfig, wr: OwnedFd) -> ! {
    let code = match child_inner(cfg, tcfg, wr) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ublk server: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn child_inner(cfg: &DeviceConfig, tcfg: &TargetConfig, wr: OwnedFd) -> Result<()> {
    let mut pipe = Some(std::fs::File::from(wr));
    let report_err = |pipe: &mut Option<std::fs::File>, msg: &str| {
        if let Some(mut p) = pipe.take() {
            let _ = p.write_all(format!("ERR {msg}\n").as_bytes());
        }
    };
    if let Err(e) = nix::unistd::setsid() {
        report_err(&mut pipe, &format!("setsid: {e}"));
        bail!("setsid: {e}");
    }
    let log = log_path();
    if let Err(e) = redirect_stdio(&log) {
        report_err(&mut pipe, &format!("{e:#}"));
        return Err(e);
    }
    let r = serve(cfg, tcfg, Some(log.clone()), |dev| {
        if let Some(mut p) = pipe.take() {
            p.write_all(format!("OK {} {}\n", dev.id(), log.display()).as_bytes())
                .context("reporting to the parent")?;
        }
        Ok(())
    });
    if let Err(e) = &r {
        report_err(&mut pipe, &format!("{e:#}"));
    }
    r
}
