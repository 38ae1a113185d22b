//! Faults around lends of series v3, each under a time limit of its own ([`zc_test`]:
//! a hang fails the test by name, after the blocked tasks are dumped) and with the
//! kernel log of the test checked for splats:
//!
//! - cancellation of a punted lend: a direct splice from /dev/ublkcN with IOSQE_ASYNC
//!   into a full TCP socket (or READ_TO_READ from an empty one) blocks in io-wq;
//!   IORING_OP_ASYNC_CANCEL (or closing the ring) ends it, with a result a program can
//!   see (never a kernel-internal errno), the request it borrowed from can then be served
//!   or, committed before the cancel, ends after it, and the device is deleted;
//! - the queue's daemon exits while a request's pages are lent to a splice blocked in a
//!   socket: the driver aborts the request, but it ends (EIO) only once the lend is given
//!   back;
//! - kill -9 of a zero-copy server, and removal of a device, under load with lends in
//!   flight, on O_DIRECT backings: an ext4 file (sparse, and preallocated) on the scratch
//!   disk, and a loop device over a scratch file: every I/O ends with data (checked) or
//!   EIO (or, once the disk is gone, its end), every device is deleted.  Rounds:
//!   `UBLK_ZC_FAULT_ROUNDS` (default 3; 20 for a debug-kernel soak);
//! - reissue: QD32 zero copy onto a loop device whose queue has 4 tags (O_DIRECT):
//!   refused nowait bios (BLK_STS_AGAIN, seen by a kprobe on bio_endio) are retried by
//!   io_uring itself, the data is right (fio verify) and the server never sees -EAGAIN;
//! - fsfreeze -f / -u of the ext4 holding sparse backings after buffered and O_DIRECT
//!   zero-copy writes: the freeze returns (sb_writers balanced), writes wait while
//!   frozen and complete after the thaw, a second freeze returns too, e2fsck is clean.
//!
//! All need the series.

mod zc_fixtures;

use anyhow::{anyhow, bail, Context, Result};
use io_uring::{opcode, squeue, types, IoUring};
use rstest::rstest;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig, TargetConfig};
use ublk_suite::blockio::{check_sectors, fill_block, open_buffered, open_direct, AlignedBuf, Rng};
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::scratch::{self, Fs, ScratchDir};
use ublk_suite::tracefs::Kprobe;
use ublk_suite::ublkcli::{spawn_fg, ublk_cli};
use ublk_suite::ublkdev::{fresh, no_devices, require_splice_zc};
use zc_fixtures::*;

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;
const REQ: usize = 64 << 10;
const SPLICE_UD: u64 = 0x5b1;
const CANCEL_UD: u64 = 0xca1;

/// The direct splice of the request at `tag` into (WRITE) or from (READ_TO_READ) the
/// socket `sock`, straight to io-wq (IOSQE_ASYNC).
fn lend_sqe(char_fd: i32, tag: u16, sock: i32, write: bool) -> squeue::Entry {
    opcode::Splice::new(
        types::Fd(char_fd),
        ublk_splice_pos(0, tag, 0) as i64,
        types::Fd(sock),
        0,
        REQ as u32,
    )
    .flags(if write { DIRECT } else { R2R })
    .build()
    .flags(squeue::Flags::ASYNC)
    .user_data(SPLICE_UD)
}

/// Where an io-wq worker sleeps when its lend is blocked in the socket.
fn blocked_in(write: bool) -> &'static [&'static str] {
    if write {
        &["sk_stream_wait_memory"]
    } else {
        &["sk_wait_data"]
    }
}

/// Submits the lend and waits until an io-wq worker sleeps in the socket with it; fails
/// if the splice completes instead.
fn block_a_lend(ring: &mut IoUring, sqe: &squeue::Entry, write: bool) -> Result<String> {
    submit(ring, sqe)?;
    let mut done = None;
    let mut worker = None;
    wait_until(
        "an io-wq worker sleeping in the socket with the lend",
        Duration::from_secs(30),
        || {
            if let Some(c) = ring.completion().next() {
                done = Some(c.result());
                return true;
            }
            worker = iowq_worker_in(blocked_in(write));
            worker.is_some()
        },
    )?;
    if let Some(r) = done {
        bail!(
            "the lend into the socket completed at once ({}): the test cannot hold it in io-wq",
            res(r)
        );
    }
    worker.ok_or_else(|| anyhow!("no worker"))
}

