//! ublk devices in splice zero-copy mode (UBLK_F_SPLICE_ZC, patch 4/4): the scenarios of
//! ublk_copy.rs, the proof that nothing is copied, every errno of ->splice_read() on
//! /dev/ublkcN, and a zero-copy server killed mid-I/O. All need the series: on a kernel
//! without it they fail with "kernel lacks UBLK_F_SPLICE_ZC ...".

mod ublk_common;

use rstest::rstest;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use ublk::uapi::{ublk_pos, SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ, UBLK_F_SPLICE_ZC};
use ublk_common::*;
use ublk_suite::check::{self, must};
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::uring::{Ring, Splice};

const MODE: Mode = Mode::Zc;
const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;

#[rstest]
fn random_io(
    #[values(Backing::Direct, Backing::Buffered)] backing: Backing,
    #[values(1, 2)] queues: u16,
    #[values(1, 64)] depth: u16,
) {
    must(ublk_common::random_io(MODE, backing, queues, depth));
}

#[rstest]
fn random_io_null(#[values(1, 2)] queues: u16) {
    must(ublk_common::random_io(MODE, Backing::Null, queues, 64));
}

#[rstest]
fn flush_discard_write_zeroes(#[values(Backing::Direct, Backing::Buffered)] backing: Backing) {
    must(ublk_common::flush_discard_zeroes(MODE, backing, 2, 64));
}

#[test]
fn filesystem_ext4() {
    must(ublk_common::filesystem(MODE, Backing::Direct, 2, 64));
}

#[rstest]
fn fio_verify_crc32c(
    #[values(Backing::Direct, Backing::Buffered, Backing::Null)] backing: Backing,
) {
    must(ublk_common::fio_verify(MODE, backing, 2, 64));
}

/// The device has UBLK_F_SPLICE_ZC and its queues map no data buffer.
#[test]
fn server_allocates_no_data_buffer() {
    must(require_splice_zc());
    let bf = must(backing_file(Backing::Buffered, 8 << 20));
    let dev = must(start(MODE, bf.as_ref(), Backing::Buffered, 0, 1, 4));
    assert!(
        dev.flags() & UBLK_F_SPLICE_ZC != 0,
        "flags {:#x}",
        dev.flags()
    );
    must(dev.stop_and_delete());
    let (n, size) = must(ublk_common::server_buffers(MODE));
    assert_eq!(
        n, 0,
        "zero-copy mode: {n} data buffer mapping(s) of {size} bytes"
    );
}

/// Zero copy proven: over 64 MiB of verified I/O the driver's copy function never runs.
/// (ublk_copy::copy_path_probe_counts_every_request shows the probe counts in copy mode.)
#[test]
fn zero_copy_proof_no_copy_calls() {
    must(require_splice_zc());
    let (hits, reqs, verified) = must(ublk_common::copy_probe(MODE, 32));
    println!("ZERO-COPY MODE: ublk_copy_user_pages hits={hits} data_requests={reqs} verified_bytes={verified}");
    assert!(verified >= 64 << 20, "only {verified} bytes verified");
    assert!(reqs > 0, "no data request reached the server");
    assert_eq!(
        hits, 0,
        "zero-copy mode: the copy function ran {hits} times"
    );
}

#[test]
fn removal_under_load() {
    must(ublk_common::removal_under_load(MODE));
}

// ---------------------------------------------------------------------------------
// ->splice_read() of /dev/ublkcN: every errno of SPEC.md's table
// ---------------------------------------------------------------------------------

const REQ: usize = 8192;
const REQ_OFF: u64 = 64 << 10;

/// Issues one O_DIRECT READ (or WRITE of `data`) of REQ bytes at REQ_OFF in the
/// background and returns the request the server holds for it.
type HeldIo = std::thread::JoinHandle<std::io::Result<(usize, Vec<u8>)>>;

/// splice(2) of the request at `pos` to a user pipe fails with EPERM, and no byte
/// reaches the pipe.
fn user_pipe_splice_is_eperm(srv: &HeldServer, pos: u64, what: &str) {
    let (pr, pw) = nix::unistd::pipe().expect("pipe(2)");
    must(check::errno(
        what,
        ublk_suite::sys::splice(
            srv.char_fd.as_fd(),
            &mut Some(pos as i64),
            pw.as_fd(),
            &mut None,
            REQ,
            0,
        ),
        nix::errno::Errno::EPERM,
    ));
    assert_eq!(
        ublk_suite::sys::pipe_bytes(pr.as_fd()).expect("FIONREAD on the pipe"),
        0,
        "{what}: bytes reached the user pipe"
    );
}

