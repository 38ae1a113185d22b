//! IORING_OP_SPLICE with SPLICE_F_DIRECT (patch 1/4) and SPLICE_F_READ_TO_READ
//! (patch 3/4) between regular files, and the syscalls that must keep refusing both
//! flags (docs/contract.md). Series v3 takes READ_TO_READ only from a source that lends
//! its pages (/dev/ublkcN, ublk_zc and ublk_zc_lend): from a file it is EINVAL, which is
//! what the read-to-read tests here check, whatever the destination.
//!
//! Every test of a new flag first asks the kernel whether it has the flag
//! (`features::require_*`), so that a kernel without the series fails it with a message
//! naming the missing feature. The `*_rejects_internal_flags` tests hold on any kernel.

use rstest::{fixture, rstest};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use ublk_suite::check::{self, must};
use ublk_suite::features::{require_read_to_read, require_splice_direct};
use ublk_suite::files::{
    check_bytes, drop_caches, open_ro, open_rw, open_with, open_wo, pattern, read_file, write_file,
    TempDir,
};
use ublk_suite::flags::{SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::sys::{self, cqe_display};
use ublk_suite::tracefs::Kprobe;
use ublk_suite::uring::{Ring, Side, Splice};

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;

#[fixture]
fn ring() -> Ring {
    must(Ring::new())
}

fn scratch(fs: Fs) -> ScratchDir {
    must(ScratchDir::new(fs))
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().expect("pipe(2)")
}

/// The file at `path` must hold `want`, read now and again after dropping the page cache
/// (so that what was checked is on the filesystem, not only in pages we may have touched).
fn check_file(what: &str, path: &Path, want: &[u8]) {
    must(check_bytes(
        &format!("{what} ({})", path.display()),
        0,
        &must(read_file(path)),
        want,
    ));
    must(drop_caches());
    must(check_bytes(
        &format!("{what} ({}) after drop_caches", path.display()),
        0,
        &must(read_file(path)),
        want,
    ));
}

fn file_pos(f: &File) -> i64 {
    sys::file_pos(f.as_fd()).expect("lseek(SEEK_CUR)")
}

/// How a file of a test is opened.
#[derive(Clone, Copy, Debug)]
enum Open {
    ReadOnly,
    WriteOnly,
    ReadWrite,
    Append,
}

fn open_as(path: &Path, how: Open) -> File {
    must(match how {
        Open::ReadOnly => open_ro(path),
        Open::WriteOnly => open_wo(path),
        Open::ReadWrite => open_rw(path),
        Open::Append => open_with(
            path,
            std::fs::OpenOptions::new().write(true),
            libc::O_APPEND,
        ),
    })
}

/// The two files of a file to file splice: `src` on one scratch filesystem and `dst` on
/// another (or the same kind), each written with its first contents and then opened,
/// the source read-only and the destination read-write unless the test says otherwise.
/// The first contents stay here, for checking what the splice left in both files. The
/// scratch directories go when the pair is dropped.
struct FilePair {
    src_file: File,
    /// None when the test splices into a destination of its own.
    dst_file: Option<File>,
    src: PathBuf,
    dst: PathBuf,
    src_data: Vec<u8>,
    dst_old: Vec<u8>,
    _dirs: (ScratchDir, ScratchDir),
}

impl FilePair {
    /// `src_data` in a source on `src_fs` opened O_RDONLY, `dst_old` in a destination
    /// on `dst_fs` opened O_RDWR.
    fn new(src_fs: Fs, dst_fs: Fs, src_data: Vec<u8>, dst_old: Vec<u8>) -> FilePair {
        FilePair::opened(
            src_fs,
            dst_fs,
            src_data,
            dst_old,
            Open::ReadOnly,
            Some(Open::ReadWrite),
        )
    }

    /// [`FilePair::new`] with both files on tmpfs.
    fn tmpfs(src_data: Vec<u8>, dst_old: Vec<u8>) -> FilePair {
        FilePair::new(Fs::Tmpfs, Fs::Tmpfs, src_data, dst_old)
    }

    /// The source opened as `src_open`, the destination as `dst_open` (not at all for
    /// None: the destination file is then only there to show that no byte reaches it).
    fn opened(
        src_fs: Fs,
        dst_fs: Fs,
        src_data: Vec<u8>,
        dst_old: Vec<u8>,
        src_open: Open,
        dst_open: Option<Open>,
    ) -> FilePair {
        let dirs = (scratch(src_fs), scratch(dst_fs));
        let (src, dst) = (dirs.0.join("src"), dirs.1.join("dst"));
        must(write_file(&src, &src_data));
        must(write_file(&dst, &dst_old));
        FilePair {
            src_file: open_as(&src, src_open),
            dst_file: dst_open.map(|how| open_as(&dst, how)),
            src,
            dst,
            src_data,
            dst_old,
            _dirs: dirs,
        }
    }

    fn src(&self) -> &Path {
        &self.src
    }

    fn dst(&self) -> &Path {
        &self.dst
    }

    /// What the source holds.
    fn src_data(&self) -> &[u8] {
        &self.src_data
    }

    /// What the destination held before the test.
    fn dst_old(&self) -> &[u8] {
        &self.dst_old
    }

    fn src_file(&self) -> &File {
        &self.src_file
    }

    fn dst_file(&self) -> &File {
        self.dst_file
            .as_ref()
            .expect("the destination of this file pair was not opened")
    }

    /// A splice of `len` bytes from the source at `off_in` to the destination at
    /// `off_out`.
    fn splice(&self, off_in: i64, off_out: i64, len: u32, flags: u32) -> Splice {
        Splice::new(
            self.src_file().as_fd(),
            off_in,
            self.dst_file().as_fd(),
            off_out,
            len,
            flags,
        )
    }

    /// Both files still hold their first contents (the destination is checked first).
    fn check_untouched(&self) {
        check_file("destination", self.dst(), self.dst_old());
        check_file("source", self.src(), self.src_data());
    }
}

// ---------------------------------------------------------------------------------
// SPLICE_F_DIRECT: file to file
// ---------------------------------------------------------------------------------

/// The bytes land at `off_out`, come from `off_in`, the CQE says `len`, the rest of the
/// destination is untouched and neither file position moves. Lengths over 64 KiB cycle
/// the internal pipe; odd offsets and lengths straddle pages.
#[rstest]
#[case::page(0, 0, 4096)]
#[case::one_byte(1, 4095, 1)]
#[case::unaligned(12345, 777, 5000)]
#[case::page_plus_one(4095, 8193, 4097)]
#[case::pipe_size(100, 200, 65536)]
#[case::pipe_size_plus_one(3, 65537, 65537)]
#[case::cycles_pipe(4097, 13, 300_001)]
#[case::one_mib_and_a_bit(1, 2, (1 << 20) + 13)]
fn direct_data_lands_at_offsets(
    mut ring: Ring,
    #[values(Fs::Tmpfs, Fs::Ext4)] src_fs: Fs,
    #[values(Fs::Tmpfs, Fs::Ext4)] dst_fs: Fs,
    #[case] off_in: usize,
    #[case] off_out: usize,
    #[case] len: usize,
) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::new(
        src_fs,
        dst_fs,
        pattern(1, off_in + len + 1000),
        pattern(2, off_out + len + 5000),
    );

    let res = must(ring.splice(&f.splice(off_in as i64, off_out as i64, len as u32, DIRECT)));
    must(check::cqe(
        &format!("direct splice {src_fs} -> {dst_fs}, {len} bytes"),
        res,
        len as i32,
    ));

    let mut want = f.dst_old().to_vec();
    want[off_out..off_out + len].copy_from_slice(&f.src_data()[off_in..off_in + len]);
    check_file("destination", f.dst(), &want);
    check_file("source", f.src(), f.src_data());
    assert_eq!(
        file_pos(f.src_file()),
        0,
        "the source's file position moved"
    );
    assert_eq!(
        file_pos(f.dst_file()),
        0,
        "the destination's file position moved"
    );
}

