//! ublk devices in splice zero-copy mode (UBLK_F_SPLICE_ZC, bit 63, series v3): the
//! scenarios of ublk_copy.rs, the proof that nothing is copied, and that the fast path
//! does not punt to io-wq.  The char device's splice on held requests is
//! ublk_zc_chardev.rs, a READ committed unfilled ublk_zc_underfill.rs, servers (FETCH_REQ
//! without CAP_SYS_ADMIN, the mirror, kill -9) ublk_zc_server.rs.  All need the series:
//! on a kernel without it they fail with "kernel lacks UBLK_F_SPLICE_ZC ...".

mod ublk_common;

use anyhow::{anyhow, bail, Context, Result};
use rstest::rstest;
use std::os::unix::fs::FileExt;
use ublk::uapi::*;
use ublk_common::*;
use ublk_suite::check::must;
use ublk_suite::tracefs::{error_log, kallsyms_lookup, Kprobe};

const MODE: Mode = Mode::Zc;

#[rstest]
fn random_io(
    #[values(Backing::Direct, Backing::Buffered)] backing: Backing,
    #[values(1, 2)] queues: u16,
    #[values(1, 64)] depth: u16,
) {
    must(ublk_common::random_io(MODE, backing, queues, depth));
}

#[rstest]
fn random_io_null(#[values(1, 2)] queues: u16) {
    must(ublk_common::random_io(MODE, Backing::Null, queues, 64));
}

#[rstest]
fn flush_discard_write_zeroes(#[values(Backing::Direct, Backing::Buffered)] backing: Backing) {
    must(ublk_common::flush_discard_zeroes(MODE, backing, 2, 64));
}

#[test]
fn filesystem_ext4() {
    must(ublk_common::filesystem(MODE, Backing::Direct, 2, 64));
}

#[rstest]
fn fio_verify_crc32c(
    #[values(Backing::Direct, Backing::Buffered, Backing::Null)] backing: Backing,
) {
    must(ublk_common::fio_verify(MODE, backing, 2, 64));
}

/// The device has UBLK_F_SPLICE_ZC and its queues map no data buffer.
#[test]
fn server_allocates_no_data_buffer() {
    must(fresh());
    must(require_splice_zc());
    let bf = must(backing_file(Backing::Buffered, 8 << 20));
    let dev = must(start(MODE, bf.as_ref(), Backing::Buffered, 0, 1, 4));
    assert!(
        dev.flags() & UBLK_F_BIT5_UNPRIVILEGED_DEV == 0,
        "a zero-copy device must not be granted bit 5 (mainline's UBLK_F_UNPRIVILEGED_DEV): \
         flags {:#x}",
        dev.flags()
    );
    assert!(
        dev.flags() & UBLK_F_SPLICE_ZC != 0,
        "flags {:#x}",
        dev.flags()
    );
    must(dev.stop_and_delete());
    let (n, size) = must(ublk_common::server_buffers(MODE));
    assert_eq!(
        n, 0,
        "zero-copy mode: {n} data buffer mapping(s) of {size} bytes"
    );
}

/// Zero copy proven: over 64 MiB of verified I/O the driver's copy function never runs.
/// (ublk_copy::copy_path_probe_counts_every_request shows the probe counts in copy mode.)
#[test]
fn zero_copy_proof_no_copy_calls() {
    must(fresh());
    must(require_splice_zc());
    let (hits, reqs, verified) = must(ublk_common::copy_probe(MODE, 32));
    println!("ZERO-COPY MODE: ublk_copy_user_pages hits={hits} data_requests={reqs} verified_bytes={verified}");
    assert!(verified >= 64 << 20, "only {verified} bytes verified");
    assert!(reqs > 0, "no data request reached the server");
    assert_eq!(
        hits, 0,
        "zero-copy mode: the copy function ran {hits} times"
    );
}

#[test]
fn removal_under_load() {
    must(ublk_common::removal_under_load(MODE));
}

// ---------------------------------------------------------------------------------
// io-wq: the fast path does not punt
// ---------------------------------------------------------------------------------

