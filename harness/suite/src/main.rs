//! `ublk-suite`: the in-guest test suite runner.
//!
//! Runs every test executable listed in `ublk-suite.tests` (written by
//! scripts/build-suite.sh next to this binary), one after another, each with
//! `--test-threads=1` unless told otherwise, passing the remaining arguments (test name
//! filters, libtest options) through. Prints the tests' output as it comes, writes TAP
//! and JUnit XML reports to $VMRUN_RESULTS (or --results DIR), ends with the line
//! `N passed, N failed` and exits non-zero if a test failed or none ran.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use ublk_suite::runner::libtest::Event;
use ublk_suite::runner::{exec, report, suite_name, Outcome, TestResult};

const USAGE: &str =
    "usage: ublk-suite [--label NAME] [--results DIR] [--timeout SECS] [--tests FILE] \
[--] [FILTER|LIBTEST-OPTION]...

  --label NAME     the kernel: patched, debug or base; names the reports suite-NAME.tap and
                   suite-NAME.xml and is exported to the tests as $UBLK_SUITE_LABEL
  --results DIR    where to write the reports (default: $VMRUN_RESULTS; none if unset)
  --timeout SECS   time limit of each test executable (default 1200)
  --tests FILE     the list of test executables (default: ublk-suite.tests next to this binary)
  --suite NAME     run only this test executable (e.g. splice_direct); may be repeated
Other arguments go to every test executable (default --test-threads=1).";

struct Options {
    label: Option<String>,
    results: Option<PathBuf>,
    timeout: Duration,
    tests: Option<PathBuf>,
    suites: Vec<String>,
    passthrough: Vec<String>,
}

fn parse_args(args: Vec<String>) -> Result<Option<Options>> {
    let mut o = Options {
        label: None,
        results: std::env::var_os("VMRUN_RESULTS")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        timeout: Duration::from_secs(1200),
        tests: None,
        suites: Vec::new(),
        passthrough: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .with_context(|| format!("{name} needs a value\n{USAGE}")),
            }
        };
        match key.as_str() {
            "-h" | "--help" => return Ok(None),
            "--label" => {
                let l = value("--label")?;
                if l.is_empty()
                    || !l
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    bail!("--label {l:?}: use letters, digits, '-', '_' and '.'");
                }
                o.label = Some(l);
            }
            "--results" => o.results = Some(PathBuf::from(value("--results")?)),
            "--timeout" => {
                let v = value("--timeout")?;
                let s: u64 = v
                    .parse()
                    .with_context(|| format!("--timeout {v:?}: not a number of seconds"))?;
                o.timeout = Duration::from_secs(s);
            }
            "--tests" => o.tests = Some(PathBuf::from(value("--tests")?)),
            "--suite" => o.suites.push(value("--suite")?),
            "--" => {
                o.passthrough.extend(it.by_ref());
            }
            _ => o.passthrough.push(a),
        }
    }
    if !o
        .passthrough
        .iter()
        .any(|a| a.starts_with("--test-threads"))
    {
        o.passthrough.insert(0, "--test-threads=1".to_string());
    }
    Ok(Some(o))
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(args).and_then(|o| match o {
        Some(o) => run(o),
        None => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ublk-suite: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