/// A CQE result a cancelled splice may have: cancelled, interrupted, or done (bytes).
fn check_cancelled_result(what: &str, r: i32) -> Result<()> {
    if is_kernel_internal_errno(r) {
        bail!(
            "{what}: the CQE carries the kernel-internal errno {r} (ERESTARTSYS is 512), which \
             must never reach userspace (io_uring's read and write turn it into EINTR)"
        );
    }
    if r < 0 && r != -libc::ECANCELED && r != -libc::EINTR {
        bail!(
            "{what}: {}, expected ECANCELED, EINTR or a byte count",
            res(r)
        );
    }
    if r > REQ as i32 {
        bail!("{what}: {r} bytes, more than the {REQ} lent");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// A WRITE lent to a full socket, IORING_OP_ASYNC_CANCEL, then the request is served.
    WriteAsyncCancel,
    /// The same, the request committed while its lend is blocked: it ends after the cancel.
    WriteCommittedThenCancel,
    /// A WRITE lent to a full socket, then the test's ring is closed (io_uring's exit
    /// cancels the lend), then the request is served.
    WriteRingExit,
    /// A READ_TO_READ lend from an empty socket, IORING_OP_ASYNC_CANCEL, then the request
    /// is served from the backing: none of the cancelled read shows.
    ReadAsyncCancel,
}

/// Cancellation of a lend punted to io-wq and blocked in its destination.
#[rstest]
fn cancel_punted_lend(
    #[values(
        How::WriteAsyncCancel,
        How::WriteCommittedThenCancel,
        How::WriteRingExit,
        How::ReadAsyncCancel
    )]
    case: How,
) {
    zc_test("cancel_punted_lend", 150, move || cancel_case(case))
}

fn cancel_case(case: How) -> Result<()> {
    let write = case != How::ReadAsyncCancel;
    let h = Held::start(4, REQ)?;
    let old = pattern(0xc0c0, REQ);
    h.backing_write(h.req_off, &old)?;
    let (tx, rx) = tcp_pair()?;
    let data = pattern(0xc1c1, REQ);
    let (io, req, sock) = if write {
        let junk = fill_socket(&tx, &rx)?;
        note(&format!("the socket is full after {junk} bytes"));
        let (io, req) = h.held_io(Some(data.clone()))?;
        (io, req, tx.as_raw_fd())
    } else {
        let (io, req) = h.held_io(None)?;
        (io, req, rx.as_raw_fd())
    };
    let mut ring = IoUring::new(8).context("io_uring_setup")?;
    let sqe = lend_sqe(h.char_fd().as_raw_fd(), req.tag, sock, write);
    let worker = block_a_lend(&mut ring, &sqe, write)?;
    println!("{case:?}: the lend of tag {} blocks in {worker}", req.tag);
    if case == How::WriteCommittedThenCancel {
        h.target.go(Go::Commit(REQ as i32));
        // a request committed while lent ends only after its lend: give a wrong end time
        std::thread::sleep(Duration::from_millis(500));
        if io.is_finished() {
            bail!("the WRITE ended after its commit while its pages were still lent");
        }
    }
    let mut outcome = String::new();
    if case == How::WriteRingExit {
        drop(ring);
        outcome.push_str("ring closed");
    } else {
        submit(
            &mut ring,
            &opcode::AsyncCancel::new(SPLICE_UD)
                .build()
                .user_data(CANCEL_UD),
        )?;
        let (r, others) = wait_cqe_of(&mut ring, SPLICE_UD, Duration::from_secs(30))
            .context("the cancelled splice")?;
        let c = match others.iter().find(|(u, _)| *u == CANCEL_UD) {
            Some((_, c)) => *c,
            None => {
                wait_cqe_of(&mut ring, CANCEL_UD, Duration::from_secs(30))
                    .context("the cancel request")?
                    .0
            }
        };
        outcome = format!("splice {}, cancel {}", res(r), res(c));
        println!("{case:?}: {outcome}");
        check_cancelled_result("the cancelled splice", r)?;
        if c != 0 && c != -libc::EALREADY {
            bail!(
                "IORING_OP_ASYNC_CANCEL of a running lend: {}, expected 0 or EALREADY",
                res(c)
            );
        }
    }
    if case != How::WriteCommittedThenCancel {
        h.target.go(Go::Serve);
    }
    let r = join_within("the held I/O", io, Duration::from_secs(30))?;
    println!(
        "{case:?}: {outcome}; the held {} returned {:?}",
        if write { "WRITE" } else { "READ" },
        r.as_ref().map(|x| x.0)
    );
    let (n, got) = r.context("the held I/O after the cancel")?;
    if n != REQ {
        bail!("the held I/O returned {n} of {REQ} bytes");
    }
    if write {
        if case != How::WriteCommittedThenCancel {
            let b = ublk_suite::files::read_at(
                &ublk_suite::files::open_ro(&h.backing)?,
                h.req_off,
                REQ,
            )?;
            check_bytes(
                "the backing after the WRITE was served",
                h.req_off,
                &b,
                &data,
            )?;
        }
    } else {
        check_bytes(
            "the READ served after the cancelled lend",
            h.req_off,
            &got,
            &old,
        )?;
    }
    drop((tx, rx));
    h.finish()?;
    no_devices()
}

