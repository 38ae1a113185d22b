//! Review point M3 of series v3 under stress: the lookup of a request by tag in
//! `ublk_ch_splice_lend()` takes its reference on the tag's `struct ublk_io` first
//! (`refcount_inc_not_zero`), and only then touches the request, whose memory an elevator
//! switch frees when it came from the scheduler's tags.
//!
//! One zero-copy device (2 queues of 8 tags, requests of at most 64 KiB, a tmpfs backing)
//! is served by [`RaceTarget`], which holds data requests on the server's own ring (a read
//! of the tag's pipe, 0 to 3 ms, never blocking the queue thread) before serving and
//! committing them.  For `UBLK_ZC_RACE_SECS` (default 20) seconds, up to twice as long
//! while an outcome the test needs has not been seen yet (a slow kernel), with iteration
//! caps:
//!
//! - four block I/O threads write and read back O_DIRECT ranges of regions of their own,
//!   each sector tagged with its offset and a seed, checked on every read and at the end;
//! - two splicer threads, which are not the queues' daemons, issue direct splices from
//!   /dev/ublkcN on their own rings: lends of held requests (claimed, so that the request
//!   cannot be committed under them: each must move exactly its length, or be EINVAL past
//!   the request's end; WRITE lends are checked sector by sector), lends on the tag of a
//!   request that is being released and committed (unclaimed: its length or EINVAL), lends
//!   on any tag (its length or EINVAL) and on positions out of range (EINVAL); a READ is
//!   only read into from the backing itself (what the server reads there too), from
//!   /dev/null (0 bytes) or with a zero length, so that no reader can see foreign data;
//! - one thread switches the device's elevator between `none` and each scheduler
//!   /sys/block/ublkbN/queue/scheduler offers (mq-deadline, ...), which frees the
//!   scheduler's requests while their tags still point at them.  On a kernel that offers
//!   only `none` the rest runs, and the test fails saying so: the M3 case did not.
//!
//! Every splice result is counted by outcome, and the test fails on a result the contract
//! does not document (docs/contract.md), on a wrong byte, and if the race was not run:
//! no lend of a held READ or WRITE, lends held on fewer than two tags, no EINVAL on a
//! stale tag, no lookup of a tag whose last request belonged to a scheduler that had been
//! switched away since (the M3 case), no elevator switch either way.  The kernel log of
//! the test must stay clean ([`zc_test`]; the VM runner judges KASAN and lockdep too), the
//! server commits no error, and the device is deleted at the end.
//!
//! Randomness comes from one seed, printed; `UBLK_ZC_SEED=N` (decimal or 0x hex) replays
//! the same choices (the interleaving is the kernel's).  Needs the series: on a kernel
//! without it the test fails naming UBLK_F_SPLICE_ZC.

mod zc_fixtures;

use anyhow::{anyhow, bail, Context, Result};
use io_uring::{opcode, types, IoUring};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ublk::targets::{data_done, Action, Hooks, Io, IoOp, LoopTarget, Request, Target, Wrap};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig};
use ublk_suite::blockio::{check_sectors, fill_block, full_read_at, full_write_at, open_direct};
use ublk_suite::blockio::{AlignedBuf, Rng};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::ublkdev::{fresh, no_devices, require_splice_zc};
use zc_fixtures::*;

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;
const QUEUES: u16 = 2;
const DEPTH: u16 = 8;
const SLOTS: usize = QUEUES as usize * DEPTH as usize;
/// The largest request (max_io_buf_bytes): a worker's I/O is one request.
const REQ_MAX: usize = 64 << 10;
const WORKERS: u64 = 4;
/// Each worker's own part of the device.
const REGION: u64 = 2 << 20;
const DEV_SIZE: u64 = WORKERS * REGION;
/// Each splicer's own destination file for WRITE lends.
const SCRATCH: u64 = 1 << 20;
const SPLICERS: u64 = 2;
/// How long the target holds a request at most.
const HOLD_MAX_US: u64 = 3000;
/// Claimed lends of one held request at most.
const LENDS_PER_HOLD: u32 = 6;
/// Iteration caps, whatever the time.
const SPLICE_CAP: u64 = 1_000_000;
const IO_CAP: u64 = 100_000;
const SWITCH_CAP: u64 = 2_000;
/// A splice (all of them are to tmpfs or /dev/null) that takes longer is a hang.
const SPLICE_TIMEOUT: Duration = Duration::from_secs(30);
const SPLICE_UD: u64 = 0x7ace;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_data(req: &Request) -> bool {
    req.op == UBLK_IO_OP_READ || req.op == UBLK_IO_OP_WRITE
}

fn slot_of(q_id: u16, tag: u16) -> usize {
    usize::from(q_id) * usize::from(DEPTH) + usize::from(tag)
}

// ---------------------------------------------------------------------------------
// The elevator epoch: (seq << 1) | (a scheduler is active); seq is odd while a switch
// is going on.  A request planned at an even seq with a scheduler active came from that
// scheduler's tags, and is freed by the next switch, which ends at seq + 2 or later.
// ---------------------------------------------------------------------------------

fn epoch_word(seq: u64, sched: bool) -> u64 {
    (seq << 1) | u64::from(sched)
}

/// Was the last request planned at epoch `then` freed by a switch that ended before `now`?
fn freed_since(then: u64, now: u64) -> bool {
    let (s0, sched0, s1) = (then >> 1, then & 1 == 1, now >> 1);
    s0 % 2 == 0 && sched0 && s1 % 2 == 0 && s1 > s0
}

// ---------------------------------------------------------------------------------
// RaceTarget: holds data requests on the queue's ring until the releaser lets them go
// ---------------------------------------------------------------------------------