/// Writing past the destination's end extends it; the gap reads as zeros.
#[rstest]
fn direct_extends_destination(mut ring: Ring, #[values(Fs::Tmpfs, Fs::Ext4)] fs: Fs) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::new(fs, fs, pattern(3, 70_000), b"head".to_vec());
    let res = must(ring.splice(&f.splice(5, 10_000, 69_000, DIRECT)));
    must(check::cqe(
        "direct splice past the destination's end",
        res,
        69_000,
    ));
    let mut want = f.dst_old().to_vec();
    want.resize(10_000, 0);
    want.extend_from_slice(&f.src_data()[5..69_005]);
    check_file("destination", f.dst(), &want);
}

/// Asking for more than the source holds gives what there is; at or past its end, 0.
#[rstest]
#[case::short_at_eof(6000, 8000, 4000)]
#[case::at_eof(10_000, 100, 0)]
#[case::past_eof(20_000, 100, 0)]
fn direct_stops_at_source_eof(
    mut ring: Ring,
    #[values(Fs::Tmpfs, Fs::Ext4)] fs: Fs,
    #[case] off_in: usize,
    #[case] len: usize,
    #[case] want_res: usize,
) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::new(fs, fs, pattern(4, 10_000), pattern(5, 20_000));
    let res = must(ring.splice(&f.splice(off_in as i64, 100, len as u32, DIRECT)));
    must(check::cqe(
        &format!("direct splice of {len} bytes at {off_in} of a 10000-byte source"),
        res,
        want_res as i32,
    ));
    let mut want = f.dst_old().to_vec();
    if want_res > 0 {
        want[100..100 + want_res].copy_from_slice(&f.src_data()[off_in..off_in + want_res]);
    }
    check_file("destination", f.dst(), &want);
}

