//! `gate run`: runs the selected steps in order, judges each from its exit status and, for
//! a counted step, from its JUnit files (see [`crate::junit`]), records it in steps.tsv,
//! and ends with the reports and the closing `N passed, N failed` line.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::junit::{self, Status};
use crate::report::{self, Row, RowStatus};
use crate::steps::{selected, Checks, Cmd, Role, Step};

/// How a step's programs ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by the gate after the step's timeout.
    TimedOut(Duration),
}

/// The end of a step: how its last program ended, and whether that program's status is
/// vmrun's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    pub vm: bool,
}

impl Ended {
    pub fn ok(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    /// What the exit status says beyond "it failed", if anything.
    pub fn reason(&self) -> Option<String> {
        match self.exit {
            Exit::Code(0) => None,
            Exit::Code(124) if self.vm => {
                Some("vmrun: timeout, the guest was killed (exit 124)".into())
            }
            Exit::Code(125) if self.vm => Some(
                "vmrun: the kernel log shows a problem (exit 125: a splat, see the console in the log)"
                    .into(),
            ),
            Exit::Code(123) if self.vm => Some("vmrun: the VM itself failed (exit 123)".into()),
            Exit::Code(_) => None,
            Exit::Signal(s) => Some(format!("killed by signal {s}")),
            Exit::TimedOut(d) => Some(format!(
                "timed out after {} s (the gate killed it)",
                d.as_secs()
            )),
        }
    }

    fn describe(&self) -> String {
        match self.exit {
            Exit::Code(c) => format!("exit status {c}"),
            _ => self.reason().unwrap_or_default(),
        }
    }
}

/// A counted step's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub passed: u64,
    pub failed: u64,
    /// What the files do not say: a missing or unreadable JUnit file, a timeout, a kernel
    /// problem, a failure without a failing check.
    pub reasons: Vec<String>,
    pub cases: Vec<junit::Case>,
}

/// Judges a counted step from how it ended and its JUnit files: `own` (the file given as
/// `$ZC_JUNIT`, when the program writes one) and the runs' `results/*.xml`.
pub fn judge(ended: &Ended, own: Option<&Path>, runs: &[PathBuf]) -> Verdict {
    let mut v = Verdict {
        passed: 0,
        failed: 0,
        reasons: Vec::new(),
        cases: Vec::new(),
    };
    let mut problems = 0;
    // false when the file is unreadable
    let take = |path: &Path, v: &mut Verdict| match junit::read(path) {
        Ok(root) => {
            v.cases.extend(junit::cases(&root));
            true
        }
        Err(e) => {
            v.reasons.push(format!("unreadable JUnit file: {e:#}"));
            false
        }
    };
    if let Some(p) = own {
        if p.exists() {
            if !take(p, &mut v) {
                problems += 1;
            }
        } else {
            problems += 1;
            v.reasons.push(format!(
                "the step wrote no JUnit file ({}={})",
                junit::ENV,
                p.display()
            ));
        }
    }
    for dir in runs {
        let files = junit::run_files(dir);
        if files.is_empty() {
            problems += 1;
            v.reasons.push(format!(
                "the run left no JUnit file in {}",
                dir.join("results").display()
            ));
        }
        for f in files {
            if !take(&f, &mut v) {
                problems += 1;
            }
        }
    }
    let (p, f) = junit::count(&v.cases);
    v.passed = p;
    v.failed = f + problems;
    if let Some(r) = ended.reason() {
        v.reasons.push(r);
    }
    if !ended.ok() && v.failed == 0 {
        // the program failed without saying which check did
        v.failed = 1;
        if ended.reason().is_none() {
            v.reasons
                .push(format!("{} without a failing check", ended.describe()));
        }
    }
    v
}

/// The revision under test, as the gate needs it: reading it (once its step passed) and
/// describing it for the reports.
pub trait Revision {
    /// Resolves the revision for the steps after the read step (sets their environment)
    /// and returns its origin.
    fn resolve(&mut self) -> Result<String>;
    /// revision.txt's lines; `readable` is false when the read step failed.
    fn describe(&self, readable: bool) -> String;
}

/// A gate run: the steps and where its logs and reports go.
pub struct Gate {
    pub steps: Vec<Step>,
    pub filters: Vec<String>,
    pub logs: PathBuf,
    pub report: PathBuf,
    pub lane: String,
    /// meta.tsv's lines after lane, seconds, passed and failed (installed, measured, ...).
    pub meta: Vec<(String, String)>,
    /// The working directory of the steps' programs.
    pub cwd: PathBuf,
}

/// The end of a gate run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    pub rows: Vec<Row>,
}

