//! `vmrun run`: prepares the run directory, the job and the scratch disk, picks the
//! accelerator, runs QEMU and turns what happened into an exit status.

use crate::accel::{self, AccelPlan};
use crate::cli::RunOptions;
use crate::console::{self, ConsoleOptions, ConsoleRun};
use crate::job::{
    guest_results_dir, hidden_in_guest, GuestStatus, Job, TermSize, CONSOLE_LOG,
    GUEST_SCRATCH_DISK, GUEST_SHIM_DIR, JOB_FILE, QEMU_CMDLINE, RESULTS_DIR, SHARE_TAG,
    STATUS_FILE,
};
use crate::qemu::QemuConfig;
use crate::report::{shell_words, Reporter, Summary};
use crate::verdict::{self, Verdict};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The VM failed: QEMU did not start, init failed, or no exit status came back.
pub const EXIT_VM_FAILURE: u8 = 123;
/// The timeout struck.
pub const EXIT_TIMEOUT: u8 = 124;
/// The kernel log shows a problem. It wins over the command's status and the timeout: a
/// command that fails or hangs after a kernel splat most likely does so because of it.
pub const EXIT_KERNEL_PROBLEM: u8 = 125;

/// The descriptor under which QEMU gets the scratch disk, so that its command line is the
/// same on every run: `/proc/self/fd/3`.
pub const SCRATCH_FD: RawFd = 3;

/// Where a kernel build directory (O=) keeps the image.
pub const BUILD_DIR_IMAGE: &str = "arch/x86/boot/bzImage";

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

/// The run directory: `--results`, or a new one under the cache.
fn run_dir_path(results: Option<&Path>) -> Result<PathBuf> {
    let dir = match results {
        Some(d) => d.to_path_buf(),
        None => cache_dir()?
            .join("runs")
            .join(format!("{}-{}", timestamp(), std::process::id())),
    };
    std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))
}

/// The kernel image: `path` itself, or the image of a kernel build directory.
pub fn resolve_kernel(path: &Path) -> Result<PathBuf> {
    let abs = path
        .canonicalize()
        .with_context(|| format!("the kernel {} is missing", path.display()))?;
    if abs.is_dir() {
        let image = abs.join(BUILD_DIR_IMAGE);
        if !image.is_file() {
            bail!(
                "--kernel {}: a directory, but not a built kernel build directory: \
                 {BUILD_DIR_IMAGE} is missing (make O={} bzImage builds it)",
                path.display(),
                abs.display()
            );
        }
        return Ok(image);
    }
    if !abs.is_file() {
        bail!(
            "--kernel {}: neither a kernel image nor a build directory",
            path.display()
        );
    }
    Ok(abs)
}

