//! Targets: what a ublk request becomes, and what its I/O's completion means.
//!
//! A [`Target`] decides both halves of a request, as the kernel's ublk selftest server
//! (kublk) does with its target ops: [`Target::queue_io`] maps a new request (op, start
//! sector, sector count, flags, and where its data lives: a server buffer in copy mode or
//! the zero-copy splice window) to an [`Action`]: commit at once, or run an [`IoOp`];
//! [`Target::io_done`] maps an op's result to the next [`Action`]: commit with which
//! result, continue a short transfer, retry, or the next op.  The queue only moves SQEs
//! and CQEs.  Every target's both halves are pure functions of the request, its [`Io`]
//! state and the result, and are unit-tested here.

pub mod file;
pub mod mirror;
pub mod null;
pub mod wrap;

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::uapi::*;

pub use file::{Backing, BackingKind, LoopTarget};
pub use mirror::MirrorTarget;
pub use null::NullTarget;
pub use wrap::{Hooks, Wrap};

/// One request as the driver described it in the io descriptor array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub q_id: u16,
    pub tag: u16,
    pub op: u8,
    /// UBLK_IO_F_* bits.
    pub flags: u32,
    pub start_sector: u64,
    pub nr_sectors: u32,
}

impl Request {
    pub fn from_desc(q_id: u16, tag: u16, d: &ublksrv_io_desc) -> Request {
        Request {
            q_id,
            tag,
            op: d.op(),
            flags: d.flags(),
            start_sector: d.start_sector,
            nr_sectors: d.nr_sectors,
        }
    }

    /// Bytes the request covers (`nr_sectors << 9`).
    pub fn bytes(&self) -> u64 {
        u64::from(self.nr_sectors) << 9
    }

    /// Bytes of a data request (READ/WRITE, bounded by max_sectors) as u32;
    /// None if it does not fit (never for requests the driver sends).
    pub fn data_bytes(&self) -> Option<u32> {
        u32::try_from(self.bytes())
            .ok()
            .filter(|&b| b <= i32::MAX as u32)
    }

    /// Byte offset on the device.
    pub fn offset(&self) -> u64 {
        self.start_sector << 9
    }
}

/// Where the data of a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRef {
    /// Copy mode: the server buffer of this tag (the driver copies to/from it).
    Buffer { addr: u64 },
    /// Zero-copy mode (UBLK_F_SPLICE_ZC): no server buffer; the data is moved
    /// by splicing from the char device at `ublk_splice_pos(q_id, tag, offset)`.
    ZeroCopy { char_fd: RawFd },
}

/// One backend operation.  `len`/`offset` are bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Read {
        fd: RawFd,
        addr: u64,
        len: u32,
        offset: u64,
    },
    Write {
        fd: RawFd,
        addr: u64,
        len: u32,
        offset: u64,
    },
    /// IORING_OP_SPLICE with explicit positions on both sides.
    Splice {
        fd_in: RawFd,
        off_in: u64,
        fd_out: RawFd,
        off_out: u64,
        len: u32,
        flags: u32,
    },
    Fsync {
        fd: RawFd,
        datasync: bool,
    },
    Fallocate {
        fd: RawFd,
        mode: i32,
        offset: u64,
        len: u64,
    },
    /// A block device ioctl taking a `[u64; 2]` range (BLKDISCARD,
    /// BLKZEROOUT).  io_uring has no ioctl op on 6.1: run synchronously.
    RangeIoctl {
        fd: RawFd,
        request: u64,
        offset: u64,
        len: u64,
    },
}

