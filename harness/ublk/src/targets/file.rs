//! The loop target: a regular file or a block device.  O_DIRECT by default,
//! the page cache with `buffered`.  The backing is always opened O_RDWR: zero
//! copy READs need it readable (the backing's `->splice_read()` fills the
//! request pages) and WRITEs need it writable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{
    basic_params, data_done, data_op, plain_done, Action, DataRef, Io, IoOp, Request, Target,
    MAX_DISCARD_SECTORS,
};
use crate::uapi::*;

// <linux/fs.h> block ioctls.
pub const BLKSSZGET: u64 = 0x1268; // _IO(0x12,104)
pub const BLKDISCARD: u64 = 0x1277; // _IO(0x12,119)
pub const BLKZEROOUT: u64 = 0x127f; // _IO(0x12,127)
pub const BLKGETSIZE64: u64 = 0x8008_1272; // _IOR(0x12,114,size_t)

// <linux/falloc.h>
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingKind {
    File,
    BlockDevice,
}

/// What the pure mapping needs to know about the backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backing {
    pub fd: RawFd,
    pub kind: BackingKind,
}

/// The first half of the loop target, pure: what a request becomes, or (with `done` >
/// 0) the op for the rest of a data request of which `done` bytes are moved.
pub fn plan_loop(b: &Backing, req: &Request, data: DataRef, done: u32) -> Action {
    match req.op {
        UBLK_IO_OP_READ | UBLK_IO_OP_WRITE => {
            if req.data_bytes().is_none() {
                return Action::Commit(-libc::EINVAL);
            }
            match data_op(req, data, b.fd, done) {
                Some(op) => Action::Submit(op),
                // Nothing (left) to move.
                None => Action::Commit(req.data_bytes().unwrap_or(0) as i32),
            }
        }
        UBLK_IO_OP_FLUSH => Action::Submit(IoOp::Fsync {
            fd: b.fd,
            datasync: true,
        }),
        UBLK_IO_OP_DISCARD | UBLK_IO_OP_WRITE_ZEROES if req.nr_sectors == 0 => Action::Commit(0),
        UBLK_IO_OP_DISCARD => Action::Submit(match b.kind {
            BackingKind::File => IoOp::Fallocate {
                fd: b.fd,
                mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                offset: req.offset(),
                len: req.bytes(),
            },
            BackingKind::BlockDevice => IoOp::RangeIoctl {
                fd: b.fd,
                request: BLKDISCARD,
                offset: req.offset(),
                len: req.bytes(),
            },
        }),
        UBLK_IO_OP_WRITE_ZEROES => Action::Submit(match b.kind {
            BackingKind::File => IoOp::Fallocate {
                fd: b.fd,
                mode: ZERO_RANGE_MODE,
                offset: req.offset(),
                len: req.bytes(),
            },
            BackingKind::BlockDevice => IoOp::RangeIoctl {
                fd: b.fd,
                request: BLKZEROOUT,
                offset: req.offset(),
                len: req.bytes(),
            },
        }),
        _ => Action::Commit(-libc::EOPNOTSUPP),
    }
}

/// The fallocate mode of a WRITE_ZEROES on a file.
const ZERO_RANGE_MODE: i32 = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

/// The second half of the loop target, pure: what the completion of `op` with `res`
/// means for `io`.  Data ops: see [`data_done`] (the rest of a short one from the
/// backing at the new `done`).  A WRITE_ZEROES whose FALLOC_FL_ZERO_RANGE the file
/// refuses (EOPNOTSUPP: tmpfs has none) is retried as a punched hole, which reads back
/// as zeroes as well.  Other ops commit 0 or their error.
pub fn loop_io_done(b: &Backing, io: &mut Io, op: &IoOp, res: i32) -> Action {
    if op.is_data() {
        return data_done(io, op, res, |io| {
            match plan_loop(b, &io.req, io.data, io.done) {
                Action::Submit(op) => Some(op),
                _ => None,
            }
        });
    }
    match *op {
        IoOp::Fallocate {
            fd,
            mode: ZERO_RANGE_MODE,
            offset,
            len,
        } if res == -libc::EOPNOTSUPP => Action::Retry(IoOp::Fallocate {
            fd,
            mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        }),
        _ => plain_done(res),
    }
}

pub struct LoopTarget {
    file: File,
    path: PathBuf,
    kind: BackingKind,
    size: u64,
    logical_bs_shift: u8,
    buffered: bool,
    discard: bool,
}