// ---------------------------------------------------------------------------------
// The queue's daemon exits with a lend held
// ---------------------------------------------------------------------------------

/// The queue's daemon (the queue thread) ends while the held request's pages are lent
/// to a splice, from the test's own ring, blocked in a socket.  The driver's monitor
/// finds the daemon dead and aborts the request, and the device's removal begins
/// (/sys/block/ublkbN goes: del_gendisk now waits for the request); the reader (or
/// writer) must still be waiting: the request cannot end while its pages are lent.
/// Once the socket lets the splice finish, the lend is given back and the I/O fails
/// with EIO.
#[rstest]
fn daemon_exit_with_a_lend_held(#[values(true, false)] write: bool) {
    zc_test("daemon_exit_with_a_lend_held", 150, move || {
        daemon_exit_case(write)
    })
}

fn daemon_exit_case(write: bool) -> Result<()> {
    let h = Held::start(4, REQ)?;
    let id = h.dev().id();
    let (mut tx, mut rx) = tcp_pair()?;
    let data = pattern(0xdead, REQ);
    let (io, req, sock, junk) = if write {
        let junk = fill_socket(&tx, &rx)?;
        let (io, req) = h.held_io(Some(data.clone()))?;
        (io, req, tx.as_raw_fd(), junk)
    } else {
        let (io, req) = h.held_io(None)?;
        (io, req, rx.as_raw_fd(), 0)
    };
    let mut ring = IoUring::new(8).context("io_uring_setup")?;
    let sqe = lend_sqe(h.char_fd().as_raw_fd(), req.tag, sock, write);
    let worker = block_a_lend(&mut ring, &sqe, write)?;
    note(&format!("the lend of tag {} blocks in {worker}", req.tag));

    h.target.go(Go::ExitThread);
    wait_until("the queue thread ends", Duration::from_secs(20), || {
        h.target
            .exited_tid()
            .is_some_and(|t| gone(Path::new(&format!("/proc/self/task/{t}"))))
    })?;
    let t_exit = Instant::now();
    let sys = PathBuf::from(format!("/sys/block/ublkb{id}"));
    wait_until(
        "the driver aborts the queue and starts removing the disk (/sys/block/ublkbN goes)",
        Duration::from_secs(60),
        || gone(&sys),
    )?;
    let t_gone = t_exit.elapsed();
    // the monitor aborted the request before it scheduled the removal that is now
    // waiting: the request must still be there, held by its lend
    std::thread::sleep(Duration::from_secs(1));
    let early = io.is_finished();
    let cqe_early = ring.completion().next().map(|c| c.result());
    if early || cqe_early.is_some() {
        bail!(
            "after the daemon died the held I/O ended ({early}) or the lend completed \
             ({cqe_early:?}) while the lend was still blocked in the socket: the request \
             ended before its lend"
        );
    }
    // let the lend finish
    let drain = if write {
        Some(std::thread::spawn(move || {
            let mut got = vec![0u8; junk + REQ];
            rx.set_read_timeout(Some(Duration::from_secs(30))).ok();
            rx.read_exact(&mut got).map(|_| got)
        }))
    } else {
        tx.write_all(&pattern(0xfeed, REQ))
            .context("sending to the socket")?;
        None
    };
    let (r, _) = wait_cqe_of(&mut ring, SPLICE_UD, Duration::from_secs(30))
        .context("the lend after the socket let it go")?;
    let io_r = join_within(
        "the held I/O after the lend ended",
        io,
        Duration::from_secs(30),
    )?;
    println!(
        "{}: the daemon's death to the disk's removal {t_gone:?}; the lend then {}; the held \
         I/O {:?}",
        if write { "WRITE" } else { "READ" },
        res(r),
        io_r.as_ref().map(|x| x.0)
    );
    match &io_r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => bail!(
            "the I/O of a request aborted with its pages lent returned {:?}, expected EIO",
            other.as_ref().map(|x| x.0)
        ),
    }
    if write {
        if r != REQ as i32 {
            bail!(
                "the lend into the drained socket: {}, expected {REQ}",
                res(r)
            );
        }
        let got = join_within(
            "draining the socket",
            drain.expect("drain"),
            Duration::from_secs(30),
        )?
        .context("reading the socket")?;
        check_bytes(
            "the lent WRITE's data at the socket's peer",
            0,
            &got[junk..],
            &data,
        )?;
    } else if r <= 0 || r > REQ as i32 {
        bail!(
            "the READ_TO_READ lend from the socket: {}, expected 1..={REQ} bytes",
            res(r)
        );
    }
    drop(ring);
    match h.finish() {
        Ok(()) => {}
        Err(e)
            if format!("{e:#}")
                == format!("deleting ublk device {id}: a queue thread panicked") => {}
        Err(e) => return Err(e.context("deleting the device whose daemon died")),
    }
    no_devices()
}