impl IoOp {
    /// Ops that move request data: their result is a byte count, and a
    /// short count is continued.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            IoOp::Read { .. } | IoOp::Write { .. } | IoOp::Splice { .. }
        )
    }

    /// True for ops the queue must run synchronously (no io_uring opcode).
    pub fn is_sync(&self) -> bool {
        matches!(self, IoOp::RangeIoctl { .. })
    }

    /// The SQE for this op (not for sync ops).
    pub fn to_sqe(&self, user_data: u64) -> Option<squeue::Entry> {
        let e = match *self {
            IoOp::Read {
                fd,
                addr,
                len,
                offset,
            } => opcode::Read::new(types::Fd(fd), addr as *mut u8, len)
                .offset(offset)
                .build(),
            IoOp::Write {
                fd,
                addr,
                len,
                offset,
            } => opcode::Write::new(types::Fd(fd), addr as *const u8, len)
                .offset(offset)
                .build(),
            IoOp::Splice {
                fd_in,
                off_in,
                fd_out,
                off_out,
                len,
                flags,
            } => opcode::Splice::new(
                types::Fd(fd_in),
                off_in as i64,
                types::Fd(fd_out),
                off_out as i64,
                len,
            )
            .flags(flags)
            .build(),
            IoOp::Fsync { fd, datasync } => {
                let flags = if datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                opcode::Fsync::new(types::Fd(fd)).flags(flags).build()
            }
            IoOp::Fallocate {
                fd,
                mode,
                offset,
                len,
            } => opcode::Fallocate::new(types::Fd(fd), len)
                .offset(offset)
                .mode(mode)
                .build(),
            IoOp::RangeIoctl { .. } => return None,
        };
        Some(e.user_data(user_data))
    }

    /// Run a sync op; returns a result like a CQE's (>= 0 or -errno).
    pub fn run_sync(&self) -> i32 {
        match *self {
            IoOp::RangeIoctl {
                fd,
                request,
                offset,
                len,
            } => {
                let range: [u64; 2] = [offset, len];
                // SAFETY: BLKDISCARD/BLKZEROOUT read a [u64; 2] from the pointer.
                let r = unsafe { libc::ioctl(fd, request as _, range.as_ptr()) };
                if r < 0 {
                    -std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO)
                } else {
                    0
                }
            }
            _ => -libc::EINVAL,
        }
    }
}

/// What the queue does next with a request: a target's answer to
/// [`Target::queue_io`] and [`Target::io_done`].  The variants that submit differ only
/// in what the queue counts ([`crate::queue::QueueStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Commit the request with this result (COMMIT_AND_FETCH_REQ).
    Commit(i32),
    /// Run this op; its result goes to [`Target::io_done`].
    Submit(IoOp),
    /// Run this op, the rest of a short data transfer (counted as a short transfer).
    Continue(IoOp),
    /// Run this op again, or its replacement, after a failure such as -EAGAIN (counted
    /// as a retry when the failure was -EAGAIN).
    Retry(IoOp),
}

/// One request in flight, as the queue keeps it for its target.  The queue makes a new
/// one for every request (everything but `req` and `data` zero) and passes it to each
/// call of the target for that request; it never reads the target's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub req: Request,
    /// Where the request's data is.
    pub data: DataRef,
    /// The target's: which of its steps runs, for a target that runs a request as
    /// several ops one after another (the mirror: one leg per file).
    pub leg: u8,
    /// The target's: bytes of the current step's data moved so far.
    pub done: u32,
    /// The target's: a result chosen before its ops are done, to commit once they are.
    pub result: Option<i32>,
}

impl Io {
    pub fn new(req: Request, data: DataRef) -> Io {
        Io {
            req,
            data,
            leg: 0,
            done: 0,
            result: None,
        }
    }
}

/// What a data op's result means for a transfer of `total` bytes of which `done` were
/// moved before the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStep {
    /// -EAGAIN: run the op again as it was.  io_uring posts it when a nowait bio was
    /// refused after the submission returned (a direct splice on the lend path, like a
    /// read or a write).
    Again,
    /// Short: `done` bytes are moved now; move the rest.
    More { done: u32 },
    /// Every byte is moved.
    Done,
    /// The transfer fails with this result.
    Failed(i32),
}

/// The rule for data ops: an error (other than -EAGAIN) ends the transfer with that
/// error, never a hang; an op that moved 0 bytes with bytes remaining ends it with -EIO
/// (rather than spinning); a short op continues from the new `done`; more than asked is
/// clamped.
pub fn data_step(total: u32, done: u32, res: i32) -> DataStep {
    if res == -libc::EAGAIN {
        return DataStep::Again;
    }
    if res < 0 {
        return DataStep::Failed(res);
    }
    let remaining = total.saturating_sub(done);
    let moved = res as u32;
    if moved >= remaining {
        DataStep::Done
    } else if moved == 0 {
        DataStep::Failed(-libc::EIO)
    } else {
        DataStep::More { done: done + moved }
    }
}

