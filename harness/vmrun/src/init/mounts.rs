//! The guest's filesystems: the host's root stays read-only, and everything a command may
//! write (tmpfs, the 9p run directory) is mounted over it.

use super::console::{console_stdio, say};
use crate::job::{tmp_entries, Job, GUEST_SHARE, HOST_TMP, NINEP_MSIZE, SHARE_TAG};
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use std::path::Path;

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => bail!("mounting {fstype} on {target}: {e}"),
    }
}

pub(super) fn mkdir(path: &str) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {path}")),
    }
}

pub(super) fn mount_all() -> Result<()> {
    let _ = nix::unistd::sethostname("vmrun");
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    console_stdio();
    mount_fs(
        "proc",
        "/proc",
        "proc",
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        "sysfs",
        "/sys",
        "sysfs",
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
    )?;
    mkdir("/dev/pts")?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    )?;
    mkdir("/dev/shm")?;
    mount_fs(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        nosuid_nodev,
        Some("mode=1777"),
    )?;
    mount_fs("tmpfs", "/run", "tmpfs", nosuid_nodev, Some("mode=0755"))?;
    // Keep the host's /tmp reachable before covering it: the job may live there.
    mkdir(HOST_TMP)?;
    mount(
        Some("/tmp"),
        HOST_TMP,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding the host's /tmp to {HOST_TMP}"))?;
    mount_fs("tmpfs", "/tmp", "tmpfs", nosuid_nodev, Some("mode=1777"))?;
    mkdir(GUEST_SHARE)?;
    let share_opts =
        format!("trans=virtio,version=9p2000.L,msize={NINEP_MSIZE},cache=none,access=any");
    mount_fs(
        SHARE_TAG,
        GUEST_SHARE,
        "9p",
        nosuid_nodev,
        Some(&share_opts),
    )?;
    // Optional: a kernel without them still runs commands that do not need them.
    let optional = [
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
    ];
    for (src, target, fstype) in optional {
        if let Err(e) = mount_fs(src, target, fstype, nosuid_nodev | MsFlags::MS_NOEXEC, None) {
            say(&format!("warning: {e:#}"));
        }
    }
    Ok(())
}

/// Binds the host's entries under /tmp that the job names back in place, over the
/// guest's own /tmp (a repo cloned into /tmp runs as it would anywhere else).
pub(super) fn expose_host_tmp(job: &Job) -> Result<()> {
    for name in tmp_entries(job) {
        let host = Path::new(HOST_TMP).join(&name);
        let guest = Path::new("/tmp").join(&name);
        if host.is_dir() {
            std::fs::create_dir_all(&guest)
        } else if host.exists() {
            std::fs::File::create(&guest).map(drop)
        } else {
            continue;
        }
        .with_context(|| format!("creating {}", guest.display()))?;
        mount(
            Some(&host),
            &guest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("binding the host's {} in place", guest.display()))?;
    }
    Ok(())
}
