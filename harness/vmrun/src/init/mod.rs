//! The guest's init (PID 1), run by `src/bin/vm-init.rs`.
//!
//! It mounts the pseudo filesystems, tmpfs on the writable places, tracefs, debugfs and the
//! run directory (9p), reads the job the host wrote there, runs the command as root in its
//! own session, reaps every process while it waits, kills what the command left behind,
//! syncs, writes the exit status to the run directory, prints `vmrun: exit-status N` on the
//! console and powers off. An error of its own is printed as `vmrun: init-failed: WHY`, and
//! it powers off all the same: with nobody else to tell, the console is its only voice.
//! `vmrun run --shell` gets an interactive shell instead (shell.rs).

mod console;
mod exec;
mod mounts;
mod shell;
mod shutdown;

pub use console::console_device;
pub use exec::{resolve_command, shell_status};
pub use shell::initctl_request;

use crate::job::{
    GuestStatus, Job, GUEST_SHARE, JOB_FILE, MARK_EXIT, MARK_INIT_FAILED, MARK_START,
};
use crate::report::shell_words;
use anyhow::{Context, Result};
use console::{console, drain_console, say};
use exec::{exec_child, prepare, wait_for};
use mounts::{expose_host_tmp, mount_all};
use nix::unistd::{fork, ForkResult};
use shell::{serve_initctl, setup_shell, shim_main, wait_for_shell};
use shutdown::{kill_leftovers, power_off, sync_bounded, write_status};
use std::path::Path;
use std::time::Duration;

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
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
