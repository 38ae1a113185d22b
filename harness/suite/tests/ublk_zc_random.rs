//! A seeded random test of every splice at /dev/ublkcN (series v3): at least 10^5
//! IORING_OP_SPLICEs from several threads, each with a ring of its own, with random
//! inputs, each judged against docs/contract.md.
//!
//! The seed is printed first; `UBLK_ZC_SEED=0x...` replays it (the same random draws in
//! every thread of every round; which held request a draw lands on depends on timing),
//! `UBLK_ZC_RANDOM_SPLICES=N` sets the count (default 100000).
//!
//! Each round starts a zero-copy device (1 or 2 queues, depth 1 to 8, 64 KiB requests)
//! on a tmpfs file, served on the server's own queue loop by a holding target
//! ([`RandHold`]): every data request is held in its queue thread until the committer
//! thread says, at a random moment, serve it (the loop target's own splice, then
//! commit), commit it as it is (a READ then completes its filled prefix only, or fails
//! with EIO if less than a block is filled; the rest comes back to the server), or
//! commit -EIO.  One I/O thread per queue, pinned to that queue's CPU, does O_DIRECT
//! READs and WRITEs of 512 B to 64 KiB through /dev/ublkbN, one at a time: so a queue
//! has at most one request at any time, and while the target holds it, the state of
//! every tag of that queue is known (that request at its tag, none at the others).
//! Some rounds end with a queue's daemon ended in the middle of it all (the queue
//! thread unwinds while it holds a request, as `HoldExit` does): the driver aborts the
//! device and removes it, with splices still going, and the round's device is deleted.
//!
//! Each splice has random q_id, tag and offset (in range and out of it, positions -1 =
//! UBLK_SPLICE_POS_INVALID, negative, overflowing, offsets at the end of the 1 GiB
//! window), length (0, small, block sized, the rest of the request, past it, up to
//! 128 KiB), flags (none, SPLICE_F_DIRECT, DIRECT|READ_TO_READ, READ_TO_READ alone,
//! splice(2)'s own bits, unknown bits, SPLICE_F_FD_IN_FIXED) and destination: files on
//! tmpfs (read-write, read-only, O_APPEND), files on the scratch disk's ext4 with
//! O_DIRECT, a loopback TCP socket, both ends of a pipe, /dev/null, /dev/ublkcN itself
//! and /dev/ublkbN (read-write and read-only).  [`expect`] computes what the contract
//! allows from the inputs and, past io_uring's checks, from the state of the request
//! at that tag: known when it was held all through the splice, racy otherwise (being
//! committed, a new request not yet seen by the target, a queue being aborted), where
//! the union of the outcomes of the states it can be in is allowed (EINVAL, or what a
//! request of the queue's recent I/Os that the splice fits would give); once a dead
//! queue's abort is done (/sys/block/ublkbN gone), only EINVAL.  Anything else fails
//! the test with the seed, the splice's number, its inputs, the state and what the
//! queues' target saw last.  Not in docs/contract.md but modelled: a socket refuses a
//! position other than 0 with ESPIPE in its own ->read_iter/->write_iter, after the
//! lend, as it does for IORING_OP_READ/WRITE.
//!
//! What keeps the state known: an I/O never splits (it ends within max_sectors of the
//! 4 KiB block it starts in: the block layer splits at a physical block boundary), the
//! block device keeps an opener all round (its last close drops its page cache, and a
//! later read would be a request of no I/O thread's), readahead is off, and what
//! splices dirty in /dev/ublkbN is written back at the round's end only (no periodic
//! flusher, a large min_ratio).  The target fails the test if an I/O was split, and
//! says so if it saw a request of no I/O thread's.
//!
//! Data: a WRITE splice's bytes are read back from the destination file (tmpfs, ext4,
//! the block device's page cache) and must be the request's (every WRITE I/O has data
//! of its own seed), and what reaches the socket's peer is compared in stream order.
//! Every READ_TO_READ source holds the same 512-byte periodic pattern as the backing
//! file, at positions congruent to the request offset, so whatever fills a READ
//! request, in any order, the reader of /dev/ublkbN must get exactly the backing's
//! bytes (its buffer is pre-filled with their complement); every READ is checked.
//! Served WRITEs are checked in the backing file.  Outcomes are counted by reason; the
//! test fails if a reason it claims to cover never happened (nothing transferred, or an
//! errno class never hit).  Every device is deleted, and the kernel log of the test
//! must stay clean ([`zc_test`]).
//!
//! Needs the series: on the base kernel it fails, "kernel lacks UBLK_F_SPLICE_ZC".

mod zc_fixtures;

use anyhow::{anyhow, bail, Context, Result};
use io_uring::{opcode, types, IoUring};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ublk::targets::{Action, Hooks, Io, LoopTarget, Request, Target, Wrap};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig};
use ublk_suite::blockio::{open_direct, AlignedBuf, Rng};
use ublk_suite::scratch::{self, Fs, ScratchDir};
use ublk_suite::ublkdev::{fresh, no_devices, require_splice_zc, wait_block_node};
use zc_fixtures::*;

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_READ_TO_READ;
const FIXED: u32 = 1 << 31; // SPLICE_F_FD_IN_FIXED
/// splice(2)'s own flags: MOVE, NONBLOCK, MORE, GIFT (SPLICE_F_ALL).
const SPLICE_F_ALL: u32 = 0x0f;
const VALID: u32 = FIXED | SPLICE_F_ALL | DIRECT | R2R;
/// Flags no kernel knows for IORING_OP_SPLICE (0x10 and 0x20 were v2's).
const UNKNOWN: [u32; 7] = [0x10, 0x20, 0x40, 0x80, 0x100, 1 << 20, 1 << 28];

/// Largest request: the device's max_io_buf_bytes.
const REQ_MAX: u64 = 64 << 10;
const DEV_SIZE: u64 = 8 << 20;
/// The I/O threads read [0, READ_END) and write [READ_END, WRITE_END); splices write
/// the block device at [WRITE_END, DEV_SIZE) and read it below BDEV_READ_END.
const READ_END: u64 = 3 << 20;
const WRITE_END: u64 = 6 << 20;
const BDEV_READ_END: u64 = READ_END - (256 << 10);
/// READ_TO_READ source files (the pattern) and WRITE destination files.
const SRC_SIZE: u64 = 2 << 20;
const SINK_SIZE: u64 = 4 << 20;
/// Pipe capacity (16 pages): what splice(2) to a pipe asks of the source at most.
const PIPE_CAP: u64 = 16 * 4096;
const CQE_TIMEOUT: Duration = Duration::from_secs(60);
const SPLICERS: usize = 3;
const HIST: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Byte `x` of the data of the WRITE I/O of `seed`.
fn wbyte(seed: u64, x: u64) -> u8 {
    (mix(seed ^ (x >> 3).wrapping_mul(0x2545_f491_4f6c_dd1d)) >> ((x & 7) * 8)) as u8
}

fn wfill(buf: &mut [u8], seed: u64, from: u64) {
    let mut i = 0;
    while i < buf.len() {
        let x = from + i as u64;
        let word = mix(seed ^ (x >> 3).wrapping_mul(0x2545_f491_4f6c_dd1d)).to_le_bytes();
        let k = (8 - (x & 7) as usize).min(buf.len() - i);
        buf[i..i + k].copy_from_slice(&word[(x & 7) as usize..(x & 7) as usize + k]);
        i += k;
    }
}

/// The READ pattern: byte `a` of the backing (and of every READ_TO_READ source) is
/// `table[a % 512]`.
type Table = [u8; 512];

fn table_fill(t: &Table, buf: &mut [u8], from: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = t[((from + i as u64) % 512) as usize];
    }
}

