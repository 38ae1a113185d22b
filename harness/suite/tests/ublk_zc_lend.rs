//! The lend path (series v3 patch 3/4, v2's 5/5) and the rule that SPLICE_F_DIRECT is
//! io_uring's own (patch 1/4), on points the other tests do not reach, each written to
//! catch a mutant of scripts/mutants.sh (patches/mutants/):
//!
//! - the destination checks of a direct splice from /dev/ublkcN, which does not go through
//!   do_splice_direct(): EBADF and EINVAL for a WRITE into a read-only or O_APPEND file,
//!   a file without ->write_iter or a negative position, and for a READ_TO_READ from a
//!   write-only file, a file without ->read_iter or a negative position;
//! - any readable destination with ->read_iter can be read into a READ request (v3 has
//!   no generic_file_splice_read gate): /dev/zero, /dev/null, a TCP socket;
//! - a WRITE whose pages are lent to a splice that cannot finish (a full TCP socket) does
//!   not end when the server commits it, only when the splice has completed;
//! - punted READ_TO_READ and O_DIRECT direct splices are not hashed in io-wq, a buffered
//!   one is (a kprobe on io_wq_submit_work reads the work's flags);
//! - neither SPLICE_F_DIRECT nor SPLICE_F_READ_TO_READ reaches a ->splice_read(): not
//!   from sendfile(2) or copy_file_range(2), and since v3 not from io_uring's pipe path
//!   either (a kprobe on generic_file_splice_read reads its flags).
//!
//! All need the series: on a kernel without it they fail naming the missing feature.

mod ublk_common;

use anyhow::{anyhow, Context, Result};
use io_uring::{opcode, squeue, types, IoUring};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use ublk::uapi::*;
use ublk_common::{backing_file, Backing, Held};
use ublk_suite::blockio::open_direct;
use ublk_suite::check::{self, must};
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::targets::Release;
use ublk_suite::tracefs::Kprobe;
use ublk_suite::uring::{Ring, Splice};

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;
const REQ: usize = 64 << 10;
const REQ_OFF: u64 = 1 << 20;

/// A [`Held`] device in zero-copy mode, its held I/O REQ bytes at REQ_OFF.
fn held() -> Result<Held> {
    Held::start(true, 0, REQ, REQ_OFF)
}

fn scratch_file(dir: &ScratchDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    must(ublk_suite::files::write_file(&p, data));
    p
}

fn open(p: &std::path::Path, opts: &mut OpenOptions) -> File {
    opts.open(p)
        .unwrap_or_else(|e| panic!("opening {}: {e}", p.display()))
}

/// A connected loopback TCP pair (sender, receiver).
fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    ublk_suite::net::loopback_up()?;
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let tx = TcpStream::connect(l.local_addr()?).context("connecting")?;
    let (rx, _) = l.accept().context("accept")?;
    Ok((tx, rx))
}

