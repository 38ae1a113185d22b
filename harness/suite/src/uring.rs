//! io_uring submission of IORING_OP_SPLICE and IORING_OP_TEE, one request at a time.
//!
//! The CQE result is returned as the kernel wrote it (a byte count or a negative errno);
//! only a failure of the ring itself is an `Err`.

use anyhow::{bail, Context, Result};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// One side of a splice: a plain fd or an index into the registered files.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Fd(RawFd),
    Fixed(u32),
}

impl Side {
    pub fn fd(fd: BorrowedFd<'_>) -> Self {
        Side::Fd(fd.as_raw_fd())
    }
}

/// An IORING_OP_SPLICE request. `flags` go to `sqe->splice_flags` as they are
/// (SPLICE_F_FD_IN_FIXED is added for a fixed `fd_in`).
#[derive(Clone, Copy, Debug)]
pub struct Splice {
    pub fd_in: Side,
    pub off_in: i64,
    pub fd_out: Side,
    pub off_out: i64,
    pub len: u32,
    pub flags: u32,
}

impl Splice {
    /// A file to file splice: `len` bytes from `fd_in` at `off_in` to `fd_out` at `off_out`.
    pub fn new(
        fd_in: BorrowedFd<'_>,
        off_in: i64,
        fd_out: BorrowedFd<'_>,
        off_out: i64,
        len: u32,
        flags: u32,
    ) -> Self {
        Splice {
            fd_in: Side::fd(fd_in),
            off_in,
            fd_out: Side::fd(fd_out),
            off_out,
            len,
            flags,
        }
    }

    fn entry(&self) -> squeue::Entry {
        match (self.fd_in, self.fd_out) {
            (Side::Fd(i), Side::Fd(o)) => opcode::Splice::new(
                types::Fd(i),
                self.off_in,
                types::Fd(o),
                self.off_out,
                self.len,
            )
            .flags(self.flags)
            .build(),
            (Side::Fd(i), Side::Fixed(o)) => opcode::Splice::new(
                types::Fd(i),
                self.off_in,
                types::Fixed(o),
                self.off_out,
                self.len,
            )
            .flags(self.flags)
            .build(),
            (Side::Fixed(i), Side::Fd(o)) => opcode::Splice::new(
                types::Fixed(i),
                self.off_in,
                types::Fd(o),
                self.off_out,
                self.len,
            )
            .flags(self.flags)
            .build(),
            (Side::Fixed(i), Side::Fixed(o)) => opcode::Splice::new(
                types::Fixed(i),
                self.off_in,
                types::Fixed(o),
                self.off_out,
                self.len,
            )
            .flags(self.flags)
            .build(),
        }
    }
}

/// A small ring for one request at a time.
pub struct Ring {
    ring: IoUring,
    next: u64,
}

impl Ring {
    pub fn new() -> Result<Self> {
        let ring = IoUring::new(8).context("io_uring_setup(8)")?;
        Ok(Ring { ring, next: 1 })
    }

    /// Registers `fds` as the ring's fixed files (index = position in the slice).
    pub fn register_files(&self, fds: &[RawFd]) -> Result<()> {
        self.ring
            .submitter()
            .register_files(fds)
            .with_context(|| format!("IORING_REGISTER_FILES of {} fd(s)", fds.len()))
    }

    /// Submits one SQE, waits for its CQE and returns the CQE's result.
    pub fn run(&mut self, sqe: squeue::Entry) -> Result<i32> {
        let id = self.next;
        self.next += 1;
        let sqe = sqe.user_data(id);
        // SAFETY: the SQE refers to no user memory (splice and tee take only fds and
        // offsets), so nothing has to outlive the submission.
        unsafe { self.ring.submission().push(&sqe) }.context("the submission queue is full")?;
        self.ring.submit_and_wait(1).context("io_uring_enter")?;
        let cqe: cqueue::Entry = self
            .ring
            .completion()
            .next()
            .context("io_uring_enter returned without a CQE")?;
        if cqe.user_data() != id {
            bail!("got the CQE of request {}, expected {id}", cqe.user_data());
        }
        Ok(cqe.result())
    }

    /// IORING_OP_SPLICE; returns the CQE result.
    pub fn splice(&mut self, sp: &Splice) -> Result<i32> {
        self.run(sp.entry())
            .with_context(|| format!("IORING_OP_SPLICE {sp:?}"))
    }

    /// IORING_OP_TEE from pipe `fd_in` to pipe `fd_out`; returns the CQE result.
    pub fn tee(
        &mut self,
        fd_in: BorrowedFd<'_>,
        fd_out: BorrowedFd<'_>,
        len: u32,
        flags: u32,
    ) -> Result<i32> {
        let sqe = opcode::Tee::new(
            types::Fd(fd_in.as_raw_fd()),
            types::Fd(fd_out.as_raw_fd()),
            len,
        )
        .flags(flags)
        .build();
        self.run(sqe).context("IORING_OP_TEE")
    }
}
