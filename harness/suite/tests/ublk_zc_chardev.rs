//! /dev/ublkcN of a zero-copy device (UBLK_F_SPLICE_ZC, series v3), on a request the test
//! server holds (ublk_common's [`Held`]): every errno of /dev/ublkcN's splice (io_uring's
//! direct splice at any length, 0 included, splice(2), sendfile(2) to a socket and to a
//! file) and of a copy-mode device's, lseek(2) (ESPIPE), stable writes, a server that
//! asks for bit 5, a stale tag, and requests the server fails.  The test servers are the
//! ublk crate's own queue loop with small test targets (ublk_suite::targets).  All need
//! the series: on a kernel without it they fail with "kernel lacks UBLK_F_SPLICE_ZC ...".

mod ublk_common;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use ublk::targets::LoopTarget;
use ublk::uapi::*;
use ublk::{Device, DeviceConfig};
use ublk_common::*;
use ublk_suite::blockio::{open_direct, read_range, AlignedBuf};
use ublk_suite::check::{self, must};
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::targets::{Fail, Release};
use ublk_suite::uring::Ring;

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;

// ---------------------------------------------------------------------------------
// /dev/ublkcN's splice: every errno of the contract's table, on a request the test server holds
// ---------------------------------------------------------------------------------

/// The held I/O: one request of REQ bytes at REQ_OFF.
const REQ: usize = 8192;
const REQ_OFF: u64 = 64 << 10;
const DEPTH: u16 = HELD_DEPTH;

/// A [`Held`] device of `zero_copy` mode asking for `extra` flags too, its held I/O REQ
/// bytes at REQ_OFF.
fn held(zero_copy: bool, extra: u64) -> Result<Held> {
    Held::start(zero_copy, extra, REQ, REQ_OFF)
}

/// splice(2) of the request at `pos` to a user pipe fails with `want`, and no byte
/// reaches the pipe.
fn user_pipe_splice(h: &Held, pos: u64, want: Errno, what: &str) -> Result<()> {
    let (pr, pw) = nix::unistd::pipe().context("pipe(2)")?;
    check::errno(
        what,
        ublk_suite::sys::splice(
            h.char_fd(),
            &mut Some(pos as i64),
            pw.as_fd(),
            &mut None,
            REQ,
            0,
        ),
        want,
    )?;
    let n = ublk_suite::sys::pipe_bytes(pr.as_fd()).context("FIONREAD on the pipe")?;
    if n != 0 {
        bail!("{what}: {n} bytes reached the user pipe");
    }
    Ok(())
}

/// sendfile(2) of the request at `pos` to a regular file fails with `want`, and the file
/// stays empty.
fn sendfile_to_file(h: &Held, pos: u64, want: Errno) -> Result<()> {
    let dir = ublk_suite::scratch::ScratchDir::new(ublk_suite::scratch::Fs::Tmpfs)?;
    let p = dir.join("sendfile-out");
    let out = File::create(&p).with_context(|| format!("creating {}", p.display()))?;
    check::errno(
        "sendfile(2) from /dev/ublkcN to a file",
        ublk_suite::sys::sendfile(out.as_fd(), h.char_fd(), &mut Some(pos as i64), REQ),
        want,
    )?;
    let len = out.metadata()?.len();
    if len != 0 {
        bail!("sendfile(2) to a file: {len} bytes reached the file");
    }
    Ok(())
}

/// sendfile(2) of the request at `pos` to a TCP socket on loopback fails with `want`,
/// and nothing arrives at the other end.
fn sendfile_to_socket(h: &Held, pos: u64, want: Errno) -> Result<()> {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    ublk_suite::net::loopback_up()?;
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let tx = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let (mut rx, _) = l.accept().context("accept")?;
    check::errno(
        "sendfile(2) from /dev/ublkcN to a TCP socket",
        ublk_suite::sys::sendfile(tx.as_fd(), h.char_fd(), &mut Some(pos as i64), REQ),
        want,
    )?;
    drop(tx);
    rx.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut got = Vec::new();
    let _ = rx.read_to_end(&mut got);
    if !got.is_empty() {
        bail!("sendfile(2) to a socket: {} bytes arrived", got.len());
    }
    Ok(())
}

