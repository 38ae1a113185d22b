//! The gate's steps: their names (the gate's public interface: docs/gate.md and CI key on
//! them), their order, what each runs, which are counted, and which need the patched tree.
//! [`gate_steps`] is the table `gate run` uses; tests build tables of their own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Fast,
    Full,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Fast => "fast",
            Lane::Full => "full",
        }
    }
}

/// The lane: `--fast`/`--full` if given, else `ZC_LANE`, else fast when `CI=true`, full
/// otherwise.
pub fn lane(flag: Option<Lane>, zc_lane: Option<&str>, ci: Option<&str>) -> Result<Lane> {
    if let Some(l) = flag {
        return Ok(l);
    }
    match zc_lane.unwrap_or("") {
        "fast" => Ok(Lane::Fast),
        "full" => Ok(Lane::Full),
        "" if ci == Some("true") => Ok(Lane::Fast),
        "" => Ok(Lane::Full),
        other => bail!("ZC_LANE must be fast or full, not '{other}'"),
    }
}

/// Is a step selected by the PREFIX arguments (all are, without any)?
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|p| name.starts_with(p.as_str()))
}

/// One program a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    /// A run directory made empty before the program starts.
    pub fresh: Option<PathBuf>,
    /// The program's exit status is vmrun's (scripts/run-qemu.sh): 124, 125 and 123 are
    /// its timeout, kernel problem and VM failure.
    pub vm: bool,
    /// Its failure does not end the step, the next program judges (the control run:
    /// tests fail on the base kernel by design). vmrun's timeout and VM failure still do.
    pub may_fail: bool,
}

impl Cmd {
    pub fn new<S: Into<OsString>>(argv: impl IntoIterator<Item = S>) -> Cmd {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            fresh: None,
            vm: false,
            may_fail: false,
        }
    }

    /// `sh -c SCRIPT ARGS...` ($0 is the first of ARGS).
    pub fn sh<S: Into<OsString>>(script: &str, args: impl IntoIterator<Item = S>) -> Cmd {
        let mut argv: Vec<OsString> = vec!["sh".into(), "-c".into(), script.into()];
        argv.extend(args.into_iter().map(Into::into));
        Cmd::new(argv)
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Cmd {
        self.env.push((key.to_string(), value.into()));
        self
    }
}

/// What a step's checks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checks {
    /// The step is one check: its exit status.
    Plain,
    /// A counted step: its program writes JUnit to `$ZC_JUNIT` (`own`), and/or the
    /// in-guest runs in `runs` write theirs (`DIR/results/*.xml`).
    Counted { own: bool, runs: Vec<PathBuf> },
}

/// What a step means to the ones after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Normal,
    /// Reads the revision: it runs whatever the filters, and when it fails the steps that
    /// need the tree are skipped.
    Revision,
    /// Applies the revision on the base: when it fails the steps that need the tree are
    /// skipped; after it, revision.txt is written.
    Apply,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// Run in order; the first that fails ends the step.
    pub cmds: Vec<Cmd>,
    pub checks: Checks,
    /// Skipped, with a reason, when the revision cannot be read or does not apply.
    pub needs_tree: bool,
    /// Killed (its process group) after this long.
    pub timeout: Option<Duration>,
    pub role: Role,
}

impl Step {
    pub fn plain(name: &str, cmd: Cmd) -> Step {
        Step {
            name: name.to_string(),
            cmds: vec![cmd],
            checks: Checks::Plain,
            needs_tree: false,
            timeout: None,
            role: Role::Normal,
        }
    }

    /// A counted step whose program writes `$ZC_JUNIT`.
    pub fn counted(name: &str, cmd: Cmd) -> Step {
        Step {
            checks: Checks::Counted {
                own: true,
                runs: Vec::new(),
            },
            ..Step::plain(name, cmd)
        }
    }

    /// A counted step whose checks are an in-guest run's JUnit files.
    pub fn guest_run(name: &str, cmd: Cmd, run: PathBuf) -> Step {
        Step {
            checks: Checks::Counted {
                own: false,
                runs: vec![run],
            },
            ..Step::plain(name, cmd)
        }
    }

    pub fn needs_tree(mut self) -> Step {
        self.needs_tree = true;
        self
    }

    pub fn then(mut self, cmd: Cmd) -> Step {
        self.cmds.push(cmd);
        self
    }

    pub fn role(mut self, role: Role) -> Step {
        self.role = role;
        self
    }