/// Creates the run directory and clears what a previous run left in it.
fn prepare_run_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join(RESULTS_DIR))
        .with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for f in [STATUS_FILE, JOB_FILE, CONSOLE_LOG, QEMU_CMDLINE] {
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

/// The command's environment in the guest. A shell gets the host's TERM and the
/// `poweroff` of [`GUEST_SHIM_DIR`] first in its PATH.
pub fn guest_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(OsString, OsString)],
    scratch_disk: bool,
    shell: bool,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut path = None;
    let mut term = None;
    for (k, v) in host {
        let name = k.to_string_lossy();
        if name == "PATH" {
            path = Some(v);
        } else if name == "TERM" {
            term = Some(v).filter(|t| !t.is_empty() && t != "dumb");
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
    if shell {
        dirs.insert(0, GUEST_SHIM_DIR.into());
    }
    let path =
        std::env::join_paths(dirs).unwrap_or_else(|_| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    env.push(("PATH".into(), path));
    for (k, v) in [("HOME", "/tmp"), ("USER", "root"), ("LOGNAME", "root")] {
        env.push((k.into(), v.into()));
    }
    let term = match (shell, term) {
        (true, Some(t)) => t,
        (true, None) => "vt100".into(),
        (false, _) => "dumb".into(),
    };
    env.push(("TERM".into(), term));
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

/// A sparse scratch image, already unlinked: QEMU opens it through the inherited descriptor
/// [`SCRATCH_FD`], so that it disappears with the last process that holds it, whatever
/// happens to the run.
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
        // QEMU gets it as SCRATCH_FD (console::run dups it there in the child).
        Ok(Scratch { file })
    }

    /// The descriptor QEMU gets as [`SCRATCH_FD`].
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The path under which QEMU opens the scratch disk.
pub fn scratch_qemu_path() -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{SCRATCH_FD}"))
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

/// The guest's command for `--shell`: bash if the host (the guest's root) has it, else sh.
pub fn shell_command(path_var: Option<&std::ffi::OsStr>) -> Vec<OsString> {
    let bash = crate::init::resolve_command("bash".as_ref(), path_var).is_some();
    vec![if bash { "bash" } else { "sh" }.into()]
}

/// The host's TSC frequency in kHz, rounded to the MHz, measured against
/// CLOCK_MONOTONIC_RAW over 50 ms; `None` when the host's TSC does not tick at a constant
/// rate (no `constant_tsc` and `nonstop_tsc` in /proc/cpuinfo) or the measure is unsure.
/// Under TCG the guest's TSC is the host's.
#[cfg(target_arch = "x86_64")]
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    fn now_ns() -> Option<u64> {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only fills the struct we hand it.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut t) } != 0 {
            return None;
        }
        Some(u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?)
    }
    // One end of the measure: a TSC read between two clock reads at most 2 µs apart.
    fn sample() -> Option<(u64, u64)> {
        for _ in 0..1000 {
            let before = now_ns()?;
            // SAFETY: rdtsc has no preconditions on x86_64.
            let tsc = unsafe { std::arch::x86_64::_rdtsc() };
            let after = now_ns()?;
            if after - before < 2_000 {
                return Some(((before + after) / 2, tsc));
            }
        }
        None
    }
    let (ns1, tsc1) = sample()?;
    std::thread::sleep(Duration::from_millis(50));
    let (ns2, tsc2) = sample()?;
    let khz = tsc2.checked_sub(tsc1)? as f64 * 1e6 / ns2.checked_sub(ns1)? as f64;
    let mhz = (khz / 1000.0).round() as u64;
    (mhz > 0).then_some(mhz * 1000)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn host_tsc_khz() -> Option<u64> {
    None
}

/// What a run takes from the host: the programs, and the TSC frequency the guest sees
/// under TCG.
#[derive(Debug, Clone)]
pub struct Host {
    pub qemu: PathBuf,
    pub init: PathBuf,
    pub tsc_khz: Option<u64>,
}

/// The size of the terminal on our stdin, if it is one.
fn terminal_size() -> TermSize {
    // SAFETY: TIOCGWINSZ only fills the struct we hand it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            return TermSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            };
        }
    }
    TermSize::default()
}

