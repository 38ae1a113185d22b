//! A mutant's verdict, from the evidence of its check's run: caught (and by what),
//! survived, or for a known survivor whether it still survives; and the verdicts that come
//! before any run (the mutant does not apply or does not build).

use super::evidence::Evidence;
use super::header::{Kind, Mutant};
use anyhow::{bail, Context, Result};
use std::path::Path;
use vmrun::run::EXIT_TIMEOUT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Its check failed: the gate can fail.
    Caught,
    /// Its check passed: a hole in the gate.
    Survived,
    /// A known survivor whose check still passes, as its reason says.
    StillSurvives,
    /// A known survivor whose check fails now: its known-survivor line is stale.
    SurvivorCaught,
    /// It does not apply or does not build on the series: the mutant needs fixing.
    Broken,
    /// It does not apply to another revision than patches/ (the mutants are written
    /// against patches/): not counted.
    Skipped,
    /// A known survivor, listed and not run.
    NotRun,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Caught => "caught",
            Status::Survived => "survived",
            Status::StillSurvives => "still-survives",
            Status::SurvivorCaught => "survivor-caught",
            Status::Broken => "broken",
            Status::Skipped => "skipped",
            Status::NotRun => "not-run",
        }
    }

    fn from_word(w: &str) -> Option<Status> {
        [
            Status::Caught,
            Status::Survived,
            Status::StillSurvives,
            Status::SurvivorCaught,
            Status::Broken,
            Status::Skipped,
            Status::NotRun,
        ]
        .into_iter()
        .find(|s| s.word() == w)
    }

    /// Whether this verdict is what the gate wants.
    pub fn ok(self) -> bool {
        matches!(
            self,
            Status::Caught | Status::StillSurvives | Status::Skipped | Status::NotRun
        )
    }
}

/// One mutant's verdict: its status, the reason, and the line printed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub survivor: bool,
    pub status: Status,
    /// What the TAP line says after the name.
    pub reason: String,
    /// Whether it comes from the cache.
    pub cached: bool,
}

impl Verdict {
    /// The TAP line: `ok - NAME: REASON`, `not ok - NAME: REASON`.
    pub fn line(&self) -> String {
        let ok = if self.status.ok() { "ok" } else { "not ok" };
        let skip = if self.status == Status::Skipped {
            " # SKIP"
        } else {
            ""
        };
        let cached = if self.cached { " (cached)" } else { "" };
        format!("{ok} - {}: {}{skip}{cached}", self.name, self.reason)
    }

    /// The cache file's text: the status, then the reason.
    pub fn encode(&self) -> String {
        format!("{}\n{}\n", self.status.word(), self.reason)
    }

    pub fn decode(m: &Mutant, text: &str) -> Result<Verdict> {
        let mut lines = text.lines();
        let word = lines.next().unwrap_or("");
        let status = Status::from_word(word)
            .with_context(|| format!("a cached verdict of {} with the status {word:?}", m.name))?;
        let Some(reason) = lines.next().filter(|r| !r.is_empty()) else {
            bail!("a cached verdict of {} without a reason", m.name);
        };
        Ok(Verdict {
            name: m.name.clone(),
            survivor: m.is_survivor(),
            status,
            reason: reason.to_string(),
            cached: true,
        })
    }

    fn new(m: &Mutant, status: Status, reason: String) -> Verdict {
        Verdict {
            name: m.name.clone(),
            survivor: m.is_survivor(),
            status,
            reason,
            cached: false,
        }
    }

    /// A known survivor that this run leaves out.
    pub fn not_run(m: &Mutant) -> Verdict {
        let why = m.known_survivor.clone().unwrap_or_default();
        Verdict::new(m, Status::NotRun, why)
    }

    /// The mutant does not apply (`applies` false) or does not build on the series.
    pub fn broken(m: &Mutant, applies: bool, series: &str) -> Verdict {
        let what = if applies { "build" } else { "apply" };
        Verdict::new(
            m,
            Status::Broken,
            format!("BROKEN: does not {what} on series {series} (fix the mutant)"),
        )
    }

    /// The mutant does not apply to a revision other than patches/.
    pub fn skipped(m: &Mutant, origin: &str) -> Verdict {
        Verdict::new(
            m,
            Status::Skipped,
            format!("does not apply to this revision ({origin})"),
        )
    }
}

/// How long the build and the run took, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub build: u64,
    pub run: u64,
}

/// The check as one line: `suite --suite ublk_zc FILTER`, `transcript`.
fn check_line(m: &Mutant) -> String {
    match m.check.args.is_empty() {
        true => m.check.kind.name().to_string(),
        false => format!("{} {}", m.check.kind.name(), m.check.args_text()),
    }
}

