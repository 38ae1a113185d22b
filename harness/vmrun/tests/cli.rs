//! Host tests of the `vmrun` binary that boot nothing: bad usage, help, `--dry-run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vmrun(args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(args)
        // A QEMU that is never started: a dry run only names it.
        .env("VMRUN_QEMU", "/opt/fake/qemu-system-x86_64")
        .env("TERM", "xterm-256color")
        .output()
        .expect("running vmrun");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A kernel build directory with a (fake) image in it.
fn build_dir(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("arch/x86/boot")).unwrap();
    std::fs::write(out.join("arch/x86/boot/bzImage"), b"not really a kernel").unwrap();
    out
}

/// The line after the comment line `header`.
fn after<'a>(text: &'a str, header: &str) -> &'a str {
    let mut lines = text.lines();
    lines.find(|l| l.starts_with(header)).unwrap_or_else(|| {
        panic!("no {header:?} in:\n{text}");
    });
    lines
        .next()
        .unwrap_or_else(|| panic!("nothing after {header:?}"))
}

#[test]
fn bad_usage_exits_2_and_says_why() {
    for (args, says) in [
        (&["run", "--", "true"][..], "--kernel <PATH>"),
        (&["run", "--kernel", "/k"], "<CMD>"),
        (
            &["run", "--kernel", "/k", "--cpus", "0", "--", "true"],
            "0 is not in 1..=64",
        ),
        (
            &["run", "--kernel", "/k", "--shell", "--", "true"],
            "cannot be used with",
        ),
        (
            &["run", "--kernel", "/k", "--frob", "--", "true"],
            "unexpected argument '--frob'",
        ),
        (&["bogus"], "unrecognized subcommand 'bogus'"),
        (&[], "Usage: vmrun <COMMAND>"),
    ] {
        let (code, stdout, stderr) = vmrun(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {says:?} not in {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn help_exits_0_on_stdout() {
    let (code, stdout, _) = vmrun(&["run", "--help"]);
    assert_eq!(code, Some(0));
    for want in [
        "--dry-run",
        "--shell",
        "-p, --cpus <N>",
        "-m, --mem <SIZE>",
        "-a, --append <ARGS>",
        "-e, --exec <CMD>",
    ] {
        assert!(stdout.contains(want), "{want} not in {stdout}");
    }
}

#[test]
fn dry_run_prints_the_qemu_command_and_the_guest_command() {
    let dir = scratch("dry-run");
    let kdir = build_dir(&dir);
    let results = dir.join("run");
    let (code, stdout, stderr) = vmrun(&[
        "run",
        "--dry-run",
        "--accel",
        "tcg",
        "--kernel",
        kdir.to_str().unwrap(),
        "--cpus",
        "3",
        "--mem",
        "512",
        "--append",
        "foo=bar",
        "--append",
        "x=1,y",
        "--env",
        "GREETING=hello world",
        "--results",
        results.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!results.exists(), "a dry run creates no run directory");
    let image = kdir.join("arch/x86/boot/bzImage");
    let init = Path::new(env!("CARGO_BIN_EXE_vmrun")).with_file_name("vm-init");
    let qemu = after(&stdout, "# QEMU command line");
    let want = "/opt/fake/qemu-system-x86_64 -nodefaults -no-user-config -display none \
                -monitor none -parallel none -vga none -serial stdio -no-reboot \
                -machine q35,accel=tcg -cpu max -smp 3 -m 512M ";
    assert!(qemu.starts_with(want), "{qemu}");
    assert!(
        qemu.contains(&format!(" -kernel {} ", image.display())),
        "{qemu}"
    );
    // One shell word: the kernel command line, ours first, --append last.
    assert!(
        qemu.contains(&format!(
            " -append 'console=ttyS0 loglevel=6 panic=-1 oops=panic root=vmroot rootfstype=9p \
             rootflags=trans=virtio,version=9p2000.L,msize=512000,cache=loose ro init={} ",
            init.display()
        )),
        "{qemu}"
    );
    assert!(qemu.contains(" foo=bar x=1,y' "), "{qemu}");
    assert!(
        qemu.contains(&format!(
            " -fsdev local,id=fsshare,path={},security_model=none,multidevs=remap ",
            results.display()
        )),
        "{qemu}"
    );
    assert!(
        qemu.ends_with(
            " -drive file=/proc/self/fd/3,if=none,id=scratch,format=raw,cache=unsafe,discard=unmap \
             -device virtio-blk-pci,drive=scratch"
        ),
        "{qemu}"
    );
    assert_eq!(after(&stdout, "# guest command"), "sh -c 'exit 7'");
    let cwd = std::env::current_dir().unwrap();
    assert!(
        stdout.contains(&format!(
            "# guest command, run by vm-init as root in {},",
            cwd.display()
        )),
        "{stdout}"
    );
    let env: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("# guest environment"))
        .skip(1)
        .collect();
    for want in [
        "HOME=/tmp",
        "TERM=dumb",
        "VMRUN_RESULTS=/run/vmrun/results",
        "VMRUN_SCRATCH_DISK=/dev/vda",
        "'GREETING=hello world'",
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    assert!(
        stdout.contains("# accelerator   tcg (asked for)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("# kernel        {}\n", image.display())),
        "{stdout}"
    );
    assert!(stdout.contains("# timeout       300 s"), "{stdout}");
}

#[test]
fn dry_run_with_virtme_ng_short_options() {
    let dir = scratch("dry-run-short");
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, b"x").unwrap();
    let (code, stdout, stderr) = vmrun(&[
        "run",
        "--dry-run",
        "--accel=tcg",
        "--kernel",
        kernel.to_str().unwrap(),
        "-p",
        "3",
        "-m",
        "1G",
        "-a",
        "foo=bar",
        "-e",
        "uname -r; nproc",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let qemu = after(&stdout, "# QEMU command line");
    assert!(qemu.contains(" -smp 3 -m 1024M "), "{qemu}");
    assert!(qemu.contains(" foo=bar' "), "{qemu}");
    assert_eq!(after(&stdout, "# guest command"), "sh -c 'uname -r; nproc'");
}

#[test]
fn dry_run_of_a_shell() {
    let dir = scratch("dry-run-shell");
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, b"x").unwrap();
    let (code, stdout, stderr) = vmrun(&[
        "run",
        "--dry-run",
        "--shell",
        "--accel=tcg",
        "--disk-size=0",
        "--kernel",
        kernel.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let qemu = after(&stdout, "# QEMU command line");
    assert!(
        qemu.contains(" -chardev stdio,id=console,mux=on,signal=off -serial chardev:console "),
        "{qemu}"
    );
    assert!(!qemu.contains("-serial stdio"), "{qemu}");
    assert!(!qemu.contains("-drive"), "--disk-size 0: no disk: {qemu}");
    assert!(
        after(&stdout, "# guest command").ends_with("sh"),
        "bash or sh: {stdout}"
    );
    assert!(
        stdout.contains("an interactive shell on the console"),
        "{stdout}"
    );
    assert!(stdout.contains("# timeout       none"), "{stdout}");
    assert!(stdout.contains("# scratch disk  none"), "{stdout}");
    assert!(
        stdout.contains("\nTERM=xterm-256color\n"),
        "the host's TERM: {stdout}"
    );
    assert!(
        stdout.contains("\nPATH=/run/vmrun-bin:"),
        "poweroff first: {stdout}"
    );
}

#[test]
fn kernel_that_is_neither_image_nor_build_directory() {
    let dir = scratch("bad-kernel");
    let (code, _, stderr) = vmrun(&[
        "run",
        "--dry-run",
        "--accel=tcg",
        "--kernel",
        dir.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(code, Some(123), "{stderr}");
    assert!(
        stderr.contains("not a built kernel build directory: arch/x86/boot/bzImage is missing"),
        "{stderr}"
    );
    let (code, _, stderr) = vmrun(&[
        "run",
        "--dry-run",
        "--kernel",
        "/nonexistent/bzImage",
        "--",
        "true",
    ]);
    assert_eq!(code, Some(123), "{stderr}");
    assert!(
        stderr.contains("the kernel /nonexistent/bzImage is missing"),
        "{stderr}"
    );
}