/// The destination checks of the lend path: the splice does not go through
/// do_splice_direct(), so io_uring checks the destination itself, and nothing may reach
/// or leave the files it refuses.
#[test]
fn lend_path_destination_checks() {
    let h = must(held());
    let dir = must(ScratchDir::new(Fs::Tmpfs));
    let old = pattern(0x5a, 2 * REQ);
    let ro = scratch_file(&dir, "read-only", &old);
    let app = scratch_file(&dir, "append", &old);
    let wo = scratch_file(&dir, "write-only", &old);
    let rw = scratch_file(&dir, "read-write", &old);
    let tfd = must(ublk_suite::sys::timerfd().context("timerfd_create"));
    let mut ring = must(Ring::new());

    let data = pattern(0x5b, REQ);
    let (io, req) = must(h.held_io(Some(data)));
    let pos = ublk_splice_pos(0, req.tag, 0);
    let f_ro = open(&ro, OpenOptions::new().read(true));
    let f_app = open(&app, OpenOptions::new().write(true).append(true));
    let f_rw = open(&rw, OpenOptions::new().read(true).write(true));
    for (what, f, off, want) in [
        (
            "WRITE into a destination opened O_RDONLY",
            f_ro.as_fd(),
            0,
            -libc::EBADF,
        ),
        (
            "WRITE into a destination opened O_APPEND",
            f_app.as_fd(),
            0,
            -libc::EINVAL,
        ),
        (
            "WRITE into a destination without ->write_iter (a timerfd)",
            tfd.as_fd(),
            0,
            -libc::EINVAL,
        ),
        (
            "WRITE into a destination at position -4096",
            f_rw.as_fd(),
            -4096,
            -libc::EINVAL,
        ),
    ] {
        let r = must(ring.splice(&Splice::new(
            h.char_fd(),
            pos as i64,
            f,
            off,
            REQ as u32,
            DIRECT,
        )));
        println!("case {what}: {}", ublk_suite::sys::cqe_display(r));
        must(check::cqe(what, r, want));
    }
    h.target.release(Release::Serve);
    assert_eq!(
        io.join().expect("the I/O thread").expect("the WRITE").0,
        REQ
    );
    for p in [&ro, &app, &rw] {
        let got = must(ublk_suite::files::read_file(p));
        must(check_bytes(
            &format!("{} after the refused splice", p.display()),
            0,
            &got,
            &old,
        ));
    }

    let (io, req) = must(h.held_io(None));
    let pos = ublk_splice_pos(0, req.tag, 0);
    let f_wo = open(&wo, OpenOptions::new().write(true));
    for (what, f, off, want) in [
        (
            "READ_TO_READ from a destination opened O_WRONLY",
            f_wo.as_fd(),
            0,
            -libc::EBADF,
        ),
        (
            "READ_TO_READ from a destination without ->read_iter (a timerfd)",
            tfd.as_fd(),
            0,
            -libc::EINVAL,
        ),
        (
            "READ_TO_READ from a destination without ->read_iter (/dev/ublkcN itself)",
            h.char_fd(),
            0,
            -libc::EINVAL,
        ),
        (
            "READ_TO_READ from a destination at position -4096",
            f_rw.as_fd(),
            -4096,
            -libc::EINVAL,
        ),
    ] {
        let r = must(ring.splice(&Splice::new(
            h.char_fd(),
            pos as i64,
            f,
            off,
            REQ as u32,
            R2R,
        )));
        println!("case {what}: {}", ublk_suite::sys::cqe_display(r));
        must(check::cqe(what, r, want));
    }
    h.target.release(Release::Serve);
    assert_eq!(io.join().expect("the I/O thread").expect("the READ").0, REQ);
    let got = must(ublk_suite::files::read_file(&wo));
    must(check_bytes(
        "the write-only destination after the refused splice",
        0,
        &got,
        &old,
    ));
    must(h.finish());
}

/// A READ_TO_READ destination only needs to be readable and have ->read_iter (series v3
/// dropped v2's rule that its ->splice_read be generic_file_splice_read): a held READ is
/// read into from /dev/null (0 bytes, end of file), from /dev/zero (its first half) and
/// from a TCP socket whose peer has sent data (its second half, resubmitting the rest
/// after a short read), then committed whole; the reader gets the zeroes and the
/// socket's data.
#[test]
fn read_to_read_from_any_readable_destination() {
    let h = must(held());
    let mut ring = must(Ring::new());
    let (io, req) = must(h.held_io(None));
    let at = |off: usize| ublk_splice_pos(0, req.tag, off as u32) as i64;
    let half = REQ / 2;
    let null = open(
        std::path::Path::new("/dev/null"),
        OpenOptions::new().read(true),
    );
    let zero = open(
        std::path::Path::new("/dev/zero"),
        OpenOptions::new().read(true),
    );
    let r = must(ring.splice(&Splice::new(
        h.char_fd(),
        at(0),
        null.as_fd(),
        0,
        half as u32,
        R2R,
    )));
    println!(
        "READ_TO_READ from /dev/null: {}",
        ublk_suite::sys::cqe_display(r)
    );
    must(check::cqe("READ_TO_READ from /dev/null", r, 0));
    let r = must(ring.splice(&Splice::new(
        h.char_fd(),
        at(0),
        zero.as_fd(),
        0,
        half as u32,
        R2R,
    )));
    println!(
        "READ_TO_READ from /dev/zero: {}",
        ublk_suite::sys::cqe_display(r)
    );
    must(check::cqe(
        "READ_TO_READ of the first half from /dev/zero",
        r,
        half as i32,
    ));
    let (mut tx, rx) = must(tcp_pair());
    let sent = pattern(0x5c, half);
    tx.write_all(&sent).expect("sending");
    let mut done = 0;
    while done < half {
        let r = must(ring.splice(&Splice::new(
            h.char_fd(),
            at(half + done),
            rx.as_fd(),
            0,
            (half - done) as u32,
            R2R,
        )));
        println!(
            "READ_TO_READ from a TCP socket at +{done}: {}",
            ublk_suite::sys::cqe_display(r)
        );
        assert!(
            r > 0,
            "READ_TO_READ of the second half from a TCP socket at +{done}: {}",
            ublk_suite::sys::cqe_display(r)
        );
        done += r as usize;
    }
    h.target.release(Release::Commit(REQ as i32));
    let (n, got) = io.join().expect("the I/O thread").expect("the READ");
    assert_eq!(n, REQ);
    must(h.finish());
    let mut want = vec![0u8; half];
    want.extend_from_slice(&sent);
    must(check_bytes(
        "the READ: /dev/zero's zeroes, then the socket's data",
        REQ_OFF,
        &got,
        &want,
    ));
}