/// The failed tests, shortly: the first, and how many more.
fn tests_text(tests: &[String]) -> Option<String> {
    match tests {
        [] => None,
        [one] => Some(one.clone()),
        [first, rest @ ..] => Some(format!("{first} and {} more", rest.len())),
    }
}

/// What made a failed run fail: a kernel problem (and the tests that failed with it), the
/// failing tests, the timeout, or else the exit status.
pub fn caught_by(m: &Mutant, ev: &Evidence, log: &Path) -> String {
    let tests = tests_text(&ev.failed_tests);
    if let Some(p) = &ev.kernel_problem {
        return match tests {
            Some(t) => format!("the kernel log ({p}), and {t}"),
            None => format!("the kernel log ({p})"),
        };
    }
    if let Some(t) = tests {
        return t;
    }
    if ev.status == i32::from(EXIT_TIMEOUT) {
        return match m.check.kind {
            Kind::Uapi => format!("the time limit: uapi_header hung ({} s)", m.timeout),
            _ => {
                let what: Vec<&str> = m
                    .check
                    .args
                    .iter()
                    .map(String::as_str)
                    .filter(|a| *a != "--suite")
                    .collect();
                format!("the VM timeout: {} hung", what.join(" "))
            }
        };
    }
    format!("the run (exit status {}, log {})", ev.status, log.display())
}

