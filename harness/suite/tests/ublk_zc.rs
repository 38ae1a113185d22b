//! ublk devices in splice zero-copy mode (UBLK_F_SPLICE_ZC, bit 63, series v3): the
//! scenarios of ublk_copy.rs, the proof that nothing is copied and that the fast path
//! does not punt to io-wq, every errno of /dev/ublkcN's splice (io_uring's direct splice
//! at any length, 0 included, splice(2), sendfile(2) to a socket and to a file), lseek(2)
//! on /dev/ublkcN (ESPIPE), stable writes, a server that asks for bit 5, a READ committed
//! unfilled (the filled prefix in whole logical blocks; nothing filled: EIO), FETCH_REQ
//! without CAP_SYS_ADMIN, a stale tag, a WRITE range spliced twice (mirror), and a
//! zero-copy server killed mid-I/O.  The test servers are
//! the ublk crate's own queue loop with small test targets (ublk_suite::targets).  All
//! need the series: on a kernel without it they fail with "kernel lacks
//! UBLK_F_SPLICE_ZC ...".

mod ublk_common;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use rstest::rstest;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ublk::targets::{LoopTarget, Request};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig, TargetConfig};
use ublk_common::*;
use ublk_suite::blockio::{fill_block, open_direct, read_range, AlignedBuf};
use ublk_suite::check::{self, must};
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::kmsg::{splats, KmsgTail};
use ublk_suite::targets::{Fail, Hold, HoldTarget, Release, Underfill, UnderfillHooks};
use ublk_suite::tracefs::{error_log, kallsyms_lookup, Kprobe};
use ublk_suite::ublkcli::{self, spawn_dd, spawn_fg, ublk_cli};
use ublk_suite::ublkdev::no_devices;
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
    must(fresh());
    must(require_splice_zc());
    let bf = must(backing_file(Backing::Buffered, 8 << 20));
    let dev = must(start(MODE, bf.as_ref(), Backing::Buffered, 0, 1, 4));
    assert!(
        dev.flags() & UBLK_F_BIT5_UNPRIVILEGED_DEV == 0,
        "a zero-copy device must not be granted bit 5 (mainline's UBLK_F_UNPRIVILEGED_DEV): \
         flags {:#x}",
        dev.flags()
    );
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
    must(fresh());
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
// io-wq: the fast path does not punt
// ---------------------------------------------------------------------------------

/// Writes every byte of `path` (zeroes) and syncs it: the file's extents are then
/// allocated and written, so an O_DIRECT write to it is an overwrite that the filesystem
/// can do without blocking (a hole needs block allocation, which IOCB_NOWAIT refuses).
fn allocate_fully(path: &std::path::Path, size: u64) -> Result<()> {
    let f = ublk_suite::files::open_rw(path)?;
    let zeroes = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        f.write_all_at(&zeroes, off)
            .with_context(|| format!("filling {} at {off}", path.display()))?;
        off += zeroes.len() as u64;
    }
    f.sync_all().context("fsync of the backing")
}

/// One QD32 fio run (64 KiB random reads and writes, 64 MiB) on a device of `mode` over
/// `bf`: (io-wq punts, data requests, copy-path calls, server stats).
fn punts_run(
    mode: Mode,
    bf: &BackingFile,
    size: u64,
) -> Result<(u64, u64, u64, ublk::queue::QueueStatsSnapshot)> {
    let dev = start(mode, Some(bf), Backing::Direct, size, 1, 64)?;
    let fio =
        ublk_suite::scratch::find_tool("fio").ok_or_else(|| anyhow!("fio is not installed"))?;
    let wq_sym = kallsyms_lookup("io_wq_submit_work")?;
    let copy_sym = kallsyms_lookup("ublk_copy_user_pages")?;
    let punts =
        Kprobe::new(&wq_sym).with_context(|| format!("kprobe on {wq_sym} ({})", error_log()))?;
    let copies = Kprobe::new(&copy_sym)
        .with_context(|| format!("kprobe on {copy_sym} ({})", error_log()))?;
    let (p0, c0, s0) = (punts.hits()?, copies.hits()?, dev.stats());
    let out = std::process::Command::new(fio)
        .args([
            "--name=punts",
            &format!("--filename={}", dev.block_path().display()),
            "--ioengine=libaio",
            "--iodepth=32",
            "--direct=1",
            "--rw=randrw",
            "--bs=64k",
            "--size=32M",
            "--io_size=64M",
            "--output-format=terse",
        ])
        .output()
        .context("running fio")?;
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (p1, c1, s1) = (punts.hits()?, copies.hits()?, dev.stats());
    drop((punts, copies));
    dev.stop_and_delete()?;
    let reqs = (s1.reads - s0.reads) + (s1.writes - s0.writes);
    println!(
        "QD32 {mode:?} on ext4 O_DIRECT (allocated backing): {} io-wq punts ({wq_sym}) over \
         {reqs} data requests = {:.3} per request; copy path {copy_sym}: {} calls; server {s1:?}",
        p1 - p0,
        (p1 - p0) as f64 / reqs.max(1) as f64,
        c1 - c0
    );
    Ok((p1 - p0, reqs, c1 - c0, s1))
}

