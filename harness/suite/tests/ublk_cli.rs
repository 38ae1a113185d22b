//! The `ublk` command line (target/release/ublk): bad input is refused with a clear
//! message and leaves no half-made device; `-z` fails on a kernel without the series,
//! saying so, and works on one with it (which of the two is expected comes from the run's
//! label, not from asking the kernel); explicit ids, SIGTERM/SIGINT with I/O in flight,
//! `del -a`, a killed copy-mode server.  Every test starts from a clean slate
//! (`ublkdev::fresh`).

use anyhow::{anyhow, bail, Context, Result};
use rstest::rstest;
use std::path::Path;
use std::time::{Duration, Instant};
use ublk_suite::check::must;
use ublk_suite::label::{self, Kernel};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::ublkcli::{self, run_tool, spawn_dd, spawn_fg, ublk_cli};
use ublk_suite::ublkdev::{fresh, no_devices};

fn tmp() -> Result<ScratchDir> {
    ScratchDir::new(Fs::Tmpfs)
}

fn sized(dir: &ScratchDir, name: &str, size: u64) -> Result<String> {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("creating {}", p.display()))?;
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))
}

fn fails_with(args: &[&str], text: &str) -> Result<()> {
    let o = ublk_cli(args)?;
    if o.ok {
        bail!("ublk {} succeeded: {}", args.join(" "), o.text);
    }
    if !o.text.contains(text) {
        bail!(
            "ublk {}: the message lacks {text:?}: {}",
            args.join(" "),
            o.text
        );
    }
    no_devices()
}

#[test]
fn features_lists_splice_zc() {
    must(fresh());
    let o = must(ublk_cli(&["features"]));
    assert!(o.ok, "{}", o.text);
    let line = o
        .text
        .lines()
        .find(|l| l.starts_with("UBLK_F_SPLICE_ZC"))
        .unwrap_or_else(|| panic!("no UBLK_F_SPLICE_ZC line: {}", o.text));
    // `ublk features` asks for every flag it knows, bit 63 included.
    assert!(
        o.text.contains("asked 0x800000000000001f"),
        "features must ask for bit 63 (UBLK_F_SPLICE_ZC): {}",
        o.text
    );
    let want = match must(label::kernel()) {
        Kernel::Series => "yes",
        Kernel::Base => "no",
    };
    assert!(
        line.split_whitespace().nth(1) == Some(want),
        "expected UBLK_F_SPLICE_ZC {want} on this kernel (run label): {}",
        o.text
    );
}

#[rstest]
#[case::missing_backing(&["add", "-t", "loop", "-f", "/tmp/ublk-suite-nope.img"], "does not exist")]
#[case::depth_5000(&["add", "-t", "loop", "-f", "SMALL", "--buffered-io", "-d", "5000"], "between 1 and 4096")]
#[case::depth_0(&["add", "-t", "loop", "-f", "SMALL", "--buffered-io", "-d", "0"], "between 1 and 4096")]
#[case::o_direct_on_tmpfs(&["add", "-t", "loop", "-f", "SMALL"], "buffered-io")]
#[case::empty_backing(&["add", "-t", "loop", "-f", "EMPTY"], "empty")]
#[case::mirror_one_file(&["add", "-t", "mirror", "-f", "SMALL", "--buffered-io"], "exactly two")]
#[case::mirror_empty_file(&["add", "-t", "mirror", "-f", "SMALL", "-f", "EMPTY", "--buffered-io"], "empty")]
#[case::unknown_target(&["add", "-t", "nbd"], "unknown target type")]
#[case::del_missing(&["del", "-n", "77"], "does not exist")]
fn bad_input_is_refused_and_leaves_nothing(#[case] args: &[&str], #[case] msg: &str) {
    must(fresh());
    let d = must(tmp());
    let small = must(sized(&d, "small.img", 4 << 20));
    let empty = must(sized(&d, "empty.img", 0));
    let args: Vec<&str> = args
        .iter()
        .map(|a| match *a {
            "SMALL" => small.as_str(),
            "EMPTY" => empty.as_str(),
            a => a,
        })
        .collect();
    must(fails_with(&args, msg));
}

/// `-z`: the run's label says whether this kernel has the series.  Without it, `add -z`
/// fails naming UBLK_F_SPLICE_ZC and the patches, and leaves no device; with it, the
/// device comes up with the flag.  Either way, the other answer fails the test.
#[rstest]
fn zero_copy_flag_on_this_kernel(#[values("loop", "null", "mirror")] target: &str) {
    must(fresh());
    let d = must(tmp());
    let (a, b) = (
        must(sized(&d, "a.img", 4 << 20)),
        must(sized(&d, "b.img", 4 << 20)),
    );
    let args: Vec<&str> = match target {
        "loop" => vec!["add", "-t", "loop", "-f", &a, "--buffered-io", "-z"],
        "mirror" => vec![
            "add",
            "-t",
            "mirror",
            "-f",
            &a,
            "-f",
            &b,
            "--buffered-io",
            "-z",
        ],
        _ => vec!["add", "-t", "null", "-z"],
    };
    match must(label::kernel()) {
        Kernel::Base => {
            println!("base kernel (run label): -z must fail cleanly");
            must(fails_with(&args, "lacks UBLK_F_SPLICE_ZC"));
            must(fails_with(&args, "patches/"));
        }
        Kernel::Series => {
            let id = must(ublkcli::add(&args[1..]));
            let l = must(ublk_cli(&["list"]));
            let line = l
                .text
                .lines()
                .find(|x| x.starts_with(&format!("{id} ")))
                .unwrap_or_else(|| panic!("device {id} missing from ublk list: {}", l.text));
            assert!(
                line.contains("SPLICE_ZC") && line.contains(target),
                "{}",
                l.text
            );
            must(ublkcli::del(id));
            must(no_devices());
        }
    }
}

