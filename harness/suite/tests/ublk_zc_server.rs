//! Zero-copy servers (UBLK_F_SPLICE_ZC, series v3): FETCH_REQ from queue threads without
//! CAP_SYS_ADMIN, the mirror (a WRITE range spliced twice, in process and through the
//! CLI), and a zero-copy server killed mid-I/O.  All need the series: on a kernel without
//! it they fail with "kernel lacks UBLK_F_SPLICE_ZC ...".

mod ublk_common;

use anyhow::Context;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use ublk::{Device, DeviceConfig, TargetConfig};
use ublk_common::*;
use ublk_suite::blockio::{fill_block, open_direct, read_range, AlignedBuf};
use ublk_suite::check::must;
use ublk_suite::files::check_bytes;
use ublk_suite::kmsg::{splats, KmsgTail};
use ublk_suite::ublkcli::{self, spawn_dd, spawn_fg, ublk_cli};
use ublk_suite::ublkdev::no_devices;

/// FETCH_REQ on a zero-copy device from a queue thread without CAP_SYS_ADMIN in its
/// effective set fails with EPERM (the device cannot start); the same unprivileged queue
/// threads serve a copy-mode device.
#[test]
fn fetch_req_without_cap_sys_admin_is_eperm() {
    must(fresh());
    must(require_splice_zc());
    let bf = must(backing_file(Backing::Buffered, 4 << 20)).expect("backing");
    let target = TargetConfig::Loop {
        path: bf.path.clone(),
        buffered: true,
    };
    let mut cfg = DeviceConfig::new();
    cfg.unprivileged_queues = true;
    cfg.depth = 4;
    // control: without zero copy the driver does not ask for the capability
    let dev = must(Device::start(&cfg, &target).context("copy mode, queues without CAP_SYS_ADMIN"));
    let f = must(open_direct(&dev.block_path()));
    let buf = AlignedBuf::filled(4096, 2);
    assert_eq!(
        f.write_at(buf.as_slice(), 0).expect("copy-mode WRITE"),
        4096
    );
    drop(f);
    must(dev.stop_and_delete());

    cfg.zero_copy = true;
    match Device::start(&cfg, &target) {
        Ok(dev) => {
            let flags = dev.flags();
            let _ = dev.stop_and_delete();
            panic!(
                "a zero-copy device (flags {flags:#x}) started with queue threads without \
                 CAP_SYS_ADMIN: FETCH_REQ was accepted"
            );
        }
        Err(e) => {
            let msg = format!("{e:#}");
            println!("zero copy, unprivileged queues: {msg}");
            assert!(
                msg.contains("FETCH_REQ") && msg.contains("Operation not permitted"),
                "expected FETCH_REQ to fail with EPERM: {msg}"
            );
        }
    }
    must(no_devices());
}

/// A mirror: every WRITE request is spliced twice, to two backing files (the same range
/// of the request twice); READs come from the first.  Both files get the same data.
#[test]
fn write_range_spliced_twice_mirror() {
    must(fresh());
    must(require_splice_zc());
    let size = 8u64 << 20;
    let a = must(backing_file(Backing::Buffered, size)).expect("backing a");
    let b = must(backing_file(Backing::Buffered, size)).expect("backing b");
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = true;
    cfg.nr_queues = 2;
    cfg.depth = 16;
    let dev = must(Device::start(
        &cfg,
        &TargetConfig::Mirror {
            paths: [a.path.clone(), b.path.clone()],
            buffered: true,
        },
    ));
    let (off, len) = (1u64 << 20, 2usize << 20);
    let mut buf = AlignedBuf::new(len);
    fill_block(buf.as_mut_slice(), off, 0x3131);
    let want = buf.as_slice().to_vec();
    let f = must(open_direct(&dev.block_path()));
    must(ublk_suite::blockio::full_write_at(
        &f,
        buf.as_slice(),
        off,
        "mirror write",
    ));
    buf.as_mut_slice().fill(0);
    must(ublk_suite::blockio::full_read_at(
        &f,
        buf.as_mut_slice(),
        off,
        "mirror read",
    ));
    must(check_bytes(
        "read back through the mirror",
        off,
        buf.as_slice(),
        &want,
    ));
    drop(f);
    let st = dev.stats();
    must(dev.stop_and_delete());
    println!("mirror: {st:?}");
    assert!(st.writes > 0, "no WRITE reached the server: {st:?}");
    assert_eq!(st.errors, 0, "{st:?}");
    assert!(
        st.splices >= 2 * st.writes + st.reads,
        "each WRITE must be spliced to both files: {st:?}"
    );
    for p in [&a.path, &b.path] {
        let got = must(read_range(p, false, off, len));
        must(check_bytes(
            &format!("mirror backing {}", p.display()),
            off,
            &got,
            &want,
        ));
    }
}

