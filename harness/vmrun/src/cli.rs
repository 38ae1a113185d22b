//! Command-line parsing, with clap (derive).
//!
//! `vmrun run` takes its options first and the guest command last: the command starts at
//! `--` or at the first word that is not an option, and everything after it belongs to the
//! command (`vmrun run --kernel K ls -l --timeout 1` runs `ls -l --timeout 1`).
//!
//! The short options are virtme-ng's, which kernel developers know: `-p` (`--cpus`), `-m`
//! (`--mem`), `-a` (`--append`) and `-e CMD` (`--exec`, the same as `-- sh -c CMD`).

use crate::accel::AccelChoice;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const RUN_AFTER_HELP: &str = "\
In the guest: HOME=/tmp, PATH from the host, VMRUN_RESULTS=/run/vmrun/results,
VMRUN_SCRATCH_DISK=/dev/vda (when there is a disk). Writable: /tmp, /run, $VMRUN_RESULTS
and the scratch disk; tracefs and debugfs are mounted. Every run directory keeps
qemu.cmdline (the exact QEMU command), console.log, status and results/.

--shell: the console is the shell's controlling terminal (job control, ctrl-c). `poweroff`
(or `reboot`, `halt`, `kill -USR2 1`) or leaving the shell powers the VM off; the exit
status is then 0, or the shell's own. Ctrl-a x kills QEMU at once.

Exit status of run:
  CMD's exit status (128+N for signal N) when the kernel log is clean;
  125  the kernel log shows a panic, Oops, BUG, WARNING, KASAN/KFENCE/UBSAN report,
       lockdep splat, hung task, lockup or RCU stall (whatever CMD's status);
  124  timeout (and the log is otherwise clean);
  123  the VM failed: QEMU did not start, init failed, or no exit status came back;
  2    bad usage.";

/// Boots test kernels in QEMU (the host's root is the guest's read-only root, over 9p),
/// runs a command in the guest and judges the kernel log.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "vmrun",
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = "See `vmrun run --help` for the guest, --shell and the exit status."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CliCommand {
    /// Boot a kernel and run CMD in it, or a shell.
    ///
    /// Boots the kernel in QEMU, runs CMD as root in the guest (in the host's current
    /// directory), streams the serial console and judges it for kernel problems.
    #[command(
        after_help = RUN_AFTER_HELP,
        override_usage = "vmrun run [OPTIONS] --kernel <PATH> [--] <CMD>...\n       \
                          vmrun run [OPTIONS] --kernel <PATH> -e <CMD>\n       \
                          vmrun run [OPTIONS] --kernel <PATH> --shell"
    )]
    Run(RunOptions),
    /// Check a kernel .config against config fragments.
    ///
    /// Fails, naming each option, when the .config lacks an option a fragment asks for
    /// (Kconfig silently drops options whose dependencies are not met).
    CheckConfig(CheckConfigArgs),
}

/// Options of `vmrun run`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunOptions {
    /// The kernel: a bzImage, or a kernel build directory (the O= directory, holding
    /// arch/x86/boot/bzImage).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Kill the VM after SECS seconds [default: 300; with --shell: no limit].
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Guest memory: MiB, or a size with a K/M/G/T suffix (2G), as QEMU's -m takes it; at
    /// least 128 MiB.
    #[arg(short = 'm', long = "mem", value_name = "SIZE", default_value_t = 2048,
          value_parser = parse_mem)]
    pub mem_mib: u64,

    /// Guest CPUs.
    #[arg(short = 'p', long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,

    /// Scratch disk /dev/vda, a sparse raw file deleted after the run: bytes, or with a
    /// K/M/G/T suffix; 0 for none.
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = zc_cliutil::size_arg)]
    pub disk_size: u64,

    /// The run directory: qemu.cmdline, console.log, status, and results/ (the guest's
    /// $VMRUN_RESULTS). Default: a new directory under
    /// ${UBLK_ZC_CACHE:-~/.cache/ublk-splice-zc}/runs/.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,

    /// Accelerator: auto uses KVM only if a probe guest really runs well with it.
    #[arg(long, value_name = "ACCEL", value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,

    /// Extra kernel command-line arguments, after ours so that they win (repeatable).
    #[arg(short = 'a', long, value_name = "ARGS")]
    pub append: Vec<String>,

    /// Extra environment variable for CMD (repeatable).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(OsString, OsString)>,

    /// Print the QEMU command line and the guest command, and boot nothing (with
    /// --accel auto the short KVM probe still runs, so that the line is the real one).
    #[arg(long)]
    pub dry_run: bool,

    /// Boot to an interactive root shell on the console instead of running CMD: same
    /// mounts, same run directory.
    #[arg(long)]
    pub shell: bool,

    /// Run CMD with `sh -c` in the guest: `-e 'uname -r; nproc'` is
    /// `-- sh -c 'uname -r; nproc'`.
    #[arg(short = 'e', long, value_name = "CMD", conflicts_with = "shell")]
    pub exec: Option<OsString>,

    /// The command to run in the guest, and its arguments.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        required_unless_present_any = ["shell", "exec"],
        conflicts_with_all = ["shell", "exec"]
    )]
    pub command: Vec<OsString>,
}