/// The completion half of a request whose data op `op` (of [`Io::req`]'s whole length)
/// returned `res`: retry -EAGAIN, continue a short transfer with `rest(io)` once
/// `io.done` is updated (no op for the rest: -EIO), commit the request's length once
/// every byte is moved, or the error.
pub fn data_done(
    io: &mut Io,
    op: &IoOp,
    res: i32,
    rest: impl FnOnce(&Io) -> Option<IoOp>,
) -> Action {
    let total = io.req.data_bytes().unwrap_or(0);
    match data_step(total, io.done, res) {
        DataStep::Again => Action::Retry(*op),
        DataStep::Failed(e) => Action::Commit(e),
        DataStep::Done => Action::Commit(total as i32),
        DataStep::More { done } => {
            io.done = done;
            match rest(io) {
                Some(op) => Action::Continue(op),
                None => Action::Commit(-libc::EIO),
            }
        }
    }
}

/// A ublk target: both halves of every request, as the kernel's ublk selftest server
/// (kublk) splits them.  Shared by all queue threads.
///
/// [`Target::queue_io`] says what a new request becomes: commit at once, or an op to
/// run.  [`Target::io_done`] says what an op's completion means: commit with which
/// result, continue a short transfer, retry, or run the next op of a request that takes
/// several.  The queue only runs the ops and commits.
pub trait Target: Send + Sync {
    /// "null", "loop", "mirror", or a test target's name.
    fn kind(&self) -> &'static str;
    /// Backing file or device, or "-".
    fn backing(&self) -> String;
    /// Device size in bytes.
    fn dev_size(&self) -> u64;
    /// Parameters for SET_PARAMS.  `max_io_buf_bytes` as ADD_DEV granted it.
    fn params(&self, max_io_buf_bytes: u32) -> ublk_params;
    /// A new request: commit at once, or submit its first op.
    fn queue_io(&self, io: &mut Io) -> Action;
    /// The op `op` this target asked for on behalf of `io` completed with `res` (a CQE's
    /// result: >= 0 or -errno): what now.
    fn io_done(&self, io: &mut Io, op: &IoOp, res: i32) -> Action;
}

/// The completion half of a non-data op (flush, discard, write zeroes): its error, or
/// 0 (the driver only looks at the sign for those).
pub fn plain_done(res: i32) -> Action {
    Action::Commit(res.min(0))
}

/// The op that moves `req`'s data between the request and `fd` from `done`
/// bytes on: a plain read/write against the server buffer in copy mode, a
/// splice through the char device in zero-copy mode.
///
/// Zero copy: `fd_in` = /dev/ublkcN at `ublk_splice_pos(q_id, tag, done)`,
/// `fd_out` = the backing file at `(start_sector << 9) + done`; WRITE uses
/// SPLICE_F_DIRECT (request pages -> backing `->splice_write`), READ uses
/// SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ (backing reads into request pages).
pub fn data_op(req: &Request, data: DataRef, fd: RawFd, done: u32) -> Option<IoOp> {
    if req.op != UBLK_IO_OP_READ && req.op != UBLK_IO_OP_WRITE {
        return None;
    }
    let total = req.data_bytes()?;
    if done >= total {
        return None;
    }
    let len = total - done;
    let offset = req.offset() + u64::from(done);
    Some(match (data, req.op) {
        (DataRef::Buffer { addr }, UBLK_IO_OP_READ) => IoOp::Read {
            fd,
            addr: addr + u64::from(done),
            len,
            offset,
        },
        (DataRef::Buffer { addr }, _) => IoOp::Write {
            fd,
            addr: addr + u64::from(done),
            len,
            offset,
        },
        (DataRef::ZeroCopy { char_fd }, op) => IoOp::Splice {
            fd_in: char_fd,
            off_in: ublk_splice_pos(req.q_id, req.tag, done),
            fd_out: fd,
            off_out: offset,
            len,
            flags: if op == UBLK_IO_OP_READ {
                SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ
            } else {
                SPLICE_F_DIRECT
            },
        },
    })
}

/// Largest discard / write-zeroes request the targets accept (1 GiB): the
/// block layer splits bigger ones.
pub const MAX_DISCARD_SECTORS: u32 = (1 << 30) >> 9;

