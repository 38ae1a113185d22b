//! Edges of series v3 on a request the test server holds ([`zc_fixtures::Held`]):
//!
//! - lend positions: `splice_off_in` of -2, and near LLONG_MAX so that pos + len
//!   overflows, and the same positions of the destination (`off`, and -1), are EINVAL,
//!   and nothing reaches the destination (WRITE) or the request
//!   (READ_TO_READ: the READ committed whole afterwards fails with EIO, nothing was
//!   filled); `ublk_splice_pos()` of a tag or an offset out of its field's range is
//!   UBLK_SPLICE_POS_INVALID (~0), which the splice refuses with EINVAL;
//! - stable pages: `queue/stable_writes` is 1 on a zero-copy device, 0 on a copy one;
//! - a fixed `fd_in` opened O_NONBLOCK: /dev/ublkcN registered as a fixed file with
//!   O_NONBLOCK set lends its nowait support to no destination: WRITEs into a pty and a
//!   buffered tmpfs file and a READ_TO_READ from a pty succeed with the right bytes, and
//!   kprobes on their ->write_iter()/->read_iter() see no IOCB_NOWAIT.
//!
//! All need the series.

mod zc_fixtures;

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use ublk::uapi::*;
use ublk::{Device, DeviceConfig, TargetConfig};
use ublk_suite::check;
use ublk_suite::files::{check_bytes, pattern};
use ublk_suite::scratch::{Fs, ScratchDir};
use ublk_suite::tracefs::Kprobe;
use ublk_suite::ublkdev::{fresh, no_devices, require_splice_zc};
use ublk_suite::uring::{Ring, Side, Splice};
use zc_fixtures::{res, zc_test, Go, Held};

const DIRECT: u32 = SPLICE_F_DIRECT;
const R2R: u32 = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;
const REQ: usize = 64 << 10;

fn scratch_file(dir: &ScratchDir, name: &str, data: &[u8]) -> Result<std::path::PathBuf> {
    let p = dir.join(name);
    ublk_suite::files::write_file(&p, data)?;
    Ok(p)
}

/// The positions a lend must refuse for a request of REQ bytes at `tag`, each with why.
fn bad_positions(tag: u16) -> Vec<(String, i64)> {
    vec![
        ("splice_off_in = -2".to_string(), -2),
        (
            format!(
                "splice_off_in = LLONG_MAX - {} (pos + len overflows)",
                REQ - 1
            ),
            i64::MAX - (REQ as i64 - 1),
        ),
        ("splice_off_in = LLONG_MAX".to_string(), i64::MAX),
        (
            "ublk_splice_pos(0, 4096, 0): a tag beyond 12 bits".to_string(),
            ublk_splice_pos(0, 4096, 0) as i64,
        ),
        (
            format!("ublk_splice_pos(0, {tag}, 1 << 30): an offset beyond 30 bits"),
            ublk_splice_pos(0, tag, 1 << 30) as i64,
        ),
    ]
}

/// Positions of the destination file (the sqe's `off`) that the lend path must refuse
/// before any I/O: negative (-1 is no position for a direct splice), and so near
/// LLONG_MAX that pos + len overflows.
fn bad_file_positions() -> Vec<(String, i64)> {
    vec![
        ("at off = -1".to_string(), -1),
        ("at off = -2".to_string(), -2),
        (
            format!("at off = LLONG_MAX - {} (off + len overflows)", REQ - 1),
            i64::MAX - (REQ as i64 - 1),
        ),
    ]
}

