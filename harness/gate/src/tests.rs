//! The gate run on fake step tables: small shell scripts stand for the steps' programs and
//! for the suite in the guest, so that no kernel is needed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::junit;
use crate::report::{self, RowStatus};
use crate::run::{judge, Ended, Exit, Gate, Revision, Summary};
use crate::steps::{Cmd, Role, Step};
use crate::xml::Elem;

/// scripts/lib.sh of this checkout: the fake programs use its junit_case, as the real
/// ones do.
fn lib_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib.sh")
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("gate-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp dir");
        Tmp(d)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bash step program: `script` runs after lib.sh is sourced and junit_begin.
fn bash(script: &str) -> Cmd {
    Cmd::new([
        "bash".to_string(),
        "-c".into(),
        format!("set -euo pipefail; . \"$0\"; junit_begin\n{script}"),
        lib_sh().display().to_string(),
    ])
}

struct FakeRevision {
    readable: bool,
    resolved: usize,
}

impl Revision for FakeRevision {
    fn resolve(&mut self) -> anyhow::Result<String> {
        self.resolved += 1;
        Ok("fake series".into())
    }
    fn describe(&self, readable: bool) -> String {
        if readable && self.readable {
            "revision: fake series\nseries hash: 0123456789abcdef (2 patches on the base)\nbase: linux-source-6.1 6.1.0-fake\npatch 1/2: one\npatch 2/2: two\n".into()
        } else {
            "revision: unreadable: /nowhere\n".into()
        }
    }
}

fn gate(tmp: &Tmp, steps: Vec<Step>, filters: &[&str]) -> Gate {
    Gate {
        steps,
        filters: filters.iter().map(|s| s.to_string()).collect(),
        logs: tmp.0.join("logs"),
        report: tmp.0.join("report"),
        lane: "fast".into(),
        meta: vec![
            ("installed".into(), "linux-source-6.1 6.1.0-fake".into()),
            ("measured".into(), "6.1.0-fake".into()),
            ("kernel_src".into(), String::new()),
            ("cpus".into(), "2".into()),
        ],
        cwd: tmp.0.clone(),
    }
}

fn run(g: &Gate, readable: bool) -> (Summary, String) {
    let mut rev = FakeRevision {
        readable,
        resolved: 0,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let sum = g.run(&mut rev, &mut out, &mut err).expect("the gate runs");
    (sum, String::from_utf8_lossy(&out).into_owned())
}

fn ok_step(name: &str) -> Step {
    Step::plain(name, Cmd::new(["true"]))
}

fn row<'a>(s: &'a Summary, name: &str) -> &'a report::Row {
    s.rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {:?}", s.rows))
}

fn table(apply_ok: bool) -> Vec<Step> {
    vec![
        ok_step("series: read the revision").role(Role::Revision),
        ok_step("rust: fmt"),
        Step::plain(
            "series: apply the revision on the base",
            Cmd::new([if apply_ok { "true" } else { "false" }]),
        )
        .needs_tree()
        .role(Role::Apply),
        ok_step("base: no tree needed"),
        ok_step("kernel: build base").needs_tree(),
        Step::counted(
            "series: checks",
            bash("echo 'ok - one'; junit_case one pass; junit_case two pass"),
        )
        .needs_tree(),
    ]
}

#[test]
fn all_steps_pass_and_count() {
    let tmp = Tmp::new("pass");
    let g = gate(&tmp, table(true), &[]);
    let (sum, out) = run(&g, true);
    assert_eq!((sum.passed, sum.failed), (7, 0), "{out}");
    assert_eq!(row(&sum, "series: checks").passed, 2);
    assert!(
        out.contains("    ok - one\n    ok - two\nPASS series: checks: 2 passed ("),
        "{out}"
    );
    assert!(out.ends_with("7 passed, 0 failed\n"), "{out}");
    // the revision is described after the apply step and at the end
    assert_eq!(
        out.matches("    revision: fake series\n").count(),
        2,
        "{out}"
    );
    let tsv = std::fs::read_to_string(g.report.join("steps.tsv")).expect("steps.tsv");
    assert_eq!(tsv.lines().count(), 6);
    assert!(
        tsv.starts_with("series: read the revision\tpass\t1\t0\t"),
        "{tsv}"
    );
    let meta = std::fs::read_to_string(g.report.join("meta.tsv")).expect("meta.tsv");
    assert!(meta.starts_with("lane\tfast\nseconds\t"), "{meta}");
    assert!(meta.contains("\npassed\t7\nfailed\t0\ninstalled\tlinux-source-6.1 6.1.0-fake\n"));
    for f in ["junit.xml", "summary.md", "revision.txt"] {
        assert!(g.report.join(f).exists(), "{f}");
    }
}