/// SPLICE_F_FD_IN_FIXED keeps working with SPLICE_F_DIRECT (and a fixed fd_out too).
#[rstest]
fn direct_with_registered_files(mut ring: Ring, #[values(false, true)] out_fixed: bool) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::tmpfs(pattern(6, 100_000), pattern(7, 100_000));
    let (i, o) = (f.src_file().as_raw_fd(), f.dst_file().as_raw_fd());
    must(ring.register_files(&[i, o]));
    let sp = Splice {
        fd_in: Side::Fixed(0),
        off_in: 333,
        fd_out: if out_fixed {
            Side::Fixed(1)
        } else {
            Side::Fd(o)
        },
        off_out: 4444,
        len: 80_000,
        flags: DIRECT,
    };
    let res = must(ring.splice(&sp));
    must(check::cqe(
        &format!("direct splice with a fixed fd_in (fixed fd_out: {out_fixed})"),
        res,
        80_000,
    ));
    let mut want = f.dst_old().to_vec();
    want[4444..84_444].copy_from_slice(&f.src_data()[333..80_333]);
    check_file("destination", f.dst(), &want);
}

/// Both positions must be explicit: -1 ("the file position") is EINVAL, and nothing moves.
#[rstest]
#[case::off_in(-1, 0)]
#[case::off_out(0, -1)]
#[case::both(-1, -1)]
fn direct_needs_explicit_offsets(
    mut ring: Ring,
    #[values(DIRECT, R2R)] flags: u32,
    #[case] off_in: i64,
    #[case] off_out: i64,
) {
    if flags == R2R {
        must(require_read_to_read(&mut ring));
    } else {
        must(require_splice_direct(&mut ring));
    }
    let f = FilePair::tmpfs(pattern(8, 9000), pattern(9, 9000));
    let res = must(ring.splice(&f.splice(off_in, off_out, 4096, flags)));
    must(check::cqe(
        &format!("splice flags {flags:#x}, off_in {off_in}, off_out {off_out}"),
        res,
        -libc::EINVAL,
    ));
    f.check_untouched();
    assert_eq!(
        (file_pos(f.src_file()), file_pos(f.dst_file())),
        (0, 0),
        "a file position moved"
    );
}