/// Writes every byte of `path` (zeroes) and syncs it: the file's extents are then
/// allocated and written, so an O_DIRECT write to it is an overwrite that the filesystem
/// can do without blocking (a hole needs block allocation, which IOCB_NOWAIT refuses).
fn allocate_fully(path: &std::path::Path, size: u64) -> Result<()> {
    let f = ublk_suite::files::open_rw(path)?;
    let zeroes = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        f.write_all_at(&zeroes, off)
            .with_context(|| format!("filling {} at {off}", path.display()))?;
        off += zeroes.len() as u64;
    }
    f.sync_all().context("fsync of the backing")
}

/// One QD32 fio run (64 KiB random reads and writes, 64 MiB) on a device of `mode` over
/// `bf`: (io-wq punts, data requests, copy-path calls, server stats).
fn punts_run(
    mode: Mode,
    bf: &BackingFile,
    size: u64,
) -> Result<(u64, u64, u64, ublk::queue::QueueStatsSnapshot)> {
    let dev = start(mode, Some(bf), Backing::Direct, size, 1, 64)?;
    let fio =
        ublk_suite::scratch::find_tool("fio").ok_or_else(|| anyhow!("fio is not installed"))?;
    let wq_sym = kallsyms_lookup("io_wq_submit_work")?;
    let copy_sym = kallsyms_lookup("ublk_copy_user_pages")?;
    let punts =
        Kprobe::new(&wq_sym).with_context(|| format!("kprobe on {wq_sym} ({})", error_log()))?;
    let copies = Kprobe::new(&copy_sym)
        .with_context(|| format!("kprobe on {copy_sym} ({})", error_log()))?;
    let (p0, c0, s0) = (punts.hits()?, copies.hits()?, dev.stats());
    let out = std::process::Command::new(fio)
        .args([
            "--name=punts",
            &format!("--filename={}", dev.block_path().display()),
            "--ioengine=libaio",
            "--iodepth=32",
            "--direct=1",
            "--rw=randrw",
            "--bs=64k",
            "--size=32M",
            "--io_size=64M",
            "--output-format=terse",
        ])
        .output()
        .context("running fio")?;
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (p1, c1, s1) = (punts.hits()?, copies.hits()?, dev.stats());
    drop((punts, copies));
    dev.stop_and_delete()?;
    let reqs = (s1.reads - s0.reads) + (s1.writes - s0.writes);
    println!(
        "QD32 {mode:?} on ext4 O_DIRECT (allocated backing): {} io-wq punts ({wq_sym}) over \
         {reqs} data requests = {:.3} per request; copy path {copy_sym}: {} calls; server {s1:?}",
        p1 - p0,
        (p1 - p0) as f64 / reqs.max(1) as f64,
        c1 - c0
    );
    Ok((p1 - p0, reqs, c1 - c0, s1))
}

/// Zero copy on an O_DIRECT backing at queue depth 32: io_uring runs the direct splices
/// as async I/O, issued inline, and punts to io-wq (a kprobe on `io_wq_submit_work`
/// counts each punt) for at most 0.05 per zero-copy request (v1 punted every one).  The
/// copy path's probe counts 0 over the same run.  The backing is fully written first
/// (see [`allocate_fully`]); copy mode runs the same workload first, for comparison.
#[test]
fn io_wq_punts_per_zero_copy_request() {
    must(fresh());
    must(require_splice_zc());
    let _wd = ublk_suite::watchdog::Watchdog::new("io_wq_punts", 180);
    let size = 64u64 << 20;
    let bf = must(backing_file(Backing::Direct, size)).expect("backing");
    must(allocate_fully(&bf.path, size));
    let (copy_punts, copy_reqs, copy_calls, _) = must(punts_run(Mode::Copy, &bf, size));
    assert!(
        copy_calls >= copy_reqs,
        "copy mode: the copy-path probe counted {copy_calls} calls over {copy_reqs} requests"
    );
    let (n_punts, reqs, calls, _) = must(punts_run(MODE, &bf, size));
    let ratio = n_punts as f64 / reqs.max(1) as f64;
    println!(
        "io-wq punts per request: copy mode {:.3}, zero copy {ratio:.3}",
        copy_punts as f64 / copy_reqs.max(1) as f64
    );
    assert!(reqs >= 512, "only {reqs} data requests reached the server");
    assert_eq!(calls, 0, "zero-copy mode: the copy path ran {calls} times");
    assert!(
        ratio <= 0.05,
        "{n_punts} io-wq punts over {reqs} zero-copy requests ({ratio:.3} per request, at most \
         0.05 allowed): direct splices still go through io-wq"
    );
}
