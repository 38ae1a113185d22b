//! The mirror target's two legs while writers change a WRITE's data under it, on a
//! zero-copy mirror (`UBLK_F_SPLICE_ZC`: each WRITE's pages are lent twice, once per leg)
//! and, as the baseline, on a copy-mode one (the driver copies a WRITE into the server's
//! buffer once, and both legs write that copy).  The legs are files on ext4 on the
//! scratch disk, written in full beforehand and served with O_DIRECT, where a lend's
//! write completes asynchronously.
//!
//! The server is the mirror target with a third step after a WRITE's two legs
//! ([`CheckedMirror`]): before the commit it reads the request's range back from both
//! files and compares them, so every WRITE is judged as its two legs received it, not
//! only by what the last writeback left (a page the page cache changed under writeback
//! is dirty again, and the next writeback would make the files equal again).
//!
//! - page-cache writers (series v3, M4): threads rewrite the same blocks of /dev/ublkbN
//!   with buffered write(2) and through a shared mapping while others force writeback
//!   (fdatasync, sync_file_range, msync, POSIX_FADV_DONTNEED) and drop the page cache.
//!   Stable pages keep the page cache off a page under writeback, so the two legs of
//!   every WRITE are equal, and once all is synced both files equal the device's page
//!   cache and an O_DIRECT read of the device, and hold only what the writers wrote.
//!   The run lasts 8 s, longer (up to 40 s) until it has done enough rewrites, forced
//!   writebacks, cache drops and compared WRITEs to mean anything, and fails if it has
//!   not; on the zero-copy mirror the writers must also have waited for pages under
//!   writeback (the tracepoint writeback:folio_wait_writeback, for their threads) at
//!   least 20 times.  The writers through the mapping are child processes: a store that
//!   waits for writeback in page_mkwrite holds the mmap_lock of its process, which the
//!   server's threads may need before they can finish that writeback.
//! - O_DIRECT writers whose own buffer another thread rewrites while the write is in
//!   flight: stable pages cannot protect a user buffer, so the legs may differ; each
//!   byte of each leg is one the buffer held during the write (no older data, nothing
//!   from elsewhere), and a clean rewrite makes the legs equal again.  A copy-mode
//!   mirror's legs are equal even then.  8 s, or up to 40 s until 40 WRITEs, 20 of them
//!   rewritten while in flight, have run.
//!
//! All need the series (the copy-mode runs are the zero-copy runs' baseline and are
//! only read next to them): on a kernel without it they fail with "kernel lacks
//! UBLK_F_SPLICE_ZC ...".

mod zc_fixtures;

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ublk::targets::{Action, Hooks, Io, IoOp, MirrorTarget, Request, Target, Wrap};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig};
use ublk_suite::blockio::{full_read_at, open_buffered, open_direct, read_range, AlignedBuf, Rng};
use ublk_suite::ublkdev::{fresh, no_devices, require_splice_zc};
use zc_fixtures::{join_within, note, unique, zc_test};

