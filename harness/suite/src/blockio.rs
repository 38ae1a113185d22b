//! Block I/O helpers for tests of block devices: opening with and without O_DIRECT,
//! whole reads and writes, sectors that describe themselves, a small RNG, and the
//! discard / zero-out ioctls.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::files::pattern;
pub use ublk::buf::AlignedBuf;

/// Opens `path` read-write with O_DIRECT.  Never creates it: a device path that does not
/// exist is an error, not a new regular file on devtmpfs.
pub fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))
}

/// Opens `path` read-write through the page cache (never creates it).
pub fn open_buffered(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Logical block size of a block device (sysfs), 512 if unknown.
pub fn logical_block_size(dev: &Path) -> u64 {
    let Some(name) = dev.file_name() else {
        return 512;
    };
    std::fs::read_to_string(format!(
        "/sys/block/{}/queue/logical_block_size",
        name.to_string_lossy()
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(512)
}

/// The queue attribute `name` of a block device (`/sys/block/NAME/queue/<name>`),
/// trimmed.
pub fn queue_attr(dev: &Path, name: &str) -> Result<String> {
    let disk = dev
        .file_name()
        .with_context(|| format!("{} has no device name", dev.display()))?;
    let p = Path::new("/sys/block").join(disk).join("queue").join(name);
    let v = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(v.trim().to_string())
}

/// pwrite of all of `buf` at `off`, or an error naming `what`.
pub fn full_write_at(f: &File, buf: &[u8], off: u64, what: &str) -> Result<()> {
    let n = f
        .write_at(buf, off)
        .with_context(|| format!("{what}: pwrite of {} bytes at {off}", buf.len()))?;
    if n != buf.len() {
        bail!("{what}: pwrite of {} bytes at {off} wrote {n}", buf.len());
    }
    Ok(())
}

/// pread of all of `buf` at `off`, or an error naming `what`.
pub fn full_read_at(f: &File, buf: &mut [u8], off: u64, what: &str) -> Result<()> {
    let len = buf.len();
    let n = f
        .read_at(buf, off)
        .with_context(|| format!("{what}: pread of {len} bytes at {off}"))?;
    if n != len {
        bail!("{what}: pread of {len} bytes at {off} read {n}");
    }
    Ok(())
}

/// `len` bytes at `off` of `path`, read with O_DIRECT when `direct` (what the device or
/// the disk holds, not some cache).
pub fn read_range(path: &Path, direct: bool, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = AlignedBuf::new(len);
    let mut oo = OpenOptions::new();
    oo.read(true);
    if direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    let f = oo
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    full_read_at(&f, buf.as_mut_slice(), off, &format!("{}", path.display()))?;
    Ok(buf.as_slice().to_vec())
}

/// Fills `buf` (a block written at device offset `off`) with sectors that carry their
/// own device offset and `seed` in the first 16 bytes, then seed-derived data.
pub fn fill_block(buf: &mut [u8], off: u64, seed: u64) {
    for (i, s) in buf.chunks_mut(512).enumerate() {
        fill_sector(s, off + 512 * i as u64, seed);
    }
}

fn fill_sector(s: &mut [u8], off: u64, seed: u64) {
    let body = pattern(seed ^ off.rotate_left(17), s.len());
    s.copy_from_slice(&body);
    s[..8].copy_from_slice(&off.to_le_bytes());
    s[8..16].copy_from_slice(&seed.to_le_bytes());
}

fn le64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Checks the sectors of `got` (read at `off`) against `seeds` (one per sector, 0 for
/// "never written": zeroes).
pub fn check_sectors(what: &str, got: &[u8], off: u64, seeds: &[u64]) -> Result<()> {
    let mut want = vec![0u8; 512];
    for (i, (s, seed)) in got.chunks(512).zip(seeds).enumerate() {
        let soff = off + 512 * i as u64;
        if *seed == 0 {
            want.fill(0);
        } else {
            fill_sector(&mut want, soff, *seed);
        }
        if s != &want[..] {
            bail!(
                "{what}: sector at offset {soff} is wrong: expected seed {seed:#x}, its header \
                 says offset {} seed {:#x}",
                le64(s),
                le64(&s[8..])
            );
        }
    }
    Ok(())
}

/// A tiny deterministic RNG (xorshift).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// <linux/fs.h>
pub const BLKDISCARD: libc::c_ulong = 0x1277;
pub const BLKZEROOUT: libc::c_ulong = 0x127f;

/// BLKDISCARD / BLKZEROOUT of `[off, off + len)`.
pub fn blk_range_ioctl(f: &File, req: libc::c_ulong, off: u64, len: u64) -> Result<()> {
    let range = [off, len];
    // SAFETY: the ioctl reads two u64s from a live array; the fd is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, range.as_ptr()) };
    if r != 0 {
        bail!(
            "ioctl {req:#x} [{off}, +{len}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_describe_themselves() {
        let mut b = vec![0u8; 2048];
        fill_block(&mut b, 4096, 9);
        check_sectors("ok", &b, 4096, &[9; 4]).unwrap();
        let e = check_sectors("moved", &b, 4608, &[9; 4]).unwrap_err();
        assert!(e.to_string().contains("is wrong"), "{e}");
        check_sectors("zeroes", &[0u8; 1024], 0, &[0, 0]).unwrap();
        assert!(check_sectors("not zero", &b[..1024], 4096, &[0, 0]).is_err());
    }

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        assert_eq!(a.next(), b.next());
        assert!(a.below(10) < 10);
    }
}
