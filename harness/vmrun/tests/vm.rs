//! VM tests: run the built `vmrun` binary against a real kernel.
//!
//! The kernel comes from `VMRUN_TEST_KERNEL` (a bzImage). Without it these tests FAIL:
//! they never pass or skip silently. `VMRUN_TEST_EXPECT_RELEASE_SUFFIX` (e.g. `-ublkzc`),
//! if set, is what the guest's `uname -r` must end with.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn kernel() -> PathBuf {
    let Some(k) = std::env::var_os("VMRUN_TEST_KERNEL").filter(|k| !k.is_empty()) else {
        panic!(
            "VMRUN_TEST_KERNEL is not set: the VM tests need a kernel image \
             (e.g. VMRUN_TEST_KERNEL=$(scripts/build-kernel.sh patched))"
        );
    };
    let k = PathBuf::from(k);
    assert!(
        k.is_file(),
        "VMRUN_TEST_KERNEL={} is not a file",
        k.display()
    );
    k
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    results: PathBuf,
}

impl Run {
    /// What the command printed: the console lines between init's start and exit markers.
    fn command_output(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .skip_while(|l| !l.starts_with("vmrun: start"))
            .skip(1)
            .take_while(|l| !l.starts_with("vmrun: exit-status"))
            .filter(|l| !l.starts_with('['))
            .collect()
    }
}

fn vmrun(name: &str, timeout_secs: u32, cmd: &[&str]) -> Run {
    let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-{name}"));
    let _ = std::fs::remove_dir_all(&results);
    let start = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .arg("run")
        .arg("--kernel")
        .arg(kernel())
        .args([
            "--timeout",
            &timeout_secs.to_string(),
            "--mem",
            "1024",
            "--disk-size",
            "256M",
        ])
        .arg("--results")
        .arg(&results)
        .arg("--")
        .args(cmd)
        .output()
        .expect("running vmrun");
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
        results,
    };
    eprintln!(
        "--- vmrun {cmd:?}: {:?} in {:.1} s\n--- stdout:\n{}--- stderr:\n{}",
        run.code,
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    run
}

#[test]
fn true_exits_zero() {
    let r = vmrun("true", 120, &["true"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stderr.contains("verdict      clean"));
    assert!(r.results.join("console.log").is_file());
}

#[test]
fn exit_status_is_passed_through() {
    let r = vmrun("exit7", 120, &["sh", "-c", "exit 7"]);
    assert_eq!(r.code, Some(7));
}

#[test]
fn guest_panic_fails_and_says_so() {
    let r = vmrun(
        "panic",
        120,
        &["sh", "-c", "echo c > /proc/sysrq-trigger; sleep 30"],
    );
    assert_eq!(r.code, Some(125), "a kernel panic is exit status 125");
    assert!(r
        .stdout
        .contains("Kernel panic - not syncing: sysrq triggered crash"));
    assert!(
        r.stderr.contains("kernel panic"),
        "the verdict names the panic"
    );
    assert!(
        r.elapsed < Duration::from_secs(60),
        "panic=-1 and -no-reboot end QEMU at once"
    );
}

#[test]
fn timeout_kills_the_vm() {
    let r = vmrun("timeout", 20, &["sleep", "600"]);
    assert_eq!(r.code, Some(124));
    assert!(r.stderr.contains("timeout after 20 s"));
    assert!(r.elapsed < Duration::from_secs(60), "took {:?}", r.elapsed);
}

#[test]
fn guest_runs_the_expected_kernel() {
    let r = vmrun("uname", 120, &["uname", "-r"]);
    assert_eq!(r.code, Some(0));
    let out = r.command_output();
    let release = out
        .iter()
        .find(|l| !l.trim().is_empty())
        .expect("uname printed nothing")
        .trim();
    assert!(
        release.starts_with("6.1."),
        "guest kernel release {release:?} is not 6.1.x"
    );
    if let Some(suffix) =
        std::env::var_os("VMRUN_TEST_EXPECT_RELEASE_SUFFIX").filter(|s| !s.is_empty())
    {
        let suffix = suffix.to_string_lossy();
        assert!(
            release.trim_end_matches('+').ends_with(suffix.as_ref()),
            "guest kernel release {release:?} does not end with {suffix:?}"
        );
    }
}

#[test]
fn guest_environment() {
    let script = r#"
        set -e
        test "$(id -u)" = 0
        test "$HOME" = /tmp
        test -b "$VMRUN_SCRATCH_DISK"
        test -d /sys/kernel/tracing/events
        test -d /sys/kernel/debug
        touch /tmp/w /run/w /dev/shm/w
        ! touch /etc/vmrun-ro-check 2>/dev/null
        test "$(pwd)" = "$EXPECT_CWD"
        echo hello > "$VMRUN_RESULTS/out.txt"
    "#;
    let cwd = std::env::current_dir().unwrap();
    let r = vmrun(
        "env",
        120,
        &[
            "env",
            &format!("EXPECT_CWD={}", cwd.display()),
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(r.code, Some(0));
    let out = std::fs::read_to_string(r.results.join("results/out.txt"))
        .expect("the guest's result file");
    assert_eq!(out, "hello\n");
}