/// A pipe on either side is ESPIPE, as splice(2) says for a pipe given a position; the
/// pipe keeps its data.
#[rstest]
#[case::pipe_in(true)]
#[case::pipe_out(false)]
fn direct_refuses_pipes(mut ring: Ring, #[values(DIRECT, R2R)] flags: u32, #[case] pipe_in: bool) {
    if flags == R2R {
        must(require_read_to_read(&mut ring));
    } else {
        must(require_splice_direct(&mut ring));
    }
    let d = scratch(Fs::Tmpfs);
    let file = d.join("file");
    let old = pattern(10, 8192);
    must(write_file(&file, &old));
    let f = must(open_rw(&file));
    let (r, w) = pipe();
    nix::unistd::write(&w, b"pipe data").expect("write to the pipe");
    let sp = if pipe_in {
        Splice::new(r.as_fd(), 0, f.as_fd(), 0, 9, flags)
    } else {
        Splice::new(f.as_fd(), 0, w.as_fd(), 0, 9, flags)
    };
    let res = must(ring.splice(&sp));
    let side = if pipe_in { "fd_in" } else { "fd_out" };
    must(check::cqe(
        &format!("splice flags {flags:#x} with a pipe as {side}"),
        res,
        -libc::ESPIPE,
    ));
    assert_eq!(
        sys::pipe_bytes(r.as_fd()).expect("FIONREAD"),
        9,
        "the pipe lost or gained data"
    );
    check_file("file", &file, &old);
}

/// The usual errors of do_splice_direct() and of the source's do_splice_to(); no byte
/// moves in any of them.
#[rstest]
#[case::write_only_source(Open::WriteOnly, Open::ReadWrite, 0, 0, libc::EBADF)]
#[case::read_only_destination(Open::ReadOnly, Open::ReadOnly, 0, 0, libc::EBADF)]
#[case::append_destination(Open::ReadOnly, Open::Append, 0, 0, libc::EINVAL)]
#[case::negative_off_in(Open::ReadOnly, Open::ReadWrite, -4096, 0, libc::EINVAL)]
#[case::negative_off_out(Open::ReadOnly, Open::ReadWrite, 0, -4096, libc::EINVAL)]
fn direct_errors(
    mut ring: Ring,
    #[case] src_open: Open,
    #[case] dst_open: Open,
    #[case] off_in: i64,
    #[case] off_out: i64,
    #[case] errno: i32,
) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::opened(
        Fs::Tmpfs,
        Fs::Tmpfs,
        pattern(11, 9000),
        pattern(12, 9000),
        src_open,
        Some(dst_open),
    );
    let res = must(ring.splice(&f.splice(off_in, off_out, 4096, DIRECT)));
    must(check::cqe(
        &format!(
            "direct splice, source {src_open:?} at {off_in}, destination {dst_open:?} at {off_out}"
        ),
        res,
        -errno,
    ));
    f.check_untouched();
}

/// Series v2's values of the flags, 0x10 (SPLICE_F_DIRECT) and 0x20
/// (SPLICE_F_READ_TO_READ), are unknown splice flags to v3 (which has them at bits 30
/// and 29): IORING_OP_SPLICE refuses them with EINVAL, and nothing moves. The same
/// splice with SPLICE_F_DIRECT goes through.
#[rstest]
fn direct_refuses_the_v2_flag_values(mut ring: Ring, #[values(0x10, 0x20, 0x30)] v2_flags: u32) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::tmpfs(pattern(28, 9000), pattern(29, 9000));
    let res = must(ring.splice(&f.splice(0, 0, 4096, v2_flags)));
    must(check::cqe(
        &format!("io_uring splice file -> file with v2's flag value {v2_flags:#x}"),
        res,
        -libc::EINVAL,
    ));
    check_file("destination", f.dst(), f.dst_old());
    let res = must(ring.splice(&f.splice(0, 0, 4096, DIRECT)));
    must(check::cqe(
        "the same splice with SPLICE_F_DIRECT",
        res,
        4096,
    ));
}

/// io_uring's direct splice runs do_splice_direct() once per request, as the series says.
#[rstest]
fn direct_goes_through_do_splice_direct(mut ring: Ring) {
    must(require_splice_direct(&mut ring));
    let f = FilePair::tmpfs(pattern(13, 200_000), Vec::new());
    let probe = must(Kprobe::new("do_splice_direct"));
    let before = must(probe.hits());
    for k in 0..3 {
        let res = must(ring.splice(&f.splice(k * 60_000, k * 60_000, 60_000, DIRECT)));
        must(check::cqe("direct splice", res, 60_000));
    }
    assert_eq!(
        must(probe.hits()) - before,
        3,
        "do_splice_direct() calls for 3 direct splices"
    );
}

// ---------------------------------------------------------------------------------
// SPLICE_F_READ_TO_READ
// ---------------------------------------------------------------------------------

