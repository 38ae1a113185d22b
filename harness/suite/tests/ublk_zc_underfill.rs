//! A READ of a zero-copy device (UBLK_F_SPLICE_ZC, series v3) that the server commits
//! unfilled: the driver completes no more than the filled prefix, in whole logical
//! blocks, and the block layer sends the rest again; a READ with nothing filled fails with
//! EIO.  The server is the ublk crate's queue loop with ublk_suite's under-fill target.
//! All need the series: on a kernel without it they fail with "kernel lacks
//! UBLK_F_SPLICE_ZC ...".

mod ublk_common;

use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use ublk::targets::LoopTarget;
use ublk::{Device, DeviceConfig};
use ublk_common::*;
use ublk_suite::blockio::{open_direct, AlignedBuf};
use ublk_suite::check::must;
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::targets::{Underfill, UnderfillHooks};

/// Reads 64 KiB at 1 MiB with O_DIRECT into a buffer pre-filled with a marker, from a
/// device whose under-fill target fills that READ as `how` says and commits it whole.
/// Every byte must be the backing data (never the marker: what the pages held before),
/// and the unfilled rest must come back to the server as a READ of its own, starting
/// where the filled prefix, in whole logical blocks, ended. A READ with nothing filled
/// fails with EIO instead, and nothing of it comes back.
fn underfilled_read(how: Underfill) -> Result<()> {
    fresh()?;
    require_splice_zc()?;
    let size = 4u64 << 20;
    let bf = backing_file(Backing::Buffered, size)?.ok_or_else(|| anyhow!("no backing"))?;
    let data = pattern(0x0f11, size as usize);
    ublk_suite::files::write_file(&bf.path, &data)?;
    let t = Arc::new(UnderfillHooks::target(LoopTarget::open(&bf.path, true)?));
    let mut cfg = DeviceConfig::new();
    cfg.zero_copy = true;
    cfg.depth = 4;
    let dev = Device::start_with(&cfg, t.clone())?;
    let lbs = ublk_suite::blockio::logical_block_size(&dev.block_path()) as u32;
    let (off, len) = (1u64 << 20, 64usize << 10);
    t.arm(how);
    let f = open_direct(&dev.block_path())?;
    let mut buf = AlignedBuf::filled(len, 0xa5);
    let n = f.read_at(buf.as_mut_slice(), off);
    drop(f);
    let log = t.log();
    let st = dev.stats();
    dev.stop_and_delete()?;
    println!(
        "{how:?} (logical block {lbs}): READ returned {n:?}; target log {log:?}; server {st:?}"
    );
    let want = &data[off as usize..off as usize + len];
    let got = buf.as_slice();
    // the bytes that still hold the marker where the backing has something else
    let marker: Vec<usize> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| **g == 0xa5 && **w != 0xa5)
        .map(|(i, _)| i)
        .collect();
    let [u] = log.underfilled[..] else {
        bail!("{how:?}: the target under-filled {:?}", log.underfilled);
    };
    let (_, filled) = how.fill(u.nr_sectors << 9, lbs);
    if how == Underfill::Nothing {
        match n {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            other => bail!(
                "{how:?}: a READ committed whole with nothing filled returned {other:?}, \
                 expected EIO"
            ),
        }
        if !log.remainders.is_empty() {
            bail!(
                "{how:?}: the failed READ came back to the server: {:?}",
                log.remainders
            );
        }
        if let Some(i) = got.iter().position(|&b| b != 0xa5) {
            bail!("{how:?}: the reader's buffer changed under a READ that failed (first at +{i})");
        }
        return Ok(());
    }
    let n = n.context("the O_DIRECT READ")?;
    if !marker.is_empty() {
        bail!(
            "{how:?}: {} bytes (first at +{}, last at +{}) still hold the marker: the pages' \
             old contents reached the reader of a READ committed with more bytes than were \
             filled",
            marker.len(),
            marker[0],
            marker[marker.len() - 1]
        );
    }
    check_bytes(
        &format!("the under-filled READ ({how:?})"),
        off,
        &got[..n],
        &want[..n],
    )?;
    if n != len {
        bail!("{how:?}: the READ returned {n} of {len} bytes");
    }
    let prefix = u64::from(filled >> 9);
    if !log
        .remainders
        .iter()
        .any(|r| r.start_sector == u.start_sector + prefix)
    {
        bail!(
            "{how:?}: the unfilled rest of {u:?} (from sector {}, after the filled prefix of \
             {filled} bytes) was not dispatched again: remainders {:?}",
            u.start_sector + prefix,
            log.remainders
        );
    }
    Ok(())
}

/// A READ committed with more bytes than were filled never shows what its pages held
/// before: the under-fill target splices only the first half of a 64 KiB READ and
/// commits 64 KiB; the kernel completes only the filled half and sends the rest again,
/// which the target then fills.
#[test]
fn read_committed_unfilled_never_shows_old_pages() {
    must(underfilled_read(Underfill::FirstHalf));
}

/// A fill after a hole does not count: the target fills the first quarter and the second
/// half of a READ (the second quarter stays a hole) and commits it whole; only the first
/// quarter is a filled prefix, so the rest (from the hole on) is sent again.
#[test]
fn read_fill_after_a_hole_does_not_count() {
    must(underfilled_read(Underfill::Hole));
}

/// The filled prefix counts in whole logical blocks (series v3): the target fills half
/// a READ, one logical block and 100 bytes, and commits it whole; the kernel completes
/// the half and the one block, and sends the rest again from the block after them.
#[test]
fn read_fill_is_rounded_down_to_the_logical_block() {
    must(underfilled_read(Underfill::Unaligned));
}

/// A READ committed whole with nothing filled fails with EIO (series v3; v2 sent it back
/// to the server), and the reader's buffer is not touched.
#[test]
fn read_with_nothing_filled_fails_with_eio() {
    must(underfilled_read(Underfill::Nothing));
}