fn table_file(t: &Table, f: &File, size: u64) -> Result<()> {
    let mut buf = AlignedBuf::new(1 << 20);
    table_fill(t, buf.as_mut_slice(), 0);
    let mut off = 0;
    while off < size {
        let n = (size - off).min(1 << 20) as usize;
        f.write_all_at(&buf.as_slice()[..n], off)
            .context("writing the pattern")?;
        off += n as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The round's shared state: I/Os, held requests, fates
// ---------------------------------------------------------------------------------

/// One I/O of an I/O thread.
#[derive(Clone, Copy, Debug)]
struct IoRec {
    seq: u64,
    write: bool,
    dev_off: u64,
    len: u64,
    seed: u64,
}

/// A request the target holds, and the I/O it belongs to.
#[derive(Clone, Copy, Debug)]
struct HeldReq {
    gen: u64,
    req: Request,
    io: IoRec,
}

#[derive(Default)]
struct Slot {
    /// Bumped for every request held on the queue.
    gen: u64,
    held: Option<HeldReq>,
    go: Option<Go>,
}

/// What happened to the requests of an I/O, for its thread's verdict.
#[derive(Default, Clone, Copy)]
struct Fate {
    /// Committed without being served (as it is, or -EIO), or its queue died.
    committed: bool,
}

struct World {
    nr_q: usize,
    depth: u16,
    table: Table,
    slots: Vec<(Mutex<Slot>, Condvar)>,
    /// The I/O in flight of each queue's thread.
    cur: Vec<Mutex<Option<IoRec>>>,
    hist: Vec<Mutex<VecDeque<IoRec>>>,
    fates: Mutex<HashMap<u64, Fate>>,
    holding: AtomicBool,
    closed: AtomicBool,
    /// Holding has begun (requests of no I/O thread are foreign from then on)...
    started: AtomicBool,
    /// ... until the round's writeback of the block device.
    writeback: AtomicBool,
    /// Set before the queue's daemon is ended: every state is racy from then on.
    aborting: AtomicBool,
    /// The queue whose daemon was ended (u64::MAX: none).
    dead_q: AtomicU64,
    stop: AtomicBool,
    splices: AtomicU64,
    foreign: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    /// What each queue's target saw and did, last first out (printed on a failure).
    log: Vec<Mutex<VecDeque<String>>>,
    t0: Instant,
}

impl World {
    fn new(nr_q: usize, depth: u16, table: Table) -> World {
        World {
            nr_q,
            depth,
            table,
            slots: (0..nr_q)
                .map(|_| (Mutex::new(Slot::default()), Condvar::new()))
                .collect(),
            cur: (0..nr_q).map(|_| Mutex::new(None)).collect(),
            hist: (0..nr_q).map(|_| Mutex::new(VecDeque::new())).collect(),
            fates: Mutex::new(HashMap::new()),
            holding: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            writeback: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
            dead_q: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            splices: AtomicU64::new(0),
            foreign: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            log: (0..nr_q).map(|_| Mutex::new(VecDeque::new())).collect(),
            t0: Instant::now(),
        }
    }

    fn log(&self, q: usize, what: String) {
        let mut l = lock(&self.log[q]);
        l.push_back(format!("{:.6} {what}", self.t0.elapsed().as_secs_f64()));
        if l.len() > 24 {
            l.pop_front();
        }
    }

    fn fail(&self, msg: String) {
        let mut e = lock(&self.errors);
        if e.len() < 8 {
            e.push(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn snap(&self, q: usize) -> (u64, Option<HeldReq>) {
        let s = lock(&self.slots[q].0);
        (s.gen, s.held)
    }

    fn release_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.holding.store(false, Ordering::SeqCst);
        for (m, cv) in &self.slots {
            let _g = lock(m);
            cv.notify_all();
        }
    }

    /// The I/O thread's I/O that `req` is (part of), and its queue.
    fn io_of(&self, req: &Request) -> Option<(usize, IoRec)> {
        let (a, b) = (req.offset(), req.offset() + req.bytes());
        for (q, c) in self.cur.iter().enumerate() {
            if let Some(io) = *lock(c) {
                let op = if io.write {
                    UBLK_IO_OP_WRITE
                } else {
                    UBLK_IO_OP_READ
                };
                if op == req.op && a >= io.dev_off && b <= io.dev_off + io.len && b > a {
                    return Some((q, io));
                }
            }
        }
        None
    }
}

/// Stops the round and serves whatever is held.
struct ReleaseOnDrop(Arc<World>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.release_all();
    }
}

/// The hooks of the loop target on a tmpfs file, holding every data request of the I/O
/// threads while the round holds: the queue thread waits until the committer says what
/// to do.
struct RandHold {
    w: Arc<World>,
}

impl RandHold {
    fn hold(&self, req: &Request) -> Option<Go> {
        let w = &self.w;
        let q = usize::from(req.q_id);
        let found = w.io_of(req);
        w.log(
            q,
            format!(
                "tag {} op {} sectors {}+{}: I/O {:?}",
                req.tag,
                req.op,
                req.start_sector,
                req.nr_sectors,
                found.map(|(qq, io)| (qq, io.seq, io.dev_off >> 9, io.len >> 9))
            ),
        );
        let io = match found {
            Some((qq, io)) if qq == q => {
                // a request ends where its I/O ends (a READ's rest included), and a
                // WRITE is its whole I/O: else the I/O was split, and the model of the
                // tags (one request per queue) is wrong
                let whole = req.offset() + req.bytes() == io.dev_off + io.len
                    && (io.write == (req.offset() == io.dev_off) || !io.write);
                if !whole {
                    w.fail(format!(
                        "the test's model broke: {req:?} is part of its I/O {io:?}, which \
                         the block layer split into several requests"
                    ));
                }
                io
            }
            // before the round's writeback: a request the model does not know of
            other if w.started.load(Ordering::SeqCst) && !w.writeback.load(Ordering::SeqCst) => {
                let mut f = lock(&w.foreign);
                if f.len() < 8 {
                    f.push(format!(
                        "{req:?} (its I/O: {other:?}): not the I/O of queue {q}'s thread"
                    ));
                }
                return None;
            }
            _ => return None,
        };
        if !w.holding.load(Ordering::SeqCst) || w.closed.load(Ordering::SeqCst) {
            return None;
        }
        let (m, cv) = &w.slots[q];
        let mut s = lock(m);
        s.gen += 1;
        s.held = Some(HeldReq {
            gen: s.gen,
            req: *req,
            io,
        });
        s.go = None;
        cv.notify_all();
        loop {
            if let Some(g) = s.go.take() {
                return Some(g);
            }
            if w.closed.load(Ordering::SeqCst) {
                s.held = None;
                return Some(Go::Serve);
            }
            s = cv
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Hooks<LoopTarget> for RandHold {
    fn kind(&self) -> &'static str {
        "rand-hold"
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        let req = io.req;
        if req.op == UBLK_IO_OP_READ || req.op == UBLK_IO_OP_WRITE {
            match self.hold(&req) {
                None | Some(Go::Serve) => {}
                Some(Go::Commit(r)) => return Action::Commit(r),
                Some(Go::ExitThread) => std::panic::resume_unwind(Box::new(EXIT_THREAD)),
            }
        }
        inner.queue_io(io)
    }
}

// ---------------------------------------------------------------------------------
// The committer and the I/O threads
// ---------------------------------------------------------------------------------

/// Releases held requests at random moments; in an abort round, ends the daemon of the
/// queue of the first request held once `abort_at` splices were issued.
fn committer(w: Arc<World>, seed: u64, abort_at: Option<u64>) {
    let mut rng = Rng::new(seed);
    let mut due: Vec<Option<(u64, Instant)>> = vec![None; w.nr_q];
    while !w.stop.load(Ordering::SeqCst) {
        for (q, d) in due.iter_mut().enumerate() {
            let (m, cv) = &w.slots[q];
            let mut s = lock(m);
            let Some(h) = s.held else {
                *d = None;
                continue;
            };
            let t = match *d {
                Some((g, t)) if g == h.gen => t,
                _ => {
                    let us = if rng.below(4) == 0 {
                        rng.below(500)
                    } else {
                        1000 + rng.below(12_000)
                    };
                    let t = Instant::now() + Duration::from_micros(us);
                    *d = Some((h.gen, t));
                    t
                }
            };
            if Instant::now() < t {
                continue;
            }
            let abort = abort_at.is_some_and(|a| w.splices.load(Ordering::SeqCst) >= a)
                && !w.aborting.load(Ordering::SeqCst);
            let read = h.req.op == UBLK_IO_OP_READ;
            let r = rng.below(100);
            let g = if abort {
                w.aborting.store(true, Ordering::SeqCst);
                w.dead_q.store(q as u64, Ordering::SeqCst);
                Go::ExitThread
            } else if r < 8 {
                Go::Commit(-libc::EIO)
            } else if r < if read { 30 } else { 20 } {
                Go::Commit(h.req.bytes() as i32)
            } else {
                Go::Serve
            };
            if g != Go::Serve {
                lock(&w.fates).entry(h.io.seq).or_default().committed = true;
            }
            s.held = None;
            s.go = Some(g);
            cv.notify_all();
            drop(s);
            w.log(q, format!("tag {} gen {}: {g:?}", h.req.tag, h.gen));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity reads it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// The first CPU of hardware queue `q` of `/dev/ublkb<id>`.
fn queue_cpu(id: u32, q: usize) -> Result<usize> {
    let p = format!("/sys/block/ublkb{id}/mq/{q}/cpu_list");
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
    s.split(|c: char| !c.is_ascii_digit())
        .find(|t| !t.is_empty())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow!("{p}: no CPU in {s:?}"))
}

#[derive(Default, Debug, Clone, Copy)]
struct IoStats {
    reads: u64,
    writes: u64,
    read_bytes_checked: u64,
    writes_checked_in_backing: u64,
    eio: u64,
}

impl std::ops::AddAssign for IoStats {
    fn add_assign(&mut self, o: IoStats) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.read_bytes_checked += o.read_bytes_checked;
        self.writes_checked_in_backing += o.writes_checked_in_backing;
        self.eio += o.eio;
    }
}

/// The I/O thread of queue `q`: one O_DIRECT READ or WRITE at a time, in its own part
/// of the READ and WRITE areas, each checked.
fn io_thread(
    w: Arc<World>,
    q: usize,
    cpu: usize,
    dev: File,
    backing: File,
    seed: u64,
) -> Result<IoStats> {
    pin_to_cpu(cpu)?;
    let mut rng = Rng::new(seed);
    let mut buf = AlignedBuf::new(REQ_MAX as usize);
    let mut st = IoStats::default();
    let n = w.nr_q as u64;
    let (r0, r1) = (READ_END * q as u64 / n, READ_END * (q as u64 + 1) / n);
    let (w0, w1) = (
        READ_END + (WRITE_END - READ_END) * q as u64 / n,
        READ_END + (WRITE_END - READ_END) * (q as u64 + 1) / n,
    );
    let mut seq = (q as u64) << 48;
    while !w.stop.load(Ordering::SeqCst) {
        seq += 1;
        let write = rng.below(2) == 0;
        let (a, b) = if write { (w0, w1) } else { (r0, r1) };
        let dev_off = a + 512 * rng.below((b - a - REQ_MAX) / 512 + 1);
        // one request: the block layer splits an I/O of max_sectors at a physical
        // block boundary, so one that starts inside a 4 KiB block must end before
        // max_sectors from that block's start
        let max = REQ_MAX - dev_off % 4096;
        let len = 512 * (1 + rng.below(max / 512));
        let io = IoRec {
            seq,
            write,
            dev_off,
            len,
            seed: rng.next(),
        };
        lock(&w.fates).insert(seq, Fate::default());
        *lock(&w.cur[q]) = Some(io);
        {
            let mut h = lock(&w.hist[q]);
            h.push_back(io);
            if h.len() > HIST {
                h.pop_front();
            }
        }
        let b = &mut buf.as_mut_slice()[..len as usize];
        let r = if write {
            wfill(b, io.seed, 0);
            st.writes += 1;
            dev.write_at(b, dev_off)
        } else {
            for (i, x) in b.iter_mut().enumerate() {
                *x = !w.table[(i as u64 % 512) as usize];
            }
            st.reads += 1;
            dev.read_at(b, dev_off)
        };
        let fate = lock(&w.fates).remove(&seq).unwrap_or_default();
        let aborting = w.aborting.load(Ordering::SeqCst);
        let what = format!(
            "queue {q}'s I/O {io:?} ({})",
            if write { "WRITE" } else { "READ" }
        );
        match r {
            Ok(k) if k as u64 == len => {
                if write {
                    if !fate.committed && !aborting {
                        let got = ublk_suite::files::read_at(&backing, dev_off, len as usize)?;
                        if got[..] != b[..] {
                            let i = got.iter().zip(b.iter()).position(|(x, y)| x != y);
                            bail!("{what}: served, but the backing differs from the data written, first at byte {i:?}");
                        }
                        st.writes_checked_in_backing += 1;
                    }
                } else {
                    for (i, x) in b.iter().enumerate() {
                        let want = w.table[(i as u64 % 512) as usize];
                        if *x != want {
                            bail!(
                                "{what}: byte {i} (device offset {}) is {x:#04x}, the backing has \
                                 {want:#04x}{}: a READ's reader got bytes that no fill and no serve \
                                 put there",
                                dev_off + i as u64,
                                if *x == !want {
                                    " (it is the buffer's own old byte)"
                                } else {
                                    ""
                                }
                            );
                        }
                    }
                    st.read_bytes_checked += len;
                }
            }
            Ok(k) if aborting => {
                note(&format!(
                    "{what}: {k} bytes while the device is aborted; the thread ends"
                ));
                break;
            }
            Ok(k) => bail!("{what}: {k} bytes of {len}"),
            Err(e) if e.raw_os_error() == Some(libc::EIO) && (fate.committed || aborting) => {
                st.eio += 1;
                if aborting {
                    break;
                }
            }
            Err(e) if aborting => {
                note(&format!(
                    "{what}: {e} while the device is aborted; the thread ends"
                ));
                break;
            }
            Err(e) => bail!("{what}: {e}, though every request of it was served"),
        }
    }
    *lock(&w.cur[q]) = None;
    Ok(st)
}

// ---------------------------------------------------------------------------------
// Destinations
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dst {
    /// tmpfs, O_RDWR: the pattern file for READ_TO_READ, a sink for the rest.
    TmpRw,
    /// the tmpfs pattern file O_RDONLY
    TmpRo,
    /// a tmpfs sink O_WRONLY|O_APPEND
    TmpAppend,
    /// ext4 on the scratch disk, O_DIRECT|O_RDWR: pattern file or sink
    Ext4,
    Sock,
    PipeW,
    PipeR,
    Null,
    /// /dev/ublkcN itself (the server's fd)
    Char,
    /// /dev/ublkbN O_RDWR (O_RDONLY in abort rounds: nothing dirty when it dies)
    BdevRw,
    BdevRo,
}

const DSTS: [(Dst, u64); 11] = [
    (Dst::TmpRw, 16),
    (Dst::TmpRo, 5),
    (Dst::TmpAppend, 5),
    (Dst::Ext4, 12),
    (Dst::Sock, 12),
    (Dst::PipeW, 5),
    (Dst::PipeR, 3),
    (Dst::Null, 8),
    (Dst::Char, 4),
    (Dst::BdevRw, 12),
    (Dst::BdevRo, 4),
];

/// What the socket's peer must receive, in order.
enum Chunk {
    Known(Vec<u8>),
    Skip(usize),
}

#[derive(Default)]
struct Stream {
    chunks: VecDeque<Chunk>,
    pending: Vec<u8>,
    checked: u64,
    skipped: u64,
    error: Option<String>,
}

impl Stream {
    fn settle(&mut self) {
        while !self.pending.is_empty() && self.error.is_none() {
            let Some(c) = self.chunks.front_mut() else {
                return;
            };
            let k = match c {
                Chunk::Known(v) => {
                    let k = v.len().min(self.pending.len());
                    if v[..k] != self.pending[..k] {
                        let i = v.iter().zip(&self.pending).position(|(a, b)| a != b);
                        self.error = Some(format!(
                            "the socket's peer received other bytes than the WRITE splices sent, \
                             {} bytes into the stream (first difference at +{i:?})",
                            self.checked + self.skipped
                        ));
                        return;
                    }
                    v.drain(..k);
                    self.checked += k as u64;
                    (k, v.is_empty())
                }
                Chunk::Skip(n) => {
                    let k = (*n).min(self.pending.len());
                    *n -= k;
                    self.skipped += k as u64;
                    (k, *n == 0)
                }
            };
            self.pending.drain(..k.0);
            if k.1 {
                self.chunks.pop_front();
            }
        }
    }
}

struct SockSide {
    a: TcpStream,
    /// Bytes read from `a` so far (by READ_TO_READ splices): the feeder's stream
    /// position, which the next one continues from.
    consumed: u64,
    stream: Arc<Mutex<Stream>>,
    stop: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<()>>,
    drainer: Option<std::thread::JoinHandle<()>>,
}

impl SockSide {
    fn new(table: Table) -> Result<SockSide> {
        let (a, b) = tcp_pair()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Arc::new(Mutex::new(Stream::default()));
        let mut fb = b.try_clone().context("cloning the socket")?;
        fb.set_nonblocking(true)?;
        let st = stop.clone();
        let feeder = std::thread::spawn(move || {
            let mut pos = 0u64;
            let mut chunk = vec![0u8; 4096];
            while !st.load(Ordering::SeqCst) {
                table_fill(&table, &mut chunk, pos);
                match fb.write(&chunk) {
                    Ok(n) => pos += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        let mut db = b;
        db.set_read_timeout(Some(Duration::from_millis(200)))?;
        let (st, sm) = (stop.clone(), stream.clone());
        let drainer = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match db.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let mut s = lock(&sm);
                        s.pending.extend_from_slice(&buf[..n]);
                        s.settle();
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        if st.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    Err(e) => {
                        lock(&sm).error = Some(format!("reading the socket's peer: {e}"));
                        return;
                    }
                }
            }
        });
        Ok(SockSide {
            a,
            consumed: 0,
            stream,
            stop,
            feeder: Some(feeder),
            drainer: Some(drainer),
        })
    }

    /// Shuts the stream down: the peer must have got every byte sent, as sent.
    fn finish(&mut self) -> Result<(u64, u64)> {
        let _ = self.a.shutdown(std::net::Shutdown::Write);
        let d = self.drainer.take().ok_or_else(|| anyhow!("no drainer"))?;
        let r = join_within("the socket's drainer", d, Duration::from_secs(30));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(f) = self.feeder.take() {
            join_within("the socket's feeder", f, Duration::from_secs(30))?;
        }
        r?;
        let s = lock(&self.stream);
        if let Some(e) = &s.error {
            bail!("{e}");
        }
        let left: usize = s
            .chunks
            .iter()
            .map(|c| match c {
                Chunk::Known(v) => v.len(),
                Chunk::Skip(n) => *n,
            })
            .sum();
        if left != 0 || !s.pending.is_empty() {
            bail!(
                "the socket's peer: {left} bytes sent by splices never arrived, {} arrived that \
                 no splice sent",
                s.pending.len()
            );
        }
        Ok((s.checked, s.skipped))
    }
}

impl Drop for SockSide {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.a.shutdown(std::net::Shutdown::Both);
    }
}

struct Ext4Files {
    sink: File,
    /// the sink through the page cache, for reading back
    sink_check: File,
    src: File,
    paths: Vec<PathBuf>,
}

impl Drop for Ext4Files {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A splicer's destinations that outlive rounds.
struct Dsts {
    sink: File,
    src: File,
    src_ro: File,
    app: File,
    ext4: Option<Ext4Files>,
    null: File,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    sock: SockSide,
    _dir: ScratchDir,
}

fn open_opts(p: &Path, read: bool, write: bool, flags: i32) -> Result<File> {
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(flags)
        .open(p)
        .with_context(|| format!("opening {}", p.display()))
}

impl Dsts {
    fn new(i: usize, table: &Table, ext4_dir: Option<&Path>) -> Result<Dsts> {
        let dir = ScratchDir::new(Fs::Tmpfs)?;
        let (sink_p, src_p, app_p) = (dir.join("sink"), dir.join("src"), dir.join("append"));
        std::fs::File::create(&sink_p)?.set_len(SINK_SIZE)?;
        std::fs::File::create(&app_p)?;
        let src = std::fs::File::create(&src_p)?;
        table_file(table, &src, SRC_SIZE)?;
        drop(src);
        let ext4 = match ext4_dir {
            Some(d) => {
                let id = format!("{}-{}-{i}", std::process::id(), unique());
                let (sp, rp) = (
                    d.join(format!("zc-random-sink-{id}")),
                    d.join(format!("zc-random-src-{id}")),
                );
                let sf = std::fs::File::create(&sp)?;
                // SAFETY: fallocate on a file we just created, mode 0 (allocate).
                if unsafe { libc::fallocate(sf.as_raw_fd(), 0, 0, SINK_SIZE as libc::off_t) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("fallocate on ext4");
                }
                drop(sf);
                let rf = std::fs::File::create(&rp)?;
                table_file(table, &rf, SRC_SIZE)?;
                rf.sync_all()?;
                drop(rf);
                Some(Ext4Files {
                    sink: open_opts(&sp, true, true, libc::O_DIRECT)?,
                    sink_check: open_opts(&sp, true, false, 0)?,
                    src: open_opts(&rp, true, true, libc::O_DIRECT)?,
                    paths: vec![sp, rp],
                })
            }
            None => None,
        };
        let (pr, pw) = nix::unistd::pipe().context("pipe(2)")?;
        Ok(Dsts {
            sink: open_opts(&sink_p, true, true, 0)?,
            src: open_opts(&src_p, true, true, 0)?,
            src_ro: open_opts(&src_p, true, false, 0)?,
            app: open_opts(&app_p, false, true, libc::O_APPEND)?,
            ext4,
            null: open_opts(Path::new("/dev/null"), true, true, 0)?,
            pipe_r: pr,
            pipe_w: pw,
            sock: SockSide::new(*table)?,
            _dir: dir,
        })
    }
}

/// A splicer's fds of the round's device.
struct RoundFds {
    char_fd: RawFd,
    bdev_rw: File,
    bdev_ro: File,
    /// bdev_rw is writable (not in abort rounds)
    bdev_writable: bool,
}

// ---------------------------------------------------------------------------------
// Inputs and what the contract allows
// ---------------------------------------------------------------------------------

/// One splice's inputs (all printed, Debug, when it fails).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
struct Input {
    /// the fields `pos_in` was built from (when it is a window position)
    q: u64,
    tag: u64,
    off: u64,
    pos_in: i64,
    len: u32,
    flags: u32,
    dst: Dst,
    pos_out: i64,
    /// aimed at the request held on queue `q`
    aimed: bool,
}

impl Input {
    fn direct(&self) -> bool {
        self.flags & DIRECT != 0
    }
    fn r2r(&self) -> bool {
        self.flags & R2R != 0
    }
}

/// A request a splice may meet at its tag.
#[derive(Clone, Copy, Debug)]
struct Cand {
    io: IoRec,
    /// where the request starts in its I/O
    start: u64,
    bytes: u64,
    read: bool,
}

impl Cand {
    fn of(h: &HeldReq) -> Cand {
        Cand {
            io: h.io,
            start: h.req.offset() - h.io.dev_off,
            bytes: h.req.bytes(),
            read: h.req.op == UBLK_IO_OP_READ,
        }
    }
    /// Would the driver lend it for this splice (at request offset `off`)?
    fn fits(&self, inp: &Input, off: u64) -> bool {
        off + u64::from(inp.len) <= self.bytes && self.read == inp.r2r()
    }
}

/// The state of the request at the splice's tag.
#[derive(Debug)]
enum LState {
    /// Known (held by the target all through the splice): no request at the tag.
    NoReq,
    /// Known: this request.
    Req(Cand),
    /// Racy: none, or one of these.
    Racy(Vec<Cand>),
}

fn rw_ok(pos: i64, len: u64) -> bool {
    pos >= 0 && pos.checked_add(len as i64).is_some()
}

fn readable(d: Dst) -> bool {
    !matches!(d, Dst::TmpAppend | Dst::PipeW)
}

fn writable(d: Dst, fds: &RoundFds) -> bool {
    match d {
        Dst::TmpRo | Dst::PipeR | Dst::BdevRo => false,
        Dst::BdevRw => fds.bdev_writable,
        _ => true,
    }
}

/// The exact result of a splice that never reaches the lender's state, with its
/// reason; None when it does (then [`lend_expect`] decides).
fn expect(inp: &Input, nr_q: usize, depth: u16, fds: &RoundFds) -> Option<(i32, &'static str)> {
    let len = u64::from(inp.len);
    // io_uring's prep: the flags, READ_TO_READ alone, the -1 positions
    if inp.flags & !VALID != 0 {
        return Some((-libc::EINVAL, "EINVAL: an unknown flag"));
    }
    if inp.r2r() && !inp.direct() {
        return Some((-libc::EINVAL, "EINVAL: READ_TO_READ without DIRECT"));
    }
    if inp.direct() && (inp.pos_in == -1 || inp.pos_out == -1) {
        return Some((-libc::EINVAL, "EINVAL: a position of -1 with DIRECT"));
    }
    // no fixed file is registered
    if inp.flags & FIXED != 0 {
        return Some((-libc::EBADF, "EBADF: SPLICE_F_FD_IN_FIXED without a table"));
    }
    if !inp.direct() {
        // splice(2)'s rules
        if len == 0 {
            return Some((0, "0: a zero length without DIRECT"));
        }
        if !writable(inp.dst, fds) {
            return Some((-libc::EBADF, "EBADF: without DIRECT, fd_out not writable"));
        }
        if inp.dst != Dst::PipeW {
            return Some((-libc::EINVAL, "EINVAL: without DIRECT, no pipe"));
        }
        if inp.pos_out != -1 {
            return Some((
                -libc::ESPIPE,
                "ESPIPE: without DIRECT, a position on the pipe",
            ));
        }
        if inp.pos_in != -1 && !rw_ok(inp.pos_in, len.min(PIPE_CAP)) {
            return Some((
                -libc::EINVAL,
                "EINVAL: splice(2) to a pipe from a bad position",
            ));
        }
        return Some((-libc::EPERM, "EPERM: splice(2) to a pipe"));
    }
    if matches!(inp.dst, Dst::PipeW | Dst::PipeR) {
        return Some((-libc::ESPIPE, "ESPIPE: a pipe with DIRECT"));
    }
    // the lend path's checks of the destination, then of the source's range
    if inp.r2r() {
        if !readable(inp.dst) {
            return Some((-libc::EBADF, "EBADF: READ_TO_READ from a write-only fd"));
        }
        if inp.dst == Dst::Char {
            return Some((
                -libc::EINVAL,
                "EINVAL: a destination without ->read_iter/->write_iter",
            ));
        }
    } else {
        if !writable(inp.dst, fds) {
            return Some((-libc::EBADF, "EBADF: WRITE into a read-only fd"));
        }
        if inp.dst == Dst::TmpAppend {
            return Some((-libc::EINVAL, "EINVAL: WRITE into an O_APPEND file"));
        }
        if inp.dst == Dst::Char {
            return Some((
                -libc::EINVAL,
                "EINVAL: a destination without ->read_iter/->write_iter",
            ));
        }
    }
    if !rw_ok(inp.pos_out, len) {
        return Some((-libc::EINVAL, "EINVAL: the destination's range"));
    }
    if !rw_ok(inp.pos_in, len) {
        return Some((-libc::EINVAL, "EINVAL: the source's range"));
    }
    // the driver: q_id and tag first
    let pos = inp.pos_in as u64;
    if ublk_splice_pos_to_qid(pos) as usize >= nr_q {
        return Some((-libc::EINVAL, "EINVAL: q_id out of range"));
    }
    if ublk_splice_pos_to_tag(pos) >= depth {
        return Some((-libc::EINVAL, "EINVAL: tag >= queue depth"));
    }
    None
}

/// What the destination gives for a lent request (length > 0): exact, a range of
/// counts, or an errno.
#[derive(Debug, Clone, Copy)]
enum DstExp {
    Exact(i64),
    Range(i64, i64),
    Err(i32),
}

/// Not in docs/contract.md: a socket refuses a position other than 0 in its
/// ->read_iter()/->write_iter() (as for IORING_OP_READ and IORING_OP_WRITE), once the
/// request was lent.
const SOCK_POS: &str =
    "ESPIPE: a socket at a position other than 0 (its own ->read_iter/->write_iter)";

fn dst_expect(inp: &Input, aborting: bool) -> (DstExp, &'static str) {
    let len = i64::from(inp.len);
    let p = inp.pos_out;
    let aligned = (inp.off | u64::from(inp.len) | p as u64).is_multiple_of(512);
    let e = if inp.r2r() {
        match inp.dst {
            Dst::TmpRw | Dst::TmpRo => (
                DstExp::Exact(len.min((SRC_SIZE as i64 - p).max(0))),
                "transfer READ_TO_READ: tmpfs",
            ),
            Dst::Ext4 if aligned => (DstExp::Exact(len), "transfer READ_TO_READ: ext4 O_DIRECT"),
            Dst::Ext4 => (
                DstExp::Err(-libc::EINVAL),
                "EINVAL: ext4 O_DIRECT misaligned",
            ),
            Dst::Sock if p != 0 => (DstExp::Err(-libc::ESPIPE), SOCK_POS),
            Dst::Sock => (DstExp::Range(1, len), "transfer READ_TO_READ: socket"),
            Dst::Null => (
                DstExp::Exact(0),
                "0: READ_TO_READ from /dev/null (end of file)",
            ),
            _ => (DstExp::Exact(len), "transfer READ_TO_READ: block device"),
        }
    } else {
        match inp.dst {
            Dst::TmpRw => (DstExp::Exact(len), "transfer WRITE: tmpfs"),
            Dst::Ext4 if aligned => (DstExp::Exact(len), "transfer WRITE: ext4 O_DIRECT"),
            Dst::Ext4 => (
                DstExp::Err(-libc::EINVAL),
                "EINVAL: ext4 O_DIRECT misaligned",
            ),
            Dst::Sock if p != 0 => (DstExp::Err(-libc::ESPIPE), SOCK_POS),
            Dst::Sock => (DstExp::Range(1, len), "transfer WRITE: socket"),
            Dst::Null => (DstExp::Exact(len), "transfer WRITE: /dev/null"),
            _ if p >= DEV_SIZE as i64 => (
                DstExp::Err(-libc::ENOSPC),
                "ENOSPC: WRITE past the block device's end",
            ),
            _ => (
                DstExp::Exact(len.min(DEV_SIZE as i64 - p)),
                "transfer WRITE: block device",
            ),
        }
    };
    // the block device of a dying disk: size 0 (reads give 0, writes ENOSPC), or EIO
    if aborting && matches!(inp.dst, Dst::BdevRw | Dst::BdevRo) {
        return (DstExp::Range(0, len), e.1);
    }
    e
}

fn dst_ok(e: DstExp, res: i32, inp: &Input, aborting: bool) -> bool {
    let r = i64::from(res);
    let ok = match e {
        DstExp::Exact(n) => r == n,
        DstExp::Range(a, b) => r >= a && r <= b,
        DstExp::Err(x) => res == x,
    };
    ok || (aborting
        && matches!(inp.dst, Dst::BdevRw | Dst::BdevRo)
        && (res == -libc::ENOSPC || res == -libc::EIO))
}

// ---------------------------------------------------------------------------------
// A splicer
// ---------------------------------------------------------------------------------

struct Splicer {
    id: usize,
    round: usize,
    seed: u64,
    rng: Rng,
    ring: IoUring,
    d: Dsts,
    counts: BTreeMap<&'static str, u64>,
    n: u64,
    /// /sys/block/ublkbN: gone once the driver aborted the device and removes it
    sysblk: PathBuf,
}

/// The random numbers of one splice, drawn in advance.
struct Draws([u64; 32], usize);

impl Draws {
    fn next(&mut self) -> u64 {
        let v = self.0[self.1 % 32];
        self.1 += 1;
        v
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pick_dst(rng: &mut Draws, ext4: bool) -> Dst {
    let total: u64 = DSTS
        .iter()
        .filter(|(d, _)| ext4 || *d != Dst::Ext4)
        .map(|(_, w)| w)
        .sum();
    let mut r = rng.below(total);
    for (d, w) in DSTS {
        if !ext4 && d == Dst::Ext4 {
            continue;
        }
        if r < w {
            return d;
        }
        r -= w;
    }
    Dst::Null
}

impl Splicer {
    fn gen(&mut self, w: &World) -> Input {
        // a fixed number of draws per splice: a replay draws the same numbers for the
        // same splice, whatever the timing made of the earlier ones
        let mut x = [0u64; 32];
        for v in x.iter_mut() {
            *v = self.rng.next();
        }
        let mut rng = Draws(x, 0);
        let rng = &mut rng;
        let held: Vec<HeldReq> = (0..w.nr_q).filter_map(|q| w.snap(q).1).collect();
        let (ra, rp) = (rng.below(100), rng.next());
        let aim = if !held.is_empty() && ra < 65 {
            Some(held[(rp % held.len() as u64) as usize])
        } else {
            None
        };
        // the flags: direction, mostly the held request's
        let (r, rd, rb) = (rng.below(100), rng.below(100), rng.below(2));
        let mut flags = if r < 8 {
            0
        } else if r < 11 {
            R2R
        } else if let Some(h) = aim.filter(|_| rd < 75) {
            if h.req.op == UBLK_IO_OP_READ {
                DIRECT | R2R
            } else {
                DIRECT
            }
        } else if rb == 0 {
            DIRECT
        } else {
            DIRECT | R2R
        };
        let r = rng.below(100);
        if r < 12 {
            flags |= 1 << rng.below(4);
        } else if r < 16 {
            flags |= UNKNOWN[rng.below(UNKNOWN.len() as u64) as usize];
        } else if r < 18 {
            flags |= FIXED;
        }
        let (rq, vq, rt, vt) = (rng.below(100), rng.next(), rng.below(100), rng.next());
        let (q, tag, bytes) = match aim {
            Some(h) => (u64::from(h.req.q_id), u64::from(h.req.tag), h.req.bytes()),
            None => {
                let q = if rq < 85 {
                    vq % w.nr_q as u64
                } else if rq < 95 {
                    w.nr_q as u64 + vq % 4
                } else {
                    vq % (1 << 21)
                };
                let d = u64::from(w.depth);
                let tag = if rt < 80 {
                    vt % d
                } else if rt < 95 {
                    d + vt % (4096 - d)
                } else {
                    4095
                };
                (q, tag, REQ_MAX)
            }
        };
        let r = rng.below(100);
        let mut off = if r < 40 {
            0
        } else if r < 62 {
            512 * rng.below(bytes / 512)
        } else if r < 77 {
            rng.below(bytes)
        } else if r < 87 {
            bytes - 1 - rng.below(bytes.min(1024))
        } else if r < 93 {
            bytes + rng.below(4096)
        } else if r < 97 {
            (1 << 30) - 1 - rng.below(4096)
        } else {
            rng.below(1 << 30)
        };
        let dst = pick_dst(rng, self.d.ext4.is_some());
        if flags & R2R != 0 && dst == Dst::Sock {
            // the feeder's stream continues at `consumed`: the pattern lines up
            off = (off & !511) | (self.d.sock.consumed % 512);
            off = off.min((1 << 30) - 1);
        }
        let r = rng.below(100);
        let rest = bytes.saturating_sub(off);
        let len = if r < 6 {
            0
        } else if r < 20 {
            1 + rng.below(511)
        } else if r < 50 {
            512 * (1 + rng.below(bytes / 512))
        } else if r < 72 {
            rest
        } else if r < 84 {
            rest + 1 + rng.below(4096)
        } else {
            rng.below(2 * REQ_MAX + 1)
        } as u32;
        let r = rng.below(100);
        let window = ((q << UBLK_SPLICE_QID_OFF) | (tag << UBLK_SPLICE_BUF_BITS) | off) as i64;
        let pos_in = if flags & DIRECT == 0 && r < 20 {
            -1
        } else if r < 90 {
            window
        } else if r < 93 {
            UBLK_SPLICE_POS_INVALID as i64
        } else if r < 96 {
            window | i64::MIN
        } else {
            i64::MAX - rng.below(16) as i64
        };
        let r = rng.below(100);
        let pos_out = if flags & DIRECT == 0 {
            if r < 50 {
                -1
            } else {
                rng.below(1 << 20) as i64
            }
        } else if r < 3 {
            -1
        } else if r < 6 {
            -512 * (1 + rng.below(8) as i64)
        } else if r < 8 {
            // past i64::MAX at its end
            if len > 0 {
                i64::MAX - rng.below(u64::from(len).min(16)) as i64
            } else {
                -1 - rng.below(1 << 20) as i64 - 1
            }
        } else if dst == Dst::Sock {
            // a socket has no position: 0, or ESPIPE from its ->read_iter/->write_iter
            if rng.below(100) < 75 {
                0
            } else {
                1 + rng.below(1 << 20) as i64
            }
        } else if flags & R2R != 0 {
            // congruent to the request offset: the pattern lines up
            let k = match dst {
                Dst::TmpRw | Dst::TmpRo => rng.below((SRC_SIZE + (128 << 10)) / 512),
                Dst::Ext4 => rng.below((SRC_SIZE - (256 << 10)) / 512),
                Dst::BdevRw | Dst::BdevRo => rng.below(BDEV_READ_END / 512),
                _ => rng.below(2048),
            };
            (512 * k + off % 512) as i64
        } else {
            match dst {
                Dst::TmpRw | Dst::TmpAppend | Dst::TmpRo => rng.below(SINK_SIZE) as i64,
                Dst::Ext4 if rng.below(2) == 0 => (512 * rng.below(SINK_SIZE / 512 - 512)) as i64,
                Dst::Ext4 => rng.below(SINK_SIZE - (256 << 10)) as i64,
                // some past the end: ENOSPC
                Dst::BdevRw | Dst::BdevRo if rng.below(100) < 25 => {
                    (DEV_SIZE + rng.below(64 << 10)) as i64
                }
                // each splicer writes a part of the device's own (the pages are shared)
                Dst::BdevRw | Dst::BdevRo => {
                    let sl = (DEV_SIZE - WRITE_END) / SPLICERS as u64 / 512 * 512;
                    if self.id == SPLICERS - 1 && rng.below(100) < 30 {
                        // up to the device's end: short counts
                        (DEV_SIZE - rng.below(64 << 10)) as i64
                    } else {
                        (WRITE_END + sl * self.id as u64 + rng.below(sl - (136 << 10))) as i64
                    }
                }
                _ => rng.below(1 << 20) as i64,
            }
        };
        Input {
            q,
            tag,
            off,
            pos_in,
            len,
            flags,
            dst,
            pos_out,
            aimed: aim.is_some(),
        }
    }

    fn fd_out(&self, inp: &Input, fds: &RoundFds) -> RawFd {
        let d = &self.d;
        let r2r = inp.r2r();
        match inp.dst {
            Dst::TmpRw if r2r => d.src.as_raw_fd(),
            Dst::TmpRw => d.sink.as_raw_fd(),
            Dst::TmpRo => d.src_ro.as_raw_fd(),
            Dst::TmpAppend => d.app.as_raw_fd(),
            Dst::Ext4 => {
                let e = d.ext4.as_ref().expect("ext4 destinations");
                if r2r {
                    e.src.as_raw_fd()
                } else {
                    e.sink.as_raw_fd()
                }
            }
            Dst::Sock => d.sock.a.as_raw_fd(),
            Dst::PipeW => d.pipe_w.as_raw_fd(),
            Dst::PipeR => d.pipe_r.as_raw_fd(),
            Dst::Null => d.null.as_raw_fd(),
            Dst::Char => fds.char_fd,
            Dst::BdevRw => fds.bdev_rw.as_raw_fd(),
            Dst::BdevRo => fds.bdev_ro.as_raw_fd(),
        }
    }

    /// Issues one splice and judges it.
    fn one(&mut self, w: &World, fds: &RoundFds, global: u64) -> Result<()> {
        let inp = self.gen(w);
        self.n += 1;
        let pre = expect(&inp, w.nr_q, w.depth, fds);
        let q = ublk_splice_pos_to_qid(inp.pos_in as u64) as usize;
        let tag = ublk_splice_pos_to_tag(inp.pos_in as u64);
        let lender = pre.is_none();
        let ab0 = w.aborting.load(Ordering::SeqCst);
        let before = if lender { Some(w.snap(q)) } else { None };
        // the queue whose daemon died, once the driver aborted it (its monitor aborts the
        // queue, then the removal takes /sys/block/ublkbN away): no request to lend
        let dead = lender && q as u64 == w.dead_q.load(Ordering::SeqCst) && gone(&self.sysblk);
        let sqe = opcode::Splice::new(
            types::Fd(fds.char_fd),
            inp.pos_in,
            types::Fd(self.fd_out(&inp, fds)),
            inp.pos_out,
            inp.len,
        )
        .flags(inp.flags)
        .build()
        .user_data(self.n);
        submit(&mut self.ring, &sqe)?;
        let res = match wait_cqe(&mut self.ring, CQE_TIMEOUT)? {
            Some(c) if c.user_data() == self.n => c.result(),
            Some(c) => bail!(
                "a CQE of another splice ({}): {}",
                c.user_data(),
                res(c.result())
            ),
            None => bail!("no CQE within {CQE_TIMEOUT:?}: the splice hangs"),
        };
        let after = if lender { Some(w.snap(q)) } else { None };
        let aborting = ab0 || w.aborting.load(Ordering::SeqCst);
        let (seed, round, id, n) = (self.seed, self.round, self.id, self.n);
        let ctx = || {
            format!(
                "seed {seed:#x}, round {round}, splicer {id}, splice {n} (#{global} overall): \
                 {inp:?}, pos_in {:#x} = (q {}, tag {}, off {})",
                inp.pos_in as u64,
                ublk_splice_pos_to_qid(inp.pos_in as u64),
                ublk_splice_pos_to_tag(inp.pos_in as u64),
                ublk_splice_pos_to_off(inp.pos_in as u64),
            )
        };
        if is_kernel_internal_errno(res) {
            bail!(
                "{}: the kernel-internal errno {res} reached userspace",
                ctx()
            );
        }
        if let Some((want, why)) = pre {
            if res != want {
                bail!(
                    "{}: {}, the contract says {} ({why})",
                    ctx(),
                    res_str(res),
                    res_str(want)
                );
            }
            *self.counts.entry(why).or_default() += 1;
            return Ok(());
        }
        // the lender's state at the tag
        let (before, after) = (before.expect("snap"), after.expect("snap"));
        if dead {
            if res != -libc::EINVAL {
                bail!(
                    "{}: {}, the contract says EINVAL: queue {q}'s daemon died and the driver \
                     aborted its requests",
                    ctx(),
                    res_str(res)
                );
            }
            *self.counts.entry(DEAD).or_default() += 1;
            return Ok(());
        }
        let st = match (before, after) {
            ((g0, Some(h0)), (g1, Some(_))) if g0 == g1 && !aborting => {
                if h0.req.tag == tag {
                    LState::Req(Cand::of(&h0))
                } else {
                    LState::NoReq
                }
            }
            _ => {
                // being committed, not yet seen, or a queue going away: any request of
                // the queue's recent I/Os, or none
                let mut c: Vec<Cand> = lock(&w.hist[q])
                    .iter()
                    .map(|io| Cand {
                        io: *io,
                        start: 0,
                        bytes: io.len,
                        read: !io.write,
                    })
                    .collect();
                for h in [before.1, after.1].into_iter().flatten() {
                    if h.req.tag == tag {
                        c.push(Cand::of(&h));
                    }
                }
                LState::Racy(c)
            }
        };
        let len = u64::from(inp.len);
        // past io_uring's checks the position is a window position
        let off = u64::from(ublk_splice_pos_to_off(inp.pos_in as u64));
        let (why, fits): (&'static str, Vec<Cand>) = match &st {
            LState::NoReq => {
                if res != -libc::EINVAL {
                    bail!(
                        "{}: {}, the contract says EINVAL: no request at tag {tag} (the only one of \
                         queue {q} is held at tag {}){}",
                        ctx(),
                        res_str(res),
                        before.1.map(|h| h.req.tag).unwrap_or(0),
                        foreign_note(w)
                    );
                }
                ("EINVAL: no started request at the tag", Vec::new())
            }
            LState::Req(c) => {
                if off + len > c.bytes {
                    if res != -libc::EINVAL {
                        bail!(
                            "{}: {}, the contract says EINVAL: offset + length past the request \
                             held ({:?}, {} bytes)",
                            ctx(),
                            res_str(res),
                            before.1,
                            c.bytes
                        );
                    }
                    ("EINVAL: past the request", Vec::new())
                } else if c.read != inp.r2r() {
                    if res != -libc::EINVAL {
                        bail!(
                            "{}: {}, the contract says EINVAL: the wrong direction for the {} held \
                             ({:?})",
                            ctx(),
                            res_str(res),
                            if c.read { "READ" } else { "WRITE" },
                            before.1
                        );
                    }
                    ("EINVAL: the wrong direction for the request", Vec::new())
                } else if len == 0 {
                    if res != 0 {
                        bail!(
                            "{}: {}, the contract says 0: a zero length within the request held \
                             ({:?})",
                            ctx(),
                            res_str(res),
                            before.1
                        );
                    }
                    ("0: a zero length on a held request", Vec::new())
                } else {
                    let (e, why) = dst_expect(&inp, aborting);
                    if !dst_ok(e, res, &inp, aborting) {
                        bail!(
                            "{}: {}, the contract says {e:?} ({why}) for the request held ({:?})",
                            ctx(),
                            res_str(res),
                            before.1
                        );
                    }
                    (if res > 0 { why } else { dst_reason(res, why) }, vec![*c])
                }
            }
            LState::Racy(cs) => {
                let fits: Vec<Cand> = cs.iter().copied().filter(|c| c.fits(&inp, off)).collect();
                if res == -libc::EINVAL {
                    (
                        "racy: EINVAL (no request, or one it does not fit)",
                        Vec::new(),
                    )
                } else if fits.is_empty() {
                    bail!(
                        "{}: {}, but no request queue {q} had could take it (racy state; before \
                         {before:?}, after {after:?}; only EINVAL is allowed){}",
                        ctx(),
                        res_str(res),
                        foreign_note(w)
                    );
                } else if len == 0 {
                    if res != 0 {
                        bail!("{}: {}, racy: EINVAL or 0 allowed", ctx(), res_str(res));
                    }
                    ("racy: 0 (zero length)", Vec::new())
                } else {
                    let (e, why) = dst_expect(&inp, aborting);
                    if !dst_ok(e, res, &inp, aborting) {
                        bail!(
                            "{}: {}, racy: EINVAL or {e:?} ({why}) allowed",
                            ctx(),
                            res_str(res)
                        );
                    }
                    (
                        if res > 0 {
                            "racy: a transfer"
                        } else {
                            "racy: the destination's result"
                        },
                        fits,
                    )
                }
            }
        };
        *self.counts.entry(why).or_default() += 1;
        if res > 0 {
            if inp.r2r() {
                if inp.dst == Dst::Sock {
                    self.d.sock.consumed += res as u64;
                }
            } else {
                let known = matches!(st, LState::Req(_));
                self.check_write(&inp, res as usize, &fits, known, fds)
                    .map_err(|e| anyhow!("{}: {e:#}", ctx()))?;
            }
        }
        Ok(())
    }

    /// The bytes a WRITE splice moved are the request's.
    fn check_write(
        &mut self,
        inp: &Input,
        n: usize,
        fits: &[Cand],
        known: bool,
        fds: &RoundFds,
    ) -> Result<()> {
        let want = |c: &Cand| -> Vec<u8> {
            let mut v = vec![0u8; n];
            wfill(&mut v, c.io.seed, c.start + inp.off);
            v
        };
        let writes: Vec<&Cand> = fits.iter().filter(|c| !c.read).collect();
        if writes.is_empty() {
            bail!("a WRITE splice moved {n} bytes, but no WRITE request could have lent them");
        }
        let f = match inp.dst {
            Dst::TmpRw => &self.d.sink,
            Dst::Ext4 => &self.d.ext4.as_ref().expect("ext4").sink_check,
            Dst::BdevRw => &fds.bdev_rw,
            Dst::Sock => {
                let mut s = lock(&self.d.sock.stream);
                if known || writes.len() == 1 {
                    s.chunks.push_back(Chunk::Known(want(writes[0])));
                } else {
                    s.chunks.push_back(Chunk::Skip(n));
                }
                s.settle();
                *self
                    .counts
                    .entry("data: WRITE to the socket, queued")
                    .or_default() += 1;
                return Ok(());
            }
            _ => return Ok(()),
        };
        let mut got = vec![0u8; n];
        f.read_exact_at(&mut got, inp.pos_out as u64)
            .context("reading back what the splice wrote")?;
        let head = n.min(64);
        let matches = |c: &Cand| {
            let mut v = vec![0u8; head];
            wfill(&mut v, c.io.seed, c.start + inp.off);
            v[..] == got[..head] && want(c) == got
        };
        if writes.iter().any(|c| matches(c)) {
            *self
                .counts
                .entry("data: WRITE checked in the destination")
                .or_default() += 1;
            return Ok(());
        }
        let first = writes.first().map(|c| {
            let w = want(c);
            w.iter().zip(&got).position(|(a, b)| a != b)
        });
        bail!(
            "the {n} bytes the WRITE splice put at {} of {:?} are not the request's data ({} \
             candidate request(s); against the first, the first difference is at {first:?})",
            inp.pos_out,
            inp.dst,
            writes.len()
        )
    }
}

fn res_str(r: i32) -> String {
    res(r)
}

fn dst_reason(res: i32, why: &'static str) -> &'static str {
    if res == 0 {
        if why.contains("/dev/null") {
            why
        } else {
            "0: READ_TO_READ at or past the source's end"
        }
    } else {
        why
    }
}

fn foreign_note(w: &World) -> String {
    let f = lock(&w.foreign);
    if f.is_empty() {
        String::new()
    } else {
        format!(
            " [the target saw requests that were not the I/O threads' (the test's model of \
             the tags is then wrong): {f:?}]"
        )
    }
}

// ---------------------------------------------------------------------------------
// Rounds
// ---------------------------------------------------------------------------------

struct Totals {
    counts: BTreeMap<&'static str, u64>,
    io: IoStats,
    splices: u64,
    rounds: usize,
    aborts: usize,
}

fn env_u64(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(s) => {
            let t = s.trim();
            let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => t.parse(),
            };
            v.map(Some)
                .map_err(|e| anyhow!("{name}={s:?}: not a number: {e}"))
        }
        Err(_) => Ok(None),
    }
}

/// Sets a vm sysctl for the test and puts the old value back after.
struct Sysctl(PathBuf, String);

impl Sysctl {
    fn set(name: &str, v: &str) -> Option<Sysctl> {
        let p = PathBuf::from(format!("/proc/sys/vm/{name}"));
        let old = std::fs::read_to_string(&p).ok()?;
        std::fs::write(&p, v).ok()?;
        Some(Sysctl(p, old.trim().to_string()))
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, &self.1);
    }
}

#[allow(clippy::too_many_arguments)]
fn round(
    seed: u64,
    r: usize,
    quota: u64,
    abort: bool,
    nr_q: usize,
    depth: u16,
    table: &Table,
    dsts: Vec<Dsts>,
    tot: &mut Totals,
) -> Result<Vec<Dsts>> {
    let table = *table;
    let mut rng = Rng::new(mix(seed ^ ((r as u64) << 32)));
    let dir = ScratchDir::new(Fs::Tmpfs)?;
    let backing = dir.join("backing.img");
    let f = std::fs::File::create(&backing)?;
    table_file(&table, &f, DEV_SIZE)?;
    drop(f);
    let w = Arc::new(World::new(nr_q, depth, table));
    let target = Arc::new(Wrap::new(
        LoopTarget::open(&backing, true)?,
        RandHold { w: w.clone() },
    ));
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = true;
    cfg.nr_queues = nr_q as u16;
    cfg.depth = depth;
    cfg.max_io_buf_bytes = REQ_MAX as u32;
    let t_start = Instant::now();
    let dev = Device::start_with(&cfg, target)?;
    // dropped before the device: nothing stays held when a round ends early
    let _release = ReleaseOnDrop(w.clone());
    let id = dev.id();
    let bpath = wait_block_node(id, Duration::from_secs(10))?;
    // readahead: large for the reads that fill the page cache below (a few requests
    // per MiB, not one per page), then off
    let ra = format!("/sys/block/ublkb{id}/queue/read_ahead_kb");
    std::fs::write(&ra, "1024").with_context(|| format!("writing 1024 to {ra}"))?;
    // no background writeback of the pages splices dirty in the block device: this
    // device's share of the dirty threshold is large (and the flusher's periodic run
    // is off for the test, see random_body), so they are written at the round's end
    let mr = format!("/sys/block/ublkb{id}/bdi/min_ratio");
    if let Err(e) = std::fs::write(&mr, "50") {
        note(&format!("writing 50 to {mr}: {e}"));
    }
    // the block device's pages that splices read and write are cached before holding,
    // and stay so: the last close of a block device drops its page cache (kill_bdev),
    // and a read of it then would be a request of no I/O thread's
    let opener = ublk_suite::files::open_ro(&bpath)?;
    {
        let mut buf = vec![0u8; 1 << 20];
        for off in [0, 1 << 20, 2 << 20, 6 << 20, 7 << 20] {
            opener
                .read_exact_at(&mut buf, off)
                .context("reading the block device into the page cache")?;
        }
    }
    std::fs::write(&ra, "0").with_context(|| format!("writing 0 to {ra}"))?;
    let char_fd = dev
        .char_fd()
        .ok_or_else(|| anyhow!("no /dev/ublkcN"))?
        .as_raw_fd();
    let cpus: Vec<usize> = (0..nr_q).map(|q| queue_cpu(id, q)).collect::<Result<_>>()?;
    note(&format!(
        "round {r}: /dev/ublkb{id}, {nr_q} queue(s) on CPUs {cpus:?}, depth {depth}, {quota} \
         splices{}",
        if abort {
            ", ending with a queue's daemon gone"
        } else {
            ""
        }
    ));
    let t_up = t_start.elapsed();
    let t0 = Instant::now();
    w.started.store(true, Ordering::SeqCst);
    w.holding.store(true, Ordering::SeqCst);
    let abort_at = abort.then(|| quota * (40 + rng.below(30)) / 100);
    let cw = w.clone();
    let cseed = rng.next();
    let comm = std::thread::spawn(move || committer(cw, cseed, abort_at));
    let mut ios = Vec::new();
    for (q, cpu) in cpus.iter().enumerate() {
        let (ww, cpu, s) = (w.clone(), *cpu, rng.next());
        let f = open_direct(&bpath)?;
        let bk = ublk_suite::files::open_ro(&backing)?;
        ios.push(std::thread::spawn(move || {
            let res = io_thread(ww.clone(), q, cpu, f, bk, s);
            if let Err(e) = &res {
                ww.fail(format!("seed {seed:#x}, round {r}: {e:#}"));
            }
            res
        }));
    }
    let mut sps = Vec::new();
    for (i, d) in dsts.into_iter().enumerate() {
        let fds = RoundFds {
            char_fd,
            bdev_rw: if abort {
                ublk_suite::files::open_ro(&bpath)?
            } else {
                ublk_suite::files::open_rw(&bpath)?
            },
            bdev_ro: ublk_suite::files::open_ro(&bpath)?,
            bdev_writable: !abort,
        };
        let ww = w.clone();
        let sysblk = PathBuf::from(format!("/sys/block/ublkb{id}"));
        let sseed = mix(seed ^ mix((r as u64) << 8 | i as u64));
        sps.push(std::thread::spawn(move || {
            let mut sp = Splicer {
                id: i,
                round: r,
                seed,
                rng: Rng::new(sseed),
                ring: match IoUring::new(8) {
                    Ok(r) => r,
                    Err(e) => {
                        ww.fail(format!("io_uring_setup: {e}"));
                        return (d, fds, BTreeMap::new(), 0);
                    }
                },
                d,
                counts: BTreeMap::new(),
                n: 0,
                sysblk: sysblk.clone(),
            };
            let (mut gone_at, mut quota_at): (Option<Instant>, Option<Instant>) = (None, None);
            while !ww.stop.load(Ordering::SeqCst) {
                let g = ww.splices.fetch_add(1, Ordering::SeqCst);
                if g >= quota {
                    if !abort {
                        break;
                    }
                    // an abort round goes on until the driver has removed the disk, at a
                    // slower pace (most are refused now)
                    let q_at = *quota_at.get_or_insert_with(Instant::now);
                    std::thread::sleep(Duration::from_millis(2));
                    if gone(&sysblk) {
                        let t = *gone_at.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    } else if q_at.elapsed() > Duration::from_secs(120) {
                        ww.fail(format!(
                            "seed {seed:#x}, round {r}: {} 120 s after the round's splices were \
                             done",
                            if ww.aborting.load(Ordering::SeqCst) {
                                "the driver has not removed the disk whose queue's daemon ended"
                            } else {
                                "no queue's daemon was ended (no request was held)"
                            }
                        ));
                        break;
                    }
                }
                if let Err(e) = sp.one(&ww, &fds, g) {
                    ww.fail(format!("{e:#}"));
                    break;
                }
            }
            let n = sp.n;
            (sp.d, fds, sp.counts, n)
        }));
    }
    // the splicers end on their quota (abort rounds: once the disk is gone)
    let deadline = Instant::now() + Duration::from_secs(240 + quota / 20);
    let mut back = Vec::new();
    let mut fdss = Vec::new();
    let mut n = 0;
    let mut err = None;
    for h in sps {
        let left = deadline.saturating_duration_since(Instant::now());
        match join_within("a splicer", h, left) {
            Ok((d, fds, counts, k)) => {
                back.push(d);
                fdss.push(fds);
                n += k;
                for (k, v) in counts {
                    *tot.counts.entry(k).or_default() += v;
                }
            }
            Err(e) => {
                w.stop.store(true, Ordering::SeqCst);
                err.get_or_insert(e);
            }
        }
    }
    w.stop.store(true, Ordering::SeqCst);
    w.release_all();
    for h in ios {
        match join_within("an I/O thread", h, Duration::from_secs(60)) {
            Ok(Ok(s)) => tot.io += s,
            Ok(Err(_)) => {}
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    if let Err(e) = join_within("the committer", comm, Duration::from_secs(30)) {
        err.get_or_insert(e);
    }
    // writeback of what the splices wrote into the block device's page cache
    w.writeback.store(true, Ordering::SeqCst);
    for f in &fdss {
        if f.bdev_writable {
            f.bdev_rw
                .sync_all()
                .context("fsync of the block device after the round")?;
        }
    }
    drop(fdss);
    drop(opener);
    let took = t0.elapsed();
    let errors = lock(&w.errors).clone();
    let foreign = lock(&w.foreign).clone();
    let t_del = Instant::now();
    let del = dev.stop_and_delete();
    let t_del = t_del.elapsed();
    match del {
        Ok(()) => {}
        Err(e)
            if abort
                && format!("{e:#}")
                    == format!("deleting ublk device {id}: a queue thread panicked") => {}
        Err(e) => {
            err.get_or_insert(e.context("deleting the round's device"));
        }
    }
    if !errors.is_empty() {
        let logs: Vec<String> = (0..nr_q)
            .map(|q| {
                format!(
                    "queue {q}'s target:\n    {}",
                    lock(&w.log[q])
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n    ")
                )
            })
            .collect();
        bail!(
            "round {r}: {}\n  {}{}",
            errors.join("\n  "),
            logs.join("\n  "),
            if foreign.is_empty() {
                String::new()
            } else {
                format!("\n  (the target also saw foreign requests: {foreign:?})")
            }
        );
    }
    if let Some(e) = err {
        return Err(e.context(format!("seed {seed:#x}, round {r}")));
    }
    no_devices()?;
    if !foreign.is_empty() {
        note(&format!(
            "round {r}: the target saw requests that were not the I/O threads' (no splice \
             contradicted the model): {foreign:?}"
        ));
    }
    let line = format!(
        "round {r}: {n} splices in {:.1} s ({:.0} us each){}; device up in {:.1} s, deleted in \
         {:.1} s",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n.max(1) as f64,
        if abort { ", aborted" } else { "" },
        t_up.as_secs_f64(),
        t_del.as_secs_f64()
    );
    println!("{line}");
    note(&line);
    tot.splices += n;
    tot.rounds += 1;
    if abort {
        tot.aborts += 1;
    }
    Ok(back)
}

const DEAD: &str = "EINVAL: the queue whose daemon died, aborted";

/// Reasons the test claims to cover: each must have happened at least once.
const MUST: &[&str] = &[
    DEAD,
    "EINVAL: an unknown flag",
    "EINVAL: READ_TO_READ without DIRECT",
    "EINVAL: a position of -1 with DIRECT",
    "EBADF: SPLICE_F_FD_IN_FIXED without a table",
    "0: a zero length without DIRECT",
    "EBADF: without DIRECT, fd_out not writable",
    "EINVAL: without DIRECT, no pipe",
    "ESPIPE: without DIRECT, a position on the pipe",
    "EPERM: splice(2) to a pipe",
    "ESPIPE: a pipe with DIRECT",
    SOCK_POS,
    "EBADF: READ_TO_READ from a write-only fd",
    "EBADF: WRITE into a read-only fd",
    "EINVAL: WRITE into an O_APPEND file",
    "EINVAL: a destination without ->read_iter/->write_iter",
    "EINVAL: the destination's range",
    "EINVAL: the source's range",
    "EINVAL: q_id out of range",
    "EINVAL: tag >= queue depth",
    "EINVAL: no started request at the tag",
    "EINVAL: past the request",
    "EINVAL: the wrong direction for the request",
    "0: a zero length on a held request",
    "0: READ_TO_READ from /dev/null (end of file)",
    "ENOSPC: WRITE past the block device's end",
    "transfer READ_TO_READ: tmpfs",
    "transfer READ_TO_READ: socket",
    "transfer READ_TO_READ: block device",
    "transfer WRITE: tmpfs",
    "transfer WRITE: socket",
    "transfer WRITE: /dev/null",
    "transfer WRITE: block device",
    "data: WRITE checked in the destination",
    "racy: EINVAL (no request, or one it does not fit)",
];

const MUST_EXT4: &[&str] = &[
    "transfer READ_TO_READ: ext4 O_DIRECT",
    "transfer WRITE: ext4 O_DIRECT",
    "EINVAL: ext4 O_DIRECT misaligned",
];

fn random_body() -> Result<()> {
    let seed = match env_u64("UBLK_ZC_SEED")? {
        Some(s) => s,
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            mix(t ^ (u64::from(std::process::id()) << 40))
        }
    };
    let total = env_u64("UBLK_ZC_RANDOM_SPLICES")?.unwrap_or(100_000).max(1);
    println!("ublk_zc_random: seed {seed:#x} (replay: UBLK_ZC_SEED={seed:#x}), {total} splices");
    note(&format!(
        "ublk_zc_random: seed {seed:#x} (replay: UBLK_ZC_SEED={seed:#x}), {total} splices"
    ));
    fresh()?;
    require_splice_zc()?;
    // the pages splices dirty in /dev/ublkbN are written back at the end of each round
    // only: a writeback in the middle of one would be requests of no I/O thread's
    let _expire = Sysctl::set("dirty_expire_centisecs", "360000");
    let _interval = Sysctl::set("dirty_writeback_centisecs", "360000");
    let ext4 = match scratch::disk_mount_point() {
        Ok(p) => Some(p),
        Err(e) => {
            note(&format!("no ext4 O_DIRECT destinations: {e:#}"));
            None
        }
    };
    let mut rng = Rng::new(seed);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let rounds = (total / 8000).clamp(2, 16) as usize;
    // the READ pattern of the backings and of every READ_TO_READ source
    let mut table = [0u8; 512];
    let mut trng = Rng::new(mix(seed ^ 0x7ab1e));
    for (i, b) in table.iter_mut().enumerate() {
        *b = wbyte(trng.next(), i as u64);
    }
    let mut dsts = (0..SPLICERS)
        .map(|i| Dsts::new(i, &table, ext4.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let mut tot = Totals {
        counts: BTreeMap::new(),
        io: IoStats::default(),
        splices: 0,
        rounds: 0,
        aborts: 0,
    };
    let t0 = Instant::now();
    for r in 0..rounds {
        let quota = total / rounds as u64 + u64::from((r as u64) < total % rounds as u64);
        let abort = r % 3 == 2 || (rounds < 3 && r == rounds - 1);
        let nr_q = if cpus >= 2 && rng.below(4) != 0 { 2 } else { 1 };
        let depth = [1u16, 3, 4, 8][rng.below(4) as usize];
        dsts = round(seed, r, quota, abort, nr_q, depth, &table, dsts, &mut tot)?;
    }
    let mut sock = (0, 0);
    for d in &mut dsts {
        let (c, s) = d.sock.finish()?;
        sock.0 += c;
        sock.1 += s;
    }
    drop(dsts);
    no_devices()?;
    let took = t0.elapsed();
    let summary = format!(
        "ublk_zc_random: seed {seed:#x}: {} splices in {} rounds ({} aborted) in {:.1} s ({:.0} us \
         per splice); I/O threads {:?}; socket bytes checked {}, skipped (racy) {}",
        tot.splices,
        tot.rounds,
        tot.aborts,
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / tot.splices.max(1) as f64,
        tot.io,
        sock.0,
        sock.1
    );
    println!("{summary}");
    note(&summary);
    let mut transfers = 0;
    for (k, v) in &tot.counts {
        println!("  {v:>8}  {k}");
        note(&format!("{v:>8}  {k}"));
        if k.contains("transfer") {
            transfers += v;
        }
    }
    let mut missing: Vec<&str> = MUST
        .iter()
        .chain(if ext4.is_some() { MUST_EXT4 } else { &[] })
        .filter(|k| tot.counts.get(*k).copied().unwrap_or(0) == 0)
        .copied()
        .collect();
    if tot.io.read_bytes_checked == 0 {
        missing.push("a READ through /dev/ublkbN checked");
    }
    if tot.io.writes_checked_in_backing == 0 {
        missing.push("a served WRITE checked in the backing");
    }
    if transfers == 0 {
        bail!("seed {seed:#x}: no splice transferred any data: the test checked nothing");
    }
    if !missing.is_empty() {
        bail!(
            "seed {seed:#x}: outcomes the test claims to cover never happened in {} splices: {}",
            tot.splices,
            missing.join("; ")
        );
    }
    if tot.splices < total {
        bail!(
            "seed {seed:#x}: only {} of {total} splices issued",
            tot.splices
        );
    }
    Ok(())
}

/// 10^5 random splices at /dev/ublkcN, each judged against the contract.
#[test]
fn random_splices_at_the_char_device() {
    let total = env_u64("UBLK_ZC_RANDOM_SPLICES")
        .ok()
        .flatten()
        .unwrap_or(100_000);
    zc_test(
        "random_splices_at_the_char_device",
        300 + total / 200,
        random_body,
    )
}