/// The timeout of a run without --timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl RunOptions {
    /// The timeout: --timeout, else [`DEFAULT_TIMEOUT`], else none for a shell.
    pub fn timeout(&self) -> Option<Duration> {
        match self.timeout {
            Some(t) => Some(t),
            None if self.shell => None,
            None => Some(DEFAULT_TIMEOUT),
        }
    }

    /// The command the guest runs (unless it runs a shell): CMD, or `sh -c` and `--exec`'s.
    pub fn guest_command(&self) -> Vec<OsString> {
        match &self.exec {
            Some(cmd) => vec!["sh".into(), "-c".into(), cmd.clone()],
            None => self.command.clone(),
        }
    }
}

/// Arguments of `vmrun check-config`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CheckConfigArgs {
    /// The kernel's .config (in its build directory).
    #[arg(value_name = "BUILD/.config")]
    pub config: PathBuf,
    /// The config fragments that were merged into it.
    #[arg(value_name = "FRAGMENT")]
    pub fragments: Vec<PathBuf>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: u64 = s
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    if secs == 0 {
        return Err("the timeout must be at least 1 second".into());
    }
    Ok(Duration::from_secs(secs))
}

/// A bare number is MiB, as QEMU's -m and virtme-ng's --memory have it; with a suffix it is
/// a size (zc_cliutil::parse_size), which must be whole MiB.
fn parse_mem(s: &str) -> Result<u64, String> {
    let bad = || format!("expected a number of MiB or a size such as 2G, got {s:?}");
    let mib: u64 = match s.parse() {
        Ok(mib) => mib,
        Err(_) if s.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
        Err(_) => {
            let bytes = zc_cliutil::parse_size(s).map_err(|_| bad())?;
            if bytes % (1 << 20) != 0 {
                return Err(format!("{s:?} is not a whole number of MiB"));
            }
            bytes >> 20
        }
    };
    if mib < 128 {
        return Err(format!("the guest needs at least 128 MiB, not {mib}"));
    }
    Ok(mib)
}

