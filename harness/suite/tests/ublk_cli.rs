//! The `ublk` command line (target/release/ublk), ported from the old
//! harness/ublk/scripts/guest-smoke.sh: bad input is refused with a clear message and
//! leaves no half-made device; `-z` on a kernel without the series fails saying so and
//! leaves nothing; explicit ids, SIGTERM/SIGINT, `del -a`, a killed copy-mode server.
//! These pass on any 6.1 kernel (the data paths are covered by ublk_copy/ublk_zc).

mod ublk_common;

use rstest::rstest;
use std::time::{Duration, Instant};
use ublk_common::*;
use ublk_suite::check::must;
use ublk_suite::scratch::{Fs, ScratchDir};

fn tmp() -> ScratchDir {
    must(ScratchDir::new(Fs::Tmpfs))
}

fn sized(dir: &ScratchDir, name: &str, size: u64) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p.to_str().unwrap().to_string()
}

fn fails_with(args: &[&str], text: &str) {
    let o = ublk_cli(args);
    assert!(!o.ok, "ublk {} succeeded: {}", args.join(" "), o.text);
    assert!(
        o.text.contains(text),
        "ublk {}: the message lacks {text:?}: {}",
        args.join(" "),
        o.text
    );
    must(no_devices());
}

#[test]
fn features_lists_splice_zc() {
    let o = ublk_cli(&["features"]);
    assert!(o.ok, "{}", o.text);
    assert!(
        o.text.lines().any(|l| l.starts_with("UBLK_F_SPLICE_ZC")),
        "{}",
        o.text
    );
}

#[rstest]
#[case::missing_backing(&["add", "-t", "loop", "-f", "/tmp/ublk-suite-nope.img"], "does not exist")]
#[case::depth_5000(&["add", "-t", "loop", "-f", "SMALL", "--buffered-io", "-d", "5000"], "between 1 and 4096")]
#[case::depth_0(&["add", "-t", "loop", "-f", "SMALL", "--buffered-io", "-d", "0"], "between 1 and 4096")]
#[case::o_direct_on_tmpfs(&["add", "-t", "loop", "-f", "SMALL"], "buffered-io")]
#[case::empty_backing(&["add", "-t", "loop", "-f", "EMPTY"], "empty")]
#[case::unknown_target(&["add", "-t", "nbd"], "unknown target type")]
#[case::del_missing(&["del", "-n", "77"], "does not exist")]
fn bad_input_is_refused_and_leaves_nothing(#[case] args: &[&str], #[case] msg: &str) {
    let d = tmp();
    let small = sized(&d, "small.img", 4 << 20);
    let empty = sized(&d, "empty.img", 0);
    let args: Vec<&str> = args
        .iter()
        .map(|a| match *a {
            "SMALL" => small.as_str(),
            "EMPTY" => empty.as_str(),
            a => a,
        })
        .collect();
    fails_with(&args, msg);
}

/// `-z`: on a kernel without UBLK_F_SPLICE_ZC it fails naming the flag and the patches and
/// leaves no device; on a kernel with it, the device comes up with the flag.
#[rstest]
fn zero_copy_flag_on_this_kernel(#[values("loop", "null")] target: &str) {
    let d = tmp();
    let small = sized(&d, "small.img", 4 << 20);
    let args: Vec<&str> = if target == "loop" {
        vec!["add", "-t", "loop", "-f", &small, "--buffered-io", "-z"]
    } else {
        vec!["add", "-t", "null", "-z"]
    };
    let has = ublk::admin::features().unwrap() & ublk::uapi::UBLK_F_SPLICE_ZC != 0;
    if !has {
        println!("kernel without UBLK_F_SPLICE_ZC: -z must fail cleanly");
        fails_with(&args, "lacks UBLK_F_SPLICE_ZC");
        fails_with(&args, "patches/");
    } else {
        let o = ublk_cli(&args);
        assert!(o.ok, "{}", o.text);
        let id = parse_dev_id(&o.text).expect("dev_id");
        let l = ublk_cli(&["list"]);
        assert!(l.text.contains("SPLICE_ZC"), "{}", l.text);
        let del = ublk_cli(&["del", "-n", &id.to_string()]);
        assert!(del.ok, "{}", del.text);
        must(no_devices());
    }
}