/// One tag of one queue, as the target saw it.
#[derive(Clone, Copy)]
struct Slot {
    /// The data request held at this tag (not released yet).
    held: Option<Request>,
    /// The last data request planned at this tag.
    last: Option<Request>,
    /// Requests (of any op) planned at this tag so far.
    plans: u64,
    /// Splicers lending the held request: it is not released while any does.
    claims: u32,
    /// Claims of the held request so far.
    lends: u32,
    release_at: Instant,
    /// What leg 0 of the tag's data request reads: its pipe (held) or /dev/zero.
    hold_fd: RawFd,
    /// The elevator epoch when the last request was planned.
    epoch: u64,
}

struct Table {
    slots: Vec<Slot>,
    holding: bool,
    rng: Rng,
    holds: u64,
    passes: u64,
}

/// The hooks of a loop target whose data requests run two legs: leg 0 reads the
/// request's length from the tag's pipe (held until the releaser writes it) or from
/// /dev/zero (not held), into a sink buffer of the tag; leg 1 is the loop target's
/// splice.  The queue thread never waits: a held request is an io_uring read in flight.
struct Race {
    table: Mutex<Table>,
    /// (read end, write end) of each tag's pipe.
    pipes: Vec<(OwnedFd, File)>,
    zero: File,
    zeroes: Vec<u8>,
    /// Where leg 0 reads to: REQ_MAX bytes per tag, never read by us.
    _sink: AlignedBuf,
    sink_addr: u64,
    epoch: Arc<AtomicU64>,
}

/// A loop target with [`Race`]'s hooks.
type RaceTarget = Wrap<Race>;

impl Race {
    fn target(inner: LoopTarget, epoch: Arc<AtomicU64>, seed: u64) -> Result<RaceTarget> {
        Ok(Wrap::new(inner, Race::new(epoch, seed)?))
    }

    fn new(epoch: Arc<AtomicU64>, seed: u64) -> Result<Race> {
        let mut pipes = Vec::new();
        for _ in 0..SLOTS {
            let (r, w) = nix::unistd::pipe().context("pipe(2)")?;
            ublk_suite::sys::set_pipe_size(w.as_fd(), 2 * REQ_MAX)
                .map_err(|e| anyhow!("F_SETPIPE_SZ: {e}"))?;
            pipes.push((r, File::from(w)));
        }
        let zero = File::open("/dev/zero").context("opening /dev/zero")?;
        let mut sink = AlignedBuf::new(SLOTS * REQ_MAX);
        let sink_addr = sink.as_mut_ptr() as u64;
        let now = Instant::now();
        let slot = Slot {
            held: None,
            last: None,
            plans: 0,
            claims: 0,
            lends: 0,
            release_at: now,
            hold_fd: zero.as_raw_fd(),
            epoch: 0,
        };
        Ok(Race {
            table: Mutex::new(Table {
                slots: vec![slot; SLOTS],
                holding: false,
                rng: Rng::new(seed ^ 0x401d),
                holds: 0,
                passes: 0,
            }),
            pipes,
            zero,
            zeroes: vec![0u8; REQ_MAX],
            _sink: sink,
            sink_addr,
            epoch,
        })
    }

    fn set_holding(&self, on: bool) {
        lock(&self.table).holding = on;
    }

    /// Leg 0 of a new request: note it, and hold it (or not).
    fn start(&self, req: &Request) -> RawFd {
        let i = slot_of(req.q_id, req.tag);
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut t = lock(&self.table);
        let hold = t.holding && is_data(req) && t.rng.below(8) != 0;
        let wait = t.rng.below(HOLD_MAX_US + 1);
        if hold {
            t.holds += 1;
        } else if is_data(req) {
            t.passes += 1;
        }
        let s = &mut t.slots[i];
        s.plans += 1;
        s.epoch = epoch;
        if !is_data(req) {
            return -1;
        }
        s.last = Some(*req);
        if hold {
            s.held = Some(*req);
            s.claims = 0;
            s.lends = 0;
            s.release_at = Instant::now() + Duration::from_micros(wait);
            s.hold_fd = self.pipes[i].0.as_raw_fd();
        } else {
            s.hold_fd = self.zero.as_raw_fd();
        }
        s.hold_fd
    }

    /// Releases the held requests that are due (all of them with `all`), writing each
    /// one's length to its pipe; the number released.
    fn release(&self, all: bool) -> Result<usize> {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut t = lock(&self.table);
            for (i, s) in t.slots.iter_mut().enumerate() {
                let Some(req) = s.held else { continue };
                if all || (s.claims == 0 && s.release_at <= now) {
                    s.held = None;
                    due.push((i, req.bytes() as usize));
                }
            }
        }
        for &(i, n) in &due {
            (&self.pipes[i].1)
                .write_all(&self.zeroes[..n])
                .with_context(|| format!("releasing the request held at slot {i}"))?;
        }
        Ok(due.len())
    }

    /// No more holding; everything held is released.
    fn close(&self) -> Result<usize> {
        self.set_holding(false);
        self.release(true)
    }

    /// Claims a random held request that has not been lent too often: it is not released
    /// before [`Race::unclaim`].  (Claims do not keep a request held for long: block
    /// I/O must flow, and the elevator switch drains the queue.)
    fn claim(&self, rng: &mut Rng) -> Option<(usize, Request)> {
        let mut t = lock(&self.table);
        let held: Vec<usize> = (0..SLOTS)
            .filter(|&i| {
                let s = &t.slots[i];
                s.held.is_some() && s.lends < LENDS_PER_HOLD
            })
            .collect();
        if held.is_empty() {
            return None;
        }
        let i = held[rng.below(held.len() as u64) as usize];
        let s = &mut t.slots[i];
        s.claims += 1;
        s.lends += 1;
        s.held.map(|r| (i, r))
    }

    fn unclaim(&self, i: usize) {
        let mut t = lock(&self.table);
        t.slots[i].claims = t.slots[i].claims.saturating_sub(1);
    }

    fn slot(&self, i: usize) -> Slot {
        lock(&self.table).slots[i]
    }

    fn counts(&self) -> (u64, u64) {
        let t = lock(&self.table);
        (t.holds, t.passes)
    }
}

