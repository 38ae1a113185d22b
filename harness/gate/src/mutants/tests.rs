//! The gate's flow with a bench that builds nothing and boots nothing: each run writes
//! what a real one would (the suite's JUnit file, a console.log, a transcript) and
//! returns an exit status.

use super::header::{Flavor, Mutant};
use super::keys::Inputs;
use super::report::Tally;
use super::runner::{Bench, Built, Run, Setup};
use super::verdict::Status;
use super::{baseline_args, Gate};
use anyhow::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Respond = Box<dyn Fn(&str, &Run) -> i32>;

struct Fake {
    setup: Setup,
    /// (flavor, mutant or "-") of each build.
    builds: Vec<(Flavor, String)>,
    /// (run directory name, args) of each run.
    runs: Vec<(String, Vec<String>)>,
    /// Builds that do not give an image, by mutant.
    build_fails: HashMap<String, Built>,
    respond: Respond,
    finished: bool,
}

impl Fake {
    fn new(respond: Respond) -> Fake {
        Fake {
            setup: Setup {
                inputs: Inputs {
                    series: "5e5e5e5e5e5e5e5e".into(),
                    config_patched: "p".into(),
                    config_debug: "d".into(),
                    suite: "s".into(),
                    uapi: "u".into(),
                },
                default_series: true,
                origin: "patches/ (default)".into(),
            },
            builds: Vec::new(),
            runs: Vec::new(),
            build_fails: HashMap::new(),
            respond,
            finished: false,
        }
    }
}

impl Bench for Fake {
    fn prepare(&mut self) -> Result<Setup> {
        Ok(self.setup.clone())
    }

    fn build(&mut self, flavor: Flavor, mutant: Option<&Mutant>, dest: &Path) -> Result<Built> {
        let name = mutant.map_or("-".to_string(), |m| m.name.clone());
        self.builds.push((flavor, name.clone()));
        if let Some(b) = self.build_fails.get(&name) {
            return Ok(b.clone());
        }
        if flavor == Flavor::Headers {
            std::fs::create_dir_all(dest.join("linux"))?;
            std::fs::write(dest.join("linux/ublk_cmd.h"), &name)?;
        } else {
            std::fs::create_dir_all(dest.parent().unwrap())?;
            std::fs::write(dest, &name)?;
        }
        Ok(Built::Done)
    }

    fn run(&mut self, run: &Run) -> Result<i32> {
        assert!(run.dir.is_dir(), "a fresh run directory");
        assert!(
            std::fs::read_dir(run.dir)?.next().is_none(),
            "an empty run directory"
        );
        let name = run.dir.file_name().unwrap().to_string_lossy().into_owned();
        self.runs.push((name.clone(), run.args.to_vec()));
        std::fs::create_dir_all(run.dir.join("results"))?;
        std::fs::write(run.log, format!("the log of {name}\n"))?;
        Ok((self.respond)(&name, run))
    }

    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        Ok(())
    }
}

fn mutant(name: &str, check: &str, survivor: bool) -> Mutant {
    let text = format!(
        "# mutant: breaks {name}\n# check: {check}\n{}diff --git a/x b/x\n",
        if survivor {
            "# known-survivor: a race no test can time\n"
        } else {
            ""
        }
    );
    Mutant::parse(
        name,
        Path::new(&format!("/m/{name}.patch")),
        text.into_bytes(),
    )
    .unwrap()
}

fn set() -> Vec<Mutant> {
    vec![
        mutant(
            "p1-test",
            "suite --suite ublk_zc splice_errnos_read_request",
            false,
        ),
        mutant("p2-transcript", "transcript", false),
        mutant(
            "p3-survivor",
            "debug --suite ublk_zc_faults cancel_punted_lend",
            true,
        ),
        mutant(
            "p4-kasan",
            "debug --suite ublk_zc splice_errnos_read_request",
            false,
        ),
        mutant(
            "p4-hang",
            "suite --suite ublk_zc splice_errnos_write_request",
            false,
        ),
        mutant(
            "p4-survives",
            "suite --suite ublk_zc_edges stable_writes",
            false,
        ),
        mutant("p4-uapi", "uapi", false),
    ]
}

fn junit(label: &str, suite: &str, failed: &[&str]) -> String {
    let mut x =
        format!("<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"{label}.{suite}\">\n");
    x.push_str(&format!(
        "<testcase classname=\"{label}.{suite}\" name=\"passes\"/>\n"
    ));
    for f in failed {
        x.push_str(&format!(
            "<testcase classname=\"{label}.{suite}\" name=\"{f}\"><failure message=\"m\">t</failure></testcase>\n"
        ));
    }
    x.push_str("</testsuite></testsuites>\n");
    x
}

