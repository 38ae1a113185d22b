//! The mirror target: two backing files (or block devices) that hold the same data.
//!
//! A WRITE runs twice, one leg per file, one after the other (the second once the first
//! is done; [`Io::leg`] says which runs): in zero-copy mode both legs splice the same
//! request range from /dev/ublkcN (series v2 lets a range of a request be spliced more
//! than once), in copy mode both write the same server buffer.  FLUSH, DISCARD and
//! WRITE_ZEROES also run on both files.  A READ is served from the first file.  The
//! device has the size of the smaller file.

use std::path::Path;

use anyhow::Result;

use super::file::{loop_params, LoopTarget};
use super::{Action, Io, IoOp, Request, Target};
use crate::uapi::*;

pub struct MirrorTarget {
    files: [LoopTarget; 2],
    size: u64,
    logical_bs_shift: u8,
}

impl MirrorTarget {
    pub fn open(a: &Path, b: &Path, buffered: bool) -> Result<MirrorTarget> {
        let files = [
            LoopTarget::open(a, buffered)?,
            LoopTarget::open(b, buffered)?,
        ];
        Ok(Self::new(files))
    }

    pub fn new(files: [LoopTarget; 2]) -> MirrorTarget {
        let logical_bs_shift = files[0].logical_bs_shift().max(files[1].logical_bs_shift());
        let mask = (1u64 << logical_bs_shift) - 1;
        let size = files[0].dev_size().min(files[1].dev_size()) & !mask;
        MirrorTarget {
            files,
            size,
            logical_bs_shift,
        }
    }
}

/// Legs of a mirror request: reads once, everything else once per file.
pub fn mirror_legs(req: &Request) -> u8 {
    if req.op == UBLK_IO_OP_READ {
        1
    } else {
        2
    }
}

impl Target for MirrorTarget {
    fn kind(&self) -> &'static str {
        "mirror"
    }

    fn backing(&self) -> String {
        format!("{}+{}", self.files[0].backing(), self.files[1].backing())
    }

    fn dev_size(&self) -> u64 {
        self.size
    }

    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        if self.size == 0 {
            // open() refuses empty files, so this cannot happen; keep the device sane.
            return loop_params(
                1 << self.logical_bs_shift,
                self.logical_bs_shift,
                false,
                max_io_buf_bytes,
            );
        }
        loop_params(
            self.size,
            self.logical_bs_shift,
            self.files[0].discards() && self.files[1].discards(),
            max_io_buf_bytes,
        )
    }

    fn queue_io(&self, io: &mut Io) -> Action {
        self.queue_leg(io)
    }

    /// A leg is done as the loop target says; once it succeeds the next leg starts from
    /// 0 bytes, and the last leg's result is committed.  An error ends the request at
    /// once.
    fn io_done(&self, io: &mut Io, op: &IoOp, res: i32) -> Action {
        let Some(f) = self.files.get(usize::from(io.leg)) else {
            return Action::Commit(-libc::EIO);
        };
        match f.io_done(io, op, res) {
            Action::Commit(r) if r >= 0 && io.leg + 1 < mirror_legs(&io.req) => {
                io.leg += 1;
                io.done = 0;
                self.queue_leg(io)
            }
            a => a,
        }
    }
}

