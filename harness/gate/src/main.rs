//! gate: `run` runs the gate (scripts/test.sh execs it); `mutants` is the mutation gate
//! (scripts/mutants.sh execs it); `cargo-tests` runs Cargo's tests for a counted step;
//! `report` and `failing` are the report helpers.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gate::cli::RunArgs;
use gate::report::{self, Row};

/// The gate of the series: its steps, verdicts and reports (docs/gate.md).
#[derive(Debug, Parser)]
#[command(name = "gate")]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Runs the gate's steps and ends with "N passed, N failed".
    Run(RunArgs),
    /// The mutation gate: broken variants of the series (patches/mutants) must each be
    /// caught by their check. Default: a rotating sample of 3.
    Mutants(gate::mutants::MutantsArgs),
    /// Cargo's tests, judged by exit statuses, to $ZC_JUNIT (a counted step's program).
    CargoTests {
        /// Arguments of `cargo test` (e.g. --workspace --lib --bins, -p vmrun --test vm).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Prints the map of the harness (crates, modules, imports) that docs/harness.md keeps;
    /// with --update, writes it there.
    Map {
        #[arg(long)]
        update: bool,
    },
    /// Writes DIR/junit.xml and DIR/summary.md from DIR/steps.tsv, meta.tsv, revision.txt.
    Report { dir: PathBuf },
    /// Prints the failing checks of a step: its log's JUnit file, the runs' JUnit files.
    Failing {
        log: PathBuf,
        #[arg(value_name = "RUN-DIR")]
        runs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 2, --help 0 (clap's codes).
    let cli = Cli::parse();
    let r = match cli.command {
        Sub::Run(a) => gate::cli::run(a),
        Sub::Mutants(a) => gate::mutants::main(&a),
        Sub::CargoTests { args } => {
            gate::cargo_tests::main(&args).map(|c| ExitCode::from(u8::try_from(c).unwrap_or(1)))
        }
        Sub::Map { update } => map(update),
        Sub::Report { dir } => report::write(&dir).map(|()| ExitCode::SUCCESS),
        Sub::Failing { log, runs } => {
            let row = Row {
                log,
                runs,
                ..Row::skip("", "")
            };
            for n in report::failing(&row) {
                println!("{n}");
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    r.unwrap_or_else(|e| {
        eprintln!("ERROR: {e:#}");
        ExitCode::FAILURE
    })
}

/// `gate map`: from the sources of the checkout the binary runs in (ZC_TOP, or the current
/// directory).
fn map(update: bool) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let top = std::env::var_os("ZC_TOP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let text = gate::map::markdown(&gate::map::read(&top)?);
    if !update {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = top.join("docs/harness.md");
    let doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let new = gate::map::update(&doc, &text).with_context(|| format!("in {}", path.display()))?;
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("gate map: {} written", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gate").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert()
    }

    #[test]
    fn run_options() {
        let Sub::Run(a) = parse(&["run", "--fast", "--full", "rust:", "vm: runner"])
            .expect("parses")
            .command
        else {
            panic!("not run");
        };
        assert!(a.full && !a.fast, "the last lane option wins");
        assert_eq!(a.filters, ["rust:", "vm: runner"]);
        assert!(parse(&["run", "--series", "a", "--tree", "t", "--range", "a..b"]).is_err());
        assert!(parse(&["run", "--tree", "t"]).is_err());
        assert!(parse(&["run", "--bogus"]).is_err());
        let Sub::CargoTests { args } = parse(&["cargo-tests", "-p", "vmrun", "--test", "vm"])
            .expect("parses")
            .command
        else {
            panic!("not cargo-tests");
        };
        assert_eq!(args, ["-p", "vmrun", "--test", "vm"]);
    }
}
