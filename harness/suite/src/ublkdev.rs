//! ublk devices seen from a test: a clean slate on entry, device nodes that are real
//! block devices before any I/O, and the zero-copy feature check.
//!
//! A writer that opens `/dev/ublkbN` with O_CREAT after the device is gone creates a
//! regular file there on devtmpfs, and every later device N then fails to come up.  No
//! test opens a device path with O_CREAT (`dd ... conv=nocreat`, [`crate::blockio`]'s
//! opens), every test waits for a real block device node before its I/O, and every ublk
//! test starts with [`fresh`], which removes whatever an earlier test left behind.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use ublk::uapi::{flag_names, UBLK_F_SPLICE_ZC};

/// How a device moves data: through server buffers, or by splice (UBLK_F_SPLICE_ZC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Copy,
    Zc,
}

/// `/dev/ublkbN` and `/dev/ublkcN` entries, whatever they are (not /dev/ublk-control).
pub fn ublk_entries() -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/dev")
        .context("listing /dev")?
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("ublkb") || n.starts_with("ublkc")
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

/// Is `entry` a block or character device node?
fn is_device_node(entry: &Path) -> bool {
    std::fs::symlink_metadata(entry)
        .map(|md| md.file_type().is_block_device() || md.file_type().is_char_device())
        .unwrap_or(false)
}

/// Is `entry` (`/dev/ublkbN` or `/dev/ublkcN`) the node of a device the kernel has?
fn is_live_node(entry: &Path) -> bool {
    let Ok(md) = std::fs::symlink_metadata(entry) else {
        return false;
    };
    let name = entry
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let ft = md.file_type();
    if name.starts_with("ublkb") {
        ft.is_block_device() && Path::new("/sys/class/block").join(&name).exists()
    } else {
        ft.is_char_device() && Path::new("/sys/class/ublk-char").join(&name).exists()
    }
}

/// The start of every ublk test: no ublk device and no `/dev/ublk[bc]*` entry may be
/// left.  Whatever an earlier (failed) test left is removed, and said on stderr: devices
/// are stopped and deleted, their servers waited for; stray entries (a regular file made
/// by a writer that raced a removal, a stale node) are unlinked.  Fails only if something
/// cannot be cleaned up.
pub fn fresh() -> Result<()> {
    // A device the previous test deleted may still be going (devtmpfs removes the nodes
    // asynchronously; slow on a debug kernel): give it a few seconds first.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (entries, ids) = loop {
        let entries = ublk_entries()?;
        let ids = ublk::admin::device_ids();
        if entries.is_empty() && ids.is_empty() {
            return Ok(());
        }
        // only device nodes whose device is gone vanish by themselves (a regular file
        // or a live device never does)
        let deleting = !entries.is_empty()
            && entries
                .iter()
                .all(|e| is_device_node(e) && !is_live_node(e));
        if !deleting || Instant::now() >= deadline {
            break (entries, ids);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "  .. fresh: left by an earlier test: entries {entries:?}, device ids {ids:?}; cleaning up"
    );
    let mut errs = Vec::new();
    if !ids.is_empty() {
        match ublk::admin::delete_all(Duration::from_secs(30)) {
            Ok(done) => eprintln!("  .. fresh: deleted ublk devices {done:?}"),
            Err(e) => errs.push(format!("deleting the devices: {e:#}")),
        }
    }
    for e in ublk_entries()? {
        if !is_live_node(&e) {
            match std::fs::remove_file(&e) {
                Ok(()) => eprintln!("  .. fresh: removed stray {}", e.display()),
                Err(err) => errs.push(format!("removing stray {}: {err}", e.display())),
            }
        }
    }
    let left = ublk_entries()?;
    if !left.is_empty() || !errs.is_empty() {
        bail!(
            "ublk devices left by an earlier test cannot be cleaned up: entries {left:?}; {}",
            errs.join("; ")
        );
    }
    Ok(())
}

/// Waits until `/dev/ublkb<id>` is a block device (devtmpfs creates the node
/// asynchronously), up to `timeout`.  Anything else at that path is an error.
pub fn wait_block_node(id: u32, timeout: Duration) -> Result<PathBuf> {
    let path = ublk::device::block_path(id);
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_block_device() => return Ok(path),
            Ok(md) => bail!(
                "{} exists but is not a block device ({:?}): a writer created it?",
                path.display(),
                md.file_type()
            ),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{} did not appear within {timeout:?}", path.display())
                })
            }
        }
    }
}

/// Devices the driver has (sysfs `ublk-char` entries).
fn sysfs_devices() -> Vec<String> {
    std::fs::read_dir("/sys/class/ublk-char")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// No ublk device exists: no `/dev/ublk[bc]*` entry, no device the driver knows, no
/// server state file under /run/ublk.
pub fn no_devices() -> Result<()> {
    let entries = ublk_entries()?;
    let devices = sysfs_devices();
    let states = ublk::state::ids();
    if !entries.is_empty() || !devices.is_empty() || !states.is_empty() {
        bail!(
            "ublk devices are left: /dev entries {entries:?}, devices {devices:?}, state files \
             of ids {states:?}"
        );
    }
    Ok(())
}

/// Fails, naming the feature, unless ADD_DEV grants UBLK_F_SPLICE_ZC (bit 63).
pub fn require_splice_zc() -> Result<()> {
    let granted = ublk::admin::features().context("probing the ublk features (ADD_DEV)")?;
    if granted & UBLK_F_SPLICE_ZC == 0 {
        bail!(
            "kernel lacks UBLK_F_SPLICE_ZC (bit 63; ADD_DEV did not grant it: granted \
             {granted:#x} = {})",
            flag_names(granted)
        );
    }
    Ok(())
}