fn parse_env(s: &str) -> Result<(OsString, OsString), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(s: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vmrun").chain(s.iter().copied()))
    }

    fn run(s: &[&str]) -> RunOptions {
        match parse(s) {
            Ok(Cli {
                command: CliCommand::Run(o),
            }) => o,
            other => panic!("not a run: {other:?}"),
        }
    }

    fn os(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    /// The error, rendered as the user sees it (without colors).
    fn err(s: &[&str]) -> (ErrorKind, String) {
        let e = parse(s).expect_err("parsing should fail");
        (e.kind(), e.render().to_string())
    }

    #[test]
    fn defaults() {
        let o = run(&["run", "--kernel", "/k", "--", "true"]);
        assert_eq!(o.kernel, PathBuf::from("/k"));
        assert_eq!(o.timeout(), Some(Duration::from_secs(300)));
        assert_eq!((o.mem_mib, o.cpus), (2048, 2));
        assert_eq!(o.disk_size, 2 << 30);
        assert_eq!(o.results, None);
        assert_eq!(o.accel, AccelChoice::Auto);
        assert!(o.append.is_empty() && o.env.is_empty());
        assert!(!o.dry_run && !o.shell);
        assert_eq!(o.exec, None);
        assert_eq!(o.command, os(&["true"]));
        assert_eq!(o.guest_command(), os(&["true"]));
    }

    #[test]
    fn virtme_ng_short_options() {
        let o = run(&[
            "run",
            "--kernel",
            "/k",
            "-p",
            "4",
            "-m",
            "2G",
            "-a",
            "a=1 b",
            "-a",
            "c",
            "-e",
            "uname -r; nproc",
        ]);
        assert_eq!((o.cpus, o.mem_mib), (4, 2048));
        assert_eq!(o.append, ["a=1 b", "c"]);
        assert_eq!(o.exec, Some(OsString::from("uname -r; nproc")));
        assert!(o.command.is_empty());
        assert_eq!(o.guest_command(), os(&["sh", "-c", "uname -r; nproc"]));
        // The same as the long options, and as `-- sh -c CMD`.
        let long = run(&[
            "run",
            "--kernel",
            "/k",
            "--cpus=4",
            "--mem=2048",
            "--append",
            "a=1 b",
            "--append=c",
            "--exec",
            "uname -r; nproc",
        ]);
        assert_eq!(long, o);
        let dashdash = run(&[
            "run",
            "--kernel",
            "/k",
            "-p4",
            "-m2048",
            "-aa=1 b",
            "-ac",
            "--",
            "sh",
            "-c",
            "uname -r; nproc",
        ]);
        assert_eq!(dashdash.guest_command(), o.guest_command());
        assert_eq!((dashdash.cpus, dashdash.mem_mib), (4, 2048));
        assert_eq!(dashdash.append, o.append);
        // -e's command may start with a dash when attached.
        assert_eq!(
            run(&["run", "--kernel", "/k", "-e=-x"]).guest_command(),
            os(&["sh", "-c", "-x"])
        );
    }

    #[test]
    fn memory_sizes() {
        for (arg, mib) in [
            ("128", 128),
            ("1024", 1024),
            ("512M", 512),
            ("512MiB", 512),
            ("2G", 2048),
            ("2g", 2048),
            ("1T", 1 << 20),
            ("262144K", 256),
        ] {
            assert_eq!(
                run(&["run", "--kernel", "/k", "-m", arg, "true"]).mem_mib,
                mib
            );
            let mem = format!("--mem={arg}");
            assert_eq!(run(&["run", "--kernel", "/k", &mem, "true"]).mem_mib, mib);
        }
    }

    #[test]
    fn all_options() {
        let o = run(&[
            "run",
            "--kernel=/k",
            "--timeout",
            "20",
            "--mem=512",
            "--cpus",
            "1",
            "--disk-size",
            "512M",
            "--results",
            "/r",
            "--accel",
            "tcg",
            "--append",
            "a=1",
            "--append=b",
            "--env",
            "X=y=z",
            "--env=EMPTY=",
            "--dry-run",
            "--",
            "sh",
            "-c",
            "exit 7",
        ]);
        assert_eq!(o.timeout(), Some(Duration::from_secs(20)));
        assert_eq!((o.mem_mib, o.cpus, o.disk_size), (512, 1, 512 << 20));
        assert_eq!(o.results, Some(PathBuf::from("/r")));
        assert_eq!(o.accel, AccelChoice::Tcg);
        assert_eq!(o.append, ["a=1", "b"]);
        assert_eq!(
            o.env,
            [
                (OsString::from("X"), OsString::from("y=z")),
                (OsString::from("EMPTY"), OsString::from(""))
            ]
        );
        assert!(o.dry_run);
        assert_eq!(o.command, os(&["sh", "-c", "exit 7"]));
    }

    #[test]
    fn command_without_double_dash() {
        // Options after the command belong to the command, -h and -- included.
        let o = run(&[
            "run",
            "--kernel",
            "/k",
            "ls",
            "-l",
            "--timeout",
            "1",
            "-h",
            "--",
        ]);
        assert_eq!(o.command, os(&["ls", "-l", "--timeout", "1", "-h", "--"]));
        assert_eq!(o.timeout, None);
        // After --, a command may itself start with a dash.
        let o = run(&["run", "--kernel", "/k", "--", "-x", "--dry-run"]);
        assert_eq!(o.command, os(&["-x", "--dry-run"]));
        assert!(!o.dry_run);
    }

    #[test]
    fn shell_and_dry_run() {
        let o = run(&["run", "--kernel", "/k", "--shell"]);
        assert!(o.shell && !o.dry_run);
        assert!(o.command.is_empty());
        assert_eq!(o.timeout(), None, "a shell has no time limit by default");
        let o = run(&["run", "--kernel", "/k", "--shell", "--timeout", "60"]);
        assert_eq!(o.timeout(), Some(Duration::from_secs(60)));
        let o = run(&["run", "--shell", "--dry-run", "--kernel", "/build/out"]);
        assert!(o.shell && o.dry_run);
        assert_eq!(o.kernel, PathBuf::from("/build/out"));
        // A shell and a command exclude each other.
        let (kind, msg) = err(&["run", "--kernel", "/k", "--shell", "--", "true"]);
        assert_eq!(kind, ErrorKind::ArgumentConflict);
        assert!(
            msg.contains("'--shell' cannot be used with '[CMD]...'"),
            "{msg}"
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&[&str], ErrorKind, &str)] = &[
            (
                &["run", "--", "true"],
                ErrorKind::MissingRequiredArgument,
                "--kernel <PATH>",
            ),
            (
                &["run", "--kernel", "/k"],
                ErrorKind::MissingRequiredArgument,
                "<CMD>",
            ),
            (
                &["run", "--kernel", "/k", "--"],
                ErrorKind::MissingRequiredArgument,
                "<CMD>",
            ),
            (
                &["run", "--kernel"],
                ErrorKind::InvalidValue,
                "a value is required for '--kernel <PATH>'",
            ),
            (
                &["run", "--kernel", "/k", "--bogus", "1", "--", "true"],
                ErrorKind::UnknownArgument,
                "unexpected argument '--bogus'",
            ),
            (
                &["run", "--kernel", "/k", "--dryrun", "--", "true"],
                ErrorKind::UnknownArgument,
                "a similar argument exists: '--dry-run'",
            ),
            (
                &["run", "--kernel", "/k", "--timeout", "x", "--", "true"],
                ErrorKind::ValueValidation,
                "invalid value 'x' for '--timeout <SECS>': expected a number of seconds",
            ),
            (
                &["run", "--kernel", "/k", "--timeout", "0", "--", "true"],
                ErrorKind::ValueValidation,
                "at least 1 second",
            ),
            (
                &["run", "--kernel", "/k", "--mem", "64", "--", "true"],
                ErrorKind::ValueValidation,
                "at least 128 MiB",
            ),
            (
                &["run", "--kernel", "/k", "--mem", "2X", "--", "true"],
                ErrorKind::ValueValidation,
                "expected a number of MiB",
            ),
            (
                &["run", "--kernel", "/k", "-m", "64M", "--", "true"],
                ErrorKind::ValueValidation,
                "at least 128 MiB, not 64",
            ),
            (
                &["run", "--kernel", "/k", "-m", "1536K", "--", "true"],
                ErrorKind::ValueValidation,
                "\"1536K\" is not a whole number of MiB",
            ),
            (
                &["run", "--kernel", "/k", "-m", "1.5G", "--", "true"],
                ErrorKind::ValueValidation,
                "invalid value '1.5G' for '--mem <SIZE>': expected a number of MiB or a size",
            ),
            (
                &[
                    "run",
                    "--kernel",
                    "/k",
                    "-m",
                    "99999999999999999999",
                    "--",
                    "true",
                ],
                ErrorKind::ValueValidation,
                "expected a number of MiB",
            ),
            (
                &["run", "--kernel", "/k", "-p", "0", "--", "true"],
                ErrorKind::ValueValidation,
                "invalid value '0' for '--cpus <N>'",
            ),
            (
                &["run", "--kernel", "/k", "-e"],
                ErrorKind::InvalidValue,
                "a value is required for '--exec <CMD>'",
            ),
            (
                &["run", "--kernel", "/k", "-e", "true", "--", "true"],
                ErrorKind::ArgumentConflict,
                "'--exec <CMD>' cannot be used with '[CMD]...'",
            ),
            (
                &["run", "--kernel", "/k", "-e", "true", "--shell"],
                ErrorKind::ArgumentConflict,
                "'--exec <CMD>' cannot be used with '--shell'",
            ),
            (
                &["run", "--kernel", "/k", "-e", "a", "-e", "b"],
                ErrorKind::ArgumentConflict,
                "'--exec <CMD>' cannot be used multiple times",
            ),
            (
                &["run", "--kernel", "/k", "--cpus", "0", "--", "true"],
                ErrorKind::ValueValidation,
                "0 is not in 1..=64",
            ),
            (
                &["run", "--kernel", "/k", "--cpus", "65", "--", "true"],
                ErrorKind::ValueValidation,
                "65 is not in 1..=64",
            ),
            (
                &["run", "--kernel", "/k", "--accel", "xen", "--", "true"],
                ErrorKind::InvalidValue,
                "[possible values: auto, kvm, tcg]",
            ),
            (
                &["run", "--kernel", "/k", "--env", "NOEQ", "--", "true"],
                ErrorKind::ValueValidation,
                "expected NAME=VALUE",
            ),
            (
                &["run", "--kernel", "/k", "--env", "=v", "--", "true"],
                ErrorKind::ValueValidation,
                "expected NAME=VALUE",
            ),
            (
                &["run", "--kernel", "/k", "--disk-size", "2X", "--", "true"],
                ErrorKind::ValueValidation,
                "bad size \"2X\"",
            ),
            (
                &[
                    "run",
                    "--kernel",
                    "/k",
                    "--disk-size",
                    "99999999999T",
                    "--",
                    "true",
                ],
                ErrorKind::ValueValidation,
                "too large",
            ),
            (
                &["frobnicate"],
                ErrorKind::InvalidSubcommand,
                "unrecognized subcommand 'frobnicate'",
            ),
            (
                &["check-config"],
                ErrorKind::MissingRequiredArgument,
                "<BUILD/.config>",
            ),
        ];
        for (args, kind, text) in cases {
            let (k, msg) = err(args);
            assert_eq!(k, *kind, "{args:?}: {msg}");
            assert!(msg.contains(text), "{args:?}: {text:?} not in:\n{msg}");
            // Every error ends with a pointer to the help, and exits 2.
            assert!(msg.contains("--help"), "{args:?}: {msg}");
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        // No subcommand at all: the help, as an error (exit 2).
        let e = parse(&[]).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(e.exit_code(), 2);
        assert!(e.render().to_string().contains("check-config"));
    }

    #[test]
    fn help() {
        for args in [
            &["--help"][..],
            &["help"],
            &["run", "-h"],
            &["run", "--kernel", "/k", "--help"],
            &["help", "run"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0, "{args:?}");
        }
        let run_help = parse(&["run", "--help"]).unwrap_err().render().to_string();
        for want in [
            "--kernel <PATH>",
            "arch/x86/boot/bzImage",
            "--timeout <SECS>",
            "[default: 300; with --shell: no limit]",
            "-m, --mem <SIZE>",
            "[default: 2048]",
            "-p, --cpus <N>",
            "--disk-size <SIZE>",
            "[default: 2G]",
            "--results <DIR>",
            "--accel <ACCEL>",
            "- tcg:",
            "-a, --append <ARGS>",
            "-e, --exec <CMD>",
            "-e <CMD>",
            "--env <NAME=VALUE>",
            "--dry-run",
            "--shell",
            "qemu.cmdline",
            "poweroff",
            "125  the kernel log shows",
            "2    bad usage",
        ] {
            assert!(run_help.contains(want), "{want:?} not in:\n{run_help}");
        }
    }

    #[test]
    fn check_config() {
        assert_eq!(
            parse(&["check-config", "a/.config", "f1", "f2"]).unwrap(),
            Cli {
                command: CliCommand::CheckConfig(CheckConfigArgs {
                    config: "a/.config".into(),
                    fragments: vec!["f1".into(), "f2".into()],
                })
            }
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
