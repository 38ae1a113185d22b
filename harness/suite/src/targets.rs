//! Test targets for the ublk server: each wraps a loop target and runs on the server's
//! own queue loop ([`ublk::Device::start_with`]); each changes one thing on purpose.
//!
//! - [`HoldTarget`] holds a data request until the test releases it, so the test can
//!   splice against a started request itself;
//! - [`UnderfillTarget`] fills only a prefix of a READ (the first half, a prefix that
//!   ends inside a logical block, a quarter then a hole, or nothing) but commits its
//!   full length;
//! - [`FailTarget`] fails the requests of one kind with an errno.
//!
//! Everything they do not change on purpose is the loop target's real work (data, FLUSH,
//! DISCARD, WRITE_ZEROES): nothing is completed without being done.

use anyhow::{anyhow, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ublk::target::{data_op, DataRef, IoOp, LoopTarget, Plan, Progress, Request, Target};
use ublk::uapi::*;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_data(req: &Request) -> bool {
    req.op == UBLK_IO_OP_READ || req.op == UBLK_IO_OP_WRITE
}

/// What the test tells a held request to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Serve it as the loop target does (splice or copy), then commit.
    Serve,
    /// Commit with this result without touching the data.
    Commit(i32),
}

#[derive(Default)]
struct HoldState {
    hold: bool,
    closed: bool,
    held: VecDeque<Request>,
    release: Option<Release>,
}

/// Holds data requests while holding is on: the queue thread waits in `plan()` until the
/// test calls [`HoldTarget::release`].  One request is held at a time (the queue thread
/// waits), so use it on a one-queue device.
pub struct HoldTarget {
    inner: LoopTarget,
    st: Mutex<HoldState>,
    cv: Condvar,
}

impl HoldTarget {
    pub fn new(inner: LoopTarget) -> HoldTarget {
        HoldTarget {
            inner,
            st: Mutex::new(HoldState::default()),
            cv: Condvar::new(),
        }
    }

    /// Hold the data requests that arrive from now on (or stop holding new ones).
    pub fn set_hold(&self, on: bool) {
        lock(&self.st).hold = on;
    }