/// Zero copy on an O_DIRECT backing at queue depth 32: io_uring runs the direct splices
/// as async I/O, issued inline, and punts to io-wq (a kprobe on `io_wq_submit_work`
/// counts each punt) for at most 0.05 per zero-copy request (v1 punted every one).  The
/// copy path's probe counts 0 over the same run.  The backing is fully written first
/// (see [`allocate_fully`]); copy mode runs the same workload first, for comparison.
#[test]
fn io_wq_punts_per_zero_copy_request() {
    must(fresh());
    must(require_splice_zc());
    let _wd = ublk_suite::watchdog::Watchdog::new("io_wq_punts", 180);
    let size = 64u64 << 20;
    let bf = must(backing_file(Backing::Direct, size)).expect("backing");
    must(allocate_fully(&bf.path, size));
    let (copy_punts, copy_reqs, copy_calls, _) = must(punts_run(Mode::Copy, &bf, size));
    assert!(
        copy_calls >= copy_reqs,
        "copy mode: the copy-path probe counted {copy_calls} calls over {copy_reqs} requests"
    );
    let (n_punts, reqs, calls, _) = must(punts_run(MODE, &bf, size));
    let ratio = n_punts as f64 / reqs.max(1) as f64;
    println!(
        "io-wq punts per request: copy mode {:.3}, zero copy {ratio:.3}",
        copy_punts as f64 / copy_reqs.max(1) as f64
    );
    assert!(reqs >= 512, "only {reqs} data requests reached the server");
    assert_eq!(calls, 0, "zero-copy mode: the copy path ran {calls} times");
    assert!(
        ratio <= 0.05,
        "{n_punts} io-wq punts over {reqs} zero-copy requests ({ratio:.3} per request, at most \
         0.05 allowed): direct splices still go through io-wq"
    );
}

// ---------------------------------------------------------------------------------
// /dev/ublkcN's splice: every errno of the contract's table, on a request the test server holds
// ---------------------------------------------------------------------------------

const REQ: usize = 8192;
const REQ_OFF: u64 = 64 << 10;
const HELD_MAX_IO: u32 = 64 << 10;
const DEPTH: u16 = 4;

type HeldIo = std::thread::JoinHandle<std::io::Result<(usize, Vec<u8>)>>;

/// A one-queue device of DEPTH tags on a tmpfs file, served by the ublk crate's queue
/// loop with a [`HoldTarget`]: a data request can be held while the test splices.
struct Held {
    dev: Option<Device>,
    target: Arc<HoldTarget>,
    backing: BackingFile,
}

impl Held {
    /// `zero_copy`: ask for UBLK_F_SPLICE_ZC; `extra`: more flags to ask for.
    fn start(zero_copy: bool, extra: u64) -> Result<Held> {
        fresh()?;
        require_splice_zc()?;
        let backing =
            backing_file(Backing::Buffered, 4 << 20)?.ok_or_else(|| anyhow!("no backing file"))?;
        let target = Arc::new(Hold::target(LoopTarget::open(&backing.path, true)?));
        let mut cfg = DeviceConfig::new();
        cfg.zero_copy = zero_copy;
        cfg.extra_flags = extra;
        cfg.depth = DEPTH;
        cfg.max_io_buf_bytes = HELD_MAX_IO;
        let dev = Device::start_with(&cfg, target.clone())?;
        Ok(Held {
            dev: Some(dev),
            target,
            backing,
        })
    }