/// Facts about a backing path gathered without opening it for I/O; used to
/// reject bad input before any device exists.
pub fn check_backing(path: &Path) -> Result<BackingKind> {
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("backing file {} does not exist", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("backing file {}", path.display())),
    };
    let ft = md.file_type();
    let kind = if ft.is_file() {
        BackingKind::File
    } else if ft.is_block_device() {
        BackingKind::BlockDevice
    } else {
        bail!(
            "backing file {} is neither a regular file nor a block device",
            path.display()
        );
    };
    if kind == BackingKind::File && md.len() == 0 {
        bail!(
            "backing file {} is empty (size 0): nothing to export",
            path.display()
        );
    }
    Ok(kind)
}

fn ioctl_u64(fd: RawFd, req: u64) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes a u64.
    let r = unsafe { libc::ioctl(fd, req as _, &mut v as *mut u64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn ioctl_int(fd: RawFd, req: u64) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes an int.
    let r = unsafe { libc::ioctl(fd, req as _, &mut v as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Smallest O_DIRECT block the file accepts: try a 512-byte read, then 4096.
fn probe_direct_block(fd: RawFd, size: u64) -> Result<u8> {
    let mut buf = crate::buf::AlignedBuf::new(4096);
    let mut result = Err(anyhow::anyhow!("file too small for an O_DIRECT probe"));
    for shift in [9u8, 12] {
        let len = 1usize << shift;
        if (len as u64) > size {
            break;
        }
        // SAFETY: buf holds 4096 >= len writable bytes; fd is the caller's open file.
        let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, 0) };
        if r >= 0 {
            result = Ok(shift);
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            result = Err(e).context("O_DIRECT probe read");
            break;
        }
        result = Err(e).context("O_DIRECT probe read: no block size accepted");
    }
    result
}

/// Does the block device (or its parent disk, for a partition) do discard?
fn blockdev_discards(rdev: u64) -> bool {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let base = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    for p in [
        base.join("queue/discard_max_bytes"),
        base.join("../queue/discard_max_bytes"),
    ] {
        if let Ok(s) = std::fs::read_to_string(&p) {
            return s.trim().parse::<u64>().map(|v| v > 0).unwrap_or(false);
        }
    }
    false
}

impl LoopTarget {
    pub fn open(path: &Path, buffered: bool) -> Result<LoopTarget> {
        let kind = check_backing(path)?;
        let mut oo = OpenOptions::new();
        oo.read(true).write(true);
        if !buffered {
            oo.custom_flags(libc::O_DIRECT);
        }
        let file = match oo.open(path) {
            Ok(f) => f,
            Err(e) if !buffered && e.raw_os_error() == Some(libc::EINVAL) => bail!(
                "cannot open {} with O_DIRECT: its filesystem does not support direct I/O \
                 (tmpfs does not); use --buffered-io",
                path.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open backing {} read-write", path.display()))
            }
        };
        let fd = file.as_raw_fd();
        let md = file.metadata().context("fstat backing")?;
        let (raw_size, mut lbs_shift) = match kind {
            BackingKind::File => (md.len(), 9u8),
            BackingKind::BlockDevice => {
                let size = ioctl_u64(fd, BLKGETSIZE64).context("BLKGETSIZE64")?;
                let ssz = ioctl_int(fd, BLKSSZGET).context("BLKSSZGET")?;
                let shift = (ssz.max(512) as u32).trailing_zeros() as u8;
                (size, shift)
            }
        };
        if raw_size == 0 {
            bail!(
                "backing {} is empty (size 0): nothing to export",
                path.display()
            );
        }
        if kind == BackingKind::File && !buffered {
            lbs_shift = probe_direct_block(fd, raw_size)
                .with_context(|| format!("backing {}", path.display()))?;
        }
        let size = raw_size & !((1u64 << lbs_shift) - 1);
        if size == 0 {
            bail!(
                "backing {} ({} bytes) is smaller than one {}-byte block",
                path.display(),
                raw_size,
                1u32 << lbs_shift
            );
        }
        let discard = match kind {
            BackingKind::File => true,
            BackingKind::BlockDevice => blockdev_discards(md.rdev()),
        };
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(LoopTarget {
            file,
            path,
            kind,
            size,
            logical_bs_shift: lbs_shift,
            buffered,
            discard,
        })
    }

    pub fn backing_info(&self) -> Backing {
        Backing {
            fd: self.file.as_raw_fd(),
            kind: self.kind,
        }
    }

    pub fn is_buffered(&self) -> bool {
        self.buffered
    }

    /// log2 of the logical block size.
    pub fn logical_bs_shift(&self) -> u8 {
        self.logical_bs_shift
    }

    /// Does the backing do discard?
    pub fn discards(&self) -> bool {
        self.discard
    }
}

/// SET_PARAMS of a file-backed target.
pub fn loop_params(
    size: u64,
    logical_bs_shift: u8,
    discard: bool,
    max_io_buf_bytes: u32,
) -> ublk_params {
    let lbs = 1u32 << logical_bs_shift;
    ublk_params {
        len: std::mem::size_of::<ublk_params>() as u32,
        types: UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD,
        basic: basic_params(
            size,
            logical_bs_shift,
            max_io_buf_bytes,
            UBLK_ATTR_VOLATILE_CACHE,
        ),
        discard: ublk_param_discard {
            discard_alignment: 0,
            discard_granularity: lbs.max(4096),
            max_discard_sectors: if discard { MAX_DISCARD_SECTORS } else { 0 },
            max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
            max_discard_segments: 1,
            reserved0: 0,
        },
    }
}

impl Target for LoopTarget {
    fn kind(&self) -> &'static str {
        "loop"
    }

    fn backing(&self) -> String {
        self.path.display().to_string()
    }

    fn dev_size(&self) -> u64 {
        self.size
    }

    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        loop_params(
            self.size,
            self.logical_bs_shift,
            self.discard,
            max_io_buf_bytes,
        )
    }

    fn queue_io(&self, io: &mut Io) -> Action {
        plan_loop(&self.backing_info(), &io.req, io.data, 0)
    }

    fn io_done(&self, io: &mut Io, op: &IoOp, res: i32) -> Action {
        loop_io_done(&self.backing_info(), io, op, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: Backing = Backing {
        fd: 5,
        kind: BackingKind::File,
    };
    const BLK: Backing = Backing {
        fd: 6,
        kind: BackingKind::BlockDevice,
    };

    fn req(op: u8, start: u64, nr: u32) -> Request {
        Request {
            q_id: 0,
            tag: 3,
            op,
            flags: 0,
            start_sector: start,
            nr_sectors: nr,
        }
    }

    #[test]
    fn read_write_copy_mode() {
        let b = DataRef::Buffer { addr: 0x7000_0000 };
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_READ, 16, 8), b, 0),
            Action::Submit(IoOp::Read {
                fd: 5,
                addr: 0x7000_0000,
                len: 4096,
                offset: 8192
            })
        );
        assert_eq!(
            plan_loop(&BLK, &req(UBLK_IO_OP_WRITE, 1, 1), b, 0),
            Action::Submit(IoOp::Write {
                fd: 6,
                addr: 0x7000_0000,
                len: 512,
                offset: 512
            })
        );
    }

    #[test]
    fn read_write_zero_copy() {
        let z = DataRef::ZeroCopy { char_fd: 11 };
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_READ, 16, 8), z, 0),
            Action::Submit(IoOp::Splice {
                fd_in: 11,
                off_in: ublk_splice_pos(0, 3, 0),
                fd_out: 5,
                off_out: 8192,
                len: 4096,
                flags: SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ,
            })
        );
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_WRITE, 16, 8), z, 1024),
            Action::Submit(IoOp::Splice {
                fd_in: 11,
                off_in: ublk_splice_pos(0, 3, 1024),
                fd_out: 5,
                off_out: 8192 + 1024,
                len: 3072,
                flags: SPLICE_F_DIRECT,
            })
        );
        // Zero-length data request: complete at once.
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_WRITE, 16, 0), z, 0),
            Action::Commit(0)
        );
    }

    #[test]
    fn flush_discard_write_zeroes_file() {
        let z = DataRef::ZeroCopy { char_fd: 11 };
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_FLUSH, 0, 0), z, 0),
            Action::Submit(IoOp::Fsync {
                fd: 5,
                datasync: true
            })
        );
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_DISCARD, 8, 2048), z, 0),
            Action::Submit(IoOp::Fallocate {
                fd: 5,
                mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                offset: 4096,
                len: 1 << 20,
            })
        );
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_WRITE_ZEROES, 8, 2048), z, 0),
            Action::Submit(IoOp::Fallocate {
                fd: 5,
                mode: FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                offset: 4096,
                len: 1 << 20,
            })
        );
    }

    #[test]
    fn discard_write_zeroes_blockdev() {
        let b = DataRef::Buffer { addr: 4096 };
        assert_eq!(
            plan_loop(&BLK, &req(UBLK_IO_OP_DISCARD, 8, 8), b, 0),
            Action::Submit(IoOp::RangeIoctl {
                fd: 6,
                request: BLKDISCARD,
                offset: 4096,
                len: 4096
            })
        );
        assert_eq!(
            plan_loop(&BLK, &req(UBLK_IO_OP_WRITE_ZEROES, 8, 8), b, 0),
            Action::Submit(IoOp::RangeIoctl {
                fd: 6,
                request: BLKZEROOUT,
                offset: 4096,
                len: 4096
            })
        );
        // Large discard: u64 lengths, no overflow.
        match plan_loop(&BLK, &req(UBLK_IO_OP_DISCARD, 0, u32::MAX), b, 0) {
            Action::Submit(IoOp::RangeIoctl { len, .. }) => {
                assert_eq!(len, u64::from(u32::MAX) << 9)
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn unknown_op() {
        let b = DataRef::Buffer { addr: 4096 };
        assert_eq!(
            plan_loop(&FILE, &req(UBLK_IO_OP_WRITE_SAME, 0, 1), b, 0),
            Action::Commit(-libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn completion_short_transfer_continues() {
        let z = DataRef::ZeroCopy { char_fd: 11 };
        let r = req(UBLK_IO_OP_WRITE, 16, 16); // 8 KiB at 8 KiB
        let mut io = Io::new(r, z);
        let Action::Submit(op) = plan_loop(&FILE, &r, z, 0) else {
            panic!("a WRITE submits")
        };
        let a = loop_io_done(&FILE, &mut io, &op, 4096);
        assert_eq!(io.done, 4096);
        assert_eq!(
            a,
            Action::Continue(IoOp::Splice {
                fd_in: 11,
                off_in: ublk_splice_pos(0, 3, 4096),
                fd_out: 5,
                off_out: 8192 + 4096,
                len: 4096,
                flags: SPLICE_F_DIRECT,
            })
        );
        let Action::Continue(rest) = a else {
            unreachable!()
        };
        assert_eq!(
            loop_io_done(&FILE, &mut io, &rest, 4096),
            Action::Commit(8192)
        );
        // Copy mode: the rest of a short read goes on in the buffer.
        let b = DataRef::Buffer { addr: 0x7000_0000 };
        let r = req(UBLK_IO_OP_READ, 0, 8);
        let mut io = Io::new(r, b);
        let Action::Submit(op) = plan_loop(&FILE, &r, b, 0) else {
            panic!("a READ submits")
        };
        assert_eq!(
            loop_io_done(&FILE, &mut io, &op, 512),
            Action::Continue(IoOp::Read {
                fd: 5,
                addr: 0x7000_0000 + 512,
                len: 3584,
                offset: 512
            })
        );
    }

    #[test]
    fn completion_retries() {
        let z = DataRef::ZeroCopy { char_fd: 11 };
        let r = req(UBLK_IO_OP_READ, 0, 8);
        let mut io = Io::new(r, z);
        let Action::Submit(op) = plan_loop(&FILE, &r, z, 0) else {
            panic!("a READ submits")
        };
        // -EAGAIN from a data op: the same op again.
        assert_eq!(
            loop_io_done(&FILE, &mut io, &op, -libc::EAGAIN),
            Action::Retry(op)
        );
        assert_eq!(io.done, 0);
        // WRITE_ZEROES without FALLOC_FL_ZERO_RANGE: a punched hole instead, once.
        let wz = req(UBLK_IO_OP_WRITE_ZEROES, 8, 2048);
        let mut io = Io::new(wz, z);
        let Action::Submit(zero) = plan_loop(&FILE, &wz, z, 0) else {
            panic!("WRITE_ZEROES submits")
        };
        let punch = IoOp::Fallocate {
            fd: 5,
            mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            offset: 4096,
            len: 1 << 20,
        };
        assert_eq!(
            loop_io_done(&FILE, &mut io, &zero, -libc::EOPNOTSUPP),
            Action::Retry(punch)
        );
        assert_eq!(
            loop_io_done(&FILE, &mut io, &punch, -libc::EOPNOTSUPP),
            Action::Commit(-libc::EOPNOTSUPP)
        );
        assert_eq!(loop_io_done(&FILE, &mut io, &punch, 0), Action::Commit(0));
        // A DISCARD that fails is not retried; -EAGAIN of a non-data op neither.
        let d = req(UBLK_IO_OP_DISCARD, 8, 8);
        let mut io = Io::new(d, z);
        let Action::Submit(disc) = plan_loop(&FILE, &d, z, 0) else {
            panic!("DISCARD submits")
        };
        assert_eq!(
            loop_io_done(&FILE, &mut io, &disc, -libc::EOPNOTSUPP),
            Action::Commit(-libc::EOPNOTSUPP)
        );
        assert_eq!(
            loop_io_done(&FILE, &mut io, &disc, -libc::EAGAIN),
            Action::Commit(-libc::EAGAIN)
        );
    }

    #[test]
    fn completion_commit_results() {
        let b = DataRef::Buffer { addr: 4096 };
        // A data request commits its byte count, however the last op ended.
        let r = req(UBLK_IO_OP_WRITE, 0, 8);
        let mut io = Io::new(r, b);
        let Action::Submit(op) = plan_loop(&BLK, &r, b, 0) else {
            panic!("a WRITE submits")
        };
        assert_eq!(loop_io_done(&BLK, &mut io, &op, 4096), Action::Commit(4096));
        // Errors as they are; nothing moved with bytes left: -EIO.
        assert_eq!(
            loop_io_done(&BLK, &mut Io::new(r, b), &op, -libc::ENOSPC),
            Action::Commit(-libc::ENOSPC)
        );
        assert_eq!(
            loop_io_done(&BLK, &mut Io::new(r, b), &op, 0),
            Action::Commit(-libc::EIO)
        );
        // FLUSH and the block ioctls commit 0 (whatever their result) or the error.
        let f = req(UBLK_IO_OP_FLUSH, 0, 0);
        let Action::Submit(fsync) = plan_loop(&FILE, &f, b, 0) else {
            panic!("FLUSH submits")
        };
        assert_eq!(
            loop_io_done(&FILE, &mut Io::new(f, b), &fsync, 0),
            Action::Commit(0)
        );
        assert_eq!(
            loop_io_done(&FILE, &mut Io::new(f, b), &fsync, -libc::EIO),
            Action::Commit(-libc::EIO)
        );
        let z = req(UBLK_IO_OP_WRITE_ZEROES, 8, 8);
        let Action::Submit(ioctl) = plan_loop(&BLK, &z, b, 0) else {
            panic!("WRITE_ZEROES submits")
        };
        assert_eq!(
            loop_io_done(&BLK, &mut Io::new(z, b), &ioctl, 0),
            Action::Commit(0)
        );
    }

    #[test]
    fn ioctl_numbers() {
        // _IO(0x12, n) and _IOR(0x12, 114, u64)
        assert_eq!(BLKDISCARD, (0x12 << 8) | 119);
        assert_eq!(BLKZEROOUT, (0x12 << 8) | 127);
        assert_eq!(BLKSSZGET, (0x12 << 8) | 104);
        assert_eq!(BLKGETSIZE64, (2 << 30) | (8 << 16) | (0x12 << 8) | 114);
        assert_eq!(FALLOC_FL_PUNCH_HOLE, libc::FALLOC_FL_PUNCH_HOLE);
        assert_eq!(FALLOC_FL_ZERO_RANGE, libc::FALLOC_FL_ZERO_RANGE);
        assert_eq!(FALLOC_FL_KEEP_SIZE, libc::FALLOC_FL_KEEP_SIZE);
    }

    #[test]
    fn backing_checks() {
        let dir = std::env::temp_dir().join(format!("ublk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let e = check_backing(&missing).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = check_backing(&empty).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = check_backing(&dir).unwrap_err().to_string();
        assert!(e.contains("neither"), "{e}");
        let ok = dir.join("ok");
        std::fs::write(&ok, vec![0u8; 8192]).unwrap();
        assert_eq!(check_backing(&ok).unwrap(), BackingKind::File);
        let t = LoopTarget::open(&ok, true).unwrap();
        assert_eq!(t.dev_size(), 8192);
        let p = t.params(1 << 19);
        assert_eq!(p.basic.dev_sectors, 16);
        assert_eq!(
            p.basic.attrs & UBLK_ATTR_VOLATILE_CACHE,
            UBLK_ATTR_VOLATILE_CACHE
        );
        let small = dir.join("small");
        std::fs::write(&small, vec![0u8; 100]).unwrap();
        let e = LoopTarget::open(&small, true).err().unwrap().to_string();
        assert!(e.contains("smaller than one"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