#[test]
fn steps_after_a_failed_apply_are_skipped_with_the_reason() {
    let tmp = Tmp::new("apply");
    let g = gate(&tmp, table(false), &[]);
    let (sum, out) = run(&g, true);
    assert_eq!((sum.passed, sum.failed), (3, 1), "{out}");
    assert_eq!(sum.failures, ["series: apply the revision on the base"]);
    let why = "the revision does not apply (see the apply step)";
    for name in ["kernel: build base", "series: checks"] {
        let r = row(&sum, name);
        assert_eq!((r.status, r.reason.as_str()), (RowStatus::Skip, why));
        assert!(out.contains(&format!("SKIP {name}: {why}\n")), "{out}");
    }
    // a step that does not need the tree still runs
    assert_eq!(row(&sum, "base: no tree needed").status, RowStatus::Pass);
    assert!(out.contains("failed: series: apply the revision on the base\n"));
    assert!(out.ends_with("3 passed, 1 failed\n"), "{out}");
}

#[test]
fn an_unreadable_revision_skips_everything_that_needs_it() {
    let tmp = Tmp::new("unreadable");
    let mut steps = table(true);
    steps[0] = Step::plain(
        "series: read the revision",
        Cmd::new(["sh", "-c", "echo 'ERROR: --range wants A..B'; exit 1"]),
    )
    .role(Role::Revision);
    let g = gate(&tmp, steps, &[]);
    let (sum, out) = run(&g, false);
    let why = "the revision cannot be read (see the step series: read the revision)";
    for name in [
        "series: apply the revision on the base",
        "kernel: build base",
        "series: checks",
    ] {
        assert_eq!(row(&sum, name).reason, why, "{out}");
    }
    assert_eq!(row(&sum, "rust: fmt").status, RowStatus::Pass);
    // the failure names the error line of its log
    assert!(
        out.contains("    failing: ERROR: --range wants A..B\n"),
        "{out}"
    );
    let rev = std::fs::read_to_string(g.report.join("revision.txt")).expect("revision.txt");
    assert_eq!(rev, "revision: unreadable: /nowhere\n");
}

#[test]
fn prefixes_select_steps_and_the_revision_is_always_read() {
    let tmp = Tmp::new("select");
    let g = gate(&tmp, table(true), &["kernel:", "series: ch"]);
    let mut rev = FakeRevision {
        readable: true,
        resolved: 0,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let sum = g.run(&mut rev, &mut out, &mut err).expect("runs");
    let names: Vec<&str> = sum.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "series: read the revision",
            "kernel: build base",
            "series: checks"
        ]
    );
    assert_eq!(rev.resolved, 1);
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("==> gate: fake series, lane fast, reports in "),
        "{err}"
    );
    // revision.txt is written even though the apply step was not selected
    assert!(g.report.join("revision.txt").exists());
    let meta = std::fs::read_to_string(g.report.join("meta.tsv")).expect("meta");
    assert!(meta.contains("\nfilters\tkernel: series: ch\n"), "{meta}");
}