/// READ_TO_READ is only accepted with DIRECT: alone, EINVAL, on a splice that is
/// otherwise valid (pipe to file), which then goes through without the flag.
#[rstest]
fn read_to_read_needs_direct(mut ring: Ring) {
    must(require_read_to_read(&mut ring));
    let d = scratch(Fs::Tmpfs);
    let dst = d.join("dst");
    must(write_file(&dst, &pattern(14, 100)));
    let o = must(open_rw(&dst));
    let (r, w) = pipe();
    nix::unistd::write(&w, b"0123456789").expect("write to the pipe");
    let res = must(ring.splice(&Splice::new(
        r.as_fd(),
        -1,
        o.as_fd(),
        0,
        10,
        SPLICE_F_READ_TO_READ,
    )));
    must(check::cqe(
        "splice pipe -> file with SPLICE_F_READ_TO_READ alone",
        res,
        -libc::EINVAL,
    ));
    assert_eq!(
        sys::pipe_bytes(r.as_fd()).expect("FIONREAD"),
        10,
        "the pipe lost data"
    );
    let res = must(ring.splice(&Splice::new(r.as_fd(), -1, o.as_fd(), 0, 10, 0)));
    must(check::cqe("the same splice without flags", res, 10));
}

/// A regular file does not lend its pages, so it cannot be the source of a read-to-read
/// splice: EINVAL, and its pages are not read into. Both files keep their data, in the
/// page cache and on the filesystem, and a direct splice right after copies the source
/// as it is.
#[rstest]
#[case::page(0, 0, 4096)]
#[case::unaligned(100, 3, 5000)]
#[case::cycles_pipe(4096, 8192, 200_000)]
fn read_to_read_refuses_regular_source(
    mut ring: Ring,
    #[values(Fs::Tmpfs, Fs::Ext4)] src_fs: Fs,
    #[values(Fs::Tmpfs, Fs::Ext4)] dst_fs: Fs,
    #[case] off_in: usize,
    #[case] off_out: usize,
    #[case] len: usize,
) {
    must(require_read_to_read(&mut ring));
    let f = FilePair::new(
        src_fs,
        dst_fs,
        pattern(15, off_in + len + 3000),
        pattern(16, off_out + len + 3000),
    );
    // the source's pages are in the page cache: those are what a bad splice would fill
    must(check_bytes(
        "source before",
        0,
        &must(read_file(f.src())),
        f.src_data(),
    ));
    let res = must(ring.splice(&f.splice(off_in as i64, off_out as i64, len as u32, R2R)));
    must(check::cqe(
        &format!(
            "read-to-read splice from a regular {src_fs} file into a {dst_fs} file, {len} bytes"
        ),
        res,
        -libc::EINVAL,
    ));
    check_file(
        "source (nothing may be read into its pages)",
        f.src(),
        f.src_data(),
    );
    check_file("destination", f.dst(), f.dst_old());

    let copy = d_copy(&mut ring, f.src_file(), off_in, len);
    must(check_bytes(
        "a direct splice after the refused one",
        0,
        &copy,
        &f.src_data()[off_in..off_in + len],
    ));
}

/// The refusal of a regular source comes before the source is read (series v3; v2 read
/// it into the internal pipe first): its ->splice_read, generic_file_splice_read on 6.1
/// tmpfs, is not called. The direct splice of the same range right after calls it, so
/// the probe does count the source's reads.
#[rstest]
fn read_to_read_refuses_regular_source_before_reading_it(mut ring: Ring) {
    must(require_read_to_read(&mut ring));
    let f = FilePair::tmpfs(pattern(26, 20_000), pattern(27, 20_000));
    let probe = must(Kprobe::new("generic_file_splice_read"));
    let before = must(probe.hits());
    let res = must(ring.splice(&f.splice(0, 0, 16_384, R2R)));
    let refused_calls = must(probe.hits()) - before;
    must(check::cqe(
        "read-to-read splice from a regular tmpfs file",
        res,
        -libc::EINVAL,
    ));
    check_file("source", f.src(), f.src_data());
    check_file("destination", f.dst(), f.dst_old());
    let before = must(probe.hits());
    let res = must(ring.splice(&f.splice(0, 0, 16_384, DIRECT)));
    let direct_calls = must(probe.hits()) - before;
    must(check::cqe("the same range, direct", res, 16_384));
    assert!(
        direct_calls >= 1,
        "the probe on generic_file_splice_read counted no call of the direct splice"
    );
    assert_eq!(
        refused_calls, 0,
        "generic_file_splice_read() calls (the source's) during the refused read-to-read splice"
    );
}

