//! What tests/ublk_copy.rs and tests/ublk_zc.rs share: the same scenarios, with the
//! device's mode (copy or UBLK_F_SPLICE_ZC) as the only difference, plus a minimal
//! hand-written queue loop that can hold a request in flight (`HeldServer`) for the
//! ->splice_read() errno cases, and helpers to run the `ublk` CLI.
#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig, TargetConfig};
use ublk_suite::check::must;
use ublk_suite::files::{drop_caches, fnv64, pattern};
use ublk_suite::scratch::{self, find_tool, Fs, ScratchDir};

/// Progress on stderr, not captured by libtest: if a test hangs, the log shows how far
/// it got.
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "  .. {msg}");
}

// ---------------------------------------------------------------------------------
// Modes, backings, devices
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Copy,
    Zc,
}

/// Fails, naming the feature, unless ADD_DEV grants UBLK_F_SPLICE_ZC.
pub fn require_splice_zc() -> Result<()> {
    let granted = ublk::admin::features().context("probing the ublk features (ADD_DEV)")?;
    if granted & UBLK_F_SPLICE_ZC == 0 {
        bail!(
            "kernel lacks UBLK_F_SPLICE_ZC (ADD_DEV did not grant it: granted {granted:#x} = {})",
            flag_names(granted)
        );
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A file on ext4 on the scratch virtio disk, served with O_DIRECT.
    Direct,
    /// A file on tmpfs, served with buffered I/O.
    Buffered,
    /// The null target (no backing; data is not kept).
    Null,
}

/// A backing file, removed when dropped.
pub struct BackingFile {
    pub path: PathBuf,
    _dir: Option<ScratchDir>,
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// A zero-filled (sparse) backing file of `size` bytes for `b` (None for Null).
pub fn backing_file(b: Backing, size: u64) -> Result<Option<BackingFile>> {
    let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
    let (path, dir) = match b {
        Backing::Null => return Ok(None),
        Backing::Direct => (
            scratch::disk_mount_point()?.join(format!("backing{}-{n}.img", std::process::id())),
            None,
        ),
        Backing::Buffered => {
            let d = ScratchDir::new(Fs::Tmpfs)?;
            (d.join(&format!("backing{n}.img")), Some(d))
        }
    };
    let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", path.display()))?;
    Ok(Some(BackingFile { path, _dir: dir }))
}

/// Starts a device of `mode` on `backing` (None: a null target of `size`).
pub fn start(
    mode: Mode,
    backing: Option<&BackingFile>,
    b: Backing,
    size: u64,
    queues: u16,
    depth: u16,
) -> Result<Device> {
    if mode == Mode::Zc {
        require_splice_zc()?;
    }
    let target = match backing {
        Some(f) => TargetConfig::Loop {
            path: f.path.clone(),
            buffered: b == Backing::Buffered,
        },
        None => TargetConfig::Null { size },
    };
    let mut cfg = DeviceConfig::new(target);
    cfg.zero_copy = mode == Mode::Zc;
    cfg.nr_queues = queues;
    cfg.depth = depth;
    let dev = Device::start(&cfg).with_context(|| format!("starting {cfg:?}"))?;
    let granted = dev.flags() & UBLK_F_SPLICE_ZC != 0;
    if granted != (mode == Mode::Zc) {
        bail!(
            "device {} in {mode:?} mode has flags {:#x} ({})",
            dev.id(),
            dev.flags(),
            flag_names(dev.flags())
        );
    }
    Ok(dev)
}

/// Logical block size of a block device (sysfs).
pub fn logical_block_size(dev: &Path) -> u64 {
    let name = dev.file_name().unwrap().to_string_lossy().to_string();
    std::fs::read_to_string(format!("/sys/block/{name}/queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512)
}

pub fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))
}

pub fn open_buffered(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

// ---------------------------------------------------------------------------------
// Aligned buffers and self-describing blocks
// ---------------------------------------------------------------------------------

/// A 4096-aligned buffer for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, len }
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: we own len bytes at ptr.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len.max(4096), 4096).unwrap();
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
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

/// Checks the sectors of `got` (read at `off`) against `seeds` (one per sector, 0 for
/// "never written": zeros).
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
            let hdr_off = u64::from_le_bytes(s[..8].try_into().unwrap());
            let hdr_seed = u64::from_le_bytes(s[8..16].try_into().unwrap());
            bail!(
                "{what}: sector at offset {soff} is wrong: expected seed {seed:#x}, its header \
                 says offset {hdr_off} seed {hdr_seed:#x}"
            );
        }
    }
    Ok(())
}

/// A tiny deterministic RNG.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
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

fn full_write_at(f: &File, buf: &[u8], off: u64, what: &str) -> Result<()> {
    let n = f
        .write_at(buf, off)
        .with_context(|| format!("{what}: pwrite of {} bytes at {off}", buf.len()))?;
    if n != buf.len() {
        bail!("{what}: pwrite of {} bytes at {off} wrote {n}", buf.len());
    }
    Ok(())
}

