//! The kprobe helper that the zero-copy proofs rest on: it must count calls of a kernel
//! function exactly, on any kernel, and refuse a probe it cannot place.

use std::os::fd::AsFd;
use ublk_suite::check::must;
use ublk_suite::files::{open_ro, open_rw, pattern, write_file};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::sys;
use ublk_suite::tracefs::Kprobe;

/// sendfile(2) between files runs do_splice_direct() once per call.
#[test]
fn kprobe_counts_do_splice_direct_of_sendfile() {
    let d = must(ScratchDir::new(Fs::Tmpfs));
    let (src, dst) = (d.join("src"), d.join("dst"));
    must(write_file(&src, &pattern(1, 100_000)));
    must(write_file(&dst, b""));
    let (i, o) = (must(open_ro(&src)), must(open_rw(&dst)));
    let probe = must(Kprobe::new("do_splice_direct"));
    let before = must(probe.hits());
    for k in 0..5i64 {
        let n = sys::sendfile(o.as_fd(), i.as_fd(), &mut Some(k * 20_000), 20_000)
            .expect("sendfile(2)");
        assert_eq!(n, 20_000, "sendfile(2) of 20000 bytes");
    }
    assert_eq!(
        must(probe.hits()) - before,
        5,
        "do_splice_direct() calls for 5 sendfile(2) calls"
    );
}

/// A probe on a function that does not exist is an error, not a zero count.
#[test]
fn kprobe_on_missing_function_fails() {
    let err = match Kprobe::new("ublk_suite_no_such_function") {
        Ok(_) => panic!("a kprobe on a function that does not exist was placed"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cannot place a kprobe on ublk_suite_no_such_function"),
        "{err}"
    );
}