/// Lend positions out of range, both directions, on either side: EINVAL, and nothing
/// moved.
#[test]
fn lend_positions_out_of_range_are_einval() {
    zc_test("lend_positions", 120, || {
        // UBLK_SPLICE_POS_INVALID of the v3 header
        for (tag, off) in [(4096u16, 0u32), (0xffff, 0), (0, 1 << 30), (3, u32::MAX)] {
            let p = ublk_splice_pos(0, tag, off);
            if p != u64::MAX {
                bail!(
                    "ublk_splice_pos(0, {tag}, {off:#x}) = {p:#x}: out of its field's range, \
                     it must be UBLK_SPLICE_POS_INVALID (~0), not alias another request"
                );
            }
        }
        let h = Held::start(4, REQ)?;
        let dir = ScratchDir::new(Fs::Tmpfs)?;
        let old = pattern(0x0b0b, 2 * REQ);
        let dst = scratch_file(&dir, "dst", &old)?;
        let src = scratch_file(&dir, "src", &pattern(0x0c0c, REQ))?;
        let fdst = ublk_suite::files::open_rw(&dst)?;
        let fsrc = ublk_suite::files::open_rw(&src)?;
        let mut ring = Ring::new()?;

        // WRITE: the request's pages must not reach the destination
        let data = pattern(0x0d0d, REQ);
        let (io, req) = h.held_io(Some(data.clone()))?;
        let mut errs = Vec::new();
        for (what, pos) in bad_positions(req.tag) {
            let r = ring.splice(&Splice::new(
                h.char_fd(),
                pos,
                fdst.as_fd(),
                0,
                REQ as u32,
                DIRECT,
            ))?;
            println!("WRITE, {what}: {}", res(r));
            if let Err(e) = check::cqe(&format!("WRITE lend at {what}"), r, -libc::EINVAL) {
                errs.push(format!("{e:#}"));
            }
        }
        let pos = ublk_splice_pos(0, req.tag, 0) as i64;
        for (what, off) in bad_file_positions() {
            let r = ring.splice(&Splice::new(
                h.char_fd(),
                pos,
                fdst.as_fd(),
                off,
                REQ as u32,
                DIRECT,
            ))?;
            println!("WRITE, destination {what}: {}", res(r));
            if let Err(e) = check::cqe(
                &format!("WRITE lend to the destination {what}"),
                r,
                -libc::EINVAL,
            ) {
                errs.push(format!("{e:#}"));
            }
        }
        let got = ublk_suite::files::read_file(&dst)?;
        if let Err(e) = check_bytes("the destination after the refused splices", 0, &got, &old) {
            errs.push(format!("{e:#}"));
        }
        // control: the request at its real position does reach it
        let r = ring.splice(&Splice::new(
            h.char_fd(),
            pos,
            fdst.as_fd(),
            REQ as i64,
            REQ as u32,
            DIRECT,
        ))?;
        check::cqe(
            "the WRITE lend at the request's position (control)",
            r,
            REQ as i32,
        )?;
        let got = ublk_suite::files::read_file(&dst)?;
        check_bytes(
            "the destination after the control",
            REQ as u64,
            &got[REQ..],
            &data,
        )?;
        h.target.go(Go::Commit(REQ as i32));
        let w = zc_fixtures::join_within("the held WRITE", io, std::time::Duration::from_secs(30))?;
        if w.as_ref().map(|x| x.0).ok() != Some(REQ) {
            errs.push(format!("the held WRITE returned {w:?}"));
        }

        // READ_TO_READ: nothing may be read into the request; committed whole, it is EIO
        let (io, req) = h.held_io(None)?;
        for (what, pos) in bad_positions(req.tag) {
            let r = ring.splice(&Splice::new(
                h.char_fd(),
                pos,
                fsrc.as_fd(),
                0,
                REQ as u32,
                R2R,
            ))?;
            println!("READ_TO_READ, {what}: {}", res(r));
            if let Err(e) = check::cqe(&format!("READ_TO_READ lend at {what}"), r, -libc::EINVAL) {
                errs.push(format!("{e:#}"));
            }
        }
        let pos = ublk_splice_pos(0, req.tag, 0) as i64;
        for (what, off) in bad_file_positions() {
            let r = ring.splice(&Splice::new(
                h.char_fd(),
                pos,
                fsrc.as_fd(),
                off,
                REQ as u32,
                R2R,
            ))?;
            println!("READ_TO_READ, destination {what}: {}", res(r));
            if let Err(e) = check::cqe(
                &format!("READ_TO_READ lend from the destination {what}"),
                r,
                -libc::EINVAL,
            ) {
                errs.push(format!("{e:#}"));
            }
        }
        h.target.go(Go::Commit(REQ as i32));
        let r = zc_fixtures::join_within("the held READ", io, std::time::Duration::from_secs(30))?;
        println!("the READ committed whole after only refused splices: {r:?}");
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            other => errs.push(format!(
                "the READ committed whole after only refused splices returned {:?}, expected \
                 EIO (nothing was filled)",
                other.map(|x| x.0)
            )),
        }
        h.finish()?;
        no_devices()?;
        if !errs.is_empty() {
            bail!("{}", errs.join("\n"));
        }
        Ok(())
    })
}