fn full_read_at(f: &File, buf: &mut [u8], off: u64, what: &str) -> Result<()> {
    let len = buf.len();
    let n = f
        .read_at(buf, off)
        .with_context(|| format!("{what}: pread of {len} bytes at {off}"))?;
    if n != len {
        bail!("{what}: pread of {len} bytes at {off} read {n}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Scenario: random I/O from concurrent submitters, verified through the device and in
// the backing file
// ---------------------------------------------------------------------------------

pub const RANDOM_IO_SIZE: u64 = 32 << 20;
const MAX_IO: u64 = 1 << 20;

/// What one submitter wrote: a seed per sector of its region.
struct Region {
    start: u64,
    seeds: Vec<u64>,
}

/// Writes `ops` random blocks (512 B .. 1 MiB, sector aligned) in `[start, start+len)`
/// with O_DIRECT or buffered I/O, then reads its region back and checks it.
/// Where a submitter's writes go within its region.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    Random,
    /// One after another, wrapping at the end of the region.
    Sequential,
}

#[allow(clippy::too_many_arguments)]
fn submitter(
    dev: PathBuf,
    direct: bool,
    pattern: Pattern,
    start: u64,
    len: u64,
    ops: usize,
    seed: u64,
    lbs: u64,
) -> Result<Region> {
    let f = if direct {
        open_direct(&dev)?
    } else {
        open_buffered(&dev)?
    };
    let what = format!(
        "{} {pattern:?} submitter on {}",
        if direct { "O_DIRECT" } else { "buffered" },
        dev.display()
    );
    let mut cursor = start;
    let mut rng = Rng::new(seed);
    let mut seeds = vec![0u64; (len / 512) as usize];
    let mut buf = AlignedBuf::new(MAX_IO as usize);
    for k in 0..ops {
        let units = MAX_IO / lbs;
        let size = (1 + rng.below(units)) * lbs;
        let off = match pattern {
            Pattern::Random => start + rng.below((len - size) / lbs + 1) * lbs,
            Pattern::Sequential => {
                if cursor + size > start + len {
                    cursor = start;
                }
                cursor += size;
                cursor - size
            }
        };
        let s = (seed << 20) | (k as u64 + 1);
        let b = &mut buf.as_mut_slice()[..size as usize];
        fill_block(b, off, s);
        full_write_at(&f, b, off, &what)?;
        let first = ((off - start) / 512) as usize;
        seeds[first..first + (size / 512) as usize].fill(s);
    }
    if !direct {
        f.sync_all().with_context(|| format!("{what}: fsync"))?;
    }
    // Read back the whole region through the device, bypassing the page cache.
    let rf = open_direct(&dev)?;
    let mut off = start;
    while off < start + len {
        let n = MAX_IO.min(start + len - off);
        let b = &mut buf.as_mut_slice()[..n as usize];
        full_read_at(&rf, b, off, &what)?;
        let first = ((off - start) / 512) as usize;
        check_sectors(
            &format!("{what}: read back through the device"),
            b,
            off,
            &seeds[first..first + (n / 512) as usize],
        )?;
        off += n;
    }
    Ok(Region { start, seeds })
}

/// Checks every region in `path` (a device or the backing file), read with plain reads.
fn check_regions(what: &str, path: &Path, regions: &[Region], direct: bool) -> Result<()> {
    let f = if direct {
        open_direct(path)?
    } else {
        File::open(path).with_context(|| format!("opening {}", path.display()))?
    };
    let mut buf = AlignedBuf::new(MAX_IO as usize);
    for r in regions {
        let len = r.seeds.len() as u64 * 512;
        let mut off = r.start;
        while off < r.start + len {
            let n = MAX_IO.min(r.start + len - off);
            let b = &mut buf.as_mut_slice()[..n as usize];
            full_read_at(&f, b, off, what)?;
            let first = ((off - r.start) / 512) as usize;
            check_sectors(what, b, off, &r.seeds[first..first + (n / 512) as usize])?;
            off += n;
        }
    }
    Ok(())
}

/// The random I/O scenario. Null target: the I/O must succeed (the data is not kept).
pub fn random_io(mode: Mode, b: Backing, queues: u16, depth: u16) -> Result<()> {
    let _wd = Watchdog::new("random_io", 60);
    let bf = backing_file(b, RANDOM_IO_SIZE)?;
    let dev = start(mode, bf.as_ref(), b, RANDOM_IO_SIZE, queues, depth)?;
    let path = dev.block_path();
    let lbs = logical_block_size(&path);
    // Four concurrent submitters, each on its own region: O_DIRECT and buffered, with
    // random offsets and with sequential ones.
    let nthreads = 4u64;
    let region = RANDOM_IO_SIZE / nthreads;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..nthreads)
        .map(|i| {
            let p = path.clone();
            let pattern = if i < 2 {
                Pattern::Random
            } else {
                Pattern::Sequential
            };
            std::thread::spawn(move || {
                submitter(
                    p,
                    i % 2 == 0,
                    pattern,
                    i * region,
                    region,
                    12,
                    0x5eed + i,
                    lbs,
                )
            })
        })
        .collect();
    let mut regions = Vec::new();
    let mut errs = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => regions.push(r),
            Ok(Err(e)) if b == Backing::Null => {
                // the null target keeps no data: only the data checks may fail
                let s = format!("{e:#}");
                if !s.contains("is wrong") {
                    errs.push(s);
                }
            }
            Ok(Err(e)) => errs.push(format!("{e:#}")),
            Err(_) => errs.push("a submitter panicked".into()),
        }
    }
    if !errs.is_empty() {
        bail!("{}", errs.join("; "));
    }
    let st = dev.stats();
    println!(
        "random I/O {mode:?} {b:?} q={queues} d={depth}: {:.1}s, {st:?}",
        t0.elapsed().as_secs_f64()
    );
    if st.errors != 0 {
        bail!("the server committed {} failed requests", st.errors);
    }
    if mode == Mode::Zc && b != Backing::Null && st.splices == 0 {
        bail!("zero-copy device did no splice: {st:?}");
    }
    let Some(bf) = bf else {
        return dev.stop_and_delete();
    };
    // Through the device once more, all regions together, after a flush.
    File::open(&path)?
        .sync_all()
        .context("fsync of the device")?;
    check_regions("whole device read back", &path, &regions, true)?;
    dev.stop_and_delete()?;
    // ... and in the backing file itself, the device gone.
    drop_caches()?;
    check_regions(
        &format!("backing file {}", bf.path.display()),
        &bf.path,
        &regions,
        false,
    )
}