/// Direct-splices `len` bytes of `from` at `off` into a fresh tmpfs file and returns them.
fn d_copy(ring: &mut Ring, from: &File, off: usize, len: usize) -> Vec<u8> {
    let d = scratch(Fs::Tmpfs);
    let path = d.join("copy");
    must(write_file(&path, b""));
    let o = must(open_rw(&path));
    let res = must(ring.splice(&Splice::new(
        from.as_fd(),
        off as i64,
        o.as_fd(),
        0,
        len as u32,
        DIRECT,
    )));
    must(check::cqe(
        "direct splice into a fresh file",
        res,
        len as i32,
    ));
    must(read_file(&path))
}

/// Destinations of a read-to-read splice from a regular file. Whatever the lend path
/// would say of them (ublk_zc_lend::lend_path_destination_checks: EBADF for a write-only
/// file, EINVAL for a negative position or a file without ->read_iter; /dev/zero,
/// /dev/null and sockets are accepted), a source that does not lend is refused first.
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// a tmpfs file opened O_RDWR
    ReadWrite,
    /// a tmpfs file opened O_WRONLY (EBADF on the lend path)
    WriteOnly,
    /// a tmpfs file opened O_RDWR, at position -4096 (EINVAL from rw_verify_area on the
    /// lend path)
    NegativeOffset,
    DevZero,
    DevNull,
    UnixSocket,
    /// a timerfd: no ->read_iter (EINVAL on the lend path)
    Timerfd,
}

impl Dest {
    /// How the pair's destination file is opened when it is the destination.
    fn file_open(self) -> Option<Open> {
        match self {
            Dest::ReadWrite | Dest::NegativeOffset => Some(Open::ReadWrite),
            Dest::WriteOnly => Some(Open::WriteOnly),
            Dest::DevZero | Dest::DevNull | Dest::UnixSocket | Dest::Timerfd => None,
        }
    }
}

/// From a regular source, read-to-read is EINVAL whatever the destination and however
/// the source is open (a write-only source included: the source is refused for not
/// lending before it is checked for reading), and no byte moves.
#[rstest]
fn read_to_read_regular_source_refused_whatever_the_destination(
    mut ring: Ring,
    #[values(
        Dest::ReadWrite,
        Dest::WriteOnly,
        Dest::NegativeOffset,
        Dest::DevZero,
        Dest::DevNull,
        Dest::UnixSocket,
        Dest::Timerfd
    )]
    dest: Dest,
    #[values(Open::ReadOnly, Open::WriteOnly)] src_open: Open,
) {
    must(require_read_to_read(&mut ring));
    let f = FilePair::opened(
        Fs::Tmpfs,
        Fs::Tmpfs,
        pattern(19, 9000),
        pattern(21, 9000),
        src_open,
        dest.file_open(),
    );
    let off_out = match dest {
        Dest::NegativeOffset => -4096,
        _ => 0,
    };
    // the destination when it is not the pair's file, and a socket's peer
    let (other, _peer): (Option<OwnedFd>, Option<OwnedFd>) = match dest {
        Dest::ReadWrite | Dest::WriteOnly | Dest::NegativeOffset => (None, None),
        Dest::DevZero => (Some(must(open_ro(Path::new("/dev/zero"))).into()), None),
        Dest::DevNull => (Some(must(open_ro(Path::new("/dev/null"))).into()), None),
        Dest::UnixSocket => {
            let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair(AF_UNIX)");
            std::io::Write::write_all(&mut b, &[7u8; 4096]).expect("write to the socket");
            (Some(a.into()), Some(b.into()))
        }
        Dest::Timerfd => (Some(sys::timerfd().expect("timerfd_create")), None),
    };
    let o = match &other {
        Some(fd) => fd.as_fd(),
        None => f.dst_file().as_fd(),
    };
    let res = must(ring.splice(&Splice::new(f.src_file().as_fd(), 0, o, off_out, 4096, R2R)));
    must(check::cqe(
        &format!("read-to-read splice from a {src_open:?} regular file into {dest:?}"),
        res,
        -libc::EINVAL,
    ));
    check_file("source", f.src(), f.src_data());
    check_file("destination file", f.dst(), f.dst_old());
}

