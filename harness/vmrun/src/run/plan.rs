//! The plan of a run, decided before anything boots: the QEMU command line and the job, so
//! that `--dry-run` shows exactly what a run does.

use super::host::Host;
use super::scratch::{scratch_qemu_path, SCRATCH_FD};
use crate::accel::AccelPlan;
use crate::cli::RunOptions;
use crate::job::{Job, QEMU_CMDLINE, SHARE_TAG};
use crate::qemu::QemuConfig;
use crate::report::shell_words;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Firmware that boots a kernel faster than SeaBIOS; the first one found is used.
const FAST_BIOS: &[&str] = &[
    "/usr/share/qemu/qboot.rom",
    "/usr/local/share/qemu/qboot.rom",
];

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TermSize;
    use std::path::Path;

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
                false => opts.guest_command(),
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
    fn sizes_for_people() {
        assert_eq!(human_size(2 << 30), "2 GiB");
        assert_eq!(human_size(512 << 20), "512 MiB");
        assert_eq!(human_size(1536 << 20), "1536 MiB");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