    /// The next held request, waiting up to `timeout`.
    pub fn next_held(&self, timeout: Duration) -> Result<Request> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.st);
        loop {
            if let Some(r) = st.held.pop_front() {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(anyhow!(
                    "no data request reached the server within {timeout:?}"
                ));
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Lets the held request go on.
    pub fn release(&self, r: Release) {
        lock(&self.st).release = Some(r);
        self.cv.notify_all();
    }

    /// No more holding; a request still held is served.  Call before the device stops
    /// (its queue thread must not wait for a test that is gone).
    pub fn close(&self) {
        let mut st = lock(&self.st);
        st.closed = true;
        st.hold = false;
        self.cv.notify_all();
    }

    fn wait_release(&self, req: &Request) -> Release {
        let mut st = lock(&self.st);
        if !st.hold || st.closed {
            return Release::Serve;
        }
        st.release = None;
        st.held.push_back(*req);
        self.cv.notify_all();
        loop {
            if let Some(r) = st.release.take() {
                return r;
            }
            if st.closed {
                return Release::Serve;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Target for HoldTarget {
    fn kind(&self) -> &'static str {
        "hold"
    }
    fn backing(&self) -> String {
        self.inner.backing()
    }
    fn dev_size(&self) -> u64 {
        self.inner.dev_size()
    }
    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        self.inner.params(max_io_buf_bytes)
    }
    fn plan(&self, req: &Request, data: DataRef, at: Progress) -> Plan {
        if at == Progress::default() && is_data(req) {
            if let Release::Commit(res) = self.wait_release(req) {
                return Plan::Complete(res);
            }
        }
        self.inner.plan(req, data, at)
    }
}

/// What the under-fill target did.
#[derive(Debug, Default, Clone)]
pub struct UnderfillLog {
    /// READs that were under-filled, committed with their full length.
    pub underfilled: Vec<Request>,
    /// READs that came back for the unfilled remainder of one of those.
    pub remainders: Vec<Request>,
}

/// How [`UnderfillTarget`] fills the READ it is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underfill {
    /// Only the first half of the request, then commit its full length.
    FirstHalf,
    /// The first quarter and the second half, leaving the second quarter a hole, then
    /// commit the full length: only the first quarter is a filled prefix.
    Hole,
    /// The first half, one logical block and 100 bytes more, then commit the full
    /// length: the filled prefix counts in whole logical blocks (series v3), so the
    /// kernel completes the first half and one block.
    Unaligned,
    /// Nothing at all, then commit the full length: a READ with nothing filled fails
    /// with EIO (series v3; v2 sent it to the server again).
    Nothing,
}

impl Underfill {
    /// The bytes the target splices into a READ of `total` bytes at first, and the
    /// prefix the kernel may complete of it, for a logical block of `lbs` bytes.
    pub fn fill(self, total: u32, lbs: u32) -> (u32, u32) {
        let (half, quarter) = (total / 2 / lbs * lbs, total / 4 / lbs * lbs);
        match self {
            Underfill::FirstHalf => (half, half),
            Underfill::Hole => (quarter, quarter),
            Underfill::Unaligned => (half + lbs + 100, half + lbs),
            Underfill::Nothing => (0, 0),
        }
    }
}

/// Under-fills one READ when armed, and commits its full length anyway.  The kernel must
/// complete no more than the filled prefix and send the rest again; this target serves
/// that remainder (a READ starting where the prefix ended) in full and logs it.
pub struct UnderfillTarget {
    inner: LoopTarget,
    armed: Mutex<Option<Underfill>>,
    log: Mutex<UnderfillState>,
}

/// The log, the remainders expected (start sector, sectors), and the READs in the middle
/// of a hole fill (start sector).
type UnderfillState = (UnderfillLog, Vec<(u64, u32)>, Vec<u64>);

impl UnderfillTarget {
    pub fn new(inner: LoopTarget) -> UnderfillTarget {
        UnderfillTarget {
            inner,
            armed: Mutex::new(None),
            log: Mutex::new(Default::default()),
        }
    }

    /// Under-fill the next READ of at least four sectors, the way `how` says.
    pub fn arm(&self, how: Underfill) {
        *lock(&self.armed) = Some(how);
    }

    pub fn log(&self) -> UnderfillLog {
        lock(&self.log).0.clone()
    }

    /// The data op of `req` from byte `from`, `len` bytes long.
    fn part(&self, req: &Request, data: DataRef, from: u32, len: u32) -> Option<IoOp> {
        let fd = self.inner.backing_info().fd;
        Some(match data_op(req, data, fd, from)? {
            IoOp::Splice {
                fd_in,
                off_in,
                fd_out,
                off_out,
                flags,
                ..
            } => IoOp::Splice {
                fd_in,
                off_in,
                fd_out,
                off_out,
                len,
                flags,
            },
            IoOp::Read {
                fd, addr, offset, ..
            } => IoOp::Read {
                fd,
                addr,
                len,
                offset,
            },
            _ => return None,
        })
    }
}

impl Target for UnderfillTarget {
    fn kind(&self) -> &'static str {
        "underfill"
    }
    fn backing(&self) -> String {
        self.inner.backing()
    }
    fn dev_size(&self) -> u64 {
        self.inner.dev_size()
    }
    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        self.inner.params(max_io_buf_bytes)
    }
    fn plan(&self, req: &Request, data: DataRef, at: Progress) -> Plan {
        if req.op != UBLK_IO_OP_READ {
            return self.inner.plan(req, data, at);
        }
        let total = req.nr_sectors << 9;
        let quarter = (req.nr_sectors / 4) << 9;
        let mut g = lock(&self.log);
        let (log, pending, in_hole) = &mut *g;
        if let Some(i) = in_hole.iter().position(|&s| s == req.start_sector) {
            // a hole fill going on: [0, q) is done; fill [2q, 4q), then commit it all
            if at.done == quarter {
                return match self.part(req, data, 2 * quarter, total - 2 * quarter) {
                    Some(op) => Plan::Submit(op),
                    None => Plan::Complete(-libc::EIO),
                };
            }
            in_hole.remove(i);
            return Plan::Complete(total as i32);
        }
        if at != Progress::default() {
            return self.inner.plan(req, data, at);
        }
        if let Some(i) = pending
            .iter()
            .position(|&(start, nr)| start == req.start_sector && nr == req.nr_sectors)
        {
            pending.remove(i);
            log.remainders.push(*req);
            return self.inner.plan(req, data, at);
        }
        if req.nr_sectors < 4 {
            return self.inner.plan(req, data, at);
        }
        let Some(how) = lock(&self.armed).take() else {
            return self.inner.plan(req, data, at);
        };
        let lbs = 1u32 << self.inner.logical_bs_shift();
        let (spliced, filled) = how.fill(total, lbs);
        log.underfilled.push(*req);
        if how == Underfill::Nothing {
            // nothing spliced, nothing to come back: the kernel fails the READ
            return Plan::Complete(total as i32);
        }
        if how == Underfill::Hole {
            in_hole.push(req.start_sector);
        }
        let Some(op) = self.part(req, data, 0, spliced) else {
            return Plan::Complete(-libc::EIO);
        };
        let filled_sectors = filled >> 9;
        pending.push((
            req.start_sector + u64::from(filled_sectors),
            req.nr_sectors - filled_sectors,
        ));
        match how {
            // continues at done = quarter (above)
            Underfill::Hole => Plan::Submit(op),
            _ => Plan::SubmitAndCommit {
                op,
                result: total as i32,
            },
        }
    }
}

/// Fails requests of one op with an errno while armed, counting them; everything else is
/// the loop target's.
pub struct FailTarget {
    inner: LoopTarget,
    /// (op, errno) to fail, or None.
    arm: Mutex<Option<(u8, i32)>>,
    failed: AtomicU32,
}

impl FailTarget {
    pub fn new(inner: LoopTarget) -> FailTarget {
        FailTarget {
            inner,
            arm: Mutex::new(None),
            failed: AtomicU32::new(0),
        }
    }

    /// Fail every request of `op` with `-errno` (None: stop failing).
    pub fn arm(&self, what: Option<(u8, i32)>) {
        *lock(&self.arm) = what;
    }

    /// Requests failed so far.
    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Target for FailTarget {
    fn kind(&self) -> &'static str {
        "fail"
    }
    fn backing(&self) -> String {
        self.inner.backing()
    }
    fn dev_size(&self) -> u64 {
        self.inner.dev_size()
    }
    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        self.inner.params(max_io_buf_bytes)
    }
    fn plan(&self, req: &Request, data: DataRef, at: Progress) -> Plan {
        if at == Progress::default() {
            if let Some((op, errno)) = *lock(&self.arm) {
                if req.op == op {
                    self.failed.fetch_add(1, Ordering::SeqCst);
                    return Plan::Complete(-errno);
                }
            }
        }
        self.inner.plan(req, data, at)
    }
}
