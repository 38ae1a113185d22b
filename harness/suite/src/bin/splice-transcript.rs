//! `splice-transcript`: a fixed, deterministic run of splice(2), vmsplice(2), tee(2),
//! sendfile(2) and copy_file_range(2) over pipes and files on tmpfs, ext4 and a tiny
//! tmpfs, with partial pipe consumption, short writes (RLIMIT_FSIZE, a full
//! filesystem, full O_NONBLOCK pipes) and errors. It prints every operation's result
//! and the state it leaves (sizes, checksums, bytes left in pipes).
//!
//! Patch 2/4 must change nothing: the transcripts of the base and the patched kernel
//! must be identical. Runs as root in the test VM (it mounts its filesystems).
//!
//! Usage: splice-transcript [--out FILE|-] (default: $VMRUN_RESULTS/splice-transcript.txt
//! in the test VM, stdout elsewhere); see --help.

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use ublk_suite::files::{fnv64, pattern, write_file};
use ublk_suite::flags::SPLICE_F_NONBLOCK;
use ublk_suite::scratch::{self, Fs};
use ublk_suite::sys::{self, SysResult};
use ublk_suite::transcript::Transcript;

type T = Transcript<Box<dyn Write>>;

/// Size of the source file every section reads from.
const SRC_LEN: usize = 300_000;

fn pipe(nonblock: bool) -> Result<(OwnedFd, OwnedFd)> {
    let flags = if nonblock {
        OFlag::O_NONBLOCK
    } else {
        OFlag::empty()
    };
    nix::unistd::pipe2(flags | OFlag::O_CLOEXEC).context("pipe2")
}

fn create(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn open(path: &Path, read: bool, write: bool, extra: i32) -> Result<File> {
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(extra)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn write(fd: BorrowedFd<'_>, data: &[u8]) -> SysResult {
    nix::unistd::write(fd, data)
}

fn lseek(fd: BorrowedFd<'_>, off: i64) -> Result<()> {
    // SAFETY: plain lseek on a borrowed fd.
    if unsafe { libc::lseek(fd.as_raw_fd(), off, libc::SEEK_SET) } < 0 {
        return Err(std::io::Error::last_os_error()).context("lseek");
    }
    Ok(())
}

fn set_fsize_limit(limit: Option<u64>) -> Result<()> {
    let v = limit.unwrap_or(libc::RLIM_INFINITY);
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut cur) } < 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_FSIZE)");
    }
    let new = libc::rlimit {
        rlim_cur: v,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &new) } < 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_FSIZE)");
    }
    Ok(())
}

/// Reads what a pipe holds (FIONREAD says how much, so this never blocks) and records
/// its size and checksum.
fn drain(t: &mut T, name: &str, r: BorrowedFd<'_>) -> Result<()> {
    let n = sys::pipe_bytes(r).context("FIONREAD")?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match nix::unistd::read(r.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("reading the pipe {name}: {e}"),
        }
    }
    buf.truncate(got);
    t.state(&format!(
        "drained {name}: {} bytes fnv={:016x}",
        buf.len(),
        fnv64(&buf)
    ))
}

/// The offset an operation left in its `Some` position.
fn off(o: Option<i64>) -> String {
    o.map_or("-".to_string(), |v| v.to_string())
}