/// `ublk add -t mirror -f A -f B -z`: the CLI's mirror in zero-copy mode.
#[test]
fn mirror_cli_zero_copy() {
    must(fresh());
    must(require_splice_zc());
    let size = 8u64 << 20;
    let a = must(backing_file(Backing::Buffered, size)).expect("backing a");
    let b = must(backing_file(Backing::Buffered, size)).expect("backing b");
    let (pa, pb) = (a.path.to_string_lossy(), b.path.to_string_lossy());
    let id = must(ublkcli::add(&[
        "-t",
        "mirror",
        "-f",
        &pa,
        "-f",
        &pb,
        "--buffered-io",
        "-z",
    ]));
    let l = must(ublk_cli(&["list"]));
    assert!(
        l.text.contains("mirror") && l.text.contains("SPLICE_ZC"),
        "{}",
        l.text
    );
    let dev = ublk::device::block_path(id);
    let mut buf = AlignedBuf::new(1 << 20);
    fill_block(buf.as_mut_slice(), 0, 0x4242);
    let want = buf.as_slice().to_vec();
    let f = must(open_direct(&dev));
    must(ublk_suite::blockio::full_write_at(
        &f,
        buf.as_slice(),
        0,
        "CLI mirror write",
    ));
    drop(f);
    must(ublkcli::del(id));
    must(no_devices());
    for p in [&a.path, &b.path] {
        let got = must(read_range(p, false, 0, 1 << 20));
        must(check_bytes(
            &format!("mirror backing {}", p.display()),
            0,
            &got,
            &want,
        ));
    }
}

// ---------------------------------------------------------------------------------
// kill -9 of a zero-copy server mid-I/O
// ---------------------------------------------------------------------------------

#[test]
fn kill_9_zero_copy_server_mid_io() {
    must(fresh());
    must(require_splice_zc());
    let rounds: usize = std::env::var("UBLK_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let bf = must(backing_file(Backing::Buffered, 64 << 20)).expect("backing");
    let dir = must(ublk_suite::scratch::ScratchDir::new(
        ublk_suite::scratch::Fs::Tmpfs,
    ));
    // the kernel log from here on: read after every round, so the ring cannot wrap
    // unread (a lost record fails the test)
    let mut kmsg = must(KmsgTail::from_now());
    let mut log = Vec::new();
    let t_all = Instant::now();
    let mut times = Vec::new();
    let backing = bf.path.to_string_lossy().to_string();
    for round in 0..rounds {
        let out = dir.join(&format!("fg{round}.out"));
        let args = [
            "-t",
            "loop",
            "-f",
            &backing,
            "--buffered-io",
            "-z",
            "-q",
            "2",
        ];
        let mut srv = must(spawn_fg(&args, &out));
        let dev = format!("/dev/ublkb{}", srv.id);
        let list = must(ublk_cli(&["list"]));
        assert!(
            list.text.contains("SPLICE_ZC"),
            "ublk list lacks SPLICE_ZC: {}",
            list.text
        );
        let mut ios = [
            must(spawn_dd("/dev/urandom", &dev, "256k", 400, true)),
            must(spawn_dd(&dev, "/dev/null", "256k", 400, false)),
        ];
        std::thread::sleep(Duration::from_millis(300 + 50 * (round as u64 % 5)));
        srv.child.kill().expect("kill -9 of the server");
        let t0 = Instant::now();
        let _ = srv.child.wait();
        for io in ios.iter_mut() {
            loop {
                if io.try_wait().expect("waiting for dd").is_some() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    let _ = io.kill();
                    panic!("round {round}: I/O still running 30 s after kill -9 of the server");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let io_end = t0.elapsed();
        let del = must(ublk_cli(&[
            "del",
            "-n",
            &srv.id.to_string(),
            "--timeout",
            "30",
        ]));
        assert!(
            del.ok,
            "round {round}: ublk del after kill -9: {}",
            del.text
        );
        must(no_devices());
        times.push((io_end, t0.elapsed()));
        let _ = std::fs::remove_file(&srv.out);
        log.extend(must(kmsg.lines()));
    }
    let bad = splats(&log);
    println!(
        "kill -9 rounds: {rounds} in {:?}; {} kernel log lines; (I/O ended, deleted) after \
         kill per round: {times:?}",
        t_all.elapsed(),
        log.len()
    );
    assert!(
        bad.is_empty(),
        "kernel log after kill -9 rounds:\n{}",
        bad.join("\n")
    );
}