// ---------------------------------------------------------------------------------
// Scenario: flush, discard, write zeroes
// ---------------------------------------------------------------------------------

const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;

fn blk_range_ioctl(f: &File, req: libc::c_ulong, off: u64, len: u64) -> Result<()> {
    let range = [off, len];
    // SAFETY: the ioctl reads two u64s.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, range.as_ptr()) };
    if r != 0 {
        bail!(
            "ioctl {req:#x} [{off}, +{len}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Reads `len` bytes at `off` of the backing file (O_DIRECT for Direct: what is on the
/// disk, not in some cache).
fn read_backing(b: Backing, path: &Path, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = AlignedBuf::new(len);
    let f = if b == Backing::Direct {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?
    } else {
        File::open(path)?
    };
    full_read_at(&f, buf.as_mut_slice(), off, "backing read")?;
    Ok(buf.as_slice().to_vec())
}

fn read_dev_direct(path: &Path, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = AlignedBuf::new(len);
    full_read_at(&open_direct(path)?, buf.as_mut_slice(), off, "device read")?;
    Ok(buf.as_slice().to_vec())
}

pub fn flush_discard_zeroes(mode: Mode, b: Backing, queues: u16, depth: u16) -> Result<()> {
    let _wd = Watchdog::new("flush_discard_zeroes", 60);
    let size = 16u64 << 20;
    let bf = backing_file(b, size)?.expect("a loop backing");
    let dev = start(mode, Some(&bf), b, size, queues, depth)?;
    let path = dev.block_path();
    let data = pattern(0xf1u64, 4 << 20);
    let f = open_buffered(&path)?;
    full_write_at(&f, &data, 0, "buffered write")?;
    let flushes0 = dev.stats().flushes;
    note("fsync");
    f.sync_all().context("fsync of /dev/ublkbN")?;
    let flushes = dev.stats().flushes - flushes0;
    if flushes == 0 {
        bail!("fsync of the device sent no FLUSH to the server");
    }
    // The device is live: the data must be in the backing file now.
    let got = read_backing(b, &bf.path, 0, data.len())?;
    ublk_suite::files::check_bytes("backing file after fsync of the device", 0, &got, &data)?;

    let mib = 1u64 << 20;
    note("BLKDISCARD");
    blk_range_ioctl(&f, BLKDISCARD, mib, mib).context("BLKDISCARD")?;
    note("BLKZEROOUT");
    blk_range_ioctl(&f, BLKZEROOUT, 2 * mib, mib).context("BLKZEROOUT")?;
    f.sync_all()?;
    let st = dev.stats();
    if st.discards == 0 || st.write_zeroes == 0 {
        bail!("BLKDISCARD/BLKZEROOUT did not reach the server as DISCARD/WRITE_ZEROES: {st:?}");
    }
    let zeros = vec![0u8; mib as usize];
    for (what, off) in [("discarded", mib), ("zeroed", 2 * mib)] {
        let d = read_dev_direct(&path, off, mib as usize)?;
        ublk_suite::files::check_bytes(&format!("{what} range via the device"), off, &d, &zeros)?;
        let d = read_backing(b, &bf.path, off, mib as usize)?;
        ublk_suite::files::check_bytes(&format!("{what} range in the backing"), off, &d, &zeros)?;
    }
    // the neighbours are untouched
    let d = read_dev_direct(&path, 0, mib as usize)?;
    ublk_suite::files::check_bytes("first MiB", 0, &d, &data[..mib as usize])?;
    let d = read_dev_direct(&path, 3 * mib, mib as usize)?;
    ublk_suite::files::check_bytes("fourth MiB", 3 * mib, &d, &data[3 * mib as usize..])?;
    println!("flush/discard/zeroes {mode:?} {b:?}: {:?}", dev.stats());
    drop(f);
    note("stop_and_delete");
    dev.stop_and_delete()
}

// ---------------------------------------------------------------------------------
// Scenario: a filesystem on the device
// ---------------------------------------------------------------------------------

pub fn run_tool(tool: &str, args: &[&str]) -> Result<std::process::Output> {
    let exe = find_tool(tool).ok_or_else(|| anyhow!("{tool} not found"))?;
    Command::new(&exe)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))
}

fn tool_ok(tool: &str, args: &[&str]) -> Result<String> {
    let out = run_tool(tool, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            text.trim()
        );
    }
    Ok(text)
}

