//! READ fill of series v3 (M2): the driver completes a zero-copy READ with no more than
//! the prefix that reads filled, rounded down to whole logical blocks, whatever the
//! server commits; the block layer dispatches the rest again, from the sector after
//! those blocks.  A READ of which nothing (no whole block) was filled fails with EIO.
//!
//! The server is the ublk crate's queue loop with [`FillTarget`], a loop target on a
//! tmpfs file that fills a READ it is armed for with exactly N bytes (one splice of N
//! bytes, N odd) and commits its full length, or (at an odd-sized end of file) commits
//! every READ whole after a short splice.  Devices of 512-byte and of 4096-byte logical
//! blocks.  The reader's buffer is pre-filled with a marker; every byte it gets must be
//! the file's (every 8-byte word of the file's data is distinct: shifted data never
//! matches), and the target's log must show the remainder dispatched at the right sector.
//!
//! All need the series (UBLK_F_SPLICE_ZC).

mod zc_fixtures;

use anyhow::{bail, Context, Result};
use rstest::rstest;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use ublk::targets::{data_op, Action, DataRef, Hooks, Io, IoOp, LoopTarget, Request, Target, Wrap};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig};
use ublk_suite::blockio::{open_direct, AlignedBuf};
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::ublkdev::{fresh, no_devices, require_splice_zc};
use zc_fixtures::zc_test;

/// How the armed READ is filled.
#[derive(Default)]
struct FillState {
    /// (start sector, bytes): the READ starting there gets exactly that many bytes from
    /// one splice (none for 0) and is committed with its full length.
    armed: Option<(u64, u32)>,
    /// Every READ is committed with its full length once its one splice returned,
    /// however short (an odd-sized end of file).
    whole_after_short: bool,
    /// Every READ dispatched to the server: (start sector, sectors).
    reads: Vec<(u64, u32)>,
}

/// The hooks of a loop target on a buffered file with a logical block size of its own
/// and a size of its own (possibly past the file's end), that under-fills READs on
/// purpose.
struct Fill {
    lbs_shift: u8,
    size: u64,
    st: Mutex<FillState>,
}

type FillTarget = Wrap<Fill>;

impl Fill {
    fn arm(&self, start_sector: u64, bytes: u32) {
        self.st.lock().expect("fill state").armed = Some((start_sector, bytes));
    }

    fn reads(&self) -> Vec<(u64, u32)> {
        self.st.lock().expect("fill state").reads.clone()
    }

    /// The splice of the first `len` bytes of `req`.
    fn first_bytes(inner: &LoopTarget, req: &Request, data: DataRef, len: u32) -> Option<IoOp> {
        match data_op(req, data, inner.backing_info().fd, 0)? {
            IoOp::Splice {
                fd_in,
                off_in,
                fd_out,
                off_out,
                flags,
                ..
            } => Some(IoOp::Splice {
                fd_in,
                off_in,
                fd_out,
                off_out,
                len,
                flags,
            }),
            _ => None,
        }
    }
}

impl Hooks<LoopTarget> for Fill {
    fn kind(&self) -> &'static str {
        "fill"
    }
    fn dev_size(&self, _inner: &LoopTarget) -> u64 {
        self.size
    }
    fn params(&self, inner: &LoopTarget, max_io_buf_bytes: u32) -> ublk_params {
        let mut p = inner.params(max_io_buf_bytes);
        let s = self.lbs_shift;
        p.types = UBLK_PARAM_TYPE_BASIC;
        p.basic.logical_bs_shift = s;
        p.basic.physical_bs_shift = s.max(12);
        p.basic.io_min_shift = s;
        p.basic.io_opt_shift = s.max(12);
        p.basic.dev_sectors = self.size >> 9;
        p
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        let req = io.req;
        if req.op != UBLK_IO_OP_READ {
            return inner.queue_io(io);
        }
        let total = req.bytes() as u32;
        let mut st = self.st.lock().expect("fill state");
        st.reads.push((req.start_sector, req.nr_sectors));
        let fill = match st.armed {
            Some((s, n)) if s == req.start_sector => {
                st.armed = None;
                Some(n)
            }
            _ if st.whole_after_short => Some(total),
            _ => None,
        };
        drop(st);
        match fill {
            None => inner.queue_io(io),
            Some(0) => Action::Commit(total as i32),
            Some(n) => match Self::first_bytes(inner, &req, io.data, n.min(total)) {
                Some(op) => {
                    // one splice, then the full length whatever it moved
                    io.result = Some(total as i32);
                    Action::Submit(op)
                }
                None => Action::Commit(-libc::EIO),
            },
        }
    }
    fn io_done(&self, inner: &LoopTarget, io: &mut Io, op: &IoOp, res: i32) -> Action {
        match io.result {
            Some(r) if res >= 0 => Action::Commit(r),
            _ => inner.io_done(io, op, res),
        }
    }
}

/// A zero-copy device of logical blocks of `1 << lbs_shift` bytes over a tmpfs file of
/// `file_size` bytes holding `data`, `dev_size` bytes long.
struct FillDev {
    dev: Option<Device>,
    target: Arc<FillTarget>,
    data: Vec<u8>,
    _dir: ScratchDir,
}