/// The verdict of a run of the mutant's check.
pub fn judge(m: &Mutant, ev: &Evidence, t: Timing, log: &Path) -> Verdict {
    let by = if ev.status != 0 {
        Some(caught_by(m, ev, log))
    } else {
        match ev.transcript_diff {
            Some(n) if n > 0 => Some(format!(
                "the splice transcript ({n} lines differ from the unmutated series')"
            )),
            _ => None,
        }
    };
    let kind = m.check.kind.name();
    match (m.is_survivor(), by) {
        (true, Some(by)) => Verdict::new(
            m,
            Status::SurvivorCaught,
            format!("a known survivor is caught now, by {by}: drop its known-survivor line"),
        ),
        (true, None) => Verdict::new(
            m,
            Status::StillSurvives,
            format!(
                "known survivor, still survives its check ({}; build {} s, run {} s)",
                check_line(m),
                t.build,
                t.run
            ),
        ),
        (false, Some(by)) => Verdict::new(
            m,
            Status::Caught,
            format!(
                "caught by {by} (build {} s, {kind} run {} s)",
                t.build, t.run
            ),
        ),
        (false, None) => Verdict::new(
            m,
            Status::Survived,
            format!(
                "SURVIVED: its check passed ({}; log {})",
                check_line(m),
                log.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn m(check: &str, survivor: bool) -> Mutant {
        let text = format!(
            "# mutant: x\n# check: {check}\n# timeout: 60\n{}",
            if survivor {
                "# known-survivor: a race\n"
            } else {
                ""
            }
        );
        Mutant::parse("p4-x", Path::new("/x"), text.into_bytes()).unwrap()
    }

    fn ev(status: i32, tests: &[&str], kp: Option<&str>) -> Evidence {
        Evidence {
            status,
            failed_tests: tests.iter().map(|t| t.to_string()).collect(),
            kernel_problem: kp.map(str::to_string),
            transcript_diff: None,
        }
    }

    const T: Timing = Timing { build: 10, run: 3 };

    fn log() -> PathBuf {
        PathBuf::from("/c/runs/p4-x.log")
    }

    #[test]
    fn caught_by_a_failing_test() {
        let mu = m("suite --suite ublk_zc splice_errnos_read_request", false);
        let v = judge(
            &mu,
            &ev(1, &["ublk_zc::splice_errnos_read_request"], None),
            T,
            &log(),
        );
        assert_eq!(v.status, Status::Caught);
        assert_eq!(
            v.line(),
            "ok - p4-x: caught by ublk_zc::splice_errnos_read_request (build 10 s, suite run 3 s)"
        );
        let v = judge(&mu, &ev(1, &["s::a", "s::b", "s::c"], None), T, &log());
        assert_eq!(
            v.reason,
            "caught by s::a and 2 more (build 10 s, suite run 3 s)"
        );
    }

    #[test]
    fn caught_by_the_kernel() {
        let mu = m("debug --suite ublk_zc splice_errnos_read_request", false);
        let kp = "KASAN report: BUG: KASAN: slab-out-of-bounds in f+0x1/0x2";
        let v = judge(&mu, &ev(125, &[], Some(kp)), T, &log());
        assert_eq!(v.status, Status::Caught);
        assert_eq!(
            v.reason,
            format!("caught by the kernel log ({kp}) (build 10 s, debug run 3 s)")
        );
        let v = judge(&mu, &ev(125, &["s::t"], Some(kp)), T, &log());
        assert_eq!(
            v.reason,
            format!("caught by the kernel log ({kp}), and s::t (build 10 s, debug run 3 s)")
        );
    }

    #[test]
    fn caught_by_the_timeout() {
        let mu = m("suite --suite ublk_zc splice_errnos_read_request", false);
        let v = judge(&mu, &ev(124, &[], None), T, &log());
        assert_eq!(v.status, Status::Caught);
        assert_eq!(
            v.reason,
            "caught by the VM timeout: ublk_zc splice_errnos_read_request hung (build 10 s, suite run 3 s)"
        );
        // a test the suite timed out itself is a failed test
        let v = judge(&mu, &ev(124, &["ublk_zc::t"], None), T, &log());
        assert!(
            v.reason.starts_with("caught by ublk_zc::t "),
            "{}",
            v.reason
        );
        let u = m("uapi", false);
        let v = judge(&u, &ev(124, &[], None), T, &log());
        assert_eq!(
            v.reason,
            "caught by the time limit: uapi_header hung (60 s) (build 10 s, uapi run 3 s)"
        );
    }

    #[test]
    fn caught_by_another_status() {
        let mu = m("suite --suite s t", false);
        let v = judge(&mu, &ev(123, &[], None), T, &log());
        assert_eq!(v.status, Status::Caught);
        assert!(v
            .reason
            .starts_with("caught by the run (exit status 123, log /c/runs/p4-x.log)"));
    }

    #[test]
    fn survived() {
        let mu = m("suite --suite ublk_zc t", false);
        let v = judge(&mu, &ev(0, &[], None), T, &log());
        assert_eq!(v.status, Status::Survived);
        assert!(!v.status.ok());
        assert_eq!(
            v.line(),
            "not ok - p4-x: SURVIVED: its check passed (suite --suite ublk_zc t; log /c/runs/p4-x.log)"
        );
    }

    #[test]
    fn the_transcript() {
        let mu = m("transcript", false);
        let mut e = ev(0, &[], None);
        e.transcript_diff = Some(0);
        assert_eq!(judge(&mu, &e, T, &log()).status, Status::Survived);
        e.transcript_diff = None;
        assert_eq!(judge(&mu, &e, T, &log()).status, Status::Survived);
        e.transcript_diff = Some(166);
        let v = judge(&mu, &e, T, &log());
        assert_eq!(v.status, Status::Caught);
        assert_eq!(
            v.reason,
            "caught by the splice transcript (166 lines differ from the unmutated series') (build 10 s, transcript run 3 s)"
        );
        // a failed run of the transcript is caught by what failed it
        let v = judge(&mu, &ev(125, &[], Some("BUG: x")), T, &log());
        assert!(v.reason.starts_with("caught by the kernel log (BUG: x)"));
    }

    #[test]
    fn known_survivors() {
        let mu = m("debug --suite ublk_zc_faults t", true);
        let v = judge(&mu, &ev(0, &[], None), T, &log());
        assert_eq!(v.status, Status::StillSurvives);
        assert_eq!(
            v.line(),
            "ok - p4-x: known survivor, still survives its check (debug --suite ublk_zc_faults t; build 10 s, run 3 s)"
        );
        let v = judge(&mu, &ev(1, &["ublk_zc_faults::t"], None), T, &log());
        assert_eq!(v.status, Status::SurvivorCaught);
        assert_eq!(
            v.line(),
            "not ok - p4-x: a known survivor is caught now, by ublk_zc_faults::t: drop its known-survivor line"
        );
        let n = Verdict::not_run(&mu);
        assert_eq!(n.status, Status::NotRun);
        assert_eq!(n.reason, "a race");
    }

    #[test]
    fn broken_and_skipped() {
        let mu = m("suite --suite s t", false);
        let b = Verdict::broken(&mu, true, "abcd");
        assert_eq!(
            b.line(),
            "not ok - p4-x: BROKEN: does not build on series abcd (fix the mutant)"
        );
        assert_eq!(
            Verdict::broken(&mu, false, "abcd").reason,
            "BROKEN: does not apply on series abcd (fix the mutant)"
        );
        assert_eq!(
            Verdict::skipped(&mu, "mbox /x").line(),
            "ok - p4-x: does not apply to this revision (mbox /x) # SKIP"
        );
    }

    #[test]
    fn cached_verdicts_round_trip() {
        let mu = m("suite --suite s t", false);
        let v = judge(&mu, &ev(1, &["s::t"], None), T, &log());
        let back = Verdict::decode(&mu, &v.encode()).unwrap();
        assert_eq!(back.status, v.status);
        assert_eq!(back.reason, v.reason);
        assert!(back.cached);
        assert_eq!(back.line(), format!("{} (cached)", v.line()));
        assert!(Verdict::decode(&mu, "bogus\nx\n").is_err());
        assert!(Verdict::decode(&mu, "caught\n").is_err());
    }
}