fn mount_ext4(dev: &Path, at: &Path) -> Result<()> {
    nix::mount::mount(
        Some(dev),
        at,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting {} on {}", dev.display(), at.display()))
}

fn umount(at: &Path) -> Result<()> {
    nix::mount::umount(at).with_context(|| format!("umount {}", at.display()))
}

pub fn filesystem(mode: Mode, b: Backing, queues: u16, depth: u16) -> Result<()> {
    let _wd = Watchdog::new("filesystem", 60);
    let size = 64u64 << 20;
    let bf = backing_file(b, size)?.expect("a loop backing");
    let dev = start(mode, Some(&bf), b, size, queues, depth)?;
    let path = dev.block_path();
    let p = path.to_str().unwrap();
    tool_ok("mkfs.ext4", &["-q", "-F", p])?;
    let mnt = ScratchDir::new(Fs::Tmpfs)?;
    let at = mnt.join("mnt");
    std::fs::create_dir(&at)?;
    mount_ext4(&path, &at)?;
    let mut files = Vec::new();
    let mut rng = Rng::new(77);
    for d in 0..4 {
        let dir = at.join(format!("d{d}"));
        std::fs::create_dir(&dir)?;
        for i in 0..5 {
            let len = 1 + rng.below(2 << 20) as usize;
            let data = pattern(d * 100 + i, len);
            let fp = dir.join(format!("f{i}"));
            std::fs::write(&fp, &data).with_context(|| format!("writing {}", fp.display()))?;
            files.push((format!("d{d}/f{i}"), len, fnv64(&data)));
        }
    }
    umount(&at)?;
    drop_caches()?;
    let fsck = tool_ok("e2fsck", &["-fn", p]).context("e2fsck -fn must find the fs clean")?;
    println!("e2fsck: {}", fsck.trim().lines().last().unwrap_or(""));
    mount_ext4(&path, &at)?;
    let r = (|| {
        for (name, len, sum) in &files {
            let data = std::fs::read(at.join(name))?;
            if data.len() != *len || fnv64(&data) != *sum {
                bail!(
                    "{name}: {} bytes, checksum {:#x}; expected {len} bytes, {sum:#x}",
                    data.len(),
                    fnv64(&data)
                );
            }
        }
        Ok(())
    })();
    umount(&at)?;
    r?;
    println!(
        "filesystem {mode:?} {b:?}: {} files verified, {:?}",
        files.len(),
        dev.stats()
    );
    dev.stop_and_delete()
}

// ---------------------------------------------------------------------------------
// Scenario: fio --verify=crc32c
// ---------------------------------------------------------------------------------

/// The `"io_bytes"` of the `section` ("read"/"write") of the first job in fio's JSON.
pub fn fio_io_bytes(json: &str, section: &str) -> Option<u64> {
    let jobs = json.find("\"jobs\"")?;
    let s = jobs + json[jobs..].find(&format!("\"{section}\" : {{"))?;
    let k = s + json[s..].find("\"io_bytes\" : ")? + "\"io_bytes\" : ".len();
    let end = json[k..].find(|c: char| !c.is_ascii_digit())?;
    json[k..k + end].parse().ok()
}

pub fn fio_verify(mode: Mode, b: Backing, queues: u16, depth: u16) -> Result<()> {
    let _wd = Watchdog::new("fio_verify", 60);
    let size = 64u64 << 20;
    let bf = backing_file(b, size)?;
    let dev = start(mode, bf.as_ref(), b, size, queues, depth)?;
    let fio = find_tool("fio").ok_or_else(|| anyhow!("fio is not installed"))?;
    let io = 16u64 << 20;
    // the null target keeps no data: only the byte counts can be checked there
    let verify: &[&str] = if b == Backing::Null {
        &["--verify=0"]
    } else {
        &["--verify=crc32c", "--do_verify=1", "--verify_fatal=1"]
    };
    let out = Command::new(fio)
        .args(verify)
        .args([
            "--name=ublkverify",
            &format!("--filename={}", dev.block_path().display()),
            "--ioengine=libaio",
            "--iodepth=16",
            "--direct=1",
            "--rw=randwrite",
            "--bsrange=4k-256k",
            &format!("--size={io}"),
            "--output-format=json",
        ])
        .output()
        .context("running fio")?;
    let json = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "fio failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            json
        );
    }
    let w = fio_io_bytes(&json, "write").ok_or_else(|| anyhow!("no write io_bytes in {json}"))?;
    let r = fio_io_bytes(&json, "read").ok_or_else(|| anyhow!("no read io_bytes in {json}"))?;
    println!(
        "fio {mode:?} {b:?}: wrote {w} bytes, verified {r} bytes; {:?}",
        dev.stats()
    );
    let want_r = if b == Backing::Null { 0 } else { io };
    if w != io || r != want_r {
        bail!("fio moved write {w} / read(verify) {r} bytes, asked for {io} each");
    }
    dev.stop_and_delete()
}

// ---------------------------------------------------------------------------------
// Server buffers: anonymous mappings the queue threads make
// ---------------------------------------------------------------------------------

/// Sizes of this process's anonymous writable mappings.
pub fn anon_mappings() -> Vec<(String, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let rest: Vec<_> = f.collect();
            if !perms.starts_with("rw") || rest.len() > 3 {
                return None; // file-backed or named ([heap], [stack])
            }
            let (a, b) = range.split_once('-')?;
            let len = u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?;
            Some((range.to_string(), len))
        })
        .collect()
}