/// Pipe to file: the iter_file_splice_write() path, with pipes of buffers of odd
/// sizes and kinds (merged writes, vmsplice'd user pages, page cache pages at odd
/// offsets) consumed in part, across buffer boundaries.
fn pipe_to_file(t: &mut T, dir: &Path, src: &Path, data: &[u8]) -> Result<()> {
    let dst = dir.join("p2f");
    let d = create(&dst)?;
    let s = open(src, true, false, 0)?;
    let (r, w) = pipe(false)?;

    t.op("write(P, src[0..1000])", write(w.as_fd(), &data[0..1000]))?;
    t.op(
        "write(P, src[1000..4000])",
        write(w.as_fd(), &data[1000..4000]),
    )?;
    t.op(
        "write(P, src[4000..9001])",
        write(w.as_fd(), &data[4000..9001]),
    )?;
    t.pipe("P", r.as_fd())?;
    let mut o = Some(0);
    for (len, flags) in [
        (2500usize, 0u32),
        (1, 0),
        (4000, 0),
        (10_000, SPLICE_F_NONBLOCK),
        (10, SPLICE_F_NONBLOCK),
    ] {
        let res = sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, len, flags);
        t.op(
            &format!("splice(P -> D, off_out, len={len}, flags={flags:#x})"),
            res,
        )?;
        t.state(&format!("off_out={}", off(o)))?;
        t.file("D", &dst)?;
        t.pipe("P", r.as_fd())?;
    }

    // vmsplice: one pipe buffer per segment, of odd sizes
    let segs: [&[u8]; 4] = [
        &data[9001..9778],
        &data[9778..13_879],
        &data[13_879..13_892],
        &data[13_892..16_892],
    ];
    t.op(
        "vmsplice(P, [777, 4101, 13, 3000])",
        sys::vmsplice(w.as_fd(), &segs, 0),
    )?;
    // page cache pages, starting at an odd offset
    let mut oi = Some(123);
    t.op(
        "splice(src, off_in=123 -> P, 5000)",
        sys::splice(s.as_fd(), &mut oi, w.as_fd(), &mut None, 5000, 0),
    )?;
    t.state(&format!("off_in={}", off(oi)))?;
    t.pipe("P", r.as_fd())?;
    for len in [800usize, 4101, 3, 5000, 100_000] {
        let res = sys::splice(
            r.as_fd(),
            &mut None,
            d.as_fd(),
            &mut o,
            len,
            SPLICE_F_NONBLOCK,
        );
        t.op(
            &format!("splice(P -> D, off_out, len={len}, NONBLOCK)"),
            res,
        )?;
        t.state(&format!("off_out={}", off(o)))?;
        t.file("D", &dst)?;
        t.pipe("P", r.as_fd())?;
    }

    // the file position instead of an offset
    t.op(
        "write(P, src[20000..26000])",
        write(w.as_fd(), &data[20_000..26_000]),
    )?;
    lseek(d.as_fd(), 100)?;
    t.op(
        "splice(P -> D at its file position 100, 2000)",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut None, 2000, 0),
    )?;
    t.state(&format!(
        "D position={}",
        sys::file_pos(d.as_fd()).map_err(|e| anyhow::anyhow!("lseek: {e}"))?
    ))?;
    t.file("D", &dst)?;

    // errors
    let ro = open(&dst, true, false, 0)?;
    t.op(
        "splice(P -> D opened O_RDONLY, 10)",
        sys::splice(r.as_fd(), &mut None, ro.as_fd(), &mut Some(0), 10, 0),
    )?;
    let app = open(&dst, false, true, libc::O_APPEND)?;
    t.op(
        "splice(P -> D opened O_APPEND, 10)",
        sys::splice(r.as_fd(), &mut None, app.as_fd(), &mut None, 10, 0),
    )?;
    t.op(
        "splice(P, off_in=0 -> D, 10)",
        sys::splice(r.as_fd(), &mut Some(0), d.as_fd(), &mut Some(0), 10, 0),
    )?;
    t.op(
        "splice(P -> D, len=0)",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut Some(0), 0, 0),
    )?;
    t.op(
        "splice(src -> D, no pipe)",
        sys::splice(s.as_fd(), &mut Some(0), d.as_fd(), &mut Some(0), 10, 0),
    )?;
    t.op(
        "splice(P -> D, off_out=i64::MAX-10, 100)",
        sys::splice(
            r.as_fd(),
            &mut None,
            d.as_fd(),
            &mut Some(i64::MAX - 10),
            100,
            0,
        ),
    )?;
    t.op(
        "splice(P -> D, off_out=-5, 10)",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut Some(-5), 10, 0),
    )?;
    t.pipe("P", r.as_fd())?;
    t.file("D", &dst)?;

    // pipe to pipe, in part
    let (r2, w2) = pipe(true)?;
    t.op(
        "splice(P -> Q, 1500)",
        sys::splice(r.as_fd(), &mut None, w2.as_fd(), &mut None, 1500, 0),
    )?;
    t.pipe("P", r.as_fd())?;
    drain(t, "Q", r2.as_fd())?;

    // the writer goes away: what is left, then EOF
    drop(w);
    t.op(
        "splice(P -> D, 100000) after the writer closed",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, 100_000, 0),
    )?;
    t.op(
        "splice(P -> D, 100000) at EOF",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, 100_000, 0),
    )?;
    t.state(&format!("off_out={}", off(o)))?;
    t.file("D", &dst)?;
    Ok(())
}