impl FillDev {
    fn start(lbs_shift: u8, file_size: usize, dev_size: u64) -> Result<FillDev> {
        fresh()?;
        require_splice_zc()?;
        let dir = ScratchDir::new(Fs::Tmpfs)?;
        let path = dir.join("fill.img");
        let data = pattern(0xf111 + u64::from(lbs_shift), file_size);
        ublk_suite::files::write_file(&path, &data)?;
        let target = Arc::new(Wrap::new(
            LoopTarget::open(&path, true)?,
            Fill {
                lbs_shift,
                size: dev_size,
                st: Mutex::new(FillState::default()),
            },
        ));
        let mut cfg = DeviceConfig::new();
        cfg.zero_copy = true;
        cfg.depth = 4;
        let dev = Device::start_with(&cfg, target.clone())?;
        let lbs = ublk_suite::blockio::logical_block_size(&dev.block_path());
        if lbs != 1 << lbs_shift {
            bail!(
                "the device has {lbs}-byte logical blocks, {} asked for",
                1u32 << lbs_shift
            );
        }
        Ok(FillDev {
            dev: Some(dev),
            target,
            data,
            _dir: dir,
        })
    }

    /// One O_DIRECT READ of `len` bytes at `off` into a buffer of marker bytes.
    fn read(&self, off: u64, len: usize) -> (std::io::Result<usize>, Vec<u8>) {
        let dev = self.dev.as_ref().expect("device");
        let mut buf = AlignedBuf::filled(len, 0xa5);
        let r = open_direct(&dev.block_path())
            .map_err(std::io::Error::other)
            .and_then(|f| f.read_at(buf.as_mut_slice(), off));
        (r, buf.as_slice().to_vec())
    }

    /// What the file holds at `[off, off + len)`, zeroes past its end.
    fn want(&self, off: u64, len: usize) -> Vec<u8> {
        let mut w = vec![0u8; len];
        let (a, end) = (off as usize, (off as usize + len).min(self.data.len()));
        if a < end {
            w[..end - a].copy_from_slice(&self.data[a..end]);
        }
        w
    }

    fn finish(mut self) -> Result<()> {
        match self.dev.take() {
            Some(d) => d.stop_and_delete(),
            None => Ok(()),
        }?;
        no_devices()
    }
}

const OFF: u64 = 1 << 20;
const LEN: usize = 64 << 10;

/// How many bytes of the armed 64 KiB READ the target fills (all odd).
#[derive(Clone, Copy, Debug)]
enum OddFill {
    /// One logical block and one byte.
    BlockAndAByte,
    /// Three logical blocks and 1001 bytes.
    ThreeBlocksAnd1001,
    /// All but the last byte.
    AllButOneByte,
}

impl OddFill {
    fn bytes(self, lbs: u32) -> u32 {
        match self {
            OddFill::BlockAndAByte => lbs + 1,
            OddFill::ThreeBlocksAnd1001 => 3 * lbs + 1001,
            OddFill::AllButOneByte => LEN as u32 - 1,
        }
    }
}

/// A READ filled with an odd number of bytes and committed whole: the reader gets the
/// file's data, every byte of it (never the marker, never shifted), and the target saw
/// the remainder as a READ of its own starting at the first block not wholly filled.
#[rstest]
fn odd_fill_completes_whole_blocks_and_requeues_the_rest(
    #[values(9, 12)] lbs_shift: u8,
    #[values(
        OddFill::BlockAndAByte,
        OddFill::ThreeBlocksAnd1001,
        OddFill::AllButOneByte
    )]
    fill: OddFill,
) {
    zc_test("odd_fill", 120, move || {
        let d = FillDev::start(lbs_shift, 4 << 20, 4 << 20)?;
        let lbs = 1u32 << lbs_shift;
        let n = fill.bytes(lbs);
        let start = OFF >> 9;
        d.target.arm(start, n);
        let (r, got) = d.read(OFF, LEN);
        let reads = d.target.reads();
        let whole = n / lbs * lbs;
        println!(
            "{lbs}-byte blocks, {n} of {LEN} bytes filled ({whole} in whole blocks), \
             committed {LEN}: READ {r:?}; READs the server saw: {reads:?}"
        );
        let n_read = r.context("the O_DIRECT READ of the under-filled request")?;
        let want = d.want(OFF, LEN);
        check_bytes(
            "the under-filled READ",
            OFF,
            &got[..n_read],
            &want[..n_read],
        )?;
        if n_read != LEN {
            bail!("the READ returned {n_read} of {LEN} bytes");
        }
        let rest = (start + u64::from(whole >> 9), (LEN as u32 - whole) >> 9);
        let ours: Vec<_> = reads
            .iter()
            .filter(|(s, _)| (start..start + (LEN as u64 >> 9)).contains(s))
            .collect();
        if ours.first() != Some(&&(start, LEN as u32 >> 9)) || !ours.contains(&&rest) {
            bail!(
                "the remainder of the READ was not dispatched as {} sectors from sector {} \
                 (the first block not wholly filled): READs of the range {ours:?}",
                rest.1,
                rest.0
            );
        }
        d.finish()
    })
}

