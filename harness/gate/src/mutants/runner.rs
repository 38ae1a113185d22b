//! The bench: what builds the series plus a mutant and runs a check on it. The gate's
//! decisions only talk to the [`Bench`] trait, so that its tests need no kernel; the real
//! one is [`ScriptBench`]: shell for git and make (scripts/mutant-tree.sh), vmrun through
//! scripts/run-qemu.sh for the checks that boot, cargo for the uapi check.

use super::evidence::{self, UAPI_JUNIT};
use super::header::{Flavor, Kind, Mutant};
use super::keys::{files_fp, Inputs};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a build gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The image (or the include directory) was written where asked.
    Done,
    /// The mutant does not apply on the series.
    NotApply,
    /// The build failed (its log says why).
    Failed,
}

/// The series and what the keys depend on, once the bench is ready.
#[derive(Debug, Clone)]
pub struct Setup {
    pub inputs: Inputs,
    /// The revision is patches/ (the mutants are written against it).
    pub default_series: bool,
    /// Where the revision comes from (lib.sh's ZC_SERIES_ORIGIN).
    pub origin: String,
}

/// One run of a check.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub kind: Kind,
    pub args: &'a [String],
    /// The time limit of each test executable, in seconds.
    pub timeout: u64,
    /// The image it boots (the include directory for the uapi check).
    pub image: &'a Path,
    /// A fresh, empty run directory.
    pub dir: &'a Path,
    /// Where the run's output goes.
    pub log: &'a Path,
}

pub trait Bench {
    /// Readies the tree and the suite; says what the keys depend on.
    fn prepare(&mut self) -> Result<Setup>;
    /// Builds the series plus `mutant` (none: the unmutated series) into `dest`: a
    /// bzImage, or for [`Flavor::Headers`] an include directory.
    fn build(&mut self, flavor: Flavor, mutant: Option<&Mutant>, dest: &Path) -> Result<Built>;
    /// Runs a check; its exit status.
    fn run(&mut self, run: &Run) -> Result<i32>;
    /// Leaves the tree as the series has it.
    fn finish(&mut self) -> Result<()>;
}

/// The exit status of a finished process (a signal as 128 + N, as a shell has it).
fn status_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// The real bench.
#[derive(Debug)]
pub struct ScriptBench {
    top: PathBuf,
    /// `KEY=value` lines of `mutant-tree.sh env`.
    env: HashMap<String, String>,
}

impl ScriptBench {
    /// Asks scripts/mutant-tree.sh about the series; fails if it is not applied yet.
    pub fn new(top: &Path) -> Result<ScriptBench> {
        let out = Command::new(top.join("scripts/mutant-tree.sh"))
            .arg("env")
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/mutant-tree.sh env")?;
        if !out.status.success() {
            bail!("scripts/mutant-tree.sh env failed ({})", out.status);
        }
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(ScriptBench {
            top: top.to_path_buf(),
            env,
        })
    }

    fn get(&self, k: &str) -> Result<&str> {
        self.env
            .get(k)
            .map(String::as_str)
            .with_context(|| format!("scripts/mutant-tree.sh env said no {k}="))
    }

    /// `$ZC_CACHE/mutants`, where images, verdicts and runs are kept.
    pub fn cache(&self) -> Result<PathBuf> {
        Ok(Path::new(self.get("cache")?).join("mutants"))
    }

    fn helper(&self) -> Command {
        let mut c = Command::new(self.top.join("scripts/mutant-tree.sh"));
        c.stdout(std::io::stderr()).stderr(Stdio::inherit());
        c
    }

    fn release(&self, name: &str) -> PathBuf {
        self.top.join("target/release").join(name)
    }

    fn config_fp(&self, flavor: &str) -> Result<String> {
        let frags: Vec<PathBuf> = self
            .get(&format!("frags-{flavor}"))?
            .split_whitespace()
            .map(|f| self.top.join("kernel-config").join(f))
            .collect();
        let refs: Vec<&Path> = frags.iter().map(PathBuf::as_path).collect();
        files_fp(&refs)
    }

