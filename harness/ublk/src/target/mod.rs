//! Targets: what a ublk request becomes.
//!
//! A [`Target`] maps a request (op, start sector, sector count, flags, and
//! where its data lives: a server buffer in copy mode or the zero-copy splice
//! window) to a [`Plan`]: complete at once, or run one [`IoOp`].  The queue
//! runs the op on its io_uring and feeds the result to [`on_completion`],
//! which says whether to commit, continue a short transfer or retry.  All of
//! that is pure and unit-tested; only the queue touches the ring.

pub mod file;
pub mod mirror;
pub mod null;

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::uapi::*;

pub use file::{Backing, BackingKind, LoopTarget};
pub use mirror::MirrorTarget;
pub use null::NullTarget;

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
        /// Mode to retry with if `mode` gives EOPNOTSUPP (e.g. tmpfs has no
        /// FALLOC_FL_ZERO_RANGE; punching a hole zeroes as well).
        fallback_mode: Option<i32>,
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
                ..
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

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Commit now with this result.
    Complete(i32),
    /// Run this op, then call [`on_completion`].
    Submit(IoOp),
    /// Run this op; once it succeeds, commit `result` whatever it moved (a failed op
    /// still commits its error).  For test targets that misreport a request on purpose,
    /// e.g. a READ committed with more bytes than were filled.
    SubmitAndCommit { op: IoOp, result: i32 },
}

/// How far a request has got: which of the target's legs runs (see
/// [`Target::legs`]) and how many bytes of that leg's data op are done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub leg: u8,
    pub done: u32,
}

impl Progress {
    /// The start of leg `leg`.
    pub const fn leg(leg: u8) -> Progress {
        Progress { leg, done: 0 }
    }
}

/// What to do after an op completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Commit the request with this result.
    Commit(i32),
    /// A data op moved fewer bytes than asked: plan again from `done` bytes.
    Continue { done: u32 },
    /// Run this op instead (fallback).
    Retry(IoOp),
}

/// The continuation logic.  `total` is the request's byte count, `done` what
/// earlier ops of this request moved, `res` the op's result.
///
/// - a negative result ends the request with that error (never a hang), except
///   -EAGAIN from a data op: io_uring posts it when a nowait bio was refused after the
///   submission returned (a direct splice on the lend path, like a read or a write), and
///   the op is run again as it was;
/// - a data op that moved 0 bytes with bytes remaining ends it with -EIO
///   (rather than spinning);
/// - a short data op continues from the new `done`;
/// - a non-data op (flush, discard, write zeroes) commits 0 on success (the
///   driver only looks at the sign for those).
pub fn on_completion(op: &IoOp, total: u32, done: u32, res: i32) -> Step {
    if res == -libc::EAGAIN && op.is_data() {
        return Step::Retry(*op);
    }
    if res < 0 {
        if let IoOp::Fallocate {
            fallback_mode: Some(m),
            ..
        } = *op
        {
            if res == -libc::EOPNOTSUPP {
                let mut again = *op;
                if let IoOp::Fallocate {
                    ref mut mode,
                    ref mut fallback_mode,
                    ..
                } = again
                {
                    *mode = m;
                    *fallback_mode = None;
                }
                return Step::Retry(again);
            }
        }
        return Step::Commit(res);
    }
    if !op.is_data() {
        return Step::Commit(0);
    }
    let remaining = total.saturating_sub(done);
    let moved = res as u32;
    if moved == 0 {
        return if remaining == 0 {
            Step::Commit(total as i32)
        } else {
            Step::Commit(-libc::EIO)
        };
    }
    if moved >= remaining {
        Step::Commit(total as i32)
    } else {
        Step::Continue { done: done + moved }
    }
}

/// A ublk target.  Shared by all queue threads.
///
/// A request runs as one or more legs (a mirror writes a WRITE to each of its files):
/// each leg is planned from [`Progress::leg`]`(n)`, a short data op continues within the
/// leg, and the request is committed with the result of its last leg.  An error ends
/// the request at once.
pub trait Target: Send + Sync {
    /// "null", "loop", "mirror", or a test target's name.
    fn kind(&self) -> &'static str;
    /// Backing file or device, or "-".
    fn backing(&self) -> String;
    /// Device size in bytes.
    fn dev_size(&self) -> u64;
    /// Parameters for SET_PARAMS.  `max_io_buf_bytes` as ADD_DEV granted it.
    fn params(&self, max_io_buf_bytes: u32) -> ublk_params;
    /// Plan (the rest of) leg `at.leg` of a request: `at.done` bytes of it are moved.
    fn plan(&self, req: &Request, data: DataRef, at: Progress) -> Plan;
    /// How many legs `req` runs, one after another (1 unless the target says more).
    fn legs(&self, _req: &Request) -> u8 {
        1
    }
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

