//! The contract between the gate and the program of a counted step.
//!
//! A counted step is a step with checks of its own: the gate gives its program the
//! environment variable `ZC_JUNIT=<path>` (see [`ENV`]), and the program writes its results
//! there as one JUnit XML file, one `<testcase>` per check:
//!
//! - a passing check is a `<testcase name="...">` without children; a failing one has a
//!   `<failure message="...">` (or `<error>`) child; a `<skipped>` child is neither;
//! - the file may hold `<testsuites>` with `<testsuite>`s, or one `<testsuite>`;
//!   `classname` is optional (the gate fills in `gate.<phase>`);
//! - the file may be rewritten after each check, so that it holds the checks so far if the
//!   program dies later (scripts/lib.sh's `junit_case` does so);
//! - a program that runs another counted program hides `ZC_JUNIT` from it (lib.sh's
//!   `junit_begin` does), so that one file has one writer.
//!
//! The gate then judges the step: it passes when the program exited 0 and no check
//! failed. A non-zero exit without a failing check is one failure; a missing or unreadable
//! file is one failure that says so. The in-guest suite's runs write JUnit in their run
//! directories (`test-runs/NAME/results/*.xml`), which the gate reads the same way.
//! Counted steps' programs: the shell tests (`junit_case` in scripts/lib.sh), `gate
//! cargo-tests`, `suite-control`, and `gate mutants`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::xml::Elem;

/// The environment variable that names the file a counted step's program writes.
pub const ENV: &str = "ZC_JUNIT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One check (`<testcase>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub classname: String,
    pub name: String,
    pub status: Status,
    /// The failure's or skip's message.
    pub message: String,
}

impl Case {
    pub fn new(name: &str, status: Status, message: &str) -> Case {
        Case {
            classname: String::new(),
            name: name.to_string(),
            status,
            message: message.to_string(),
        }
    }

    /// `classname::name`, or the name alone.
    pub fn full_name(&self) -> String {
        if self.classname.is_empty() {
            self.name.clone()
        } else {
            format!("{}::{}", self.classname, self.name)
        }
    }
}

/// The cases of a JUnit document, in document order.
pub fn cases(root: &Elem) -> Vec<Case> {
    let mut found = Vec::new();
    if root.tag == "testcase" {
        found.push(root);
    }
    root.descendants("testcase", &mut found);
    found
        .into_iter()
        .map(|c| {
            let (status, msg) = if let Some(f) = c.first("failure").or_else(|| c.first("error")) {
                (Status::Fail, f.get("message").unwrap_or(""))
            } else if let Some(s) = c.first("skipped") {
                (Status::Skip, s.get("message").unwrap_or(""))
            } else {
                (Status::Pass, "")
            };
            Case {
                classname: c.get("classname").unwrap_or("").to_string(),
                name: c.get("name").unwrap_or("").to_string(),
                status,
                message: msg.to_string(),
            }
        })
        .collect()
}

/// Reads and parses a JUnit file.
pub fn read(path: &Path) -> Result<Elem> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let root = Elem::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    if root.tag != "testsuites" && root.tag != "testsuite" {
        anyhow::bail!(
            "{}: the root element is <{}>, not <testsuites> or <testsuite>",
            path.display(),
            root.tag
        );
    }
    Ok(root)
}

/// The `<testsuite>`s of a document (the root itself when it is one).
pub fn suites(root: &Elem) -> Vec<Elem> {
    if root.tag == "testsuite" {
        vec![root.clone()]
    } else {
        root.find_all("testsuite").cloned().collect()
    }
}

/// Passed and failed checks (skipped ones are neither).
pub fn count(cases: &[Case]) -> (u64, u64) {
    let n = |s| cases.iter().filter(|c| c.status == s).count() as u64;
    (n(Status::Pass), n(Status::Fail))
}

/// The JUnit files a run directory holds: `DIR/results/*.xml`, sorted.
pub fn run_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("results"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "xml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A `<testsuite>` of these cases, with its counts.
pub fn suite(name: &str, cases: &[Case]) -> Elem {
    let (_, failed) = count(cases);
    let skipped = cases.iter().filter(|c| c.status == Status::Skip).count();
    let mut s = Elem::new("testsuite")
        .with("name", name)
        .with("tests", cases.len().to_string())
        .with("failures", failed.to_string())
        .with("skipped", skipped.to_string());
    for c in cases {
        let mut e = Elem::new("testcase");
        if !c.classname.is_empty() {
            e.set("classname", c.classname.as_str());
        }
        e.set("name", c.name.as_str());
        match c.status {
            Status::Pass => {}
            Status::Fail => {
                e.push(Elem::new("failure").with("message", c.message.as_str()));
            }
            Status::Skip => {
                e.push(Elem::new("skipped").with("message", c.message.as_str()));
            }
        }
        s.push(e);
    }
    s
}

/// Writes `<testsuites>` of these suites to a file.
pub fn write(path: &Path, suites: Vec<Elem>) -> Result<()> {
    let mut top = Elem::new("testsuites");
    top.children = suites;
    std::fs::write(path, top.to_document() + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cases_of_either_root() {
        let doc = r#"<?xml version="1.0"?>
<testsuites><testsuite name="s">
  <testcase classname="k" name="a"/>
  <testcase name="b"><failure message="bad"/></testcase>
  <testcase name="c"><error message="worse">trace</error></testcase>
  <testcase name="d"><skipped message="later"/></testcase>
</testsuite></testsuites>"#;
        let cs = cases(&Elem::parse(doc).expect("parses"));
        assert_eq!(count(&cs), (1, 2));
        assert_eq!(cs[0].full_name(), "k::a");
        assert_eq!(
            (cs[1].full_name(), cs[1].message.as_str()),
            ("b".into(), "bad")
        );
        assert_eq!(cs[3].status, Status::Skip);
        let one = r#"<testsuite name="s"><testcase name="a"/></testsuite>"#;
        let root = Elem::parse(one).expect("parses");
        assert_eq!(count(&cases(&root)), (1, 0));
        assert_eq!(suites(&root).len(), 1);
    }

    #[test]
    fn writes_what_it_reads() {
        let dir = std::env::temp_dir().join(format!("gate-junit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("x.xml");
        let cs = vec![
            Case::new("ok one", Status::Pass, ""),
            Case::new("bad <one>", Status::Fail, "it & that"),
            Case::new("later", Status::Skip, "why"),
        ];
        write(&p, vec![suite("s", &cs)]).expect("writes");
        let root = read(&p).expect("reads");
        assert_eq!(cases(&root), cs);
        assert_eq!(suites(&root)[0].get("failures"), Some("1"));
        std::fs::write(&p, "<html/>").expect("writes");
        let e = read(&p).unwrap_err();
        assert!(format!("{e:#}").contains("not <testsuites>"), "{e:#}");
        std::fs::write(&p, "<testsuites><testcase").expect("writes");
        assert!(read(&p).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