/// File to pipe, with O_NONBLOCK pipes that fill up.
fn file_to_pipe(t: &mut T, dir: &Path, src: &Path, data: &[u8]) -> Result<()> {
    let s = open(src, true, false, 0)?;
    let (r, w) = pipe(true)?;
    let mut oi = Some(0);
    t.op(
        "splice(src, off_in=0 -> N, 1 MiB)",
        sys::splice(s.as_fd(), &mut oi, w.as_fd(), &mut None, 1 << 20, 0),
    )?;
    t.state(&format!("off_in={}", off(oi)))?;
    t.op(
        "splice(src -> N (full), 10)",
        sys::splice(s.as_fd(), &mut oi, w.as_fd(), &mut None, 10, 0),
    )?;
    t.op("write(N (full), 100)", write(w.as_fd(), &data[..100]))?;
    let dst = dir.join("f2p");
    let d = create(&dst)?;
    t.op(
        "splice(N -> D, off_out=0, 10000)",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut Some(0), 10_000, 0),
    )?;
    t.pipe("N", r.as_fd())?;
    let mut oi = Some(7);
    t.op(
        "splice(src, off_in=7 -> N, 1 MiB)",
        sys::splice(s.as_fd(), &mut oi, w.as_fd(), &mut None, 1 << 20, 0),
    )?;
    t.state(&format!("off_in={}", off(oi)))?;
    t.pipe("N", r.as_fd())?;
    t.op("write(N, 5000)", write(w.as_fd(), &data[..5000]))?;
    drain(t, "N", r.as_fd())?;
    t.file("D", &dst)?;

    let (r3, w3) = pipe(true)?;
    t.op(
        "F_SETPIPE_SZ(M, 4096)",
        sys::set_pipe_size(w3.as_fd(), 4096),
    )?;
    t.op(
        "splice(src, off_in=4095 -> M, 10000)",
        sys::splice(s.as_fd(), &mut Some(4095), w3.as_fd(), &mut None, 10_000, 0),
    )?;
    t.op(
        "splice(src, off_in=0 -> M, 10000)",
        sys::splice(s.as_fd(), &mut Some(0), w3.as_fd(), &mut None, 10_000, 0),
    )?;
    drain(t, "M", r3.as_fd())?;
    t.op(
        "splice(src, off_in=SRC_LEN-10 -> M, 100)",
        sys::splice(
            s.as_fd(),
            &mut Some(SRC_LEN as i64 - 10),
            w3.as_fd(),
            &mut None,
            100,
            0,
        ),
    )?;
    t.op(
        "splice(src, off_in=SRC_LEN -> M, 100)",
        sys::splice(
            s.as_fd(),
            &mut Some(SRC_LEN as i64),
            w3.as_fd(),
            &mut None,
            100,
            0,
        ),
    )?;
    drain(t, "M", r3.as_fd())?;
    let wo = open(src, false, true, 0)?;
    t.op(
        "splice(src opened O_WRONLY -> M, 100)",
        sys::splice(wo.as_fd(), &mut Some(0), w3.as_fd(), &mut None, 100, 0),
    )?;
    t.op(
        "splice(src -> M's read end, 100)",
        sys::splice(s.as_fd(), &mut Some(0), r3.as_fd(), &mut None, 100, 0),
    )?;
    Ok(())
}