impl Race {
    /// The read of leg 0 into the tag's sink from `fd`, from byte `done` of the request.
    fn leg0_read(&self, req: &Request, fd: RawFd, done: u32, total: u32) -> IoOp {
        let i = slot_of(req.q_id, req.tag) as u64;
        IoOp::Read {
            fd,
            addr: self.sink_addr + i * REQ_MAX as u64 + u64::from(done),
            len: total - done,
            // a pipe and /dev/zero are streams: no position
            offset: u64::MAX,
        }
    }
}

impl Hooks<LoopTarget> for Race {
    fn kind(&self) -> &'static str {
        "race-hold"
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        let req = io.req;
        if !is_data(&req) {
            self.start(&req);
            return inner.queue_io(io);
        }
        let Some(total) = req.data_bytes().filter(|&b| b as usize <= REQ_MAX) else {
            return Action::Commit(-libc::EINVAL);
        };
        let fd = self.start(&req);
        Action::Submit(self.leg0_read(&req, fd, 0, total))
    }
    /// Leg 0 ends like a data op (the rest of a short read of the pipe from the same
    /// pipe); once it has read the whole length, leg 1 is the loop target's request.
    fn io_done(&self, inner: &LoopTarget, io: &mut Io, op: &IoOp, res: i32) -> Action {
        if !is_data(&io.req) || io.leg != 0 {
            return inner.io_done(io, op, res);
        }
        let req = io.req;
        let total = req.data_bytes().unwrap_or(0);
        let a = data_done(io, op, res, |io| {
            let fd = self.slot(slot_of(req.q_id, req.tag)).hold_fd;
            Some(self.leg0_read(&req, fd, io.done, total))
        });
        match a {
            Action::Commit(r) if r >= 0 => {
                io.leg = 1;
                io.done = 0;
                inner.queue_io(io)
            }
            a => a,
        }
    }
}

// ---------------------------------------------------------------------------------
// What the threads share and count
// ---------------------------------------------------------------------------------

struct Ctx {
    target: Arc<RaceTarget>,
    char_fd: RawFd,
    block: PathBuf,
    backing: PathBuf,
    scratch_dir: PathBuf,
    epoch: Arc<AtomicU64>,
    /// Splicers, workers and the switcher stop (set at the deadline or on a failure).
    stop: AtomicBool,
    /// The releaser stops (after everything else).
    stop_releaser: AtomicBool,
    /// The outcomes seen so far (SEEN_*), for racing a little longer on a slow kernel.
    seen: AtomicU64,
}

