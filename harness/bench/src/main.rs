//! `ublk-bench`: criterion benchmarks of ublk copy vs splice zero-copy mode,
//! the kernel loop driver and the backing file (in the guest: `run`), and
//! the host-side report (`report`).  scripts/bench.sh drives both.

mod ab;
mod abplot;
mod abreport;
mod client;
mod engine;
mod fio;
mod guest;
mod interval;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

/// Benchmarks of ublk copy vs splice zero-copy mode against the kernel loop driver and
/// the backing file (criterion). scripts/bench.sh runs `run` in the guest and `report`
/// on the host.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "ublk-bench",
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
enum CliCommand {
    /// In the guest, as root: the benchmark matrix; writes DIR/results.tsv and
    /// DIR/meta.txt.
    Run(RunArgs),
    /// On the host: RESULTS_DIR/bench.md and RESULTS_DIR/bench.svg from a run's results;
    /// prints `RATIO name value` lines.
    Report(ReportArgs),
    /// In the guest, as root: the interleaved bench (every configuration live at once,
    /// rounds of short fio runs in a fresh order); writes DIR/ab.tsv and DIR/meta.txt.
    Ab(AbArgs),
    /// On the host: the interleaved bench's report from one or more boots' results
    /// (medians of per-round ratios with intervals, the spread between boots, latency
    /// and cost); prints `RATIO name median lo hi measured|not-measured` lines.
    AbReport(AbReportArgs),
}

/// Options of `ublk-bench ab`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
struct AbArgs {
    /// Where to write ab.tsv and meta.txt [default: $VMRUN_RESULTS/ab].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The ublk server to measure [default: `ublk` beside this program].
    #[arg(long, value_name = "PATH")]
    ublk: Option<PathBuf>,
    /// Rounds; each runs every workload on every configuration once [default: 6; with
    /// --smoke: 2].
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Seconds of each run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    secs: u32,
    /// Seed of the rounds' orders [default: from the clock; meta.txt records it].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Size of the backing file and devices, in MiB [default: 256; with --smoke: 64].
    #[arg(long = "size-mib", value_name = "N")]
    size_mib: Option<u64>,
    /// A backing to measure, ext4 (O_DIRECT file on the scratch disk) or tmpfs (buffered);
    /// repeatable [default: both].
    #[arg(long, value_name = "NAME")]
    backing: Vec<String>,
    /// A workload to run, by its report name (e.g. randread-4k-qd32); repeatable
    /// [default: every one].
    #[arg(long, value_name = "NAME")]
    workload: Vec<String>,
    /// A client to run every workload with, fio or engine (the bench's own io_uring
    /// engine); repeatable [default: both].
    #[arg(long, value_name = "NAME")]
    client: Vec<String>,
    /// Two workloads and two rounds: checks that everything runs.
    #[arg(long)]
    smoke: bool,
}

/// Arguments of `ublk-bench ab-report`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
struct AbReportArgs {
    /// The markdown report to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The plot of the ratios with their intervals (SVG) [default: the report's path
    /// with .svg].
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Each boot's results, LABEL=DIR (DIR holds ab.tsv and meta.txt).
    #[arg(value_name = "LABEL=DIR", required = true)]
    boots: Vec<String>,
}

/// Options of `ublk-bench run`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
struct RunArgs {
    /// A quick pass (smaller device, shorter measurements) to check that it all works.
    #[arg(long)]
    smoke: bool,
    /// Where to write results.tsv and meta.txt [default: $VMRUN_RESULTS/bench].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Measurement time of each benchmark, in ms [default: 900; with --smoke: 300].
    #[arg(long = "measure-ms", value_name = "N")]
    measure_ms: Option<u64>,
    /// Warm-up time of each benchmark, in ms [default: 250; with --smoke: 100].
    #[arg(long = "warmup-ms", value_name = "N")]
    warmup_ms: Option<u64>,
    /// Size of the backing file and devices, in MiB [default: 128; with --smoke: 32].
    #[arg(long = "size-mib", value_name = "N")]
    size_mib: Option<u64>,
}