/// The fake suite: a counted step whose program fails one case, one that hangs past its
/// timeout, and a guest run that ends as vmrun does on a kernel crash (exit 125).
#[test]
fn fake_suite_verdicts_counts_and_messages() {
    let tmp = Tmp::new("fake");
    let runs = tmp.0.join("runs");
    // A stand-in for run-qemu.sh running the suite: it writes the suite's JUnit in the
    // run directory, then exits with the status vmrun would.
    let guest = |name: &str, xml: &str, status: i32| {
        let dir = runs.join(name);
        let cmd = Cmd {
            fresh: Some(dir.clone()),
            vm: true,
            ..Cmd::sh(
                &format!("mkdir -p \"$0/results\" && {xml} exit {status}"),
                [dir.display().to_string()],
            )
        };
        Step::guest_run(&format!("suite: {name}"), cmd, dir)
    };
    let suite_xml = |fail: bool| {
        format!(
            "printf '%s' '<testsuites><testsuite name=\"patched.splice\"><testcase classname=\"patched.splice\" name=\"a\"/><testcase classname=\"patched.splice\" name=\"b\">{}</testcase></testsuite></testsuites>' > \"$0/results/suite.xml\";",
            if fail { "<failure message=\"b broke\"/>" } else { "" }
        )
    };
    let mut hang = Step::counted(
        "host: hangs",
        bash("junit_case 'first check' pass; sleep 30; junit_case 'never' pass"),
    );
    hang.timeout = Some(Duration::from_secs(1));
    let steps = vec![
        ok_step("series: read the revision").role(Role::Revision),
        // (a) one case fails
        Step::counted(
            "host: one fails",
            bash("junit_case 'x passes' pass; junit_case 'y <fails> & more' fail 'y: expected 1, got 2'; junit_case 'z passes' pass; exit 1"),
        ),
        // (b) hangs past its timeout
        hang,
        // (c) a kernel crash in the guest: every test passed, vmrun says 125
        guest("crash", &suite_xml(false), 125),
        // a guest run that crashed before writing anything
        guest("nothing", "", 124),
        // a failing test in the guest
        guest("failing", &suite_xml(true), 1),
        // a counted program that writes no JUnit, and one that writes garbage
        Step::counted("host: silent", Cmd::new(["true"])),
        Step::counted("host: garbage", bash("echo '<testsuites><oops' > \"$ZC_JUNIT_FILE\"")),
        // exit 1 with every case passing
        Step::counted("host: exit only", bash("junit_case fine pass; exit 1")),
    ];
    let g = gate(&tmp, steps, &[]);
    let t = Instant::now();
    let (sum, out) = run(&g, true);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the hang was not cut short"
    );

    let r = row(&sum, "host: one fails");
    assert_eq!(
        (r.status, r.passed, r.failed),
        (RowStatus::Fail, 2, 1),
        "{out}"
    );
    assert!(
        out.contains("FAIL host: one fails: 2 passed, 1 failed (log: "),
        "{out}"
    );
    assert!(out.contains("    failing: y <fails> & more\n"), "{out}");

    let r = row(&sum, "host: hangs");
    assert_eq!((r.passed, r.failed), (1, 1), "{out}");
    assert!(r.reason.contains("timed out after 1 s"), "{}", r.reason);
    assert!(
        out.contains("    failing: timed out after 1 s (the gate killed it)\n"),
        "{out}"
    );

    let r = row(&sum, "suite: crash");
    assert_eq!(
        (r.status, r.passed, r.failed),
        (RowStatus::Fail, 2, 1),
        "{out}"
    );
    assert!(r.reason.contains("exit 125"), "{}", r.reason);
    assert!(out.contains("    ok - patched.splice::a\n"), "{out}");

    let r = row(&sum, "suite: nothing");
    assert_eq!((r.passed, r.failed), (0, 1));
    assert!(
        r.reason.contains("the run left no JUnit file in"),
        "{}",
        r.reason
    );
    assert!(
        r.reason
            .contains("vmrun: timeout, the guest was killed (exit 124)"),
        "{}",
        r.reason
    );

    let r = row(&sum, "suite: failing");
    assert_eq!((r.passed, r.failed), (1, 1));
    assert!(out.contains("    not ok - patched.splice::b\n"), "{out}");
    assert!(out.contains("    failing: patched.splice::b\n"), "{out}");

    let r = row(&sum, "host: silent");
    assert_eq!((r.status, r.failed), (RowStatus::Fail, 1));
    assert!(
        r.reason.contains("the step wrote no JUnit file (ZC_JUNIT="),
        "{}",
        r.reason
    );

    let r = row(&sum, "host: garbage");
    assert_eq!((r.status, r.failed), (RowStatus::Fail, 1));
    assert!(r.reason.contains("unreadable JUnit file"), "{}", r.reason);

    let r = row(&sum, "host: exit only");
    assert_eq!((r.passed, r.failed), (1, 1));
    assert_eq!(r.reason, "exit status 1 without a failing check");

    assert_eq!(sum.passed, 1 + 2 + 1 + 2 + 1 + 1);
    assert_eq!(sum.failed, 8);
    assert!(
        out.ends_with(&format!("{} passed, 8 failed\n", sum.passed)),
        "{out}"
    );

    // the merged report holds the guest's cases under the step's name
    let root = junit::read(&g.report.join("junit.xml")).expect("junit.xml");
    let names: Vec<&str> = root
        .find_all("testsuite")
        .filter_map(|s| s.get("name"))
        .collect();
    assert!(
        names.contains(&"suite: failing: patched.splice"),
        "{names:?}"
    );
    assert!(names.contains(&"host: one fails"), "{names:?}");
    let summary = std::fs::read_to_string(g.report.join("summary.md")).expect("summary");
    assert!(
        summary.contains("- suite: crash: `vmrun: the kernel log shows a problem"),
        "{summary}"
    );
}