/// tee(2) between pipes.
fn tee(t: &mut T, data: &[u8]) -> Result<()> {
    let ((r1, w1), (r2, w2), (r3, _w3)) = (pipe(true)?, pipe(true)?, pipe(true)?);
    t.op("write(A, 5000)", write(w1.as_fd(), &data[..5000]))?;
    t.op("write(A, 3)", write(w1.as_fd(), &data[5000..5003]))?;
    t.op(
        "tee(A -> B, 3000)",
        sys::tee(r1.as_fd(), w2.as_fd(), 3000, 0),
    )?;
    t.op(
        "tee(A -> B, 100000, NONBLOCK)",
        sys::tee(r1.as_fd(), w2.as_fd(), 100_000, SPLICE_F_NONBLOCK),
    )?;
    t.op("tee(A -> A, 10)", sys::tee(r1.as_fd(), w1.as_fd(), 10, 0))?;
    t.op(
        "tee(C (empty) -> B, 10, NONBLOCK)",
        sys::tee(r3.as_fd(), w2.as_fd(), 10, SPLICE_F_NONBLOCK),
    )?;
    t.op(
        "tee(A -> B's read end, 10)",
        sys::tee(r1.as_fd(), r2.as_fd(), 10, 0),
    )?;
    t.pipe("A", r1.as_fd())?;
    drain(t, "B", r2.as_fd())?;
    drain(t, "A", r1.as_fd())?;
    Ok(())
}

/// sendfile(2): file to file (do_splice_direct), file to pipe, and its errors.
fn sendfile(t: &mut T, dir: &Path, src: &Path) -> Result<()> {
    let s = open(src, true, false, 0)?;
    let dst = dir.join("sendfile");
    let d = create(&dst)?;
    let mut o = Some(0);
    t.op(
        "sendfile(D <- src, offset=0, 100000)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut o, 100_000),
    )?;
    t.state(&format!("offset={}", off(o)))?;
    let mut o = Some(12_345);
    t.op(
        "sendfile(D <- src, offset=12345, 70001)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut o, 70_001),
    )?;
    t.state(&format!("offset={}", off(o)))?;
    t.file("D", &dst)?;
    lseek(s.as_fd(), SRC_LEN as i64 - 1000)?;
    t.op(
        "sendfile(D <- src at its position SRC_LEN-1000, 5000)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut None, 5000),
    )?;
    t.state(&format!(
        "src position={}",
        sys::file_pos(s.as_fd()).map_err(|e| anyhow::anyhow!("lseek: {e}"))?
    ))?;
    t.op(
        "sendfile(D <- src at EOF, 5000)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut None, 5000),
    )?;
    t.op(
        "sendfile(D <- src, offset=0, 0)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut Some(0), 0),
    )?;
    t.file("D", &dst)?;

    let (r, w) = pipe(true)?;
    let mut o = Some(5);
    t.op(
        "sendfile(N <- src, offset=5, 70000)",
        sys::sendfile(w.as_fd(), s.as_fd(), &mut o, 70_000),
    )?;
    t.state(&format!("offset={}", off(o)))?;
    t.op(
        "sendfile(N (full) <- src, offset=0, 10)",
        sys::sendfile(w.as_fd(), s.as_fd(), &mut Some(0), 10),
    )?;
    t.op(
        "sendfile(D <- N, 1000)",
        sys::sendfile(d.as_fd(), r.as_fd(), &mut None, 1000),
    )?;
    t.op(
        "sendfile(D <- N, offset=0, 1000)",
        sys::sendfile(d.as_fd(), r.as_fd(), &mut Some(0), 1000),
    )?;
    drain(t, "N", r.as_fd())?;

    let app = open(&dst, false, true, libc::O_APPEND)?;
    t.op(
        "sendfile(D opened O_APPEND <- src, 10)",
        sys::sendfile(app.as_fd(), s.as_fd(), &mut Some(0), 10),
    )?;
    let wo = open(src, false, true, 0)?;
    t.op(
        "sendfile(D <- src opened O_WRONLY, 10)",
        sys::sendfile(d.as_fd(), wo.as_fd(), &mut Some(0), 10),
    )?;
    let ro = open(&dst, true, false, 0)?;
    t.op(
        "sendfile(D opened O_RDONLY <- src, 10)",
        sys::sendfile(ro.as_fd(), s.as_fd(), &mut Some(0), 10),
    )?;
    t.op(
        "sendfile(D <- src, offset=-1, 10)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut Some(-1), 10),
    )?;
    t.file("D", &dst)?;
    Ok(())
}

