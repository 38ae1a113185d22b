//! The mutation gate: deliberately broken variants of the series (`patches/mutants/*.patch`)
//! must each be caught by the check their header names. Every check first runs on the
//! unmutated series and must pass there, so that only a mutation can fail it. Images,
//! passed baselines and verdicts are cached in `$ZC_CACHE/mutants`, keyed by the series,
//! the mutant, the config and the suite's binaries ([`keys`]).
//!
//! Prints one TAP line per mutant (`ok - NAME: caught by TEST`, `not ok - NAME: SURVIVED:
//! ...`) and `caught N of M`, writes a JUnit file (`--junit`, or `$ZC_JUNIT`) with one
//! test case per mutant, and fails if a mutant survived or did not build.

pub mod evidence;
pub mod header;
pub mod keys;
pub mod report;
pub mod runner;
pub mod select;
pub mod verdict;

use anyhow::{bail, Context, Result};
use header::{Flavor, Kind, Mutant};
use report::Tally;
use runner::{Bench, Built, Run, ScriptBench, Setup};
use select::Selection;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use verdict::{Timing, Verdict};

/// The default sample size.
const SAMPLE: usize = 3;
/// The time limit of a baseline's test executables, in seconds.
const BASELINE_TIMEOUT: u64 = 300;

const AFTER_HELP: &str = "\
A mutant is a small diff in patches/mutants/ on top of the applied series (git apply).
Its header says what it breaks and which check must catch it (a line \"#  ...\", with two or
more blanks, continues the field above it):
  # mutant: WHAT           what it breaks (docs/mutants.md's table)
  # breaks: RULE           the rule of the contract or the patch it breaks
  # new in v3: POINT       the fix of series v3 it puts back (the table names POINT)
  # check: suite ARGS...   ublk-suite --label patched ARGS, on the mutant kernel
  # check: debug ARGS...   ublk-suite --label debug ARGS, on the mutant debug kernel
  # check: transcript      splice-transcript: must differ from the unmutated series'
  # check: uapi            cargo test -p ublk --test uapi_header against the mutant
                           tree's UAPI headers (make headers_install)
  # timeout: SECS          per test executable (default 240); the VM gets 90 s more
  # known-survivor: WHY    listed with its reason, not run by --all or the sample
Environment: ZC_MUTANT_SEED (the sample's seed; default the UTC day), ZC_LANE=fast (the
sample leaves out the debug checks), ZC_JUNIT (the JUnit file, as --junit).";

/// `gate mutants`: the options of scripts/mutants.sh.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct MutantsArgs {
    /// Every mutant (not the known survivors).
    #[arg(long, conflicts_with_all = ["sample", "names"])]
    pub all: bool,

    /// A rotating sample of N mutants (by the UTC day, or ZC_MUTANT_SEED) [default: 3].
    #[arg(long, value_name = "N", conflicts_with = "names")]
    pub sample: Option<usize>,

    /// Print the mutants, their checks and the known survivors; run nothing.
    #[arg(long)]
    pub list: bool,

    /// The same as the markdown table of docs/mutants.md; run nothing.
    #[arg(long = "list-markdown", conflicts_with = "list")]
    pub list_markdown: bool,

    /// Write the JUnit XML report here: one test case per mutant [default: $ZC_JUNIT].
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// These mutants (patches/mutants/NAME.patch); a known survivor named here is run
    /// too, and must still survive.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

impl MutantsArgs {
    pub fn selection(&self) -> Selection {
        if !self.names.is_empty() {
            Selection::Named(self.names.clone())
        } else if self.all {
            Selection::All
        } else {
            Selection::Sample(self.sample.unwrap_or(SAMPLE))
        }
    }
}

/// A progress line, on stderr (stdout is the TAP report's).
pub fn say(msg: impl std::fmt::Display) {
    eprintln!("==> {msg}");
}