/// The lifetime of a lend: a WRITE request whose pages are lent to a direct splice into
/// a TCP socket with no room left is committed by the server; the writer must not get
/// its WRITE back before the splice has completed (the lend holds a reference on the
/// request), and the socket's peer must receive the WRITE's data.
#[test]
fn write_ends_only_after_its_lend() {
    let h = must(held());
    let data = pattern(0x6d, REQ);
    let (io, req) = must(h.held_io(Some(data.clone())));
    let (tx, mut rx) = must(tcp_pair());
    // Small buffers, then fill the send side until it takes nothing more.
    for (fd, opt) in [
        (tx.as_raw_fd(), libc::SO_SNDBUF),
        (rx.as_raw_fd(), libc::SO_RCVBUF),
    ] {
        let v: libc::c_int = 4096;
        // SAFETY: setsockopt reads sizeof(c_int) bytes from a live local.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
    }
    tx.set_nonblocking(true).expect("O_NONBLOCK");
    let mut junk = 0usize;
    let chunk = [0xeeu8; 1024];
    let (t0, mut refused) = (Instant::now(), 0);
    while refused < 3 && t0.elapsed() < Duration::from_secs(10) {
        match (&tx).write(&chunk) {
            Ok(n) => (junk, refused) = (junk + n, 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    tx.set_nonblocking(false).expect("blocking again");
    println!("the socket took {junk} bytes before it was full");

    let mut ring = IoUring::new(4).expect("io_uring_setup");
    let sqe = opcode::Splice::new(
        types::Fd(h.char_fd().as_raw_fd()),
        ublk_splice_pos(0, req.tag, 0) as i64,
        types::Fd(tx.as_raw_fd()),
        0,
        REQ as u32,
    )
    .flags(DIRECT)
    .build()
    .user_data(7);
    // SAFETY: the SQE names only fds and offsets, no user memory.
    unsafe { ring.submission().push(&sqe) }.expect("SQ full");
    ring.submit().expect("io_uring_enter");
    std::thread::sleep(Duration::from_millis(300));
    if let Some(c) = ring.completion().next() {
        panic!(
            "the splice into a full socket completed at once ({}): the test cannot hold a lend",
            ublk_suite::sys::cqe_display(c.result())
        );
    }

    h.target.release(Release::Commit(REQ as i32));
    std::thread::sleep(Duration::from_millis(500));
    let early = io.is_finished();
    // Drain the socket: the junk, then the WRITE's data.
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; junk + REQ];
        rx.set_read_timeout(Some(Duration::from_secs(30))).ok();
        rx.read_exact(&mut got).map(|_| got)
    });
    ring.submit_and_wait(1).expect("waiting for the splice");
    let res = ring.completion().next().expect("a CQE").result();
    let got = reader
        .join()
        .expect("the reader")
        .expect("reading the socket");
    let w = io.join().expect("the I/O thread");
    assert!(
        !early,
        "the WRITE returned to the writer ({w:?}) while its pages were still lent to a \
         splice that had not completed: the request ended before its lend"
    );
    must(check::cqe("the splice into the socket", res, REQ as i32));
    assert_eq!(w.expect("the WRITE").0, REQ);
    must(check_bytes(
        "the WRITE's data at the socket's peer",
        0,
        &got[junk..],
        &data,
    ));
    must(h.finish());
}

/// Events go to the trace buffer (another test may have turned tracing off).
fn tracing_on() -> Result<()> {
    let p = ublk_suite::tracefs::root()?.join("tracing_on");
    std::fs::write(&p, "1").with_context(|| format!("writing 1 to {}", p.display()))
}

