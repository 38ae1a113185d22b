//! What the host and the guest's init agree on: names, paths, console markers, and the two
//! files they exchange through the writable 9p share (the run directory):
//!
//! - `job`, written by the host: the command, its working directory and its environment;
//! - `status`, written by the guest's init when the command has ended.
//!
//! Nothing is passed on the kernel command line but fixed names: it is short and its
//! parsing is lossy.

use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// 9p mount tag of the host's root, the guest's read-only root filesystem.
pub const ROOT_TAG: &str = "vmroot";
/// 9p mount tag of the run directory, shared read-write.
pub const SHARE_TAG: &str = "vmrun";
/// Where the guest's init mounts the run directory.
pub const GUEST_SHARE: &str = "/run/vmrun";
/// The results directory inside the run directory (`VMRUN_RESULTS` in the guest).
pub const RESULTS_DIR: &str = "results";
/// The command file, in the run directory.
pub const JOB_FILE: &str = "job";
/// The exit status file, in the run directory.
pub const STATUS_FILE: &str = "status";
/// The console log, in the run directory.
pub const CONSOLE_LOG: &str = "console.log";
/// The QEMU command line, shell-quoted, in the run directory.
pub const QEMU_CMDLINE: &str = "qemu.cmdline";
/// The scratch disk as the guest sees it.
pub const GUEST_SCRATCH_DISK: &str = "/dev/vda";
/// msize of both 9p mounts: the most the virtio transport takes on 6.1.
pub const NINEP_MSIZE: u32 = 512_000;

/// Console line printed by init right before it starts the command.
pub const MARK_START: &str = "vmrun: start";
/// Console line printed by init when the command has ended: `vmrun: exit-status N`.
pub const MARK_EXIT: &str = "vmrun: exit-status ";
/// Console line printed by init when it could not do its job: `vmrun: init-failed: WHY`.
pub const MARK_INIT_FAILED: &str = "vmrun: init-failed: ";

/// Where the guest's init puts `poweroff`, `reboot` and `halt` for an interactive shell
/// (first in its PATH): links to vm-init, which asks PID 1 to power off.
pub const GUEST_SHIM_DIR: &str = "/run/vmrun-bin";
/// The commands of [`GUEST_SHIM_DIR`]. All of them power off: QEMU runs with -no-reboot.
pub const SHIM_NAMES: &[&str] = &["poweroff", "reboot", "halt"];

/// Host directories the guest covers with mounts of its own: a host path under one of
/// them is not what the guest sees. (`/tmp` is covered too, but the host paths a job
/// names there are shown again: see [`HOST_TMP`].)
pub const GUEST_MOUNTS: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// Where the guest keeps the host's `/tmp` before covering it with a tmpfs, so that the
/// host paths a job names under `/tmp` (its working directory, a clone of the repo, its
/// command) can be bound back in place.
pub const HOST_TMP: &str = "/run/vmrun-host-tmp";