#[test]
fn explicit_id_and_id_in_use() {
    let d = tmp();
    let b = sized(&d, "b.img", 16 << 20);
    let o = ublk_cli(&["add", "-t", "loop", "-f", &b, "--buffered-io", "-n", "5"]);
    assert!(o.ok, "{}", o.text);
    assert_eq!(parse_dev_id(&o.text), Some(5), "{}", o.text);
    let again = ublk_cli(&["add", "-t", "loop", "-f", &b, "--buffered-io", "-n", "5"]);
    assert!(
        !again.ok && again.text.contains("already in use"),
        "{}",
        again.text
    );
    let l = ublk_cli(&["list"]);
    assert!(
        l.text
            .lines()
            .any(|x| x.starts_with("5 ") && x.contains("(buffered)")),
        "{}",
        l.text
    );
    let del = ublk_cli(&["del", "-n", "5"]);
    assert!(del.ok, "{}", del.text);
    assert!(!std::path::Path::new("/run/ublk/ublkb5.conf").exists());
    must(no_devices());
}

/// SIGTERM / SIGINT on a foreground server with I/O in flight: exit 0, device gone.
#[rstest]
fn signal_stops_cleanly(#[values("TERM", "INT")] sig: &str) {
    let d = tmp();
    let b = sized(&d, "b.img", 16 << 20);
    let mut srv = must(spawn_fg(
        &["-t", "loop", "-f", &b, "--buffered-io"],
        &d.join("fg.out"),
    ));
    let dev = format!("/dev/ublkb{}", srv.id);
    let mut dd = std::process::Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={dev}"),
            "bs=64k",
            "count=200",
            "oflag=direct",
            "status=none",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let signal = if sig == "TERM" {
        nix::sys::signal::SIGTERM
    } else {
        nix::sys::signal::SIGINT
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(srv.child.id() as i32), signal).unwrap();
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server still running 30 s after SIG{sig}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = dd.wait();
    let log = std::fs::read_to_string(&srv.out).unwrap_or_default();
    assert!(st.success(), "server exit after SIG{sig}: {st}: {log}");
    assert!(
        !std::path::Path::new(&dev).exists(),
        "{dev} left after SIG{sig}"
    );
    must(no_devices());
}

#[test]
fn del_all() {
    for _ in 0..2 {
        let o = ublk_cli(&["add", "-t", "null", "-s", "64M"]);
        assert!(o.ok, "{}", o.text);
    }
    let o = ublk_cli(&["del", "-a"]);
    assert!(o.ok, "{}", o.text);
    must(no_devices());
}

#[test]
fn null_size_and_io() {
    let o = ublk_cli(&["add", "-t", "null", "-s", "256M", "-q", "2"]);
    assert!(o.ok, "{}", o.text);
    let id = parse_dev_id(&o.text).unwrap();
    let dev = format!("/dev/ublkb{id}");
    let out = run_tool("blockdev", &["--getsize64", &dev]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "268435456");
    let out = run_tool(
        "dd",
        &[
            &format!("if={dev}"),
            "of=/dev/null",
            "bs=1M",
            "count=16",
            "iflag=direct",
            "status=none",
        ],
    )
    .unwrap();
    assert!(out.status.success());
    assert!(ublk_cli(&["del", "-n", &id.to_string()]).ok);
    must(no_devices());
}

/// A copy-mode server killed with SIGKILL: I/O fails (no hang), `ublk del` cleans up.
#[test]
fn kill_9_copy_server() {
    let d = tmp();
    let b = sized(&d, "b.img", 16 << 20);
    let o = ublk_cli(&["add", "-t", "loop", "-f", &b, "--buffered-io", "-q", "2"]);
    assert!(o.ok, "{}", o.text);
    let id = parse_dev_id(&o.text).unwrap();
    let conf = std::fs::read_to_string(format!("/run/ublk/ublkb{id}.conf")).unwrap();
    let pid: i32 = conf
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let out = run_tool(
        "timeout",
        &[
            "60",
            "dd",
            &format!("if=/dev/ublkb{id}"),
            "of=/dev/null",
            "bs=4k",
            "count=1",
            "iflag=direct",
        ],
    )
    .unwrap();
    assert!(!out.status.success(), "I/O to an orphaned device succeeded");
    assert_ne!(
        out.status.code(),
        Some(124),
        "I/O to an orphaned device hung"
    );
    println!("I/O after kill -9 failed in {:?}", t0.elapsed());
    let del = ublk_cli(&["del", "-n", &id.to_string(), "--timeout", "60"]);
    assert!(del.ok, "{}", del.text);
    must(no_devices());
}