/// Arguments of `ublk-bench report`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
struct ReportArgs {
    /// The run's results: the DIR of `run --out DIR` (holding results.tsv).
    #[arg(value_name = "RESULTS_DIR")]
    dir: PathBuf,
    /// The host's vmrun log of the run, for the report's metadata.
    #[arg(long = "vmrun-log", value_name = "FILE")]
    vmrun_log: Option<PathBuf>,
}

impl RunArgs {
    /// The run's options; `vmrun_results` ($VMRUN_RESULTS) gives the default --out.
    fn opts(&self, vmrun_results: Option<std::ffi::OsString>) -> Result<guest::Opts> {
        let out = match (&self.out, vmrun_results) {
            (Some(o), _) => o.clone(),
            (None, Some(r)) => PathBuf::from(r).join("bench"),
            (None, None) => bail!("no --out and VMRUN_RESULTS is not set"),
        };
        let smoke = self.smoke;
        Ok(guest::Opts {
            smoke,
            out,
            measure: Duration::from_millis(self.measure_ms.unwrap_or(if smoke {
                300
            } else {
                900
            })),
            warmup: Duration::from_millis(self.warmup_ms.unwrap_or(if smoke { 100 } else { 250 })),
            size_mib: self.size_mib.unwrap_or(if smoke { 32 } else { 128 }),
        })
    }
}

impl AbArgs {
    fn opts(&self, vmrun_results: Option<std::ffi::OsString>, seed: u64) -> Result<ab::AbOpts> {
        let out = match (&self.out, vmrun_results) {
            (Some(o), _) => o.clone(),
            (None, Some(r)) => PathBuf::from(r).join("ab"),
            (None, None) => bail!("no --out and VMRUN_RESULTS is not set"),
        };
        let ublk = match &self.ublk {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("the path of ublk-bench")?
                .with_file_name("ublk"),
        };
        let backings = if self.backing.is_empty() {
            vec![ab::Backing::Ext4Direct, ab::Backing::TmpfsBuffered]
        } else {
            self.backing
                .iter()
                .map(|b| ab::Backing::parse(b))
                .collect::<Result<_>>()?
        };
        if self.secs == 0 {
            bail!("--secs must be at least 1");
        }
        let known: Vec<String> = ab::jobs(false).iter().map(|j| j.name()).collect();
        if let Some(w) = self.workload.iter().find(|w| !known.contains(w)) {
            bail!("unknown workload {w:?}: one of {}", known.join(", "));
        }
        let clients = if self.client.is_empty() {
            client::Client::ALL.to_vec()
        } else {
            let mut v = Vec::new();
            for c in &self.client {
                let c = client::Client::parse(c)?;
                if !v.contains(&c) {
                    v.push(c);
                }
            }
            v
        };
        Ok(ab::AbOpts {
            out,
            ublk,
            rounds: self.rounds.unwrap_or(if self.smoke { 2 } else { 6 }),
            secs: self.secs,
            seed: self.seed.unwrap_or(seed),
            size_mib: self.size_mib.unwrap_or(if self.smoke { 64 } else { 256 }),
            backings,
            workloads: self.workload.clone(),
            clients,
            smoke: self.smoke,
        })
    }
}

