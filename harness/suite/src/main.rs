//! `ublk-suite`: the in-guest test suite runner.
//!
//! Runs every test executable listed in `ublk-suite.tests` (written by
//! scripts/build-suite.sh next to this binary), one after another, each with
//! `--test-threads=1` unless told otherwise, passing the remaining arguments (test name
//! filters, libtest options) through. Prints the tests' output as it comes, writes TAP
//! and JUnit XML reports to $VMRUN_RESULTS (or --results DIR), ends with the line
//! `N passed, N failed` and exits non-zero if a test failed or none ran.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use ublk_suite::runner::libtest::Event;
use ublk_suite::runner::{exec, report, suite_name, Outcome, TestResult};

const AFTER_HELP: &str = "\
The runner's own options come first: from the first other argument on (or after --),
every argument goes to every test executable, e.g.
  ublk-suite --label patched --suite splice_direct read_to_read --exact
Without a --test-threads option of their own they get --test-threads=1.";

/// The in-guest test suite runner: runs every test executable of the suite, one after
/// another, writes TAP and JUnit XML reports, ends with `N passed, N failed` and fails
/// if a test failed or none ran.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "ublk-suite", after_help = AFTER_HELP)]
struct Cli {
    /// The kernel: patched, debug or base; names the reports suite-NAME.tap and
    /// suite-NAME.xml and is exported to the tests as $UBLK_SUITE_LABEL.
    #[arg(long, value_name = "NAME", value_parser = parse_label)]
    label: Option<String>,

    /// Where to write the reports [default: $VMRUN_RESULTS; none if unset].
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,

    /// Time limit of each test executable, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1200, value_parser = parse_secs)]
    timeout: u64,

    /// The list of test executables [default: ublk-suite.tests next to this binary].
    #[arg(long, value_name = "FILE")]
    tests: Option<PathBuf>,

    /// Run only this test executable (e.g. splice_direct); may be repeated.
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,

    /// Test name filters and libtest options (--exact, --skip NAME, --test-threads=N,
    /// ...), passed to every test executable.
    #[arg(
        value_name = "FILTER|LIBTEST-OPTION",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    passthrough: Vec<String>,
}

fn parse_label(l: &str) -> Result<String, String> {
    if l.is_empty()
        || !l
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("use letters, digits, '-', '_' and '.'".into());
    }
    Ok(l.to_string())
}

fn parse_secs(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| "not a number of seconds".to_string())
}

/// What a run does: the command line, with the defaults that come from elsewhere filled in.
struct Options {
    label: Option<String>,
    results: Option<PathBuf>,
    timeout: Duration,
    tests: Option<PathBuf>,
    suites: Vec<String>,
    passthrough: Vec<String>,
}

impl Options {
    /// `vmrun_results`: $VMRUN_RESULTS, the default of --results (ignored when empty).
    fn new(cli: Cli, vmrun_results: Option<std::ffi::OsString>) -> Options {
        let mut passthrough = cli.passthrough;
        if !passthrough.iter().any(|a| a.starts_with("--test-threads")) {
            passthrough.insert(0, "--test-threads=1".to_string());
        }
        Options {
            label: cli.label,
            results: cli
                .results
                .or_else(|| vmrun_results.filter(|v| !v.is_empty()).map(PathBuf::from)),
            timeout: Duration::from_secs(cli.timeout),
            tests: cli.tests,
            suites: cli.suites,
            passthrough,
        }
    }
}

fn read_list(path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the test list {} (scripts/build-suite.sh writes it)",
            path.display()
        )
    })?;
    let exes: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect();
    if exes.is_empty() {
        bail!("{} lists no test executables", path.display());
    }
    Ok(exes)
}