fn held_io(srv: &HeldServer, write: Option<Vec<u8>>) -> (HeldIo, ublk::target::Request) {
    srv.set_hold(true);
    let path = srv.block_path();
    let h = background(move || {
        let f = open_direct(&path).map_err(std::io::Error::other)?;
        let mut buf = AlignedBuf::new(REQ);
        match write {
            Some(d) => {
                buf.as_mut_slice().copy_from_slice(&d);
                f.write_at(buf.as_slice(), REQ_OFF).map(|n| (n, Vec::new()))
            }
            None => f
                .read_at(buf.as_mut_slice(), REQ_OFF)
                .map(|n| (n, buf.as_slice().to_vec())),
        }
    });
    let req = must(srv.next_held());
    srv.set_hold(false);
    (h, req)
}

/// The device still works: write, read back, compare with the backing file.
fn still_works(srv: &HeldServer, seed: u64) {
    let f = must(open_direct(&srv.block_path()));
    let mut buf = AlignedBuf::new(1 << 20);
    fill_block(buf.as_mut_slice(), 1 << 20, seed);
    let want = buf.as_slice().to_vec();
    assert_eq!(
        f.write_at(buf.as_slice(), 1 << 20)
            .expect("write after the cases"),
        1 << 20
    );
    buf.as_mut_slice().fill(0);
    assert_eq!(
        f.read_at(buf.as_mut_slice(), 1 << 20)
            .expect("read after the cases"),
        1 << 20
    );
    must(check_bytes(
        "read back after the cases",
        1 << 20,
        buf.as_slice(),
        &want,
    ));
    let back = File::open(&srv.backing.path).unwrap();
    let mut b = vec![0u8; 1 << 20];
    back.read_exact_at(&mut b, 1 << 20).unwrap();
    must(check_bytes(
        "backing file after the cases",
        1 << 20,
        &b,
        &want,
    ));
}

fn splice_res(
    ring: &mut Ring,
    srv: &HeldServer,
    pos: u64,
    out: &File,
    off_out: i64,
    len: u32,
    flags: u32,
) -> i32 {
    must(ring.splice(&Splice::new(
        srv.char_fd.as_fd(),
        pos as i64,
        out.as_fd(),
        off_out,
        len,
        flags,
    )))
}

/// A held READ request of a SPLICE_ZC device: every refusal, then the real splice.
#[test]
fn splice_read_errnos_read_request() {
    must(require_splice_zc());
    let srv = must(HeldServer::start(MODE, 4, 4 << 20));
    let data = pattern(0x77, REQ);
    srv.backing_write(REQ_OFF, &data);
    let (h, req) = held_io(&srv, None);
    assert_eq!((req.op, req.nr_sectors as usize * 512), (0, REQ), "{req:?}");
    let tag = req.tag;
    let pos = ublk_pos(0, tag, 0);
    let out = must(ublk_suite::files::open_rw(&srv.backing.path));
    let mut ring = must(Ring::new());
    let off_out = REQ_OFF as i64;
    let n = REQ as u32;

    // splice(2) to a user pipe: EPERM (the pages must never reach a user pipe)
    user_pipe_splice_is_eperm(&srv, pos, "splice(2) from /dev/ublkcN to a user pipe");
    let cases: [(&str, u64, u32, u32, i32); 6] = [
        (
            "q_id out of range (1 queue)",
            ublk_pos(1, tag, 0),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "tag == queue depth",
            ublk_pos(0, srv.depth, 0),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "a tag with no started request",
            ublk_pos(0, (tag + 1) % srv.depth, 0),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "more bytes than the request holds",
            pos,
            n + 512,
            R2R,
            -libc::EACCES,
        ),
        (
            "offset + len beyond the request",
            ublk_pos(0, tag, 4096),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "READ request without SPLICE_F_READ_TO_READ",
            pos,
            n,
            DIRECT,
            -libc::EINVAL,
        ),
    ];
    for (what, p, len, flags, want) in cases {
        let r = splice_res(&mut ring, &srv, p, &out, off_out, len, flags);
        println!("case {what}: {}", ublk_suite::sys::cqe_display(r));
        must(check::cqe(what, r, want));
    }
    // len 0 cannot reach ->splice_read() through io_uring: do_splice_direct() returns 0
    // before calling it. The 0-length DIRECT splice returns 0 and moves nothing (the full
    // splice below still gets every byte).
    must(check::cqe(
        "0-length direct splice",
        splice_res(&mut ring, &srv, pos, &out, off_out, 0, R2R),
        0,
    ));
    // the real thing: the backing file reads straight into the request's pages
    must(check::cqe(
        "READ_TO_READ of the whole request",
        splice_res(&mut ring, &srv, pos, &out, off_out, n, R2R),
        REQ as i32,
    ));
    // every byte was spliced out: more is EACCES
    must(check::cqe(
        "a second splice of the request",
        splice_res(&mut ring, &srv, pos, &out, off_out, 512, R2R),
        -libc::EACCES,
    ));
    srv.release(Release::Commit(REQ as i32));
    let (got, buf) = h.join().unwrap().expect("the held READ");
    assert_eq!(got, REQ);
    must(check_bytes("data of the held READ", REQ_OFF, &buf, &data));
    still_works(&srv, 1);
}