    pub fn runs(&self) -> &[PathBuf] {
        match &self.checks {
            Checks::Counted { runs, .. } => runs,
            Checks::Plain => &[],
        }
    }
}

/// Where the gate runs: the checkout, the cache, the lane, and the gate binary itself
/// (`gate cargo-tests` runs Cargo's tests).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub top: PathBuf,
    pub cache: PathBuf,
    pub lane: Lane,
    pub gate: PathBuf,
}

impl Ctx {
    pub fn runs(&self) -> PathBuf {
        self.cache.join("test-runs")
    }

    /// scripts/lib.sh's kernel_image FLAVOR.
    pub fn kernel_image(&self, flavor: &str) -> PathBuf {
        let out = match flavor {
            "base" => self.cache.join("src/base/out-base"),
            f => self.cache.join(format!("src/patched/out-{f}")),
        };
        out.join("arch/x86/boot/bzImage")
    }
}

/// The cache: `UBLK_ZC_CACHE`, else `$XDG_CACHE_HOME/ublk-splice-zc`, else
/// `~/.cache/ublk-splice-zc` (as scripts/lib.sh).
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(c) = var("UBLK_ZC_CACHE") {
        return c.into();
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_default()).join(".cache"));
    base.join("ublk-splice-zc")
}

fn path(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

/// The shell scripts' names of the debug kernel's steps.
pub const DEBUG_SUITE: &str = "suite: debug kernel (KASAN, lockdep, kmemleak)";

/// The gate's steps, in order.
pub fn gate_steps(c: &Ctx) -> Vec<Step> {
    let top = &c.top;
    let s = |rel: &str| path(&top.join(rel));
    let runs = c.runs();
    let gate = path(&c.gate);
    let suite = s("target/release/ublk-suite");
    // guest NAME KERNEL TIMEOUT CMD...: CMD in the guest, in a fresh run directory.
    let guest = |name: &str, kernel: &str, timeout: &str, cmd: &[OsString]| {
        let dir = runs.join(name);
        let mut argv = vec![
            s("scripts/run-qemu.sh"),
            "--kernel".into(),
            kernel.into(),
            "--timeout".into(),
            timeout.into(),
            "--results".into(),
            path(&dir),
            "--".into(),
        ];
        argv.extend(cmd.iter().cloned());
        Cmd {
            fresh: Some(dir),
            vm: true,
            ..Cmd::new(argv)
        }
    };
    let read_revision = r#". "$0/scripts/lib.sh" && series_resolve && printf '%s: %s patch(es)\n' "$ZC_SERIES_ORIGIN" "$(series_patches | wc -l)""#;
    let shellcheck =
        r#"cd "$0" && exec shellcheck -x -S warning scripts/*.sh scripts/tests/*.sh .ci/run"#;
    let uapi = r#"inc=$("$0"/scripts/uapi-headers.sh) || exit 1
UBLK_UAPI_INCLUDE=$inc exec "$1" cargo-tests -p ublk --test uapi_header"#;
    let boots = |flavor: &str, timeout: &str, suffix: &str| {
        Cmd::sh(
            &format!(
                r#""$0"/scripts/run-qemu.sh --kernel {flavor} --timeout {timeout} -- uname -r | grep -- "^6\.1\.[0-9]*{suffix}$""#
            ),
            [path(top)],
        )
    };
    let base_tap = runs.join("base/results/suite-base.tap");
    let transcript = s("target/release/splice-transcript");
    let tfile = "results/splice-transcript.txt";
    let mut mutants = vec![s("scripts/mutants.sh")];
    if c.lane == Lane::Full {
        mutants.push("--all".into());
    }
    vec![
        Step::plain(
            "series: read the revision",
            Cmd::new(["bash".into(), "-c".into(), read_revision.into(), path(top)]),
        )
            .role(Role::Revision),
        Step::plain("deps: Debian packages", Cmd::new([s("scripts/deps.sh")])),
        Step::plain(
            "rust: cargo fmt --check",
            Cmd::new(["cargo", "fmt", "--all", "--check"]),
        ),
        Step::plain(
            "rust: cargo clippy -D warnings",
            Cmd::new([
                "cargo",
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        Step::counted(
            "rust: host unit tests",
            Cmd::new([
                gate.clone(),
                "cargo-tests".into(),
                "--workspace".into(),
                "--lib".into(),
                "--bins".into(),
            ]),
        ),
        Step::plain(
            "host: shellcheck -S warning (scripts/)",
            Cmd::sh(shellcheck, [path(top)]),
        ),
        Step::counted(
            "host: revision inputs (mbox, cover letter, folded subjects, quilt, range, merge refused)",
            Cmd::new([s("scripts/tests/series-input.sh")]),
        ),
        Step::counted(
            "host: docs/mutants.md's table is scripts/mutants.sh --list-markdown's",
            Cmd::new([s("scripts/tests/mutants-table.sh")]),
        ),
        // A revision that does not apply stops here, with git's message and the name of the
        // patch, and the steps that need it are skipped.
        Step::plain(
            "series: apply the revision on the base",
            Cmd::new([s("scripts/kernel-tree.sh")]),
        )
        .needs_tree()
        .role(Role::Apply),
        // KERNEL_SRC (your own v6.1.y tree) cannot rot; no kernel is built.
        Step::counted(
            "base: KERNEL_SRC tree made from the package gives the same base",
            Cmd::new([s("scripts/tests/kernel-src.sh")]),
        ),
        Step::counted(
            "series: git am, quilt, checkpatch",
            Cmd::new([s("scripts/check-series.sh"), "apply".into(), "checkpatch".into()]),
        )
        .needs_tree(),
        Step::plain(
            "kernel: build base",
            Cmd::new([s("scripts/build-kernel.sh"), "base".into()]),
        )
        .needs_tree(),
        // The walk ends on the whole series, which is the patched kernel: the next step
        // then only finds it up to date.
        Step::counted(
            "series: bisect build after each patch",
            Cmd::new([s("scripts/check-series.sh"), "build".into()]),
        )
        .needs_tree(),
        Step::plain(
            "kernel: build patched",
            Cmd::new([s("scripts/build-kernel.sh"), "patched".into()]),
        )
        .needs_tree(),
        Step::counted(
            "series: W=1 C=1 on touched objects",
            Cmd::new([s("scripts/check-series.sh"), "warnings".into()]),
        )
        .needs_tree(),
        // The debug kernel (KASAN, lockdep, kmemleak) runs in both lanes: it is the gate
        // for page lifetimes.
        Step::plain(
            "kernel: build debug (KASAN, lockdep, kmemleak)",
            Cmd::new([s("scripts/build-kernel.sh"), "debug".into()]),
        )
        .needs_tree(),
        Step::counted(
            "uapi: harness constants agree with the installed header",
            Cmd::sh(uapi, [path(top), gate.clone()]),
        )
        .needs_tree(),
        Step::counted(
            "vm: runner tests on the patched kernel",
            Cmd::new([
                gate.clone(),
                "cargo-tests".into(),
                "-p".into(),
                "vmrun".into(),
                "--test".into(),
                "vm".into(),
            ])
            .env("VMRUN_TEST_KERNEL", path(&c.kernel_image("patched")))
            .env("VMRUN_TEST_EXPECT_RELEASE_SUFFIX", "-ublkzc"),
        )
        .needs_tree(),
        Step::plain(
            "vm: patched kernel boots, uname shows the series",
            boots("patched", "120", "-ublkzc"),
        )
        .needs_tree(),
        Step::plain(
            "vm: debug kernel (KASAN, lockdep) boots clean",
            boots("debug", "300", "-ublkzc-debug"),
        )
        .needs_tree(),
        // In-guest runs: each gets a fresh run directory; the suite writes TAP and JUnit.
        Step::plain(
            "suite: build the in-guest suite",
            Cmd::new([s("scripts/build-suite.sh")]),
        ),
        Step::guest_run(
            "suite: patched kernel",
            guest(
                "patched",
                "patched",
                "1800",
                &[suite.clone(), "--label".into(), "patched".into()],
            ),
            runs.join("patched"),
        )
        .needs_tree(),
        Step::guest_run(
            DEBUG_SUITE,
            guest(
                "debug",
                "debug",
                "2400",
                &[
                    s("scripts/guest/kmemleak-run.sh"),
                    suite.clone(),
                    "--label".into(),
                    "debug".into(),
                ],
            ),
            runs.join("debug"),
        )
        .needs_tree(),
        Step::counted(
            "debug: kmemleak finds no leak after the suite",
            Cmd::new([s("scripts/kmemleak-check.sh"), path(&runs.join("debug/results"))]),
        )
        .needs_tree(),
        // The control run: on the base kernel the suite must show exactly what a missing
        // series looks like (tests that need it fail, naming the feature; the others pass).
        Step::plain(
            "suite: control run on the base kernel (failures expected)",
            Cmd {
                may_fail: true,
                ..guest(
                    "base",
                    "base",
                    "1800",
                    &[suite.clone(), "--label".into(), "base".into()],
                )
            },
        )
        .then(Cmd::sh(
            r#"[ -s "$0" ] || { echo "the control run left no TAP file"; exit 1; }"#,
            [path(&base_tap)],
        ))
        .needs_tree(),
        Step::counted(
            "suite: control run shows the expected outcome",
            Cmd::new([
                s("target/release/suite-control"),
                path(&base_tap),
                s("harness/suite/needs-series.txt"),
            ]),
        )
        .needs_tree(),
        // Patch 2 is a refactor: splice, tee, sendfile and copy_file_range behave as on
        // the base.
        Step::plain(
            "series: patch 2 changes nothing (splice transcript, base vs patched)",
            guest("transcript-base", "base", "600", std::slice::from_ref(&transcript)),
        )
        .then(guest("transcript-patched", "patched", "600", &[transcript]))
        .then(Cmd::sh(
            r#"diff -u "$0" "$1" || exit 1; echo "identical on base and patched: $(wc -l <"$0") lines""#,
            [
                path(&runs.join("transcript-base").join(tfile)),
                path(&runs.join("transcript-patched").join(tfile)),
            ],
        ))
        .needs_tree(),
        // The gate's own sensitivity: broken variants of the series must each be caught.
        // The fast lane runs a rotating sample, the full lane every mutant.
        Step::counted(
            "mutants: broken variants of the series are caught",
            Cmd::new(mutants),
        )
        .needs_tree(),
        // Short bench runs, so that the bench cannot rot; they assert no timing.
        Step::plain(
            "bench: smoke run in the guest (no timing assertions)",
            Cmd::new([s("scripts/bench.sh"), "--smoke".into()]),
        )
        .needs_tree(),
        Step::plain(
            "bench: interleaved smoke run in the guest (no timing assertions)",
            Cmd::new([s("scripts/bench.sh"), "--ab".into(), "--smoke".into()]),
        )
        .needs_tree(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(lane: Lane) -> Ctx {
        Ctx {
            top: "/top".into(),
            cache: "/cache".into(),
            lane,
            gate: "/top/target/release/gate".into(),
        }
    }

    #[test]
    fn lane_rules() {
        assert_eq!(lane(None, None, None).expect("lane"), Lane::Full);
        assert_eq!(lane(None, None, Some("true")).expect("lane"), Lane::Fast);
        assert_eq!(
            lane(None, Some(""), Some("true")).expect("lane"),
            Lane::Fast
        );
        assert_eq!(lane(None, None, Some("1")).expect("lane"), Lane::Full);
        assert_eq!(
            lane(None, Some("full"), Some("true")).expect("lane"),
            Lane::Full
        );
        assert_eq!(lane(None, Some("fast"), None).expect("lane"), Lane::Fast);
        assert_eq!(
            lane(Some(Lane::Full), Some("fast"), Some("true")).expect("lane"),
            Lane::Full
        );
        assert_eq!(
            lane(Some(Lane::Fast), Some("bogus"), None).expect("lane"),
            Lane::Fast
        );
        let e = lane(None, Some("slow"), None).unwrap_err();
        assert_eq!(e.to_string(), "ZC_LANE must be fast or full, not 'slow'");
    }

    #[test]
    fn selection_by_prefix() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selected("rust: host unit tests", &[]));
        assert!(selected("rust: host unit tests", &f(&["rust:"])));
        assert!(selected(
            "vm: runner tests on the patched kernel",
            &f(&["series:", "vm: runner"])
        ));
        assert!(!selected(
            "vm: patched kernel boots, uname shows the series",
            &f(&["vm: runner"])
        ));
        assert!(!selected("rust: host unit tests", &f(&["host:"])));
    }

    /// The step names are the gate's public interface: docs/gate.md and CI key on them.
    #[test]
    fn step_names_and_order() {
        let names: Vec<String> = gate_steps(&ctx(Lane::Full))
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "series: read the revision",
                "deps: Debian packages",
                "rust: cargo fmt --check",
                "rust: cargo clippy -D warnings",
                "rust: host unit tests",
                "host: shellcheck -S warning (scripts/)",
                "host: revision inputs (mbox, cover letter, folded subjects, quilt, range, merge refused)",
                "host: docs/mutants.md's table is scripts/mutants.sh --list-markdown's",
                "series: apply the revision on the base",
                "base: KERNEL_SRC tree made from the package gives the same base",
                "series: git am, quilt, checkpatch",
                "kernel: build base",
                "series: bisect build after each patch",
                "kernel: build patched",
                "series: W=1 C=1 on touched objects",
                "kernel: build debug (KASAN, lockdep, kmemleak)",
                "uapi: harness constants agree with the installed header",
                "vm: runner tests on the patched kernel",
                "vm: patched kernel boots, uname shows the series",
                "vm: debug kernel (KASAN, lockdep) boots clean",
                "suite: build the in-guest suite",
                "suite: patched kernel",
                "suite: debug kernel (KASAN, lockdep, kmemleak)",
                "debug: kmemleak finds no leak after the suite",
                "suite: control run on the base kernel (failures expected)",
                "suite: control run shows the expected outcome",
                "series: patch 2 changes nothing (splice transcript, base vs patched)",
                "mutants: broken variants of the series are caught",
                "bench: smoke run in the guest (no timing assertions)",
                "bench: interleaved smoke run in the guest (no timing assertions)",
            ]
        );
    }

    /// The read step runs lib.sh's series_resolve on this checkout's patches/.
    #[test]
    fn the_read_step_reads_patches() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let c = Ctx {
            top: top.clone(),
            ..ctx(Lane::Fast)
        };
        let cmd = &gate_steps(&c)[0].cmds[0];
        let out = std::process::Command::new(&cmd.argv[0])
            .args(&cmd.argv[1..])
            .env_remove("ZC_SERIES_SRC")
            .env_remove("ZC_SERIES_TREE")
            .env_remove("ZC_SERIES_RANGE")
            .env_remove("ZC_SERIES_DIR")
            .env_remove("ZC_SERIES_ORIGIN")
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = std::fs::read_to_string(top.join("patches/series"))
            .expect("patches/series")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(text, format!("patches/ (default): {n} patch(es)\n"));
    }

    #[test]
    fn table_rules() {
        let steps = gate_steps(&ctx(Lane::Fast));
        let apply = steps
            .iter()
            .position(|s| s.role == Role::Apply)
            .expect("an apply step");
        assert_eq!(steps[0].role, Role::Revision);
        // Nothing before the apply step needs the tree; the suite's build and the
        // KERNEL_SRC check do not either.
        assert!(steps[..apply].iter().all(|s| !s.needs_tree));
        let free: Vec<&str> = steps[apply + 1..]
            .iter()
            .filter(|s| !s.needs_tree)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            free,
            [
                "base: KERNEL_SRC tree made from the package gives the same base",
                "suite: build the in-guest suite"
            ]
        );
        // The suite runs are judged by their JUnit files, in fresh run directories.
        let patched = steps
            .iter()
            .find(|s| s.name == "suite: patched kernel")
            .expect("the suite step");
        assert_eq!(patched.runs(), [PathBuf::from("/cache/test-runs/patched")]);
        assert_eq!(
            patched.cmds[0].fresh.as_deref(),
            Some(Path::new("/cache/test-runs/patched"))
        );
        assert!(patched.cmds[0].vm);
        assert!(!patched.cmds[0].may_fail);
        let control = steps
            .iter()
            .find(|s| s.name == "suite: control run on the base kernel (failures expected)")
            .expect("the control step");
        assert!(control.cmds[0].may_fail && control.cmds[0].vm);
        assert!(!control.cmds[1].may_fail);
        let mutants = |l| {
            gate_steps(&ctx(l))
                .into_iter()
                .find(|s| s.name.starts_with("mutants:"))
                .expect("mutants")
                .cmds[0]
                .argv
                .clone()
        };
        assert_eq!(
            mutants(Lane::Fast),
            [OsString::from("/top/scripts/mutants.sh")]
        );
        assert_eq!(mutants(Lane::Full).last(), Some(&OsString::from("--all")));
        let vm = steps
            .iter()
            .find(|s| s.name == "vm: runner tests on the patched kernel")
            .expect("vm step");
        assert_eq!(
            vm.cmds[0].env[0],
            (
                "VMRUN_TEST_KERNEL".to_string(),
                OsString::from("/cache/src/patched/out-patched/arch/x86/boot/bzImage")
            )
        );
    }
}
