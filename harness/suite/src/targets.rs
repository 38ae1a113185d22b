//! Test targets for the ublk server: each is a loop target with the hooks of a
//! [`ublk::targets::Wrap`] and runs on the server's own queue loop
//! ([`ublk::Device::start_with`]); each changes one thing on purpose.
//!
//! - [`HoldTarget`] ([`Hold`]) holds a data request until the test releases it, so the
//!   test can splice against a started request itself;
//! - [`UnderfillTarget`] ([`UnderfillHooks`]) fills only a prefix of a READ (the first
//!   half, a prefix that ends inside a logical block, a quarter then a hole, or nothing)
//!   but commits its full length;
//! - [`FailTarget`] ([`Fail`]) fails the requests of one kind with an errno.
//!
//! Everything they do not change on purpose is the loop target's real work (data, FLUSH,
//! DISCARD, WRITE_ZEROES): nothing is completed without being done.

use anyhow::{anyhow, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ublk::targets::{data_op, Action, DataRef, Hooks, Io, IoOp, LoopTarget, Request, Target, Wrap};
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

/// Holds data requests while holding is on: the queue thread waits in `queue_io()` until
/// the test calls [`Hold::release`].  One request is held at a time (the queue thread
/// waits), so use it on a one-queue device.
#[derive(Default)]
pub struct Hold {
    st: Mutex<HoldState>,
    cv: Condvar,
}

/// A loop target whose data requests the test holds.
pub type HoldTarget = Wrap<Hold>;

impl Hold {
    pub fn target(inner: LoopTarget) -> HoldTarget {
        Wrap::new(inner, Hold::default())
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

impl Hooks<LoopTarget> for Hold {
    fn kind(&self) -> &'static str {
        "hold"
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        if is_data(&io.req) {
            if let Release::Commit(res) = self.wait_release(&io.req) {
                return Action::Commit(res);
            }
        }
        inner.queue_io(io)
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
#[derive(Default)]
pub struct UnderfillHooks {
    armed: Mutex<Option<Underfill>>,
    log: Mutex<UnderfillState>,
}

/// A loop target that under-fills a READ on demand.
pub type UnderfillTarget = Wrap<UnderfillHooks>;

/// The log, and the remainders expected (start sector, sectors).
type UnderfillState = (UnderfillLog, Vec<(u64, u32)>);

/// [`Io::leg`] of an under-filled READ: its one splice runs (all but a hole fill), or
/// the first or the second splice of a hole fill.
const UNDERFILL_ONE: u8 = 1;
const HOLE_FIRST: u8 = 2;
const HOLE_SECOND: u8 = 3;

impl UnderfillHooks {
    pub fn target(inner: LoopTarget) -> UnderfillTarget {
        Wrap::new(inner, UnderfillHooks::default())
    }

    /// Under-fill the next READ of at least four sectors, the way `how` says.
    pub fn arm(&self, how: Underfill) {
        *lock(&self.armed) = Some(how);
    }

    pub fn log(&self) -> UnderfillLog {
        lock(&self.log).0.clone()
    }

    /// The data op of `req` against `inner`'s backing from byte `from`, `len` bytes long.
    fn part(inner: &LoopTarget, req: &Request, data: DataRef, from: u32, len: u32) -> Option<IoOp> {
        let fd = inner.backing_info().fd;
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

impl Hooks<LoopTarget> for UnderfillHooks {
    fn kind(&self) -> &'static str {
        "underfill"
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        let req = io.req;
        if req.op != UBLK_IO_OP_READ {
            return inner.queue_io(io);
        }
        let total = req.nr_sectors << 9;
        let mut g = lock(&self.log);
        let (log, pending) = &mut *g;
        if let Some(i) = pending
            .iter()
            .position(|&(start, nr)| start == req.start_sector && nr == req.nr_sectors)
        {
            pending.remove(i);
            log.remainders.push(req);
            return inner.queue_io(io);
        }
        if req.nr_sectors < 4 {
            return inner.queue_io(io);
        }
        let Some(how) = lock(&self.armed).take() else {
            return inner.queue_io(io);
        };
        let lbs = 1u32 << inner.logical_bs_shift();
        let (spliced, filled) = how.fill(total, lbs);
        log.underfilled.push(req);
        if how == Underfill::Nothing {
            // nothing spliced, nothing to come back: the kernel fails the READ
            return Action::Commit(total as i32);
        }
        let Some(op) = Self::part(inner, &req, io.data, 0, spliced) else {
            return Action::Commit(-libc::EIO);
        };
        let filled_sectors = filled >> 9;
        pending.push((
            req.start_sector + u64::from(filled_sectors),
            req.nr_sectors - filled_sectors,
        ));
        io.result = Some(total as i32);
        io.leg = if how == Underfill::Hole {
            HOLE_FIRST
        } else {
            UNDERFILL_ONE
        };
        Action::Submit(op)
    }
    /// An under-filled READ commits its full length once its splices are done (a hole
    /// fill: the first quarter, then the second half); a failed splice is the loop
    /// target's (retried on -EAGAIN, else committed).
    fn io_done(&self, inner: &LoopTarget, io: &mut Io, op: &IoOp, res: i32) -> Action {
        let Some(result) = io.result else {
            return inner.io_done(io, op, res);
        };
        if res < 0 {
            return inner.io_done(io, op, res);
        }
        if io.leg == HOLE_FIRST {
            let total = io.req.nr_sectors << 9;
            let quarter = (io.req.nr_sectors / 4) << 9;
            io.leg = HOLE_SECOND;
            return match Self::part(inner, &io.req, io.data, 2 * quarter, total - 2 * quarter) {
                Some(op) => Action::Submit(op),
                None => Action::Commit(-libc::EIO),
            };
        }
        Action::Commit(result)
    }
}

/// Fails requests of one op with an errno while armed, counting them; everything else is
/// the loop target's.
#[derive(Default)]
pub struct Fail {
    /// (op, errno) to fail, or None.
    arm: Mutex<Option<(u8, i32)>>,
    failed: AtomicU32,
}

/// A loop target that fails the requests of one op on demand.
pub type FailTarget = Wrap<Fail>;

impl Fail {
    pub fn target(inner: LoopTarget) -> FailTarget {
        Wrap::new(inner, Fail::default())
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

impl Hooks<LoopTarget> for Fail {
    fn kind(&self) -> &'static str {
        "fail"
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        if let Some((op, errno)) = *lock(&self.arm) {
            if io.req.op == op {
                self.failed.fetch_add(1, Ordering::SeqCst);
                return Action::Commit(-errno);
            }
        }
        inner.queue_io(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop target on a buffered file of 1 MiB in the temporary directory.
    fn loop_target(name: &str) -> (LoopTarget, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("ublk-suite-{name}-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 1 << 20]).expect("writing the test file");
        (
            LoopTarget::open(&p, true).expect("opening the loop target"),
            p,
        )
    }

    fn read(start: u64, nr: u32) -> Io {
        Io::new(
            Request {
                q_id: 0,
                tag: 2,
                op: UBLK_IO_OP_READ,
                flags: 0,
                start_sector: start,
                nr_sectors: nr,
            },
            DataRef::ZeroCopy { char_fd: 9 },
        )
    }

    fn splice_of(a: Action) -> (u64, u32) {
        match a {
            Action::Submit(IoOp::Splice { off_out, len, .. }) => (off_out, len),
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn underfill_first_half_commits_whole_and_logs_the_remainder() {
        let (inner, p) = loop_target("half");
        let t = UnderfillHooks::target(inner);
        t.arm(Underfill::FirstHalf);
        let mut io = read(128, 128); // 64 KiB at 64 KiB
        let a = t.queue_io(&mut io);
        assert_eq!(splice_of(a), (64 << 10, 32 << 10));
        let Action::Submit(op) = a else {
            unreachable!()
        };
        // -EAGAIN is retried as the loop target does; then the full length is committed
        assert_eq!(t.io_done(&mut io, &op, -libc::EAGAIN), Action::Retry(op));
        assert_eq!(t.io_done(&mut io, &op, 32 << 10), Action::Commit(64 << 10));
        // the remainder comes back: served whole, and logged
        let mut rest = read(192, 64);
        let a = t.queue_io(&mut rest);
        assert_eq!(splice_of(a), (96 << 10, 32 << 10));
        let log = t.log();
        assert_eq!(log.underfilled.len(), 1);
        assert_eq!(log.remainders, vec![rest.req]);
        std::fs::remove_file(p).expect("removing the test file");
    }

    #[test]
    fn underfill_hole_splices_twice_then_commits_whole() {
        let (inner, p) = loop_target("hole");
        let t = UnderfillHooks::target(inner);
        t.arm(Underfill::Hole);
        let mut io = read(0, 128);
        let first = t.queue_io(&mut io);
        assert_eq!(splice_of(first), (0, 16 << 10));
        let Action::Submit(op) = first else {
            unreachable!()
        };
        let second = t.io_done(&mut io, &op, 16 << 10);
        assert_eq!(splice_of(second), (32 << 10, 32 << 10));
        let Action::Submit(op) = second else {
            unreachable!()
        };
        assert_eq!(t.io_done(&mut io, &op, 32 << 10), Action::Commit(64 << 10));
        // a failed splice fails the READ
        t.arm(Underfill::Hole);
        let mut io = read(256, 128);
        let Action::Submit(op) = t.queue_io(&mut io) else {
            panic!("an armed READ submits")
        };
        assert_eq!(
            t.io_done(&mut io, &op, -libc::EFAULT),
            Action::Commit(-libc::EFAULT)
        );
        std::fs::remove_file(p).expect("removing the test file");
    }

    #[test]
    fn unarmed_and_failing_targets() {
        let (inner, p) = loop_target("fail");
        let t = Fail::target(inner);
        let mut io = read(0, 8);
        let a = t.queue_io(&mut io);
        assert_eq!(splice_of(a), (0, 4096));
        t.arm(Some((UBLK_IO_OP_READ, libc::EIO)));
        assert_eq!(t.queue_io(&mut read(0, 8)), Action::Commit(-libc::EIO));
        assert_eq!(t.failed(), 1);
        std::fs::remove_file(p).expect("removing the test file");
    }
}
