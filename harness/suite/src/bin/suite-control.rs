//! Judges the suite's run on the base kernel (the control run), on the host:
//! `suite-control TAP-FILE PATTERNS-FILE` prints `ok - ...` / `not ok - ...` lines and exits
//! non-zero if the outcome is not the expected one (see ublk_suite::control). With
//! `ZC_JUNIT=PATH` (the gate's counted steps), it writes the same checks there as JUnit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ublk_suite::control;
use ublk_suite::runner::{report, Outcome, TestResult};

/// Judges the suite's run on the base kernel (the control run): prints `ok - ...` /
/// `not ok - ...` lines and fails if the outcome is not the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "suite-control")]
struct Cli {
    /// The run's TAP report (suite-base.tap).
    #[arg(value_name = "TAP-FILE")]
    tap: PathBuf,
    /// What must fail on the base kernel (harness/suite/needs-series.txt).
    #[arg(value_name = "PATTERNS-FILE")]
    patterns: PathBuf,
}

fn main() -> Result<ExitCode> {
    // Usage errors exit 2, --help 0.
    let Cli { tap, patterns } = Cli::parse();
    let tap_text =
        std::fs::read_to_string(&tap).with_context(|| format!("reading {}", tap.display()))?;
    let pat_text = std::fs::read_to_string(&patterns)
        .with_context(|| format!("reading {}", patterns.display()))?;
    let results = control::parse_tap(&tap_text);
    if results.is_empty() {
        bail!("{} holds no test results", tap.display());
    }
    let mut failed = 0;
    let mut checks = Vec::new();
    for (line, ok) in control::judge(&results, &control::parse_patterns(&pat_text)) {
        if ok {
            println!("ok - {line}");
        } else {
            failed += 1;
            println!("not ok - {line}");
        }
        checks.push(TestResult {
            suite: "control".into(),
            message: if ok { String::new() } else { line.clone() },
            name: line,
            outcome: if ok { Outcome::Passed } else { Outcome::Failed },
        });
    }
    if let Some(path) = std::env::var_os("ZC_JUNIT") {
        let path = PathBuf::from(path);
        std::fs::write(
            &path,
            report::junit(&checks, None, &[("control".into(), 0.0)]),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("suite-control").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert()
    }

    #[test]
    fn two_files() {
        assert_eq!(
            parse(&["r/suite-base.tap", "needs-series.txt"]).expect("parses"),
            Cli {
                tap: "r/suite-base.tap".into(),
                patterns: "needs-series.txt".into()
            }
        );
        for (args, kind) in [
            (&[][..], ErrorKind::MissingRequiredArgument),
            (&["a.tap"], ErrorKind::MissingRequiredArgument),
            (&["a.tap", "p", "extra"], ErrorKind::UnknownArgument),
            (&["--bogus", "a.tap", "p"], ErrorKind::UnknownArgument),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), kind, "{args:?}");
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        let e = parse(&["-h"]).unwrap_err();
        assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayHelp, 0));
    }
}
