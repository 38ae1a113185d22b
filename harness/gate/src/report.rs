//! The gate's reports, for CI, in the report directory (results/gate, or ZC_REPORT_DIR):
//!
//! - steps.tsv: one line per step: name, status (pass|fail|skip), passed, failed,
//!   seconds, log, run dirs (space-separated), reason (why it was skipped, or what its
//!   exit status or files said beyond its checks);
//! - meta.tsv (key, value) and revision.txt (the revision's description);
//! - junit.xml: a `gate: steps` suite (one case per step, the revision, base, Debian
//!   version, lane and accelerator as properties), then every check: each step's own
//!   JUnit (`<log>.junit.xml`, the file it was given as `$ZC_JUNIT`) and the in-guest
//!   runs' JUnit (`RUN/results/*.xml`), merged;
//! - summary.md: a short markdown report (verdict, counts, revision, steps, times, the
//!   failing checks by name).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::junit;
use crate::xml::{clean, Elem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    Pass,
    Fail,
    Skip,
}

impl RowStatus {
    fn as_str(self) -> &'static str {
        match self {
            RowStatus::Pass => "pass",
            RowStatus::Fail => "fail",
            RowStatus::Skip => "skip",
        }
    }
}

/// One line of steps.tsv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub status: RowStatus,
    pub passed: u64,
    pub failed: u64,
    pub seconds: u64,
    pub log: PathBuf,
    pub runs: Vec<PathBuf>,
    pub reason: String,
}

impl Row {
    pub fn skip(name: &str, reason: &str) -> Row {
        Row {
            name: name.to_string(),
            status: RowStatus::Skip,
            passed: 0,
            failed: 0,
            seconds: 0,
            log: PathBuf::new(),
            runs: Vec::new(),
            reason: reason.to_string(),
        }
    }

    fn tsv(&self) -> String {
        let one = |s: &str| s.replace(['\t', '\n'], " ");
        let runs: Vec<String> = self.runs.iter().map(|r| r.display().to_string()).collect();
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            one(&self.name),
            self.status.as_str(),
            self.passed,
            self.failed,
            self.seconds,
            self.log.display(),
            runs.join(" "),
            one(&self.reason)
        )
    }

    fn parse(line: &str) -> Result<Row> {
        let mut f: Vec<&str> = line.split('\t').collect();
        f.resize(8.max(f.len()), "");
        let n = |s: &str| -> Result<u64> {
            if s.is_empty() {
                Ok(0)
            } else {
                s.parse().with_context(|| format!("'{s}' is not a count"))
            }
        };
        let status = match f[1] {
            "pass" => RowStatus::Pass,
            "fail" => RowStatus::Fail,
            "skip" => RowStatus::Skip,
            s => anyhow::bail!("steps.tsv: unknown status '{s}' of {}", f[0]),
        };
        Ok(Row {
            name: f[0].to_string(),
            status,
            passed: n(f[2])?,
            failed: n(f[3])?,
            seconds: n(f[4])?,
            log: PathBuf::from(f[5]),
            runs: f[6].split_whitespace().map(PathBuf::from).collect(),
            reason: f[7].to_string(),
        })
    }

    fn phase(&self) -> &str {
        self.name.split(':').next().unwrap_or("")
    }
}

/// The JUnit file a step is given as `$ZC_JUNIT`: its log's name with `.junit.xml`.
pub fn junit_path(log: &Path) -> PathBuf {
    log.with_extension("junit.xml")
}

pub fn append_row(path: &Path, row: &Row) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(row.tsv().as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| Row::parse(l).with_context(|| format!("{}", path.display())))
        .collect()
}