/// The queue threads of a device map one data buffer of depth x max_io_buf_bytes each in
/// copy mode: count the new anonymous mappings of exactly that size.
pub fn server_buffers(mode: Mode) -> Result<(usize, u64)> {
    let (queues, depth) = (2u16, 64u16);
    let before = anon_mappings();
    let dev = start(mode, None, Backing::Null, 64 << 20, queues, depth)?;
    let per_queue = u64::from(depth) * u64::from(dev.info().max_io_buf_bytes);
    let after = anon_mappings();
    // Adjacent anonymous mappings (thread stacks, buffers) merge into one VMA, so count
    // bytes: what the device's start added to this process's anonymous writable memory,
    // in units of one queue's buffer (queue thread stacks add a few MiB, far less).
    let total = |v: &Vec<(String, u64)>| v.iter().map(|m| m.1).sum::<u64>();
    let added = total(&after).saturating_sub(total(&before));
    let new = (added / per_queue) as usize;
    println!(
        "{mode:?}: {added} bytes of new anonymous mappings = {new} x {per_queue} (depth {depth} x max_io_buf_bytes {}) for {queues} queues",
        dev.info().max_io_buf_bytes
    );
    // the device must work as well
    let mut buf = AlignedBuf::new(1 << 20);
    fill_block(buf.as_mut_slice(), 0, 9);
    let f = open_direct(&dev.block_path())?;
    full_write_at(&f, buf.as_slice(), 0, "write")?;
    full_read_at(&f, buf.as_mut_slice(), 0, "read")?;
    drop(f);
    dev.stop_and_delete()?;
    Ok((new, per_queue))
}

// ---------------------------------------------------------------------------------
// Zero-copy proof: a kprobe on the driver's copy function
// ---------------------------------------------------------------------------------

/// Runs `mib` MiB of verified writes and reads on a loop device (tmpfs backing) under a
/// kprobe on ublk_copy_user_pages; returns (copy calls, data requests, bytes verified).
pub fn copy_probe(mode: Mode, mib: u64) -> Result<(u64, u64, u64)> {
    let _wd = Watchdog::new("copy_probe", 90);
    use ublk_suite::tracefs::{error_log, kallsyms_lookup, Kprobe};
    let size = 32u64 << 20;
    let bf = backing_file(Backing::Buffered, size)?;
    let dev = start(mode, bf.as_ref(), Backing::Buffered, size, 1, 64)?;
    let sym = kallsyms_lookup("ublk_copy_user_pages")?;
    // ublk_copy_user_pages() copies between the request's pages and the server's buffer,
    // once per data request (and per 128 KiB pinned): it is the driver's copy path. It is
    // `static inline`, hence notrace, so kernel-config/base.config sets
    // CONFIG_KPROBE_EVENTS_ON_NOTRACE for kprobe events to be placed on it. A probe that
    // cannot be placed fails the test.
    let probe = Kprobe::new(&sym).with_context(|| {
        format!(
            "placing a kprobe on {sym}, the driver's copy path (error_log: {})",
            error_log()
        )
    })?;
    let h0 = probe.hits()?;
    let s0 = dev.stats();
    let path = dev.block_path();
    let f = open_direct(&path)?;
    let chunk = 1u64 << 20;
    let mut buf = AlignedBuf::new(chunk as usize);
    let mut verified = 0u64;
    let mut done = 0u64;
    let mut round = 0u64;
    while done < mib << 20 {
        // write the whole device, then read it back and check
        let seed = 0x2000 + round;
        let mut off = 0;
        while off < size && done < mib << 20 {
            fill_block(buf.as_mut_slice(), off, seed);
            full_write_at(&f, buf.as_slice(), off, "probe write")?;
            off += chunk;
            done += chunk;
        }
        let end = off;
        off = 0;
        while off < end {
            full_read_at(&f, buf.as_mut_slice(), off, "probe read")?;
            check_sectors(
                "read back under the probe",
                buf.as_slice(),
                off,
                &vec![seed; (chunk / 512) as usize],
            )?;
            verified += 2 * chunk;
            off += chunk;
        }
        round += 1;
    }
    let hits = probe.hits()? - h0;
    let s = dev.stats();
    let data_requests = (s.reads - s0.reads) + (s.writes - s0.writes);
    println!(
        "copy path {sym}: {hits} kprobe hits in {mode:?} mode over {} data requests ({} MiB written + read back and verified; splices {})",
        data_requests,
        verified >> 20,
        s.splices - s0.splices
    );
    drop(probe);
    // DEL_DEV waits for the last close of /dev/ublkbN: close it first
    drop(f);
    dev.stop_and_delete()?;
    Ok((hits, data_requests, verified))
}

// ---------------------------------------------------------------------------------
// Removal under load
// ---------------------------------------------------------------------------------

