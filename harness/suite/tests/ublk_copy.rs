//! ublk devices in copy mode (no UBLK_F_SPLICE_ZC): the same scenarios as ublk_zc.rs,
//! which must pass on any 6.1 kernel, with or without the series.

mod ublk_common;

use rstest::rstest;
use ublk_common::{Backing, Mode};
use ublk_suite::check::must;

const MODE: Mode = Mode::Copy;

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

/// Copy mode: each queue maps a data buffer of depth x max_io_buf_bytes.
#[test]
fn server_allocates_data_buffers() {
    let (n, size) = must(ublk_common::server_buffers(MODE));
    assert_eq!(
        n, 2,
        "copy mode: one {size}-byte data buffer per queue (2 queues)"
    );
}

/// The kprobe on the driver's copy function counts at least one call per data request:
/// the probe sits on the path that zero copy must avoid (ublk_map_io() copies a WRITE's
/// pages to the server's buffer, ublk_unmap_io() a READ's data back).
#[test]
fn copy_path_probe_counts_every_request() {
    let (hits, reqs, verified) = must(ublk_common::copy_probe(MODE, 16));
    println!("COPY MODE: ublk_copy_user_pages hits={hits} data_requests={reqs} verified_bytes={verified}");
    assert!(reqs > 0, "no data request reached the server");
    assert!(
        hits >= reqs,
        "copy mode: {hits} copy calls for {reqs} data requests"
    );
}

#[test]
fn removal_under_load() {
    must(ublk_common::removal_under_load(MODE));
}