pub fn write_tsv(path: &Path, pairs: &[(String, String)]) -> Result<()> {
    let text: String = pairs.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn read_meta(dir: &Path) -> Vec<(String, String)> {
    read_lines(&dir.join("meta.tsv"))
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The date as meta.tsv has it: `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let (h, m) = ((secs % 86400) / 3600, (secs % 3600) / 60);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// A step's JUnit files: its own (if it wrote one) and its runs'.
fn junit_files(row: &Row) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if !row.log.as_os_str().is_empty() {
        let own = junit_path(&row.log);
        if own.exists() {
            files.push(own);
        }
    }
    for r in &row.runs {
        files.extend(junit::run_files(r));
    }
    files
}

/// The failing checks of a step, by name: what its exit status or files said (the
/// reason), the failing cases of its JUnit files, and for a step without any, the first
/// compiler error or the last `ERROR:` line of its log.
pub fn failing(row: &Row) -> Vec<String> {
    let mut names: Vec<String> = row
        .reason
        .split("; ")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut any_case = false;
    for f in junit_files(row) {
        match junit::read(&f) {
            Ok(root) => {
                for c in junit::cases(&root) {
                    any_case = true;
                    if c.status == junit::Status::Fail {
                        names.push(c.full_name());
                    }
                }
            }
            Err(e) => names.push(format!("(unreadable JUnit {}: {e:#})", f.display())),
        }
    }
    if names.is_empty() && !any_case {
        let lines = read_lines(&row.log);
        let cc = lines
            .iter()
            .find(|l| is_cc_error(l))
            .map(|l| l.trim().to_string());
        let err = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("ERROR: ") || l.starts_with("error: "))
            .cloned();
        names.extend(cc.or(err));
    }
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    seen
}

/// `file.c:12:5: error: ...`, `file.c:12: fatal error: ...`
fn is_cc_error(line: &str) -> bool {
    for marker in [": error: ", ": fatal error: "] {
        let mut from = 0;
        while let Some(i) = line[from..].find(marker) {
            let head = &line[..from + i];
            let mut parts = head.rsplit(':');
            let last = parts.next().unwrap_or("");
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if digits(last) {
                return true;
            }
            from += i + 1;
        }
    }
    false
}

/// The excerpt after a failed step: the failing checks by name, then its log's last lines.
pub fn excerpt(row: &Row, lines: usize) -> String {
    let mut out = String::new();
    let names: Vec<String> = failing(row).into_iter().take(20).collect();
    for (i, n) in names.iter().enumerate() {
        let head = if i == 0 {
            "    failing: "
        } else {
            "             "
        };
        let _ = writeln!(out, "{head}{n}");
    }
    let log = read_lines(&row.log);
    for l in &log[log.len().saturating_sub(lines)..] {
        let _ = writeln!(out, "    {l}");
    }
    out
}

fn mmss(s: u64) -> String {
    format!("{}:{:02}", s / 60, s % 60)
}

fn human(s: u64) -> String {
    if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// The accelerators the steps' VMs ran on, as vmrun names them in its log lines.
fn accelerator(rows: &[Row]) -> String {
    let mut found: Vec<String> = Vec::new();
    for r in rows {
        for l in read_lines(&r.log) {
            if let Some(i) = l.find("==> vmrun: accelerator ") {
                let a = l[i + "==> vmrun: accelerator ".len()..].to_string();
                if !found.contains(&a) {
                    found.push(a);
                }
            }
        }
    }
    if found.is_empty() {
        "no VM was booted".into()
    } else {
        found.join("; ")
    }
}

fn attr_u64(e: &Elem, k: &str) -> u64 {
    e.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Writes DIR/junit.xml and DIR/summary.md from DIR/steps.tsv, meta.tsv and revision.txt.
pub fn write(dir: &Path) -> Result<()> {
    let rows = read_rows(&dir.join("steps.tsv"))?;
    let meta = read_meta(dir);
    let m = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let mut rev: Vec<(String, String)> = Vec::new();
    let mut subjects: Vec<String> = Vec::new();
    for l in read_lines(&dir.join("revision.txt")) {
        let (k, v) = l.split_once(": ").unwrap_or((&l, ""));
        if k.starts_with("patch ") {
            subjects.push(v.to_string());
        } else {
            rev.push((k.to_string(), v.to_string()));
        }
    }
    let r = |k: &str| {
        rev.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let accel = accelerator(&rows);
    let total_p: u64 = rows.iter().map(|s| s.passed).sum();
    let total_f: u64 = rows.iter().map(|s| s.failed).sum();

    // --- junit.xml: one testsuite of steps, then every step's checks ---
    let mut top = Elem::new("testsuites").with("name", "ublk-splice-zc gate");
    let mut steps = Elem::new("testsuite").with("name", "gate: steps");
    let props = steps.push(Elem::new("properties"));
    for (k, v) in [
        ("revision", r("revision").unwrap_or("")),
        ("series hash", r("series hash").unwrap_or("")),
        ("base", r("base").unwrap_or("")),
        ("installed", m("installed").unwrap_or("")),
        ("lane", m("lane").unwrap_or("")),
        ("accelerator", accel.as_str()),
    ] {
        props.push(Elem::new("property").with("name", k).with("value", v));
    }
    for (i, s) in subjects.iter().enumerate() {
        props.push(
            Elem::new("property")
                .with("name", format!("patch {}/{}", i + 1, subjects.len()))
                .with("value", s.as_str()),
        );
    }
    let (mut n, mut f, mut k, mut t) = (0u64, 0u64, 0u64, 0u64);
    for s in &rows {
        let case = steps.push(
            Elem::new("testcase")
                .with("classname", format!("gate.{}", s.phase()))
                .with("name", s.name.as_str())
                .with("time", s.seconds.to_string()),
        );
        n += 1;
        t += s.seconds;
        match s.status {
            RowStatus::Skip => {
                case.push(Elem::new("skipped").with("message", s.reason.as_str()));
                k += 1;
            }
            RowStatus::Fail => {
                f += 1;
                let names = failing(s);
                let mut msg = format!("{} failed", s.failed);
                if !names.is_empty() {
                    msg += ": ";
                    msg += &names
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                }
                let log = read_lines(&s.log);
                let tail = log[log.len().saturating_sub(80)..].join("\n");
                case.push(Elem::new("failure").with("message", msg).with_text(tail));
                case.push(Elem::new("system-out").with_text(format!("log: {}", s.log.display())));
            }
            RowStatus::Pass => {}
        }
    }
    steps.set("tests", n.to_string());
    steps.set("failures", f.to_string());
    steps.set("skipped", k.to_string());
    steps.set("time", t.to_string());
    top.push(steps);

    for s in rows.iter().filter(|s| s.status != RowStatus::Skip) {
        let own = junit_path(&s.log);
        let own_file = !s.log.as_os_str().is_empty() && own.exists();
        for path in junit_files(s) {
            let is_own = own_file && path == own;
            let root = match junit::read(&path) {
                Ok(root) => root,
                Err(e) => {
                    let mut suite = Elem::new("testsuite")
                        .with("name", format!("{}: {}", s.name, path.display()))
                        .with("tests", "1")
                        .with("failures", "1");
                    let file = path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    suite
                        .push(
                            Elem::new("testcase")
                                .with("classname", "gate.junit")
                                .with("name", file),
                        )
                        .push(
                            Elem::new("failure")
                                .with("message", format!("unreadable JUnit: {e:#}")),
                        );
                    top.push(suite);
                    continue;
                }
            };
            let suites = junit::suites(&root);
            let single = suites.len() == 1;
            for mut suite in suites {
                let name = if is_own && single {
                    s.name.clone()
                } else {
                    format!("{}: {}", s.name, suite.get("name").unwrap_or(""))
                };
                suite.set("name", name);
                let cases = junit::cases(&suite);
                if suite.get("tests").is_none() {
                    suite.set("tests", cases.len().to_string());
                }
                if suite.get("failures").is_none() {
                    suite.set("failures", junit::count(&cases).1.to_string());
                }
                let phase = s.phase().to_string();
                let log = s.log.display().to_string();
                for c in suite.children.iter_mut().filter(|c| c.tag == "testcase") {
                    if is_own {
                        if c.get("classname").is_none() {
                            // the classname first, as in every other case
                            c.attrs
                                .insert(0, ("classname".into(), format!("gate.{phase}")));
                        }
                        for fl in c.children.iter_mut().filter(|x| x.tag == "failure") {
                            let msg = format!("{} (log: {log})", fl.get("message").unwrap_or(""));
                            fl.set("message", msg);
                        }
                    }
                }
                top.push(suite);
            }
        }
    }
    let sum = |key: &str| -> u64 { top.find_all("testsuite").map(|x| attr_u64(x, key)).sum() };
    let (tests, failures, skipped) = (sum("tests"), sum("failures"), sum("skipped"));
    top.set("tests", tests.to_string());
    top.set("failures", failures.to_string());
    top.set("skipped", skipped.to_string());
    top.set("time", m("seconds").map_or(t.to_string(), str::to_string));
    let junit_file = dir.join("junit.xml");
    std::fs::write(&junit_file, top.to_document())
        .with_context(|| format!("writing {}", junit_file.display()))?;

    // --- summary.md ---
    let secs: u64 = m("seconds").and_then(|s| s.parse().ok()).unwrap_or(t);
    let verdict = if total_f == 0 { "passed" } else { "FAILED" };
    let mut md: Vec<String> = vec![
        format!("### ublk-splice-zc gate {verdict}: {total_p} passed, {total_f} failed"),
        String::new(),
        "| | |".into(),
        "|---|---|".into(),
        format!("| revision | {} |", r("revision").unwrap_or("?")),
    ];
    let hash = r("series hash").unwrap_or("?");
    let (h, rest) = hash.split_once(' ').unwrap_or((hash, ""));
    md.push(format!("| series hash | `{h}` {rest} |"));
    md.push(format!("| base | {} |", r("base").unwrap_or("?")));
    let mut inst = m("installed").unwrap_or("?").to_string();
    if let Some(ks) = m("kernel_src").filter(|v| !v.is_empty()) {
        let _ = write!(inst, " (not used: KERNEL_SRC={ks})");
    }
    md.push(format!(
        "| Debian package here | {inst} (the project was last checked on {}) |",
        m("measured").unwrap_or("?")
    ));
    md.push(format!("| accelerator | {accel} |"));
    let filters = m("filters").filter(|v| !v.is_empty());
    md.push(format!(
        "| lane | {}{} |",
        m("lane").unwrap_or("?"),
        filters.map_or(String::new(), |f| format!(" (steps: {f})"))
    ));
    md.push(format!(
        "| host | {} CPUs, {} |",
        m("cpus").unwrap_or("?"),
        m("date").unwrap_or("")
    ));
    md.push(format!("| time | {} |", human(secs)));
    md.push(String::new());
    if !subjects.is_empty() {
        md.push("Patches:".into());
        md.push(String::new());
        for (i, s) in subjects.iter().enumerate() {
            md.push(format!("{}. {s}", i + 1));
        }
        md.push(String::new());
    }
    md.push("| step | result | passed | failed | time |".into());
    md.push("|---|---|--:|--:|--:|".into());
    for s in &rows {
        md.push(match s.status {
            RowStatus::Skip => format!("| {} | skipped: {} | | | |", s.name, s.reason),
            st => format!(
                "| {} | {} | {} | {} | {} |",
                s.name,
                if st == RowStatus::Pass {
                    "pass"
                } else {
                    "**FAIL**"
                },
                s.passed,
                s.failed,
                mmss(s.seconds)
            ),
        });
    }
    md.push(String::new());
    let mut phases: Vec<(String, u64)> = Vec::new();
    for s in &rows {
        match phases.iter_mut().find(|(p, _)| p == s.phase()) {
            Some((_, v)) => *v += s.seconds,
            None => phases.push((s.phase().to_string(), s.seconds)),
        }
    }
    // by time, the longest first; equal times in the order the phases came
    phases.sort_by_key(|p| std::cmp::Reverse(p.1));
    md.push(format!(
        "Time by phase: {}",
        phases
            .iter()
            .map(|(p, v)| format!("{p} {}", mmss(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    md.push(String::new());
    let bad: Vec<&Row> = rows
        .iter()
        .filter(|s| s.status == RowStatus::Fail)
        .collect();
    if !bad.is_empty() {
        md.push("Failures:".into());
        md.push(String::new());
        for s in bad {
            let names = failing(s);
            let what = if names.is_empty() {
                "see the log".to_string()
            } else {
                names
                    .iter()
                    .take(10)
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            md.push(format!("- {}: {what} (log: `{}`)", s.name, s.log.display()));
        }
        md.push(String::new());
    }
    md.push(format!("JUnit: `{}`", junit_file.display()));
    let summary = dir.join("summary.md");
    std::fs::write(&summary, clean(&(md.join("\n") + "\n")))
        .with_context(|| format!("writing {}", summary.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_796_687_100), "2026-12-07 23:45 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn compiler_errors() {
        assert!(is_cc_error("fs/splice.c:12:5: error: expected ';'"));
        assert!(is_cc_error("x.c:3: fatal error: y.h: No such file"));
        assert!(!is_cc_error(
            "error: patch failed: include/linux/splice.h:32"
        ));
        assert!(!is_cc_error("the error: is here"));
    }

    #[test]
    fn rows_round_trip() {
        let row = Row {
            name: "suite: patched kernel".into(),
            status: RowStatus::Fail,
            passed: 3,
            failed: 1,
            seconds: 9,
            log: "/l/x.log".into(),
            runs: vec!["/r/a".into(), "/r/b".into()],
            reason: "vmrun: timeout".into(),
        };
        assert_eq!(
            Row::parse(row.tsv().trim_end_matches('\n')).expect("parses"),
            row
        );
        let skip = Row::skip("kernel: build base", "the revision does not apply");
        assert_eq!(
            skip.tsv(),
            "kernel: build base\tskip\t0\t0\t0\t\t\tthe revision does not apply\n"
        );
        assert!(Row::parse("a\tmaybe\t0").is_err());
    }
}