    /// ublk-suite, splice-transcript and every test executable the suite lists.
    fn suite_fp(&self) -> Result<String> {
        let list = self.release("ublk-suite.tests");
        let text = std::fs::read_to_string(&list)
            .with_context(|| format!("reading {}", list.display()))?;
        let mut files = vec![
            self.release("ublk-suite"),
            self.release("splice-transcript"),
        ];
        files.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(PathBuf::from),
        );
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        files_fp(&refs)
    }

    fn uapi_fp(&self) -> Result<String> {
        let a = self.top.join("harness/ublk/tests/uapi_header.rs");
        let b = self.top.join("harness/ublk/src/uapi.rs");
        files_fp(&[&a, &b])
    }

    fn cargo_uapi(
        &self,
        log: &Path,
        include: Option<&Path>,
        timeout: u64,
        extra: &[&str],
    ) -> Result<i32> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out
            .try_clone()
            .context("duplicating the log's descriptor")?;
        let mut c = Command::new("timeout");
        c.arg(timeout.to_string())
            .args([
                "nice",
                "-n",
                "10",
                "cargo",
                "test",
                "-p",
                "ublk",
                "--test",
                "uapi_header",
            ])
            .args(extra)
            .current_dir(&self.top)
            .stdout(out)
            .stderr(err);
        if let Some(i) = include {
            c.env("UBLK_UAPI_INCLUDE", i);
        }
        Ok(status_code(c.status().context(
            "running cargo test -p ublk --test uapi_header",
        )?))
    }

    /// The uapi check: no VM. The test is compiled first, outside the time limit, then
    /// run against the installed headers; when it fails, each of its tests runs alone,
    /// so that the JUnit file in the run's results names the ones that fail.
    fn run_uapi(&self, run: &Run) -> Result<i32> {
        let compile = self.cargo_uapi(run.log, None, 1800, &["--no-run"])?;
        if compile != 0 {
            bail!(
                "compiling the uapi_header test failed (log: {})",
                run.log.display()
            );
        }
        let status = self.cargo_uapi(run.log, Some(run.image), run.timeout, &[])?;
        if status == 0 || status == i32::from(vmrun::run::EXIT_TIMEOUT) {
            return Ok(status);
        }
        let list = Command::new("cargo")
            .args([
                "test",
                "-q",
                "-p",
                "ublk",
                "--test",
                "uapi_header",
                "--",
                "--list",
                "--format",
                "terse",
            ])
            .current_dir(&self.top)
            .stderr(Stdio::null())
            .output()
            .context("listing the uapi_header tests")?;
        let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect();
        let mut cases = Vec::new();
        for n in &names {
            let st =
                self.cargo_uapi(run.log, Some(run.image), run.timeout, &["--", "--exact", n])?;
            cases.push((n.clone(), st));
        }
        let results = evidence::results_dir(run.dir);
        std::fs::create_dir_all(&results)
            .with_context(|| format!("creating {}", results.display()))?;
        let xml = results.join(UAPI_JUNIT);
        std::fs::write(&xml, uapi_junit(&cases))
            .with_context(|| format!("writing {}", xml.display()))?;
        Ok(status)
    }
}

/// The JUnit file of the uapi test's tests, each run alone: (name, exit status).
pub fn uapi_junit(cases: &[(String, i32)]) -> String {
    use crate::junit::{self, Case, Status};
    let cases: Vec<Case> = cases
        .iter()
        .map(|(name, st)| {
            let (status, msg) = match st {
                0 => (Status::Pass, String::new()),
                s => (Status::Fail, format!("exit status {s}")),
            };
            Case {
                classname: "uapi_header".to_string(),
                ..Case::new(name, status, &msg)
            }
        })
        .collect();
    let mut top = crate::xml::Elem::new("testsuites").with("name", "uapi_header");
    top.push(junit::suite("uapi_header", &cases));
    top.to_document() + "\n"
}