/// copy_file_range(2) on one filesystem: the splice fallback on tmpfs and ext4.
fn copy_range(t: &mut T, dir: &Path, src: &Path) -> Result<()> {
    let s = open(src, true, false, 0)?;
    let dst = dir.join("cfr");
    let d = create(&dst)?;
    let (mut oi, mut oo) = (Some(1000), Some(0));
    t.op(
        "copy_file_range(src@1000 -> D@0, 200000)",
        sys::copy_file_range(s.as_fd(), &mut oi, d.as_fd(), &mut oo, 200_000, 0),
    )?;
    t.state(&format!("off_in={} off_out={}", off(oi), off(oo)))?;
    let (mut oi, mut oo) = (Some(SRC_LEN as i64 - 777), Some(3));
    t.op(
        "copy_file_range(src@SRC_LEN-777 -> D@3, 5000)",
        sys::copy_file_range(s.as_fd(), &mut oi, d.as_fd(), &mut oo, 5000, 0),
    )?;
    t.state(&format!("off_in={} off_out={}", off(oi), off(oo)))?;
    t.op(
        "copy_file_range(src@SRC_LEN -> D@0, 10)",
        sys::copy_file_range(
            s.as_fd(),
            &mut Some(SRC_LEN as i64),
            d.as_fd(),
            &mut Some(0),
            10,
            0,
        ),
    )?;
    t.op(
        "copy_file_range(D@0 -> D@100, 1000) overlapping",
        sys::copy_file_range(d.as_fd(), &mut Some(0), d.as_fd(), &mut Some(100), 1000, 0),
    )?;
    t.op(
        "copy_file_range(D@0 -> D@150000, 1000)",
        sys::copy_file_range(
            d.as_fd(),
            &mut Some(0),
            d.as_fd(),
            &mut Some(150_000),
            1000,
            0,
        ),
    )?;
    t.op(
        "copy_file_range(src -> D, flags=1)",
        sys::copy_file_range(s.as_fd(), &mut Some(0), d.as_fd(), &mut Some(0), 10, 1),
    )?;
    lseek(s.as_fd(), 50_000)?;
    lseek(d.as_fd(), 77)?;
    t.op(
        "copy_file_range(src at its position 50000 -> D at 77, 65537)",
        sys::copy_file_range(s.as_fd(), &mut None, d.as_fd(), &mut None, 65_537, 0),
    )?;
    let sp = sys::file_pos(s.as_fd()).map_err(|e| anyhow::anyhow!("lseek: {e}"))?;
    let dp = sys::file_pos(d.as_fd()).map_err(|e| anyhow::anyhow!("lseek: {e}"))?;
    t.state(&format!("src position={sp} D position={dp}"))?;
    let app = open(&dst, false, true, libc::O_APPEND)?;
    t.op(
        "copy_file_range(src -> D opened O_APPEND, 10)",
        sys::copy_file_range(s.as_fd(), &mut Some(0), app.as_fd(), &mut Some(0), 10, 0),
    )?;
    let wo = open(src, false, true, 0)?;
    t.op(
        "copy_file_range(src opened O_WRONLY -> D, 10)",
        sys::copy_file_range(wo.as_fd(), &mut Some(0), d.as_fd(), &mut Some(0), 10, 0),
    )?;
    let (r, w) = pipe(true)?;
    t.op(
        "copy_file_range(src -> pipe, 10)",
        sys::copy_file_range(s.as_fd(), &mut Some(0), w.as_fd(), &mut None, 10, 0),
    )?;
    t.pipe("pipe", r.as_fd())?;
    t.file("D", &dst)?;
    Ok(())
}

/// Short writes and EFBIG under RLIMIT_FSIZE (SIGXFSZ is ignored).
fn fsize_limit(t: &mut T, dir: &Path, src: &Path, data: &[u8]) -> Result<()> {
    let s = open(src, true, false, 0)?;
    let dst = dir.join("rlimit");
    let d = create(&dst)?;
    let (r, w) = pipe(true)?;
    t.op("write(P, 1500)", write(w.as_fd(), &data[..1500]))?;
    t.op(
        "vmsplice(P, [2001, 999])",
        sys::vmsplice(w.as_fd(), &[&data[1500..3501], &data[3501..4500]], 0),
    )?;
    t.op(
        "splice(src, off_in=10 -> P, 700)",
        sys::splice(s.as_fd(), &mut Some(10), w.as_fd(), &mut None, 700, 0),
    )?;
    // the transcript's own file is under the limit too: hold its lines until after
    t.hold();
    set_fsize_limit(Some(12_000))?;
    let limited = under_fsize_limit(t, &s, &d, &r);
    // whatever happened, lift the limit and write out what was held
    set_fsize_limit(None)?;
    t.release()?;
    limited?;
    t.state("RLIMIT_FSIZE=unlimited")?;
    drain(t, "P", r.as_fd())?;
    t.file("D", &dst)?;
    Ok(())
}

