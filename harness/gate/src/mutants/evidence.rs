//! What a check's run left behind, read as data: its exit status (vmrun's: 124 for the
//! timeout, 125 for a kernel problem), the failed test cases of its JUnit file, the first
//! kernel problem as vmrun's own judge finds it in the run's console.log, and for the
//! transcript check how many lines differ from the unmutated series' transcript.

use super::header::Kind;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use vmrun::run::EXIT_KERNEL_PROBLEM;

/// The transcript `splice-transcript` writes into the run's results.
pub const TRANSCRIPT: &str = "splice-transcript.txt";
/// The uapi check's JUnit file, which its runner writes.
pub const UAPI_JUNIT: &str = "uapi_header.xml";
/// The suite's label for a check of this kind.
pub fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Debug => "debug",
        _ => "patched",
    }
}

/// Where a check's run writes its results: `DIR/results/`, as vmrun shares it with the
/// guest (`$VMRUN_RESULTS`).
pub fn results_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(vmrun::job::RESULTS_DIR)
}

/// The JUnit file a check's run writes, if its kind writes one: the suite's
/// `suite-LABEL.xml`, or the uapi runner's own.
pub fn junit_path(kind: Kind, run_dir: &Path) -> Option<PathBuf> {
    let name = match kind {
        Kind::Suite | Kind::Debug => format!("suite-{}.xml", label(kind)),
        Kind::Uapi => UAPI_JUNIT.to_string(),
        Kind::Transcript => return None,
    };
    Some(results_dir(run_dir).join(name))
}

/// What a run shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The run's exit status.
    pub status: i32,
    /// The failed test cases, `SUITE::TEST`, in the report's order.
    pub failed_tests: Vec<String>,
    /// The first kernel problem (`KIND: message`), when vmrun said there was one.
    pub kernel_problem: Option<String>,
    /// For the transcript check: the lines that differ from the unmutated series', when
    /// the run wrote a transcript.
    pub transcript_diff: Option<usize>,
}

/// The failed test cases of a JUnit report. A class name `LABEL.SUITE` (the suite
/// prefixes its label) is given as `SUITE`.
pub fn junit_failures(xml: &str, label: Option<&str>) -> Result<Vec<String>> {
    use crate::junit::{self, Status};
    let root = crate::xml::Elem::parse(xml).context("parsing the JUnit XML")?;
    Ok(junit::cases(&root)
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| {
            let class = label
                .and_then(|l| {
                    c.classname
                        .strip_prefix(l)
                        .and_then(|r| r.strip_prefix('.'))
                })
                .unwrap_or(&c.classname);
            let name = if c.name.is_empty() { "?" } else { &c.name };
            match class {
                "" => name.to_string(),
                cl => format!("{cl}::{name}"),
            }
        })
        .collect())
}

/// The first kernel problem of a console log, as vmrun judges it: `KIND: message`, the
/// kind left out when the message starts with it, cut to 110 characters.
pub fn first_kernel_problem(console: &str) -> Option<String> {
    let v = vmrun::verdict::judge(console);
    let f = v.findings.first()?;
    let kind = f.kind.name();
    let line = match f.message.strip_prefix(kind) {
        Some(rest) if rest.starts_with(": ") => f.message.clone(),
        _ => format!("{kind}: {}", f.message),
    };
    Some(line.chars().take(110).collect())
}

/// How many lines differ between two texts: the lines of each that are not in a longest
/// common subsequence (what `diff` marks with `<` and `>`).
pub fn lines_differ(a: &str, b: &str) -> usize {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[pre..], &b[pre..]);
    let suf = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suf], &b[..b.len() - suf]);
    // The LCS's length, one row at a time.
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    let lcs = prev[b.len()];
    a.len() + b.len() - 2 * lcs
}