/// Submits one direct splice with IOSQE_ASYNC (straight to io-wq) and returns its result.
fn async_splice(ring: &mut IoUring, sp: Splice) -> i32 {
    let (ublk_suite::uring::Side::Fd(i), ublk_suite::uring::Side::Fd(o)) = (sp.fd_in, sp.fd_out)
    else {
        panic!("async_splice takes plain fds");
    };
    let sqe = opcode::Splice::new(types::Fd(i), sp.off_in, types::Fd(o), sp.off_out, sp.len)
        .flags(sp.flags)
        .build()
        .flags(squeue::Flags::ASYNC)
        .user_data(9);
    // SAFETY: the SQE names only fds and offsets, no user memory.
    unsafe { ring.submission().push(&sqe) }.expect("SQ full");
    ring.submit_and_wait(1).expect("io_uring_enter");
    ring.completion().next().expect("a CQE").result()
}

/// io-wq's per-inode hashing: a punted direct splice that reads its destination
/// (READ_TO_READ) or writes it with O_DIRECT runs unhashed; a buffered WRITE is hashed.
/// IOSQE_ASYNC punts each splice; a kprobe on io_wq_submit_work reads the work's flags
/// (IO_WQ_WORK_HASHED = 2, at offset 8 of struct io_wq_work).
#[test]
fn punted_direct_splices_skip_the_inode_hash() {
    let h = must(held());
    let probe = must(
        Kprobe::new("io_wq_submit_work wflags=+8($arg1):u32")
            .context("kprobe on io_wq_submit_work with the work's flags"),
    );
    must(tracing_on());
    must(probe.filter("wflags & 2"));
    let direct_file = must(backing_file(Backing::Direct, 4 << 20)).expect("an ext4 file");
    let f_direct = must(open_direct(&direct_file.path));
    let f_buf = must(ublk_suite::files::open_rw(&h.backing.path));
    let mut ring = IoUring::new(4).expect("io_uring_setup");

    let mut cases = Vec::new();
    let (io, req) = must(h.held_io(None));
    let pos = ublk_splice_pos(0, req.tag, 0) as i64;
    let n0 = probe.hits().expect("hits");
    let r = async_splice(
        &mut ring,
        Splice::new(
            h.char_fd(),
            pos,
            f_buf.as_fd(),
            REQ_OFF as i64,
            REQ as u32,
            R2R,
        ),
    );
    cases.push((
        "READ_TO_READ from a tmpfs file",
        r,
        probe.hits().expect("hits") - n0,
        must(probe.traced()),
        0,
    ));
    h.target.release(Release::Commit(REQ as i32));
    io.join().expect("the I/O thread").expect("the READ");

    for (what, f, want_hashed) in [
        ("O_DIRECT WRITE to an ext4 file", &f_direct, 0),
        ("buffered WRITE to a tmpfs file", &f_buf, 1),
    ] {
        must(probe.filter("wflags & 2"));
        let (io, req) = must(h.held_io(Some(pattern(0x77, REQ))));
        let pos = ublk_splice_pos(0, req.tag, 0) as i64;
        let n0 = probe.hits().expect("hits");
        let r = async_splice(
            &mut ring,
            Splice::new(
                h.char_fd(),
                pos,
                f.as_fd(),
                REQ_OFF as i64,
                REQ as u32,
                DIRECT,
            ),
        );
        cases.push((
            what,
            r,
            probe.hits().expect("hits") - n0,
            must(probe.traced()),
            want_hashed,
        ));
        h.target.release(Release::Commit(REQ as i32));
        io.join().expect("the I/O thread").expect("the WRITE");
    }
    drop(probe);
    drop(direct_file);
    must(h.finish());
    for (what, r, punts, hashed, want) in cases {
        println!(
            "{what}: {} after {punts} io-wq run(s), {hashed} of them hashed",
            ublk_suite::sys::cqe_display(r)
        );
        must(check::cqe(what, r, REQ as i32));
        assert!(
            punts >= 1,
            "{what}: IOSQE_ASYNC did not reach io_wq_submit_work"
        );
        assert_eq!(
            hashed, want,
            "{what}: {hashed} hashed io-wq work item(s), {want} expected"
        );
    }
}