/// The operations of `fsize_limit` that run with RLIMIT_FSIZE at 12000.
fn under_fsize_limit(t: &mut T, s: &File, d: &File, r: &OwnedFd) -> Result<()> {
    t.state("RLIMIT_FSIZE=12000")?;
    let mut o = Some(10_000);
    t.op(
        "splice(P -> D, off_out=10000, 5200)",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, 5200, 0),
    )?;
    t.state(&format!("off_out={}", off(o)))?;
    t.pipe("P", r.as_fd())?;
    t.op(
        "splice(P -> D, off_out=12000, 100)",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, 100, 0),
    )?;
    t.pipe("P", r.as_fd())?;
    let mut o = Some(11_000);
    t.op(
        "sendfile(D <- src, offset=11000, 5000)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut o, 5000),
    )?;
    t.state(&format!("offset={}", off(o)))?;
    lseek(d.as_fd(), 11_500)?;
    t.op(
        "sendfile(D at its position 11500 <- src, offset=0, 70000)",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut Some(0), 70_000),
    )?;
    t.state(&format!(
        "D position={}",
        sys::file_pos(d.as_fd()).map_err(|e| anyhow::anyhow!("lseek: {e}"))?
    ))?;
    t.op(
        "sendfile(D <- src, offset=0, 10) at the limit",
        sys::sendfile(d.as_fd(), s.as_fd(), &mut Some(0), 10),
    )?;
    let (mut oi, mut oo) = (Some(0), Some(9000));
    t.op(
        "copy_file_range(src@0 -> D@9000, 70000)",
        sys::copy_file_range(s.as_fd(), &mut oi, d.as_fd(), &mut oo, 70_000, 0),
    )?;
    t.state(&format!("off_in={} off_out={}", off(oi), off(oo)))?;
    t.op(
        "copy_file_range(src@0 -> D@12000, 10)",
        sys::copy_file_range(s.as_fd(), &mut Some(0), d.as_fd(), &mut Some(12_000), 10, 0),
    )?;
    Ok(())
}

/// Running out of space on a 16 KiB tmpfs.
fn tiny(t: &mut T, tiny_dir: &Path, src: &Path, data: &[u8]) -> Result<()> {
    let s = open(src, true, false, 0)?;
    let a = tiny_dir.join("a");
    let d = create(&a)?;
    let (r, w) = pipe(true)?;
    for (i, (x, y)) in [
        (0usize, 6000usize),
        (6000, 6001),
        (6001, 13_000),
        (13_000, 20_000),
    ]
    .into_iter()
    .enumerate()
    {
        t.op(
            &format!("write(P, chunk {i} of {} bytes)", y - x),
            write(w.as_fd(), &data[x..y]),
        )?;
    }
    let mut o = Some(0);
    t.op(
        "splice(P -> A, off_out=0, 20000) on a 16 KiB tmpfs",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, 20_000, 0),
    )?;
    t.state(&format!("off_out={}", off(o)))?;
    t.pipe("P", r.as_fd())?;
    t.op(
        "splice(P -> A, 100) on the full tmpfs",
        sys::splice(r.as_fd(), &mut None, d.as_fd(), &mut o, 100, 0),
    )?;
    t.pipe("P", r.as_fd())?;
    t.file("A", &a)?;
    let b = tiny_dir.join("b");
    let e = create(&b)?;
    t.op(
        "sendfile(B <- src, offset=0, 10) on the full tmpfs",
        sys::sendfile(e.as_fd(), s.as_fd(), &mut Some(0), 10),
    )?;
    t.op(
        "copy_file_range(src -> B, 10) across filesystems",
        sys::copy_file_range(s.as_fd(), &mut Some(0), e.as_fd(), &mut Some(0), 10, 0),
    )?;
    drop(d);
    std::fs::remove_file(&a).with_context(|| format!("removing {}", a.display()))?;
    let mut o = Some(3);
    t.op(
        "sendfile(B <- src, offset=3, 30000) on the emptied tmpfs",
        sys::sendfile(e.as_fd(), s.as_fd(), &mut o, 30_000),
    )?;
    t.state(&format!("offset={}", off(o)))?;
    t.file("B", &b)?;
    drain(t, "P", r.as_fd())?;
    Ok(())
}