/// What each run of the set does on the fake bench.
fn respond() -> Respond {
    Box::new(|name: &str, run: &Run| {
        let res = run.dir.join("results");
        let write = |f: &str, text: &str| std::fs::write(res.join(f), text).unwrap();
        match name {
            "baseline-suite" => {
                write("suite-patched.xml", &junit("patched", "ublk_zc", &[]));
                0
            }
            "baseline-transcript" => {
                write("splice-transcript.txt", "splice 1\nsplice 2\nsplice 3\n");
                0
            }
            "baseline-debug" | "baseline-uapi" | "p4-survives" | "p3-survivor" => 0,
            "p1-test" => {
                write(
                    "suite-patched.xml",
                    &junit("patched", "ublk_zc", &["splice_errnos_read_request"]),
                );
                1
            }
            "p2-transcript" => {
                write("splice-transcript.txt", "splice 1\nsplice two\nsplice 3\n");
                0
            }
            "p4-kasan" => {
                std::fs::write(
                    run.dir.join("console.log"),
                    "[    0.000000] Linux version 6.1.192-ublkzc-debug\n\
                     [    5.000000] BUG: KASAN: slab-out-of-bounds in ublk_ch_splice_lend+0xfba/0x1010\n",
                )
                .unwrap();
                write(
                    "suite-debug.xml",
                    &junit("debug", "ublk_zc", &["splice_errnos_read_request"]),
                );
                125
            }
            "p4-hang" => 124,
            "p4-uapi" => {
                write(
                    "uapi_header.xml",
                    &super::runner::uapi_junit(&[
                        ("flags".into(), 0),
                        ("position_encoding_matches_installed_header".into(), 101),
                    ]),
                );
                101
            }
            other => panic!("no run {other} expected"),
        }
    })
}

fn cache_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gate-flow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    for s in ["images", "verdicts", "runs"] {
        std::fs::create_dir_all(d.join(s)).unwrap();
    }
    d
}

fn run_gate(
    bench: &mut Fake,
    cache: &Path,
    all: &[Mutant],
    chosen: &[&Mutant],
) -> Result<(String, Tally)> {
    let mut out = Vec::new();
    let verdicts = Gate {
        bench,
        cache: cache.to_path_buf(),
        out: &mut out,
    }
    .run(all, chosen)?;
    Ok((String::from_utf8(out).unwrap(), Tally::of(&verdicts)))
}

/// The lines without their timings, which depend on the machine.
fn untimed(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| match l.find(" (build ") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect()
}