/// Neither SPLICE_F_DIRECT nor SPLICE_F_READ_TO_READ reaches a ->splice_read():
/// sendfile(2) and copy_file_range(2), which go through do_splice_direct() too, never
/// passed them, and since series v3 io_uring's pipe path (a direct splice from a source
/// that does not lend, file to file here) hands the source only splice(2)'s own flags
/// (v2 passed SPLICE_F_DIRECT). A kprobe on generic_file_splice_read, tmpfs's on 6.1,
/// reads its flags; each of the three calls it. The filter that counts the flags is
/// shown to work on splice(2) to a pipe with SPLICE_F_NONBLOCK, which it must count.
#[test]
fn splice_f_direct_never_reaches_splice_read() {
    let mut ring = must(Ring::new());
    must(ublk_suite::features::require_splice_direct(&mut ring));
    let dir = must(ScratchDir::new(Fs::Tmpfs));
    let src = scratch_file(&dir, "src", &pattern(0x11, 16 << 10));
    let dst = scratch_file(&dir, "dst", &[]);
    let fi = must(ublk_suite::files::open_rw(&src));
    let fo = must(ublk_suite::files::open_rw(&dst));
    let probe = must(
        Kprobe::new("generic_file_splice_read sflags=$arg5:u32")
            .context("kprobe on generic_file_splice_read with its flags"),
    );
    must(tracing_on());
    let filter = format!("sflags & {}", SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ);
    let run_with = |filter: &str, what: &str, f: &mut dyn FnMut() -> Result<usize>| {
        must(probe.filter(filter));
        let n0 = probe.hits().expect("hits");
        let n = must(f().with_context(|| what.to_string()));
        assert!(n > 0, "{what} moved nothing");
        (probe.hits().expect("hits") - n0, must(probe.traced()))
    };
    let run = |what: &str, f: &mut dyn FnMut() -> Result<usize>| run_with(&filter, what, f);
    let (pr, pw) = nix::unistd::pipe().expect("pipe(2)");
    let control_filter = format!("sflags & {}", libc::SPLICE_F_NONBLOCK);
    let control = run_with(
        &control_filter,
        "splice(2) with SPLICE_F_NONBLOCK",
        &mut || {
            ublk_suite::sys::splice(
                fi.as_fd(),
                &mut Some(0),
                pw.as_fd(),
                &mut None,
                4096,
                libc::SPLICE_F_NONBLOCK,
            )
            .map_err(anyhow::Error::from)
        },
    );
    drop((pr, pw));
    assert!(
        control.0 >= 1 && control.1 == control.0,
        "the flag filter does not count: splice(2) with SPLICE_F_NONBLOCK made {} \
         generic_file_splice_read call(s), {} traced with {control_filter}",
        control.0,
        control.1
    );
    let sendfile = run("sendfile(2)", &mut || {
        ublk_suite::sys::sendfile(fo.as_fd(), fi.as_fd(), &mut Some(0), 4096)
            .map_err(anyhow::Error::from)
    });
    let cfr = run("copy_file_range(2)", &mut || {
        ublk_suite::sys::copy_file_range(
            fi.as_fd(),
            &mut Some(4096),
            fo.as_fd(),
            &mut Some(4096),
            4096,
            0,
        )
        .map_err(anyhow::Error::from)
    });
    let uring = run("IORING_OP_SPLICE with SPLICE_F_DIRECT", &mut || {
        let r = ring.splice(&Splice::new(
            fi.as_fd(),
            8192,
            fo.as_fd(),
            8192,
            4096,
            DIRECT,
        ))?;
        usize::try_from(r).map_err(|_| anyhow!("CQE {}", ublk_suite::sys::cqe_display(r)))
    });
    drop(probe);
    println!(
        "(calls, with SPLICE_F_DIRECT or SPLICE_F_READ_TO_READ): sendfile {sendfile:?}, \
         copy_file_range {cfr:?}, io_uring {uring:?}"
    );
    for (what, (calls, direct)) in [
        ("sendfile(2)", sendfile),
        ("copy_file_range(2)", cfr),
        ("io_uring's direct splice (pipe path)", uring),
    ] {
        assert!(
            calls >= 1,
            "{what}: generic_file_splice_read was not called"
        );
        assert_eq!(
            direct, 0,
            "{what}: {direct} of {calls} ->splice_read() calls had SPLICE_F_DIRECT or \
             SPLICE_F_READ_TO_READ ({filter})"
        );
    }
}