// ---------------------------------------------------------------------------------
// The syscalls and IORING_OP_TEE keep refusing the internal flags (any kernel)
// ---------------------------------------------------------------------------------

/// splice(2) with an internal flag is EINVAL, in both directions; the same call
/// without it goes through, so the flag is what was refused.
#[rstest]
fn splice_syscall_rejects_internal_flags(
    #[values(SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ, R2R)] flags: u32,
    #[values(true, false)] pipe_to_file: bool,
) {
    let dir = must(TempDir::new("splice-syscall"));
    let path = dir.join("f");
    must(write_file(&path, &pattern(24, 8192)));
    let f = must(open_rw(&path));
    let (r, w) = pipe();
    nix::unistd::write(&w, b"0123456789").expect("write to the pipe");
    let call = |flags: u32| {
        if pipe_to_file {
            sys::splice(r.as_fd(), &mut None, f.as_fd(), &mut Some(0), 10, flags)
        } else {
            sys::splice(f.as_fd(), &mut Some(0), w.as_fd(), &mut None, 10, flags)
        }
    };
    let what = if pipe_to_file {
        "pipe -> file"
    } else {
        "file -> pipe"
    };
    must(check::errno(
        &format!("splice(2) {what} with flags {flags:#x}"),
        call(flags),
        nix::errno::Errno::EINVAL,
    ));
    must(check::count(
        &format!("splice(2) {what} with flags 0"),
        call(0),
        10,
    ));
}

/// tee(2) with an internal flag is EINVAL; without it, it duplicates the data.
#[rstest]
fn tee_syscall_rejects_internal_flags(
    #[values(SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ, R2R)] flags: u32,
) {
    let ((r1, w1), (_r2, w2)) = (pipe(), pipe());
    nix::unistd::write(&w1, b"0123456789").expect("write to the pipe");
    must(check::errno(
        &format!("tee(2) with flags {flags:#x}"),
        sys::tee(r1.as_fd(), w2.as_fd(), 10, flags),
        nix::errno::Errno::EINVAL,
    ));
    must(check::count(
        "tee(2) with flags 0",
        sys::tee(r1.as_fd(), w2.as_fd(), 10, 0),
        10,
    ));
}

/// vmsplice(2) with an internal flag is EINVAL; without it, it fills the pipe.
#[rstest]
fn vmsplice_syscall_rejects_internal_flags(
    #[values(SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ, R2R)] flags: u32,
) {
    let (r, w) = pipe();
    let data = pattern(25, 3000);
    must(check::errno(
        &format!("vmsplice(2) with flags {flags:#x}"),
        sys::vmsplice(w.as_fd(), &[&data], flags),
        nix::errno::Errno::EINVAL,
    ));
    assert_eq!(
        sys::pipe_bytes(r.as_fd()).expect("FIONREAD"),
        0,
        "the refused vmsplice filled the pipe"
    );
    must(check::count(
        "vmsplice(2) with flags 0",
        sys::vmsplice(w.as_fd(), &[&data], 0),
        3000,
    ));
}

/// IORING_OP_TEE with an internal flag is EINVAL; without it, it duplicates the data.
#[rstest]
fn io_uring_tee_rejects_internal_flags(
    mut ring: Ring,
    #[values(SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ, R2R)] flags: u32,
) {
    let ((r1, w1), (_r2, w2)) = (pipe(), pipe());
    nix::unistd::write(&w1, b"0123456789").expect("write to the pipe");
    let res = must(ring.tee(r1.as_fd(), w2.as_fd(), 10, flags));
    must(check::cqe(
        &format!("IORING_OP_TEE with flags {flags:#x}"),
        res,
        -libc::EINVAL,
    ));
    let res = must(ring.tee(r1.as_fd(), w2.as_fd(), 10, 0));
    assert_eq!(res, 10, "IORING_OP_TEE with flags 0: {}", cqe_display(res));
}
