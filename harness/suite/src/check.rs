//! Assertions that explain themselves: a failed one names the case, what came back
//! and what the series says should have.

use crate::sys::{cqe_display, errno_name, SysResult};
use anyhow::{bail, Result};
use nix::errno::Errno;

/// Panics with the whole error chain, which becomes the test's failure message.
#[track_caller]
pub fn must<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}"),
    }
}

/// A CQE result must be `want` (a byte count, or a negative errno such as `-libc::EINVAL`).
pub fn cqe(what: &str, got: i32, want: i32) -> Result<()> {
    if got != want {
        bail!(
            "{what}: the CQE result is {}, expected {}",
            cqe_display(got),
            cqe_display(want)
        );
    }
    Ok(())
}

/// A syscall must fail with `want`.
pub fn errno(what: &str, got: SysResult, want: Errno) -> Result<()> {
    match got {
        Err(e) if e == want => Ok(()),
        Err(e) => bail!(
            "{what}: failed with {}, expected {}",
            errno_name(e),
            errno_name(want)
        ),
        Ok(n) => bail!("{what}: returned {n}, expected {}", errno_name(want)),
    }
}

/// A syscall must return `want` bytes.
pub fn count(what: &str, got: SysResult, want: usize) -> Result<()> {
    match got {
        Ok(n) if n == want => Ok(()),
        Ok(n) => bail!("{what}: returned {n}, expected {want}"),
        Err(e) => bail!("{what}: failed with {}, expected {want}", errno_name(e)),
    }
}
