//! What the ublk tests share:
//!
//! - [`backing_file`] (ublk_suite's, for every ublk test): the backing file of a test
//!   device (tmpfs, or ext4 for O_DIRECT);
//! - the scenarios of tests/ublk_copy.rs and tests/ublk_zc.rs: the same I/O on ublk
//!   devices, with the device's mode (copy or UBLK_F_SPLICE_ZC) as the only difference;
//! - [`Held`]: a one-queue device whose data requests the test holds
//!   ([`ublk_suite::targets::HoldTarget`]), so that it can splice against a started
//!   request itself (tests/ublk_zc_chardev.rs, tests/ublk_zc_lend.rs).
//!
//! Generic helpers (block I/O, device hygiene, test targets, the CLI) are in the
//! ublk_suite library.  Included with `mod ublk_common;` by each of those test files;
//! each uses part of it.
#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig, TargetConfig};
use ublk_suite::blockio::*;
use ublk_suite::check::must;
use ublk_suite::files::{drop_caches, fnv64, pattern};
pub use ublk_suite::scratch::{backing_file, Backing, BackingFile};
use ublk_suite::scratch::{find_tool, Fs, ScratchDir};
use ublk_suite::targets::{Hold, HoldTarget};
use ublk_suite::ublkcli::tool_ok;
pub use ublk_suite::ublkdev::{fresh, require_splice_zc, Mode};
use ublk_suite::uring::{Ring, Splice};
use ublk_suite::watchdog::Watchdog;

/// Progress on stderr, not captured by libtest: if a test hangs, the log shows how far
/// it got.
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "  .. {msg}");
}

// ---------------------------------------------------------------------------------
// Modes, backings, devices
// ---------------------------------------------------------------------------------