/// How little the armed READ gets.
#[derive(Clone, Copy, Debug)]
enum NoFill {
    /// No splice at all.
    Nothing,
    /// One byte less than a logical block (no whole block).
    LessThanABlock,
}

/// A READ the server commits as a full success with nothing (no whole block) filled
/// fails with EIO, at once: the server sees it once, nothing is dispatched again, and
/// the reader never sees the marker as data.
#[rstest]
fn read_committed_with_nothing_filled_is_eio(
    #[values(9, 12)] lbs_shift: u8,
    #[values(NoFill::Nothing, NoFill::LessThanABlock)] fill: NoFill,
) {
    zc_test("nothing_filled", 120, move || {
        let d = FillDev::start(lbs_shift, 4 << 20, 4 << 20)?;
        let lbs = 1u32 << lbs_shift;
        let n = match fill {
            NoFill::Nothing => 0,
            NoFill::LessThanABlock => lbs - 1,
        };
        let start = OFF >> 9;
        d.target.arm(start, n);
        let (r, _) = d.read(OFF, LEN);
        let reads = d.target.reads();
        println!(
            "{lbs}-byte blocks, {n} bytes filled, committed {LEN}: READ {r:?}; READs {reads:?}"
        );
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            other => bail!(
                "a READ committed as a full success with {n} bytes filled (no whole \
                 {lbs}-byte block) returned {other:?}, expected EIO"
            ),
        }
        let again = reads
            .iter()
            .filter(|(s, _)| (start..start + (LEN as u64 >> 9)).contains(s))
            .count();
        if again != 1 {
            bail!("the server saw {again} READs of the range (1 expected): {reads:?}");
        }
        // the device still serves READs of that range
        let (r, got) = d.read(OFF, LEN);
        let n_read = r.context("the READ after the EIO")?;
        check_bytes(
            "the READ after the EIO",
            OFF,
            &got[..n_read],
            &d.want(OFF, LEN),
        )?;
        d.finish()
    })
}

/// An odd-sized file (64 KiB + 1000 bytes) exported as a device that ends at the next
/// block boundary, by a server that commits every READ whole even when its splice came
/// back short at the end of the file: the READ of the last 8 KiB completes the whole
/// blocks that were filled and sends the rest again, which is filled by less than a
/// block and fails: the reader gets EIO (or a correct prefix), never the marker nor
/// shifted data.  The blocks before the end of the file read back correctly.
#[rstest]
fn short_fill_at_odd_end_of_file(#[values(9, 12)] lbs_shift: u8) {
    zc_test("odd_end_of_file", 120, move || {
        let lbs = 1u64 << lbs_shift;
        let file = (64usize << 10) + 1000;
        let dev_size = (file as u64).div_ceil(lbs) * lbs;
        let d = FillDev::start(lbs_shift, file, dev_size)?;
        d.target.st.lock().expect("fill state").whole_after_short = true;
        let off = dev_size - (8 << 10);
        let (r, got) = d.read(off, 8 << 10);
        let reads = d.target.reads();
        let filled = file as u64 - off;
        let rest = (off + filled / lbs * lbs) >> 9;
        println!(
            "{lbs}-byte blocks, device {dev_size} bytes over a {file}-byte file: READ of 8 KiB \
             at {off} ({filled} bytes in the file): {r:?}; READs {reads:?}"
        );
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            Ok(n) => {
                check_bytes(
                    "the READ at the end of the file",
                    off,
                    &got[..n],
                    &d.want(off, n),
                )?;
                if n as u64 > filled / lbs * lbs {
                    bail!("the READ returned {n} bytes, more than the whole blocks filled");
                }
            }
            Err(e) => bail!("the READ at the end of the file failed with {e}, expected EIO"),
        }
        let first = reads.iter().position(|r| r.0 == off >> 9);
        let again: Vec<_> = reads.iter().filter(|r| r.0 == rest).collect();
        if first.is_none() || again.len() != 1 {
            bail!(
                "expected the READ from sector {} and its remainder from sector {rest} once \
                 (after the whole blocks filled): READs {reads:?}",
                off >> 9
            );
        }
        // the whole blocks before the end of the file, on their own
        let whole = filled / lbs * lbs;
        let (r, got) = d.read(off, whole as usize);
        let n = r.context("the READ of the whole blocks before the end of the file")?;
        if n as u64 != whole {
            bail!("the READ of {whole} bytes returned {n}");
        }
        check_bytes(
            "the whole blocks before the end of the file",
            off,
            &got,
            &d.want(off, n),
        )?;
        let (r, _) = d.read(rest << 9, lbs as usize);
        if r.as_ref().map_err(|e| e.raw_os_error()) != Err(Some(libc::EIO)) {
            bail!(
                "the READ of the last block (less than a block in the file): {r:?}, expected EIO"
            );
        }
        d.finish()
    })
}
