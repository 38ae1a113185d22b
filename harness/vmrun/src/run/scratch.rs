//! The scratch disk (`/dev/vda`): an unlinked file QEMU inherits, so that no run can leave
//! one behind.

use anyhow::{Context, Result};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// The descriptor under which QEMU gets the scratch disk, so that its command line is the
/// same on every run: `/proc/self/fd/3`.
pub const SCRATCH_FD: RawFd = 3;

/// A sparse scratch image, already unlinked: QEMU opens it through the inherited descriptor
/// [`SCRATCH_FD`], so that it disappears with the last process that holds it, whatever
/// happens to the run.
pub(super) struct Scratch {
    file: std::fs::File,
}

impl Scratch {
    pub(super) fn create(dir: &Path, size: u64) -> Result<Scratch> {
        let path = dir.join(".scratch.img");
        let _ = std::fs::remove_file(&path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        file.set_len(size.div_ceil(512) * 512)
            .with_context(|| format!("sizing the scratch disk to {size} bytes"))?;
        // QEMU gets it as SCRATCH_FD (console::run dups it there in the child).
        Ok(Scratch { file })
    }

    /// The descriptor QEMU gets as [`SCRATCH_FD`].
    pub(super) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The path under which QEMU opens the scratch disk.
pub fn scratch_qemu_path() -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{SCRATCH_FD}"))
}