/// The log file of a step: its name with every other character than `A-Za-z0-9_.-` made
/// `_`, as the shell gate named them.
pub fn log_name(logs: &Path, name: &str) -> PathBuf {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    logs.join(format!("{slug}.log"))
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

impl Gate {
    /// Runs the gate; `out` gets the PASS/FAIL/SKIP lines, `err` the progress lines.
    pub fn run(
        &self,
        rev: &mut dyn Revision,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Summary> {
        for d in [&self.logs, &self.report] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        for f in ["steps.tsv", "junit.xml", "summary.md", "revision.txt"] {
            let p = self.report.join(f);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        let t0 = Instant::now();
        let mut sum = Summary::default();
        let mut readable = true;
        let mut tree_why: Option<String> = None;
        for step in &self.steps {
            if step.role != Role::Revision && !selected(&step.name, &self.filters) {
                if step.role == Role::Apply {
                    self.write_revision(rev, readable, out)?;
                }
                continue;
            }
            if step.needs_tree {
                if let Some(why) = &tree_why {
                    writeln!(out, "SKIP {}: {why}", step.name)?;
                    self.record(&mut sum, Row::skip(&step.name, why))?;
                    if step.role == Role::Apply {
                        self.write_revision(rev, readable, out)?;
                    }
                    continue;
                }
            }
            let ok = self.run_step(step, t0, &mut sum, out, err)?;
            match step.role {
                Role::Normal => {}
                Role::Revision if ok => match rev.resolve() {
                    Ok(origin) => writeln!(
                        err,
                        "==> gate: {origin}, lane {}, reports in {}",
                        self.lane,
                        self.report.display()
                    )?,
                    Err(e) => {
                        writeln!(err, "ERROR: {e:#}")?;
                        readable = false;
                    }
                },
                Role::Revision => readable = false,
                Role::Apply => {
                    if !ok {
                        tree_why = Some("the revision does not apply (see the apply step)".into());
                    }
                    self.write_revision(rev, readable, out)?;
                }
            }
            if !readable && tree_why.is_none() {
                tree_why = Some(
                    "the revision cannot be read (see the step series: read the revision)".into(),
                );
            }
        }
        let total = t0.elapsed().as_secs();
        writeln!(err, "==> [{total}s] done")?;
        let mut meta = vec![
            ("lane".to_string(), self.lane.clone()),
            ("seconds".into(), total.to_string()),
            ("passed".into(), sum.passed.to_string()),
            ("failed".into(), sum.failed.to_string()),
        ];
        meta.extend(self.meta.iter().cloned());
        meta.push(("filters".into(), self.filters.join(" ")));
        meta.push(("date".into(), report::utc_now()));
        report::write_tsv(&self.report.join("meta.tsv"), &meta)?;
        let described = rev.describe(readable);
        write_file(&self.report.join("revision.txt"), &described)?;
        if let Err(e) = report::write(&self.report) {
            writeln!(err, "ERROR: the reports: {e:#}")?;
            sum.failed += 1;
            sum.failures.push("report: junit.xml and summary.md".into());
        }
        for f in &sum.failures {
            writeln!(out, "failed: {f}")?;
        }
        write!(out, "{}", indent(&described, "    "))?;
        writeln!(
            out,
            "JUnit:   {}\nsummary: {}",
            self.report.join("junit.xml").display(),
            self.report.join("summary.md").display()
        )?;
        writeln!(out, "{} passed, {} failed", sum.passed, sum.failed)?;
        Ok(sum)
    }

    fn write_revision(
        &self,
        rev: &dyn Revision,
        readable: bool,
        out: &mut dyn Write,
    ) -> Result<()> {
        let text = rev.describe(readable);
        write_file(&self.report.join("revision.txt"), &text)?;
        write!(out, "{}", indent(&text, "    "))?;
        Ok(())
    }

    fn record(&self, sum: &mut Summary, row: Row) -> Result<()> {
        report::append_row(&self.report.join("steps.tsv"), &row)?;
        sum.passed += row.passed;
        sum.failed += row.failed;
        if row.status == RowStatus::Fail {
            sum.failures.push(row.name.clone());
        }
        sum.rows.push(row);
        Ok(())
    }

    /// Runs one step; true when it passed.
    fn run_step(
        &self,
        step: &Step,
        t0: Instant,
        sum: &mut Summary,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<bool> {
        let log = log_name(&self.logs, &step.name);
        let own = report::junit_path(&log);
        if own.exists() {
            std::fs::remove_file(&own).with_context(|| format!("removing {}", own.display()))?;
        }
        writeln!(err, "==> [{}s] {}", t0.elapsed().as_secs(), step.name)?;
        let s = Instant::now();
        let writes_junit = matches!(step.checks, Checks::Counted { own: true, .. });
        let ended = self.execute(step, &log, writes_junit.then_some(own.as_path()))?;
        let secs = s.elapsed().as_secs();
        let mut row = Row {
            name: step.name.clone(),
            status: RowStatus::Pass,
            passed: 1,
            failed: 0,
            seconds: secs,
            log: log.clone(),
            runs: step.runs().to_vec(),
            reason: String::new(),
        };
        let excerpt_lines;
        match &step.checks {
            Checks::Plain => {
                excerpt_lines = 60;
                if ended.ok() {
                    writeln!(out, "PASS {} ({secs}s)", step.name)?;
                } else {
                    row.status = RowStatus::Fail;
                    row.passed = 0;
                    row.failed = 1;
                    row.reason = ended.reason().unwrap_or_default();
                    writeln!(out, "FAIL {} (log: {})", step.name, log.display())?;
                }
            }
            Checks::Counted { own: writes, runs } => {
                excerpt_lines = 80;
                let v = judge(&ended, writes.then_some(own.as_path()), runs);
                for c in &v.cases {
                    let mark = match c.status {
                        Status::Pass => "ok",
                        Status::Fail => "not ok",
                        Status::Skip => "skip",
                    };
                    writeln!(out, "    {mark} - {}", c.full_name())?;
                }
                row.passed = v.passed;
                row.failed = v.failed;
                row.reason = v.reasons.join("; ");
                if v.failed > 0 {
                    row.status = RowStatus::Fail;
                    writeln!(
                        out,
                        "FAIL {}: {} passed, {} failed (log: {})",
                        step.name,
                        v.passed,
                        v.failed,
                        log.display()
                    )?;
                } else {
                    writeln!(out, "PASS {}: {} passed ({secs}s)", step.name, v.passed)?;
                }
            }
        }
        if row.status == RowStatus::Fail {
            write!(out, "{}", report::excerpt(&row, excerpt_lines))?;
        }
        let ok = row.status == RowStatus::Pass;
        self.record(sum, row)?;
        Ok(ok)
    }

    /// Runs a step's programs in order, all output to its log.
    fn execute(&self, step: &Step, log: &Path, junit: Option<&Path>) -> Result<Ended> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let deadline = step.timeout.map(|t| (Instant::now() + t, t));
        let mut ended = Ended {
            exit: Exit::Code(0),
            vm: false,
        };
        for cmd in &step.cmds {
            ended = run_cmd(cmd, &file, &self.cwd, junit, deadline)
                .with_context(|| format!("running the step {}", step.name))?;
            let fatal = match ended.exit {
                Exit::Code(123 | 124) => cmd.vm,
                Exit::Code(_) => false,
                Exit::Signal(_) | Exit::TimedOut(_) => true,
            };
            if !ended.ok() && (fatal || !cmd.may_fail) {
                break;
            }
        }
        Ok(ended)
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn run_cmd(
    cmd: &Cmd,
    log: &std::fs::File,
    cwd: &Path,
    junit: Option<&Path>,
    deadline: Option<(Instant, Duration)>,
) -> Result<Ended> {
    let Some((prog, args)) = cmd.argv.split_first() else {
        anyhow::bail!("a step with an empty command");
    };
    if let Some(dir) = &cmd.fresh {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut c = Command::new(prog);
    c.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .context("duplicating the log's descriptor")?,
        )
        .stderr(
            log.try_clone()
                .context("duplicating the log's descriptor")?,
        );
    match junit {
        Some(p) => c.env(junit::ENV, p),
        None => c.env_remove(junit::ENV),
    };
    for (k, v) in &cmd.env {
        c.env(k, v);
    }
    if deadline.is_some() {
        // its own process group, so that a timeout ends everything it started
        c.process_group(0);
    }
    let mut child = c
        .spawn()
        .with_context(|| format!("starting {}", prog.to_string_lossy()))?;
    let status = match deadline {
        None => child.wait().context("waiting for the step")?,
        Some((at, limit)) => loop {
            if let Some(st) = child.try_wait().context("waiting for the step")? {
                break st;
            }
            if Instant::now() >= at {
                kill_group(child.id(), libc::SIGTERM);
                let grace = Instant::now() + Duration::from_secs(5);
                while child.try_wait().context("waiting for the step")?.is_none()
                    && Instant::now() < grace
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                kill_group(child.id(), libc::SIGKILL);
                child.wait().context("waiting for the step")?;
                return Ok(Ended {
                    exit: Exit::TimedOut(limit),
                    vm: cmd.vm,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        },
    };
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    };
    Ok(Ended { exit, vm: cmd.vm })
}

fn kill_group(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negated pid signals the process group the child leads (it
    // was started with process_group(0)); no memory is involved.
    unsafe {
        libc::kill(-pid, sig);
    }
}