/// `2 GiB`, `512 MiB`, or bytes when no binary unit divides the size.
pub fn human_size(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// Everything a run is made of, decided before anything boots: what `--dry-run` shows.
#[derive(Debug, Clone)]
pub struct Plan {
    pub qemu: PathBuf,
    pub config: QemuConfig,
    pub accel: AccelPlan,
    pub job: Job,
    pub timeout: Option<Duration>,
    pub disk_size: u64,
}

impl Plan {
    pub fn new(
        opts: &RunOptions,
        kernel: PathBuf,
        host: &Host,
        run_dir: PathBuf,
        accel: AccelPlan,
        job: Job,
    ) -> Plan {
        let config = QemuConfig {
            kernel,
            accel: accel.accel,
            cpu: accel.cpu.to_string(),
            cpus: opts.cpus,
            mem_mib: opts.mem_mib,
            bios: FAST_BIOS.iter().map(PathBuf::from).find(|p| p.is_file()),
            root_dir: "/".into(),
            share_dir: run_dir,
            scratch_disk: (opts.disk_size > 0).then(scratch_qemu_path),
            init: host.init.clone(),
            append: opts.append.clone(),
            interactive: opts.shell,
            tsc_khz: match accel.accel {
                crate::qemu::Accel::Tcg => host.tsc_khz,
                crate::qemu::Accel::Kvm => None,
            },
        };
        Plan {
            qemu: host.qemu.clone(),
            config,
            accel,
            job,
            timeout: opts.timeout(),
            disk_size: opts.disk_size,
        }
    }

    /// The QEMU command line, shell-quoted, as `qemu.cmdline` keeps it.
    pub fn qemu_cmdline(&self) -> String {
        let mut words: Vec<OsString> = vec![self.qemu.clone().into()];
        words.extend(self.config.args());
        shell_words(&words)
    }

    /// What `--dry-run` prints: comments, the QEMU command line, the guest's command and
    /// its environment.
    pub fn dry_run_text(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        line("# vmrun --dry-run: nothing was booted".into());
        line(format!("# kernel        {}", c.kernel.display()));
        line(format!("# accelerator   {}", self.accel));
        line(format!(
            "# run directory {} (9p tag {SHARE_TAG}; job, status, console.log, {QEMU_CMDLINE}, results/)",
            c.share_dir.display()
        ));
        line(match self.disk_size {
            0 => "# scratch disk  none".into(),
            n => format!(
                "# scratch disk  {}, a sparse unlinked file QEMU inherits as descriptor {SCRATCH_FD}",
                human_size(n)
            ),
        });
        line(match self.timeout {
            Some(t) => format!("# timeout       {} s", t.as_secs()),
            None => "# timeout       none".into(),
        });
        line("# QEMU command line:".into());
        line(self.qemu_cmdline());
        let how = match self.job.shell {
            Some(_) => "an interactive shell on the console (its controlling terminal)",
            None => "stdin /dev/null, stdout and stderr on the console",
        };
        line(format!(
            "# guest command, run by vm-init as root in {}, {how}:",
            self.job.cwd.display()
        ));
        line(shell_words(&self.job.args));
        line("# guest environment:".into());
        for (k, v) in &self.job.env {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            line(shell_words(&[kv]));
        }
        out
    }
}

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
            false => opts.command.clone(),
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
        false => rep.step(format!("command: {}", shell_words(&opts.command))),
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
        let env = guest_env(host, &extra, true, false);
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

        let m = env_map(&guest_env(Vec::new(), &[], false, false));
        assert_eq!(m["HOME"], "/tmp");
        assert!(m["PATH"].contains("/usr/sbin"));
        assert!(!m.contains_key("VMRUN_SCRATCH_DISK"));
    }

    #[test]
    fn shell_environment() {
        let host = [("PATH", "/usr/bin:/bin"), ("TERM", "xterm-256color")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let m = env_map(&guest_env(host.clone(), &[], false, true));
        assert_eq!(m["TERM"], "xterm-256color");
        assert_eq!(
            m["PATH"],
            "/run/vmrun-bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        // A command keeps TERM=dumb and the PATH without the shims.
        let m = env_map(&guest_env(host, &[], false, false));
        assert_eq!(m["TERM"], "dumb");
        assert!(!m["PATH"].contains("vmrun-bin"));
        // A shell without a usable host TERM gets vt100.
        let dumb = [(OsString::from("TERM"), OsString::from("dumb"))];
        assert_eq!(env_map(&guest_env(dumb, &[], false, true))["TERM"], "vt100");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmrun-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn kernel_image_or_build_directory() {
        let d = temp_dir("kernel");
        let image = d.join("out/arch/x86/boot/bzImage");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, b"x").unwrap();
        assert_eq!(resolve_kernel(&d.join("out")).unwrap(), image);
        assert_eq!(resolve_kernel(&image).unwrap(), image);
        let e = format!("{:#}", resolve_kernel(&d).unwrap_err());
        assert!(
            e.contains("not a built kernel build directory: arch/x86/boot/bzImage is missing"),
            "{e}"
        );
        let e = format!("{:#}", resolve_kernel(&d.join("nope")).unwrap_err());
        assert!(e.contains("is missing"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn plan(shell: bool, disk_size: u64) -> Plan {
        use crate::cli::{Cli, CliCommand};
        use clap::Parser;
        let disk = format!("--disk-size={disk_size}");
        let mut args = vec!["vmrun", "run", "--kernel", "/k", "--cpus", "1"];
        args.extend(["--append", "a=b c", &disk]);
        match shell {
            true => args.push("--shell"),
            false => args.extend(["--", "sh", "-c", "echo 'hi'"]),
        }
        let CliCommand::Run(opts) = Cli::try_parse_from(args).unwrap().command else {
            panic!("not a run");
        };
        let job = Job {
            args: match shell {
                true => vec!["bash".into()],
                false => opts.command.clone(),
            },
            cwd: "/work".into(),
            env: vec![("HOME".into(), "/tmp".into()), ("A".into(), "b c".into())],
            shell: shell.then(TermSize::default),
        };
        let accel = AccelPlan {
            accel: crate::qemu::Accel::Tcg,
            cpu: "max",
            why: "asked for".into(),
        };
        let host = Host {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            init: "/t/vm-init".into(),
            tsc_khz: Some(2_600_000),
        };
        Plan::new(
            &opts,
            "/k/bzImage".into(),
            &host,
            "/runs/r1".into(),
            accel,
            job,
        )
    }

    #[test]
    fn dry_run_text() {
        let p = plan(false, 1 << 30);
        let text = p.dry_run_text();
        let lines: Vec<&str> = text.lines().collect();
        let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).unwrap();
        let qemu = lines[at("# QEMU command line") + 1];
        // The QEMU line is the shell-quoted argv, exactly what qemu.cmdline keeps.
        assert_eq!(qemu, p.qemu_cmdline());
        let mut argv = vec![OsString::from("/usr/bin/qemu-system-x86_64")];
        argv.extend(p.config.args());
        assert_eq!(qemu, shell_words(&argv));
        assert!(qemu.starts_with("/usr/bin/qemu-system-x86_64 -nodefaults "));
        assert!(qemu.contains(" -serial stdio "), "{qemu}");
        assert!(qemu.contains(" -smp 1 -m 2048M "), "{qemu}");
        assert!(
            qemu.contains(" rcupdate.rcu_expedited=1 tsc_early_khz=2600000 a=b c' "),
            "{qemu}"
        );
        assert!(qemu.contains(" -drive file=/proc/self/fd/3,"), "{qemu}");
        let bios = FAST_BIOS.iter().any(|p| Path::new(p).is_file());
        assert_eq!(qemu.contains(" -bios "), bios);
        assert_eq!(
            lines[at("# guest command")..],
            [
                "# guest command, run by vm-init as root in /work, stdin /dev/null, stdout and \
                 stderr on the console:",
                r"sh -c 'echo '\''hi'\'''",
                "# guest environment:",
                "HOME=/tmp",
                "'A=b c'",
            ]
        );
        assert_eq!(
            lines[..6],
            [
                "# vmrun --dry-run: nothing was booted",
                "# kernel        /k/bzImage",
                "# accelerator   tcg (asked for)",
                "# run directory /runs/r1 (9p tag vmrun; job, status, console.log, qemu.cmdline, \
                 results/)",
                "# scratch disk  1 GiB, a sparse unlinked file QEMU inherits as descriptor 3",
                "# timeout       300 s",
            ]
        );

        let p = plan(true, 0);
        let text = p.dry_run_text();
        assert!(
            text.contains("# scratch disk  none\n# timeout       none\n"),
            "{text}"
        );
        assert!(
            text.contains(" -chardev stdio,id=console,mux=on,signal=off -serial chardev:console ")
        );
        assert!(!text.contains("-drive"));
        assert!(text
            .contains("an interactive shell on the console (its controlling terminal):\nbash\n"));
    }

    #[test]
    fn tsc_frequency() {
        // Measured twice, the host's TSC gives the same MHz (the command line must not
        // change from run to run), and a plausible one.
        let Some(a) = host_tsc_khz() else {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            assert!(
                !(cfg!(target_arch = "x86_64")
                    && cpuinfo.contains(" constant_tsc")
                    && cpuinfo.contains(" nonstop_tsc")),
                "a constant TSC, but no frequency measured"
            );
            return;
        };
        assert_eq!(host_tsc_khz(), Some(a));
        assert!((100_000..=10_000_000).contains(&a), "{a} kHz");
        assert_eq!(a % 1000, 0);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(2 << 30), "2 GiB");
        assert_eq!(human_size(512 << 20), "512 MiB");
        assert_eq!(human_size(1536 << 20), "1536 MiB");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
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
