//! Command-line parsing, by hand.

use crate::accel::AccelChoice;
use anyhow::{bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
Usage:
  vmrun run --kernel BZIMAGE [OPTIONS] [--] CMD [ARGS...]
  vmrun check-config BUILD/.config FRAGMENT...
  vmrun --help

vmrun run boots BZIMAGE in QEMU with the host's root as the guest's read-only root (9p),
runs CMD as root in the guest (in the host's current directory), streams the serial
console to stdout and judges it for kernel problems.

Options of run:
  --kernel PATH        the kernel image (bzImage); required
  --timeout SECS       kill the VM after SECS seconds (default 300)
  --mem MIB            guest memory in MiB (default 2048)
  --cpus N             guest CPUs (default 2)
  --disk-size SIZE     scratch disk /dev/vda, a sparse raw file deleted after the run:
                       bytes, or with a K/M/G/T suffix; 0 for none (default 2G)
  --results DIR        the run directory: console.log, status, and results/ (the guest's
                       $VMRUN_RESULTS); default: a new directory under
                       ${UBLK_ZC_CACHE:-~/.cache/ublk-splice-zc}/runs/
  --accel auto|kvm|tcg accelerator (default auto: KVM if a probe guest runs well, else TCG)
  --append ARGS        extra kernel command-line arguments (repeatable)
  --env NAME=VALUE     extra environment variable for CMD (repeatable)
  -h, --help           this help

In the guest: HOME=/tmp, PATH from the host, VMRUN_RESULTS=/run/vmrun/results,
VMRUN_SCRATCH_DISK=/dev/vda (when there is a disk). Writable: /tmp, /run, $VMRUN_RESULTS
and the scratch disk; tracefs and debugfs are mounted.

Exit status of run:
  CMD's exit status (128+N for signal N) when the kernel log is clean;
  125  the kernel log shows a panic, Oops, BUG, WARNING, KASAN/KFENCE/UBSAN report,
       lockdep splat, hung task, lockup or RCU stall (whatever CMD's status);
  124  timeout (and the log is otherwise clean);
  123  the VM failed: QEMU did not start, init failed, or no exit status came back;
  2    bad usage.
";

/// Options of `vmrun run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub kernel: PathBuf,
    pub timeout: Duration,
    pub mem_mib: u64,
    pub cpus: u32,
    pub disk_size: u64,
    pub results: Option<PathBuf>,
    pub accel: AccelChoice,
    pub append: Vec<String>,
    pub env: Vec<(OsString, OsString)>,
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cli {
    Run(RunOptions),
    CheckConfig(Vec<String>),
    Help,
}

/// Parses a size: bytes, or a number with a binary K/M/G/T suffix (`2G`, `512MiB`, `1g`).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad size {s:?} (expected e.g. 2G, 512M, 1048576)"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("size {s:?} is too large"))
}

fn number<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow::anyhow!("{opt}: expected a number, got {v:?}"))
}

fn utf8<'a>(opt: &str, v: &'a OsStr) -> Result<&'a str> {
    v.to_str()
        .with_context(|| format!("{opt}: the value is not UTF-8"))
}

