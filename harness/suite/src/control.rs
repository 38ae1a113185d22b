//! The control run: the suite on the base kernel, judged against what it must show.
//!
//! On a kernel without the series, every test that needs the series must fail, with a
//! message that names the missing feature ("kernel lacks ..."), and every other test must
//! pass. A suite that passed a zero-copy test on the base kernel, or failed one for another
//! reason, would not detect a missing series; this check says so.

/// One test result read back from a TAP file the runner wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapResult {
    pub name: String,
    pub ok: bool,
    /// The YAML block's text under a failed test (empty for a pass).
    pub detail: String,
}

/// Parses the runner's TAP output: `ok N - NAME` / `not ok N - NAME` plus indented blocks.
pub fn parse_tap(text: &str) -> Vec<TapResult> {
    let mut out: Vec<TapResult> = Vec::new();
    for line in text.lines() {
        let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("not ok ") {
            (false, r)
        } else {
            if line.starts_with("  ") {
                if let Some(last) = out.last_mut() {
                    last.detail.push_str(line.trim());
                    last.detail.push('\n');
                }
            }
            continue;
        };
        let name = rest
            .split_once(" - ")
            .map(|(_, n)| n)
            .unwrap_or(rest)
            .trim()
            .to_string();
        out.push(TapResult {
            name,
            ok,
            detail: String::new(),
        });
    }
    out
}

/// Patterns naming the tests that need the series: one per line, `#` comments; a test
/// needs the series when its name contains a pattern.
pub fn parse_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The marker every test prints when the running kernel lacks a feature of the series.
pub const MISSING_FEATURE: &str = "kernel lacks ";

/// Judges a base-kernel run. Returns (check, passed) pairs, one line each.
pub fn judge(results: &[TapResult], patterns: &[String]) -> Vec<(String, bool)> {
    let needs = |name: &str| patterns.iter().any(|p| name.contains(p.as_str()));
    let mut lines = Vec::new();
    let (mut series_ok, mut plain_ok) = (0usize, 0usize);
    for r in results {
        match (needs(&r.name), r.ok) {
            (true, false) if r.detail.contains(MISSING_FEATURE) => series_ok += 1,
            (true, false) => lines.push((
                format!(
                    "control: {} fails on the base kernel without naming a missing feature",
                    r.name
                ),
                false,
            )),
            (true, true) => lines.push((
                format!(
                    "control: {} needs the series but passes on the base kernel",
                    r.name
                ),
                false,
            )),
            (false, true) => plain_ok += 1,
            (false, false) => lines.push((
                format!(
                    "control: {} needs no series but fails on the base kernel",
                    r.name
                ),
                false,
            )),
        }
    }
    lines.push((
        format!("control: {series_ok} tests that need the series fail on the base kernel, each naming the missing feature"),
        series_ok > 0,
    ));
    lines.push((
        format!("control: {plain_ok} tests that need no series pass on the base kernel"),
        plain_ok > 0,
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAP: &str = "TAP version 13
not ok 1 - splice_direct::direct_data
  ---
  message: |
    kernel lacks SPLICE_F_DIRECT (io_uring splice returned EINVAL for flags 0x40000000)
  ...
ok 2 - splice_direct::splice_syscall_rejects
not ok 3 - splice_direct::read_to_read_bad
  ---
  message: |
    assertion failed: left == right
  ...
1..3
";

    fn pats() -> Vec<String> {
        parse_patterns("# series tests\nsplice_direct::direct_\n\nsplice_direct::read_to_read_\n")
    }

    #[test]
    fn parses_names_results_and_details() {
        let r = parse_tap(TAP);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].name, "splice_direct::direct_data");
        assert!(!r[0].ok && r[0].detail.contains("kernel lacks SPLICE_F_DIRECT"));
        assert!(r[1].ok && r[1].detail.is_empty());
    }

    #[test]
    fn failure_without_missing_feature_is_flagged() {
        let lines = judge(&parse_tap(TAP), &pats());
        let bad: Vec<_> = lines.iter().filter(|(_, ok)| !ok).collect();
        assert_eq!(bad.len(), 1, "{lines:?}");
        assert!(bad[0].0.contains("read_to_read_bad"));
    }

    #[test]
    fn series_test_passing_on_base_is_flagged() {
        let tap = "ok 1 - splice_direct::direct_data\nok 2 - other\n";
        let lines = judge(&parse_tap(tap), &pats());
        assert!(lines
            .iter()
            .any(|(l, ok)| !ok && l.contains("passes on the base")));
        // and no series test failed as it should: the summary line fails too
        assert!(lines
            .iter()
            .any(|(l, ok)| !ok && l.contains("0 tests that need the series")));
    }

    #[test]
    fn plain_test_failing_on_base_is_flagged() {
        let tap = "not ok 1 - other\n  ---\n  message: |\n    kernel lacks X\n";
        let lines = judge(&parse_tap(tap), &pats());
        assert!(lines
            .iter()
            .any(|(l, ok)| !ok && l.contains("needs no series")));
    }

    #[test]
    fn expected_outcome_passes() {
        let tap = "not ok 1 - splice_direct::direct_a\n  ---\n  kernel lacks SPLICE_F_DIRECT\nok 2 - plain\n";
        assert!(judge(&parse_tap(tap), &pats()).iter().all(|(_, ok)| *ok));
    }
}