// ---------------------------------------------------------------------------------
// kill -9 and removal under load, on O_DIRECT backings
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bk {
    /// A sparse file on the scratch disk's ext4 (writes to holes allocate: punted).
    Ext4Sparse,
    /// A file of the same size allocated up front (fallocate: unwritten extents).
    Ext4Prealloc,
    /// A loop device over a file on the scratch disk, opened O_DIRECT.
    LoopDev,
}

const DEV_SIZE: u64 = 64 << 20;
const READ_SEED: u64 = 0x7eed;

/// A backing for one round; the readers' half (the second) holds READ_SEED sectors.
struct RoundBacking {
    path: PathBuf,
    file: PathBuf,
    _loop: Option<ublk_suite::loopdev::LoopDev>,
}

impl Drop for RoundBacking {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn round_backing(b: Bk) -> Result<RoundBacking> {
    let file = scratch::disk_mount_point()?.join(format!(
        "faults-{}-{}.img",
        std::process::id(),
        unique()
    ));
    let f = std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
    f.set_len(DEV_SIZE).context("sizing the backing")?;
    if b == Bk::Ext4Prealloc {
        // SAFETY: fallocate on a file we just created, mode 0 (allocate).
        if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, DEV_SIZE as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error()).context("fallocate of the backing");
        }
    }
    let mut buf = AlignedBuf::new(1 << 20);
    let mut off = DEV_SIZE / 2;
    while off < DEV_SIZE {
        fill_block(buf.as_mut_slice(), off, READ_SEED);
        f.write_all_at(buf.as_slice(), off)
            .context("filling the readers' half")?;
        off += 1 << 20;
    }
    f.sync_all().context("fsync of the backing")?;
    drop(f);
    let (path, lo) = match b {
        Bk::LoopDev => {
            let lo = ublk_suite::loopdev::attach(&file)?;
            (lo.path.clone(), Some(lo))
        }
        _ => (file.clone(), None),
    };
    Ok(RoundBacking {
        path,
        file,
        _loop: lo,
    })
}

/// How an I/O thread ended.
enum End {
    /// Told to stop (never happens before the fault in these tests).
    Stopped,
    /// EIO.
    Eio,
    /// The disk is gone: a read of 0 bytes (its size is 0), a write refused with ENOSPC.
    DiskGone(String),
    /// Anything else: a failure of the test.
    Bad(String),
}

