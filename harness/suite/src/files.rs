//! File helpers: deterministic data, whole-file reads and writes, region checks,
//! checksums and dropping the page cache.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// `len` bytes of deterministic data for `seed`; different seeds give different data
/// at every 8-byte word, so a misplaced or foreign byte range never matches by chance.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    while out.len() < len {
        // xorshift64*: cheap and good enough to make every word distinct
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, 64 bits: a checksum that is the same on every run and every kernel.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Creates (or truncates) `path` with `data` and syncs it.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    Ok(())
}

/// The whole content of `path`.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Opens `path` read-only.
pub fn open_ro(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("opening {} O_RDONLY", path.display()))
}

/// Opens `path` write-only (must exist).
pub fn open_wo(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} O_WRONLY", path.display()))
}

/// Opens `path` read-write (must exist).
pub fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} O_RDWR", path.display()))
}

/// Opens `path` with extra open(2) flags added to `opts`.
pub fn open_with(path: &Path, opts: &mut OpenOptions, flags: i32) -> Result<File> {
    opts.custom_flags(flags)
        .open(path)
        .with_context(|| format!("opening {} (flags {flags:#x})", path.display()))
}

/// Reads `len` bytes at `off` (short at EOF).
pub fn read_at(f: &File, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f
            .read_at(&mut buf[done..], off + done as u64)
            .context("pread")?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Fails, naming the first differing offset (relative to `base`), when `got` != `want`.
pub fn check_bytes(what: &str, base: u64, got: &[u8], want: &[u8]) -> Result<()> {
    if got == want {
        return Ok(());
    }
    if got.len() != want.len() {
        bail!("{what}: {} bytes, expected {}", got.len(), want.len());
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
    bail!(
        "{what}: {differing} of {} bytes differ, the first at offset {} (got {:#04x}, expected {:#04x})",
        want.len(),
        base + i as u64,
        got[i],
        want[i]
    )
}

/// Writes back dirty data and drops the clean page cache, dentries and inodes
/// (`sync; echo 3 > /proc/sys/vm/drop_caches`), so the next read comes from the
/// filesystem rather than from pages a test may have disturbed.
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n")
        .context("writing 3 to /proc/sys/vm/drop_caches")
}

/// A private directory under the system's temporary directory, removed when dropped
/// (for tests that need no particular filesystem, nor root).
pub struct TempDir(PathBuf);

static NEXT_TEMP: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ublk-suite-{tag}.{}.{n}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        assert_eq!(pattern(1, 100), pattern(1, 100));
        assert_eq!(&pattern(1, 100)[..37], &pattern(1, 37)[..]);
        let (a, b) = (pattern(1, 4096), pattern(2, 4096));
        assert!(a.chunks(8).zip(b.chunks(8)).all(|(x, y)| x != y));
    }

    #[test]
    fn fnv64_known_values() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn check_bytes_names_first_difference() {
        let e = check_bytes("x", 100, &[1, 2, 9, 9], &[1, 2, 3, 4])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 of 4 bytes differ, the first at offset 102"),
            "{e}"
        );
    }
}