fn parse_run(args: &[OsString]) -> Result<Cli> {
    let mut kernel = None;
    let mut o = RunOptions {
        kernel: PathBuf::new(),
        timeout: Duration::from_secs(300),
        mem_mib: 2048,
        cpus: 2,
        disk_size: 2 << 30,
        results: None,
        accel: AccelChoice::Auto,
        append: Vec::new(),
        env: Vec::new(),
        command: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(s) = arg.to_str().filter(|s| s.starts_with('-')) else {
            // The command starts at the first word that is not an option.
            o.command = args[i - 1..].to_vec();
            break;
        };
        if s == "--" {
            o.command = args[i..].to_vec();
            break;
        }
        if s == "-h" || s == "--help" {
            return Ok(Cli::Help);
        }
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(OsString::from(v))),
            _ => (s, None),
        };
        const TAKES_VALUE: &[&str] = &[
            "--kernel",
            "--timeout",
            "--mem",
            "--cpus",
            "--disk-size",
            "--results",
            "--accel",
            "--append",
            "--env",
        ];
        if !TAKES_VALUE.contains(&name) {
            bail!("unknown option {s:?} of `vmrun run` (see vmrun --help)");
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .with_context(|| format!("{name} needs a value"))?
                    .clone();
                i += 1;
                v
            }
        };
        match name {
            "--kernel" => kernel = Some(PathBuf::from(value)),
            "--results" => o.results = Some(PathBuf::from(value)),
            "--timeout" => {
                let secs: u64 = number(name, utf8(name, &value)?)?;
                if secs == 0 {
                    bail!("--timeout must be at least 1 second");
                }
                o.timeout = Duration::from_secs(secs);
            }
            "--mem" => {
                o.mem_mib = number(name, utf8(name, &value)?)?;
                if o.mem_mib < 128 {
                    bail!("--mem {}: the guest needs at least 128 MiB", o.mem_mib);
                }
            }
            "--cpus" => {
                o.cpus = number(name, utf8(name, &value)?)?;
                if !(1..=64).contains(&o.cpus) {
                    bail!("--cpus {}: expected 1 to 64", o.cpus);
                }
            }
            "--disk-size" => o.disk_size = parse_size(utf8(name, &value)?)?,
            "--accel" => o.accel = utf8(name, &value)?.parse()?,
            "--append" => o.append.push(utf8(name, &value)?.to_string()),
            "--env" => {
                let v = utf8(name, &value)?;
                let Some((k, val)) = v.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    bail!("--env {v:?}: expected NAME=VALUE");
                };
                o.env.push((k.into(), val.into()));
            }
            _ => unreachable!("every option of TAKES_VALUE is handled"),
        }
    }
    o.kernel = kernel.context("--kernel PATH is required")?;
    if o.command.is_empty() {
        bail!("no command to run in the guest (vmrun run --kernel PATH -- CMD ARGS...)");
    }
    Ok(Cli::Run(o))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[OsString]) -> Result<Cli> {
    let Some(sub) = args.first() else {
        bail!("no subcommand (see vmrun --help)")
    };
    match sub.to_str() {
        Some("run") => parse_run(&args[1..]),
        Some("check-config") => {
            let rest = args[1..]
                .iter()
                .map(|a| {
                    a.to_str()
                        .map(str::to_string)
                        .context("check-config: a path is not UTF-8")
                })
                .collect::<Result<Vec<_>>>()?;
            if rest.is_empty() {
                bail!("usage: vmrun check-config BUILD/.config FRAGMENT...");
            }
            Ok(Cli::CheckConfig(rest))
        }
        Some("-h" | "--help" | "help") => Ok(Cli::Help),
        _ => bail!("unknown subcommand {sub:?} (expected run or check-config; see vmrun --help)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn run(s: &[&str]) -> Result<RunOptions> {
        match parse(&args(s))? {
            Cli::Run(o) => Ok(o),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&["run", "--kernel", "/k", "--", "true"]).unwrap();
        assert_eq!(o.kernel, PathBuf::from("/k"));
        assert_eq!(o.timeout, Duration::from_secs(300));
        assert_eq!((o.mem_mib, o.cpus), (2048, 2));
        assert_eq!(o.disk_size, 2 << 30);
        assert_eq!(o.results, None);
        assert_eq!(o.accel, AccelChoice::Auto);
        assert_eq!(o.command, args(&["true"]));
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
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .unwrap();
        assert_eq!(o.timeout, Duration::from_secs(20));
        assert_eq!((o.mem_mib, o.cpus, o.disk_size), (512, 1, 512 << 20));
        assert_eq!(o.results, Some(PathBuf::from("/r")));
        assert_eq!(o.accel, AccelChoice::Tcg);
        assert_eq!(o.append, ["a=1", "b"]);
        assert_eq!(o.env, [(OsString::from("X"), OsString::from("y=z"))]);
        assert_eq!(o.command, args(&["sh", "-c", "exit 7"]));
    }

    #[test]
    fn command_without_double_dash() {
        // Options after the command belong to the command.
        let o = run(&["run", "--kernel", "/k", "ls", "-l", "--timeout", "1"]).unwrap();
        assert_eq!(o.command, args(&["ls", "-l", "--timeout", "1"]));
        assert_eq!(o.timeout, Duration::from_secs(300));
    }

    #[test]
    fn errors() {
        let err = |s: &[&str]| format!("{:#}", parse(&args(s)).unwrap_err());
        assert!(err(&["run", "--", "true"]).contains("--kernel"));
        assert!(err(&["run", "--kernel", "/k"]).contains("no command"));
        assert!(err(&["run", "--kernel", "/k", "--",]).contains("no command"));
        assert!(err(&["run", "--kernel"]).contains("needs a value"));
        assert!(
            err(&["run", "--kernel", "/k", "--bogus", "1", "--", "true"])
                .contains("unknown option")
        );
        assert!(
            err(&["run", "--kernel", "/k", "--timeout", "x", "--", "true"])
                .contains("expected a number")
        );
        assert!(
            err(&["run", "--kernel", "/k", "--timeout", "0", "--", "true"]).contains("at least 1")
        );
        assert!(err(&["run", "--kernel", "/k", "--cpus", "0", "--", "true"]).contains("1 to 64"));
        assert!(
            err(&["run", "--kernel", "/k", "--accel", "xen", "--", "true"])
                .contains("unknown accelerator")
        );
        assert!(
            err(&["run", "--kernel", "/k", "--env", "NOEQ", "--", "true"]).contains("NAME=VALUE")
        );
        assert!(
            err(&["run", "--kernel", "/k", "--disk-size", "2X", "--", "true"]).contains("bad size")
        );
        assert!(err(&["frobnicate"]).contains("unknown subcommand"));
        assert!(err(&[]).contains("no subcommand"));
        assert!(err(&["check-config"]).contains("usage"));
    }

    #[test]
    fn help_and_check_config() {
        assert_eq!(parse(&args(&["--help"])).unwrap(), Cli::Help);
        assert_eq!(parse(&args(&["run", "-h"])).unwrap(), Cli::Help);
        assert_eq!(
            parse(&args(&["run", "--kernel", "/k", "--help"])).unwrap(),
            Cli::Help
        );
        assert_eq!(
            parse(&args(&["check-config", "a/.config", "f1"])).unwrap(),
            Cli::CheckConfig(vec!["a/.config".into(), "f1".into()])
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64KB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