/// O_DIRECT I/O of 4 KiB .. 256 KiB at random in the writers' half (writers) or the
/// readers' half (readers, which check every sector they get) until an error.
fn hammer(
    f: std::fs::File,
    write: bool,
    seed: u64,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> (u64, End) {
    let mut rng = Rng::new(seed);
    let mut buf = AlignedBuf::new(256 << 10);
    let half = DEV_SIZE / 2;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let len = (1 + rng.below(64)) * 4096;
        let off = if write { 0 } else { half } + rng.below((half - len) / 4096 + 1) * 4096;
        let b = &mut buf.as_mut_slice()[..len as usize];
        let r = if write {
            fill_block(b, off, seed << 20 | n);
            f.write_at(b, off)
        } else {
            f.read_at(b, off)
        };
        match r {
            Ok(0) if !write => return (n, End::DiskGone("a read of 0 bytes".into())),
            Ok(k) => {
                if !write {
                    let k = k / 512 * 512;
                    if let Err(e) = check_sectors(
                        "a read under the fault",
                        &b[..k],
                        off,
                        &vec![READ_SEED; k / 512],
                    ) {
                        return (n, End::Bad(format!("{e:#}")));
                    }
                }
                n += 1;
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return (n, End::Eio),
            Err(e) if write && e.raw_os_error() == Some(libc::ENOSPC) => {
                return (n, End::DiskGone("a write refused with ENOSPC".into()))
            }
            Err(e) => {
                return (
                    n,
                    End::Bad(format!(
                        "{} at {off}, {len} bytes: {e}",
                        if write { "write" } else { "read" }
                    )),
                )
            }
        }
    }
    (n, End::Stopped)
}

type Hammers = Vec<std::thread::JoinHandle<(u64, End)>>;

/// Three writers and three readers on `dev`; returns once they have done 12 I/Os.
fn start_hammers(dev: &Path, round: usize) -> Result<(Hammers, Arc<AtomicBool>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    // every thread has its fd before the fault: an open after it is no I/O under load
    let mut fds = Vec::new();
    for _ in 0..6 {
        fds.push(open_direct(dev)?);
    }
    let hs = fds
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let (s, o) = (stop.clone(), ops.clone());
            let seed = 1 + i as u64 + 16 * round as u64;
            std::thread::spawn(move || hammer(f, i % 2 == 0, seed, s, o))
        })
        .collect();
    let r = wait_until(
        "12 I/Os done before the fault",
        Duration::from_secs(60),
        || ops.load(Ordering::Relaxed) >= 12,
    );
    if let Err(e) = r {
        stop.store(true, Ordering::Relaxed);
        return Err(e);
    }
    Ok((hs, stop))
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Stopped => f.write_str("stopped"),
            End::Eio => f.write_str("EIO"),
            End::DiskGone(how) => write!(f, "disk gone ({how})"),
            End::Bad(why) => write!(f, "BAD: {why}"),
        }
    }
}

/// Every I/O thread ends within 60 s with EIO or the disk's end: the counts of each.
fn end_hammers(hs: Hammers, what: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ends = Vec::new();
    for h in hs {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, end) = join_within(&format!("{what}: an I/O thread ends"), h, left)?;
        ends.push((n, end));
    }
    let all: Vec<String> = ends
        .iter()
        .map(|(n, e)| format!("{n} I/Os, then {e}"))
        .collect();
    if ends
        .iter()
        .any(|(_, e)| matches!(e, End::Bad(_) | End::Stopped))
    {
        bail!("{what}: I/O threads ended badly: {}", all.join("; "));
    }
    Ok(all.join("; "))
}