fn write_reports(o: &Options, results: &[TestResult], times: &[(String, f64)]) -> Result<()> {
    let Some(dir) = &o.results else { return Ok(()) };
    let stem = match &o.label {
        Some(l) => format!("suite-{l}"),
        None => "suite".to_string(),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tap = dir.join(format!("{stem}.tap"));
    std::fs::write(&tap, report::tap(results))
        .with_context(|| format!("writing {}", tap.display()))?;
    let xml = dir.join(format!("{stem}.xml"));
    std::fs::write(&xml, report::junit(results, o.label.as_deref(), times))
        .with_context(|| format!("writing {}", xml.display()))?;
    Ok(())
}

fn run(o: Options) -> Result<ExitCode> {
    let list = match &o.tests {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("finding our own executable")?
            .with_file_name("ublk-suite.tests"),
    };
    let mut exes = read_list(&list)?;
    if !o.suites.is_empty() {
        let known: Vec<String> = exes.iter().map(|e| suite_name(e)).collect();
        if let Some(s) = o.suites.iter().find(|s| !known.contains(s)) {
            bail!(
                "--suite {s}: no such test executable (there are: {})",
                known.join(", ")
            );
        }
        exes.retain(|e| o.suites.contains(&suite_name(e)));
    }
    // The tests learn which kernel they run on from the label, never by probing it.
    match &o.label {
        Some(l) => std::env::set_var(ublk_suite::label::LABEL_ENV, l),
        None => std::env::remove_var(ublk_suite::label::LABEL_ENV),
    }
    let mut results: Vec<TestResult> = Vec::new();
    let mut times: Vec<(String, f64)> = Vec::new();
    for (i, exe) in exes.iter().enumerate() {
        let suite = suite_name(exe);
        println!(
            "ublk-suite: [{}/{}] {suite} ({})",
            i + 1,
            exes.len(),
            exe.display()
        );
        let run = exec::run(
            &suite,
            exe,
            &o.passthrough,
            o.timeout,
            |line, _ev: &Event| {
                println!("{line}");
            },
        )?;
        times.push((suite.clone(), run.elapsed.as_secs_f64()));
        results.extend(run.results);
        // after every executable, so that a run cut short still leaves its reports
        write_reports(&o, &results, &times)?;
    }
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let (passed, failed, ignored) = (
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Ignored),
    );
    println!();
    if failed > 0 {
        println!("ublk-suite: failed tests:");
        for r in results.iter().filter(|r| r.outcome == Outcome::Failed) {
            println!(
                "  {}: {}",
                r.full_name(),
                report::failure_summary(&r.message)
            );
        }
    }
    if ignored > 0 {
        println!("ublk-suite: {ignored} ignored");
    }
    if let Some(dir) = &o.results {
        println!("ublk-suite: reports in {}", dir.display());
    }
    println!("{passed} passed, {failed} failed");
    if passed + failed == 0 {
        eprintln!("ublk-suite: no test ran (does a filter match nothing?)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    // Usage errors exit 2 and --help 0, as before.
    let cli = Cli::parse();
    let result = run(Options::new(cli, std::env::var_os("VMRUN_RESULTS")));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ublk-suite: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ublk-suite").chain(args.iter().copied()))
    }

    fn opts(args: &[&str]) -> Options {
        Options::new(parse(args).expect("parses"), None)
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
    fn defaults() {
        let o = opts(&[]);
        assert_eq!(o.label, None);
        assert_eq!(o.results, None);
        assert_eq!(o.timeout, Duration::from_secs(1200));
        assert_eq!(o.tests, None);
        assert!(o.suites.is_empty());
        assert_eq!(o.passthrough, ["--test-threads=1"]);
    }

    #[test]
    fn results_default_to_vmrun_results() {
        let cli = parse(&[]).expect("parses");
        let o = Options::new(cli.clone(), Some("/r".into()));
        assert_eq!(o.results, Some(PathBuf::from("/r")));
        let o = Options::new(cli, Some("".into()));
        assert_eq!(o.results, None, "an empty $VMRUN_RESULTS is none");
        let o = Options::new(
            parse(&["--results", "/mine"]).expect("parses"),
            Some("/r".into()),
        );
        assert_eq!(o.results, Some(PathBuf::from("/mine")));
    }

    #[test]
    fn every_option() {
        let o = opts(&[
            "--label",
            "patched",
            "--results=/res",
            "--timeout",
            "60",
            "--tests",
            "/t/list",
            "--suite",
            "splice_direct",
            "--suite=ublk_zc",
            "read_to_read",
            "--exact",
        ]);
        assert_eq!(o.label.as_deref(), Some("patched"));
        assert_eq!(o.results, Some(PathBuf::from("/res")));
        assert_eq!(o.timeout, Duration::from_secs(60));
        assert_eq!(o.tests, Some(PathBuf::from("/t/list")));
        assert_eq!(o.suites, ["splice_direct", "ublk_zc"]);
        assert_eq!(
            o.passthrough,
            ["--test-threads=1", "read_to_read", "--exact"]
        );
    }

    #[test]
    fn the_scripts_command_lines() {
        // scripts/test.sh, run-qemu.sh, mutants.sh
        let o = opts(&["--label", "debug"]);
        assert_eq!(o.label.as_deref(), Some("debug"));
        let o = opts(&[
            "--label",
            "patched",
            "--timeout",
            "900",
            "--suite",
            "ublk_zc",
            "splice_errnos_read_request",
            "splice_errnos_write_request",
        ]);
        assert_eq!(o.timeout, Duration::from_secs(900));
        assert_eq!(o.suites, ["ublk_zc"]);
        assert_eq!(
            o.passthrough,
            [
                "--test-threads=1",
                "splice_errnos_read_request",
                "splice_errnos_write_request"
            ]
        );
    }

    #[test]
    fn libtest_options_pass_through() {
        // Unknown options go to libtest (which refuses what it does not know).
        let o = opts(&["--nocapture", "--test-threads=4", "-q", "--skip", "slow"]);
        assert_eq!(
            o.passthrough,
            ["--nocapture", "--test-threads=4", "-q", "--skip", "slow"]
        );
        // After --, and after the first argument that is not ours, everything passes.
        let o = opts(&["--label", "base", "--", "--label", "x"]);
        assert_eq!(o.label.as_deref(), Some("base"));
        assert_eq!(o.passthrough, ["--test-threads=1", "--label", "x"]);
        let o = opts(&["filter", "--timeout", "5", "-h"]);
        assert_eq!(o.timeout, Duration::from_secs(1200));
        assert_eq!(
            o.passthrough,
            ["--test-threads=1", "filter", "--timeout", "5", "-h"]
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&[&str], ErrorKind, &str)] = &[
            (
                &["--label", "a b"],
                ErrorKind::ValueValidation,
                "invalid value 'a b' for '--label <NAME>': use letters, digits",
            ),
            (
                &["--label="],
                ErrorKind::ValueValidation,
                "use letters, digits",
            ),
            (
                &["--label"],
                ErrorKind::InvalidValue,
                "a value is required for '--label <NAME>'",
            ),
            (
                &["--timeout", "soon"],
                ErrorKind::ValueValidation,
                "invalid value 'soon' for '--timeout <SECS>': not a number of seconds",
            ),
            (
                &["--timeout", "-5"],
                ErrorKind::ValueValidation,
                "invalid value '-5' for '--timeout <SECS>': not a number of seconds",
            ),
            (
                &["--suite"],
                ErrorKind::InvalidValue,
                "a value is required for '--suite <NAME>'",
            ),
            (
                &["--results"],
                ErrorKind::InvalidValue,
                "a value is required for '--results <DIR>'",
            ),
            (
                &["--tests"],
                ErrorKind::InvalidValue,
                "a value is required for '--tests <FILE>'",
            ),
        ];
        for (args, kind, text) in cases {
            let (k, msg) = err(args);
            assert_eq!(k, *kind, "{args:?}: {msg}");
            assert!(msg.contains(text), "{args:?}: {text:?} not in:\n{msg}");
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn help() {
        for args in [&["--help"][..], &["-h"], &["--label", "x", "--help"]] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0, "{args:?}");
        }
        let h = parse(&["--help"]).unwrap_err();
        let h = text(&h);
        for want in [
            "--label <NAME>",
            "$UBLK_SUITE_LABEL",
            "--results <DIR>",
            "$VMRUN_RESULTS",
            "--timeout <SECS>",
            "[default: 1200]",
            "--tests <FILE>",
            "ublk-suite.tests",
            "--suite <NAME>",
            "[FILTER|LIBTEST-OPTION]...",
            "--test-threads=1",
        ] {
            assert!(h.contains(want), "{want:?} not in:\n{h}");
        }
    }
}
