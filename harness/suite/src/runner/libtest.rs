//! A reader of libtest's plain (human) output, one line at a time.
//!
//! It knows the lines `test NAME ... ok|FAILED|ignored[, REASON]`, the failure sections
//! (`---- NAME stdout ----` up to the next section or the closing `failures:` list), and
//! a last line left unfinished (`test NAME ... ` with no result), which is the test that
//! was running when the executable died.

use super::{Outcome, TestResult};
use std::collections::HashMap;

#[derive(Default)]
pub struct Parser {
    suite: String,
    results: Vec<TestResult>,
    /// Captured output of failed tests, by name.
    captured: HashMap<String, String>,
    /// The failure section being read, if any.
    capturing: Option<String>,
    /// Seen the first `failures:` line (the sections follow it).
    in_failures: bool,
}

/// What a line of output was, for the runner's progress display.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Result(Outcome),
    Other,
}

impl Parser {
    pub fn new(suite: &str) -> Self {
        Parser {
            suite: suite.to_string(),
            ..Default::default()
        }
    }

    /// Reads one complete line (without its newline).
    pub fn line(&mut self, line: &str) -> Event {
        if let Some(name) = self.capturing.clone() {
            if line == "failures:" {
                self.capturing = None;
                return Event::Other;
            }
            if let Some(next) = section_header(line) {
                self.capturing = Some(next.to_string());
                self.captured.entry(next.to_string()).or_default();
                return Event::Other;
            }
            let text = self.captured.entry(name).or_default();
            text.push_str(line);
            text.push('\n');
            return Event::Other;
        }
        if self.in_failures {
            if let Some(name) = section_header(line) {
                self.capturing = Some(name.to_string());
                self.captured.entry(name.to_string()).or_default();
                return Event::Other;
            }
        }
        if line == "failures:" {
            self.in_failures = true;
            return Event::Other;
        }
        if let Some((name, outcome, reason)) = result_line(line) {
            self.results.push(TestResult {
                suite: self.suite.clone(),
                name: name.to_string(),
                outcome,
                message: reason.to_string(),
            });
            return Event::Result(outcome);
        }
        Event::Other
    }

    /// Ends the output. `partial` is an unfinished last line; `died` says how the
    /// executable ended if it did not end normally (killed, timed out, bad exit), and
    /// becomes the failure of the test that was running, or of a test of its own.
    pub fn finish(mut self, partial: &str, died: Option<String>) -> Vec<TestResult> {
        for r in &mut self.results {
            if r.outcome == Outcome::Failed {
                if let Some(text) = self.captured.remove(&r.name) {
                    let text = text.trim_matches('\n').trim_end();
                    if !text.is_empty() {
                        r.message = text.to_string();
                    }
                }
                if r.message.is_empty() {
                    r.message = "failed (no output captured)".to_string();
                }
            }
        }
        let running = partial
            .strip_prefix("test ")
            .and_then(|rest| rest.trim_end().strip_suffix(" ..."))
            .map(|n| n.trim_end_matches(" - should panic").to_string());
        match (running, died) {
            (Some(name), why) => self.results.push(TestResult {
                suite: self.suite.clone(),
                name,
                outcome: Outcome::Failed,
                message: why
                    .unwrap_or_else(|| "the test executable stopped while this test ran".into()),
            }),
            (None, Some(why)) => self.results.push(TestResult {
                suite: self.suite.clone(),
                name: "(test executable)".to_string(),
                outcome: Outcome::Failed,
                message: why,
            }),
            (None, None) => {}
        }
        self.results
    }
}

/// `---- NAME stdout ----` -> NAME.
fn section_header(line: &str) -> Option<&str> {
    line.strip_prefix("---- ")?.strip_suffix(" stdout ----")
}

/// `test NAME ... ok` -> (NAME, Passed, ""); `... ignored, why` -> (NAME, Ignored, "why").
fn result_line(line: &str) -> Option<(&str, Outcome, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let name = name.trim_end_matches(" - should panic");
    let (outcome, reason) = match result.trim_end() {
        "ok" => (Outcome::Passed, ""),
        "FAILED" => (Outcome::Failed, ""),
        "ignored" => (Outcome::Ignored, ""),
        r => (Outcome::Ignored, r.strip_prefix("ignored, ")?),
    };
    Some((name, outcome, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "
running 4 tests
test a::one ... ok
test b::two ... FAILED
test c ... ignored
test d ... ignored, needs a ublk device
test e - should panic ... ok

failures:

---- b::two stdout ----
thread 'b::two' panicked at tests/x.rs:1:1:
kernel lacks SPLICE_F_DIRECT

with a blank line above

failures:
    b::two

test result: FAILED. 2 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s
";

    fn parse(text: &str, partial: &str, died: Option<String>) -> Vec<TestResult> {
        let mut p = Parser::new("s");
        for l in text.lines() {
            p.line(l);
        }
        p.finish(partial, died)
    }

    #[test]
    fn results_and_failure_messages() {
        let r = parse(OUTPUT, "", None);
        let got: Vec<_> = r.iter().map(|t| (t.name.as_str(), t.outcome)).collect();
        assert_eq!(
            got,
            [
                ("a::one", Outcome::Passed),
                ("b::two", Outcome::Failed),
                ("c", Outcome::Ignored),
                ("d", Outcome::Ignored),
                ("e", Outcome::Passed)
            ]
        );
        assert_eq!(
            r[1].message,
            "thread 'b::two' panicked at tests/x.rs:1:1:\nkernel lacks SPLICE_F_DIRECT\n\nwith a blank line above"
        );
        assert_eq!(r[3].message, "needs a ublk device");
    }

    #[test]
    fn unfinished_test_fails_with_the_reason() {
        let r = parse(
            "running 2 tests\ntest a ... ok\n",
            "test b ... ",
            Some("killed by SIGSEGV".into()),
        );
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].name.as_str(), r[1].outcome), ("b", Outcome::Failed));
        assert_eq!(r[1].message, "killed by SIGSEGV");
    }

    #[test]
    fn bad_exit_without_a_running_test() {
        let r = parse("running 0 tests\n", "", Some("exited with status 3".into()));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, Outcome::Failed);
        assert_eq!(r[0].name, "(test executable)");
    }
}