/// The entries directly under `/tmp` that the job names (cwd, absolute arguments):
/// `/tmp/x/y` gives `x`.
pub fn tmp_entries(job: &Job) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let paths = std::iter::once(job.cwd.as_path())
        .chain(job.args.iter().map(std::path::Path::new))
        .filter(|p| p.is_absolute());
    for p in paths {
        if let Ok(rest) = p.strip_prefix("/tmp") {
            if let Some(first) = rest.components().next() {
                let name = first.as_os_str().to_os_string();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// The guest mount that hides `path` (absolute), if one does.
pub fn hidden_in_guest(path: &std::path::Path) -> Option<&'static str> {
    GUEST_MOUNTS.iter().copied().find(|m| path.starts_with(m))
}

/// The guest path of the results directory.
pub fn guest_results_dir() -> String {
    format!("{GUEST_SHARE}/{RESULTS_DIR}")
}

const JOB_MAGIC: &[u8] = b"vmrun-job 1\n";

/// The command the guest runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// argv; `args[0]` is looked up in the job's `PATH` when it has no slash.
    pub args: Vec<OsString>,
    /// Working directory (the host's, which the guest sees through the 9p root).
    pub cwd: PathBuf,
    /// The complete environment of the command.
    pub env: Vec<(OsString, OsString)>,
    /// An interactive shell: the command gets the console as its controlling terminal.
    pub shell: Option<TermSize>,
}

/// The size of the user's terminal, for the guest's console (0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

impl Job {
    /// Serializes the job: a magic line, then NUL-terminated records `arg VALUE`,
    /// `cwd VALUE`, `env NAME=VALUE` and, for a shell, `shell ROWS COLS`. Values cannot
    /// hold NUL bytes (neither can argv).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = JOB_MAGIC.to_vec();
        let mut rec = |key: &str, value: &[u8]| -> Result<()> {
            if value.contains(&0) {
                bail!(
                    "{key} {:?} contains a NUL byte",
                    String::from_utf8_lossy(value)
                );
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b' ');
            out.extend_from_slice(value);
            out.push(0);
            Ok(())
        };
        rec("cwd", self.cwd.as_os_str().as_bytes())?;
        for a in &self.args {
            rec("arg", a.as_bytes())?;
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.as_bytes().contains(&b'=') {
                bail!("bad environment variable name {k:?}");
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            rec("env", &kv)?;
        }
        if let Some(t) = self.shell {
            rec("shell", format!("{} {}", t.rows, t.cols).as_bytes())?;
        }
        Ok(out)
    }

    pub fn decode(data: &[u8]) -> Result<Job> {
        let Some(body) = data.strip_prefix(JOB_MAGIC) else {
            bail!("not a vmrun job file (bad magic line)");
        };
        let Some(body) = body.strip_suffix(&[0]) else {
            bail!("truncated job file (no final NUL)");
        };
        let mut job = Job {
            args: Vec::new(),
            cwd: PathBuf::from("/"),
            env: Vec::new(),
            shell: None,
        };
        for rec in body.split(|&b| b == 0) {
            let Some(sp) = rec.iter().position(|&b| b == b' ') else {
                bail!("bad job record {:?}", String::from_utf8_lossy(rec));
            };
            let (key, value) = (&rec[..sp], &rec[sp + 1..]);
            match key {
                b"cwd" => job.cwd = PathBuf::from(OsStr::from_bytes(value)),
                b"arg" => job.args.push(OsString::from_vec(value.to_vec())),
                b"env" => {
                    let eq = value.iter().position(|&b| b == b'=').with_context(|| {
                        format!(
                            "env record without '=': {:?}",
                            String::from_utf8_lossy(value)
                        )
                    })?;
                    job.env.push((
                        OsString::from_vec(value[..eq].to_vec()),
                        OsString::from_vec(value[eq + 1..].to_vec()),
                    ));
                }
                b"shell" => {
                    let text = String::from_utf8_lossy(value);
                    let size = text
                        .split_once(' ')
                        .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)));
                    let Some((rows, cols)) = size else {
                        bail!("bad shell record {text:?} (expected ROWS COLS)");
                    };
                    job.shell = Some(TermSize { rows, cols });
                }
                _ => bail!("unknown job record {:?}", String::from_utf8_lossy(key)),
            }
        }
        if job.args.is_empty() {
            bail!("the job has no command");
        }
        Ok(job)
    }

    /// The value of an environment variable of the job.
    pub fn var(&self, name: &str) -> Option<&OsStr> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }
}

/// How the command ended, as init writes it to the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestStatus {
    /// Exit code, or 128 + signal number, as a shell reports it.
    pub code: i32,
    /// Human-readable: "exited with code 3", "killed by signal 9 (SIGKILL)".
    pub detail: String,
}

impl GuestStatus {
    pub fn encode(&self) -> String {
        format!(
            "exit-status {}\ndetail {}\n",
            self.code,
            self.detail.replace('\n', " ")
        )
    }

