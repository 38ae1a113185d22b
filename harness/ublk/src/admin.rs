//! Operations on devices served by other processes: list, delete, features.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::ctrl::{is_errno, probe_features, Ctrl};
use crate::device::{block_path, char_path, wait_gone};
use crate::state::{self, DevState};
use crate::uapi::*;

/// Every flag this crate knows: what `features` asks for.
pub fn all_known_flags() -> u64 {
    UBLK_F_NAMES.iter().fold(0, |a, (b, _)| a | b)
}

/// Flags the running kernel grants when asked for all known ones.
pub fn features() -> Result<u64> {
    probe_features(all_known_flags())
}

/// Ids of existing ublk devices (from sysfs, /dev and state files).
pub fn device_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    let scan = |dir: &Path, ids: &mut Vec<u32>| {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name();
                if let Some(id) = n
                    .to_string_lossy()
                    .strip_prefix("ublkc")
                    .and_then(|s| s.parse::<u32>().ok())
                {
                    ids.push(id);
                }
            }
        }
    };
    scan(Path::new("/sys/class/ublk-char"), &mut ids);
    scan(Path::new("/dev"), &mut ids);
    ids.extend(state::ids());
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[derive(Debug, Clone)]
pub struct DevSummary {
    pub id: u32,
    pub info: ublksrv_ctrl_dev_info,
    pub state: Option<DevState>,
}

/// Existing devices, with driver info and (if any) the server's state file.
/// State files of devices that no longer exist are removed.
pub fn list() -> Result<Vec<DevSummary>> {
    let mut ctrl = Ctrl::open()?;
    let mut out = Vec::new();
    for id in device_ids() {
        match ctrl.get_dev_info(id) {
            Ok(info) => out.push(DevSummary {
                id,
                info,
                state: state::read(id),
            }),
            Err(e) if is_errno(&e, libc::ENODEV) => state::remove(id),
            Err(e) => return Err(e).with_context(|| format!("device {id}")),
        }
    }
    Ok(out)
}

/// Is `pid` a live (not zombie) process?
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    match stat.rsplit_once(')') {
        Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z') | Some('X')),
        None => true,
    }
}

/// Stop and delete device `id`, waiting until it is gone.
///
/// STOP_DEV first: the server's queues get UBLK_IO_RES_ABORT and the server
/// deletes the device and exits.  Once the server process is gone (also
/// when it was killed: the driver's monitor aborts its queues), DEL_DEV the
/// device if it still exists.  DEL_DEV is never sent while the server lives:
/// it would block as long as /dev/ublkcN is open.
pub fn delete(id: u32, timeout: Duration) -> Result<()> {
    let mut ctrl = Ctrl::open()?;
    let info = match ctrl.get_dev_info(id) {
        Ok(i) => i,
        Err(e) if is_errno(&e, libc::ENODEV) => {
            state::remove(id);
            bail!("ublk device {id} does not exist");
        }
        Err(e) => return Err(e),
    };
    let mut pids = Vec::new();
    if info.ublksrv_pid > 0 {
        pids.push(info.ublksrv_pid);
    }
    if let Some(st) = state::read(id) {
        if st.pid > 0 && !pids.contains(&st.pid) {
            pids.push(st.pid);
        }
    }
    let me = std::process::id() as i32;
    if pids.contains(&me) {
        bail!("ublk device {id} is served by this very process: use Device::stop_and_delete");
    }
    match ctrl.stop_dev(id) {
        Ok(()) => {}
        Err(e) if is_errno(&e, libc::ENODEV) => {}
        Err(e) => return Err(e).with_context(|| format!("stopping device {id}")),
    }
    let deadline = Instant::now() + timeout;
    for &pid in &pids {
        while pid_alive(pid) {
            if Instant::now() >= deadline {
                bail!(
                    "the server (pid {pid}) of ublk device {id} did not exit within {}s after \
                     STOP_DEV; not deleting it (DEL_DEV would block while /dev/ublkc{id} is open)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    match ctrl.get_dev_info(id) {
        Ok(_) => match ctrl.del_dev(id) {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::ENODEV) => {}
            Err(e) => return Err(e).with_context(|| format!("deleting device {id}")),
        },
        Err(e) if is_errno(&e, libc::ENODEV) => {} // the server deleted it
        Err(e) => return Err(e),
    }
    state::remove(id);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(2));
    for node in [block_path(id), char_path(id)] {
        if !wait_gone(&node, left) {
            bail!(
                "ublk device {id} was deleted but {} is still there",
                node.display()
            );
        }
    }
    Ok(())
}

/// Delete every device; returns the ids deleted, errors joined.
pub fn delete_all(timeout: Duration) -> Result<Vec<u32>> {
    let mut done = Vec::new();
    let mut errs = Vec::new();
    let mut ctrl = Ctrl::open()?;
    for id in device_ids() {
        match ctrl.get_dev_info(id) {
            Ok(_) => {}
            Err(e) if is_errno(&e, libc::ENODEV) => {
                state::remove(id);
                continue;
            }
            Err(e) => {
                errs.push(format!("device {id}: {e:#}"));
                continue;
            }
        }
        match delete(id, timeout) {
            Ok(()) => done.push(id),
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    if !errs.is_empty() {
        bail!("{}", errs.join("\n"));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_liveness() {
        assert!(pid_alive(std::process::id() as i32));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
        assert!(!pid_alive(i32::MAX));
    }

    #[test]
    fn known_flags() {
        assert_eq!(all_known_flags(), 0x1f | (1 << 63));
    }
}