impl Ctx {
    fn saw(&self, bits: u64) {
        self.seen.fetch_or(bits, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Stops every thread when dropped: on the way out of a failed test, before the device
/// goes.
struct StopAll(Arc<Ctx>);

impl Drop for StopAll {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.stop_releaser.store(true, Ordering::SeqCst);
    }
}

/// Sets `stop` when a thread fails, so that the others end soon.
fn stop_on_err<T>(ctx: &Ctx, r: Result<T>) -> Result<T> {
    if r.is_err() {
        ctx.stop.store(true, Ordering::SeqCst);
    }
    r
}

#[derive(Default, Debug, Clone)]
struct Counts {
    splices: u64,
    /// Claimed lends of held requests that moved exactly their length.
    live_write: u64,
    live_read: u64,
    /// ... of zero length (result 0), and past the request's end (EINVAL).
    live_zero: u64,
    live_past_einval: u64,
    /// Bytes of WRITE lends checked sector by sector.
    checked_bytes: u64,
    /// (q_id, tag) of the claimed lends.
    live_tags: BTreeSet<(u16, u16)>,
    /// Unclaimed lends on the tag of a request being released: moved / EINVAL; and
    /// moved while the tag got a new request meanwhile.
    racy_ok: u64,
    racy_einval: u64,
    racy_overlap: u64,
    /// Lends on a random tag in range: moved / EINVAL.
    any_ok: u64,
    any_einval: u64,
    /// EINVAL lookups of a tag whose last request came from a scheduler that was switched
    /// away since (its memory freed), with no request planned at the tag meanwhile.
    after_free: u64,
    /// Positions out of range (q_id, tag): EINVAL.
    invalid_einval: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.splices += o.splices;
        self.live_write += o.live_write;
        self.live_read += o.live_read;
        self.live_zero += o.live_zero;
        self.live_past_einval += o.live_past_einval;
        self.checked_bytes += o.checked_bytes;
        self.live_tags.extend(o.live_tags.iter().copied());
        self.racy_ok += o.racy_ok;
        self.racy_einval += o.racy_einval;
        self.racy_overlap += o.racy_overlap;
        self.any_ok += o.any_ok;
        self.any_einval += o.any_einval;
        self.after_free += o.after_free;
        self.invalid_einval += o.invalid_einval;
    }
}

const SEEN_LIVE_WRITE: u64 = 1 << 0;
const SEEN_LIVE_READ: u64 = 1 << 1;
const SEEN_RACY_OK: u64 = 1 << 2;
const SEEN_STALE: u64 = 1 << 3;
const SEEN_AFTER_FREE: u64 = 1 << 4;
const SEEN_INVALID: u64 = 1 << 5;
const SEEN_TO_SCHED: u64 = 1 << 6;
const SEEN_TO_NONE: u64 = 1 << 7;
const SEEN_WRITE: u64 = 1 << 8;
const SEEN_READ: u64 = 1 << 9;
/// What the elevator switch gives.
const SEEN_SWITCHED: u64 = SEEN_AFTER_FREE | SEEN_TO_SCHED | SEEN_TO_NONE;
const SEEN_ALL: u64 = (1 << 10) - 1;

impl Counts {
    fn seen(&self) -> u64 {
        [
            (self.live_write, SEEN_LIVE_WRITE),
            (self.live_read, SEEN_LIVE_READ),
            (self.racy_ok, SEEN_RACY_OK),
            (self.racy_einval + self.any_einval, SEEN_STALE),
            (self.after_free, SEEN_AFTER_FREE),
            (self.invalid_einval, SEEN_INVALID),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .fold(0, |a, (_, b)| a | b)
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Switches {
    to_sched: u64,
    to_none: u64,
    /// The longest switch (it waits for the queue to drain).
    longest: Duration,
}

// ---------------------------------------------------------------------------------
// Splicers
// ---------------------------------------------------------------------------------

/// One direct splice from /dev/ublkcN on the splicer's ring.
#[derive(Debug, Clone, Copy)]
struct Lend {
    q_id: u16,
    tag: u16,
    off: u32,
    len: u32,
    /// The file the request's pages are written to (WRITE) or read from (READ_TO_READ).
    fd_out: RawFd,
    off_out: u64,
    flags: u32,
}

impl Lend {
    fn pos(&self) -> u64 {
        ublk_splice_pos(self.q_id, self.tag, self.off)
    }

    fn describe(&self, what: &str, view: Option<&Request>) -> String {
        format!(
            "{what}: splice of {} bytes at offset {} of q_id {} tag {} (position {:#x}, flags \
             {:#x}), file position {}; the request as the test saw it: {view:?}",
            self.len,
            self.off,
            self.q_id,
            self.tag,
            self.pos(),
            self.flags,
            self.off_out as i64
        )
    }
}

struct Splicer {
    ring: IoUring,
    char_fd: RawFd,
    scratch: File,
    backing: File,
    null: File,
    rng: Rng,
    c: Counts,
}

impl Splicer {
    fn run(&mut self, l: &Lend) -> Result<i32> {
        self.c.splices += 1;
        let sqe = opcode::Splice::new(
            types::Fd(self.char_fd),
            l.pos() as i64,
            types::Fd(l.fd_out),
            l.off_out as i64,
            l.len,
        )
        .flags(l.flags)
        .build()
        .user_data(SPLICE_UD);
        submit(&mut self.ring, &sqe)?;
        let (r, others) = wait_cqe_of(&mut self.ring, SPLICE_UD, SPLICE_TIMEOUT)
            .with_context(|| l.describe("no completion", None))?;
        if !others.is_empty() {
            bail!("unexpected CQEs on the splicer's ring: {others:?}");
        }
        Ok(r)
    }

    /// A lend into the scratch file, at a random position.
    fn scratch_lend(&mut self, req: &Request, off: u32, len: u32) -> Lend {
        let room = (SCRATCH - u64::from(len)) / 512;
        Lend {
            q_id: req.q_id,
            tag: req.tag,
            off,
            len,
            fd_out: self.scratch.as_raw_fd(),
            off_out: 512 * self.rng.below(room + 1),
            flags: DIRECT,
        }
    }

    /// The sectors a WRITE lend moved to the scratch file: each must be a sector a worker
    /// wrote (its header's offset and seed, and the data they give), at device offset
    /// `at` + 512 i if `at` is known.
    fn check_lent(&mut self, l: &Lend, at: Option<u64>, what: &str) -> Result<()> {
        let mut got = vec![0u8; l.len as usize];
        self.scratch
            .read_exact_at(&mut got, l.off_out)
            .context("reading the scratch file back")?;
        for (i, s) in got.chunks(512).enumerate() {
            let hdr_off = u64::from_le_bytes(s[..8].try_into().expect("8 bytes"));
            let hdr_seed = u64::from_le_bytes(s[8..16].try_into().expect("8 bytes"));
            let want_off = at.map(|a| a + 512 * i as u64);
            let good_place = match want_off {
                Some(w) => hdr_off == w,
                None => hdr_off % 512 == 0 && hdr_off < DEV_SIZE,
            };
            if hdr_seed == 0 || !good_place {
                bail!(
                    "{}: lent sector {i} has the header of offset {hdr_off} seed {hdr_seed:#x} \
                     (expected a worker's sector{})",
                    l.describe(what, None),
                    want_off
                        .map(|w| format!(" at offset {w}"))
                        .unwrap_or_default()
                );
            }
            check_sectors(&l.describe(what, None), s, hdr_off, &[hdr_seed])?;
        }
        self.c.checked_bytes += u64::from(l.len);
        Ok(())
    }

    /// A lend of a held request that no release can end meanwhile (claimed).
    fn live(&mut self, req: &Request) -> Result<()> {
        let b = req.bytes() as u32;
        let write = req.op == UBLK_IO_OP_WRITE;
        let kind = self.rng.below(16);
        let sectors = u64::from(b / 512);
        let (off, len, want) = match kind {
            0 => (512 * self.rng.below(sectors) as u32, 0, 0),
            1 => {
                let off = 512 * self.rng.below(sectors) as u32;
                let len = b - off + 512 * (1 + self.rng.below(2) as u32);
                (off, len, -libc::EINVAL)
            }
            2..=4 => {
                let off = self.rng.below(u64::from(b)) as u32;
                let len = 1 + self.rng.below(u64::from(b - off)) as u32;
                (off, len, len as i32)
            }
            _ => {
                let off = 512 * self.rng.below(sectors) as u32;
                let left = u64::from(b - off) / 512;
                let len = 512 * (1 + self.rng.below(left)) as u32;
                (off, len, len as i32)
            }
        };
        let l = if write {
            self.scratch_lend(req, off, len)
        } else {
            Lend {
                q_id: req.q_id,
                tag: req.tag,
                off,
                len,
                fd_out: self.backing.as_raw_fd(),
                off_out: req.offset() + u64::from(off),
                flags: R2R,
            }
        };
        let r = self.run(&l)?;
        if r != want {
            bail!(
                "{}: {}, expected {} (the request was held and claimed: it was the server's \
                 for the whole splice)",
                l.describe("a lend of a held request", Some(req)),
                res(r),
                res(want)
            );
        }
        self.c.live_tags.insert((req.q_id, req.tag));
        match (want, write) {
            (0, _) => self.c.live_zero += 1,
            (w, _) if w < 0 => self.c.live_past_einval += 1,
            (_, true) => {
                self.c.live_write += 1;
                if off % 512 == 0 && len % 512 == 0 {
                    self.check_lent(
                        &l,
                        Some(req.offset() + u64::from(off)),
                        "a lend of a held WRITE",
                    )?;
                }
            }
            (_, false) => self.c.live_read += 1,
        }
        Ok(())
    }

    /// A lend that a release and commit of the tag's request may overtake: on the tag
    /// of the request held or last planned at slot `i`, or on any tag in range.
    fn unclaimed(&mut self, ctx: &Ctx, i: usize, racy: bool) -> Result<()> {
        let (q_id, tag) = (
            (i / usize::from(DEPTH)) as u16,
            (i % usize::from(DEPTH)) as u16,
        );
        let now = ctx.epoch.load(Ordering::SeqCst);
        let before = ctx.target.slot(i);
        let view = if racy {
            match before.held.or(before.last) {
                Some(r) => Some(r),
                None => return Ok(()),
            }
        } else {
            None
        };
        // a WRITE-direction lend only reads the pages; a READ_TO_READ one moves nothing
        let write = match view {
            Some(r) => r.op == UBLK_IO_OP_WRITE,
            None => self.rng.below(2) == 0,
        };
        let (off, len) = match view {
            Some(r) => {
                let sectors = r.bytes() / 512;
                let off = 512 * self.rng.below(sectors) as u32;
                let left = (r.bytes() - u64::from(off)) / 512;
                (off, 512 * (1 + self.rng.below(left)) as u32)
            }
            None => (0, 512),
        };
        let probe = Request {
            q_id,
            tag,
            op: 0,
            flags: 0,
            start_sector: 0,
            nr_sectors: 0,
        };
        let l = if write {
            self.scratch_lend(&probe, off, len)
        } else if self.rng.below(2) == 0 {
            Lend {
                q_id,
                tag,
                off,
                len,
                fd_out: self.null.as_raw_fd(),
                off_out: 0,
                flags: R2R,
            }
        } else {
            Lend {
                q_id,
                tag,
                off,
                len: 0,
                fd_out: self.backing.as_raw_fd(),
                off_out: view.map(|r| r.offset()).unwrap_or(0) + u64::from(off),
                flags: R2R,
            }
        };
        let r = self.run(&l)?;
        let after = ctx.target.slot(i);
        let what = if racy {
            "a lend on the tag of a request being released"
        } else {
            "a lend on a tag in range"
        };
        let moved = if write { l.len as i32 } else { 0 };
        if r == -libc::EINVAL {
            if racy {
                self.c.racy_einval += 1;
            } else {
                self.c.any_einval += 1;
            }
            if after.plans == before.plans && freed_since(before.epoch, now) {
                self.c.after_free += 1;
            }
            return Ok(());
        }
        if r != moved {
            bail!(
                "{}: {}, expected {} or EINVAL (a stale or not started tag)",
                l.describe(what, view.as_ref()),
                res(r),
                res(moved)
            );
        }
        if write {
            self.check_lent(&l, None, what)?;
        }
        if racy {
            self.c.racy_ok += 1;
            if after.plans != before.plans {
                self.c.racy_overlap += 1;
            }
        } else {
            self.c.any_ok += 1;
        }
        Ok(())
    }

    /// A position out of range: EINVAL, whatever the requests do.
    fn invalid(&mut self) -> Result<()> {
        let (q_id, tag) = match self.rng.below(3) {
            0 => (QUEUES + self.rng.below(4) as u16, self.rng.below(4) as u16),
            1 => (
                self.rng.below(u64::from(QUEUES)) as u16,
                DEPTH + self.rng.below(u64::from(UBLK_MAX_QUEUE_DEPTH - DEPTH)) as u16,
            ),
            // past the tag field: UBLK_SPLICE_POS_INVALID
            _ => (0, UBLK_MAX_QUEUE_DEPTH + self.rng.below(64) as u16),
        };
        let probe = Request {
            q_id,
            tag,
            op: 0,
            flags: 0,
            start_sector: 0,
            nr_sectors: 0,
        };
        let l = if self.rng.below(2) == 0 {
            self.scratch_lend(&probe, 0, 512)
        } else {
            Lend {
                q_id,
                tag,
                off: 0,
                len: 512,
                fd_out: self.null.as_raw_fd(),
                off_out: 0,
                flags: R2R,
            }
        };
        let r = self.run(&l)?;
        if r != -libc::EINVAL {
            bail!(
                "{}: {}, expected EINVAL (no such queue or tag)",
                l.describe("a lend at a position out of range", None),
                res(r)
            );
        }
        self.c.invalid_einval += 1;
        Ok(())
    }
}

fn splicer(ctx: &Ctx, id: u64, seed: u64) -> Result<Counts> {
    let scratch_path = ctx.scratch_dir.join(format!("splicer-{id}"));
    let scratch = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&scratch_path)
        .with_context(|| format!("creating {}", scratch_path.display()))?;
    scratch
        .set_len(SCRATCH)
        .context("sizing the scratch file")?;
    let mut s = Splicer {
        ring: IoUring::new(8).context("io_uring_setup")?,
        char_fd: ctx.char_fd,
        scratch,
        backing: File::open(&ctx.backing).context("opening the backing file")?,
        null: File::open("/dev/null").context("opening /dev/null")?,
        rng: Rng::new(seed),
        c: Counts::default(),
    };
    while !ctx.stopped() && s.c.splices < SPLICE_CAP {
        // a lookup that fails is cheap: leave the CPUs some room for the block I/O and
        // the server, whose commits and dispatches are what the lookups race
        if s.rng.below(32) == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        let k = s.rng.below(100);
        if k < 40 {
            let Some((i, req)) = ctx.target.claim(&mut s.rng) else {
                // nothing to claim: race a release instead
                let i = s.rng.below(SLOTS as u64) as usize;
                s.unclaimed(ctx, i, true)?;
                continue;
            };
            let r = s.live(&req);
            ctx.target.unclaim(i);
            r?;
        } else if k < 70 {
            let i = s.rng.below(SLOTS as u64) as usize;
            s.unclaimed(ctx, i, true)?;
        } else if k < 92 {
            let i = s.rng.below(SLOTS as u64) as usize;
            s.unclaimed(ctx, i, false)?;
        } else {
            s.invalid()?;
        }
        ctx.saw(s.c.seen());
    }
    Ok(s.c)
}

// ---------------------------------------------------------------------------------
// Block I/O, the releaser, the elevator switch
// ---------------------------------------------------------------------------------

/// O_DIRECT writes and reads of 4 KiB to 64 KiB in the worker's own region, every sector
/// tagged ([`fill_block`]) and checked on every read, and the whole region at the end.
fn worker(ctx: &Ctx, w: u64, seed: u64) -> Result<(u64, u64)> {
    let f = open_direct(&ctx.block)?;
    let base = w * REGION;
    let mut seeds = vec![0u64; (REGION / 512) as usize];
    let mut rng = Rng::new(seed);
    let mut buf = AlignedBuf::new(REQ_MAX);
    let (mut writes, mut reads) = (0u64, 0u64);
    while !ctx.stopped() && writes + reads < IO_CAP {
        let len = 4096 * (1 + rng.below(16)) as usize;
        let off = 4096 * rng.below((REGION - len as u64) / 4096 + 1);
        let at = base + off;
        let first = (off / 512) as usize;
        let nsec = len / 512;
        if rng.below(2) == 0 {
            let s = rng.next() | 1;
            fill_block(&mut buf.as_mut_slice()[..len], at, s);
            full_write_at(
                &f,
                &buf.as_slice()[..len],
                at,
                &format!("worker {w}: WRITE"),
            )?;
            seeds[first..first + nsec].fill(s);
            writes += 1;
            ctx.saw(SEEN_WRITE);
        } else {
            let b = &mut buf.as_mut_slice()[..len];
            full_read_at(&f, b, at, &format!("worker {w}: READ"))?;
            check_sectors(
                &format!("worker {w}: READ of {len} bytes at {at}"),
                b,
                at,
                &seeds[first..first + nsec],
            )?;
            reads += 1;
            ctx.saw(SEEN_READ);
        }
    }
    for chunk in 0..REGION / REQ_MAX as u64 {
        let at = base + chunk * REQ_MAX as u64;
        let first = (chunk * REQ_MAX as u64 / 512) as usize;
        let b = buf.as_mut_slice();
        full_read_at(&f, b, at, &format!("worker {w}: final READ"))?;
        check_sectors(
            &format!("worker {w}: the final READ at {at}"),
            b,
            at,
            &seeds[first..first + REQ_MAX / 512],
        )?;
    }
    Ok((writes, reads))
}

fn releaser(ctx: &Ctx) -> Result<u64> {
    let mut n = 0u64;
    while !ctx.stop_releaser.load(Ordering::SeqCst) {
        n += ctx.target.release(false)? as u64;
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(n)
}

/// The schedulers of `/sys/block/ublkbN/queue/scheduler`: (the active one, all offered).
fn schedulers(path: &Path) -> Result<(String, Vec<String>)> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut active = None;
    let mut all = Vec::new();
    for w in s.split_whitespace() {
        let name = w.trim_start_matches('[').trim_end_matches(']').to_string();
        if w.starts_with('[') {
            active = Some(name.clone());
        }
        all.push(name);
    }
    let active =
        active.ok_or_else(|| anyhow!("{}: no active scheduler in {s:?}", path.display()))?;
    Ok((active, all))
}

/// Switches between `none` and each of `scheds` in turn until told to stop, dwelling 200
/// to 600 ms in each; each switch must take (read back) and succeed.
fn switcher(ctx: &Ctx, path: &Path, scheds: &[String], seed: u64) -> Result<Switches> {
    let mut rng = Rng::new(seed);
    let mut sw = Switches::default();
    let (mut active, _) = schedulers(path)?;
    let mut seq = 0u64;
    let mut next = 0usize;
    while !ctx.stopped() && sw.to_sched + sw.to_none < SWITCH_CAP {
        let want = if active == "none" {
            next += 1;
            scheds[(next - 1) % scheds.len()].clone()
        } else {
            "none".to_string()
        };
        ctx.epoch
            .store(epoch_word(seq + 1, active != "none"), Ordering::SeqCst);
        let t0 = Instant::now();
        std::fs::write(path, &want)
            .with_context(|| format!("switching the elevator to {want} ({})", path.display()))?;
        let took = t0.elapsed();
        let (now, _) = schedulers(path)?;
        if now != want {
            bail!(
                "the elevator is {now} after writing {want} to {}",
                path.display()
            );
        }
        seq += 2;
        ctx.epoch
            .store(epoch_word(seq, now != "none"), Ordering::SeqCst);
        if now == "none" {
            sw.to_none += 1;
            ctx.saw(SEEN_TO_NONE);
        } else {
            sw.to_sched += 1;
            ctx.saw(SEEN_TO_SCHED);
        }
        sw.longest = sw.longest.max(took);
        active = now;
        // dwell: requests must be dispatched (and planned) under each elevator, not
        // only while a switch drains the queue
        std::thread::sleep(Duration::from_millis(200 + rng.below(400)));
    }
    Ok(sw)
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

/// `UBLK_ZC_SEED` (decimal or 0x hex), or one from the clock.
fn seed() -> Result<u64> {
    match std::env::var("UBLK_ZC_SEED") {
        Ok(v) => {
            let v = v.trim();
            let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            r.map_err(|e| anyhow!("UBLK_ZC_SEED={v:?} is not a number: {e}"))
        }
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1),
    }
}

fn race_secs() -> Result<u64> {
    match std::env::var("UBLK_ZC_RACE_SECS") {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&s| (1..=600).contains(&s))
            .ok_or_else(|| anyhow!("UBLK_ZC_RACE_SECS={v:?} is not a number of seconds 1..600")),
        Err(_) => Ok(20),
    }
}

/// The device and its target; dropping it releases every held request, then deletes
/// the device (a failed test leaves nothing behind either).
struct Rig {
    dev: Option<Device>,
    target: Arc<RaceTarget>,
}

impl Rig {
    fn dev(&self) -> &Device {
        self.dev.as_ref().expect("the device is running")
    }