/// A held WRITE request: READ_TO_READ is the wrong direction; the right splice writes the
/// request's pages to the backing file; the request is then used up.
#[test]
fn splice_read_errnos_write_request() {
    must(require_splice_zc());
    let srv = must(HeldServer::start(MODE, 4, 4 << 20));
    let data = pattern(0x78, REQ);
    let (h, req) = held_io(&srv, Some(data.clone()));
    assert_eq!((req.op, req.nr_sectors as usize * 512), (1, REQ), "{req:?}");
    let pos = ublk_pos(0, req.tag, 0);
    let out = must(ublk_suite::files::open_rw(&srv.backing.path));
    let mut ring = must(Ring::new());
    let (off_out, n) = (REQ_OFF as i64, REQ as u32);
    must(check::cqe(
        "WRITE request with SPLICE_F_READ_TO_READ",
        splice_res(&mut ring, &srv, pos, &out, off_out, n, R2R),
        -libc::EINVAL,
    ));
    must(check::cqe(
        "more bytes than the WRITE holds",
        splice_res(&mut ring, &srv, pos, &out, off_out, n + 4096, DIRECT),
        -libc::EACCES,
    ));
    must(check::cqe(
        "offset + len beyond the WRITE",
        splice_res(
            &mut ring,
            &srv,
            ublk_pos(0, req.tag, 512),
            &out,
            off_out,
            n,
            DIRECT,
        ),
        -libc::EINVAL,
    ));
    must(check::cqe(
        "0-length direct splice",
        splice_res(&mut ring, &srv, pos, &out, off_out, 0, DIRECT),
        0,
    ));
    // half, then the rest, then nothing more
    must(check::cqe(
        "first half",
        splice_res(&mut ring, &srv, pos, &out, off_out, n / 2, DIRECT),
        REQ as i32 / 2,
    ));
    must(check::cqe(
        "more than what is left",
        splice_res(
            &mut ring,
            &srv,
            ublk_pos(0, req.tag, n / 2),
            &out,
            off_out + i64::from(n / 2),
            n / 2 + 512,
            DIRECT,
        ),
        -libc::EACCES,
    ));
    must(check::cqe(
        "second half",
        splice_res(
            &mut ring,
            &srv,
            ublk_pos(0, req.tag, n / 2),
            &out,
            off_out + i64::from(n / 2),
            n / 2,
            DIRECT,
        ),
        REQ as i32 / 2,
    ));
    must(check::cqe(
        "a third splice",
        splice_res(&mut ring, &srv, pos, &out, off_out, 512, DIRECT),
        -libc::EACCES,
    ));
    srv.release(Release::Commit(REQ as i32));
    let (got, _) = h.join().unwrap().expect("the held WRITE");
    assert_eq!(got, REQ);
    let mut b = vec![0u8; REQ];
    File::open(&srv.backing.path)
        .unwrap()
        .read_exact_at(&mut b, REQ_OFF)
        .unwrap();
    must(check_bytes(
        "backing file after the spliced WRITE",
        REQ_OFF,
        &b,
        &data,
    ));
    still_works(&srv, 2);
}