#[test]
fn a_vm_status_means_nothing_from_another_program() {
    let plain = Ended {
        exit: Exit::Code(125),
        vm: false,
    };
    assert_eq!(plain.reason(), None);
    let v = judge(&plain, None, &[]);
    assert_eq!((v.passed, v.failed), (0, 1));
    assert_eq!(v.reasons, ["exit status 125 without a failing check"]);
    let vm = Ended { vm: true, ..plain };
    assert!(vm.reason().is_some_and(|r| r.contains("kernel log")));
}

/// The report from a fixture: steps.tsv, meta.tsv, revision.txt, a log, a step's own
/// JUnit and a guest run's JUnit give this junit.xml and this summary.md.
#[test]
fn report_from_a_fixture() {
    let tmp = Tmp::new("report");
    let d = &tmp.0;
    let logs = d.join("logs");
    let run = d.join("runs/patched");
    std::fs::create_dir_all(run.join("results")).expect("dirs");
    std::fs::create_dir_all(&logs).expect("dirs");
    let log = |n: &str, text: &str| {
        let p = logs.join(format!("{n}.log"));
        std::fs::write(&p, text).expect("log");
        p.display().to_string()
    };
    let checks_log = log(
        "checks",
        "==> vmrun: accelerator tcg (no /dev/kvm)\nok - a\nnot ok - b\n",
    );
    std::fs::write(
        logs.join("checks.junit.xml"),
        "<testsuites><testsuite name=\"x.sh\"><testcase name=\"a\"/><testcase name=\"b\"><failure message=\"b\"/></testcase></testsuite></testsuites>",
    )
    .expect("junit");
    let suite_log = log(
        "suite",
        "==> vmrun: accelerator tcg (no /dev/kvm)\n221 passed, 0 failed\n",
    );
    std::fs::write(
        run.join("results/suite-patched.xml"),
        "<?xml version=\"1.0\"?>\n<testsuites name=\"ublk-suite (patched)\" tests=\"1\">\n  <testsuite name=\"patched.splice\" tests=\"1\" failures=\"0\" skipped=\"0\" time=\"1.000\">\n    <testcase classname=\"patched.splice\" name=\"t\"/>\n  </testsuite>\n</testsuites>\n",
    )
    .expect("junit");
    let build_log = log(
        "build",
        "fs/splice.c:3:1: error: oops\nmake: *** [x] Error 2\n",
    );
    let tsv = format!(
        "series: read the revision\tpass\t1\t0\t0\t{}\t\t\n\
         host: checks\tfail\t1\t1\t65\t{checks_log}\t\t\n\
         kernel: build base\tfail\t0\t1\t3\t{build_log}\t\t\n\
         suite: patched kernel\tpass\t1\t0\t250\t{suite_log}\t{}\t\n\
         bench: smoke\tskip\t0\t0\t0\t\t\tthe revision does not apply (see the apply step)\n",
        log("read", "patches/ (default): 2 patch(es)\n"),
        run.display()
    );
    let rep = d.join("report");
    std::fs::create_dir_all(&rep).expect("dirs");
    std::fs::write(rep.join("steps.tsv"), tsv).expect("tsv");
    std::fs::write(
        rep.join("meta.tsv"),
        "lane\tfast\nseconds\t330\npassed\t3\nfailed\t2\ninstalled\tlinux-source-6.1 6.1.192-3\nmeasured\t6.1.192-3\nkernel_src\t\ncpus\t2\nfilters\t\ndate\t2026-12-07 23:45 UTC\n",
    )
    .expect("meta");
    std::fs::write(
        rep.join("revision.txt"),
        "revision: patches/ (default)\nseries hash: 40e3e00f148d76bd (2 patches on the base)\nbase: linux-source-6.1 6.1.192-3 (commit 6e5ca4143, tree 597284f8d)\npatch 1/2: fs/splice: one\npatch 2/2: ublk: two\n",
    )
    .expect("revision");
    report::write(&rep).expect("writes");

    let summary = std::fs::read_to_string(rep.join("summary.md")).expect("summary");
    let want = format!(
        "### ublk-splice-zc gate FAILED: 3 passed, 2 failed

| | |
|---|---|
| revision | patches/ (default) |
| series hash | `40e3e00f148d76bd` (2 patches on the base) |
| base | linux-source-6.1 6.1.192-3 (commit 6e5ca4143, tree 597284f8d) |
| Debian package here | linux-source-6.1 6.1.192-3 (the project was last checked on 6.1.192-3) |
| accelerator | tcg (no /dev/kvm) |
| lane | fast |
| host | 2 CPUs, 2026-12-07 23:45 UTC |
| time | 5 min 30 s |

Patches:

1. fs/splice: one
2. ublk: two

| step | result | passed | failed | time |
|---|---|--:|--:|--:|
| series: read the revision | pass | 1 | 0 | 0:00 |
| host: checks | **FAIL** | 1 | 1 | 1:05 |
| kernel: build base | **FAIL** | 0 | 1 | 0:03 |
| suite: patched kernel | pass | 1 | 0 | 4:10 |
| bench: smoke | skipped: the revision does not apply (see the apply step) | | | |

Time by phase: suite 4:10, host 1:05, kernel 0:03, series 0:00, bench 0:00

Failures:

- host: checks: `b` (log: `{checks_log}`)
- kernel: build base: `fs/splice.c:3:1: error: oops` (log: `{build_log}`)

JUnit: `{}`
",
        rep.join("junit.xml").display()
    );
    assert_eq!(summary, want);

    let text = std::fs::read_to_string(rep.join("junit.xml")).expect("junit.xml");
    assert!(text.starts_with("<?xml version='1.0' encoding='UTF-8'?>\n<testsuites name=\"ublk-splice-zc gate\" tests=\"8\" failures=\"3\" skipped=\"1\" time=\"330\">\n  <testsuite name=\"gate: steps\" tests=\"5\" failures=\"2\" skipped=\"1\" time=\"318\">\n    <properties>\n      <property name=\"revision\" value=\"patches/ (default)\" />\n"), "{text}");
    let root = Elem::parse(&text).expect("parses");
    let suites: Vec<&Elem> = root.find_all("testsuite").collect();
    let names: Vec<&str> = suites.iter().filter_map(|s| s.get("name")).collect();
    assert_eq!(
        names,
        [
            "gate: steps",
            "host: checks",
            "suite: patched kernel: patched.splice"
        ]
    );
    let steps = suites[0];
    assert_eq!(
        (
            steps.get("tests"),
            steps.get("failures"),
            steps.get("skipped"),
            steps.get("time")
        ),
        (Some("5"), Some("2"), Some("1"), Some("318"))
    );
    let props: Vec<(&str, &str)> = steps
        .first("properties")
        .expect("properties")
        .children
        .iter()
        .map(|p| (p.get("name").unwrap_or(""), p.get("value").unwrap_or("")))
        .collect();
    assert_eq!(props[0], ("revision", "patches/ (default)"));
    assert_eq!(props[4], ("lane", "fast"));
    assert_eq!(props[5], ("accelerator", "tcg (no /dev/kvm)"));
    assert_eq!(props[7], ("patch 2/2", "ublk: two"));
    let cases = junit::cases(steps);
    assert_eq!(cases[1].message, "1 failed: b");
    assert_eq!(cases[2].message, "1 failed: fs/splice.c:3:1: error: oops");
    assert_eq!(cases[4].status, junit::Status::Skip);
    // a step's own checks get the class of their phase and the log in their message
    let own = junit::cases(suites[1]);
    assert_eq!(own[1].full_name(), "gate.host::b");
    assert_eq!(own[1].message, format!("b (log: {checks_log})"));
    assert_eq!(junit::cases(suites[2])[0].full_name(), "patched.splice::t");
    let gate_steps_case = steps.find_all("testcase").nth(1).expect("case");
    assert_eq!(
        gate_steps_case
            .first("system-out")
            .and_then(|s| s.text.as_deref()),
        Some(format!("log: {checks_log}").as_str())
    );
}