    fn finish(mut self) -> Result<()> {
        self.target.close()?;
        match self.dev.take() {
            Some(d) => d.stop_and_delete(),
            None => Ok(()),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.target.close();
        drop(self.dev.take());
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .with_context(|| format!("spawning {name}"))
}

fn join<T>(what: &str, h: JoinHandle<Result<T>>, errs: &mut Vec<String>) -> Option<T> {
    match join_within(what, h, Duration::from_secs(90)) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            errs.push(format!("{what}: {e:#}"));
            None
        }
        Err(e) => {
            errs.push(format!("{e:#}"));
            None
        }
    }
}

fn race() -> Result<()> {
    fresh()?;
    require_splice_zc()?;
    let seed = seed()?;
    let secs = race_secs()?;
    println!("seed {seed:#x} (replay the same choices with UBLK_ZC_SEED={seed:#x}), {secs} s");
    let dir = ScratchDir::new(Fs::Tmpfs)?;
    let backing = dir.join("backing.img");
    File::create(&backing)
        .and_then(|f| f.set_len(DEV_SIZE))
        .with_context(|| format!("creating {}", backing.display()))?;
    let epoch = Arc::new(AtomicU64::new(0));
    let target = Arc::new(Race::target(
        LoopTarget::open(&backing, true)?,
        epoch.clone(),
        seed,
    )?);
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = true;
    cfg.nr_queues = QUEUES;
    cfg.depth = DEPTH;
    cfg.max_io_buf_bytes = REQ_MAX as u32;
    let rig = Rig {
        dev: Some(Device::start_with(&cfg, target.clone())?),
        target: target.clone(),
    };
    let id = rig.dev().id();
    let sched_path = PathBuf::from(format!("/sys/block/ublkb{id}/queue/scheduler"));
    let (active, offered) = schedulers(&sched_path)?;
    let scheds: Vec<String> = offered.iter().filter(|s| *s != "none").cloned().collect();
    // Without a scheduler the rest of the race still runs, and the test fails at the end.
    let no_sched = scheds.is_empty().then(|| {
        format!(
            "the kernel offers no I/O scheduler for /dev/ublkb{id} ({} lists only {offered:?}): \
             the elevator switch that frees a scheduler's requests under a lookup (M3) did not \
             run. Build the kernel with CONFIG_MQ_IOSCHED_DEADLINE=y (allnoconfig leaves it \
             off; kernel-config/ must ask for it)",
            sched_path.display()
        )
    });
    match &no_sched {
        Some(m) => note(m),
        None => println!(
            "elevator {active}, offered {offered:?}: switching between none and {scheds:?}"
        ),
    }
    epoch.store(epoch_word(0, active != "none"), Ordering::SeqCst);

    let ctx = Arc::new(Ctx {
        target: target.clone(),
        char_fd: rig
            .dev()
            .char_fd()
            .ok_or_else(|| anyhow!("no /dev/ublkcN"))?
            .as_raw_fd(),
        block: rig.dev().block_path(),
        backing: backing.clone(),
        scratch_dir: dir.path().to_path_buf(),
        epoch: epoch.clone(),
        stop: AtomicBool::new(false),
        stop_releaser: AtomicBool::new(false),
        seen: AtomicU64::new(0),
    });
    let stop_all = StopAll(ctx.clone());
    target.set_holding(true);
    let t0 = Instant::now();
    let c = ctx.clone();
    let rel = spawn("releaser", move || {
        let r = releaser(&c);
        stop_on_err(&c, r)
    })?;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let c = ctx.clone();
        workers.push(spawn(&format!("worker-{w}"), move || {
            let r = worker(&c, w, seed ^ (0x3000 + w));
            stop_on_err(&c, r)
        })?);
    }
    let mut splicers = Vec::new();
    for s in 0..SPLICERS {
        let c = ctx.clone();
        splicers.push(spawn(&format!("splicer-{s}"), move || {
            let r = splicer(&c, s, seed ^ (0x5000 + s));
            stop_on_err(&c, r)
        })?);
    }
    let c = ctx.clone();
    let (p, sc) = (sched_path.clone(), scheds.clone());
    let sw = match sc.is_empty() {
        true => None,
        false => Some(spawn("switcher", move || {
            let r = switcher(&c, &p, &sc, seed ^ 0x7000);
            stop_on_err(&c, r)
        })?),
    };