fn stable_writes(dev: &Device) -> Result<String> {
    let p = format!("/sys/block/ublkb{}/queue/stable_writes", dev.id());
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("reading {p}"))?
        .trim()
        .to_string())
}

/// A zero-copy device asks for stable pages (its WRITE pages are lent, maybe twice); a
/// copy device does not.
#[test]
fn stable_writes_on_zero_copy_only() {
    zc_test("stable_writes", 60, || {
        fresh()?;
        require_splice_zc()?;
        let mut out = Vec::new();
        for zc in [true, false] {
            let mut cfg = DeviceConfig::new();
            cfg.zero_copy = zc;
            cfg.depth = 4;
            let dev = Device::start(&cfg, &TargetConfig::Null { size: 16 << 20 })?;
            let v = stable_writes(&dev)?;
            println!(
                "{} device ublkb{}: queue/stable_writes = {v}",
                if zc { "zero-copy" } else { "copy" },
                dev.id()
            );
            out.push((zc, v));
            dev.stop_and_delete()?;
        }
        no_devices()?;
        for (zc, v) in out {
            let want = if zc { "1" } else { "0" };
            if v != want {
                bail!(
                    "queue/stable_writes of a {} device is {v}, expected {want}",
                    if zc { "zero-copy" } else { "copy" }
                );
            }
        }
        Ok(())
    })
}

fn set_nonblock(f: std::os::fd::BorrowedFd<'_>, on: bool) -> Result<()> {
    // SAFETY: fcntl on a descriptor we hold; F_GETFL/F_SETFL take an int.
    let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(std::io::Error::last_os_error()).context("F_GETFL");
    }
    let nfl = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, nfl) } < 0 {
        return Err(std::io::Error::last_os_error()).context("F_SETFL");
    }
    Ok(())
}

/// A kprobe on `func` (a ->write_iter or ->read_iter) with the kiocb's ki_flags (offset
/// 32 of struct kiocb on 6.1 x86_64) and an event filter.
fn kiocb_probe(func: &str, filter: &str) -> Result<Kprobe> {
    let p = Kprobe::new(&format!("{func} kflags=+32($arg1):u32"))
        .with_context(|| format!("kprobe on {func} with the kiocb's flags"))?;
    p.filter(filter)?;
    Ok(p)
}

fn tracing_on() -> Result<()> {
    let p = ublk_suite::tracefs::root()?.join("tracing_on");
    std::fs::write(&p, "1").with_context(|| format!("writing 1 to {}", p.display()))
}

const IOCB_NOWAIT: u32 = 1 << 3;
const IOCB_WRITE: u32 = 1 << 18;

/// A pty pair with the slave in raw mode (bytes pass verbatim): (master, slave).
fn raw_pty() -> Result<(File, File)> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let p = nix::pty::openpty(None, None).context("openpty (/dev/ptmx)")?;
    let mut t = tcgetattr(&p.slave).context("tcgetattr of the pty slave")?;
    cfmakeraw(&mut t);
    tcsetattr(&p.slave, SetArg::TCSANOW, &t).context("tcsetattr of the pty slave")?;
    Ok((File::from(p.master), File::from(p.slave)))
}