/// A device without UBLK_F_SPLICE_ZC: a started request cannot be spliced (EINVAL), and a
/// user pipe is still EPERM.
#[test]
fn splice_read_errnos_copy_device() {
    must(require_splice_zc());
    let srv = must(HeldServer::start(Mode::Copy, 4, 4 << 20));
    let (h, req) = held_io(&srv, None);
    let pos = ublk_pos(0, req.tag, 0);
    let out = must(ublk_suite::files::open_rw(&srv.backing.path));
    let mut ring = must(Ring::new());
    must(check::cqe(
        "device without UBLK_F_SPLICE_ZC",
        splice_res(&mut ring, &srv, pos, &out, REQ_OFF as i64, REQ as u32, R2R),
        -libc::EINVAL,
    ));
    user_pipe_splice_is_eperm(
        &srv,
        pos,
        "splice(2) from /dev/ublkcN (copy device) to a user pipe",
    );
    srv.release(Release::Serve);
    let (got, _) = h.join().unwrap().expect("the held READ");
    assert_eq!(got, REQ);
    still_works(&srv, 3);
}

/// A request the server fails: the I/O sees EIO, the device keeps working.
#[test]
fn splice_read_after_failed_request() {
    must(require_splice_zc());
    let srv = must(HeldServer::start(MODE, 4, 4 << 20));
    let (h, req) = held_io(&srv, None);
    let out = must(ublk_suite::files::open_rw(&srv.backing.path));
    let mut ring = must(Ring::new());
    must(check::cqe(
        "part of the request",
        splice_res(
            &mut ring,
            &srv,
            ublk_pos(0, req.tag, 0),
            &out,
            REQ_OFF as i64,
            4096,
            R2R,
        ),
        4096,
    ));
    srv.release(Release::Commit(-libc::EIO));
    let r = h.join().unwrap();
    assert!(r.is_err(), "a READ the server failed returned {r:?}");
    // the tag's next request starts afresh (spliced count reset)
    still_works(&srv, 4);
}

// ---------------------------------------------------------------------------------
// kill -9 of a zero-copy server mid-I/O
// ---------------------------------------------------------------------------------

#[test]
fn kill_9_zero_copy_server_mid_io() {
    must(require_splice_zc());
    let rounds: usize = std::env::var("UBLK_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let bf = must(backing_file(Backing::Buffered, 64 << 20)).unwrap();
    let dir = must(ublk_suite::scratch::ScratchDir::new(
        ublk_suite::scratch::Fs::Tmpfs,
    ));
    let kbase = kmsg_lines().len();
    let t_all = Instant::now();
    let mut times = Vec::new();
    for round in 0..rounds {
        let out = dir.join(&format!("fg{round}.out"));
        let args = [
            "-t",
            "loop",
            "-f",
            bf.path.to_str().unwrap(),
            "--buffered-io",
            "-z",
            "-q",
            "2",
        ];
        let mut srv = must(spawn_fg(&args, &out));
        let dev = format!("/dev/ublkb{}", srv.id);
        let list = ublk_cli(&["list"]);
        assert!(
            list.text.contains("SPLICE_ZC"),
            "ublk list lacks SPLICE_ZC: {}",
            list.text
        );
        let mut ios: Vec<_> = [("of", "oflag=direct"), ("if", "iflag=direct")]
            .iter()
            .map(|(k, fl)| {
                let (src, dst) = if *k == "of" {
                    ("/dev/urandom".to_string(), dev.clone())
                } else {
                    (dev.clone(), "/dev/null".to_string())
                };
                std::process::Command::new("dd")
                    .args([
                        format!("if={src}"),
                        format!("of={dst}"),
                        "bs=256k".into(),
                        "count=400".into(),
                        fl.to_string(),
                        "status=none".into(),
                    ])
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("dd")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 50 * (round as u64 % 5)));
        srv.child.kill().expect("kill -9 of the server");
        let t0 = Instant::now();
        let _ = srv.child.wait();
        for io in ios.iter_mut() {
            loop {
                if io.try_wait().unwrap().is_some() {
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
        let del = ublk_cli(&["del", "-n", &srv.id.to_string(), "--timeout", "30"]);
        assert!(
            del.ok,
            "round {round}: ublk del after kill -9: {}",
            del.text
        );
        must(no_devices());
        times.push((io_end, t0.elapsed()));
        let _ = std::fs::remove_file(&srv.out);
    }
    let log = kmsg_lines();
    let bad = splats(&log[kbase.min(log.len())..]);
    println!(
        "kill -9 rounds: {rounds} in {:?}; (I/O ended, deleted) after kill per round: {times:?}",
        t_all.elapsed()
    );
    assert!(
        bad.is_empty(),
        "kernel log after kill -9 rounds:\n{}",
        bad.join("\n")
    );
}