    // `secs` of racing; up to twice as long while an outcome the test needs has not been
    // seen yet (a slow kernel), then the end (which fails if it still has not)
    let want = match no_sched {
        Some(_) => SEEN_ALL & !SEEN_SWITCHED,
        None => SEEN_ALL,
    };
    let (deadline, hard) = (
        t0 + Duration::from_secs(secs),
        t0 + Duration::from_secs(2 * secs),
    );
    while !ctx.stopped() {
        let now = Instant::now();
        let all = ctx.seen.load(Ordering::Relaxed) & want == want;
        if now >= hard || (now >= deadline && all) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let raced = t0.elapsed();
    ctx.stop.store(true, Ordering::SeqCst);
    note(&format!(
        "racing ended after {:.1} s, joining",
        raced.as_secs_f64()
    ));
    // the switcher and the workers may wait for held requests: the releaser goes last
    let mut errs = Vec::new();
    let mut counts = Counts::default();
    for (i, h) in splicers.into_iter().enumerate() {
        if let Some(c) = join(&format!("splicer {i}"), h, &mut errs) {
            counts.add(&c);
        }
    }
    let switches = match sw {
        Some(h) => join("the elevator switcher", h, &mut errs).unwrap_or_default(),
        None => Switches::default(),
    };
    let (mut writes, mut reads) = (0, 0);
    for (i, h) in workers.into_iter().enumerate() {
        if let Some((w, r)) = join(&format!("worker {i}"), h, &mut errs) {
            writes += w;
            reads += r;
        }
    }
    ctx.stop_releaser.store(true, Ordering::SeqCst);
    let released = join("the releaser", rel, &mut errs).unwrap_or(0);
    let (holds, passes) = target.counts();
    let stats = rig.dev().stats();
    let elevator = schedulers(&sched_path).map(|(a, _)| a).unwrap_or_default();
    let summary = format!(
        "seed {seed:#x}, {:.1} s of racing: {} splices {counts:?}; elevator switches \
         {switches:?}, now {elevator}; block I/O {writes} writes, {reads} reads; target: \
         {holds} requests held, {passes} passed, {released} released; server: {stats:?}",
        raced.as_secs_f64(),
        counts.splices
    );
    // in the test's output, and on the console even when the test passes
    println!("{summary}");
    note(&summary);
    drop((stop_all, ctx));
    if !errs.is_empty() {
        bail!("seed {seed:#x}: {}", errs.join("\n"));
    }
    rig.finish()?;
    no_devices()?;
    if stats.errors != 0 {
        bail!(
            "seed {seed:#x}: the server committed {} request(s) with an error",
            stats.errors
        );
    }
    if let Some(m) = no_sched {
        bail!("seed {seed:#x}: {m}");
    }
    let mut missing = Vec::new();
    for (n, what) in [
        (counts.live_write, "lends of a held WRITE"),
        (counts.live_read, "lends of a held READ"),
        (
            counts.racy_ok,
            "lends on the tag of a request being released that moved data",
        ),
        (
            counts.racy_einval + counts.any_einval,
            "lookups of a stale or not started tag (EINVAL)",
        ),
        (
            counts.after_free,
            "lookups of a tag whose last request's scheduler had been switched away (M3)",
        ),
        (counts.invalid_einval, "lends out of range"),
        (switches.to_sched, "elevator switches to a scheduler"),
        (switches.to_none, "elevator switches to none"),
        (writes, "block WRITEs"),
        (reads, "block READs"),
    ] {
        if n == 0 {
            missing.push(what);
        }
    }
    if counts.live_tags.len() < 2 {
        missing.push("lends held on two tags or more");
    }
    if !missing.is_empty() {
        bail!(
            "seed {seed:#x}: the race was not exercised: no {}",
            missing.join(", no ")
        );
    }
    Ok(())
}

/// M3: direct splices from threads other than the queues' daemons, on held, released,
/// stale and out-of-range tags, race the server's commits and elevator switches while
/// block I/O flows; every result is a correct transfer or EINVAL, the data stays right,
/// the kernel log clean.
#[test]
fn lookup_races_commit_and_elevator_switch() {
    let secs = race_secs().unwrap_or(20);
    zc_test(
        "lookup_races_commit_and_elevator_switch",
        2 * secs + 240,
        race,
    )
}