    pub fn decode(text: &str) -> Result<GuestStatus> {
        let mut code = None;
        let mut detail = String::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("exit-status ") {
                code = Some(
                    v.trim()
                        .parse()
                        .with_context(|| format!("bad exit status {v:?}"))?,
                );
            } else if let Some(v) = line.strip_prefix("detail ") {
                detail = v.to_string();
            }
        }
        let code = code.context("no exit-status line")?;
        Ok(GuestStatus { code, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_entries_are_the_top_dirs_the_job_names() {
        let job = Job {
            args: vec![
                "/tmp/clone/target/release/ublk-suite".into(),
                "--label".into(),
                "/tmp/x.sh".into(),
                "/tmp/clone/y".into(),
            ],
            cwd: "/tmp/clone".into(),
            env: vec![],
            shell: None,
        };
        assert_eq!(
            tmp_entries(&job),
            vec![std::ffi::OsString::from("clone"), "x.sh".into()]
        );
        let job = Job {
            args: vec!["true".into()],
            cwd: "/work/main".into(),
            env: vec![],
            shell: None,
        };
        assert!(tmp_entries(&job).is_empty());
    }

    #[test]
    fn job_round_trip() {
        let job = Job {
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo 'a b'\nexit 7".into(),
                "".into(),
            ],
            cwd: PathBuf::from("/work/with space"),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("EMPTY".into(), "".into()),
            ],
            shell: None,
        };
        let data = job.encode().unwrap();
        assert_eq!(Job::decode(&data).unwrap(), job);
        let shell = Job {
            args: vec!["bash".into()],
            shell: Some(TermSize {
                rows: 50,
                cols: 132,
            }),
            ..job.clone()
        };
        let data = shell.encode().unwrap();
        assert!(data.ends_with(b"\0shell 50 132\0"));
        assert_eq!(Job::decode(&data).unwrap(), shell);
        assert_eq!(job.var("PATH"), Some(OsStr::new("/usr/bin:/bin")));
        assert_eq!(job.var("NOPE"), None);
    }

    #[test]
    fn job_rejects_bad_input() {
        assert!(Job::decode(b"garbage").is_err());
        assert!(Job::decode(b"vmrun-job 1\ncwd /\0").is_err(), "no command");
        assert!(Job::decode(b"vmrun-job 1\narg true").is_err(), "truncated");
        assert!(Job::decode(b"vmrun-job 1\nfoo x\0").is_err());
        assert!(Job::decode(b"vmrun-job 1\narg sh\0shell 24\0").is_err());
        assert!(Job::decode(b"vmrun-job 1\narg sh\0shell x 80\0").is_err());
        let bad = Job {
            args: vec!["a".into()],
            cwd: "/".into(),
            env: vec![("A=B".into(), "c".into())],
            shell: None,
        };
        assert!(bad.encode().is_err());
    }

    #[test]
    fn hidden_paths() {
        use std::path::Path;
        // /tmp is covered, but the paths a job names there are bound back in place
        assert_eq!(hidden_in_guest(Path::new("/tmp/x/vm-init")), None);
        assert_eq!(hidden_in_guest(Path::new("/proc/x")), Some("/proc"));
        assert_eq!(hidden_in_guest(Path::new("/run")), Some("/run"));
        assert_eq!(
            hidden_in_guest(Path::new("/work/target/release/vm-init")),
            None
        );
        assert_eq!(hidden_in_guest(Path::new("/tmpfoo/x")), None);
    }

    #[test]
    fn status_round_trip() {
        let st = GuestStatus {
            code: 137,
            detail: "killed by signal 9 (SIGKILL)".into(),
        };
        assert_eq!(GuestStatus::decode(&st.encode()).unwrap(), st);
        assert!(GuestStatus::decode("detail x\n").is_err());
        assert!(GuestStatus::decode("exit-status x\n").is_err());
    }
}