/// The device (and each leg file).
const DEV_SIZE: u64 = 8 << 20;
/// The blocks the page-cache writers fight over (64 pages at the start of the device).
const HOT: u64 = 256 << 10;
/// How long the writers run, and how much longer they may run on a slow kernel (the
/// debug one under TCG) until every count of [`PC_MINS`] (or [`DIO_MINS`]) is reached.
const CHURN: Duration = Duration::from_secs(8);
const CHURN_MAX: Duration = Duration::from_secs(40);
/// What a page-cache run must have done to mean anything.  In 8 s a patched kernel under
/// TCG does 10 to 30 times these; the debug one (KASAN, lockdep, kmemleak) 2 to 6 times
/// the rewrites but as few as half the forced writebacks and WRITEs, hence CHURN_MAX.
const PC_MINS: [(&str, u64); 5] = [
    ("write(2) rewrites", 200),
    ("rewrites through the mapping", 200),
    ("forced writebacks", 30),
    ("cache drops", 4),
    ("WRITE requests compared", 100),
];
const PAGE: u64 = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn mode_name(zero_copy: bool) -> &'static str {
    if zero_copy {
        "zero-copy"
    } else {
        "copy-mode"
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

// ---------------------------------------------------------------------------------
// The legs and the server
// ---------------------------------------------------------------------------------

/// The two leg files of a mirror on ext4 on the scratch disk, written in full (an
/// O_DIRECT write into them is an overwrite, which needs no allocation and does not
/// block); removed when dropped.
struct LegFiles {
    paths: [PathBuf; 2],
}

impl LegFiles {
    fn new() -> Result<LegFiles> {
        let dir = ublk_suite::scratch::disk_mount_point()?;
        let n = unique();
        let paths =
            ["a", "b"].map(|l| dir.join(format!("mirror{}-{n}-{l}.img", std::process::id())));
        let legs = LegFiles { paths };
        let zeroes = vec![0u8; 1 << 20];
        for p in &legs.paths {
            let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
            let mut off = 0;
            while off < DEV_SIZE {
                f.write_all_at(&zeroes, off)
                    .with_context(|| format!("filling {} at {off}", p.display()))?;
                off += zeroes.len() as u64;
            }
            f.sync_all()
                .with_context(|| format!("fsync of {}", p.display()))?;
        }
        Ok(legs)
    }

    /// All of leg `i` as the disk holds it (O_DIRECT).
    fn read(&self, i: usize) -> Result<Vec<u8>> {
        read_range(&self.paths[i], true, 0, DEV_SIZE as usize)
    }
}

impl Drop for LegFiles {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What [`CheckedMirror`] saw of the WRITEs it compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Compared {
    /// WRITE requests whose two legs were read back and compared.
    writes: u64,
    /// ... of which the two legs differ.
    differed: u64,
    /// 512-byte sectors in which they differ, over all of those.
    sectors: u64,
}

/// The hooks of the mirror target (O_DIRECT legs) with a step after a WRITE's two legs:
/// the request's range is read back from both files (O_DIRECT, on descriptors of its
/// own) and compared before the request is committed.  While the request is not committed
/// no other WRITE of the page cache can cover its pages (a page under writeback is not
/// written back again until that ends), and the writers of the O_DIRECT test keep to
/// regions of their own, so what is read back is what the two legs of this request
/// wrote.
struct CheckedMirror {
    legs: [File; 2],
    seen: Mutex<Compared>,
    /// The first WRITE whose legs differ, described; and the first read-back error.
    first_diff: Mutex<Option<String>>,
    error: Mutex<Option<String>>,
}

/// The mirror with [`CheckedMirror`]'s hooks.
type CheckedMirrorTarget = Wrap<CheckedMirror, MirrorTarget>;

impl CheckedMirror {
    fn open(files: &LegFiles) -> Result<CheckedMirrorTarget> {
        let inner = MirrorTarget::open(&files.paths[0], &files.paths[1], false)?;
        let ro = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(p)
                .with_context(|| format!("opening {} with O_DIRECT", p.display()))
        };
        Ok(Wrap::new(
            inner,
            CheckedMirror {
                legs: [ro(&files.paths[0])?, ro(&files.paths[1])?],
                seen: Mutex::new(Compared::default()),
                first_diff: Mutex::new(None),
                error: Mutex::new(None),
            },
        ))
    }

    fn compare(&self, req: &Request) -> Result<()> {
        let (off, len) = (req.offset(), req.bytes() as usize);
        let mut a = AlignedBuf::new(len);
        let mut b = AlignedBuf::new(len);
        full_read_at(&self.legs[0], a.as_mut_slice(), off, "reading leg a back")?;
        full_read_at(&self.legs[1], b.as_mut_slice(), off, "reading leg b back")?;
        let (a, b) = (a.as_slice(), b.as_slice());
        let differ = a
            .chunks(512)
            .zip(b.chunks(512))
            .filter(|(x, y)| x != y)
            .count() as u64;
        let mut seen = lock(&self.seen);
        seen.writes += 1;
        if differ > 0 {
            seen.differed += 1;
            seen.sectors += differ;
            let mut first = lock(&self.first_diff);
            if first.is_none() {
                let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
                *first = Some(format!(
                    "the WRITE of {len} bytes at {off} (queue {}, tag {}) reached the legs \
                     differently in {differ} of its sectors, first at byte {} (leg a {:#04x}, \
                     leg b {:#04x})",
                    req.q_id,
                    req.tag,
                    off + i as u64,
                    a[i],
                    b[i]
                ));
            }
        }
        Ok(())
    }

    fn seen(&self) -> Compared {
        *lock(&self.seen)
    }

    /// Fails if a read-back failed.
    fn check_errors(&self) -> Result<()> {
        match lock(&self.error).clone() {
            Some(e) => bail!("the server's read-back of a WRITE's legs failed: {e}"),
            None => Ok(()),
        }
    }
}

impl Hooks<MirrorTarget> for CheckedMirror {
    fn kind(&self) -> &'static str {
        "checked-mirror"
    }
    /// Once the mirror would commit a WRITE (both legs done), its legs are compared
    /// first: equal or not, it is committed whole; a failed read-back fails it.
    fn io_done(&self, inner: &MirrorTarget, io: &mut Io, op: &IoOp, res: i32) -> Action {
        match inner.io_done(io, op, res) {
            Action::Commit(r) if r >= 0 && io.req.op == UBLK_IO_OP_WRITE => {
                match self.compare(&io.req) {
                    Ok(()) => Action::Commit(io.req.bytes() as i32),
                    Err(e) => {
                        lock(&self.error).get_or_insert_with(|| format!("{e:#}"));
                        Action::Commit(-libc::EIO)
                    }
                }
            }
            a => a,
        }
    }
}

/// A two-queue mirror of `zero_copy` mode over `files`, served by [`CheckedMirror`].
fn start_mirror(zero_copy: bool, files: &LegFiles) -> Result<(Device, Arc<CheckedMirrorTarget>)> {
    fresh()?;
    require_splice_zc()?;
    let target = Arc::new(CheckedMirror::open(files)?);
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = zero_copy;
    cfg.nr_queues = 2;
    cfg.depth = 16;
    let dev = Device::start_with(&cfg, target.clone())
        .with_context(|| format!("starting a {} mirror", mode_name(zero_copy)))?;
    if (dev.flags() & UBLK_F_SPLICE_ZC != 0) != zero_copy {
        bail!(
            "the {} mirror ublkb{} has flags {:#x}",
            mode_name(zero_copy),
            dev.id(),
            dev.flags()
        );
    }
    Ok((dev, target))
}

/// "ublkbN: queue/stable_writes X" for the log.
fn stable_writes(dev: &Device) -> String {
    ublk_suite::blockio::queue_attr(&dev.block_path(), "stable_writes")
        .unwrap_or_else(|e| format!("({e:#})"))
}

/// Where `a` and `b` (whole devices) first differ, and in how many sectors; None if
/// equal.
fn first_difference(a: &[u8], b: &[u8]) -> Option<String> {
    if a == b {
        return None;
    }
    let n = a
        .chunks(512)
        .zip(b.chunks(512))
        .filter(|(x, y)| x != y)
        .count();
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
    Some(format!(
        "{n} sectors differ, the first at byte {i} ({:#04x} against {:#04x})",
        a[i], b[i]
    ))
}