fn fault_rounds() -> usize {
    std::env::var("UBLK_ZC_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// kill -9 of a zero-copy CLI server (2 queues, depth 32, O_DIRECT backing) with six
/// threads of I/O on its device: every I/O ends, with checked data or EIO (or the disk's
/// end once the driver removed it), and `ublk del` deletes the device.
#[rstest]
fn kill_9_with_lends_in_flight(#[values(Bk::Ext4Sparse, Bk::Ext4Prealloc, Bk::LoopDev)] b: Bk) {
    let rounds = fault_rounds();
    zc_test(
        "kill_9_with_lends_in_flight",
        60 + 90 * rounds as u64,
        move || {
            fresh()?;
            require_splice_zc()?;
            let dir = ScratchDir::new(Fs::Tmpfs)?;
            let t0 = Instant::now();
            for round in 0..rounds {
                let bk = round_backing(b)?;
                let path = bk.path.to_string_lossy().to_string();
                let out = dir.join(&format!("srv{round}.out"));
                let mut srv = spawn_fg(
                    &["-t", "loop", "-f", &path, "-z", "-q", "2", "-d", "32"],
                    &out,
                )?;
                let dev = ublk::device::block_path(srv.id);
                let (hs, _stop) = start_hammers(&dev, round)?;
                srv.child.kill().context("kill -9 of the server")?;
                let _ = srv.child.wait();
                let t_kill = Instant::now();
                let ends = end_hammers(hs, &format!("{b:?} round {round}"))?;
                let io_end = t_kill.elapsed();
                let del = ublk_cli(&["del", "-n", &srv.id.to_string(), "--timeout", "30"])?;
                if !del.ok {
                    bail!("{b:?} round {round}: ublk del after kill -9: {}", del.text);
                }
                no_devices()?;
                println!("{b:?} round {round}: I/O ended {io_end:?} after kill -9, deleted {:?} after; {ends}", t_kill.elapsed());
                let _ = std::fs::remove_file(&out);
            }
            println!("{b:?}: {rounds} rounds in {:?}", t0.elapsed());
            Ok(())
        },
    )
}

/// STOP_DEV and DEL_DEV of an in-process zero-copy device (2 queues, depth 32, O_DIRECT
/// backing) while six threads do I/O: every I/O ends, with checked data or EIO or the
/// disk's end, and the device goes.
#[rstest]
fn removal_with_lends_in_flight(#[values(Bk::Ext4Sparse, Bk::Ext4Prealloc, Bk::LoopDev)] b: Bk) {
    let rounds = fault_rounds();
    zc_test(
        "removal_with_lends_in_flight",
        60 + 90 * rounds as u64,
        move || {
            fresh()?;
            require_splice_zc()?;
            for round in 0..rounds {
                let bk = round_backing(b)?;
                let mut cfg = DeviceConfig::new();
                cfg.zero_copy = true;
                cfg.nr_queues = 2;
                cfg.depth = 32;
                let dev = Device::start(
                    &cfg,
                    &TargetConfig::Loop {
                        path: bk.path.clone(),
                        buffered: false,
                    },
                )?;
                let path = dev.block_path();
                let (hs, _stop) = start_hammers(&path, round)?;
                let t_del = Instant::now();
                let deleter = std::thread::spawn(move || {
                    let st = dev.stats();
                    dev.stop_and_delete().map(|()| st)
                });
                let ends = end_hammers(hs, &format!("{b:?} round {round}"))?;
                let io_end = t_del.elapsed();
                let st = join_within("the deletion under load", deleter, Duration::from_secs(60))??;
                no_devices()?;
                println!("{b:?} round {round}: I/O ended {io_end:?} after the removal began, deleted {:?} after; server {st:?}; {ends}", t_del.elapsed());
            }
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------
// Reissue: a loop device out of tags
// ---------------------------------------------------------------------------------

fn tracing_on() -> Result<()> {
    let p = ublk_suite::tracefs::root()?.join("tracing_on");
    std::fs::write(&p, "1").with_context(|| format!("writing 1 to {}", p.display()))
}

/// QD32 zero copy (fio, 64 KiB random writes then their verification) onto a loop
/// device, opened O_DIRECT, whose queue has 4 tags: nowait bios find no tag and end with
/// BLK_STS_AGAIN after their splice was issued (a kprobe on bio_endio counts them; the
/// test fails if there is none, as it would not test the reissue), io_uring issues those
/// splices again itself: all I/O completes with the right data, the server never sees
/// -EAGAIN, nothing hangs.
#[test]
fn qd32_onto_a_loop_device_out_of_tags() {
    zc_test("qd32_onto_a_loop_device_out_of_tags", 300, || {
        fresh()?;
        require_splice_zc()?;
        let dir = ScratchDir::new(Fs::Tmpfs)?;
        let file = dir.join("loop.img");
        std::fs::File::create(&file)?.set_len(DEV_SIZE)?;
        let lo = ublk_suite::loopdev::attach(&file)?;
        let name = lo
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let nr = format!("/sys/block/{name}/queue/nr_requests");
        std::fs::write(&nr, "4").with_context(|| format!("writing 4 to {nr}"))?;
        let got = std::fs::read_to_string(&nr)?;
        if got.trim() != "4" {
            bail!("{nr} is {} after writing 4", got.trim());
        }
        let mut cfg = DeviceConfig::new();
        cfg.zero_copy = true;
        cfg.depth = 64;
        let dev = Device::start(
            &cfg,
            &TargetConfig::Loop {
                path: lo.path.clone(),
                buffered: false,
            },
        )?;
        let again = Kprobe::new("bio_endio st=+24($arg1):u8")
            .context("kprobe on bio_endio with bi_status")?;
        again.filter("st == 12")?;
        tracing_on()?;
        let fio = scratch::find_tool("fio").ok_or_else(|| anyhow!("fio is not installed"))?;
        let size = 32u64 << 20;
        let s0 = dev.stats();
        let t0 = Instant::now();
        let out = Command::new(fio)
            .args([
                "--name=starved",
                &format!("--filename={}", dev.block_path().display()),
                "--ioengine=libaio",
                "--iodepth=32",
                "--direct=1",
                "--rw=randwrite",
                "--bs=64k",
                &format!("--size={size}"),
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--output-format=json",
            ])
            .output()
            .context("running fio")?;
        let took = t0.elapsed();
        let json = String::from_utf8_lossy(&out.stdout).to_string();
        let st = dev.stats();
        let refused = again.traced()?;
        drop(again);
        dev.stop_and_delete()?;
        drop(lo);
        no_devices()?;
        println!(
            "QD32 zero copy onto {name} (nr_requests 4): fio {} in {took:?}; {refused} bios \
             ended BLK_STS_AGAIN; server {st:?} (from {s0:?})",
            out.status
        );
        if !out.status.success() {
            bail!(
                "fio failed ({}): {}\n{json}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let w = fio_bytes(&json, "write").ok_or_else(|| anyhow!("no write io_bytes in {json}"))?;
        let r = fio_bytes(&json, "read").ok_or_else(|| anyhow!("no read io_bytes in {json}"))?;
        if w != size || r != size {
            bail!("fio wrote {w} and verified {r} bytes, {size} each asked for");
        }
        if st.errors != 0 {
            bail!("the server committed {} failed requests", st.errors);
        }
        if refused == 0 {
            bail!(
                "no bio ended with BLK_STS_AGAIN: the loop device never ran out of tags, so \
                 the reissue path was not exercised"
            );
        }
        let eagain = st.eagain_retries - s0.eagain_retries;
        if eagain != 0 {
            bail!(
                "the server saw {eagain} splices complete with -EAGAIN: io_uring must issue a \
                 lend whose nowait bio found no tag again itself"
            );
        }
        Ok(())
    })
}

/// The `"io_bytes"` of the `section` ("read"/"write") of the first job in fio's JSON.
fn fio_bytes(json: &str, section: &str) -> Option<u64> {
    let jobs = json.find("\"jobs\"")?;
    let s = jobs + json[jobs..].find(&format!("\"{section}\" : {{"))?;
    let k = s + json[s..].find("\"io_bytes\" : ")? + "\"io_bytes\" : ".len();
    let end = json[k..].find(|c: char| !c.is_ascii_digit())?;
    json[k..k + end].parse().ok()
}

// ---------------------------------------------------------------------------------
// fsfreeze of the backing ext4
// ---------------------------------------------------------------------------------

/// `fsfreeze ARG MNT`, which must end within `secs`; Err names a hang.
fn fsfreeze(arg: &str, mnt: &Path, secs: u64) -> Result<Duration> {
    let exe = scratch::find_tool("fsfreeze")
        .ok_or_else(|| anyhow!("fsfreeze is not installed (util-linux)"))?;
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .arg(arg)
        .arg(mnt)
        .spawn()
        .context("spawning fsfreeze")?;
    wait_until(&format!("fsfreeze {arg} {} returns", mnt.display()), Duration::from_secs(secs), || {
        matches!(child.try_wait(), Ok(Some(_)))
    })
    .context("a freeze that does not return waits for a writer that never ends: sb_writers is unbalanced")?;
    let st = child.wait()?;
    if !st.success() {
        bail!("fsfreeze {arg} {}: {st}", mnt.display());
    }
    Ok(t0.elapsed())
}

/// Writes `len` bytes of `seed` at `off` of `dev`, O_DIRECT or buffered + fsync.
fn write_dev(dev: &Path, off: u64, len: usize, seed: u64, direct: bool) -> Result<Vec<u8>> {
    let f = if direct {
        open_direct(dev)?
    } else {
        open_buffered(dev)?
    };
    let mut buf = AlignedBuf::new(len);
    fill_block(buf.as_mut_slice(), off, seed);
    ublk_suite::blockio::full_write_at(&f, buf.as_slice(), off, "write through the device")?;
    if !direct {
        f.sync_all().context("fsync of the device")?;
    }
    Ok(buf.as_slice().to_vec())
}

/// Zero-copy devices on two sparse files of an ext4 of their own (on a loop image): one
/// served with buffered I/O, one with O_DIRECT; buffered and O_DIRECT writes through
/// each; then fsfreeze -f must return (every sb_start_write of the lends was ended), a
/// write through each device must wait while the filesystem is frozen and complete after
/// fsfreeze -u, a second freeze and thaw must return, and e2fsck finds the filesystem
/// clean with the data in the files.
#[test]
fn fsfreeze_after_zero_copy_writes_on_sparse_backings() {
    zc_test("fsfreeze_after_zero_copy_writes", 300, || {
        fresh()?;
        require_splice_zc()?;
        let dir = ScratchDir::new(Fs::Tmpfs)?;
        let (image, mnt) = (dir.join("fs.img"), dir.join("mnt"));
        scratch::mount_ext4_image(&image, 256 << 20, &mnt)?;
        let r = freeze_case(&mnt);
        // never leave it frozen
        if r.is_err() {
            let _ = Command::new("fsfreeze").arg("-u").arg(&mnt).status();
        }
        let um = nix::mount::umount(&mnt).with_context(|| format!("umount {}", mnt.display()));
        r?;
        um?;
        let fsck = ublk_suite::ublkcli::tool_ok("e2fsck", &["-fn", &image.to_string_lossy()])
            .context("e2fsck -fn of the frozen and thawed filesystem")?;
        let summary = fsck.lines().find(|l| l.contains(" files, ")).unwrap_or("");
        println!("e2fsck: {}", summary.trim());
        Ok(())
    })
}

fn freeze_case(mnt: &Path) -> Result<()> {
    let size = 32u64 << 20;
    let mut files = Vec::new();
    for name in ["buffered.img", "direct.img"] {
        let p = mnt.join(name);
        std::fs::File::create(&p)?.set_len(size)?;
        files.push(p);
    }
    let mut devs = Vec::new();
    for (p, buffered) in [(&files[0], true), (&files[1], false)] {
        let mut cfg = DeviceConfig::new();
        cfg.zero_copy = true;
        cfg.depth = 16;
        devs.push(Device::start(
            &cfg,
            &TargetConfig::Loop {
                path: p.clone(),
                buffered,
            },
        )?);
    }
    let r = (|| -> Result<()> {
        let mut written = Vec::new();
        for (i, d) in devs.iter().enumerate() {
            let p = d.block_path();
            for (k, direct) in [(0u64, true), (1, false), (2, true), (3, false)] {
                let off = (k * 5 + 1) << 20;
                let seed = 0xf0 + 16 * i as u64 + k;
                written.push((i, off, write_dev(&p, off, 1 << 20, seed, direct)?));
            }
        }
        let t_freeze = fsfreeze("-f", mnt, 60)?;
        // writes through both devices while frozen: they must wait for the thaw
        let pending: Vec<_> = devs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let p = d.block_path();
                let off = 24u64 << 20;
                (
                    i,
                    off,
                    std::thread::spawn(move || {
                        write_dev(&p, off, 256 << 10, 0xfe + i as u64, true)
                    }),
                )
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let early: Vec<_> = pending
            .iter()
            .filter(|(_, _, h)| h.is_finished())
            .map(|(i, _, _)| *i)
            .collect();
        let t_thaw = fsfreeze("-u", mnt, 60)?;
        for (i, off, h) in pending {
            let d = join_within(
                "a write issued while frozen, after the thaw",
                h,
                Duration::from_secs(60),
            )?
            .with_context(|| format!("the write through device {i} issued while frozen"))?;
            written.push((i, off, d));
        }
        if !early.is_empty() {
            bail!("writes through devices {early:?} (0 buffered, 1 O_DIRECT backing) completed while their backing's filesystem was frozen");
        }
        let t2 = (fsfreeze("-f", mnt, 60)?, fsfreeze("-u", mnt, 60)?);
        println!("fsfreeze -f {t_freeze:?}, -u {t_thaw:?}; again {t2:?}");
        for (i, off, want) in &written {
            let got =
                ublk_suite::blockio::read_range(&devs[*i].block_path(), true, *off, want.len())?;
            check_bytes(&format!("device {i} after the freezes"), *off, &got, want)?;
        }
        for (i, d) in devs.iter().enumerate() {
            let st = d.stats();
            println!("device {i}: {st:?}");
            if st.errors != 0 {
                bail!(
                    "device {i}: the server committed {} failed requests",
                    st.errors
                );
            }
        }
        // what the files hold, the devices gone
        for d in devs.drain(..) {
            d.stop_and_delete()?;
        }
        for (i, off, want) in &written {
            let got = ublk_suite::blockio::read_range(&files[*i], false, *off, want.len())?;
            check_bytes(&format!("backing file {i}"), *off, &got, want)?;
        }
        Ok(())
    })();
    for d in devs {
        d.stop_and_delete()?;
    }
    no_devices()?;
    r
}
