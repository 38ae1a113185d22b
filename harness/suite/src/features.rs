//! Does the running kernel have the series' io_uring splice flags?
//!
//! Every test of a new flag asks first, so that on a kernel without the series it
//! fails with a message that names the missing feature, instead of passing because
//! "EINVAL was expected anyway" or failing with a puzzling errno.

use crate::files::{open_ro, open_rw, open_wo, write_file};
use crate::flags::{SPLICE_F_DIRECT, SPLICE_F_READ_TO_READ};
use crate::scratch::{Fs, ScratchDir};
use crate::sys::cqe_display;
use crate::uring::{Ring, Splice};
use anyhow::{bail, Result};
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

/// Fails unless IORING_OP_SPLICE accepts SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ: with a
/// write-only destination it must say EBADF (docs/contract.md: the destination must be open for
/// reading); a kernel that does not know the flag says EINVAL.
pub fn require_read_to_read(ring: &mut Ring) -> Result<()> {
    require_splice_direct(ring)?;
    let dir = ScratchDir::new(Fs::Tmpfs)?;
    let (src, dst) = (dir.join("probe-src"), dir.join("probe-dst"));
    write_file(&src, b"12345678")?;
    write_file(&dst, b"abcdefgh")?;
    let (i, o) = (open_ro(&src)?, open_wo(&dst)?);
    let flags = SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ;
    let res = ring.splice(&Splice::new(i.as_fd(), 0, o.as_fd(), 0, 8, flags))?;
    match res {
        r if r == -libc::EBADF => Ok(()),
        r if r == -libc::EINVAL => bail!(
            "kernel lacks SPLICE_F_READ_TO_READ (io_uring splice returned EINVAL for flags {flags:#x} \
             with a write-only destination, where the series says EBADF)"
        ),
        r => bail!(
            "SPLICE_F_READ_TO_READ probe: io_uring splice with flags {flags:#x} and a write-only \
             destination returned {}, expected -EBADF",
            cqe_display(r)
        ),
    }
}