fn ab_report(a: &AbReportArgs) -> Result<()> {
    let mut boots = Vec::new();
    let mut meta = Vec::new();
    for b in &a.boots {
        let (label, dir) = b
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{b:?} is not LABEL=DIR"))?;
        let dir = std::path::Path::new(dir);
        let tsv = dir.join("ab.tsv");
        let text =
            std::fs::read_to_string(&tsv).with_context(|| format!("read {}", tsv.display()))?;
        let rows = abreport::parse_tsv(&text).with_context(|| format!("in {}", tsv.display()))?;
        if rows.is_empty() {
            bail!("{} has no measurements", tsv.display());
        }
        for f in ["meta.txt", "host-load.txt"] {
            if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
                for l in t.lines() {
                    if let Some((k, v)) = l.split_once('\t') {
                        meta.push((format!("{label}: {k}"), v.to_string()));
                    }
                }
            }
        }
        boots.push(abreport::Boot {
            label: label.to_string(),
            rows,
        });
    }
    std::fs::write(&a.out, abreport::markdown(&boots, &meta))
        .with_context(|| format!("write {}", a.out.display()))?;
    eprintln!("ublk-bench: wrote {}", a.out.display());
    let plot = a
        .plot
        .clone()
        .unwrap_or_else(|| a.out.with_extension("svg"));
    abplot::draw(&boots, &plot).with_context(|| format!("plot {}", plot.display()))?;
    eprintln!("ublk-bench: wrote {}", plot.display());
    for l in abreport::ratio_lines(&boots) {
        println!("{l}");
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        CliCommand::Run(r) => guest::run_guest(&r.opts(std::env::var_os("VMRUN_RESULTS"))?),
        CliCommand::Ab(a) => {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs());
            let o = a.opts(std::env::var_os("VMRUN_RESULTS"), seed)?;
            eprintln!(
                "ublk-bench ab: seed {}, server {}",
                o.seed,
                o.ublk.display()
            );
            ab::run_ab(&o)
        }
        CliCommand::AbReport(a) => ab_report(&a),
        CliCommand::Report(ReportArgs {
            dir,
            vmrun_log: log,
        }) => {
            let tsv_path = dir.join("results.tsv");
            let text = std::fs::read_to_string(&tsv_path)
                .with_context(|| format!("read {}", tsv_path.display()))?;
            let rows = report::parse_tsv(&text)?;
            if rows.is_empty() {
                bail!("{} has no measurements", tsv_path.display());
            }
            let meta = report::load_meta(&dir, log.as_deref())?;
            let md = dir.join("bench.md");
            std::fs::write(&md, report::markdown(&rows, &meta))
                .with_context(|| format!("write {}", md.display()))?;
            let svg = dir.join("bench.svg");
            report::plot(&rows, &meta, &svg).with_context(|| format!("plot {}", svg.display()))?;
            eprintln!("ublk-bench: wrote {} and {}", md.display(), svg.display());
            for (n, v) in report::ratios(&rows) {
                match v {
                    Some(v) => println!("RATIO {n} {v:.3}"),
                    None => println!("RATIO {n} n/a"),
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ublk-bench").chain(args.iter().copied()))
    }

    fn run(args: &[&str]) -> RunArgs {
        match parse(args).expect("parses").command {
            CliCommand::Run(r) => r,
            c => panic!("not a run: {c:?}"),
        }
    }

    fn err(args: &[&str]) -> (ErrorKind, String) {
        let e = parse(args).expect_err("parsing should fail");
        (e.kind(), text(&e))
    }

    /// What the user sees (without colors), with every run of white space as one space,
    /// so that the terminal's width (help and errors are wrapped to it) does not matter.
    fn text(e: &clap::Error) -> String {
        e.render()
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert()
    }

    #[test]
    fn run_defaults() {
        let o = run(&["run"]).opts(Some("/res".into())).expect("opts");
        assert!(!o.smoke);
        assert_eq!(o.out, PathBuf::from("/res/bench"));
        assert_eq!(o.measure, Duration::from_millis(900));
        assert_eq!(o.warmup, Duration::from_millis(250));
        assert_eq!(o.size_mib, 128);
        let o = run(&["run", "--smoke"])
            .opts(Some("/res".into()))
            .expect("opts");
        assert!(o.smoke);
        assert_eq!(o.measure, Duration::from_millis(300));
        assert_eq!(o.warmup, Duration::from_millis(100));
        assert_eq!(o.size_mib, 32);
        let e = run(&["run"]).opts(None).unwrap_err();
        assert!(format!("{e:#}").contains("no --out and VMRUN_RESULTS is not set"));
    }

    #[test]
    fn run_every_option() {
        let o = run(&[
            "run",
            "--smoke",
            "--out",
            "/o",
            "--measure-ms",
            "10",
            "--warmup-ms=20",
            "--size-mib",
            "8",
        ])
        .opts(None)
        .expect("opts");
        assert!(o.smoke);
        assert_eq!(o.out, PathBuf::from("/o"));
        assert_eq!(o.measure, Duration::from_millis(10));
        assert_eq!(o.warmup, Duration::from_millis(20));
        assert_eq!(o.size_mib, 8);
    }

    fn ab(args: &[&str]) -> AbArgs {
        match parse(args).expect("parses").command {
            CliCommand::Ab(a) => a,
            c => panic!("not ab: {c:?}"),
        }
    }

    #[test]
    fn ab_defaults_and_options() {
        let o = ab(&["ab"]).opts(Some("/res".into()), 42).expect("opts");
        assert_eq!(o.out, PathBuf::from("/res/ab"));
        assert_eq!(o.ublk.file_name().and_then(|n| n.to_str()), Some("ublk"));
        assert_eq!((o.rounds, o.secs, o.seed, o.size_mib), (6, 1, 42, 256));
        assert_eq!(
            o.backings,
            vec![ab::Backing::Ext4Direct, ab::Backing::TmpfsBuffered]
        );
        assert!(!o.smoke);
        assert_eq!(o.clients, client::Client::ALL);
        let o = ab(&["ab", "--client", "engine", "--client", "engine"])
            .opts(Some("/r".into()), 1)
            .expect("opts");
        assert_eq!(o.clients, [client::Client::Engine]);
        let e = ab(&["ab", "--client", "dd"])
            .opts(Some("/r".into()), 1)
            .unwrap_err();
        assert!(format!("{e:#}").contains("unknown client \"dd\""), "{e:#}");
        let o = ab(&["ab", "--smoke"])
            .opts(Some("/r".into()), 1)
            .expect("opts");
        assert_eq!((o.rounds, o.size_mib), (2, 64));
        let o = ab(&[
            "ab",
            "--out",
            "/o",
            "--ublk",
            "/v2/ublk",
            "--rounds",
            "9",
            "--secs",
            "2",
            "--seed",
            "7",
            "--size-mib",
            "128",
            "--backing",
            "tmpfs",
        ])
        .opts(None, 1)
        .expect("opts");
        assert_eq!(o.out, PathBuf::from("/o"));
        assert_eq!(o.ublk, PathBuf::from("/v2/ublk"));
        assert_eq!((o.rounds, o.secs, o.seed, o.size_mib), (9, 2, 7, 128));
        assert_eq!(o.backings, vec![ab::Backing::TmpfsBuffered]);
        let e = ab(&["ab", "--backing", "xfs"])
            .opts(Some("/r".into()), 1)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown backing \"xfs\""),
            "{e:#}"
        );
        let o = ab(&[
            "ab",
            "--workload",
            "randread-4k-qd32",
            "--workload",
            "pcwrite-64k-sync16",
        ])
        .opts(Some("/r".into()), 1)
        .expect("opts");
        assert_eq!(o.workloads, ["randread-4k-qd32", "pcwrite-64k-sync16"]);
        let e = ab(&["ab", "--workload", "randread-4k"])
            .opts(Some("/r".into()), 1)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown workload \"randread-4k\": one of seqread-512k-qd16"),
            "{e:#}"
        );
        let e = ab(&["ab", "--secs", "0"])
            .opts(Some("/r".into()), 1)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("--secs must be at least 1"),
            "{e:#}"
        );
        let e = ab(&["ab"]).opts(None, 1).unwrap_err();
        assert!(format!("{e:#}").contains("no --out and VMRUN_RESULTS is not set"));
    }

    #[test]
    fn ab_report_args() {
        match parse(&["ab-report", "--out", "/r/ab.md", "v2=/a", "v3=/b"])
            .expect("parses")
            .command
        {
            CliCommand::AbReport(a) => {
                assert_eq!(a.out, PathBuf::from("/r/ab.md"));
                assert_eq!(a.boots, vec!["v2=/a".to_string(), "v3=/b".to_string()]);
            }
            c => panic!("not ab-report: {c:?}"),
        }
        let e = parse(&["ab-report", "--out", "/r"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = ab_report(&AbReportArgs {
            out: "/nonexistent/ab.md".into(),
            plot: None,
            boots: vec!["nolabel".into()],
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("is not LABEL=DIR"), "{e:#}");
    }

    #[test]
    fn report() {
        assert_eq!(
            parse(&["report", "/r/results/bench", "--vmrun-log", "/r/vmrun.log"])
                .expect("parses")
                .command,
            CliCommand::Report(ReportArgs {
                dir: "/r/results/bench".into(),
                vmrun_log: Some("/r/vmrun.log".into()),
            })
        );
        assert_eq!(
            parse(&["report", "--vmrun-log=/l", "/d"])
                .expect("parses")
                .command,
            CliCommand::Report(ReportArgs {
                dir: "/d".into(),
                vmrun_log: Some("/l".into()),
            })
        );
        assert_eq!(
            parse(&["report", "/d"]).expect("parses").command,
            CliCommand::Report(ReportArgs {
                dir: "/d".into(),
                vmrun_log: None,
            })
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&[&str], ErrorKind, &str)] = &[
            (
                &["run", "--measure-ms", "x"],
                ErrorKind::ValueValidation,
                "invalid value 'x' for '--measure-ms <N>'",
            ),
            (
                &["run", "--size-mib", "-1"],
                ErrorKind::UnknownArgument,
                "unexpected argument '-1'",
            ),
            (
                &["run", "--warmup-ms"],
                ErrorKind::InvalidValue,
                "a value is required for '--warmup-ms <N>'",
            ),
            (
                &["run", "--out"],
                ErrorKind::InvalidValue,
                "a value is required for '--out <DIR>'",
            ),
            (
                &["run", "--smok"],
                ErrorKind::UnknownArgument,
                "similar argument exists: '--smoke'",
            ),
            (
                &["run", "extra"],
                ErrorKind::UnknownArgument,
                "unexpected argument 'extra'",
            ),
            (
                &["report"],
                ErrorKind::MissingRequiredArgument,
                "<RESULTS_DIR>",
            ),
            (
                &["report", "/d", "--bogus"],
                ErrorKind::UnknownArgument,
                "unexpected argument '--bogus'",
            ),
            (
                &["report", "/d", "/e"],
                ErrorKind::UnknownArgument,
                "unexpected argument '/e'",
            ),
            (
                &["frob"],
                ErrorKind::InvalidSubcommand,
                "unrecognized subcommand 'frob'",
            ),
        ];
        for (args, kind, text) in cases {
            let (k, msg) = err(args);
            assert_eq!(k, *kind, "{args:?}: {msg}");
            assert!(msg.contains(text), "{args:?}: {text:?} not in:\n{msg}");
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        let e = parse(&[]).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn help() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["help"],
            &["run", "-h"],
            &["report", "--help"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0, "{args:?}");
        }
        let h = parse(&["run", "--help"]).unwrap_err();
        let h = text(&h);
        for want in [
            "--smoke",
            "--out <DIR>",
            "$VMRUN_RESULTS/bench",
            "--measure-ms <N>",
            "--warmup-ms <N>",
            "--size-mib <N>",
            "[default: 128; with --smoke: 32]",
        ] {
            assert!(h.contains(want), "{want:?} not in:\n{h}");
        }
        let h = parse(&["report", "--help"])
            .unwrap_err()
            .render()
            .to_string();
        for want in ["<RESULTS_DIR>", "--vmrun-log <FILE>", "RATIO"] {
            assert!(h.contains(want), "{want:?} not in:\n{h}");
        }
    }
}
