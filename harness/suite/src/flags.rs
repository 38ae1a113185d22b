//! The splice flags the tests use, by their kernel names.
//!
//! SPLICE_F_DIRECT and SPLICE_F_READ_TO_READ are the series' io_uring splice flags
//! (`include/uapi/linux/io_uring.h` since v3, docs/contract.md): io_uring's
//! IORING_OP_SPLICE accepts them, splice(2), tee(2), vmsplice(2) and IORING_OP_TEE must
//! not.

/// Patch 1/4 (a file to file splice through the task's internal pipe) and 3/4 (with
/// SPLICE_F_DIRECT, from a source that lends its pages, the destination is read into
/// them): the UAPI module of the ublk crate is where the harness keeps them.
pub use ublk::uapi::{SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ};

/// The syscalls' own flags (`SPLICE_F_ALL` of include/linux/splice.h).
pub const SPLICE_F_MOVE: u32 = 0x01;
pub const SPLICE_F_NONBLOCK: u32 = 0x02;
pub const SPLICE_F_MORE: u32 = 0x04;
pub const SPLICE_F_GIFT: u32 = 0x08;

/// io_uring only: `splice_fd_in` is an index into the registered files.
pub const SPLICE_F_FD_IN_FIXED: u32 = 1 << 31;