/// Both legs, the device read with O_DIRECT (its READs come from leg a) and, if given,
/// the device's page cache: all equal, or an error saying where they are not.
fn legs_equal(files: &LegFiles, dev: &Device, cache: Option<&[u8]>) -> Result<Vec<u8>> {
    let a = files.read(0)?;
    let b = files.read(1)?;
    if let Some(d) = first_difference(&a, &b) {
        bail!("the mirror's legs are not equal: {d}");
    }
    let direct = read_range(&dev.block_path(), true, 0, DEV_SIZE as usize)?;
    if let Some(d) = first_difference(&direct, &a) {
        bail!(
            "an O_DIRECT read of {} is not the legs: {d}",
            dev.block_path().display()
        );
    }
    if let Some(c) = cache {
        if let Some(d) = first_difference(c, &a) {
            bail!(
                "the page cache of {} is not what the legs hold: {d}",
                dev.block_path().display()
            );
        }
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------
// Memory the kernel reads while threads write it
// ---------------------------------------------------------------------------------

/// An mmap'd area that threads store into with volatile 8-byte stores while the kernel
/// reads it (an O_DIRECT write's buffer, a shared mapping of the device).  Never seen
/// through a Rust reference.
struct Area {
    ptr: *mut u64,
    len: usize,
}

// SAFETY: the area is only reached through raw pointers with volatile stores (and the
// kernel); it lives until drop, after every thread that uses it is joined.
unsafe impl Send for Area {}
// SAFETY: as above; concurrent volatile stores of whole words are what the tests want.
unsafe impl Sync for Area {}

impl Area {
    fn map(len: usize, flags: libc::c_int, fd: libc::c_int) -> Result<Area> {
        // SAFETY: a fresh mapping at an address the kernel chooses; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno()).context("mmap");
        }
        Ok(Area { ptr: p.cast(), len })
    }

    /// Anonymous memory (page-aligned, so fit for O_DIRECT).
    fn anon(len: usize) -> Result<Area> {
        Area::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
    }

    /// A shared mapping of the first `len` bytes of `f`.
    fn shared(f: &File, len: usize) -> Result<Area> {
        Area::map(len, libc::MAP_SHARED, f.as_raw_fd())
    }

    /// Stores `v` at word `i` (byte `8 * i`).
    fn store(&self, i: usize, v: u64) {
        assert!(
            8 * i < self.len,
            "word {i} beyond an area of {} bytes",
            self.len
        );
        // SAFETY: inside the mapping (checked), aligned (the mapping is page-aligned).
        unsafe { std::ptr::write_volatile(self.ptr.add(i), v) }
    }

    fn msync(&self) -> Result<()> {
        // SAFETY: the whole of a live mapping.
        if unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) } != 0 {
            return Err(errno()).context("msync(MS_SYNC)");
        }
        Ok(())
    }

    /// pwrite(2) of the first `len` bytes at `off` of `f` (O_DIRECT: the kernel pins
    /// the pages and the device reads them while other threads may store into them).
    fn pwrite(&self, f: &File, len: usize, off: u64) -> Result<()> {
        assert!(len <= self.len);
        // SAFETY: `len` bytes of a live mapping, read by the kernel only.
        let n = unsafe { libc::pwrite(f.as_raw_fd(), self.ptr.cast(), len, off as libc::off_t) };
        if n < 0 {
            return Err(errno()).with_context(|| format!("pwrite of {len} bytes at {off}"));
        }
        if n as usize != len {
            bail!("pwrite of {len} bytes at {off} wrote {n}");
        }
        Ok(())
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in map(); nothing uses it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A thread of a test's workload: it ends on `stop` or on its first error, and an error
/// stops the others.
fn worker(
    name: &str,
    stop: &Arc<AtomicBool>,
    body: impl FnOnce(&AtomicBool) -> Result<()> + Send + 'static,
) -> Result<JoinHandle<Result<()>>> {
    let stop = stop.clone();
    let what = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = body(&stop).with_context(|| what.clone());
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            r
        })
        .with_context(|| format!("spawning {name}"))
}