/// The checkout: `$ZC_TOP` (scripts/mutants.sh sets it), else the one this was built in.
fn top() -> PathBuf {
    match std::env::var_os("ZC_TOP").filter(|t| !t.is_empty()) {
        Some(t) => PathBuf::from(t),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// An exclusive lock on a file, held while the value lives.
struct Lock(#[allow(dead_code)] std::fs::File);

fn lock(path: &Path) -> Result<Lock> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).with_context(|| format!("opening {}", path.display()))?;
    let fd = f.as_raw_fd();
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        say(format!(
            "mutants: waiting for another scripts/mutants.sh ({})",
            path.display()
        ));
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(Lock(f))
}

/// `gate mutants`.
pub fn main(args: &MutantsArgs) -> Result<ExitCode> {
    let top = top();
    let all = header::load_dir(&top.join("patches/mutants"))?;
    let mut stdout = std::io::stdout().lock();
    if args.list || args.list_markdown {
        let text = match args.list {
            true => header::list_text(&all),
            false => header::list_markdown(&all),
        };
        stdout
            .write_all(text.as_bytes())
            .context("writing the list")?;
        return Ok(ExitCode::SUCCESS);
    }
    let t0 = Instant::now();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seed = select::seed(std::env::var("ZC_MUTANT_SEED").ok().as_deref(), unix)?;
    let fast = std::env::var("ZC_LANE").is_ok_and(|l| l == "fast");
    let chosen = select::choose(&all, &args.selection(), seed, fast)?;
    if let Some(note) = &chosen.note {
        say(note);
    }

    let mut bench = ScriptBench::new(&top)?;
    let cache = bench.cache()?;
    for d in ["images", "verdicts", "runs"] {
        let p = cache.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    // One run at a time: they share the worktree and its build directories.
    let _lock = lock(&cache.join(".lock"))?;
    let mut gate = Gate {
        bench: &mut bench,
        cache: cache.clone(),
        out: &mut stdout,
    };
    let verdicts = gate.run(&all, &chosen.mutants)?;
    let tally = Tally::of(&verdicts);
    let secs = t0.elapsed().as_secs();
    say(format!(
        "mutants: {} run in {secs} s; {} known survivor(s) listed; logs in {}",
        chosen.mutants.len(),
        all.iter().filter(|m| m.is_survivor()).count(),
        cache.join("runs").display()
    ));
    writeln!(stdout, "{}", tally.line()).context("writing the report")?;
    let junit = args.junit.clone().or_else(|| {
        std::env::var_os("ZC_JUNIT")
            .filter(|j| !j.is_empty())
            .map(PathBuf::from)
    });
    if let Some(j) = &junit {
        std::fs::write(j, report::junit(&verdicts, t0.elapsed().as_secs_f64()))
            .with_context(|| format!("writing {}", j.display()))?;
    }
    Ok(match tally.passed() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// A run of the gate: the baselines, then the chosen mutants.
pub struct Gate<'a, B: Bench> {
    pub bench: &'a mut B,
    /// `$ZC_CACHE/mutants`: images/, verdicts/, runs/.
    pub cache: PathBuf,
    /// Where the TAP lines go.
    pub out: &'a mut dyn Write,
}

/// The union of the chosen mutants' arguments for a kind of check: their test
/// executables (`--suite NAME`) and their filters, each once, in order.
pub fn baseline_args(chosen: &[&Mutant], kind: Kind) -> Vec<String> {
    let mut suites: Vec<String> = Vec::new();
    let mut filters: Vec<String> = Vec::new();
    for m in chosen.iter().filter(|m| m.check.kind == kind) {
        let mut it = m.check.args.iter();
        while let Some(a) = it.next() {
            if a == "--suite" {
                if let Some(s) = it.next() {
                    if !suites.contains(s) {
                        suites.push(s.clone());
                    }
                }
            } else if !filters.contains(a) {
                filters.push(a.clone());
            }
        }
    }
    let mut args: Vec<String> = suites
        .into_iter()
        .flat_map(|s| ["--suite".to_string(), s])
        .collect();
    args.extend(filters);
    args
}

/// The last lines of a file, for an error.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl<B: Bench> Gate<'_, B> {
    fn print(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}").context("writing the report")
    }

    /// The image of the series plus `mutant` in a flavor, from the cache or built.
    fn image(
        &mut self,
        s: &Setup,
        flavor: Flavor,
        mutant: Option<&Mutant>,
    ) -> Result<(PathBuf, Built)> {
        let key = s.inputs.image_key(flavor, mutant);
        let images = self.cache.join("images");
        let (path, present) = match flavor {
            Flavor::Headers => {
                let p = images.join(format!("uapi-{key}/include"));
                let ok = p.join("linux/ublk_cmd.h").is_file();
                (p, ok)
            }
            _ => {
                let p = images.join(format!("{}-{key}.bzImage", flavor.name()));
                let ok = p.is_file();
                (p, ok)
            }
        };
        if present {
            return Ok((path, Built::Done));
        }
        let built = self.bench.build(flavor, mutant, &path)?;
        Ok((path, built))
    }

    /// A fresh run directory `runs/NAME` and its log `runs/NAME.log`.
    fn run_dir(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let runs = self.cache.join("runs");
        let dir = runs.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok((dir, runs.join(format!("{name}.log"))))
    }

    /// Runs the baselines of the kinds the chosen mutants need; the unmutated series'
    /// transcript, when the transcript check is among them.
    fn baselines(&mut self, s: &Setup, chosen: &[&Mutant]) -> Result<Option<PathBuf>> {
        let mut transcript_ref = None;
        for kind in Kind::ALL {
            if !chosen.iter().any(|m| m.check.kind == kind) {
                continue;
            }
            let args = baseline_args(chosen, kind);
            let key = s.inputs.baseline_key(kind, &args);
            let verdicts = self.cache.join("verdicts");
            let marker = verdicts.join(format!("baseline-{key}"));
            let reference = verdicts.join(format!("transcript-{key}.txt"));
            let (img, built) = self.image(s, kind.flavor(), None)?;
            if built != Built::Done {
                bail!(
                    "the unmutated series does not build (flavor {})",
                    kind.flavor().name()
                );
            }
            let what = format!("{} {}", kind.name(), args.join(" "));
            let what = what.trim_end();
            if marker.exists() && (kind != Kind::Transcript || reference.is_file()) {
                say(format!(
                    "mutants: baseline {} passed before on this series and suite (cached)",
                    kind.name()
                ));
            } else {
                say(format!("mutants: baseline: {what} on the unmutated series"));
                let t = Instant::now();
                let name = format!("baseline-{}", kind.name());
                let (dir, log) = self.run_dir(&name)?;
                let status = self.bench.run(&Run {
                    kind,
                    args: &args,
                    timeout: BASELINE_TIMEOUT,
                    image: &img,
                    dir: &dir,
                    log: &log,
                })?;
                if status != 0 {
                    eprintln!("{}", tail(&log, 40));
                    bail!(
                        "the unmutated series fails the check '{what}' (exit status {status}, log: {}): no mutant can be judged by it",
                        log.display()
                    );
                }
                say(format!(
                    "mutants: baseline {} passed in {} s",
                    kind.name(),
                    t.elapsed().as_secs()
                ));
                if kind == Kind::Transcript {
                    let out = evidence::results_dir(&dir).join(evidence::TRANSCRIPT);
                    std::fs::copy(&out, &reference).with_context(|| {
                        format!(
                            "the unmutated series' run wrote no transcript ({})",
                            out.display()
                        )
                    })?;
                }
                std::fs::write(&marker, "")
                    .with_context(|| format!("writing {}", marker.display()))?;
            }
            if kind == Kind::Transcript {
                transcript_ref = Some(reference);
            }
        }
        Ok(transcript_ref)
    }

    /// Judges one mutant: from the cache, or built and run.
    fn judge(&mut self, s: &Setup, m: &Mutant, transcript_ref: Option<&Path>) -> Result<Verdict> {
        let key = s.inputs.verdict_key(m);
        let cached = self
            .cache
            .join("verdicts")
            .join(format!("{}-{key}", m.name));
        if let Ok(text) = std::fs::read_to_string(&cached) {
            return Verdict::decode(m, &text);
        }
        let t = Instant::now();
        let (img, built) = self.image(s, m.check.kind.flavor(), Some(m))?;
        match built {
            Built::Done => {}
            // The mutants are written against patches/; another revision may have moved on.
            Built::NotApply if !s.default_series => return Ok(Verdict::skipped(m, &s.origin)),
            Built::NotApply => return Ok(Verdict::broken(m, false, &s.inputs.series)),
            Built::Failed => return Ok(Verdict::broken(m, true, &s.inputs.series)),
        }
        let build = t.elapsed().as_secs();
        let t = Instant::now();
        let (dir, log) = self.run_dir(&m.name)?;
        let status = self.bench.run(&Run {
            kind: m.check.kind,
            args: &m.check.args,
            timeout: m.timeout,
            image: &img,
            dir: &dir,
            log: &log,
        })?;
        let run = t.elapsed().as_secs();
        let ev = evidence::collect(m.check.kind, &dir, status, transcript_ref)?;
        let v = verdict::judge(m, &ev, Timing { build, run }, &log);
        // Only verdicts of runs are cached, never a broken build.
        std::fs::write(&cached, v.encode())
            .with_context(|| format!("writing {}", cached.display()))?;
        Ok(v)
    }

    /// The baselines, then each chosen mutant; prints a TAP line for each. The verdicts
    /// are those of the known survivors left out (not run) and of the chosen mutants.
    pub fn run(&mut self, all: &[Mutant], chosen: &[&Mutant]) -> Result<Vec<Verdict>> {
        let s = self.bench.prepare()?;
        let verdicts = self.judge_all(&s, all, chosen);
        // The tree goes back to the series, so that nothing half-mutated is left behind,
        // whatever happened.
        let finished = self.bench.finish();
        let verdicts = verdicts?;
        finished?;
        Ok(verdicts)
    }

    fn judge_all(&mut self, s: &Setup, all: &[Mutant], chosen: &[&Mutant]) -> Result<Vec<Verdict>> {
        let transcript_ref = self.baselines(s, chosen)?;
        let mut verdicts = Vec::new();
        for m in all.iter().filter(|m| m.is_survivor()) {
            if !chosen.iter().any(|c| c.name == m.name) {
                let v = Verdict::not_run(m);
                self.print(&format!(
                    "# known survivor (not run): {}: {}",
                    m.name, v.reason
                ))?;
                verdicts.push(v);
            }
        }
        for m in chosen {
            let v = self.judge(s, m, transcript_ref.as_deref())?;
            self.print(&v.line())?;
            verdicts.push(v);
        }
        Ok(verdicts)
    }
}

#[cfg(test)]
mod tests;