    #[test]
    fn continuation_short_and_full() {
        let op = IoOp::Splice {
            fd_in: 1,
            off_in: 0,
            fd_out: 2,
            off_out: 0,
            len: 8192,
            flags: SPLICE_F_DIRECT,
        };
        assert_eq!(on_completion(&op, 8192, 0, 8192), Step::Commit(8192));
        assert_eq!(on_completion(&op, 8192, 0, -libc::EAGAIN), Step::Retry(op));
        assert_eq!(
            on_completion(&op, 8192, 0, 4096),
            Step::Continue { done: 4096 }
        );
        assert_eq!(on_completion(&op, 8192, 4096, 4096), Step::Commit(8192));
        assert_eq!(
            on_completion(&op, 8192, 4096, 512),
            Step::Continue { done: 4608 }
        );
        // More than asked: clamp, never overflow.
        assert_eq!(on_completion(&op, 8192, 4096, 10_000), Step::Commit(8192));
    }

    #[test]
    fn continuation_errors_never_spin() {
        let op = IoOp::Read {
            fd: 1,
            addr: 0,
            len: 4096,
            offset: 0,
        };
        assert_eq!(
            on_completion(&op, 4096, 0, -libc::EINVAL),
            Step::Commit(-libc::EINVAL)
        );
        assert_eq!(
            on_completion(&op, 4096, 512, -libc::EACCES),
            Step::Commit(-libc::EACCES)
        );
        assert_eq!(on_completion(&op, 4096, 0, 0), Step::Commit(-libc::EIO));
        assert_eq!(on_completion(&op, 4096, 2048, 0), Step::Commit(-libc::EIO));
    }

    #[test]
    fn continuation_loop_terminates() {
        // Simulate a splice that always moves at most one page.
        let r = req(UBLK_IO_OP_READ, 0, 256); // 128 KiB
        let z = DataRef::ZeroCopy { char_fd: 3 };
        let mut done = 0;
        let mut rounds = 0;
        loop {
            let total = r.data_bytes().unwrap();
            let op = data_op(&r, z, 4, done).expect("data op");
            if let IoOp::Splice {
                off_in,
                off_out,
                len,
                ..
            } = op
            {
                assert_eq!(ublk_splice_pos_to_off(off_in), done);
                assert_eq!(off_out, u64::from(done));
                assert_eq!(len, total - done);
            }
            rounds += 1;
            match on_completion(&op, total, done, 4096.min((total - done) as i32)) {
                Step::Continue { done: d } => done = d,
                Step::Commit(res) => {
                    assert_eq!(res, total as i32);
                    break;
                }
                Step::Retry(_) => panic!("no retry for data ops"),
            }
        }
        assert_eq!(rounds, 32);
    }

    #[test]
    fn non_data_ops_commit_zero() {
        let op = IoOp::Fsync {
            fd: 1,
            datasync: true,
        };
        assert_eq!(on_completion(&op, 0, 0, 0), Step::Commit(0));
        assert_eq!(
            on_completion(&op, 0, 0, -libc::EIO),
            Step::Commit(-libc::EIO)
        );
        let f = IoOp::Fallocate {
            fd: 1,
            mode: 0x10,
            offset: 0,
            len: 4096,
            fallback_mode: Some(0x3),
        };
        assert_eq!(on_completion(&f, 4096, 0, 0), Step::Commit(0));
        assert_eq!(
            on_completion(&f, 4096, 0, -libc::EOPNOTSUPP),
            Step::Retry(IoOp::Fallocate {
                fd: 1,
                mode: 0x3,
                offset: 0,
                len: 4096,
                fallback_mode: None
            })
        );
        assert_eq!(
            on_completion(&f, 4096, 0, -libc::EIO),
            Step::Commit(-libc::EIO)
        );
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
