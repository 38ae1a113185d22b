//! TAP and JUnit XML renderings of a run's results.

use super::{Outcome, TestResult};
use std::fmt::Write;

/// The TAP 13 report: one `ok`/`not ok` line per test, failure text in a YAML block,
/// ignored tests as `# SKIP`, the plan last.
pub fn tap(results: &[TestResult]) -> String {
    let mut out = String::from("TAP version 13\n");
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        let name = r.full_name().replace('#', "\\#");
        match r.outcome {
            Outcome::Passed => {
                let _ = writeln!(out, "ok {n} - {name}");
            }
            Outcome::Ignored => {
                let why = if r.message.is_empty() {
                    "ignored"
                } else {
                    r.message.as_str()
                };
                let _ = writeln!(out, "ok {n} - {name} # SKIP {}", one_line(why));
            }
            Outcome::Failed => {
                let _ = writeln!(out, "not ok {n} - {name}");
                out.push_str("  ---\n  message: |\n");
                for l in r.message.lines() {
                    let _ = writeln!(out, "    {l}");
                }
                out.push_str("  ...\n");
            }
        }
    }
    let _ = writeln!(out, "1..{}", results.len());
    out
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Escapes text for XML content and attribute values, dropping the characters XML 1.0
/// cannot carry at all.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML report: one `<testsuite>` per test executable, in the order of the
/// results. `label` (e.g. the kernel flavor) prefixes the class names, so that reports
/// of several kernels can sit side by side.
pub fn junit(results: &[TestResult], label: Option<&str>, suite_times: &[(String, f64)]) -> String {
    let count = |rs: &[&TestResult], o: Outcome| rs.iter().filter(|r| r.outcome == o).count();
    let all: Vec<&TestResult> = results.iter().collect();
    let title = match label {
        Some(l) => format!("ublk-suite ({l})"),
        None => "ublk-suite".to_string(),
    };
    let total_time: f64 = suite_times.iter().map(|(_, t)| t).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total_time:.3}\">",
        xml_escape(&title),
        all.len(),
        count(&all, Outcome::Failed),
        count(&all, Outcome::Ignored)
    );
    let mut suites: Vec<&str> = Vec::new();
    for r in results {
        if !suites.contains(&r.suite.as_str()) {
            suites.push(&r.suite);
        }
    }
    for suite in suites {
        let rs: Vec<&TestResult> = results.iter().filter(|r| r.suite == suite).collect();
        let class = match label {
            Some(l) => format!("{l}.{suite}"),
            None => suite.to_string(),
        };
        let time = suite_times
            .iter()
            .find(|(s, _)| s == suite)
            .map_or(0.0, |(_, t)| *t);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\">",
            xml_escape(&class),
            rs.len(),
            count(&rs, Outcome::Failed),
            count(&rs, Outcome::Ignored)
        );
        for r in rs {
            let head = format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(&class),
                xml_escape(&r.name)
            );
            match r.outcome {
                Outcome::Passed => {
                    let _ = writeln!(out, "{head}/>");
                }
                Outcome::Ignored => {
                    let _ = writeln!(
                        out,
                        "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(&r.message)
                    );
                }
                Outcome::Failed => {
                    let _ = writeln!(
                        out,
                        "{head}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(&failure_summary(&r.message)),
                        xml_escape(&r.message)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// The line of a failure's text that says most: the panic message after libtest's
/// `thread '...' panicked at FILE:` line, else the first line.
pub fn failure_summary(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("thread '") && l.contains("panicked at") {
            if let Some(next) = lines.get(i + 1) {
                return next.trim().to_string();
            }
        }
    }
    one_line(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, outcome: Outcome, message: &str) -> TestResult {
        TestResult {
            suite: "s".into(),
            name: name.into(),
            outcome,
            message: message.into(),
        }
    }

    #[test]
    fn tap_report() {
        let r = [
            t("a", Outcome::Passed, ""),
            t("b#1", Outcome::Failed, "x\ny"),
            t("c", Outcome::Ignored, "why\nnot"),
        ];
        assert_eq!(
            tap(&r),
            "TAP version 13\nok 1 - s::a\nnot ok 2 - s::b\\#1\n  ---\n  message: |\n    x\n    y\n  ...\n\
             ok 3 - s::c # SKIP why\n1..3\n"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\\x01\n"
        );
    }

    #[test]
    fn junit_report() {
        let msg = "thread 'b' panicked at tests/x.rs:3:5:\nkernel lacks <X>\nmore";
        let r = [t("a", Outcome::Passed, ""), t("b", Outcome::Failed, msg)];
        let x = junit(&r, Some("base"), &[("s".into(), 1.5)]);
        assert!(x.contains("<testsuites name=\"ublk-suite (base)\" tests=\"2\" failures=\"1\" skipped=\"0\" time=\"1.500\">"), "{x}");
        assert!(
            x.contains("<testcase classname=\"base.s\" name=\"a\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<failure message=\"kernel lacks &lt;X&gt;\">thread &apos;b&apos; panicked"),
            "{x}"
        );
    }
}
