//! `gate cargo-tests [CARGO-TEST-ARGS...]`: Cargo's tests, judged by exit statuses.
//!
//! The tests are built with `cargo test --no-run --message-format=json-render-diagnostics`
//! (Cargo's machine interface names each test executable), and each executable is run as
//! `cargo test` would run it (in its package's directory). An executable that exits 0
//! passed every test it lists (`--list --format terse`) except the ignored ones (`--list
//! --ignored`); one that fails is run again test by test (`--exact NAME`), each judged by
//! its own exit status, to name the failing ones. The results go to `$ZC_JUNIT` (one
//! `<testsuite>` per executable), the programs' own output to stdout and stderr, for the
//! log. Nothing of libtest's human output is read.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::junit::{self, Case, Status};

/// One test executable Cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestExe {
    pub package: String,
    /// The target's name and kind (`lib`, `bin`, `test`, ...).
    pub target: String,
    pub kind: String,
    pub path: PathBuf,
    /// The package's directory (where `cargo test` runs the executable).
    pub dir: PathBuf,
}

impl TestExe {
    /// The class name of its cases: `package::target` (`vmrun::vm`).
    pub fn class(&self) -> String {
        format!("{}::{}", self.package.replace('-', "_"), self.target)
    }
}

/// The test executables in Cargo's JSON messages (one JSON object a line), in order, once
/// each.
pub fn executables(json_lines: &str) -> Result<Vec<TestExe>> {
    let mut out: Vec<TestExe> = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("cargo's message {line}"))?;
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = PathBuf::from(v["manifest_path"].as_str().unwrap_or(""));
        let package = v["package_id"]
            .as_str()
            .map(package_name)
            .unwrap_or_default();
        let kind = v["target"]["kind"][0].as_str().unwrap_or("").to_string();
        let t = TestExe {
            package,
            target: v["target"]["name"].as_str().unwrap_or("").to_string(),
            kind,
            path: exe.into(),
            dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        if !out.iter().any(|o| o.path == t.path) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The package's name in a package id: `path+file:///w/harness/vmrun#0.1.0` (the
/// directory's name, or `#name@version`), `registry+...#name@1.0`, or the older
/// `name 0.1.0 (path+file:///...)`.
fn package_name(id: &str) -> String {
    if let Some((head, frag)) = id.rsplit_once('#') {
        if let Some((name, _)) = frag.split_once('@') {
            return name.to_string();
        }
        return head.rsplit('/').next().unwrap_or(head).to_string();
    }
    id.split(' ').next().unwrap_or(id).to_string()
}

/// The tests of `--list --format terse` output (`NAME: test` lines; benches are not tests).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

fn command(exe: &TestExe) -> Command {
    let mut c = Command::new(&exe.path);
    c.current_dir(&exe.dir)
        .env("CARGO_MANIFEST_DIR", &exe.dir)
        .env("CARGO_PKG_NAME", &exe.package)
        .env_remove(junit::ENV)
        .stdin(Stdio::null());
    c
}

fn list(exe: &TestExe, ignored: bool) -> Result<Vec<String>> {
    let mut c = command(exe);
    c.args(["--list", "--format", "terse"]);
    if ignored {
        c.arg("--ignored");
    }
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("listing the tests of {}", exe.path.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} --list failed ({})", exe.path.display(), out.status);
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs one executable and judges its tests.
pub fn run_exe(exe: &TestExe) -> Result<Vec<Case>> {
    let class = exe.class();
    let case = |name: &str, status, msg: &str| Case {
        classname: class.clone(),
        ..Case::new(name, status, msg)
    };
    let all = list(exe, false)?;
    let ignored = list(exe, true)?;
    let tests: Vec<&String> = all.iter().filter(|t| !ignored.contains(t)).collect();
    println!(
        "==> {} ({} {}): {} tests, {} ignored: {}",
        class,
        exe.kind,
        exe.target,
        tests.len(),
        all.len() - tests.len(),
        exe.path.display()
    );
    let status = command(exe)
        .status()
        .with_context(|| format!("running {}", exe.path.display()))?;
    let mut cases: Vec<Case> = ignored
        .iter()
        .filter(|t| all.contains(t))
        .map(|t| case(t, Status::Skip, "ignored"))
        .collect();
    if status.success() {
        cases.extend(tests.iter().map(|t| case(t, Status::Pass, "")));
        return Ok(cases);
    }
    println!(
        "==> {class} failed ({status}): running its tests one by one to name the failing ones"
    );
    let mut failed = 0;
    for t in &tests {
        let st = command(exe)
            .args(["--exact", t.as_str()])
            .status()
            .with_context(|| format!("running {} --exact {t}", exe.path.display()))?;
        if st.success() {
            cases.push(case(t, Status::Pass, ""));
        } else {
            failed += 1;
            cases.push(case(t, Status::Fail, &format!("{t} fails alone ({st})")));
        }
    }
    if failed == 0 {
        let what = format!(
            "{} failed ({status}), though each of its tests passes alone",
            exe.path.display()
        );
        cases.push(case("(the whole executable)", Status::Fail, &what));
    }
    Ok(cases)
}

/// `gate cargo-tests ARGS...`: 0 when everything built and passed.
pub fn main(args: &[OsString]) -> Result<i32> {
    let junit_file = std::env::var_os(junit::ENV).map(PathBuf::from);
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(args)
        .env_remove(junit::ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!(
        "==> cargo test --no-run {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = build.output().context("running cargo test --no-run")?;
    let exes = executables(&String::from_utf8_lossy(&out.stdout))?;
    let mut suites = Vec::new();
    let mut ok = true;
    if !out.status.success() {
        ok = false;
        let c = Case::new(
            "cargo test --no-run",
            Status::Fail,
            &format!("the tests do not build ({})", out.status),
        );
        suites.push(junit::suite("cargo build", &[c]));
    } else if exes.is_empty() {
        ok = false;
        let c = Case::new(
            "cargo test --no-run",
            Status::Fail,
            "no test executable was built",
        );
        suites.push(junit::suite("cargo build", &[c]));
    }
    let (mut passed, mut failed) = (0, 0);
    for exe in &exes {
        let cases = match run_exe(exe) {
            Ok(c) => c,
            Err(e) => vec![Case {
                classname: exe.class(),
                ..Case::new("(the whole executable)", Status::Fail, &format!("{e:#}"))
            }],
        };
        let (p, f) = junit::count(&cases);
        passed += p;
        failed += f;
        ok &= f == 0;
        suites.push(junit::suite(&exe.class(), &cases));
        if let Some(p) = &junit_file {
            // the file holds every executable so far, should a later one hang
            junit::write(p, suites.clone())?;
        }
    }
    if let Some(p) = &junit_file {
        junit::write(p, suites)?;
    }
    println!(
        "==> cargo tests: {passed} passed, {failed} failed in {} executables",
        exes.len()
    );
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_from_cargo_json() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/harness/vmrun#0.1.0","manifest_path":"/w/harness/vmrun/Cargo.toml","target":{"kind":["test"],"name":"vm"},"profile":{"test":true},"executable":"/w/target/debug/deps/vm-0123"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/harness/vmrun#0.1.0","manifest_path":"/w/harness/vmrun/Cargo.toml","target":{"kind":["bin"],"name":"vmrun"},"profile":{"test":false},"executable":"/w/target/debug/vmrun"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/harness/suite#ublk-suite@0.1.0","manifest_path":"/w/harness/suite/Cargo.toml","target":{"kind":["lib"],"name":"ublk_suite"},"profile":{"test":true},"executable":"/w/target/debug/deps/ublk_suite-4567"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"serde 1.0.0 (registry+https://x)","manifest_path":"/r/serde/Cargo.toml","target":{"kind":["lib"],"name":"serde"},"profile":{"test":false},"executable":null}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        let exes = executables(json).expect("parses");
        assert_eq!(exes.len(), 2);
        assert_eq!(exes[0].class(), "vmrun::vm");
        assert_eq!(exes[0].dir, PathBuf::from("/w/harness/vmrun"));
        assert_eq!(exes[1].class(), "ublk_suite::ublk_suite");
        assert_eq!(exes[1].kind, "lib");
        assert!(executables("{not json").is_err());
    }

    #[test]
    fn package_names() {
        assert_eq!(package_name("path+file:///w/harness/vmrun#0.1.0"), "vmrun");
        assert_eq!(
            package_name("path+file:///w/harness/suite#ublk-suite@0.1.0"),
            "ublk-suite"
        );
        assert_eq!(
            package_name("gate 0.1.0 (path+file:///w/harness/gate)"),
            "gate"
        );
    }

    #[test]
    fn list_is_tests_only() {
        let text = "a::b: test\nc: test\nbench_x: bench\n\n";
        assert_eq!(parse_list(text), ["a::b", "c"]);
    }

    fn fake_exe(dir: &Path, script: &str) -> TestExe {
        std::fs::create_dir_all(dir).expect("tmp");
        let path = dir.join("fake-tests");
        std::fs::write(&path, script).expect("writes");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TestExe {
            package: "fake-pkg".into(),
            target: "fake".into(),
            kind: "test".into(),
            path,
            dir: dir.to_path_buf(),
        }
    }

    /// A libtest stand-in: three tests, one ignored, `two` fails; it answers --list,
    /// --ignored and --exact as libtest does, and prints nothing the gate could count.
    const FAKE: &str = r#"#!/bin/sh
case "$*" in
"--list --format terse") printf 'one: test\ntwo: test\nlater: test\nb: bench\n' ;;
"--list --format terse --ignored") printf 'later: test\n' ;;
"--exact one") exit 0 ;;
"--exact two") exit 101 ;;
"") [ -n "$PASS" ] && exit 0; exit 101 ;;
*) exit 3 ;;
esac
"#;

    #[test]
    fn judges_by_exit_status_and_names_the_failing_test() {
        let dir = std::env::temp_dir().join(format!("gate-cargo-{}", std::process::id()));
        let exe = fake_exe(&dir, &FAKE.replace("$PASS", ""));
        let cases = run_exe(&exe).expect("runs");
        let by = |n: &str| cases.iter().find(|c| c.name == n).expect("case").status;
        assert_eq!(by("one"), Status::Pass);
        assert_eq!(by("two"), Status::Fail);
        assert_eq!(by("later"), Status::Skip);
        assert_eq!(junit::count(&cases), (1, 1));
        assert!(cases.iter().all(|c| c.classname == "fake_pkg::fake"));

        // all pass: the ignored test is not counted, as libtest's "N passed" does not.
        let exe = fake_exe(&dir, &FAKE.replace("$PASS", "yes"));
        assert_eq!(junit::count(&run_exe(&exe).expect("runs")), (2, 0));

        // the whole fails, but each test passes alone: one failure, said so.
        let exe = fake_exe(
            &dir,
            &FAKE
                .replace("exit 101 ;;\n\"\")", "exit 0 ;;\n\"\")")
                .replace("$PASS", ""),
        );
        let cases = run_exe(&exe).expect("runs");
        assert_eq!(junit::count(&cases), (2, 1));
        assert!(
            cases.iter().any(|c| c.message.contains("passes alone")),
            "{cases:?}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
