//! `ublk-bench`: criterion benchmarks of ublk copy vs splice zero-copy mode,
//! the kernel loop driver and the backing file (in the guest: `run`), and
//! the host-side report (`report`).  scripts/bench.sh drives both.

mod engine;
mod guest;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

const USAGE: &str = "usage:
  ublk-bench run [--smoke] [--out DIR] [--measure-ms N] [--warmup-ms N] [--size-mib N]
      in the guest, as root: the benchmark matrix; writes DIR/results.tsv and DIR/meta.txt
      (DIR defaults to $VMRUN_RESULTS/bench)
  ublk-bench report RESULTS_DIR [--vmrun-log FILE]
      on the host: RESULTS_DIR/bench.md, RESULTS_DIR/bench.svg; prints `RATIO name value` lines";

fn num(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<u64> {
    let v = args.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
    v.parse()
        .with_context(|| format!("{flag} {v}: not a number"))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("run") => {
            let mut smoke = false;
            let mut out = None;
            let (mut measure, mut warmup, mut size) = (None, None, None);
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--smoke" => smoke = true,
                    "--out" => {
                        out = Some(PathBuf::from(
                            args.next().ok_or_else(|| anyhow!("--out needs a value"))?,
                        ))
                    }
                    "--measure-ms" => measure = Some(num(&mut args, "--measure-ms")?),
                    "--warmup-ms" => warmup = Some(num(&mut args, "--warmup-ms")?),
                    "--size-mib" => size = Some(num(&mut args, "--size-mib")?),
                    _ => bail!("unknown argument {a}\n{USAGE}"),
                }
            }
            let out = match out {
                Some(o) => o,
                None => PathBuf::from(
                    std::env::var("VMRUN_RESULTS")
                        .context("no --out and VMRUN_RESULTS is not set")?,
                )
                .join("bench"),
            };
            let o = guest::Opts {
                smoke,
                out,
                measure: Duration::from_millis(measure.unwrap_or(if smoke { 300 } else { 900 })),
                warmup: Duration::from_millis(warmup.unwrap_or(if smoke { 100 } else { 250 })),
                size_mib: size.unwrap_or(if smoke { 32 } else { 128 }),
            };
            guest::run_guest(&o)
        }
        Some("report") => {
            let dir = PathBuf::from(
                args.next()
                    .ok_or_else(|| anyhow!("report needs RESULTS_DIR\n{USAGE}"))?,
            );
            let mut log = None;
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--vmrun-log" => {
                        log = Some(PathBuf::from(
                            args.next()
                                .ok_or_else(|| anyhow!("--vmrun-log needs a value"))?,
                        ))
                    }
                    _ => bail!("unknown argument {a}\n{USAGE}"),
                }
            }
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
            std::fs::write(&svg, report::svg(&rows, &meta))
                .with_context(|| format!("write {}", svg.display()))?;
            eprintln!("ublk-bench: wrote {} and {}", md.display(), svg.display());
            for (n, v) in report::ratios(&rows) {
                match v {
                    Some(v) => println!("RATIO {n} {v:.3}"),
                    None => println!("RATIO {n} n/a"),
                }
            }
            Ok(())
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
