//! The report of a run: the count (`caught N of M`) and its exit status, and the JUnit XML
//! file of the run, one test case per mutant.

use super::verdict::{Status, Verdict};
use std::fmt::Write;

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Mutants (not known survivors) caught by their check.
    pub caught: usize,
    /// Mutants (not known survivors) judged.
    pub total: usize,
    /// Mutants that do not build or apply, and known survivors that are caught now.
    pub bad: usize,
}

impl Tally {
    pub fn of(verdicts: &[Verdict]) -> Tally {
        let mut t = Tally::default();
        for v in verdicts {
            let counted = !v.survivor && !matches!(v.status, Status::Skipped | Status::NotRun);
            if counted {
                t.total += 1;
            }
            match v.status {
                Status::Caught if !v.survivor => t.caught += 1,
                Status::Broken | Status::SurvivorCaught => t.bad += 1,
                _ => {}
            }
        }
        t
    }

    /// `caught N of M`.
    pub fn line(&self) -> String {
        format!("caught {} of {}", self.caught, self.total)
    }

    /// Whether the gate passes: every mutant caught, none broken, every named known
    /// survivor still surviving.
    pub fn passed(&self) -> bool {
        self.caught == self.total && self.bad == 0
    }
}

/// Text for an XML attribute or element: without the characters XML 1.0 cannot carry,
/// escaped as the gate's other reports are ([`crate::xml`]).
fn xml_text(s: &str) -> String {
    crate::xml::escape_attr(&crate::xml::clean(s))
}

/// The JUnit XML of a run: a caught mutant passes, one that survived, does not build or
/// apply, or a known survivor that is caught now fails with the reason, and a known
/// survivor (run or not) or a mutant that does not apply to another revision is skipped
/// with its reason.
pub fn junit(verdicts: &[Verdict], secs: f64) -> String {
    let failures = verdicts.iter().filter(|v| !v.status.ok()).count();
    let skipped = verdicts
        .iter()
        .filter(|v| {
            matches!(
                v.status,
                Status::StillSurvives | Status::NotRun | Status::Skipped
            )
        })
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{secs:.3}\"",
        verdicts.len()
    );
    let _ = writeln!(out, "<testsuites name=\"mutants\" {counts}>");
    let _ = writeln!(out, "  <testsuite name=\"mutants\" {counts}>");
    for v in verdicts {
        let head = format!(
            "    <testcase classname=\"mutants\" name=\"{}\"",
            xml_text(&v.name)
        );
        let reason = xml_text(&v.reason);
        let body = match v.status {
            Status::Caught => format!("<system-out>{reason}</system-out>"),
            Status::StillSurvives | Status::NotRun | Status::Skipped => {
                format!("<skipped message=\"{reason}\"/>")
            }
            Status::Survived | Status::SurvivorCaught | Status::Broken => {
                format!("<failure message=\"{reason}\">{reason}</failure>")
            }
        };
        let _ = writeln!(out, "{head}>\n      {body}\n    </testcase>");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, survivor: bool, status: Status) -> Verdict {
        Verdict {
            name: name.into(),
            survivor,
            status,
            reason: format!("why <{name}>"),
            cached: false,
        }
    }

    #[test]
    fn every_mutant_caught() {
        let vs = [
            v("a", false, Status::Caught),
            v("b", false, Status::Caught),
            v("s", true, Status::NotRun),
        ];
        let t = Tally::of(&vs);
        assert_eq!(t.line(), "caught 2 of 2");
        assert!(t.passed());
    }

    #[test]
    fn a_survivor_fails_the_gate() {
        let t = Tally::of(&[
            v("a", false, Status::Caught),
            v("b", false, Status::Survived),
        ]);
        assert_eq!(t.line(), "caught 1 of 2");
        assert!(!t.passed());
    }

    #[test]
    fn a_broken_mutant_counts_and_fails() {
        let t = Tally::of(&[v("a", false, Status::Caught), v("b", false, Status::Broken)]);
        assert_eq!((t.line().as_str(), t.bad), ("caught 1 of 2", 1));
        assert!(!t.passed());
    }

    #[test]
    fn known_survivors_are_not_counted_but_must_survive() {
        let t = Tally::of(&[
            v("a", false, Status::Caught),
            v("s", true, Status::StillSurvives),
        ]);
        assert_eq!(t.line(), "caught 1 of 1");
        assert!(t.passed());
        let t = Tally::of(&[
            v("a", false, Status::Caught),
            v("s", true, Status::SurvivorCaught),
        ]);
        assert_eq!(t.line(), "caught 1 of 1");
        assert!(!t.passed(), "a known survivor caught now fails the gate");
    }

    #[test]
    fn skipped_mutants_are_not_counted() {
        let t = Tally::of(&[
            v("a", false, Status::Skipped),
            v("b", false, Status::Caught),
        ]);
        assert_eq!(t.line(), "caught 1 of 1");
        assert!(t.passed());
        assert_eq!(Tally::of(&[]).line(), "caught 0 of 0");
    }

    #[test]
    fn junit_report() {
        let vs = [
            v("a", false, Status::Caught),
            v("b", false, Status::Survived),
            v("c", false, Status::Broken),
            v("s", true, Status::NotRun),
            v("t", true, Status::StillSurvives),
            v("u", true, Status::SurvivorCaught),
        ];
        let x = junit(&vs, 1.5);
        assert!(x.contains("<testsuites name=\"mutants\" tests=\"6\" failures=\"3\" skipped=\"2\" time=\"1.500\">"), "{x}");
        assert!(
            x.contains("name=\"a\">\n      <system-out>why &lt;a&gt;</system-out>"),
            "{x}"
        );
        assert!(
            x.contains("name=\"b\">\n      <failure message=\"why &lt;b&gt;\">"),
            "{x}"
        );
        assert!(x.contains("name=\"c\">\n      <failure "), "{x}");
        assert!(
            x.contains("name=\"s\">\n      <skipped message=\"why &lt;s&gt;\"/>"),
            "{x}"
        );
        assert!(x.contains("name=\"t\">\n      <skipped "), "{x}");
        assert!(x.contains("name=\"u\">\n      <failure "), "{x}");
        // and it reads back as JUnit
        let failed = super::super::evidence::junit_failures(&x, None).unwrap();
        assert_eq!(failed, ["mutants::b", "mutants::c", "mutants::u"]);
    }
}