    fn dev(&self) -> &Device {
        self.dev.as_ref().expect("the device is running")
    }

    fn char_fd(&self) -> BorrowedFd<'_> {
        self.dev().char_fd().expect("the server's /dev/ublkcN")
    }

    fn block_path(&self) -> PathBuf {
        self.dev().block_path()
    }

    /// Writes `data` at `off` into the backing file directly.
    fn backing_write(&self, off: u64, data: &[u8]) -> Result<()> {
        ublk_suite::files::open_rw(&self.backing.path)?
            .write_all_at(data, off)
            .context("writing the backing file")
    }

    /// Issues one O_DIRECT READ (or WRITE of `data`) of REQ bytes at REQ_OFF in the
    /// background and returns the request the server holds for it.
    fn held_io(&self, write: Option<Vec<u8>>) -> Result<(HeldIo, Request)> {
        self.target.set_hold(true);
        let path = self.block_path();
        let h = std::thread::spawn(move || {
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
        let req = self.target.next_held(Duration::from_secs(20));
        self.target.set_hold(false);
        Ok((h, req?))
    }

    /// The device still works: write, read back, compare with the backing file.
    fn still_works(&self, seed: u64) -> Result<()> {
        let f = open_direct(&self.block_path())?;
        let mut buf = AlignedBuf::new(1 << 20);
        fill_block(buf.as_mut_slice(), 1 << 20, seed);
        let want = buf.as_slice().to_vec();
        ublk_suite::blockio::full_write_at(&f, buf.as_slice(), 1 << 20, "write after the cases")?;
        buf.as_mut_slice().fill(0);
        ublk_suite::blockio::full_read_at(&f, buf.as_mut_slice(), 1 << 20, "read after the cases")?;
        check_bytes("read back after the cases", 1 << 20, buf.as_slice(), &want)?;
        drop(f);
        let b = read_range(&self.backing.path, false, 1 << 20, 1 << 20)?;
        check_bytes("backing file after the cases", 1 << 20, &b, &want)
    }

    fn splice(
        &self,
        ring: &mut Ring,
        pos: u64,
        out: &File,
        off_out: i64,
        len: u32,
        flags: u32,
    ) -> i32 {
        must(ring.splice(&Splice::new(
            self.char_fd(),
            pos as i64,
            out.as_fd(),
            off_out,
            len,
            flags,
        )))
    }

    /// Stops and deletes the device, reporting errors.
    fn finish(mut self) -> Result<()> {
        self.target.close();
        match self.dev.take() {
            Some(d) => d.stop_and_delete(),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // a request still held is served, so the device can stop
        self.target.close();
    }
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
    let h = must(Held::start(true, 0));
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
    let h = must(Held::start(true, 0));
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
    let h = must(Held::start(false, 0));
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
    let h = must(Held::start(false, UBLK_F_BIT5_UNPRIVILEGED_DEV));
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
        let h = must(Held::start(zero_copy, 0));
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
        let h = must(Held::start(zero_copy, 0));
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
    let h = must(Held::start(true, 0));
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
    let h = must(Held::start(true, 0));
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

// ---------------------------------------------------------------------------------
// READ fill, privilege, mirror
// ---------------------------------------------------------------------------------

/// Reads 64 KiB at 1 MiB with O_DIRECT into a buffer pre-filled with a marker, from a
/// device whose under-fill target fills that READ as `how` says and commits it whole.
/// Every byte must be the backing data (never the marker: what the pages held before),
/// and the unfilled rest must come back to the server as a READ of its own, starting
/// where the filled prefix, in whole logical blocks, ended. A READ with nothing filled
/// fails with EIO instead, and nothing of it comes back.
fn underfilled_read(how: Underfill) -> Result<()> {
    fresh()?;
    require_splice_zc()?;
    let size = 4u64 << 20;
    let bf = backing_file(Backing::Buffered, size)?.ok_or_else(|| anyhow!("no backing"))?;
    let data = pattern(0x0f11, size as usize);
    ublk_suite::files::write_file(&bf.path, &data)?;
    let t = Arc::new(UnderfillHooks::target(LoopTarget::open(&bf.path, true)?));
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = true;
    cfg.depth = 4;
    let dev = Device::start_with(&cfg, t.clone())?;
    let lbs = ublk_suite::blockio::logical_block_size(&dev.block_path()) as u32;
    let (off, len) = (1u64 << 20, 64usize << 10);
    t.arm(how);
    let f = open_direct(&dev.block_path())?;
    let mut buf = AlignedBuf::filled(len, 0xa5);
    let n = f.read_at(buf.as_mut_slice(), off);
    drop(f);
    let log = t.log();
    let st = dev.stats();
    dev.stop_and_delete()?;
    println!(
        "{how:?} (logical block {lbs}): READ returned {n:?}; target log {log:?}; server {st:?}"
    );
    let want = &data[off as usize..off as usize + len];
    let got = buf.as_slice();
    // the bytes that still hold the marker where the backing has something else
    let marker: Vec<usize> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| **g == 0xa5 && **w != 0xa5)
        .map(|(i, _)| i)
        .collect();
    let [u] = log.underfilled[..] else {
        bail!("{how:?}: the target under-filled {:?}", log.underfilled);
    };
    let (_, filled) = how.fill(u.nr_sectors << 9, lbs);
    if how == Underfill::Nothing {
        match n {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            other => bail!(
                "{how:?}: a READ committed whole with nothing filled returned {other:?}, \
                 expected EIO"
            ),
        }
        if !log.remainders.is_empty() {
            bail!(
                "{how:?}: the failed READ came back to the server: {:?}",
                log.remainders
            );
        }
        if let Some(i) = got.iter().position(|&b| b != 0xa5) {
            bail!("{how:?}: the reader's buffer changed under a READ that failed (first at +{i})");
        }
        return Ok(());
    }
    let n = n.context("the O_DIRECT READ")?;
    if !marker.is_empty() {
        bail!(
            "{how:?}: {} bytes (first at +{}, last at +{}) still hold the marker: the pages' \
             old contents reached the reader of a READ committed with more bytes than were \
             filled",
            marker.len(),
            marker[0],
            marker[marker.len() - 1]
        );
    }
    check_bytes(
        &format!("the under-filled READ ({how:?})"),
        off,
        &got[..n],
        &want[..n],
    )?;
    if n != len {
        bail!("{how:?}: the READ returned {n} of {len} bytes");
    }
    let prefix = u64::from(filled >> 9);
    if !log
        .remainders
        .iter()
        .any(|r| r.start_sector == u.start_sector + prefix)
    {
        bail!(
            "{how:?}: the unfilled rest of {u:?} (from sector {}, after the filled prefix of \
             {filled} bytes) was not dispatched again: remainders {:?}",
            u.start_sector + prefix,
            log.remainders
        );
    }
    Ok(())
}

/// A READ committed with more bytes than were filled never shows what its pages held
/// before: the under-fill target splices only the first half of a 64 KiB READ and
/// commits 64 KiB; the kernel completes only the filled half and sends the rest again,
/// which the target then fills.
#[test]
fn read_committed_unfilled_never_shows_old_pages() {
    must(underfilled_read(Underfill::FirstHalf));
}

/// A fill after a hole does not count: the target fills the first quarter and the second
/// half of a READ (the second quarter stays a hole) and commits it whole; only the first
/// quarter is a filled prefix, so the rest (from the hole on) is sent again.
#[test]
fn read_fill_after_a_hole_does_not_count() {
    must(underfilled_read(Underfill::Hole));
}

/// The filled prefix counts in whole logical blocks (series v3): the target fills half
/// a READ, one logical block and 100 bytes, and commits it whole; the kernel completes
/// the half and the one block, and sends the rest again from the block after them.
#[test]
fn read_fill_is_rounded_down_to_the_logical_block() {
    must(underfilled_read(Underfill::Unaligned));
}

/// A READ committed whole with nothing filled fails with EIO (series v3; v2 sent it back
/// to the server), and the reader's buffer is not touched.
#[test]
fn read_with_nothing_filled_fails_with_eio() {
    must(underfilled_read(Underfill::Nothing));
}

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