/// Starts a device of `mode` on `backing` (None: a null target of `size`).
pub fn start(
    mode: Mode,
    backing: Option<&BackingFile>,
    b: Backing,
    size: u64,
    queues: u16,
    depth: u16,
) -> Result<Device> {
    fresh()?;
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
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = mode == Mode::Zc;
    cfg.nr_queues = queues;
    cfg.depth = depth;
    let dev =
        Device::start(&cfg, &target).with_context(|| format!("starting {target:?} {cfg:?}"))?;
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
    keeps_data: bool,
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
        if keeps_data {
            let first = ((off - start) / 512) as usize;
            seeds[first..first + (size / 512) as usize].fill(s);
        }
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

/// The random I/O scenario.  The null target keeps no data: what is read back must be
/// zeroes there.
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
            let keeps_data = b != Backing::Null;
            std::thread::spawn(move || {
                submitter(
                    p,
                    keeps_data,
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

/// Reads `len` bytes at `off` of the backing file (O_DIRECT for Direct: what is on the
/// disk, not in some cache).
fn read_backing(b: Backing, path: &Path, off: u64, len: usize) -> Result<Vec<u8>> {
    read_range(path, b == Backing::Direct, off, len)
}

fn read_dev_direct(path: &Path, off: u64, len: usize) -> Result<Vec<u8>> {
    read_range(path, true, off, len)
}

pub fn flush_discard_zeroes(mode: Mode, b: Backing, queues: u16, depth: u16) -> Result<()> {
    let _wd = Watchdog::new("flush_discard_zeroes", 60);
    let size = 16u64 << 20;
    let bf = backing_file(b, size)?.ok_or_else(|| anyhow!("{b:?}: a loop backing is needed"))?;
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
    let bf = backing_file(b, size)?.ok_or_else(|| anyhow!("{b:?}: a loop backing is needed"))?;
    let dev = start(mode, Some(&bf), b, size, queues, depth)?;
    let path = dev.block_path();
    let p = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
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
    let res: Vec<_> = hs
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or((0, Some("an I/O thread panicked".into())))
        })
        .collect();
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
// Held: a device whose data requests the test holds
// ---------------------------------------------------------------------------------

/// Tags of a [`Held`] device.
pub const HELD_DEPTH: u16 = 4;
/// The largest request of a [`Held`] device.
pub const HELD_MAX_IO: u32 = 64 << 10;

/// The background I/O of [`Held::held_io`]: the bytes it moved, and what a READ read.
pub type HeldIo = std::thread::JoinHandle<std::io::Result<(usize, Vec<u8>)>>;

/// A one-queue device of [`HELD_DEPTH`] tags on a 4 MiB tmpfs file, served by the ublk
/// crate's queue loop with a [`HoldTarget`]: a data request can be held while the test
/// splices.  Its held I/O is one O_DIRECT request of `req_bytes` at `req_off`.
pub struct Held {
    pub dev: Option<Device>,
    pub target: Arc<HoldTarget>,
    pub backing: BackingFile,
    pub req_bytes: usize,
    pub req_off: u64,
}

impl Held {
    /// `zero_copy`: ask for UBLK_F_SPLICE_ZC; `extra`: more flags to ask for; the held
    /// I/O is `req_bytes` (at most [`HELD_MAX_IO`]) at `req_off`.
    pub fn start(zero_copy: bool, extra: u64, req_bytes: usize, req_off: u64) -> Result<Held> {
        fresh()?;
        require_splice_zc()?;
        if req_bytes > HELD_MAX_IO as usize {
            bail!("a held I/O of {req_bytes} bytes is more than one request ({HELD_MAX_IO})");
        }
        let backing =
            backing_file(Backing::Buffered, 4 << 20)?.ok_or_else(|| anyhow!("no backing file"))?;
        let target = Arc::new(Hold::target(ublk::targets::LoopTarget::open(
            &backing.path,
            true,
        )?));
        let mut cfg = DeviceConfig::new();
        cfg.zero_copy = zero_copy;
        cfg.extra_flags = extra;
        cfg.depth = HELD_DEPTH;
        cfg.max_io_buf_bytes = HELD_MAX_IO;
        let dev = Device::start_with(&cfg, target.clone())?;
        Ok(Held {
            dev: Some(dev),
            target,
            backing,
            req_bytes,
            req_off,
        })
    }

    pub fn dev(&self) -> &Device {
        self.dev.as_ref().expect("the device is running")
    }

    pub fn char_fd(&self) -> BorrowedFd<'_> {
        self.dev().char_fd().expect("the server's /dev/ublkcN")
    }

    pub fn block_path(&self) -> PathBuf {
        self.dev().block_path()
    }

    /// Writes `data` at `off` into the backing file directly.
    pub fn backing_write(&self, off: u64, data: &[u8]) -> Result<()> {
        ublk_suite::files::open_rw(&self.backing.path)?
            .write_all_at(data, off)
            .context("writing the backing file")
    }

    /// Issues one O_DIRECT READ (or WRITE of `write`) of `req_bytes` at `req_off` in the
    /// background and returns the request the server holds for it (the whole I/O).
    pub fn held_io(&self, write: Option<Vec<u8>>) -> Result<(HeldIo, ublk::targets::Request)> {
        self.target.set_hold(true);
        let path = self.block_path();
        let (len, off) = (self.req_bytes, self.req_off);
        let h = std::thread::spawn(move || {
            let f = open_direct(&path).map_err(std::io::Error::other)?;
            let mut buf = AlignedBuf::new(len);
            match write {
                Some(d) => {
                    buf.as_mut_slice().copy_from_slice(&d);
                    f.write_at(buf.as_slice(), off).map(|n| (n, Vec::new()))
                }
                None => f
                    .read_at(buf.as_mut_slice(), off)
                    .map(|n| (n, buf.as_slice().to_vec())),
            }
        });
        let req = self.target.next_held(Duration::from_secs(20));
        self.target.set_hold(false);
        let req = req?;
        if req.bytes() != len as u64 || req.offset() != off {
            bail!("the held request is not the whole I/O of {len} bytes at {off}: {req:?}");
        }
        Ok((h, req))
    }

    /// The device still works: write, read back, compare with the backing file.
    pub fn still_works(&self, seed: u64) -> Result<()> {
        let f = open_direct(&self.block_path())?;
        let mut buf = AlignedBuf::new(1 << 20);
        fill_block(buf.as_mut_slice(), 1 << 20, seed);
        let want = buf.as_slice().to_vec();
        full_write_at(&f, buf.as_slice(), 1 << 20, "write after the cases")?;
        buf.as_mut_slice().fill(0);
        full_read_at(&f, buf.as_mut_slice(), 1 << 20, "read after the cases")?;
        ublk_suite::files::check_bytes(
            "read back after the cases",
            1 << 20,
            buf.as_slice(),
            &want,
        )?;
        drop(f);
        let b = read_range(&self.backing.path, false, 1 << 20, 1 << 20)?;
        ublk_suite::files::check_bytes("backing file after the cases", 1 << 20, &b, &want)
    }

    /// An io_uring splice from the device's /dev/ublkcN at `pos` to `out` at `off_out`:
    /// its CQE's result.
    pub fn splice(
        &self,
        ring: &mut Ring,
        pos: u64,
        out: &File,
        off_out: i64,
        len: u32,
        flags: u32,
    ) -> i32 {
        must(ring.splice(&Splice::new(
            self.char_fd(),
            pos as i64,
            out.as_fd(),
            off_out,
            len,
            flags,
        )))
    }

    /// Stops and deletes the device, reporting errors.
    pub fn finish(mut self) -> Result<()> {
        self.target.close();
        match self.dev.take() {
            Some(d) => d.stop_and_delete(),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // a request still held is served, so the device can stop
        self.target.close();
    }
}
