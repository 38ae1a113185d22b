//! The mirror target: two backing files (or block devices) that hold the same data.
//!
//! A WRITE runs twice, one leg per file: in zero-copy mode both legs splice the same
//! request range from /dev/ublkcN (series v2 lets a range of a request be spliced more
//! than once), in copy mode both write the same server buffer.  FLUSH, DISCARD and
//! WRITE_ZEROES also run on both files.  A READ is served from the first file.  The
//! device has the size of the smaller file.

use std::path::Path;

use anyhow::Result;

use super::file::{loop_params, plan_loop, LoopTarget};
use super::{DataRef, Plan, Progress, Request, Target};
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

    fn plan(&self, req: &Request, data: DataRef, at: Progress) -> Plan {
        match self.files.get(usize::from(at.leg)) {
            Some(f) => plan_loop(&f.backing_info(), req, data, at.done),
            None => Plan::Complete(-libc::EIO),
        }
    }

    fn legs(&self, req: &Request) -> u8 {
        mirror_legs(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::file::Backing;
    use crate::target::{BackingKind, IoOp};

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
                Plan::Submit(IoOp::Splice {
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
        let w = req(UBLK_IO_OP_WRITE);
        let fd_of = |p: Plan| match p {
            Plan::Submit(IoOp::Splice { fd_out, .. }) => fd_out,
            p => panic!("{p:?}"),
        };
        let fd0 = fd_of(m.plan(&w, z, Progress::leg(0)));
        let fd1 = fd_of(m.plan(&w, z, Progress::leg(1)));
        assert_ne!(fd0, fd1);
        assert_eq!(m.plan(&w, z, Progress::leg(2)), Plan::Complete(-libc::EIO));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
