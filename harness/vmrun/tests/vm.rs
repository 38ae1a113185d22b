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

/// A `vmrun run --shell` whose console the test types into and reads.
struct ShellSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    /// Everything on vmrun's stdout so far (the console).
    out: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// How far [`ShellSession::expect`] has read.
    seen: usize,
}

impl ShellSession {
    fn start(name: &str) -> ShellSession {
        use std::io::Read;
        use std::process::Stdio;
        let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-{name}"));
        let _ = std::fs::remove_dir_all(&results);
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .arg("run")
            .arg("--kernel")
            .arg(kernel())
            .args(["--timeout", "180", "--mem", "1024", "--disk-size", "0"])
            .arg("--results")
            .arg(&results)
            .arg("--shell")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting vmrun --shell");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("vmrun's stdout");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                eprint!("{text}");
                sink.lock().unwrap().push_str(&text);
            }
        });
        ShellSession {
            child,
            stdin,
            out,
            reader: Some(reader),
            seen: 0,
        }
    }

    /// Waits until `needle` shows up on the console after what was already seen.
    fn expect(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            {
                let out = self.out.lock().unwrap();
                if let Some(pos) = out[self.seen..].find(needle) {
                    self.seen += pos + needle.len();
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not show up on the console within {within:?}; after what was seen:\n{}",
                &self.out.lock().unwrap()[self.seen..]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` on the console.
    fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("the console is still open");
        stdin
            .write_all(text.as_bytes())
            .expect("typing on the console");
        stdin.flush().expect("typing on the console");
    }

    /// Waits for vmrun to end: its exit code and the whole console.
    fn finish(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("waiting for vmrun") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("vmrun --shell did not end within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        drop(self.stdin.take());
        if let Some(r) = self.reader.take() {
            r.join().expect("the console reader");
        }
        let out = self.out.lock().unwrap().clone();
        (status.code(), out)
    }

    /// Boots and waits for the shell's first prompt (a root prompt ends with "# ").
    fn boot(name: &str) -> ShellSession {
        let mut s = ShellSession::start(name);
        s.expect("vmrun: start", Duration::from_secs(120));
        s.expect("# ", Duration::from_secs(30));
        s
    }
}

#[test]
fn shell_runs_what_is_typed_and_powers_off() {
    let mut s = ShellSession::boot("shell");
    // The typed line is echoed as it is; only the shell's output has 42.
    s.send("echo $((6*7))-marker\n");
    s.expect("42-marker", Duration::from_secs(30));
    // A controlling terminal: tty names the serial port, ctrl-c interrupts the job in the
    // foreground (else the next echo would wait 300 s), and job control works.
    s.send("tty; tty -s && echo stdin-is-a-$((2*2))tty\n");
    s.expect("/dev/ttyS0", Duration::from_secs(30));
    s.expect("stdin-is-a-4tty", Duration::from_secs(30));
    s.send("sleep 300\n");
    std::thread::sleep(Duration::from_secs(2));
    s.send("\x03");
    s.send("echo $((6*8))-after-ctrl-c\n");
    s.expect("48-after-ctrl-c", Duration::from_secs(30));
    s.send("sleep 300 & jobs\n");
    s.expect("Running", Duration::from_secs(30));
    // The same mounts and results directory as a command gets.
    s.send("echo from-the-shell > \"$VMRUN_RESULTS/shell.txt\"; test -d /sys/kernel/tracing/events && echo $((7*7))-tracefs\n");
    s.expect("49-tracefs", Duration::from_secs(30));
    s.send("poweroff\n");
    let (code, out) = s.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "poweroff ends the VM cleanly");
    assert!(out.contains("vmrun: power-off requested"), "{out}");
    assert!(out.contains("reboot: Power down"), "{out}");
    let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-shell");
    assert_eq!(
        std::fs::read_to_string(results.join("results/shell.txt")).expect("the shell's file"),
        "from-the-shell\n"
    );
    let cmdline = std::fs::read_to_string(results.join("qemu.cmdline")).expect("qemu.cmdline");
    assert!(
        cmdline.contains("-chardev stdio,id=console,mux=on,signal=off"),
        "{cmdline}"
    );
}

#[test]
fn leaving_the_shell_ends_the_vm_with_its_status() {
    let mut s = ShellSession::boot("shell-exit");
    s.send("exit 3\n");
    let (code, out) = s.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "the shell's exit status");
    assert!(out.contains("vmrun: exit-status 3"), "{out}");
}

#[test]
fn every_run_keeps_its_qemu_command_line() {
    let r = vmrun("cmdline", 120, &["true"]);
    assert_eq!(r.code, Some(0));
    let cmdline = std::fs::read_to_string(r.results.join("qemu.cmdline")).expect("qemu.cmdline");
    assert!(
        cmdline.ends_with('\n') && cmdline.lines().count() == 1,
        "{cmdline:?}"
    );
    let kernel = kernel().canonicalize().unwrap();
    assert!(
        cmdline.contains(&format!(" -kernel {} ", kernel.display())),
        "{cmdline}"
    );
    assert!(cmdline.contains(" -serial stdio "), "{cmdline}");
    assert!(
        cmdline.contains("-drive file=/proc/self/fd/3,"),
        "{cmdline}"
    );
}

#[test]
fn kernel_build_directory_is_accepted() {
    // An O= directory: the image is arch/x86/boot/bzImage in it.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-kbuild");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("arch/x86/boot")).unwrap();
    std::os::unix::fs::symlink(
        kernel().canonicalize().unwrap(),
        dir.join("arch/x86/boot/bzImage"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(["run", "--timeout", "120", "--disk-size", "0", "--kernel"])
        .arg(&dir)
        .args(["--results"])
        .arg(dir.join("run"))
        .args(["--", "uname", "-r"])
        .output()
        .expect("running vmrun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("6.1.")), "{stdout}");
}

#[test]
fn sysvinit_poweroff_request_powers_off() {
    // What systemctl's /sbin/poweroff writes when systemd is not PID 1: a runlevel 0
    // init_request on /run/initctl.
    let mut s = ShellSession::boot("shell-initctl");
    s.send(
        "python3 -c \"import struct; open('/run/initctl', 'wb').write(\
         struct.pack('iiii368x', 0x03091969, 1, ord('0'), 0))\"\n",
    );
    let (code, out) = s.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("vmrun: power-off requested (runlevel 0 on /run/initctl)"),
        "{out}"
    );
}

#[test]
fn dry_run_shows_the_command_line_a_run_uses() {
    let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-dry-run");
    let _ = std::fs::remove_dir_all(&results);
    let args = |dry: bool| {
        let mut a: Vec<std::ffi::OsString> = vec!["run".into(), "--kernel".into()];
        a.push(kernel().into());
        a.extend(
            [
                "--mem",
                "1024",
                "--disk-size",
                "64M",
                "--append",
                "vmrun_test=1",
            ]
            .map(Into::into),
        );
        a.push("--results".into());
        a.push(results.clone().into());
        if dry {
            a.push("--dry-run".into());
        }
        a.extend(["--", "true"].map(Into::into));
        a
    };
    let dry = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(args(true))
        .output()
        .expect("vmrun --dry-run");
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        !results.exists(),
        "a dry run boots nothing and creates nothing"
    );
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    let line = dry
        .lines()
        .skip_while(|l| !l.starts_with("# QEMU command line"))
        .nth(1)
        .expect("the QEMU line")
        .to_string();
    let real = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(args(false))
        .output()
        .expect("vmrun");
    assert_eq!(real.status.code(), Some(0));
    let kept = std::fs::read_to_string(results.join("qemu.cmdline")).expect("qemu.cmdline");
    assert_eq!(
        kept,
        format!("{line}\n"),
        "the dry run's line is the real one"
    );
}

#[test]
fn guest_clock_keeps_time() {
    // The guest's clock must run at the host's pace: a TSC calibrated wrong (as the
    // emulated PIT does on a loaded host) makes it race, and every timeout with it.
    let r = vmrun(
        "clock",
        120,
        &["sh", "-c", "sleep 5; cat /proc/uptime; date +%s"],
    );
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(r.code, Some(0));
    let out = r.command_output();
    let uptime: f64 = out
        .iter()
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .expect("the guest's uptime");
    let date: f64 = out
        .iter()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .expect("the guest's date");
    let wall = r.elapsed.as_secs_f64();
    assert!(
        uptime >= 5.0 && uptime <= wall + 1.0,
        "guest uptime {uptime:.1} s, but the whole run took {wall:.1} s"
    );
    assert!(
        (host_now - date).abs() <= 10.0,
        "guest date {date} vs host {host_now:.0}"
    );
}

#[test]
fn ctrl_a_x_kills_qemu_from_the_shell() {
    let mut s = ShellSession::boot("shell-ctrl-a-x");
    s.send("\x01x");
    let (code, out) = s.finish(Duration::from_secs(60));
    assert_eq!(code, Some(123), "the VM did not power off: a VM failure");
    assert!(out.contains("QEMU: Terminated"), "{out}");
    assert!(!out.contains("vmrun: exit-status"), "{out}");
}