/// Deletes a device (in-process) while two threads hammer it: the I/O ends with errors
/// or success, nothing hangs, the device goes.
pub fn removal_under_load(mode: Mode) -> Result<()> {
    let _wd = Watchdog::new("removal_under_load", 60);
    let size = 32u64 << 20;
    let bf = backing_file(Backing::Buffered, size)?;
    let dev = start(mode, bf.as_ref(), Backing::Buffered, size, 2, 16)?;
    let path = dev.block_path();
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..2)
        .map(|i| {
            let (p, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || -> (u64, Option<String>) {
                let Ok(f) = open_direct(&p) else {
                    return (0, Some("open failed".into()));
                };
                let mut buf = AlignedBuf::new(256 << 10);
                let mut n = 0u64;
                let mut rng = Rng::new(i + 1);
                while !stop.load(Ordering::Relaxed) {
                    let off = rng.below(size / (256 << 10)) * (256 << 10);
                    let r = if i == 0 {
                        f.write_at(buf.as_slice(), off)
                    } else {
                        f.read_at(buf.as_mut_slice(), off)
                    };
                    match r {
                        // after STOP_DEV the disk has size 0: I/O ends at "EOF"
                        Ok(0) => return (n, Some("0 bytes (device gone)".into())),
                        Ok(_) => n += 1,
                        Err(e) => return (n, Some(e.to_string())),
                    }
                }
                (n, None)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    // The I/O threads keep /dev/ublkbN open and DEL_DEV waits for the last close: they
    // must end by themselves (errors, or 0-byte I/O on the dead disk) while we delete.
    let deleter = std::thread::spawn(move || dev.stop_and_delete());
    let res: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let io_end = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    deleter
        .join()
        .map_err(|_| anyhow!("the deleter panicked"))??;
    let del = t0.elapsed();
    println!("removal under load: I/O threads ended {io_end:?} after the stop began");
    println!("removal under load ({mode:?}): deleted in {del:?}; I/O threads: {res:?}");
    if del > Duration::from_secs(30) {
        bail!("deleting the device under load took {del:?}");
    }
    if path.exists() {
        bail!("{} still exists after deletion", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Kernel log
// ---------------------------------------------------------------------------------

/// Kernel log lines since the last call (reads /dev/kmsg non-blocking from the start;
/// `skip` lines already seen).
pub fn kmsg_lines() -> Vec<String> {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPIPE) {
                continue; // overwritten records
            }
            break;
        }
        if n == 0 {
            break;
        }
        let rec = String::from_utf8_lossy(&buf[..n as usize]).to_string();
        if let Some((_, msg)) = rec.split_once(';') {
            out.push(msg.lines().next().unwrap_or("").to_string());
        }
    }
    out
}

/// Kernel log lines that are splats.
pub fn splats(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            l.contains("WARNING:")
                || l.contains("BUG:")
                || l.contains("blocked for more than")
                || l.contains("Oops")
                || l.contains("general protection")
                || l.contains("kernel BUG")
                || l.contains("RCU stall")
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------
// The ublk CLI
// ---------------------------------------------------------------------------------

/// target/release/ublk (next to the deps/ directory of this test executable), or $UBLK_BIN.
pub fn ublk_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UBLK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let p = dir.join("ublk");
    assert!(
        p.is_file(),
        "{} is missing: scripts/build-suite.sh builds it (cargo build --workspace --release --bins)",
        p.display()
    );
    p
}

pub struct CliOut {
    pub ok: bool,
    pub code: Option<i32>,
    pub text: String,
}

pub fn ublk_cli(args: &[&str]) -> CliOut {
    let out = Command::new(ublk_bin())
        .args(args)
        .output()
        .expect("running ublk");
    CliOut {
        ok: out.status.success(),
        code: out.status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The device id from `dev_id N /dev/ublkbN ...`.
pub fn parse_dev_id(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        l.strip_prefix("dev_id ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// No ublk device exists (no nodes, `ublk list` shows only its header).
pub fn no_devices() -> Result<()> {
    let nodes: Vec<_> = std::fs::read_dir("/dev")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("ublkb") || n.starts_with("ublkc"))
        .collect();
    let list = ublk_cli(&["list"]);
    if !nodes.is_empty() || list.text.lines().count() != 1 {
        bail!(
            "ublk devices are left: nodes {nodes:?}; ublk list:\n{}",
            list.text
        );
    }
    Ok(())
}

/// A foreground `ublk add ... --foreground` server, as a child process.
pub struct FgServer {
    pub child: std::process::Child,
    pub id: u32,
    pub out: PathBuf,
}

pub fn spawn_fg(args: &[&str], out: &Path) -> Result<FgServer> {
    let f = File::create(out)?;
    let mut child = Command::new(ublk_bin())
        .arg("add")
        .args(args)
        .arg("--foreground")
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .context("spawning ublk add --foreground")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(id) = parse_dev_id(&text) {
            return Ok(FgServer {
                child,
                id,
                out: out.to_path_buf(),
            });
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "ublk add {} exited ({st}) before the device was live: {text}",
                args.join(" ")
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ublk add {}: no device within 30 s: {text}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------
// HeldServer: a one-queue loop server that can hold a request for the test
// ---------------------------------------------------------------------------------

/// What the test tells the queue thread to do with a held request.
pub enum Release {
    /// Serve it as usual (splice or copy), then commit.
    Serve,
    /// Commit with this result, without touching the data.
    Commit(i32),
}

pub struct HeldServer {
    pub id: u32,
    pub depth: u16,
    pub mode: Mode,
    pub char_fd: Arc<OwnedFd>,
    pub backing: BackingFile,
    ctrl: ublk::ctrl::Ctrl,
    thread: Option<JoinHandle<Result<()>>>,
    hold: Arc<AtomicBool>,
    held_rx: Receiver<ublk::target::Request>,
    release_tx: Sender<Release>,
    stopped: bool,
}

pub const HELD_MAX_IO: u32 = 64 << 10;

struct QThread {
    mode: Mode,
    depth: u16,
    char_fd: Arc<OwnedFd>,
    backing: File,
    hold: Arc<AtomicBool>,
    held_tx: Sender<ublk::target::Request>,
    release_rx: Receiver<Release>,
}

fn char_open(id: u32) -> Result<File> {
    let node = ublk::device::char_path(id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match OpenOptions::new().read(true).write(true).open(&node) {
            Ok(f) => return Ok(f),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("open {}", node.display())),
        }
    }
}

impl QThread {
    fn run(self, ready: Sender<Result<()>>) -> Result<()> {
        use io_uring::{opcode, types, IoUring};
        let page = 4096usize;
        let len = queue_cmd_buf_size(self.depth, page);
        // SAFETY: read-only shared mapping of the descriptor array.
        let desc = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                self.char_fd.as_raw_fd(),
                queue_cmd_buf_offset(0, page) as libc::off_t,
            )
        };
        if desc == libc::MAP_FAILED {
            let e = anyhow!(
                "mmap of the io descriptors: {}",
                std::io::Error::last_os_error()
            );
            let _ = ready.send(Err(anyhow!("{e}")));
            return Err(e);
        }
        let mut bufs: Vec<AlignedBuf> = (0..self.depth)
            .map(|_| AlignedBuf::new(HELD_MAX_IO as usize))
            .collect();
        let addr = |bufs: &Vec<AlignedBuf>, tag: u16| -> u64 {
            match self.mode {
                Mode::Copy => bufs[usize::from(tag)].as_slice().as_ptr() as u64,
                Mode::Zc => 0,
            }
        };
        let mut ring = IoUring::new(u32::from(self.depth).next_power_of_two().max(8) * 2)?;
        let cfd = self.char_fd.as_raw_fd();
        let push = |ring: &mut IoUring, op: u32, tag: u16, result: i32, addr: u64| {
            let cmd = ublksrv_io_cmd {
                q_id: 0,
                tag,
                result,
                addr,
            };
            let sqe = opcode::UringCmd16::new(types::Fd(cfd), op)
                .cmd(cmd.to_bytes())
                .build()
                .user_data(u64::from(tag));
            // SAFETY: the command refers to no memory but the buffers we own.
            unsafe { ring.submission().push(&sqe).expect("sq full") };
        };
        for tag in 0..self.depth {
            push(&mut ring, UBLK_IO_FETCH_REQ, tag, -1, addr(&bufs, tag));
        }
        ring.submit()?;
        let _ = ready.send(Ok(()));
        let mut splicer = ublk_suite::uring::Ring::new()?;
        let mut aborted = 0;
        while aborted < self.depth {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let cqes: Vec<_> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (ud, res) in cqes {
                let tag = ud as u16;
                if res != UBLK_IO_RES_OK {
                    aborted += 1;
                    continue;
                }
                // SAFETY: tag < depth, inside the mapping.
                let d: ublksrv_io_desc = unsafe {
                    std::ptr::read_volatile((desc as *const ublksrv_io_desc).add(usize::from(tag)))
                };
                let req = ublk::target::Request::from_desc(0, tag, &d);
                let is_data = matches!(req.op, UBLK_IO_OP_READ | UBLK_IO_OP_WRITE);
                let release = if is_data && self.hold.load(Ordering::SeqCst) {
                    self.held_tx.send(req).ok();
                    self.release_rx.recv().unwrap_or(Release::Serve)
                } else {
                    Release::Serve
                };
                let result = match release {
                    Release::Commit(r) => r,
                    Release::Serve => {
                        let buf = bufs[usize::from(tag)].as_mut_slice();
                        self.serve(&mut splicer, &req, buf)
                    }
                };
                push(
                    &mut ring,
                    UBLK_IO_COMMIT_AND_FETCH_REQ,
                    tag,
                    result,
                    addr(&bufs, tag),
                );
            }
        }
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(desc, len) };
        drop(bufs.drain(..));
        Ok(())
    }

    fn serve(
        &self,
        splicer: &mut ublk_suite::uring::Ring,
        req: &ublk::target::Request,
        buf: &mut [u8],
    ) -> i32 {
        let off = req.start_sector << 9;
        let len = (req.nr_sectors as usize) << 9;
        match (req.op, self.mode) {
            (UBLK_IO_OP_FLUSH, _) => match self.backing.sync_all() {
                Ok(()) => 0,
                Err(_) => -libc::EIO,
            },
            (UBLK_IO_OP_READ, Mode::Copy) => match self.backing.read_at(&mut buf[..len], off) {
                Ok(n) => n as i32,
                Err(_) => -libc::EIO,
            },
            (UBLK_IO_OP_WRITE, Mode::Copy) => match self.backing.write_at(&buf[..len], off) {
                Ok(n) => n as i32,
                Err(_) => -libc::EIO,
            },
            (UBLK_IO_OP_READ | UBLK_IO_OP_WRITE, Mode::Zc) => {
                let flags = if req.op == UBLK_IO_OP_READ {
                    SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ
                } else {
                    SPLICE_F_DIRECT
                };
                let mut done = 0usize;
                while done < len {
                    let sp = ublk_suite::uring::Splice::new(
                        self.char_fd.as_fd(),
                        ublk_pos(0, req.tag, done as u32) as i64,
                        self.backing.as_fd(),
                        (off + done as u64) as i64,
                        (len - done) as u32,
                        flags,
                    );
                    match splicer.splice(&sp) {
                        Ok(n) if n > 0 => done += n as usize,
                        Ok(n) if n < 0 => return n,
                        _ => return -libc::EIO,
                    }
                }
                done as i32
            }
            _ => 0,
        }
    }
}

impl HeldServer {
    /// A one-queue device of `depth` tags on a tmpfs file of `size` bytes.
    pub fn start(mode: Mode, depth: u16, size: u64) -> Result<HeldServer> {
        let backing = backing_file(Backing::Buffered, size)?.unwrap();
        let target = ublk::target::LoopTarget::open(&backing.path, true)?;
        let params = ublk::target::Target::params(&target, HELD_MAX_IO);
        let mut ctrl = ublk::ctrl::Ctrl::open()?;
        let info = ctrl.add_dev(&ublk::ctrl::AddSpec {
            dev_id: None,
            nr_hw_queues: 1,
            queue_depth: depth,
            max_io_buf_bytes: HELD_MAX_IO,
            flags: if mode == Mode::Zc {
                UBLK_F_SPLICE_ZC
            } else {
                0
            },
        })?;
        let id = info.dev_id;
        if (info.flags & UBLK_F_SPLICE_ZC != 0) != (mode == Mode::Zc) {
            let _ = ctrl.del_dev(id);
            bail!("ADD_DEV granted flags {:#x} for {mode:?} mode", info.flags);
        }
        let r = (|| -> Result<(Arc<OwnedFd>, _, _, _, _)> {
            ctrl.set_params(id, &params)?;
            let char_fd: Arc<OwnedFd> = Arc::new(char_open(id)?.into());
            let (held_tx, held_rx) = channel();
            let (release_tx, release_rx) = channel();
            let hold = Arc::new(AtomicBool::new(false));
            let q = QThread {
                mode,
                depth,
                char_fd: char_fd.clone(),
                backing: open_buffered(&backing.path)?,
                hold: hold.clone(),
                held_tx,
                release_rx,
            };
            let (rtx, rrx) = channel();
            let t = std::thread::spawn(move || q.run(rtx));
            rrx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| anyhow!("queue thread not ready"))??;
            Ok((char_fd, t, hold, held_rx, release_tx))
        })();
        let (char_fd, t, hold, held_rx, release_tx) = match r {
            Ok(x) => x,
            Err(e) => {
                let _ = ctrl.stop_dev(id);
                let _ = ctrl.del_dev(id);
                return Err(e);
            }
        };
        let mut s = HeldServer {
            id,
            depth,
            mode,
            char_fd,
            backing,
            ctrl,
            thread: Some(t),
            hold,
            held_rx,
            release_tx,
            stopped: false,
        };
        s.ctrl.start_dev(id, std::process::id() as i32)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while File::open(s.block_path()).is_err() {
            if Instant::now() > deadline {
                bail!("{} did not come up", s.block_path().display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    pub fn block_path(&self) -> PathBuf {
        ublk::device::block_path(self.id)
    }

    /// Writes `data` at `off` into the backing file directly.
    pub fn backing_write(&self, off: u64, data: &[u8]) {
        let f = open_buffered(&self.backing.path).expect("backing");
        f.write_all_at(data, off).expect("writing the backing file");
    }

    pub fn set_hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }

    /// The next held data request.
    pub fn next_held(&self) -> Result<ublk::target::Request> {
        self.held_rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| anyhow!("no request reached the server within 20 s"))
    }

    pub fn release(&self, r: Release) {
        self.release_tx.send(r).expect("queue thread gone");
    }

    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.set_hold(false);
        // a request still held: the queue thread's recv() fails, it serves the request
        let (tx, _) = channel();
        drop(std::mem::replace(&mut self.release_tx, tx));
        let _ = self.ctrl.stop_dev(self.id);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("queue thread panicked"))??;
        }
        // the last reference to the char fd must go before DEL_DEV
        let fd = std::mem::replace(&mut self.char_fd, Arc::new(File::open("/dev/null")?.into()));
        drop(fd);
        self.ctrl.del_dev(self.id)
    }
}

impl Drop for HeldServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping held server {}: {e:#}", self.id);
        }
    }
}

/// Runs `f` on a fresh thread (an I/O that will block until the server commits).
pub fn background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::spawn(f)
}

pub fn unwrap<T>(r: Result<T>) -> T {
    must(r)
}

/// Dumps the blocked tasks (sysrq w) and this process's kernel stacks if a test runs
/// longer than `secs`, so that a hang leaves evidence in the log before vmrun's timeout.
pub struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    pub fn new(what: &str, secs: u64) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let what = what.to_string();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(secs) {
                if d.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = writeln!(err, "WATCHDOG: {what} still running after {secs} s; blocked tasks (sysrq w) and stacks:");
            let _ = std::fs::write("/proc/sysrq-trigger", b"w");
            if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
                for t in rd.flatten() {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
                    let st = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    let _ = writeln!(
                        err,
                        "task {:?} {}: {st}\n{stack}",
                        t.file_name(),
                        comm.trim()
                    );
                }
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