/// Bytes waiting to be read on a tty (FIONREAD).
fn tty_inq(f: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int through a valid pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// A fixed `fd_in` whose file is O_NONBLOCK: its slot says "nowait", which describes
/// /dev/ublkcN, not the destination.  The lend must take the destination's own nowait
/// support: none for a tty (no FMODE_NOWAIT; tty_write() and tty_read() would block
/// inline with IOCB_NOWAIT), and none for a buffered write to a tmpfs file (no async
/// buffered writes there; tmpfs answers a nowait buffered write with EINVAL).  A WRITE
/// lent into a pty and into a tmpfs file, and a READ_TO_READ lent from the pty's slave,
/// succeed with the right bytes, and kprobes on tty_write(), tty_read() and
/// generic_file_write_iter() (reading the kiocb's ki_flags) see no IOCB_NOWAIT, and see
/// the lends' own writes (IOCB_WRITE, which only the lend sets here).  /dev/ublkcN can
/// be open only once (the server's), so O_NONBLOCK is set on the server's open file with
/// F_SETFL before it is registered.
#[test]
fn fixed_nonblock_fd_in_lends_no_nowait() {
    zc_test("fixed_nonblock_fd_in", 120, || {
        let h = Held::start(4, REQ)?;
        let dir = ScratchDir::new(Fs::Tmpfs)?;
        let dst = scratch_file(&dir, "dst", &pattern(0x1e1e, REQ))?;
        let fdst = ublk_suite::files::open_rw(&dst)?;
        let backing = pattern(0x1f1f, 8 << 20);
        h.backing_write(0, &backing)?;
        set_nonblock(h.char_fd(), true)?;
        let r = fixed_nonblock_case(&h, &fdst, &dst, &backing);
        set_nonblock(h.char_fd(), false)?;
        h.finish()?;
        no_devices()?;
        r
    })
}

fn fixed_nonblock_case(h: &Held, fdst: &File, dst: &Path, backing: &[u8]) -> Result<()> {
    let wait = std::time::Duration::from_secs(30);
    let mut ring = Ring::new()?;
    ring.register_files(&[h.char_fd().as_raw_fd()])?;
    let nowait = format!("kflags & {IOCB_NOWAIT}");
    let lent = format!("kflags & {IOCB_WRITE}");
    let tty_w_nowait = kiocb_probe("tty_write", &nowait)?;
    let tty_w_lent = kiocb_probe("tty_write", &lent)?;
    let tty_r_nowait = kiocb_probe("tty_read", &nowait)?;
    let file_w_nowait = kiocb_probe("generic_file_write_iter", &nowait)?;
    let file_w_lent = kiocb_probe("generic_file_write_iter", &lent)?;
    tracing_on()?;
    let fixed = |pos: u64, out: &File, len: usize, flags: u32| Splice {
        fd_in: Side::Fixed(0),
        off_in: pos as i64,
        fd_out: Side::fd(out.as_fd()),
        off_out: 0,
        len: len as u32,
        flags,
    };
    let (master, slave) = raw_pty()?;
    let tr0 = tty_r_nowait.hits()?;

    // WRITE into the pty (its slave reads what the master is written)
    let data = pattern(0x2020, REQ);
    let mut sl = slave.try_clone().context("dup of the pty slave")?;
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut got = vec![0u8; REQ];
        sl.read_exact(&mut got).map(|_| got)
    });
    let (io, req) = h.held_io(Some(data.clone()))?;
    let r_tty = ring.splice(&fixed(ublk_splice_pos(0, req.tag, 0), &master, REQ, DIRECT))?;
    h.target.go(Go::Commit(REQ as i32));
    let w1 = zc_fixtures::join_within("the WRITE lent into the pty", io, wait)?;
    let got_tty = zc_fixtures::join_within("reading the pty's slave", reader, wait)?;

    // WRITE into a buffered tmpfs file
    let data2 = pattern(0x2121, REQ);
    let (io, req) = h.held_io(Some(data2.clone()))?;
    let r_file = ring.splice(&fixed(ublk_splice_pos(0, req.tag, 0), fdst, REQ, DIRECT))?;
    h.target.go(Go::Commit(REQ as i32));
    let w2 = zc_fixtures::join_within("the WRITE lent into tmpfs", io, wait)?;

    // READ_TO_READ of what waits in the pty's slave (n_tty holds at most 4 KiB)
    let part = 2048usize;
    let typed = pattern(0x2222, part);
    (&master)
        .write_all(&typed)
        .context("writing the pty's master")?;
    zc_fixtures::wait_until("the bytes reach the pty's slave", wait, || {
        tty_inq(&slave) >= part
    })?;
    let (io, req) = h.held_io(None)?;
    let r_read = ring.splice(&fixed(ublk_splice_pos(0, req.tag, 0), &slave, part, R2R))?;
    // committed with what was read: the rest is dispatched again and served
    h.target.go(Go::Commit(part as i32));
    let rd = zc_fixtures::join_within("the READ filled from the pty", io, wait)?;

    let (tw, tl, trn, fw, fl) = (
        tty_w_nowait.traced()?,
        tty_w_lent.traced()?,
        tty_r_nowait.traced()?,
        file_w_nowait.traced()?,
        file_w_lent.traced()?,
    );
    let tr_calls = tty_r_nowait.hits()? - tr0;
    println!(
        "fixed O_NONBLOCK fd_in: WRITE into a pty {}, into tmpfs {}, READ_TO_READ from the \
         pty {}; tty_write: {tw} with IOCB_NOWAIT, {tl} with IOCB_WRITE; tty_read: {trn} of \
         {tr_calls} with IOCB_NOWAIT; generic_file_write_iter: {fw} with IOCB_NOWAIT, {fl} \
         with IOCB_WRITE",
        res(r_tty),
        res(r_file),
        res(r_read)
    );
    check::cqe(
        "WRITE lend from a fixed O_NONBLOCK fd_in into a pty",
        r_tty,
        REQ as i32,
    )?;
    check::cqe(
        "WRITE lend from a fixed O_NONBLOCK fd_in into tmpfs",
        r_file,
        REQ as i32,
    )?;
    check::cqe(
        "READ_TO_READ lend from a fixed O_NONBLOCK fd_in from a pty",
        r_read,
        part as i32,
    )?;
    for (what, w) in [("into the pty", w1), ("into tmpfs", w2)] {
        let n = w.with_context(|| format!("the held WRITE lent {what}"))?.0;
        if n != REQ {
            bail!("the held WRITE lent {what} returned {n}");
        }
    }
    check_bytes(
        "what the pty's slave read",
        0,
        &got_tty.context("reading the pty's slave")?,
        &data,
    )?;
    check_bytes(
        "the tmpfs file the WRITE was lent to",
        0,
        &ublk_suite::files::read_file(dst)?,
        &data2,
    )?;
    let (n, got) = rd.context("the READ filled from the pty")?;
    if n != REQ {
        bail!("the READ filled from the pty returned {n} of {REQ} bytes");
    }
    check_bytes(
        "the READ's first bytes, from the pty",
        h.req_off,
        &got[..part],
        &typed,
    )?;
    let off = h.req_off as usize;
    check_bytes(
        "the READ's rest, dispatched again and served from the backing",
        h.req_off + part as u64,
        &got[part..],
        &backing[off + part..off + REQ],
    )?;
    if tl == 0 || fl == 0 || tr_calls == 0 {
        bail!(
            "the probes did not see the lends' I/O (tty_write with IOCB_WRITE {tl}, \
             generic_file_write_iter with IOCB_WRITE {fl}, tty_read {tr_calls}): they cannot \
             tell IOCB_NOWAIT"
        );
    }
    if tw != 0 || trn != 0 || fw != 0 {
        bail!(
            "IOCB_NOWAIT reached a destination without nowait support: tty_write {tw}, \
             tty_read {trn}, tmpfs buffered write {fw} time(s)"
        );
    }
    Ok(())
}