#[test]
fn explicit_id_and_id_in_use() {
    must(fresh());
    let d = must(tmp());
    let b = must(sized(&d, "b.img", 16 << 20));
    let id = must(ublkcli::add(&[
        "-t",
        "loop",
        "-f",
        &b,
        "--buffered-io",
        "-n",
        "5",
    ]));
    assert_eq!(id, 5);
    let again = must(ublk_cli(&[
        "add",
        "-t",
        "loop",
        "-f",
        &b,
        "--buffered-io",
        "-n",
        "5",
    ]));
    assert!(
        !again.ok && again.text.contains("already in use"),
        "{}",
        again.text
    );
    let l = must(ublk_cli(&["list"]));
    assert!(
        l.text
            .lines()
            .any(|x| x.starts_with("5 ") && x.contains("(buffered)")),
        "{}",
        l.text
    );
    must(ublkcli::del(5));
    assert!(!Path::new("/run/ublk/ublkb5.conf").exists());
    must(no_devices());
}

/// SIGTERM / SIGINT on a foreground server with I/O in flight: exit 0, device gone.  The
/// writer never creates the device path (`conv=nocreat`): if it opens it after the
/// device is gone, it fails instead of leaving a regular file /dev/ublkbN behind.
#[rstest]
fn signal_stops_cleanly(#[values("TERM", "INT")] sig: &str) {
    must(fresh());
    let d = must(tmp());
    let b = must(sized(&d, "b.img", 16 << 20));
    let mut srv = must(spawn_fg(
        &["-t", "loop", "-f", &b, "--buffered-io"],
        &d.join("fg.out"),
    ));
    let dev = format!("/dev/ublkb{}", srv.id);
    let mut dd = must(spawn_dd("/dev/urandom", &dev, "64k", 200, true));
    std::thread::sleep(Duration::from_millis(300));
    let signal = if sig == "TERM" {
        nix::sys::signal::SIGTERM
    } else {
        nix::sys::signal::SIGINT
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(srv.child.id() as i32), signal)
        .expect("signalling the server");
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = srv.child.try_wait().expect("waiting for the server") {
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
        std::fs::symlink_metadata(&dev).is_err(),
        "{dev} left after SIG{sig}"
    );
    must(no_devices());
}

#[test]
fn del_all() {
    must(fresh());
    for _ in 0..2 {
        must(ublkcli::add(&["-t", "null", "-s", "64M"]));
    }
    let o = must(ublk_cli(&["del", "-a"]));
    assert!(o.ok, "{}", o.text);
    must(no_devices());
}

/// A null device has its size and reads zeroes.
#[test]
fn null_size_and_io() {
    must(fresh());
    let id = must(ublkcli::add(&["-t", "null", "-s", "256M", "-q", "2"]));
    let dev = format!("/dev/ublkb{id}");
    let out = must(run_tool("blockdev", &["--getsize64", &dev]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "268435456");
    let got = must(ublk_suite::blockio::read_range(
        Path::new(&dev),
        true,
        64 << 20,
        1 << 20,
    ));
    assert!(
        got.iter().all(|&b| b == 0),
        "a null device must read zeroes"
    );
    must(ublkcli::del(id));
    must(no_devices());
}

/// A copy-mode server killed with SIGKILL: I/O fails (no hang), `ublk del` cleans up.
#[test]
fn kill_9_copy_server() {
    must(fresh());
    let d = must(tmp());
    let b = must(sized(&d, "b.img", 16 << 20));
    let id = must(ublkcli::add(&[
        "-t",
        "loop",
        "-f",
        &b,
        "--buffered-io",
        "-q",
        "2",
    ]));
    let conf = must(
        std::fs::read_to_string(format!("/run/ublk/ublkb{id}.conf"))
            .context("reading the state file"),
    );
    let pid: i32 = conf
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid= in the state file: {conf}"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .expect("kill -9 of the server");
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let out = must(run_tool(
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
    ));
    assert!(!out.status.success(), "I/O to an orphaned device succeeded");
    assert_ne!(
        out.status.code(),
        Some(124),
        "I/O to an orphaned device hung"
    );
    println!("I/O after kill -9 failed in {:?}", t0.elapsed());
    must(ublkcli::del(id));
    must(no_devices());
}

/// The clean slate itself: a regular file at /dev/ublkbN (what a writer that opened the
/// path after the device was removed used to leave) is removed by `fresh()`, and a device
/// with that id then comes up.
#[test]
fn fresh_removes_a_stray_device_file() {
    must(fresh());
    let stray = Path::new("/dev/ublkb7");
    std::fs::write(stray, b"not a device").expect("creating a stray /dev/ublkb7");
    must(fresh());
    assert!(
        std::fs::symlink_metadata(stray).is_err(),
        "fresh() left the stray {}",
        stray.display()
    );
    let id = must(ublkcli::add(&["-t", "null", "-s", "16M", "-n", "7"]));
    assert_eq!(id, 7);
    must(ublkcli::del(id));
    must(no_devices());
}
