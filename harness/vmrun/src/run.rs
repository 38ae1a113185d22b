//! `vmrun run`: prepares the run directory, the job and the scratch disk, picks the
//! accelerator, runs QEMU and turns what happened into an exit status.

use crate::accel;
use crate::cli::RunOptions;
use crate::console::{self, ConsoleRun};
use crate::job::{
    guest_results_dir, hidden_in_guest, GuestStatus, Job, CONSOLE_LOG, GUEST_SCRATCH_DISK,
    JOB_FILE, RESULTS_DIR, STATUS_FILE,
};
use crate::qemu::QemuConfig;
use crate::report::{shell_words, Reporter, Summary};
use crate::verdict::{self, Verdict};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The VM failed: QEMU did not start, init failed, or no exit status came back.
pub const EXIT_VM_FAILURE: u8 = 123;
/// The timeout struck.
pub const EXIT_TIMEOUT: u8 = 124;
/// The kernel log shows a problem. It wins over the command's status and the timeout: a
/// command that fails or hangs after a kernel splat most likely does so because of it.
pub const EXIT_KERNEL_PROBLEM: u8 = 125;

/// Firmware that boots a kernel faster than SeaBIOS; the first one found is used.
const FAST_BIOS: &[&str] = &[
    "/usr/share/qemu/qboot.rom",
    "/usr/local/share/qemu/qboot.rom",
];

/// Host variables the command gets as they are, besides those named `VMRUN_*` and `UBLK_*`.
const PASSED_VARS: &[&str] = &[
    "LANG",
    "LC_ALL",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_LIB_BACKTRACE",
];

/// `$UBLK_ZC_CACHE`, else `$XDG_CACHE_HOME/ublk-splice-zc`, else `~/.cache/ublk-splice-zc`
/// (as scripts/lib.sh has it).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("UBLK_ZC_CACHE").filter(|d| !d.is_empty()) {
        return Ok(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(&d).join("ublk-splice-zc"));
    }
    let home = std::env::var_os("HOME")
        .context("neither UBLK_ZC_CACHE, XDG_CACHE_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cache/ublk-splice-zc"))
}

/// `YYYYmmdd-HHMMSS`, local time.
fn timestamp() -> String {
    // SAFETY: time and localtime_r only write into the struct we hand them.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

/// Creates the run directory and clears what a previous run left in it.
fn prepare_run_dir(results: Option<&Path>) -> Result<PathBuf> {
    let dir = match results {
        Some(d) => d.to_path_buf(),
        None => cache_dir()?
            .join("runs")
            .join(format!("{}-{}", timestamp(), std::process::id())),
    };
    std::fs::create_dir_all(dir.join(RESULTS_DIR))
        .with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for f in [STATUS_FILE, JOB_FILE, CONSOLE_LOG] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("removing the old {}", dir.join(f).display()))
            }
            _ => {}
        }
    }
    Ok(dir)
}