/// A held READ request of a SPLICE_ZC device: every refusal, then the real splice, twice.
#[test]
fn splice_errnos_read_request() {
    let h = must(held(true, 0));
    let data = pattern(0x77, REQ);
    must(h.backing_write(REQ_OFF, &data));
    let (io, req) = must(h.held_io(None));
    assert_eq!((req.op, req.nr_sectors as usize * 512), (0, REQ), "{req:?}");
    let tag = req.tag;
    let pos = ublk_splice_pos(0, tag, 0);
    let out = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = must(Ring::new());
    let off_out = REQ_OFF as i64;
    let n = REQ as u32;

    // Anything but io_uring's direct splice: the pages never reach a user pipe, a socket
    // or a file. splice(2) reaches the driver's ->splice_read, which says EPERM.
    // sendfile(2) does not get that far (series v3): /dev/ublkcN has no file position
    // again (no_llseek, so no FMODE_LSEEK), and do_splice_direct() refuses such a source
    // with EINVAL before it asks the driver (v2's noop_llseek let it reach EPERM).
    must(user_pipe_splice(
        &h,
        pos,
        Errno::EPERM,
        "splice(2) from /dev/ublkcN to a user pipe",
    ));
    must(sendfile_to_file(&h, pos, Errno::EINVAL));
    must(sendfile_to_socket(&h, pos, Errno::EINVAL));
    let cases: [(&str, u64, u32, u32, i32); 6] = [
        (
            "q_id out of range (1 queue)",
            ublk_splice_pos(1, tag, 0),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "tag == queue depth",
            ublk_splice_pos(0, DEPTH, 0),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "a tag with no started request",
            ublk_splice_pos(0, (tag + 1) % DEPTH, 0),
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "more bytes than the request holds",
            pos,
            n + 512,
            R2R,
            -libc::EINVAL,
        ),
        (
            "offset + len beyond the request",
            ublk_splice_pos(0, tag, 4096),
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
        let r = h.splice(&mut ring, p, &out, off_out, len, flags);
        println!("case {what}: {}", ublk_suite::sys::cqe_display(r));
        must(check::cqe(what, r, want));
    }
    // A tag or an offset out of its field's range: ublk_splice_pos() gives
    // UBLK_SPLICE_POS_INVALID, the position -1, which a direct splice refuses.
    for (what, p) in [
        ("a tag of 4096", ublk_splice_pos(0, 4096, 0)),
        ("an offset of 1 GiB", ublk_splice_pos(0, tag, 1 << 30)),
    ] {
        assert_eq!(p, UBLK_SPLICE_POS_INVALID, "ublk_splice_pos with {what}");
        must(check::cqe(
            &format!("UBLK_SPLICE_POS_INVALID ({what})"),
            h.splice(&mut ring, p, &out, off_out, n, R2R),
            -libc::EINVAL,
        ));
    }
    // A zero-length splice reaches the device's checks (series v3; v2 returned 0 before
    // them): EINVAL where any length is, 0 on the held request.
    let zero_len: [(&str, u64, u32, i32); 5] = [
        (
            "0-length at a tag with no started request",
            ublk_splice_pos(0, (tag + 1) % DEPTH, 0),
            R2R,
            -libc::EINVAL,
        ),
        (
            "0-length at tag == queue depth",
            ublk_splice_pos(0, DEPTH, 0),
            R2R,
            -libc::EINVAL,
        ),
        (
            "0-length past the end of the request",
            ublk_splice_pos(0, tag, REQ as u32 + 512),
            R2R,
            -libc::EINVAL,
        ),
        (
            "0-length without SPLICE_F_READ_TO_READ on a READ request",
            pos,
            DIRECT,
            -libc::EINVAL,
        ),
        ("0-length on the held request", pos, R2R, 0),
    ];
    for (what, p, flags, want) in zero_len {
        let r = h.splice(&mut ring, p, &out, off_out, 0, flags);
        println!("case {what}: {}", ublk_suite::sys::cqe_display(r));
        must(check::cqe(what, r, want));
    }
    // the real thing: the backing file reads straight into the request's pages; v2 has
    // no total-bytes budget, so the same range can be filled again
    for what in ["READ_TO_READ of the whole request", "and once more"] {
        must(check::cqe(
            what,
            h.splice(&mut ring, pos, &out, off_out, n, R2R),
            REQ as i32,
        ));
    }
    h.target.release(Release::Commit(REQ as i32));
    let (got, buf) = io.join().expect("the I/O thread").expect("the held READ");
    assert_eq!(got, REQ);
    must(check_bytes("data of the held READ", REQ_OFF, &buf, &data));
    must(h.still_works(1));
    must(h.finish());
}

/// A held WRITE request: READ_TO_READ is the wrong direction; ranges past the request are
/// refused (EINVAL, never shortened); halves, then the whole request again (a range may
/// be spliced more than once).
#[test]
fn splice_errnos_write_request() {
    let h = must(held(true, 0));
    let data = pattern(0x78, REQ);
    let (io, req) = must(h.held_io(Some(data.clone())));
    assert_eq!((req.op, req.nr_sectors as usize * 512), (1, REQ), "{req:?}");
    let at = |off: u32| ublk_splice_pos(0, req.tag, off);
    let out = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = must(Ring::new());
    let (off_out, n) = (REQ_OFF as i64, REQ as u32);
    let half = i64::from(n / 2);
    let cases: [(&str, u64, i64, u32, u32, i32); 8] = [
        (
            "WRITE request with SPLICE_F_READ_TO_READ",
            at(0),
            off_out,
            n,
            R2R,
            -libc::EINVAL,
        ),
        (
            "0-length with SPLICE_F_READ_TO_READ on a WRITE request (v3: the device's checks \
             apply at any length)",
            at(0),
            off_out,
            0,
            R2R,
            -libc::EINVAL,
        ),
        (
            "more bytes than the WRITE holds",
            at(0),
            off_out,
            n + 4096,
            DIRECT,
            -libc::EINVAL,
        ),
        (
            "offset + len beyond the WRITE",
            at(512),
            off_out,
            n,
            DIRECT,
            -libc::EINVAL,
        ),
        ("0-length direct splice", at(0), off_out, 0, DIRECT, 0),
        ("first half", at(0), off_out, n / 2, DIRECT, REQ as i32 / 2),
        (
            "more than what is left",
            at(n / 2),
            off_out + half,
            n / 2 + 512,
            DIRECT,
            -libc::EINVAL,
        ),
        (
            "second half",
            at(n / 2),
            off_out + half,
            n / 2,
            DIRECT,
            REQ as i32 / 2,
        ),
    ];
    for (what, p, o, len, flags, want) in cases {
        let r = h.splice(&mut ring, p, &out, o, len, flags);
        println!("case {what}: {}", ublk_suite::sys::cqe_display(r));
        must(check::cqe(what, r, want));
    }
    must(check::cqe(
        "the whole WRITE spliced once more (v2: no total-bytes budget)",
        h.splice(&mut ring, at(0), &out, off_out, n, DIRECT),
        REQ as i32,
    ));
    h.target.release(Release::Commit(REQ as i32));
    let (got, _) = io.join().expect("the I/O thread").expect("the held WRITE");
    assert_eq!(got, REQ);
    let b = must(read_range(&h.backing.path, false, REQ_OFF, REQ));
    must(check_bytes(
        "backing file after the spliced WRITE",
        REQ_OFF,
        &b,
        &data,
    ));
    must(h.still_works(2));
    must(h.finish());
}

/// A device without UBLK_F_SPLICE_ZC: its splice answers EINVAL whatever the caller
/// (io_uring's direct splice, of any length, and splice(2) to a pipe: the device flag
/// is checked first; sendfile(2) is EINVAL before the driver, as on a zero-copy
/// device).
#[test]
fn splice_errnos_copy_device() {
    let h = must(held(false, 0));
    let (io, req) = must(h.held_io(None));
    let pos = ublk_splice_pos(0, req.tag, 0);
    let out = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = must(Ring::new());
    must(check::cqe(
        "io_uring direct splice on a device without UBLK_F_SPLICE_ZC",
        h.splice(&mut ring, pos, &out, REQ_OFF as i64, REQ as u32, R2R),
        -libc::EINVAL,
    ));
    // any length, 0 included (series v3: a zero-length splice reaches the device)
    must(check::cqe(
        "0-length io_uring direct splice on a device without UBLK_F_SPLICE_ZC",
        h.splice(&mut ring, pos, &out, REQ_OFF as i64, 0, R2R),
        -libc::EINVAL,
    ));
    must(user_pipe_splice(
        &h,
        pos,
        Errno::EINVAL,
        "splice(2) from /dev/ublkcN (device without UBLK_F_SPLICE_ZC) to a user pipe",
    ));
    must(sendfile_to_file(&h, pos, Errno::EINVAL));
    must(sendfile_to_socket(&h, pos, Errno::EINVAL));
    h.target.release(Release::Serve);
    let (got, _) = io.join().expect("the I/O thread").expect("the held READ");
    assert_eq!(got, REQ);
    must(h.still_works(3));
    must(h.finish());
}

/// A server built on newer headers asks for bit 5 (mainline's UBLK_F_UNPRIVILEGED_DEV,
/// v1's UBLK_F_SPLICE_ZC): it must not get zero copy.  The granted flags lack bit 63 and
/// its requests cannot be spliced (EINVAL).
#[test]
fn bit5_does_not_give_zero_copy() {
    let h = must(held(false, UBLK_F_BIT5_UNPRIVILEGED_DEV));
    let flags = h.dev().flags();
    println!(
        "asked {:#x}, granted {flags:#x} ({})",
        UBLK_F_BIT5_UNPRIVILEGED_DEV,
        flag_names(flags)
    );
    assert_eq!(
        flags & UBLK_F_SPLICE_ZC,
        0,
        "asking for bit 5 granted UBLK_F_SPLICE_ZC: {flags:#x}"
    );
    let (io, req) = must(h.held_io(None));
    let out = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = must(Ring::new());
    let r = h.splice(
        &mut ring,
        ublk_splice_pos(0, req.tag, 0),
        &out,
        REQ_OFF as i64,
        REQ as u32,
        R2R,
    );
    h.target.release(Release::Serve);
    let done = io.join().expect("the I/O thread");
    must(check::cqe(
        &format!(
            "direct splice of a request of a device created with bit 5 (granted {flags:#x}): \
             zero copy must be refused"
        ),
        r,
        -libc::EINVAL,
    ));
    let (got, _) = done.expect("the held READ");
    assert_eq!(got, REQ);
    must(h.still_works(5));
    must(h.finish());
}

/// /dev/ublkcN has no file position (series v3: no_llseek again, as without the series;
/// v2 made lseek succeed): lseek(2) fails with ESPIPE on a zero-copy device and on a
/// copy-mode one, and a direct splice, whose positions are its own, still works.
#[test]
fn char_device_lseek_is_espipe() {
    for zero_copy in [true, false] {
        let h = must(held(zero_copy, 0));
        let mode = if zero_copy { "zero-copy" } else { "copy-mode" };
        for (whence, name) in [
            (libc::SEEK_SET, "SEEK_SET"),
            (libc::SEEK_CUR, "SEEK_CUR"),
            (libc::SEEK_END, "SEEK_END"),
        ] {
            for off in [0i64, 4096] {
                must(check::errno(
                    &format!("lseek(/dev/ublkcN of a {mode} device, {off}, {name})"),
                    ublk_suite::sys::lseek(h.char_fd(), off, whence).map(|p| p as usize),
                    Errno::ESPIPE,
                ));
            }
        }
        if zero_copy {
            let (io, req) = must(h.held_io(None));
            let out = must(ublk_suite::files::open_rw(&h.backing.path));
            let mut ring = must(Ring::new());
            must(check::cqe(
                "a direct splice from /dev/ublkcN after the refused lseeks",
                h.splice(
                    &mut ring,
                    ublk_splice_pos(0, req.tag, 0),
                    &out,
                    REQ_OFF as i64,
                    REQ as u32,
                    R2R,
                ),
                REQ as i32,
            ));
            h.target.release(Release::Commit(REQ as i32));
            let (got, _) = io.join().expect("the I/O thread").expect("the held READ");
            assert_eq!(got, REQ);
        }
        must(h.finish());
    }
}

/// A zero-copy device asks for stable pages (series v3): the page cache must not change
/// a WRITE's pages while they are lent, maybe to two mirror legs, so
/// queue/stable_writes reads 1; a copy-mode device, whose server gets a copy, reads 0.
#[test]
fn zero_copy_device_has_stable_writes() {
    for (zero_copy, want) in [(true, "1"), (false, "0")] {
        let h = must(held(zero_copy, 0));
        let got = must(ublk_suite::blockio::queue_attr(
            &h.block_path(),
            "stable_writes",
        ));
        must(h.finish());
        let mode = if zero_copy { "zero-copy" } else { "copy-mode" };
        println!("{mode} device: queue/stable_writes {got}");
        assert_eq!(
            got, want,
            "queue/stable_writes of a {mode} device is {got}, expected {want}"
        );
    }
}

/// A request the server already committed: its tag is stale, a splice at it is EINVAL.
#[test]
fn stale_tag_is_einval() {
    let h = must(held(true, 0));
    let (io, req) = must(h.held_io(None));
    let out = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = must(Ring::new());
    let pos = ublk_splice_pos(0, req.tag, 0);
    must(check::cqe(
        "the live request",
        h.splice(&mut ring, pos, &out, REQ_OFF as i64, REQ as u32, R2R),
        REQ as i32,
    ));
    h.target.release(Release::Commit(REQ as i32));
    let (got, _) = io.join().expect("the I/O thread").expect("the READ");
    assert_eq!(got, REQ);
    // committed: the tag now has only a FETCH_REQ pending, no request
    for (what, len, flags) in [("READ_TO_READ", REQ as u32, R2R), ("DIRECT", 512, DIRECT)] {
        must(check::cqe(
            &format!("{what} splice at the tag of a committed request"),
            h.splice(&mut ring, pos, &out, REQ_OFF as i64, len, flags),
            -libc::EINVAL,
        ));
    }
    must(h.still_works(6));
    must(h.finish());
}

/// A request the server fails: the I/O sees EIO, the device keeps working (HoldTarget
/// after a partial splice, and FailTarget).
#[test]
fn failed_requests_reach_the_reader() {
    let h = must(held(true, 0));
    let (io, req) = must(h.held_io(None));
    let out = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = must(Ring::new());
    must(check::cqe(
        "part of the request",
        h.splice(
            &mut ring,
            ublk_splice_pos(0, req.tag, 0),
            &out,
            REQ_OFF as i64,
            4096,
            R2R,
        ),
        4096,
    ));
    h.target.release(Release::Commit(-libc::EIO));
    let r = io.join().expect("the I/O thread");
    assert!(r.is_err(), "a READ the server failed returned {r:?}");
    must(h.still_works(4));
    must(h.finish());

    must(fresh());
    let bf = must(backing_file(Backing::Buffered, 4 << 20)).expect("backing");
    let t = Arc::new(Fail::target(must(LoopTarget::open(&bf.path, true))));
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = true;
    let dev = must(Device::start_with(&cfg, t.clone()));
    t.arm(Some((UBLK_IO_OP_WRITE, libc::EIO)));
    let f = must(open_direct(&dev.block_path()));
    let buf = AlignedBuf::filled(4096, 1);
    let e = f.write_at(buf.as_slice(), 0);
    assert_eq!(
        e.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::EIO)),
        "a WRITE the server failed: {e:?}"
    );
    assert!(t.failed() >= 1);
    t.arm(None);
    assert_eq!(f.write_at(buf.as_slice(), 0).expect("WRITE after"), 4096);
    drop(f);
    must(dev.stop_and_delete());
}