/// Basic parameters common to the targets.
pub fn basic_params(
    dev_size: u64,
    logical_bs_shift: u8,
    max_io_buf_bytes: u32,
    attrs: u32,
) -> ublk_param_basic {
    let physical = logical_bs_shift.max(12);
    ublk_param_basic {
        attrs,
        logical_bs_shift,
        physical_bs_shift: physical,
        io_opt_shift: physical,
        io_min_shift: logical_bs_shift,
        max_sectors: max_io_buf_bytes >> 9,
        chunk_sectors: 0,
        dev_sectors: dev_size >> 9,
        virt_boundary_mask: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u8, start: u64, nr: u32) -> Request {
        Request {
            q_id: 1,
            tag: 7,
            op,
            flags: 0,
            start_sector: start,
            nr_sectors: nr,
        }
    }

    #[test]
    fn request_from_desc() {
        let d = ublksrv_io_desc {
            op_flags: u32::from(UBLK_IO_OP_WRITE) | UBLK_IO_F_FUA,
            nr_sectors: 8,
            start_sector: 100,
            addr: 0,
        };
        let r = Request::from_desc(2, 3, &d);
        assert_eq!(r.op, UBLK_IO_OP_WRITE);
        assert_eq!(r.flags, UBLK_IO_F_FUA);
        assert_eq!(r.bytes(), 4096);
        assert_eq!(r.offset(), 51_200);
        assert_eq!((r.q_id, r.tag), (2, 3));
    }

    #[test]
    fn copy_mode_data_ops() {
        let b = DataRef::Buffer { addr: 0x10000 };
        assert_eq!(
            data_op(&req(UBLK_IO_OP_READ, 8, 16), b, 5, 0),
            Some(IoOp::Read {
                fd: 5,
                addr: 0x10000,
                len: 8192,
                offset: 4096
            })
        );
        assert_eq!(
            data_op(&req(UBLK_IO_OP_WRITE, 8, 16), b, 5, 4096),
            Some(IoOp::Write {
                fd: 5,
                addr: 0x11000,
                len: 4096,
                offset: 8192
            })
        );
        assert_eq!(data_op(&req(UBLK_IO_OP_WRITE, 8, 16), b, 5, 8192), None);
        assert_eq!(data_op(&req(UBLK_IO_OP_FLUSH, 0, 0), b, 5, 0), None);
    }

    #[test]
    fn zero_copy_data_ops() {
        let z = DataRef::ZeroCopy { char_fd: 9 };
        let w = data_op(&req(UBLK_IO_OP_WRITE, 2, 8), z, 5, 0);
        assert_eq!(
            w,
            Some(IoOp::Splice {
                fd_in: 9,
                off_in: ublk_splice_pos(1, 7, 0),
                fd_out: 5,
                off_out: 1024,
                len: 4096,
                flags: SPLICE_F_DIRECT,
            })
        );
        let r = data_op(&req(UBLK_IO_OP_READ, 2, 8), z, 5, 1536);
        assert_eq!(
            r,
            Some(IoOp::Splice {
                fd_in: 9,
                off_in: ublk_splice_pos(1, 7, 1536),
                fd_out: 5,
                off_out: 1024 + 1536,
                len: 4096 - 1536,
                flags: SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ,
            })
        );
    }

    fn splice(len: u32) -> IoOp {
        IoOp::Splice {
            fd_in: 1,
            off_in: 0,
            fd_out: 2,
            off_out: 0,
            len,
            flags: SPLICE_F_DIRECT,
        }
    }

    #[test]
    fn data_step_short_and_full() {
        assert_eq!(data_step(8192, 0, 8192), DataStep::Done);
        assert_eq!(data_step(8192, 0, -libc::EAGAIN), DataStep::Again);
        assert_eq!(data_step(8192, 0, 4096), DataStep::More { done: 4096 });
        assert_eq!(data_step(8192, 4096, 4096), DataStep::Done);
        assert_eq!(data_step(8192, 4096, 512), DataStep::More { done: 4608 });
        // More than asked: clamp, never overflow.
        assert_eq!(data_step(8192, 4096, 10_000), DataStep::Done);
        // Nothing left and nothing moved: done.
        assert_eq!(data_step(0, 0, 0), DataStep::Done);
    }

    #[test]
    fn data_step_errors_never_spin() {
        assert_eq!(
            data_step(4096, 0, -libc::EINVAL),
            DataStep::Failed(-libc::EINVAL)
        );
        assert_eq!(
            data_step(4096, 512, -libc::EACCES),
            DataStep::Failed(-libc::EACCES)
        );
        assert_eq!(data_step(4096, 0, 0), DataStep::Failed(-libc::EIO));
        assert_eq!(data_step(4096, 2048, 0), DataStep::Failed(-libc::EIO));
    }

    #[test]
    fn data_done_continues_retries_commits() {
        let r = req(UBLK_IO_OP_READ, 0, 16); // 8 KiB
        let z = DataRef::ZeroCopy { char_fd: 9 };
        let mut io = Io::new(r, z);
        let op = data_op(&r, z, 4, 0).expect("data op");
        // -EAGAIN: the same op again, nothing counted as moved.
        assert_eq!(
            data_done(&mut io, &op, -libc::EAGAIN, |_| None),
            Action::Retry(op)
        );
        assert_eq!(io.done, 0);
        // Short: the rest, planned from the new `done`.
        let a = data_done(&mut io, &op, 3072, |io| {
            data_op(&io.req, io.data, 4, io.done)
        });
        assert_eq!(io.done, 3072);
        assert_eq!(a, Action::Continue(data_op(&r, z, 4, 3072).expect("rest")));
        // The rest moved: the request's length is committed.
        let Action::Continue(rest) = a else {
            unreachable!()
        };
        assert_eq!(
            data_done(&mut io, &rest, 5120, |_| None),
            Action::Commit(8192)
        );
        // A short op with no op for the rest fails the request rather than hang.
        let mut io = Io::new(r, z);
        assert_eq!(
            data_done(&mut io, &op, 512, |_| None),
            Action::Commit(-libc::EIO)
        );
        // An error is committed as it is.
        let mut io = Io::new(r, z);
        assert_eq!(
            data_done(&mut io, &splice(8192), -libc::EFAULT, |_| None),
            Action::Commit(-libc::EFAULT)
        );
    }

    #[test]
    fn continuation_loop_terminates() {
        // Simulate a splice that always moves at most one page.
        let r = req(UBLK_IO_OP_READ, 0, 256); // 128 KiB
        let z = DataRef::ZeroCopy { char_fd: 3 };
        let total = r.data_bytes().unwrap();
        let mut io = Io::new(r, z);
        let mut op = data_op(&r, z, 4, 0).expect("data op");
        let mut rounds = 0;
        loop {
            if let IoOp::Splice {
                off_in,
                off_out,
                len,
                ..
            } = op
            {
                assert_eq!(ublk_splice_pos_to_off(off_in), io.done);
                assert_eq!(off_out, u64::from(io.done));
                assert_eq!(len, total - io.done);
            }
            rounds += 1;
            let res = 4096.min((total - io.done) as i32);
            match data_done(&mut io, &op, res, |io| {
                data_op(&io.req, io.data, 4, io.done)
            }) {
                Action::Continue(next) => op = next,
                Action::Commit(res) => {
                    assert_eq!(res, total as i32);
                    break;
                }
                a => panic!("{a:?}"),
            }
        }
        assert_eq!(rounds, 32);
    }

    #[test]
    fn plain_ops_commit_zero_or_the_error() {
        assert_eq!(plain_done(0), Action::Commit(0));
        assert_eq!(plain_done(4096), Action::Commit(0));
        assert_eq!(plain_done(-libc::EIO), Action::Commit(-libc::EIO));
    }

    #[test]
    fn sqe_building() {
        let op = IoOp::Splice {
            fd_in: 3,
            off_in: ublk_splice_pos(0, 1, 0),
            fd_out: 4,
            off_out: 512,
            len: 512,
            flags: SPLICE_F_DIRECT,
        };
        assert!(op.to_sqe(42).is_some());
        let io = IoOp::RangeIoctl {
            fd: 3,
            request: 0,
            offset: 0,
            len: 0,
        };
        assert!(io.to_sqe(1).is_none());
        assert!(io.is_sync());
        assert!(!io.is_data());
    }

    #[test]
    fn basic_params_shape() {
        let p = basic_params(1 << 30, 9, 512 * 1024, UBLK_ATTR_VOLATILE_CACHE);
        assert_eq!(p.dev_sectors, 1 << 21);
        assert_eq!(p.max_sectors, 1024);
        assert_eq!(p.logical_bs_shift, 9);
        assert_eq!(p.physical_bs_shift, 12);
        let p = basic_params(1 << 30, 12, 512 * 1024, 0);
        assert_eq!(p.physical_bs_shift, 12);
        assert_eq!(p.io_min_shift, 12);
    }
}