impl Bench for ScriptBench {
    fn prepare(&mut self) -> Result<Setup> {
        let st = self
            .helper()
            .arg("worktree")
            .status()
            .context("running scripts/mutant-tree.sh worktree")?;
        if !st.success() {
            bail!("scripts/mutant-tree.sh worktree failed ({st})");
        }
        // The suite binaries decide a verdict as much as the kernel does.
        let st = Command::new(self.top.join("scripts/build-suite.sh"))
            .stdout(std::io::stderr())
            .status()
            .context("running scripts/build-suite.sh")?;
        if !st.success() {
            bail!("scripts/build-suite.sh failed ({st})");
        }
        Ok(Setup {
            inputs: Inputs {
                series: self.get("hash")?.to_string(),
                config_patched: self.config_fp("patched")?,
                config_debug: self.config_fp("debug")?,
                suite: self.suite_fp()?,
                uapi: self.uapi_fp()?,
            },
            default_series: self.get("default")? == "1",
            origin: self.get("origin")?.to_string(),
        })
    }

    fn build(&mut self, flavor: Flavor, mutant: Option<&Mutant>, dest: &Path) -> Result<Built> {
        let patch = mutant.map_or_else(|| PathBuf::from("-"), |m| m.path.clone());
        let name = mutant.map_or("the unmutated series", |m| m.name.as_str());
        let mut c = self.helper();
        c.arg("build")
            .arg(flavor.name())
            .arg(&patch)
            .arg(name)
            .arg(dest);
        if flavor != Flavor::Headers {
            let fp = self.config_fp(flavor.name())?;
            c.env("ZC_MUTANT_CONFIG_FP", fp);
        }
        let st = c.status().context("running scripts/mutant-tree.sh build")?;
        Ok(match st.code() {
            Some(0) => Built::Done,
            Some(2) => Built::NotApply,
            _ => Built::Failed,
        })
    }

    fn run(&mut self, run: &Run) -> Result<i32> {
        if run.kind == Kind::Uapi {
            return self.run_uapi(run);
        }
        let mut guest: Vec<String> = match run.kind {
            Kind::Transcript => vec![self.release("splice-transcript").display().to_string()],
            _ => vec![
                self.release("ublk-suite").display().to_string(),
                "--label".into(),
                evidence::label(run.kind).into(),
                "--timeout".into(),
                run.timeout.to_string(),
            ],
        };
        guest.extend(run.args.iter().cloned());
        let log =
            File::create(run.log).with_context(|| format!("creating {}", run.log.display()))?;
        let err = log
            .try_clone()
            .context("duplicating the log's descriptor")?;
        let st = Command::new("nice")
            .args(["-n", "10"])
            .arg(self.top.join("scripts/run-qemu.sh"))
            .arg("--kernel")
            .arg(run.image)
            .arg("--timeout")
            .arg((run.timeout + 90).to_string())
            .arg("--results")
            .arg(run.dir)
            .arg("--")
            .args(&guest)
            .current_dir(&self.top)
            .stdout(log)
            .stderr(err)
            .status()
            .context("running scripts/run-qemu.sh")?;
        Ok(status_code(st))
    }

    fn finish(&mut self) -> Result<()> {
        let st = self
            .helper()
            .arg("reset")
            .status()
            .context("running scripts/mutant-tree.sh reset")?;
        if !st.success() {
            bail!("scripts/mutant-tree.sh reset failed ({st})");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uapi_junit_names_the_failing_tests() {
        let x = uapi_junit(&[
            ("flags_match".into(), 0),
            ("position_encoding_matches_installed_header".into(), 101),
        ]);
        assert_eq!(
            evidence::junit_failures(&x, None).unwrap(),
            ["uapi_header::position_encoding_matches_installed_header"]
        );
    }
}
