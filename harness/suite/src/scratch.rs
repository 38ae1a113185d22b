//! Scratch directories on a filesystem of a chosen kind.
//!
//! Each test process mounts, on first use, a private tmpfs and a small ext4 (mkfs.ext4
//! on a loop device over a file in /tmp) under `/tmp/ublk-suite.PID/`, hands out a fresh
//! directory per request, and unmounts everything when the process exits.

use crate::{guest, loopdev};
use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The kind of filesystem a test file lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Tmpfs,
    Ext4,
}

impl fmt::Display for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fs::Tmpfs => "tmpfs",
            Fs::Ext4 => "ext4",
        })
    }
}

/// Size of the ext4 image (sparse, in /tmp).
const EXT4_IMAGE_SIZE: u64 = 256 << 20;

static MOUNTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// A mount point made once per process, or why it could not be.
type Lazy = OnceLock<Result<PathBuf, String>>;
static TMPFS: Lazy = OnceLock::new();
static EXT4: Lazy = OnceLock::new();
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// `/tmp/ublk-suite.PID`, this process's own corner of /tmp.
fn base() -> PathBuf {
    PathBuf::from(format!("/tmp/ublk-suite.{}", std::process::id()))
}

extern "C" fn cleanup_at_exit() {
    let Ok(mut mounted) = MOUNTED.lock() else {
        return;
    };
    for m in mounted.drain(..).rev() {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(base());
}

fn remember_mount(path: &Path) {
    let mut mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner());
    if mounted.is_empty() {
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe { libc::atexit(cleanup_at_exit) };
    }
    mounted.push(path.to_path_buf());
}

/// Finds an executable in $PATH or the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn mount_tmpfs_at(target: &Path, size: &str) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(format!("size={size},mode=0755").as_str()),
    )
    .with_context(|| format!("mounting a tmpfs (size={size}) on {}", target.display()))?;
    remember_mount(target);
    Ok(())
}

fn make_tmpfs() -> Result<PathBuf> {
    guest::ensure()?;
    let target = base().join("tmpfs");
    mount_tmpfs_at(&target, "512m")?;
    Ok(target)
}

/// Makes an ext4 filesystem in a file and mounts it through a loop device at `target`.
pub fn mount_ext4_image(image: &Path, size: u64, target: &Path) -> Result<()> {
    let f =
        std::fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", image.display()))?;
    drop(f);
    let mkfs = find_tool("mkfs.ext4").ok_or_else(|| anyhow!("mkfs.ext4 not found (e2fsprogs)"))?;
    let out = Command::new(&mkfs)
        .args(["-q", "-F", "-b", "4096", "-E", "nodiscard"])
        .arg(image)
        .output()
        .with_context(|| format!("running {}", mkfs.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            mkfs.display(),
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dev = loopdev::attach(image)?;
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    mount(
        Some(&dev.path),
        target,
        Some("ext4"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mounting ext4 {} on {}",
            dev.path.display(),
            target.display()
        )
    })?;
    remember_mount(target);
    Ok(())
}

fn make_ext4() -> Result<PathBuf> {
    guest::ensure()?;
    std::fs::create_dir_all(base()).with_context(|| format!("creating {}", base().display()))?;
    let target = base().join("ext4");
    mount_ext4_image(&base().join("ext4.img"), EXT4_IMAGE_SIZE, &target)?;
    Ok(target)
}

/// The mount point of this process's filesystem of kind `fs`, mounted on first use.
pub fn mount_point(fs: Fs) -> Result<PathBuf> {
    let (cell, make): (&Lazy, fn() -> Result<PathBuf>) = match fs {
        Fs::Tmpfs => (&TMPFS, make_tmpfs),
        Fs::Ext4 => (&EXT4, make_ext4),
    };
    cell.get_or_init(|| make().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("no {fs} scratch filesystem: {e}"))
}

/// A fresh directory on a scratch filesystem, removed when dropped.
pub struct ScratchDir {
    pub fs: Fs,
    path: PathBuf,
}

impl ScratchDir {
    /// A fresh, empty directory on a filesystem of kind `fs`.
    pub fn new(fs: Fs) -> Result<Self> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = mount_point(fs)?.join(format!("d{n}"));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { fs, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside this directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A tiny tmpfs of `size` (e.g. "16k") at `target`, to run out of space on purpose.
/// Unmounted when the process exits.
pub fn mount_tiny_tmpfs(target: &Path, size: &str) -> Result<()> {
    guest::ensure()?;
    mount_tmpfs_at(target, size)
}

/// The env var vmrun sets to the guest's scratch virtio disk (e.g. /dev/vda).
pub const SCRATCH_DISK_ENV: &str = "VMRUN_SCRATCH_DISK";

static DISK: Lazy = OnceLock::new();

fn make_disk_fs() -> Result<PathBuf> {
    guest::ensure()?;
    let Some(disk) = std::env::var_os(SCRATCH_DISK_ENV) else {
        // No scratch disk (a hand-made VM): the ext4 image on a loop device will do.
        return make_ext4();
    };
    let mkfs = find_tool("mkfs.ext4").ok_or_else(|| anyhow!("mkfs.ext4 not found (e2fsprogs)"))?;
    let out = Command::new(&mkfs)
        .args([
            "-q",
            "-F",
            "-E",
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(&disk)
        .output()
        .with_context(|| format!("running {}", mkfs.display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed ({}): {}",
            mkfs.display(),
            disk,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let target = base().join("disk");
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    mount(
        Some(disk.as_os_str()),
        &target,
        Some("ext4"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting ext4 {disk:?} on {}", target.display()))?;
    remember_mount(&target);
    Ok(target)
}

/// An ext4 filesystem on the VM's scratch disk ($VMRUN_SCRATCH_DISK, made afresh by the
/// first call of each process and unmounted at exit), where O_DIRECT works and files are
/// not in RAM. Without a scratch disk: the ext4 scratch image.
pub fn disk_mount_point() -> Result<PathBuf> {
    DISK.get_or_init(|| make_disk_fs().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("no ext4 on the scratch disk: {e}"))
}

// ---------------------------------------------------------------------------------
// The backing files of the ublk tests
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A file on ext4 on the scratch virtio disk, served with O_DIRECT.
    Direct,
    /// A file on tmpfs, served with buffered I/O.
    Buffered,
    /// The null target (no backing; data is not kept).
    Null,
}

/// A backing file, removed when dropped.
pub struct BackingFile {
    pub path: PathBuf,
    _dir: Option<ScratchDir>,
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// A zero-filled (sparse) backing file of `size` bytes for `b` (None for Null): on tmpfs
/// (kept while the file lives) for Buffered, on the ext4 of the scratch disk for Direct.
pub fn backing_file(b: Backing, size: u64) -> Result<Option<BackingFile>> {
    let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
    let (path, dir) = match b {
        Backing::Null => return Ok(None),
        Backing::Direct => (
            disk_mount_point()?.join(format!("backing{}-{n}.img", std::process::id())),
            None,
        ),
        Backing::Buffered => {
            let d = ScratchDir::new(Fs::Tmpfs)?;
            (d.join(&format!("backing{n}.img")), Some(d))
        }
    };
    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", path.display()))?;
    Ok(Some(BackingFile { path, _dir: dir }))
}