impl MirrorTarget {
    /// The start of leg `io.leg`: the loop target's first half on that file.
    fn queue_leg(&self, io: &mut Io) -> Action {
        match self.files.get(usize::from(io.leg)) {
            Some(f) => f.queue_io(io),
            None => Action::Commit(-libc::EIO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::file::{plan_loop, Backing};
    use crate::targets::{BackingKind, DataRef};

    fn req(op: u8) -> Request {
        Request {
            q_id: 0,
            tag: 5,
            op,
            flags: 0,
            start_sector: 8,
            nr_sectors: 8,
        }
    }

    #[test]
    fn legs() {
        assert_eq!(mirror_legs(&req(UBLK_IO_OP_READ)), 1);
        assert_eq!(mirror_legs(&req(UBLK_IO_OP_WRITE)), 2);
        assert_eq!(mirror_legs(&req(UBLK_IO_OP_FLUSH)), 2);
        assert_eq!(mirror_legs(&req(UBLK_IO_OP_DISCARD)), 2);
        assert_eq!(mirror_legs(&req(UBLK_IO_OP_WRITE_ZEROES)), 2);
    }

    #[test]
    fn both_legs_splice_the_same_range() {
        let z = DataRef::ZeroCopy { char_fd: 9 };
        let b = |fd| Backing {
            fd,
            kind: BackingKind::File,
        };
        let w = req(UBLK_IO_OP_WRITE);
        let leg = |fd| plan_loop(&b(fd), &w, z, 0);
        for (fd, p) in [(3, leg(3)), (4, leg(4))] {
            assert_eq!(
                p,
                Action::Submit(IoOp::Splice {
                    fd_in: 9,
                    off_in: ublk_splice_pos(0, 5, 0),
                    fd_out: fd,
                    off_out: 4096,
                    len: 4096,
                    flags: SPLICE_F_DIRECT,
                })
            );
        }
    }

    fn fd_of(a: Action) -> i32 {
        match a {
            Action::Submit(IoOp::Splice { fd_out, .. })
            | Action::Continue(IoOp::Splice { fd_out, .. }) => fd_out,
            a => panic!("{a:?}"),
        }
    }

    fn op_of(a: Action) -> IoOp {
        match a {
            Action::Submit(op) | Action::Continue(op) | Action::Retry(op) => op,
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn mirror_on_files() {
        let dir = std::env::temp_dir().join(format!("ublk-mirror-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, vec![0u8; 16384]).unwrap();
        std::fs::write(&b, vec![0u8; 8192 + 100]).unwrap();
        let m = MirrorTarget::open(&a, &b, true).unwrap();
        assert_eq!(m.dev_size(), 8192);
        assert_eq!(m.params(1 << 19).basic.dev_sectors, 16);
        assert!(m.backing().contains('+'));
        let z = DataRef::ZeroCopy { char_fd: 9 };

        // A WRITE: leg 0 on the first file, a short splice continued there, then leg 1
        // on the second file from 0 bytes, then the request's length.
        let mut io = Io::new(req(UBLK_IO_OP_WRITE), z);
        let first = m.queue_io(&mut io);
        let fd0 = fd_of(first);
        let cont = m.io_done(&mut io, &op_of(first), 1024);
        assert_eq!((io.leg, io.done, fd_of(cont)), (0, 1024, fd0));
        let second = m.io_done(&mut io, &op_of(cont), 3072);
        assert!(matches!(second, Action::Submit(_)), "{second:?}");
        let fd1 = fd_of(second);
        assert_ne!(fd0, fd1);
        assert_eq!((io.leg, io.done), (1, 0));
        assert_eq!(
            op_of(second),
            IoOp::Splice {
                fd_in: 9,
                off_in: ublk_splice_pos(0, 5, 0),
                fd_out: fd1,
                off_out: 4096,
                len: 4096,
                flags: SPLICE_F_DIRECT,
            }
        );
        assert_eq!(
            m.io_done(&mut io, &op_of(second), 4096),
            Action::Commit(4096)
        );

        // A failed first leg ends the request: no second leg.
        let mut io = Io::new(req(UBLK_IO_OP_WRITE), z);
        let first = m.queue_io(&mut io);
        assert_eq!(
            m.io_done(&mut io, &op_of(first), -libc::ENOSPC),
            Action::Commit(-libc::ENOSPC)
        );
        // -EAGAIN is retried within the leg.
        let mut io = Io::new(req(UBLK_IO_OP_WRITE), z);
        let first = m.queue_io(&mut io);
        assert_eq!(
            m.io_done(&mut io, &op_of(first), -libc::EAGAIN),
            Action::Retry(op_of(first))
        );
        assert_eq!(io.leg, 0);

        // A READ: one leg, from the first file.
        let mut io = Io::new(req(UBLK_IO_OP_READ), z);
        let r = m.queue_io(&mut io);
        assert_eq!(fd_of(r), fd0);
        assert_eq!(m.io_done(&mut io, &op_of(r), 4096), Action::Commit(4096));

        // A FLUSH on both files, committing 0.
        let mut io = Io::new(req(UBLK_IO_OP_FLUSH), z);
        let f0 = op_of(m.queue_io(&mut io));
        let f1 = op_of(m.io_done(&mut io, &f0, 0));
        assert_ne!(f0, f1);
        assert_eq!(m.io_done(&mut io, &f1, 0), Action::Commit(0));

        // No third file.
        let mut io = Io::new(req(UBLK_IO_OP_WRITE), z);
        io.leg = 2;
        assert_eq!(m.queue_io(&mut io), Action::Commit(-libc::EIO));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
