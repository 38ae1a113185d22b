//! Loop devices over regular files (LOOP_CTL_GET_FREE + LOOP_CONFIGURE), detached by
//! the kernel once the last user is gone (LO_FLAGS_AUTOCLEAR).

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of include/uapi/linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of include/uapi/linux/loop.h.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device bound to a file. The binding goes away by itself (autoclear) when the
/// last opener, e.g. a mount, lets go after this handle is dropped.
pub struct LoopDev {
    pub path: PathBuf,
    _dev: File,
}

/// Binds a free loop device to `backing`.
pub fn attach(backing: &Path) -> Result<LoopDev> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("opening /dev/loop-control (CONFIG_BLK_DEV_LOOP)")?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("LOOP_CTL_GET_FREE");
    }
    let path = PathBuf::from(format!("/dev/loop{n}"));
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(backing)
        .with_context(|| format!("opening {}", backing.display()))?;
    // SAFETY: an all-zero loop_config is valid; the fields we need are set below.
    let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
    cfg.fd = file.as_raw_fd() as u32;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    // SAFETY: cfg is a valid loop_config that outlives the call.
    let ret = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "LOOP_CONFIGURE {} over {}",
                path.display(),
                backing.display()
            )
        });
    }
    Ok(LoopDev { path, _dev: dev })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