/// Between tmpfs and ext4.
fn cross(t: &mut T, tmpfs: &Path, ext4: &Path) -> Result<()> {
    let (s1, s2) = (tmpfs.join("src"), ext4.join("src"));
    let a = open(&s1, true, false, 0)?;
    let b = open(&s2, true, false, 0)?;
    let (d1, d2) = (ext4.join("from-tmpfs"), tmpfs.join("from-ext4"));
    let (x, y) = (create(&d1)?, create(&d2)?);
    t.op(
        "sendfile(ext4 D <- tmpfs src, offset=1, 100000)",
        sys::sendfile(x.as_fd(), a.as_fd(), &mut Some(1), 100_000),
    )?;
    t.op(
        "sendfile(tmpfs D <- ext4 src, offset=2, 100000)",
        sys::sendfile(y.as_fd(), b.as_fd(), &mut Some(2), 100_000),
    )?;
    t.op(
        "copy_file_range(tmpfs src@7 -> ext4 D@5, 70000)",
        sys::copy_file_range(a.as_fd(), &mut Some(7), x.as_fd(), &mut Some(5), 70_000, 0),
    )?;
    t.op(
        "copy_file_range(ext4 src@7 -> tmpfs D@5, 70000)",
        sys::copy_file_range(b.as_fd(), &mut Some(7), y.as_fd(), &mut Some(5), 70_000, 0),
    )?;
    let (r, w) = pipe(true)?;
    t.op(
        "splice(tmpfs src, off_in=100 -> P, 9000)",
        sys::splice(a.as_fd(), &mut Some(100), w.as_fd(), &mut None, 9000, 0),
    )?;
    t.op(
        "splice(ext4 src, off_in=200 -> P, 9000)",
        sys::splice(b.as_fd(), &mut Some(200), w.as_fd(), &mut None, 9000, 0),
    )?;
    t.op(
        "splice(P -> ext4 D, off_out=4097, 12000)",
        sys::splice(r.as_fd(), &mut None, x.as_fd(), &mut Some(4097), 12_000, 0),
    )?;
    t.op(
        "splice(P -> tmpfs D, off_out=3, 12000)",
        sys::splice(r.as_fd(), &mut None, y.as_fd(), &mut Some(3), 12_000, 0),
    )?;
    t.pipe("P", r.as_fd())?;
    t.file("ext4 D", &d1)?;
    t.file("tmpfs D", &d2)?;
    Ok(())
}

/// The sections that run on each filesystem.
fn on_fs(t: &mut T, label: &str, dir: &Path, data: &[u8]) -> Result<PathBuf> {
    let src = dir.join("src");
    write_file(&src, data)?;
    t.section(&format!("{label}: pipe -> file"))?;
    pipe_to_file(t, dir, &src, data)?;
    t.section(&format!("{label}: file -> pipe"))?;
    file_to_pipe(t, dir, &src, data)?;
    t.section(&format!("{label}: sendfile"))?;
    sendfile(t, dir, &src)?;
    t.section(&format!("{label}: copy_file_range"))?;
    copy_range(t, dir, &src)?;
    t.section(&format!("{label}: RLIMIT_FSIZE"))?;
    fsize_limit(t, dir, &src, data)?;
    t.file("src", &src)?;
    Ok(src)
}