/// The control run: the suite fails tests on the base kernel by design, so its exit status
/// does not fail the step, the TAP check after it does; a timed-out guest still fails it.
#[test]
fn a_program_that_may_fail_leaves_the_verdict_to_the_next() {
    let tmp = Tmp::new("mayfail");
    let tap = tmp.0.join("suite-base.tap");
    let guest = |status: i32, writes: bool| Cmd {
        may_fail: true,
        vm: true,
        ..Cmd::sh(
            &format!(
                "{} exit {status}",
                if writes {
                    "echo 'not ok 1 - x' > \"$0\";"
                } else {
                    ""
                }
            ),
            [tap.display().to_string()],
        )
    };
    let check = || {
        Cmd::sh(
            r#"[ -s "$0" ] || { echo "the control run left no TAP file"; exit 1; }"#,
            [tap.display().to_string()],
        )
    };
    let steps = vec![
        ok_step("series: read the revision").role(Role::Revision),
        Step::plain("suite: fails tests", guest(1, true)).then(check()),
        Step::plain(
            "suite: no tap",
            Cmd::sh("rm -f \"$0\"", [tap.display().to_string()]),
        )
        .then(guest(1, false))
        .then(check()),
        Step::plain("suite: timeout", guest(124, true)).then(check()),
    ];
    let g = gate(&tmp, steps, &[]);
    let (sum, out) = run(&g, true);
    assert_eq!(
        row(&sum, "suite: fails tests").status,
        RowStatus::Pass,
        "{out}"
    );
    assert_eq!(row(&sum, "suite: no tap").status, RowStatus::Fail, "{out}");
    let r = row(&sum, "suite: timeout");
    assert_eq!(r.status, RowStatus::Fail, "{out}");
    assert_eq!(r.reason, "vmrun: timeout, the guest was killed (exit 124)");
}

/// lib.sh's junit_begin hides ZC_JUNIT from the programs a script runs, so that a counted
/// script calling another one does not get its checks written into its file.
#[test]
fn a_scripts_children_do_not_see_its_junit_file() {
    let tmp = Tmp::new("hide");
    let steps = vec![
        ok_step("series: read the revision").role(Role::Revision),
        Step::counted(
            "host: nested",
            bash("junit_case \"children see it: $(env | grep -c '^ZC_JUNIT=' || true)\" pass"),
        ),
    ];
    let g = gate(&tmp, steps, &[]);
    let (sum, out) = run(&g, true);
    assert_eq!(row(&sum, "host: nested").passed, 1, "{out}");
    assert!(out.contains("    ok - children see it: 0\n"), "{out}");
}
