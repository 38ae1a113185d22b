//! Does the running kernel have the series' io_uring splice flags?
//!
//! Every test of a new flag asks first, so that on a kernel without the series it
//! fails with a message that names the missing feature, instead of passing because
//! "EINVAL was expected anyway" or failing with a puzzling errno.

use crate::files::{open_ro, open_rw, write_file};
use crate::flags::{SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ};
use crate::scratch::{Fs, ScratchDir};
use crate::sys::cqe_display;
use crate::uring::{Ring, Splice};
use anyhow::{bail, Context, Result};
use std::os::fd::AsFd;

/// Fails unless IORING_OP_SPLICE accepts SPLICE_F_DIRECT: a direct splice of 8 bytes
/// between two tmpfs files must return 8.
pub fn require_splice_direct(ring: &mut Ring) -> Result<()> {
    let dir = ScratchDir::new(Fs::Tmpfs)?;
    let (src, dst) = (dir.join("probe-src"), dir.join("probe-dst"));
    write_file(&src, b"12345678")?;
    write_file(&dst, b"")?;
    let (i, o) = (open_ro(&src)?, open_rw(&dst)?);
    let res = ring.splice(&Splice::new(i.as_fd(), 0, o.as_fd(), 0, 8, SPLICE_F_DIRECT))?;
    match res {
        8 => Ok(()),
        r if r == -libc::EINVAL => bail!(
            "kernel lacks SPLICE_F_DIRECT (io_uring splice returned EINVAL for flags {SPLICE_F_DIRECT:#x})"
        ),
        r => bail!(
            "SPLICE_F_DIRECT probe: io_uring splice of 8 bytes between two tmpfs files returned {}",
            cqe_display(r)
        ),
    }
}

/// Fails unless IORING_OP_SPLICE accepts SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ.  The
/// flag is only of use from a source that lends its pages (/dev/ublkcN), and from a
/// regular file the series says EINVAL, as a kernel without the flag does; so the probe
/// gives a pipe as the source: past the flag checks of the SQE, a direct splice refuses
/// it with ESPIPE (docs/contract.md), and a kernel that does not know the flag says
/// EINVAL.
pub fn require_read_to_read(ring: &mut Ring) -> Result<()> {
    require_splice_direct(ring)?;
    let dir = ScratchDir::new(Fs::Tmpfs)?;
    let dst = dir.join("probe-dst");
    write_file(&dst, b"abcdefgh")?;
    let o = open_rw(&dst)?;
    let (r, w) = nix::unistd::pipe().context("pipe(2) for the SPLICE_F_READ_TO_READ probe")?;
    nix::unistd::write(&w, b"12345678").context("writing the probe's pipe")?;
    let flags = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;
    let res = ring.splice(&Splice::new(r.as_fd(), 0, o.as_fd(), 0, 8, flags))?;
    match res {
        r if r == -libc::ESPIPE => Ok(()),
        r if r == -libc::EINVAL => bail!(
            "kernel lacks SPLICE_F_READ_TO_READ (io_uring splice returned EINVAL for flags {flags:#x} \
             with a pipe as the source, where the series says ESPIPE)"
        ),
        r => bail!(
            "SPLICE_F_READ_TO_READ probe: io_uring splice with flags {flags:#x} and a pipe as the \
             source returned {}, expected -ESPIPE",
            cqe_display(r)
        ),
    }
}