fn run(out: Box<dyn Write>) -> Result<()> {
    // a write past RLIMIT_FSIZE must come back as EFBIG or a short count, not kill us
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut t: T = Transcript::new(out);
    let data = pattern(100, SRC_LEN);
    t.state(&format!(
        "splice-transcript: src {} bytes fnv={:016x}",
        data.len(),
        fnv64(&data)
    ))?;

    let tmpfs = scratch::ScratchDir::new(Fs::Tmpfs)?;
    let ext4 = scratch::ScratchDir::new(Fs::Ext4)?;
    on_fs(&mut t, "tmpfs", tmpfs.path(), &data)?;
    on_fs(&mut t, "ext4", ext4.path(), &data)?;
    t.section("pipes: tee")?;
    tee(&mut t, &data)?;
    t.section("tmpfs <-> ext4")?;
    cross(&mut t, tmpfs.path(), ext4.path())?;
    let tiny_dir = tmpfs.join("tiny");
    scratch::mount_tiny_tmpfs(&tiny_dir, "16k")?;
    t.section("tiny tmpfs (16 KiB)")?;
    tiny(&mut t, &tiny_dir, &tmpfs.join("src"), &data)?;
    t.state("splice-transcript: end")?;
    // the tiny tmpfs sits inside the scratch directory: unmount it before that goes
    nix::mount::umount2(&tiny_dir, nix::mount::MntFlags::MNT_DETACH)
        .context("unmounting the tiny tmpfs")?;
    Ok(())
}

/// A fixed, deterministic run of splice(2), vmsplice(2), tee(2), sendfile(2) and
/// copy_file_range(2) whose transcript must be the same on the base and the patched
/// kernel. Runs as root in the test VM (it mounts its filesystems).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "splice-transcript")]
struct Cli {
    /// Write the transcript to FILE; - is stdout [default:
    /// $VMRUN_RESULTS/splice-transcript.txt in the test VM, stdout elsewhere].
    #[arg(long, value_name = "FILE|-")]
    out: Option<PathBuf>,
}

/// Where the transcript goes (None: stdout); `vmrun_results` is $VMRUN_RESULTS.
fn out_path(out: Option<PathBuf>, vmrun_results: Option<std::ffi::OsString>) -> Option<PathBuf> {
    match out {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p),
        None => vmrun_results
            .filter(|v| !v.is_empty())
            .map(|dir| PathBuf::from(dir).join("splice-transcript.txt")),
    }
}

fn output(path: Option<PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        None => Box::new(std::io::stdout()),
        Some(p) => {
            eprintln!("splice-transcript: writing {}", p.display());
            let f = File::create(&p).with_context(|| format!("creating {}", p.display()))?;
            Box::new(f)
        }
    })
}

fn main() -> std::process::ExitCode {
    // Usage errors exit 2, --help 0.
    let cli = Cli::parse();
    match output(out_path(cli.out, std::env::var_os("VMRUN_RESULTS"))).and_then(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splice-transcript: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("splice-transcript").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert()
    }

    #[test]
    fn out() {
        let vm = || Some(std::ffi::OsString::from("/res"));
        let o = parse(&[]).expect("parses").out;
        assert_eq!(o, None);
        assert_eq!(
            out_path(o.clone(), vm()),
            Some(PathBuf::from("/res/splice-transcript.txt"))
        );
        assert_eq!(out_path(o.clone(), None), None, "stdout outside the VM");
        assert_eq!(out_path(o, Some("".into())), None);
        let o = parse(&["--out", "-"]).expect("parses").out;
        assert_eq!(out_path(o, vm()), None, "- is stdout");
        let o = parse(&["--out", "/t.txt"]).expect("parses").out;
        assert_eq!(out_path(o, vm()), Some(PathBuf::from("/t.txt")));
        let o = parse(&["--out=/u.txt"]).expect("parses").out;
        assert_eq!(o, Some(PathBuf::from("/u.txt")));
    }

    #[test]
    fn errors_and_help() {
        for (args, kind) in [
            (&["--out"][..], ErrorKind::InvalidValue),
            (&["--bogus"], ErrorKind::UnknownArgument),
            (&["file"], ErrorKind::UnknownArgument),
            (&["--out", "a", "--out", "b"], ErrorKind::ArgumentConflict),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), kind, "{args:?}");
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayHelp, 0));
        let h = e.render().to_string();
        assert!(h.contains("--out <FILE|->"), "{h}");
    }
}