/// The command's environment in the guest.
pub fn guest_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(OsString, OsString)],
    scratch_disk: bool,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut path = None;
    for (k, v) in host {
        let name = k.to_string_lossy();
        if name == "PATH" {
            path = Some(v);
        } else if PASSED_VARS.contains(&name.as_ref())
            || ((name.starts_with("VMRUN_") || name.starts_with("UBLK_"))
                && name != "VMRUN_RESULTS")
        {
            env.push((k, v));
        }
    }
    // root's tools (mkfs, losetup) live in sbin, which a user's PATH may lack.
    let mut dirs: Vec<PathBuf> = path
        .as_deref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_else(|| {
            ["/usr/local/bin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from)
                .collect()
        });
    for sbin in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(sbin.into());
        }
    }
    let path =
        std::env::join_paths(dirs).unwrap_or_else(|_| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    env.push(("PATH".into(), path));
    for (k, v) in [
        ("HOME", "/tmp"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("TERM", "dumb"),
    ] {
        env.push((k.into(), v.into()));
    }
    env.push(("VMRUN_RESULTS".into(), guest_results_dir().into()));
    if scratch_disk {
        env.push(("VMRUN_SCRATCH_DISK".into(), GUEST_SCRATCH_DISK.into()));
    }
    // --env last; a later value replaces an earlier one.
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// A sparse scratch image, already unlinked: QEMU opens it through the inherited descriptor,
/// so that it disappears with the last process that holds it, whatever happens to the run.
struct Scratch {
    file: std::fs::File,
}

impl Scratch {
    fn create(dir: &Path, size: u64) -> Result<Scratch> {
        let path = dir.join(".scratch.img");
        let _ = std::fs::remove_file(&path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        file.set_len(size.div_ceil(512) * 512)
            .with_context(|| format!("sizing the scratch disk to {size} bytes"))?;
        // SAFETY: F_SETFD on a descriptor we own; it only clears FD_CLOEXEC.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            bail!(
                "making the scratch disk inheritable: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Scratch { file })
    }

    /// The path QEMU opens.
    fn qemu_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

fn find_qemu() -> Result<PathBuf> {
    if let Some(q) = std::env::var_os("VMRUN_QEMU").filter(|q| !q.is_empty()) {
        return Ok(q.into());
    }
    which::which("qemu-system-x86_64")
        .context("qemu-system-x86_64 is not in PATH (install qemu-system-x86)")
}

/// vm-init: `$VMRUN_INIT`, else next to this program.
fn find_init() -> Result<PathBuf> {
    let init = match std::env::var_os("VMRUN_INIT").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("finding vmrun's own path")?
            .with_file_name("vm-init"),
    };
    let init = init.canonicalize().with_context(|| {
        format!(
            "the guest init {} is missing (cargo build --bins builds it)",
            init.display()
        )
    })?;
    if let Some(m) = hidden_in_guest(&init) {
        bail!(
            "the guest init {} is under {m}, which the guest mounts over",
            init.display()
        );
    }
    Ok(init)
}

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
fn qemu_failure(run: &ConsoleRun) -> Option<String> {
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

/// Boots, runs, judges. The exit status for the user.
pub fn run(opts: &RunOptions, rep: Reporter) -> Result<u8> {
    let t0 = Instant::now();
    let kernel = opts
        .kernel
        .canonicalize()
        .with_context(|| format!("the kernel image {} is missing", opts.kernel.display()))?;
    if !kernel.is_file() {
        bail!("the kernel image {} is not a file", kernel.display());
    }
    let qemu = find_qemu()?;
    let init = find_init()?;
    let run_dir = prepare_run_dir(opts.results.as_deref())?;
    rep.step(format!("run directory {}", run_dir.display()));

    let cwd = std::env::current_dir().context("getting the current directory")?;
    if let Some(m) = hidden_in_guest(&cwd) {
        rep.warn(format!("the current directory {} is under {m}, which the guest mounts over; the command runs in /", cwd.display()));
    }
    let job = Job {
        args: opts.command.clone(),
        cwd,
        env: guest_env(std::env::vars_os(), &opts.env, opts.disk_size > 0),
    };
    let job_path = run_dir.join(JOB_FILE);
    std::fs::write(&job_path, job.encode()?)
        .with_context(|| format!("writing {}", job_path.display()))?;

    let plan = accel::decide(opts.accel, &qemu, &run_dir)?;
    let scratch = match opts.disk_size {
        0 => None,
        size => Some(Scratch::create(&run_dir, size)?),
    };
    let config = QemuConfig {
        kernel: kernel.clone(),
        accel: plan.accel,
        cpu: plan.cpu.to_string(),
        cpus: opts.cpus,
        mem_mib: opts.mem_mib,
        bios: FAST_BIOS.iter().map(PathBuf::from).find(|p| p.is_file()),
        root_dir: "/".into(),
        share_dir: run_dir.clone(),
        scratch_disk: scratch.as_ref().map(Scratch::qemu_path),
        init,
        append: opts.append.clone(),
    };
    rep.step(format!("accelerator {plan}"));
    rep.step(format!(
        "booting {} (accel {}, {} cpus, {} MiB, timeout {} s)",
        kernel.display(),
        plan.accel,
        opts.cpus,
        opts.mem_mib,
        opts.timeout.as_secs()
    ));
    rep.step(format!("command: {}", shell_words(&opts.command)));

    let console = console::run(
        &qemu,
        &config.args(),
        &run_dir.join(CONSOLE_LOG),
        opts.timeout,
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
    let outcome = decide(
        &v,
        status.as_ref(),
        console.timed_out.then_some(opts.timeout),
        qemu_failure(&console),
    );
    rep.problems(&v);
    if let Some(e) = &outcome.error {
        rep.error(e);
    }
    rep.summary(&Summary {
        accel: format!("{plan}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::judge;

    fn env_map(env: &[(OsString, OsString)]) -> std::collections::HashMap<String, String> {
        env.iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect()
    }

    #[test]
    fn environment() {
        let host = [
            ("PATH", "/home/u/bin:/usr/bin:/bin"),
            ("SECRET_TOKEN", "x"),
            ("RUST_BACKTRACE", "1"),
            ("UBLK_TEST_DEPTH", "64"),
            ("VMRUN_RESULTS", "/host/wrong"),
            ("HOME", "/home/u"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let extra = [
            (OsString::from("HOME"), OsString::from("/root")),
            (OsString::from("A"), OsString::from("b")),
        ];
        let env = guest_env(host, &extra, true);
        let m = env_map(&env);
        assert_eq!(
            m["PATH"],
            "/home/u/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        assert!(!m.contains_key("SECRET_TOKEN"));
        assert_eq!(m["RUST_BACKTRACE"], "1");
        assert_eq!(m["UBLK_TEST_DEPTH"], "64");
        assert_eq!(m["VMRUN_RESULTS"], "/run/vmrun/results");
        assert_eq!(m["VMRUN_SCRATCH_DISK"], "/dev/vda");
        assert_eq!(m["HOME"], "/root", "--env overrides");
        assert_eq!(m["A"], "b");
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);

        let m = env_map(&guest_env(Vec::new(), &[], false));
        assert_eq!(m["HOME"], "/tmp");
        assert!(m["PATH"].contains("/usr/sbin"));
        assert!(!m.contains_key("VMRUN_SCRATCH_DISK"));
    }

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