/// Reads what a check's run in `run_dir` left; `transcript_ref` is the unmutated series'
/// transcript (the transcript check only).
pub fn collect(
    kind: Kind,
    run_dir: &Path,
    status: i32,
    transcript_ref: Option<&Path>,
) -> Result<Evidence> {
    let mut ev = Evidence {
        status,
        ..Evidence::default()
    };
    if let Some(p) = junit_path(kind, run_dir).filter(|p| p.exists()) {
        let xml =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let lbl = (kind != Kind::Uapi).then(|| label(kind));
        ev.failed_tests = junit_failures(&xml, lbl).with_context(|| p.display().to_string())?;
    }
    if status == i32::from(EXIT_KERNEL_PROBLEM) {
        let log = run_dir.join(vmrun::job::CONSOLE_LOG);
        let text = std::fs::read(&log).map(|b| String::from_utf8_lossy(&b).into_owned());
        ev.kernel_problem = Some(match text.ok().and_then(|t| first_kernel_problem(&t)) {
            Some(p) => p,
            None => format!("vmrun's exit status {status}; see {}", log.display()),
        });
    }
    if kind == Kind::Transcript && status == 0 {
        let out = results_dir(run_dir).join(TRANSCRIPT);
        if out.exists() {
            let reference = transcript_ref.context("no transcript of the unmutated series")?;
            let read = |p: &Path| {
                std::fs::read(p)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .with_context(|| format!("reading {}", p.display()))
            };
            ev.transcript_diff = Some(lines_differ(&read(reference)?, &read(&out)?));
        }
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="ublk-suite (patched)" tests="4" failures="2" skipped="1" time="3.000">
  <testsuite name="patched.ublk_zc" tests="4" failures="2" skipped="1" time="3.000">
    <testcase classname="patched.ublk_zc" name="a"/>
    <testcase classname="patched.ublk_zc" name="splice_errnos_read_request">
      <failure message="assertion failed">thread &apos;x&apos; panicked</failure>
    </testcase>
    <testcase classname="patched.ublk_zc" name="c">
      <skipped message="needs &lt;X&gt;"/>
    </testcase>
    <testcase classname="patched.ublk_zc" name="direct::case_1_pipe::flags_1_DIRECT">
      <failure message="m">t</failure>
    </testcase>
  </testsuite>
</testsuites>
"#;

    #[test]
    fn failed_cases_of_a_suite_report() {
        assert_eq!(
            junit_failures(SUITE_XML, Some("patched")).unwrap(),
            [
                "ublk_zc::splice_errnos_read_request",
                "ublk_zc::direct::case_1_pipe::flags_1_DIRECT"
            ]
        );
        // another label is not stripped
        assert_eq!(
            junit_failures(SUITE_XML, Some("debug")).unwrap()[0],
            "patched.ublk_zc::splice_errnos_read_request"
        );
        assert!(junit_failures("<testsuites><testsuite>", None).is_err());
        assert!(junit_failures("<testsuites/>", None).unwrap().is_empty());
    }

    #[test]
    fn kernel_problems_as_vmrun_judges_them() {
        let log = "[    0.000000] Linux version 6.1.192-ublkzc\n\
                   vmrun: start (guest uptime 0.9 s): ./t\n\
                   BUG: printed by a test, not the kernel\n\
                   [    3.000000] ------------[ cut here ]------------\n\
                   [    3.000001] WARNING: CPU: 1 PID: 33 at lib/refcount.c:25 refcount_warn_saturate+0x80/0xe0\n\
                   [    3.500000] BUG: KASAN: slab-out-of-bounds in f+0x1/0x2\n";
        assert_eq!(
            first_kernel_problem(log).as_deref(),
            Some("WARNING: CPU: 1 PID: 33 at lib/refcount.c:25 refcount_warn_saturate+0x80/0xe0")
        );
        let kasan =
            "[    1.000000] BUG: KASAN: slab-out-of-bounds in ublk_ch_splice_lend+0xfba/0x1010\n";
        assert_eq!(
            first_kernel_problem(kasan).as_deref(),
            Some(
                "KASAN report: BUG: KASAN: slab-out-of-bounds in ublk_ch_splice_lend+0xfba/0x1010"
            )
        );
        let long = format!(
            "[    1.000000] BUG: kernel NULL pointer dereference, {}\n",
            "x".repeat(200)
        );
        assert_eq!(first_kernel_problem(&long).unwrap().chars().count(), 110);
        assert_eq!(first_kernel_problem("[    1.000000] all fine\n"), None);
    }

    #[test]
    fn differing_lines() {
        assert_eq!(lines_differ("a\nb\nc\n", "a\nb\nc\n"), 0);
        assert_eq!(lines_differ("a\nb\nc\n", "a\nx\nc\n"), 2);
        assert_eq!(lines_differ("a\nb\nc\n", "a\nc\n"), 1);
        assert_eq!(lines_differ("", "a\nb\n"), 2);
        assert_eq!(lines_differ("a\nb\nc\nd\n", "b\nc\nd\ne\n"), 2);
        assert_eq!(lines_differ("1\n2\n3\n", "3\n2\n1\n"), 4);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gate-ev-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("results")).unwrap();
        d
    }

    #[test]
    fn collecting_a_run() {
        let d = tmp("suite");
        std::fs::write(d.join("results/suite-patched.xml"), SUITE_XML).unwrap();
        std::fs::write(
            d.join("console.log"),
            "[    2.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000\n",
        )
        .unwrap();
        let ev = collect(Kind::Suite, &d, 1, None).unwrap();
        assert_eq!(ev.failed_tests.len(), 2);
        assert_eq!(
            ev.kernel_problem, None,
            "only vmrun's 125 says a kernel problem"
        );
        let ev = collect(Kind::Suite, &d, 125, None).unwrap();
        assert_eq!(
            ev.kernel_problem.as_deref(),
            Some("BUG: kernel NULL pointer dereference, address: 0000000000000000")
        );
        // the debug check reads the debug report, which this run has not
        assert!(collect(Kind::Debug, &d, 1, None)
            .unwrap()
            .failed_tests
            .is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn collecting_a_transcript() {
        let d = tmp("tr");
        let reference = d.join("ref.txt");
        std::fs::write(&reference, "a\nb\n").unwrap();
        let ev = collect(Kind::Transcript, &d, 0, Some(&reference)).unwrap();
        assert_eq!(ev.transcript_diff, None, "no transcript written");
        std::fs::write(d.join("results").join(TRANSCRIPT), "a\nb\n").unwrap();
        let ev = collect(Kind::Transcript, &d, 0, Some(&reference)).unwrap();
        assert_eq!(ev.transcript_diff, Some(0));
        std::fs::write(d.join("results").join(TRANSCRIPT), "a\nc\n").unwrap();
        let ev = collect(Kind::Transcript, &d, 0, Some(&reference)).unwrap();
        assert_eq!(ev.transcript_diff, Some(2));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
