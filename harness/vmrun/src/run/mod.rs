//! `vmrun run`: prepares the run directory, the job and the scratch disk, picks the
//! accelerator, runs QEMU and turns what happened into an exit status.

mod dir;
mod env;
mod host;
mod outcome;
mod plan;
mod scratch;
mod shell;

pub use dir::cache_dir;
pub use env::guest_env;
pub use host::{host_tsc_khz, resolve_kernel, Host, BUILD_DIR_IMAGE};
pub use outcome::{
    decide, release_of, Outcome, EXIT_KERNEL_PROBLEM, EXIT_TIMEOUT, EXIT_VM_FAILURE,
};
pub use plan::{human_size, Plan};
pub use scratch::{scratch_qemu_path, SCRATCH_FD};
pub use shell::shell_command;

use crate::accel;
use crate::cli::RunOptions;
use crate::console::{self, ConsoleOptions};
use crate::job::{
    hidden_in_guest, GuestStatus, Job, CONSOLE_LOG, JOB_FILE, QEMU_CMDLINE, STATUS_FILE,
};
use crate::report::{shell_words, Reporter, Summary};
use crate::verdict;
use anyhow::{Context, Result};
use dir::{prepare_run_dir, run_dir_path};
use host::{find_init, find_qemu};
use outcome::qemu_failure;
use scratch::Scratch;
use shell::terminal_size;
use std::path::Path;
use std::time::Instant;

/// Boots, runs, judges (or, with `--dry-run`, only prints the plan). The exit status for
/// the user.
pub fn run(opts: &RunOptions, rep: Reporter) -> Result<u8> {
    let t0 = Instant::now();
    let kernel = resolve_kernel(&opts.kernel)?;
    let host = Host {
        qemu: find_qemu()?,
        init: find_init()?,
        tsc_khz: host_tsc_khz(),
    };
    let cwd = std::env::current_dir().context("getting the current directory")?;
    if let Some(m) = hidden_in_guest(&cwd) {
        rep.warn(format!("the current directory {} is under {m}, which the guest mounts over; the command runs in /", cwd.display()));
    }
    let env = guest_env(
        std::env::vars_os(),
        &opts.env,
        opts.disk_size > 0,
        opts.shell,
    );
    let job = Job {
        args: match opts.shell {
            true => shell_command(std::env::var_os("PATH").as_deref()),
            false => opts.guest_command(),
        },
        cwd,
        env,
        shell: opts.shell.then(terminal_size),
    };

    if opts.dry_run {
        let run_dir = run_dir_path(opts.results.as_deref())?;
        let accel = match opts.accel {
            accel::AccelChoice::Tcg => accel::decide(opts.accel, &host.qemu, Path::new("/"))?,
            _ => {
                // The probe needs a place for its firmware; the run directory is not made.
                let dir = std::env::temp_dir().join(format!("vmrun-probe-{}", std::process::id()));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let plan = accel::decide(opts.accel, &host.qemu, &dir);
                let _ = std::fs::remove_dir_all(&dir);
                plan?
            }
        };
        let plan = Plan::new(opts, kernel, &host, run_dir, accel, job);
        print!("{}", plan.dry_run_text());
        return Ok(0);
    }

    let run_dir = prepare_run_dir(&run_dir_path(opts.results.as_deref())?)?;
    rep.step(format!("run directory {}", run_dir.display()));
    let job_path = run_dir.join(JOB_FILE);
    std::fs::write(&job_path, job.encode()?)
        .with_context(|| format!("writing {}", job_path.display()))?;

    let accel = accel::decide(opts.accel, &host.qemu, &run_dir)?;
    let scratch = match opts.disk_size {
        0 => None,
        size => Some(Scratch::create(&run_dir, size)?),
    };
    let plan = Plan::new(opts, kernel.clone(), &host, run_dir.clone(), accel, job);
    let cmdline_path = run_dir.join(QEMU_CMDLINE);
    std::fs::write(&cmdline_path, format!("{}\n", plan.qemu_cmdline()))
        .with_context(|| format!("writing {}", cmdline_path.display()))?;
    rep.step(format!("accelerator {}", plan.accel));
    let timeout = match plan.timeout {
        Some(t) => format!("timeout {} s", t.as_secs()),
        None => "no timeout".into(),
    };
    rep.step(format!(
        "booting {} (accel {}, {} cpus, {} MiB, {timeout})",
        kernel.display(),
        plan.accel.accel,
        opts.cpus,
        opts.mem_mib,
    ));
    match opts.shell {
        true => rep.step(format!(
            "interactive shell ({}): `poweroff` or leaving the shell ends the VM, ctrl-a x kills QEMU",
            shell_words(&plan.job.args)
        )),
        false => rep.step(format!("command: {}", shell_words(&opts.guest_command()))),
    }

    let console = console::run(
        &plan.qemu,
        &plan.config.args(),
        &run_dir.join(CONSOLE_LOG),
        ConsoleOptions {
            timeout: plan.timeout,
            interactive: opts.shell,
            pass_fd: scratch.as_ref().map(|s| (s.fd(), SCRATCH_FD)),
        },
        rep,
    )?;
    drop(scratch);

    let v = verdict::judge(&console.log);
    let status_path = run_dir.join(STATUS_FILE);
    let status = match std::fs::read_to_string(&status_path) {
        Ok(text) => match GuestStatus::decode(&text) {
            Ok(st) => Some(st),
            Err(e) => {
                rep.warn(format!("{}: {e:#}", status_path.display()));
                None
            }
        },
        Err(_) => None,
    };
    let mut outcome = decide(
        &v,
        status.as_ref(),
        console.timed_out.then_some(plan.timeout).flatten(),
        qemu_failure(&console),
    );
    if opts.shell && outcome.exit_code == EXIT_VM_FAILURE && v.started && v.init_failed.is_none() {
        outcome.error = Some(
            "QEMU ended while the shell ran (ctrl-a x, or QEMU itself failed: see above)".into(),
        );
    }
    rep.problems(&v);
    if let Some(e) = &outcome.error {
        rep.error(e);
    }
    rep.summary(&Summary {
        accel: format!("{}", plan.accel),
        kernel,
        release: v
            .kernel_version
            .as_deref()
            .and_then(release_of)
            .map(str::to_string),
        boot_to_command: console.first_command_at,
        total: t0.elapsed(),
        command_status: outcome.command_status.clone(),
        verdict: outcome.verdict.clone(),
        results: run_dir,
        exit_code: outcome.exit_code,
    });
    Ok(outcome.exit_code)
}