/// Joins the workload's threads, each within a minute, and fails on the first error.
fn join_all(threads: Vec<(String, JoinHandle<Result<()>>)>) -> Result<()> {
    let mut first = None;
    for (name, h) in threads {
        let r = join_within(&name, h, Duration::from_secs(60)).and_then(|r| r);
        if let (Err(e), None) = (r, &first) {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

// ---------------------------------------------------------------------------------
// 1. Page-cache writers
// ---------------------------------------------------------------------------------

/// The word of the page-cache writers at device offset `off`: its position in the low
/// 32 bits (so a torn word still says where it belongs), the writer (0: the initial
/// fill) and its rewrite count above.
fn pc_word(off: u64, writer: u64, seq: u64) -> u64 {
    let pos = ((off >> 3) as u32 ^ 0x5a5a_a5a5) as u64;
    pos | (writer & 0xff) << 32 | (seq & 0xff_ffff) << 40
}

/// Page-cache writer ids: 1 and 2 write(2), 3 and 4 store through a shared mapping.
const PC_WRITERS: u64 = 4;

/// What the page-cache workload did.
#[derive(Debug, Default)]
struct PcCounts {
    writes: AtomicU64,
    stores: AtomicU64,
    syncs: AtomicU64,
    drops: AtomicU64,
}

/// HOT's words: each holds its position and a writer that exists; past HOT, zeroes.
fn check_pc_content(what: &str, data: &[u8]) -> Result<()> {
    for (i, w) in data[..HOT as usize].chunks(8).enumerate() {
        let off = 8 * i as u64;
        let want = pc_word(off, 0, 0).to_le_bytes();
        if w[..4] != want[..4] || u64::from(w[4]) > PC_WRITERS {
            bail!(
                "{what}: the word at {off} is {:02x?}: not a page-cache writer's word for \
                 that offset (position bytes {:02x?}, writer 0..={PC_WRITERS})",
                w,
                &want[..4]
            );
        }
    }
    if let Some(i) = data[HOT as usize..].iter().position(|&b| b != 0) {
        bail!(
            "{what}: byte {} (past the rewritten blocks) is {:#04x}, not 0",
            HOT as usize + i,
            data[HOT as usize + i]
        );
    }
    Ok(())
}

fn fill_pc(buf: &mut [u8], off: u64, writer: u64, seq: u64) {
    for (i, w) in buf.chunks_mut(8).enumerate() {
        w.copy_from_slice(&pc_word(off + 8 * i as u64, writer, seq).to_le_bytes());
    }
}

/// The tracepoint writeback:folio_wait_writeback (a task waits for a page to finish
/// writeback) for the page-cache writers' threads only (comm `zcm-*`): a rewrite of a
/// page under writeback that waited for it, as stable pages make it.  Off when dropped.
struct WritebackWaits {
    root: PathBuf,
    event: PathBuf,
}

impl WritebackWaits {
    fn start() -> Result<WritebackWaits> {
        let root = ublk_suite::tracefs::root()?;
        let event = root.join("events/writeback/folio_wait_writeback");
        let w = |p: PathBuf, v: &str| {
            std::fs::write(&p, v).with_context(|| format!("writing {v:?} to {}", p.display()))
        };
        w(event.join("filter"), "comm ~ \"zcm-*\"")?;
        w(root.join("buffer_size_kb"), "8192")?;
        w(root.join("trace"), "")?;
        w(root.join("tracing_on"), "1")?;
        w(event.join("enable"), "1")?;
        Ok(WritebackWaits { root, event })
    }

    /// The events so far (those the buffer lost included).
    fn count(&self) -> Result<u64> {
        let text = std::fs::read_to_string(self.root.join("trace")).context("reading trace")?;
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(" folio_wait_writeback:"))
            .count() as u64;
        // "# entries-in-buffer/entries-written: 12/34   #P:2"
        let lost = text
            .lines()
            .find(|l| l.starts_with("# entries-in-buffer"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|n| {
                let (a, b) = n.split_whitespace().next()?.split_once('/')?;
                Some(b.parse::<u64>().ok()?.saturating_sub(a.parse().ok()?))
            })
            .unwrap_or(0);
        Ok(lines + lost)
    }
}

impl Drop for WritebackWaits {
    fn drop(&mut self) {
        let _ = std::fs::write(self.event.join("enable"), "0");
        let _ = std::fs::write(self.event.join("filter"), "0");
        let _ = std::fs::write(self.root.join("trace"), "");
    }
}

/// The stop flag and the count of the mapped writers, in memory they share.
#[repr(C)]
struct MapCtl {
    stop: AtomicU64,
    stores: AtomicU64,
}

/// The writers through the shared mapping, each a child process: in the server's own
/// process a store into a page under writeback would wait for it in page_mkwrite with
/// the mmap_lock held, and the server's threads need that lock (to map memory, to
/// fault) before they can complete the writeback.  A child only stores into the
/// mapping, counts in shared memory and sleeps, taking no lock that another thread of
/// the parent could have held at fork(); it ends with _exit.  Stopped and reaped (or
/// killed) when dropped.
struct MappedWriters {
    ctl: Area,
    pids: Vec<libc::pid_t>,
}

impl MappedWriters {
    fn new() -> Result<MappedWriters> {
        let ctl = Area::map(PAGE as usize, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
        Ok(MappedWriters {
            ctl,
            pids: Vec::new(),
        })
    }

    fn ctl(&self) -> &MapCtl {
        // SAFETY: a zero-filled shared page, aligned; two AtomicU64 fit, and all zero
        // bits are valid atomics.  It lives as long as self.
        unsafe { &*self.ctl.ptr.cast::<MapCtl>() }
    }

    /// Forks writer `w` (comm `zcm-map-W`), storing into `map` until told to stop.
    fn spawn(&mut self, w: u64, map: &Area, seed: u64) -> Result<()> {
        // SAFETY: fork(); the child runs mapped_writer() only, which allocates nothing
        // and takes no lock, and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(errno()).context("fork of a mapped writer");
        }
        if pid == 0 {
            mapped_writer(w, map, self.ctl(), seed);
        }
        self.pids.push(pid);
        Ok(())
    }

    /// Tells the writers to stop and reaps them, each within a minute (killed if not).
    fn stop_and_reap(&mut self) -> Result<()> {
        self.ctl().stop.store(1, Ordering::Relaxed);
        let mut first = None;
        for pid in std::mem::take(&mut self.pids) {
            if let (Err(e), None) = (reap(pid, Duration::from_secs(60)), &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for MappedWriters {
    fn drop(&mut self) {
        let _ = self.stop_and_reap();
    }
}

/// Waits for child `pid` to exit with status 0, up to `timeout` (then kills it).
fn reap(pid: libc::pid_t, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, into a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                return Ok(());
            }
            bail!("the mapped writer {pid} ended with wait status {status:#x}");
        }
        if r < 0 {
            return Err(errno()).with_context(|| format!("waitpid({pid})"));
        }
        if Instant::now() >= deadline {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            bail!("the mapped writer {pid} did not stop within {timeout:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The body of mapped writer `w` (a forked child): runs of words in one to four pages
/// of HOT, starting and ending anywhere in a page, until `ctl.stop`.
fn mapped_writer(w: u64, map: &Area, ctl: &MapCtl, seed: u64) -> ! {
    let name = [
        b'z',
        b'c',
        b'm',
        b'-',
        b'm',
        b'a',
        b'p',
        b'-',
        b'0' + w as u8,
        0,
    ];
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let mut rng = Rng::new(seed + w);
    let pages = HOT / PAGE;
    let mut seq = 0;
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000,
    };
    while ctl.stop.load(Ordering::Relaxed) == 0 {
        let p = rng.below(pages);
        let n = 1 + rng.below(4u64.min(pages - p));
        let from = p * PAGE + 8 * rng.below(PAGE / 16);
        let to = (p + n) * PAGE - 8 * rng.below(PAGE / 16);
        seq += 1;
        for off in (from..to).step_by(8) {
            map.store((off / 8) as usize, pc_word(off, w, seq));
        }
        ctl.stores.fetch_add(1, Ordering::Relaxed);
        // SAFETY: nanosleep with a live timespec and no remainder.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    }
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

/// Page-cache writers and forced writeback on a mirror of `zero_copy` mode.
fn page_cache_writers(name: &str, zero_copy: bool) -> Result<()> {
    require_splice_zc()?;
    let files = LegFiles::new()?;
    let (dev, target) = start_mirror(zero_copy, &files)?;
    let mode = mode_name(zero_copy);
    let path = dev.block_path();
    note(&format!(
        "{name}: {mode} mirror {} (queue/stable_writes {})",
        path.display(),
        stable_writes(&dev)
    ));
    // every word of HOT well formed from the start
    let f = open_buffered(&path)?;
    let mut init = vec![0u8; HOT as usize];
    fill_pc(&mut init, 0, 0, 0);
    f.write_all_at(&init, 0).context("the initial fill")?;
    f.sync_all().context("fsync after the initial fill")?;

    let waits = WritebackWaits::start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(PcCounts::default());
    let map = Arc::new(Area::shared(&f, HOT as usize)?);
    let mut threads = Vec::new();
    let seed = 0x6d69_7272 ^ unique();
    for w in 1..=2u64 {
        let (c, path) = (counts.clone(), path.clone());
        let name = format!("zcm-write-{w}");
        threads.push((
            name.clone(),
            worker(&name, &stop, move |stop| {
                let f = open_buffered(&path)?;
                let mut rng = Rng::new(seed + w);
                let mut buf = vec![0u8; 16 << 10];
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let len = 512 * (1 + rng.below(32));
                    let off = 512 * rng.below((HOT - len) / 512 + 1);
                    seq += 1;
                    let b = &mut buf[..len as usize];
                    fill_pc(b, off, w, seq);
                    f.write_all_at(b, off)
                        .with_context(|| format!("write(2) of {len} bytes at {off}"))?;
                    c.writes.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            })?,
        ));
    }
    // the mapped writers are processes of their own (see MappedWriters)
    let mut mapped = MappedWriters::new()?;
    for w in 3..=4u64 {
        mapped.spawn(w, &map, seed)?;
    }
    {
        let (c, path, map) = (counts.clone(), path.clone(), map.clone());
        let name = "mirror-sync".to_string();
        threads.push((
            name.clone(),
            worker(&name, &stop, move |stop| {
                let f = open_buffered(&path)?;
                let fd = f.as_raw_fd();
                let mut rng = Rng::new(seed ^ 0x5f5f);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let off = PAGE * rng.below(HOT / PAGE);
                    let len = PAGE * (1 + rng.below((HOT - off) / PAGE));
                    let (what, r) = match i % 4 {
                        0 => ("fdatasync", f.sync_data().map_err(anyhow::Error::from)),
                        1 => {
                            let fl = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                                | libc::SYNC_FILE_RANGE_WRITE
                                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                            // SAFETY: sync_file_range on an open fd, no memory passed.
                            let r =
                                unsafe { libc::sync_file_range(fd, off as i64, len as i64, fl) };
                            let r = if r == 0 { Ok(()) } else { Err(errno().into()) };
                            ("sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)", r)
                        }
                        2 => {
                            // SAFETY: as above; only starts writeback.
                            let r = unsafe {
                                libc::sync_file_range(
                                    fd,
                                    off as i64,
                                    len as i64,
                                    libc::SYNC_FILE_RANGE_WRITE,
                                )
                            };
                            let r = if r == 0 { Ok(()) } else { Err(errno().into()) };
                            ("sync_file_range(WRITE)", r)
                        }
                        _ => ("msync(MS_SYNC) of the mapping", map.msync()),
                    };
                    r.with_context(|| format!("{what} of {}", path.display()))?;
                    c.syncs.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(())
            })?,
        ));
    }
    {
        let (c, path) = (counts.clone(), path.clone());
        let name = "mirror-drop".to_string();
        threads.push((
            name.clone(),
            worker(&name, &stop, move |stop| {
                let f = open_buffered(&path)?;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if i.is_multiple_of(2) {
                        std::fs::write("/proc/sys/vm/drop_caches", b"1\n")
                            .context("writing 1 to /proc/sys/vm/drop_caches")?;
                    } else {
                        // writes back the range (WB_SYNC_NONE), then drops its clean pages
                        // SAFETY: posix_fadvise on an open fd, no memory passed.
                        let r = unsafe {
                            libc::posix_fadvise(
                                f.as_raw_fd(),
                                0,
                                HOT as i64,
                                libc::POSIX_FADV_DONTNEED,
                            )
                        };
                        if r != 0 {
                            return Err(std::io::Error::from_raw_os_error(r))
                                .context("posix_fadvise(POSIX_FADV_DONTNEED)");
                        }
                    }
                    c.drops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            })?,
        ));
    }
    // CHURN, and longer on a slow kernel until every count has its minimum
    let short_of = || {
        let got = [
            counts.writes.load(Ordering::Relaxed),
            mapped.ctl().stores.load(Ordering::Relaxed),
            counts.syncs.load(Ordering::Relaxed),
            counts.drops.load(Ordering::Relaxed),
            target.seen().writes,
        ];
        PC_MINS.iter().zip(got).any(|((_, min), n)| n < *min)
    };
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed)
        && (t0.elapsed() < CHURN || (t0.elapsed() < CHURN_MAX && short_of()))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let churned = t0.elapsed();
    let reaped = mapped.stop_and_reap();
    join_all(threads)?;
    reaped?;
    counts.stores.store(
        mapped.ctl().stores.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let waited = waits.count()?;
    drop(waits);
    note(&format!("{name}: the writers stopped; syncing"));
    map.msync()?;
    drop(map);
    f.sync_all().context("the final fsync")?;
    let mut cache = vec![0u8; DEV_SIZE as usize];
    f.read_exact_at(&mut cache, 0)
        .context("reading the device's page cache back")?;
    f.sync_all().context("fsync after the read-back")?;
    drop(f);
    target.check_errors()?;
    let a = legs_equal(&files, &dev, Some(&cache))?;
    check_pc_content("the legs after the rewrites", &a)?;
    let seen = target.seen();
    let st = dev.stats();
    dev.stop_and_delete()?;
    no_devices()?;
    let (writes, stores) = (
        counts.writes.load(Ordering::Relaxed),
        counts.stores.load(Ordering::Relaxed),
    );
    let (syncs, drops) = (
        counts.syncs.load(Ordering::Relaxed),
        counts.drops.load(Ordering::Relaxed),
    );
    note(&format!(
        "{name}: {mode} mirror, {:.1} s: {writes} write(2) rewrites, {stores} rewrites \
         through the mapping ({waited} waits of theirs for a page under writeback), \
         {syncs} forced writebacks, {drops} cache drops; {} WRITE \
         requests ({} of them compared, {} reaching the legs differently), {} READs; both \
         legs equal to the page cache and to a read of the device",
        churned.as_secs_f64(),
        st.writes,
        seen.writes,
        seen.differed,
        st.reads
    ));
    if let Some(d) = lock(&target.first_diff).clone() {
        bail!(
            "{mode} mirror: {} of {} WRITEs from the page cache reached the two legs with \
             different data ({} sectors in all): the page cache changed pages under \
             writeback (no stable pages?); {d}",
            seen.differed,
            seen.writes,
            seen.sectors
        );
    }
    if st.errors != 0 {
        bail!("{mode} mirror: the server failed requests: {st:?}");
    }
    if seen.writes != st.writes {
        bail!(
            "{mode} mirror: {} WRITE requests, but {} compared",
            st.writes,
            seen.writes
        );
    }
    if zero_copy && waited < 20 {
        bail!(
            "{mode} mirror: the writers waited for a page under writeback only {waited} \
             times in {:.1} s (at least 20 needed for the run to mean anything; on a \
             zero-copy device, whose pages are stable, a rewrite of a page under writeback \
             waits for it)",
            churned.as_secs_f64()
        );
    }
    for ((what, min), got) in PC_MINS
        .iter()
        .zip([writes, stores, syncs, drops, seen.writes])
    {
        if got < *min {
            bail!(
                "{mode} mirror: only {got} {what} in {:.1} s (at least {min} needed for the \
                 run to mean anything)",
                churned.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Page-cache writers on a zero-copy mirror: stable pages make every WRITE reach both
/// legs with the same data (M4), and the synced legs equal the page cache.
#[test]
fn page_cache_rewrites_zero_copy_legs_equal() {
    zc_test("page_cache_rewrites_zero_copy", 300, || {
        page_cache_writers("page_cache_rewrites_zero_copy", true)
    })
}

/// The baseline: the same on a copy-mode mirror (one copy per request, both legs
/// write it).
#[test]
fn page_cache_rewrites_copy_mode_legs_equal() {
    zc_test("page_cache_rewrites_copy_mode", 300, || {
        page_cache_writers("page_cache_rewrites_copy_mode", false)
    })
}

// ---------------------------------------------------------------------------------
// 2. O_DIRECT writers that rewrite their buffer mid-write
// ---------------------------------------------------------------------------------

/// Writer pairs (a writer and the thread that scribbles on its buffer).
const PAIRS: usize = 2;
/// Each pair's region of the device: [REGION_BASE + w * REGION_STRIDE, + REGION).
const REGION: u64 = 512 << 10;
const REGION_BASE: u64 = 1 << 20;
const REGION_STRIDE: u64 = 1 << 20;
/// The largest O_DIRECT write (its buffer's size).
const MAX_IO: u64 = 128 << 10;
/// The round of the clean rewrite.
const CLEAN: u64 = 0xf_ffff;

fn region(w: usize) -> (u64, u64) {
    let base = REGION_BASE + w as u64 * REGION_STRIDE;
    (base, base + REGION)
}

/// The word at device offset `off` of writer `w`'s round `r`, version `v` (0: what the
/// buffer held when the write was issued; 1, 2, ...: the scribbler's rewrites).  Bytes
/// 0..6 are the same in every version of a round (position, writer, round), bytes 6
/// and 7 are the version.
fn dio_word(off: u64, w: usize, r: u64, v: u64) -> u64 {
    let pos = ((off >> 3) ^ 0x00a5_5a5a) & 0xff_ffff;
    pos | (w as u64 & 0xf) << 24 | (r & 0xf_ffff) << 28 | (v & 0xffff) << 48
}

/// The last round that wrote a sector, and the highest version its buffer held.
#[derive(Debug, Clone, Copy)]
struct Last {
    round: u64,
    max_v: u64,
}

/// Checks sector `s` (device offset `off`) of a leg against the last round of writer
/// `w` that covered it: every byte is that byte of one of the round's versions.
/// Returns whether the sector holds more than one version.
fn check_dio_sector(what: &str, s: &[u8], off: u64, w: usize, last: Option<Last>) -> Result<bool> {
    let Some(l) = last else {
        if let Some(i) = s.iter().position(|&b| b != 0) {
            bail!(
                "{what}: byte {} of a sector no write covered is {:#04x}, not 0",
                off + i as u64,
                s[i]
            );
        }
        return Ok(false);
    };
    let mut versions = Vec::new();
    for (i, word) in s.chunks(8).enumerate() {
        let woff = off + 8 * i as u64;
        let want = dio_word(woff, w, l.round, 0).to_le_bytes();
        let v = u64::from(u16::from_le_bytes([word[6], word[7]]));
        // byte 6 holds v & 0xff, byte 7 v >> 8, of any version 0..=max_v (a torn word
        // may have them from two versions)
        let lo_ok = l.max_v >= 0xff || u64::from(word[6]) <= l.max_v;
        let hi_ok = u64::from(word[7]) <= l.max_v >> 8;
        if word[..6] != want[..6] || !lo_ok || !hi_ok {
            bail!(
                "{what}: the word at {woff} is {word:02x?}: not a byte-wise mix of the \
                 versions 0..={} of round {} of writer {w} (which are {:02x?} with the \
                 version in the last two bytes)",
                l.max_v,
                l.round,
                &want[..6]
            );
        }
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    Ok(versions.len() > 1)
}

/// What a scribbler is told: rewrite `len` bytes of the buffer as round `round` of the
/// write at `off` while `active`.
#[derive(Debug, Clone, Copy)]
struct Job {
    off: u64,
    len: u64,
    round: u64,
}

#[derive(Default)]
struct ScribbleState {
    job: Option<Job>,
    /// The highest version the scribbler stored in round `job.round`, once it stopped.
    done: Option<u64>,
    quit: bool,
}

/// A writer's buffer, and the handshake with the thread that scribbles on it.
struct Scribble {
    buf: Area,
    w: usize,
    active: AtomicBool,
    st: Mutex<ScribbleState>,
    cv: Condvar,
}

impl Scribble {
    fn fill(&self, job: &Job, v: u64, from_word: u64) {
        let words = job.len / 8;
        for k in 0..words {
            let i = (from_word + k) % words;
            self.buf
                .store(i as usize, dio_word(job.off + 8 * i, self.w, job.round, v));
        }
    }

    /// The scribbler: for each job, versions 1, 2, ... over the whole buffer (from a
    /// random word on, wrapping) until the write returns.
    fn scribble(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut seen = 0;
        loop {
            let job = {
                let mut st = lock(&self.st);
                loop {
                    if st.quit {
                        return;
                    }
                    match st.job {
                        Some(j) if j.round != seen => break j,
                        _ => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            seen = job.round;
            let words = job.len / 8;
            let mut v = 0;
            while self.active.load(Ordering::Acquire) && v < 0xffff {
                v += 1;
                let from = rng.below(words);
                // a version at a time, looking at `active` every 64 words
                let mut k = 0;
                while k < words && self.active.load(Ordering::Relaxed) {
                    for j in k..(k + 64).min(words) {
                        let i = (from + j) % words;
                        self.buf
                            .store(i as usize, dio_word(job.off + 8 * i, self.w, job.round, v));
                    }
                    k += 64;
                }
            }
            lock(&self.st).done = Some(v);
            self.cv.notify_all();
        }
    }

    /// One O_DIRECT write of `job` with the buffer rewritten while it runs: the highest
    /// version the buffer held.
    fn write(&self, f: &File, job: Job) -> Result<u64> {
        self.fill(&job, 0, 0);
        {
            let mut st = lock(&self.st);
            st.job = Some(job);
            st.done = None;
            self.active.store(true, Ordering::Release);
        }
        self.cv.notify_all();
        let r = self.buf.pwrite(f, job.len as usize, job.off);
        self.active.store(false, Ordering::Release);
        let mut st = lock(&self.st);
        let v = loop {
            if let Some(v) = st.done {
                break v;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        r.with_context(|| format!("the O_DIRECT write of round {}", job.round))?;
        Ok(v)
    }

    fn quit(&self) {
        lock(&self.st).quit = true;
        self.cv.notify_all();
    }
}

/// Writer `w`'s rounds: (rounds, rounds rewritten mid-flight, versions stored by the
/// scribbler, the most in one round, the last round of each sector of its region).
struct PairResult {
    rounds: u64,
    scribbled: u64,
    versions: u64,
    max_v: u64,
    last: Vec<Option<Last>>,
}

/// The O_DIRECT writers' progress, all pairs together, as they go.
#[derive(Default)]
struct DioProgress {
    rounds: AtomicU64,
    scribbled: AtomicU64,
}

/// What an O_DIRECT run must have done to mean anything: WRITEs, and WRITEs whose
/// buffer was rewritten while in flight.
const DIO_MINS: (u64, u64) = (40, 20);

fn dio_pair(
    w: usize,
    path: &Path,
    lbs: u64,
    stop: &AtomicBool,
    progress: &DioProgress,
    seed: u64,
) -> Result<PairResult> {
    let f = open_direct(path)?;
    let sc = Arc::new(Scribble {
        buf: Area::anon(MAX_IO as usize)?,
        w,
        active: AtomicBool::new(false),
        st: Mutex::new(ScribbleState::default()),
        cv: Condvar::new(),
    });
    let scribbler = {
        let sc = sc.clone();
        std::thread::Builder::new()
            .name(format!("scribbler {w}"))
            .spawn(move || sc.scribble(seed ^ 0xa5a5))
            .context("spawning a scribbler")?
    };
    let (base, end) = region(w);
    let mut rng = Rng::new(seed);
    let mut res = PairResult {
        rounds: 0,
        scribbled: 0,
        versions: 0,
        max_v: 0,
        last: vec![None; (REGION / 512) as usize],
    };
    let mut out = Ok(());
    while !stop.load(Ordering::Relaxed) {
        let len = PAGE * (1 + rng.below(MAX_IO / PAGE));
        let off = base + lbs * rng.below((end - len - base) / lbs + 1);
        let job = Job {
            off,
            len,
            round: res.rounds + 1,
        };
        match sc.write(&f, job) {
            Ok(v) => {
                res.rounds += 1;
                res.versions += v;
                res.max_v = res.max_v.max(v);
                progress.rounds.fetch_add(1, Ordering::Relaxed);
                if v > 0 {
                    res.scribbled += 1;
                    progress.scribbled.fetch_add(1, Ordering::Relaxed);
                }
                for s in (off - base) / 512..(off + len - base) / 512 {
                    res.last[s as usize] = Some(Last {
                        round: job.round,
                        max_v: v,
                    });
                }
            }
            Err(e) => {
                out = Err(e);
                break;
            }
        }
    }
    sc.quit();
    join_within(
        &format!("scribbler {w}"),
        scribbler,
        Duration::from_secs(30),
    )?;
    out.map(|()| res)
}

/// Every sector of `data` (a whole leg) against the pairs' last rounds: (sectors that
/// hold more than one version).
fn check_dio_leg(what: &str, data: &[u8], pairs: &[PairResult]) -> Result<u64> {
    let mut mixed = 0;
    for (si, s) in data.chunks(512).enumerate() {
        let off = 512 * si as u64;
        let owner = (0..pairs.len()).find(|&w| {
            let (b, e) = region(w);
            (b..e).contains(&off)
        });
        let (w, last) = match owner {
            Some(w) => (w, pairs[w].last[((off - region(w).0) / 512) as usize]),
            None => (0, None),
        };
        if check_dio_sector(what, s, off, w, last)? {
            mixed += 1;
        }
    }
    Ok(mixed)
}

/// O_DIRECT writers whose buffers are rewritten mid-write, then a clean rewrite.
fn scribbled_writes(name: &str, zero_copy: bool) -> Result<()> {
    require_splice_zc()?;
    let files = LegFiles::new()?;
    let (dev, target) = start_mirror(zero_copy, &files)?;
    let mode = mode_name(zero_copy);
    let path = dev.block_path();
    let lbs = ublk_suite::blockio::logical_block_size(&path);
    note(&format!(
        "{name}: {mode} mirror {}, logical blocks of {lbs} bytes",
        path.display()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(DioProgress::default());
    let seed = 0x7363_7269 ^ unique();
    let mut handles = Vec::new();
    for w in 0..PAIRS {
        let (stop, path, progress) = (stop.clone(), path.clone(), progress.clone());
        let h = std::thread::Builder::new()
            .name(format!("O_DIRECT writer {w}"))
            .spawn(move || {
                let r = dio_pair(w, &path, lbs, &stop, &progress, seed + w as u64);
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .context("spawning a writer")?;
        handles.push(h);
    }
    // CHURN, and longer on a slow kernel until DIO_MINS are reached
    let short_of = || {
        progress.rounds.load(Ordering::Relaxed) < DIO_MINS.0
            || progress.scribbled.load(Ordering::Relaxed) < DIO_MINS.1
    };
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed)
        && (t0.elapsed() < CHURN || (t0.elapsed() < CHURN_MAX && short_of()))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let churned = t0.elapsed();
    let mut pairs = Vec::new();
    for (w, h) in handles.into_iter().enumerate() {
        pairs.push(join_within(
            &format!("O_DIRECT writer {w}"),
            h,
            Duration::from_secs(60),
        )??);
    }
    target.check_errors()?;
    let during = target.seen();
    let (a, b) = (files.read(0)?, files.read(1)?);
    let direct = read_range(&path, true, 0, DEV_SIZE as usize)?;
    if let Some(d) = first_difference(&direct, &a) {
        bail!("an O_DIRECT read of {} is not leg a: {d}", path.display());
    }
    let mixed_a = check_dio_leg("leg a after the scribbled writes", &a, &pairs)?;
    let mixed_b = check_dio_leg("leg b after the scribbled writes", &b, &pairs)?;
    let differ = a
        .chunks(512)
        .zip(b.chunks(512))
        .filter(|(x, y)| x != y)
        .count();

    // the clean rewrite: each region in one go per MAX_IO, nobody touching the buffer
    let f = open_direct(&path)?;
    let mut buf = AlignedBuf::new(MAX_IO as usize);
    for w in 0..PAIRS {
        let (base, end) = region(w);
        for off in (base..end).step_by(MAX_IO as usize) {
            for (i, word) in buf.as_mut_slice().chunks_mut(8).enumerate() {
                word.copy_from_slice(&dio_word(off + 8 * i as u64, w, CLEAN, 0).to_le_bytes());
            }
            ublk_suite::blockio::full_write_at(&f, buf.as_slice(), off, "the clean rewrite")?;
        }
    }
    drop(f);
    target.check_errors()?;
    let clean =
        legs_equal(&files, &dev, None).map_err(|e| anyhow!("after the clean rewrite: {e:#}"))?;
    let full = vec![
        Some(Last {
            round: CLEAN,
            max_v: 0,
        });
        (REGION / 512) as usize
    ];
    let clean_pairs: Vec<PairResult> = (0..PAIRS)
        .map(|_| PairResult {
            rounds: 0,
            scribbled: 0,
            versions: 0,
            max_v: 0,
            last: full.clone(),
        })
        .collect();
    check_dio_leg("the legs after the clean rewrite", &clean, &clean_pairs)?;
    let after = target.seen();
    let st = dev.stats();
    dev.stop_and_delete()?;
    no_devices()?;

    let rounds: u64 = pairs.iter().map(|p| p.rounds).sum();
    let scribbled: u64 = pairs.iter().map(|p| p.scribbled).sum();
    let versions: u64 = pairs.iter().map(|p| p.versions).sum();
    let max_v = pairs.iter().map(|p| p.max_v).max().unwrap_or(0);
    note(&format!(
        "{name}: {mode} mirror, {:.1} s: {rounds} O_DIRECT WRITEs of 4 to 128 KiB, {scribbled} \
         of them rewritten while in flight ({versions} versions in all, up to {max_v} in one); \
         {} of {} WRITE requests reached the legs differently ({} sectors); afterwards the \
         legs differ in {differ} sectors, and {mixed_a} (leg a) and {mixed_b} (leg b) \
         sectors hold more than one version; every byte is one the buffer held; after the \
         clean rewrite ({} more WRITE requests, {} reaching the legs differently) the legs \
         are equal",
        churned.as_secs_f64(),
        during.differed,
        during.writes,
        during.sectors,
        after.writes - during.writes,
        after.differed - during.differed,
    ));
    if st.errors != 0 {
        bail!("{mode} mirror: the server failed requests: {st:?}");
    }
    if after.differed != during.differed {
        bail!(
            "{mode} mirror: {} WRITEs of the clean rewrite (no buffer touched while in \
             flight) reached the legs differently",
            after.differed - during.differed
        );
    }
    if !zero_copy && (during.differed != 0 || differ != 0) {
        bail!(
            "copy-mode mirror: {} WRITE requests reached the legs differently and the legs \
             differ in {differ} sectors: a copy-mode WRITE is copied into the server's \
             buffer once, both legs must get that copy; {}",
            during.differed,
            lock(&target.first_diff).clone().unwrap_or_default()
        );
    }
    if rounds < DIO_MINS.0 || scribbled < DIO_MINS.1 {
        bail!(
            "{mode} mirror: only {rounds} O_DIRECT WRITEs, {scribbled} of them rewritten \
             while in flight, in {:.1} s (at least {} and {} needed for the run to mean \
             anything)",
            churned.as_secs_f64(),
            DIO_MINS.0,
            DIO_MINS.1
        );
    }
    Ok(())
}

/// O_DIRECT writers that rewrite their buffer mid-write on a zero-copy mirror: the legs
/// may differ, each byte of each leg is one the buffer held during the write, and a
/// clean rewrite makes them equal again.
#[test]
fn o_direct_buffer_rewritten_mid_write_zero_copy() {
    zc_test("o_direct_rewritten_zero_copy", 300, || {
        scribbled_writes("o_direct_rewritten_zero_copy", true)
    })
}

/// The baseline: on a copy-mode mirror the legs are equal even then (the driver copies
/// a WRITE into the server's buffer once).
#[test]
fn o_direct_buffer_rewritten_mid_write_copy_mode() {
    zc_test("o_direct_rewritten_copy_mode", 300, || {
        scribbled_writes("o_direct_rewritten_copy_mode", false)
    })
}
