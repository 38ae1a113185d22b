//! The null target: a WRITE is dropped (completes at once with its full byte count), a
//! READ returns zeroes, FLUSH, DISCARD and WRITE_ZEROES complete at once.
//!
//! The zeroes come from a sparse memfd of the device's size: a READ is an ordinary data op
//! against it (a read into the server buffer in copy mode, a READ_TO_READ splice in
//! zero-copy mode), so a READ is really filled in both modes (a zero-copy READ that is
//! committed without being filled is refused by the kernel) and what a reader gets is
//! known: zeroes. Reading a hole of a memfd allocates nothing.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use anyhow::{Context, Result};

use super::{
    basic_params, data_done, data_op, plain_done, Action, DataRef, Io, IoOp, Request, Target,
    MAX_DISCARD_SECTORS,
};
use crate::uapi::*;

pub struct NullTarget {
    size: u64,
    zeroes: File,
}

/// A sparse memfd of `size` bytes: a file of zeroes.
fn zero_file(size: u64) -> Result<File> {
    let name = c"ublk-null-zeroes";
    // SAFETY: a valid NUL-terminated name; the flags are plain bits.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create for the null target");
    }
    // SAFETY: memfd_create just returned this descriptor, and nothing else owns it.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size)
        .with_context(|| format!("sizing the null target's zero file to {size} bytes"))?;
    Ok(f)
}

impl NullTarget {
    /// `size` in bytes, rounded down to 512.
    pub fn new(size: u64) -> Result<NullTarget> {
        let size = crate::validate::null_size(size).map_err(anyhow::Error::msg)?;
        Ok(NullTarget {
            size,
            zeroes: zero_file(size)?,
        })
    }
}

/// The first half of the null target, pure; `zeroes` is a file of zeroes as large as the
/// device.  With `done` > 0: the rest of a READ of which `done` bytes are filled.
pub fn plan_null(req: &Request, data: DataRef, zeroes: RawFd, done: u32) -> Action {
    match req.op {
        UBLK_IO_OP_READ => match (req.data_bytes(), data_op(req, data, zeroes, done)) {
            (None, _) => Action::Commit(-libc::EINVAL),
            (Some(_), Some(op)) => Action::Submit(op),
            (Some(b), None) => Action::Commit(b as i32),
        },
        UBLK_IO_OP_WRITE => match req.data_bytes() {
            Some(b) => Action::Commit(b as i32),
            None => Action::Commit(-libc::EINVAL),
        },
        UBLK_IO_OP_FLUSH | UBLK_IO_OP_DISCARD | UBLK_IO_OP_WRITE_ZEROES => Action::Commit(0),
        _ => Action::Commit(-libc::EOPNOTSUPP),
    }
}

/// The second half of the null target, pure: only READs run an op (from `zeroes`).
pub fn null_io_done(zeroes: RawFd, io: &mut Io, op: &IoOp, res: i32) -> Action {
    if !op.is_data() {
        return plain_done(res);
    }
    data_done(io, op, res, |io| data_op(&io.req, io.data, zeroes, io.done))
}

impl Target for NullTarget {
    fn kind(&self) -> &'static str {
        "null"
    }

    fn backing(&self) -> String {
        "-".to_string()
    }

    fn dev_size(&self) -> u64 {
        self.size
    }

    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        ublk_params {
            len: std::mem::size_of::<ublk_params>() as u32,
            types: UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD,
            basic: basic_params(self.size, 9, max_io_buf_bytes, 0),
            discard: ublk_param_discard {
                discard_alignment: 0,
                discard_granularity: 4096,
                max_discard_sectors: MAX_DISCARD_SECTORS,
                max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
                max_discard_segments: 1,
                reserved0: 0,
            },
        }
    }

    fn queue_io(&self, io: &mut Io) -> Action {
        plan_null(&io.req, io.data, self.zeroes.as_raw_fd(), 0)
    }

    fn io_done(&self, io: &mut Io, op: &IoOp, res: i32) -> Action {
        null_io_done(self.zeroes.as_raw_fd(), io, op, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u8, nr: u32) -> Request {
        Request {
            q_id: 0,
            tag: 0,
            op,
            flags: 0,
            start_sector: 0,
            nr_sectors: nr,
        }
    }

    #[test]
    fn null_plans() {
        let b = DataRef::Buffer { addr: 0x1000 };
        assert_eq!(
            plan_null(&req(UBLK_IO_OP_READ, 8), b, 7, 0),
            Action::Submit(IoOp::Read {
                fd: 7,
                addr: 0x1000,
                len: 4096,
                offset: 0
            })
        );
        let z = DataRef::ZeroCopy { char_fd: 3 };
        assert!(matches!(
            plan_null(&req(UBLK_IO_OP_READ, 8), z, 7, 512),
            Action::Submit(IoOp::Splice {
                fd_out: 7,
                len: 3584,
                ..
            })
        ));
        assert_eq!(
            plan_null(&req(UBLK_IO_OP_WRITE, 1), z, 7, 0),
            Action::Commit(512)
        );
        assert_eq!(
            plan_null(&req(UBLK_IO_OP_FLUSH, 0), b, 7, 0),
            Action::Commit(0)
        );
        assert_eq!(
            plan_null(&req(UBLK_IO_OP_DISCARD, 16), b, 7, 0),
            Action::Commit(0)
        );
        assert_eq!(
            plan_null(&req(UBLK_IO_OP_WRITE_SAME, 1), b, 7, 0),
            Action::Commit(-libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn null_read_completion() {
        let z = DataRef::ZeroCopy { char_fd: 3 };
        let r = req(UBLK_IO_OP_READ, 8);
        let mut io = Io::new(r, z);
        let Action::Submit(op) = plan_null(&r, z, 7, 0) else {
            panic!("a READ submits")
        };
        // A short fill continues from the zero file at the new offset.
        let a = null_io_done(7, &mut io, &op, 1024);
        assert!(
            matches!(
                a,
                Action::Continue(IoOp::Splice {
                    fd_out: 7,
                    off_out: 1024,
                    len: 3072,
                    ..
                })
            ),
            "{a:?}"
        );
        let Action::Continue(rest) = a else {
            unreachable!()
        };
        assert_eq!(null_io_done(7, &mut io, &rest, 3072), Action::Commit(4096));
        assert_eq!(
            null_io_done(7, &mut Io::new(r, z), &op, -libc::EAGAIN),
            Action::Retry(op)
        );
        assert_eq!(
            null_io_done(7, &mut Io::new(r, z), &op, -libc::EFAULT),
            Action::Commit(-libc::EFAULT)
        );
    }

    #[test]
    fn null_size() {
        assert!(NullTarget::new(0).is_err());
        assert!(NullTarget::new(511).is_err());
        let t = NullTarget::new(1 << 20 | 100).unwrap();
        assert_eq!(t.dev_size(), 1 << 20);
        assert_eq!(t.zeroes.metadata().unwrap().len(), 1 << 20);
        let p = t.params(1 << 19);
        assert_eq!(p.basic.dev_sectors, 2048);
        assert_eq!(p.basic.max_sectors, 1024);
    }
}