#[test]
fn a_full_run_then_the_same_from_the_cache() {
    let all = set();
    let chosen: Vec<&Mutant> = all.iter().filter(|m| !m.is_survivor()).collect();
    let cache = cache_dir("full");
    let mut bench = Fake::new(respond());
    let (out, tally) = run_gate(&mut bench, &cache, &all, &chosen).unwrap();
    let log = |n: &str| cache.join(format!("runs/{n}.log")).display().to_string();
    assert_eq!(
        untimed(&out),
        [
            "# known survivor (not run): p3-survivor: a race no test can time".to_string(),
            "ok - p1-test: caught by ublk_zc::splice_errnos_read_request".into(),
            "ok - p2-transcript: caught by the splice transcript (2 lines differ from the unmutated series')".into(),
            "ok - p4-kasan: caught by the kernel log (KASAN report: BUG: KASAN: slab-out-of-bounds in ublk_ch_splice_lend+0xfba/0x1010), and ublk_zc::splice_errnos_read_request".into(),
            "ok - p4-hang: caught by the VM timeout: ublk_zc splice_errnos_write_request hung".into(),
            format!("not ok - p4-survives: SURVIVED: its check passed (suite --suite ublk_zc_edges stable_writes; log {})", log("p4-survives")),
            "ok - p4-uapi: caught by uapi_header::position_encoding_matches_installed_header".into(),
        ]
    );
    assert!(out.contains("(build 0 s, suite run 0 s)"), "{out}");
    assert_eq!(tally.line(), "caught 5 of 6");
    assert!(!tally.passed());
    assert!(bench.finished);

    // One baseline per kind, with the union of the chosen checks' arguments.
    let runs: Vec<&(String, Vec<String>)> = bench
        .runs
        .iter()
        .filter(|(n, _)| n.starts_with("baseline-"))
        .collect();
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline-suite",
            "baseline-debug",
            "baseline-transcript",
            "baseline-uapi"
        ]
    );
    assert_eq!(
        runs[0].1,
        [
            "--suite",
            "ublk_zc",
            "--suite",
            "ublk_zc_edges",
            "splice_errnos_read_request",
            "splice_errnos_write_request",
            "stable_writes"
        ]
    );
    // The unmutated series is built once per flavor; each mutant once.
    let unmutated: Vec<Flavor> = bench
        .builds
        .iter()
        .filter(|(_, m)| m == "-")
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(unmutated, [Flavor::Patched, Flavor::Debug, Flavor::Headers]);
    assert_eq!(bench.builds.len(), 3 + 6);
    assert_eq!(bench.runs.len(), 4 + 6);

    // The same inputs: nothing built, nothing run, the same verdicts.
    let mut again = Fake::new(Box::new(|n: &str, _: &Run| panic!("{n} ran again")));
    let (out2, tally2) = run_gate(&mut again, &cache, &all, &chosen).unwrap();
    assert!(again.builds.is_empty(), "{:?}", again.builds);
    assert!(again.runs.is_empty());
    assert_eq!(tally2, tally);
    let cached: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| format!("{l} (cached)"))
        .collect();
    assert_eq!(out2.lines().skip(1).collect::<Vec<_>>(), cached);

    // Another suite binary: every check runs again, on the images already built.
    let mut other = Fake::new(respond());
    other.setup.inputs.suite = "s2".into();
    let (_, tally3) = run_gate(&mut other, &cache, &all, &chosen).unwrap();
    assert!(other.builds.is_empty(), "{:?}", other.builds);
    assert_eq!(other.runs.len(), 10);
    assert_eq!(tally3, tally);
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_failing_baseline_judges_no_mutant() {
    let all = set();
    let chosen: Vec<&Mutant> = all.iter().filter(|m| m.name == "p1-test").collect();
    let cache = cache_dir("baseline");
    let mut bench = Fake::new(Box::new(|n: &str, _: &Run| match n {
        "baseline-suite" => 1,
        other => panic!("{other} ran after a failed baseline"),
    }));
    let e = run_gate(&mut bench, &cache, &all, &chosen).unwrap_err();
    assert!(bench.finished, "the tree is reset after a failure too");
    assert!(format!("{e:#}").contains("the unmutated series fails the check 'suite --suite ublk_zc splice_errnos_read_request'"), "{e:#}");
    // and nothing of it is cached: the next run tries again
    let mut next = Fake::new(respond());
    let (_, t) = run_gate(&mut next, &cache, &all, &chosen).unwrap();
    assert_eq!(next.runs[0].0, "baseline-suite");
    assert_eq!(t.line(), "caught 1 of 1");
    assert!(t.passed());
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn mutants_that_do_not_build_or_apply() {
    let all = set();
    let chosen: Vec<&Mutant> = all
        .iter()
        .filter(|m| m.name == "p1-test" || m.name == "p4-hang")
        .collect();
    let cache = cache_dir("broken");
    let mut bench = Fake::new(respond());
    bench.build_fails.insert("p1-test".into(), Built::Failed);
    bench.build_fails.insert("p4-hang".into(), Built::NotApply);
    let (out, t) = run_gate(&mut bench, &cache, &all, &chosen).unwrap();
    assert_eq!(
        untimed(&out)[1..],
        [
            "not ok - p1-test: BROKEN: does not build on series 5e5e5e5e5e5e5e5e (fix the mutant)",
            "not ok - p4-hang: BROKEN: does not apply on series 5e5e5e5e5e5e5e5e (fix the mutant)",
        ]
    );
    assert_eq!(
        (t.line().as_str(), t.bad, t.passed()),
        ("caught 0 of 2", 2, false)
    );
    // a broken build is never cached
    let mut fixed = Fake::new(respond());
    let (_, t) = run_gate(&mut fixed, &cache, &all, &chosen).unwrap();
    assert_eq!(t.line(), "caught 2 of 2");

    // On another revision a mutant that does not apply is skipped, not counted.
    let cache = cache_dir("revision");
    let mut other = Fake::new(respond());
    other.setup.default_series = false;
    other.setup.origin = "mbox /tmp/v4.mbox".into();
    other.build_fails.insert("p4-hang".into(), Built::NotApply);
    let (out, t) = run_gate(&mut other, &cache, &all, &chosen).unwrap();
    assert!(
        out.contains("ok - p4-hang: does not apply to this revision (mbox /tmp/v4.mbox) # SKIP"),
        "{out}"
    );
    assert_eq!(t.line(), "caught 1 of 1");
    assert!(t.passed());
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn a_named_known_survivor_must_still_survive() {
    let all = set();
    let chosen: Vec<&Mutant> = all.iter().filter(|m| m.name == "p3-survivor").collect();
    let cache = cache_dir("survivor");
    let mut bench = Fake::new(respond());
    let (out, t) = run_gate(&mut bench, &cache, &all, &chosen).unwrap();
    assert_eq!(
        untimed(&out),
        ["ok - p3-survivor: known survivor, still survives its check (debug --suite ublk_zc_faults cancel_punted_lend; build 0 s, run 0 s)"]
    );
    assert_eq!(t.line(), "caught 0 of 0");
    assert!(t.passed());
    assert_eq!(bench.runs[0].0, "baseline-debug");

    let cache = cache_dir("survivor-caught");
    let mut bench = Fake::new(Box::new(|n: &str, run: &Run| match n {
        "baseline-debug" => 0,
        _ => {
            std::fs::write(
                run.dir.join("results/suite-debug.xml"),
                junit("debug", "ublk_zc_faults", &["cancel_punted_lend"]),
            )
            .unwrap();
            1
        }
    }));
    let (out, t) = run_gate(&mut bench, &cache, &all, &chosen).unwrap();
    assert_eq!(
        out,
        "not ok - p3-survivor: a known survivor is caught now, by ublk_zc_faults::cancel_punted_lend: drop its known-survivor line\n"
    );
    assert!(!t.passed());
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn the_verdicts_status_drives_the_count() {
    let all = set();
    let chosen: Vec<&Mutant> = all.iter().filter(|m| m.name == "p4-survives").collect();
    let cache = cache_dir("count");
    let mut out = Vec::new();
    let mut bench = Fake::new(respond());
    let vs = Gate {
        bench: &mut bench,
        cache: cache.clone(),
        out: &mut out,
    }
    .run(&all, &chosen)
    .unwrap();
    let st: Vec<(String, Status)> = vs.iter().map(|v| (v.name.clone(), v.status)).collect();
    assert_eq!(
        st,
        [
            ("p3-survivor".to_string(), Status::NotRun),
            ("p4-survives".to_string(), Status::Survived)
        ]
    );
    let x = super::report::junit(&vs, 0.0);
    assert!(
        x.contains("name=\"p3-survivor\">\n      <skipped message=\"a race no test can time\"/>"),
        "{x}"
    );
    assert!(
        x.contains("name=\"p4-survives\">\n      <failure message=\"SURVIVED: its check passed"),
        "{x}"
    );
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn baseline_arguments_are_a_union() {
    let a = mutant("a", "suite --suite s1 t1 t2", false);
    let b = mutant("b", "suite --suite s2 t2 --suite s1 t3", false);
    let c = mutant("c", "debug --suite s3 t4", false);
    let chosen = [&a, &b, &c];
    assert_eq!(
        baseline_args(&chosen, super::header::Kind::Suite),
        ["--suite", "s1", "--suite", "s2", "t1", "t2", "t3"]
    );
    assert_eq!(
        baseline_args(&chosen, super::header::Kind::Debug),
        ["--suite", "s3", "t4"]
    );
    assert!(baseline_args(&chosen, super::header::Kind::Uapi).is_empty());
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: super::MutantsArgs,
}

fn parse(argv: &[&str]) -> Result<super::MutantsArgs, clap::Error> {
    use clap::Parser;
    Cli::try_parse_from(std::iter::once("mutants").chain(argv.iter().copied())).map(|c| c.args)
}

#[test]
fn the_options_of_scripts_mutants_sh() {
    use super::select::Selection;
    assert_eq!(parse(&[]).unwrap().selection(), Selection::Sample(3));
    assert_eq!(
        parse(&["--sample", "5"]).unwrap().selection(),
        Selection::Sample(5)
    );
    assert_eq!(parse(&["--all"]).unwrap().selection(), Selection::All);
    assert_eq!(
        parse(&["p4-a", "p1-b.patch"]).unwrap().selection(),
        Selection::Named(vec!["p4-a".into(), "p1-b.patch".into()])
    );
    let l = parse(&["--list-markdown"]).unwrap();
    assert!(l.list_markdown && !l.list);
    assert!(parse(&["--all", "p4-a"]).is_err());
    assert!(parse(&["--sample", "2", "p4-a"]).is_err());
    assert!(parse(&["--sample", "x"]).is_err());
    assert!(parse(&["--bogus"]).is_err());
    assert_eq!(
        parse(&["--junit", "/tmp/j.xml"]).unwrap().junit.as_deref(),
        Some(Path::new("/tmp/j.xml"))
    );
}
