//! A served ublk device, in this process: ADD_DEV, SET_PARAMS, queue threads,
//! START_DEV, and the reverse.  Used by the CLI's server and directly by
//! in-process tests.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::ctrl::{is_errno, AddSpec, Ctrl};
use crate::queue::{run_queue, QueueConfig, QueueStats, QueueStatsSnapshot};
use crate::targets::{LoopTarget, MirrorTarget, NullTarget, Target};
use crate::uapi::*;

pub const DEFAULT_QUEUES: u16 = 1;
pub const DEFAULT_DEPTH: u16 = 128;
pub const DEFAULT_MAX_IO_BUF_BYTES: u32 = 512 * 1024;
pub const DEFAULT_NULL_SIZE: u64 = 1 << 30;

pub fn block_path(id: u32) -> PathBuf {
    PathBuf::from(format!("/dev/ublkb{id}"))
}

pub fn char_path(id: u32) -> PathBuf {
    PathBuf::from(format!("/dev/ublkc{id}"))
}

/// Which built-in target to serve (what the CLI can ask for).  Any other [`Target`]
/// is served with [`Device::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetConfig {
    Null {
        size: u64,
    },
    Loop {
        path: PathBuf,
        buffered: bool,
    },
    /// Two backing files that get every WRITE; READs come from the first.
    Mirror {
        paths: [PathBuf; 2],
        buffered: bool,
    },
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Null { .. } => "null",
            TargetConfig::Loop { .. } => "loop",
            TargetConfig::Mirror { .. } => "mirror",
        }
    }

    /// Does the target use the page cache of its backing?
    pub fn buffered(&self) -> bool {
        match self {
            TargetConfig::Null { .. } => false,
            TargetConfig::Loop { buffered, .. } | TargetConfig::Mirror { buffered, .. } => {
                *buffered
            }
        }
    }

    /// Open the target: all input checks happen here, before any device
    /// exists.
    pub fn open(&self) -> Result<Arc<dyn Target>> {
        Ok(match self {
            TargetConfig::Null { size } => Arc::new(NullTarget::new(*size)?),
            TargetConfig::Loop { path, buffered } => Arc::new(LoopTarget::open(path, *buffered)?),
            TargetConfig::Mirror {
                paths: [a, b],
                buffered,
            } => Arc::new(MirrorTarget::open(a, b, *buffered)?),
        })
    }
}

/// Everything needed to create a device but its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Wanted device id; None lets the driver pick.
    pub dev_id: Option<u32>,
    pub nr_queues: u16,
    pub depth: u16,
    /// Ask for UBLK_F_SPLICE_ZC; fail if the kernel does not grant it.
    pub zero_copy: bool,
    pub max_io_buf_bytes: u32,
    /// Flags to ask ADD_DEV for besides the one `zero_copy` implies (tests: e.g. bit 5,
    /// mainline's UBLK_F_UNPRIVILEGED_DEV).  They do not change how the queues work.
    pub extra_flags: u64,
    /// Queue threads drop CAP_SYS_ADMIN from their effective capabilities before they
    /// send FETCH_REQ (the control path keeps it).
    pub unprivileged_queues: bool,
}

impl DeviceConfig {
    pub fn new() -> DeviceConfig {
        DeviceConfig {
            dev_id: None,
            nr_queues: DEFAULT_QUEUES,
            depth: DEFAULT_DEPTH,
            zero_copy: false,
            max_io_buf_bytes: DEFAULT_MAX_IO_BUF_BYTES,
            extra_flags: 0,
            unprivileged_queues: false,
        }
    }

    /// The rules of [`crate::validate`], the same as the `ublk` command's.
    pub fn validate(&self) -> Result<()> {
        crate::validate::device(self).map_err(anyhow::Error::msg)
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The message for `-z` on a kernel without the series.
pub fn no_splice_zc_message(granted: u64) -> String {
    format!(
        "the running kernel lacks UBLK_F_SPLICE_ZC (ADD_DEV granted flags {granted:#x}: {}): \
         zero copy (-z) needs a kernel with the ublk splice zero-copy series applied \
         (the patches in patches/ of this repository)",
        flag_names(granted)
    )
}

/// Wait for a device node to show up (devtmpfs creates it asynchronously to
/// us); if there is no devtmpfs, create it from sysfs.
fn wait_node(node: &Path, sysfs_dev: &Path, block: bool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(md) = std::fs::metadata(node) {
            let ok = if block {
                md.file_type().is_block_device()
            } else {
                md.file_type().is_char_device()
            };
            if ok {
                return Ok(());
            }
            bail!("{} exists but is not a device node", node.display());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // No devtmpfs (or too slow): make the node ourselves.
    let devno = std::fs::read_to_string(sysfs_dev)
        .with_context(|| format!("{} did not appear", node.display()))?;
    let (maj, min) = devno
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| anyhow!("bad {}: {devno:?}", sysfs_dev.display()))?;
    let kind = if block { libc::S_IFBLK } else { libc::S_IFCHR };
    let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(maj, min)) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        bail!("{} did not appear and mknod failed: {e}", node.display());
    }
    Ok(())
}

/// Wait until a path is gone.
pub fn wait_gone(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn open_char(id: u32) -> Result<File> {
    let node = char_path(id);
    wait_node(
        &node,
        Path::new(&format!("/sys/class/ublk-char/ublkc{id}/dev")),
        false,
        Duration::from_secs(5),
    )?;
    // The driver allows one open at a time (-EBUSY otherwise).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match OpenOptions::new().read(true).write(true).open(&node) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e).with_context(|| format!("open {}", node.display())),
        }
    }
}

/// A running device served by threads of this process.  Dropping it stops
/// and deletes the device (best effort); call [`Device::stop_and_delete`] to
/// see errors.
pub struct Device {
    id: u32,
    info: ublksrv_ctrl_dev_info,
    ctrl: Ctrl,
    char_file: Option<Arc<OwnedFd>>,
    threads: Vec<JoinHandle<Result<()>>>,
    stats: Vec<Arc<QueueStats>>,
    exited: Arc<AtomicUsize>,
    target: Arc<dyn Target>,
    cfg: DeviceConfig,
    deleted: bool,
}

/// The parts of a device that came up.
struct Running {
    info: ublksrv_ctrl_dev_info,
    char_file: Arc<OwnedFd>,
    threads: Vec<JoinHandle<Result<()>>>,
    stats: Vec<Arc<QueueStats>>,
    exited: Arc<AtomicUsize>,
}

/// Undo a partly made device: stop (aborts pending fetches), join queue
/// threads, close the char device, delete.  Errors are reported, not fatal.
fn teardown(
    ctrl: &mut Ctrl,
    id: u32,
    threads: Vec<JoinHandle<Result<()>>>,
    char_file: Option<Arc<OwnedFd>>,
) -> Vec<String> {
    let mut errs = Vec::new();
    if let Err(e) = ctrl.stop_dev(id) {
        if !is_errno(&e, libc::ENODEV) {
            errs.push(format!("{e:#}"));
        }
    }
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errs.push(format!("{e:#}")),
            Err(_) => errs.push("a queue thread panicked".to_string()),
        }
    }
    // Last reference to /dev/ublkcN: DEL_DEV waits for it to be closed.
    drop(char_file);
    if let Err(e) = ctrl.del_dev(id) {
        if !is_errno(&e, libc::ENODEV) {
            errs.push(format!("{e:#}"));
        }
    }
    errs
}

impl Device {
    /// Create, set up and start a device serving a built-in target; returns once
    /// /dev/ublkbN exists and can be opened.  On any error nothing is left behind.
    pub fn start(cfg: &DeviceConfig, target: &TargetConfig) -> Result<Device> {
        cfg.validate()?;
        let target = target.open()?;
        Self::start_with(cfg, target)
    }

    /// Create, set up and start a device serving `target` (any [`Target`]: the
    /// built-in ones, or a test's) on the same queue loop as every device; returns
    /// once /dev/ublkbN is a block device that can be opened.  On any error nothing
    /// is left behind.
    pub fn start_with(cfg: &DeviceConfig, target: Arc<dyn Target>) -> Result<Device> {
        cfg.validate()?;
        let mut ctrl = Ctrl::open()?;
        let wanted = cfg.extra_flags | if cfg.zero_copy { UBLK_F_SPLICE_ZC } else { 0 };
        let info = ctrl.add_dev(&AddSpec {
            dev_id: cfg.dev_id,
            nr_hw_queues: cfg.nr_queues,
            queue_depth: cfg.depth,
            max_io_buf_bytes: cfg.max_io_buf_bytes,
            flags: wanted,
        })?;
        let id = info.dev_id;
        match Self::bring_up(&mut ctrl, info, cfg, target.clone()) {
            Ok(r) => Ok(Device {
                id,
                info: r.info,
                ctrl,
                char_file: Some(r.char_file),
                threads: r.threads,
                stats: r.stats,
                exited: r.exited,
                target,
                cfg: cfg.clone(),
                deleted: false,
            }),
            Err((e, threads, char_file)) => {
                let errs = teardown(&mut ctrl, id, threads, char_file);
                if errs.is_empty() {
                    Err(e)
                } else {
                    Err(e.context(format!(
                        "and cleaning up device {id} failed too: {}",
                        errs.join("; ")
                    )))
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn bring_up(
        ctrl: &mut Ctrl,
        info: ublksrv_ctrl_dev_info,
        cfg: &DeviceConfig,
        target: Arc<dyn Target>,
    ) -> std::result::Result<
        Running,
        (
            anyhow::Error,
            Vec<JoinHandle<Result<()>>>,
            Option<Arc<OwnedFd>>,
        ),
    > {
        let id = info.dev_id;
        let fail0 = |e: anyhow::Error| (e, Vec::new(), None);
        if cfg.zero_copy && info.flags & UBLK_F_SPLICE_ZC == 0 {
            return Err(fail0(anyhow!(no_splice_zc_message(info.flags))));
        }
        let params = target.params(info.max_io_buf_bytes);
        ctrl.set_params(id, &params)
            .context("SET_PARAMS")
            .map_err(fail0)?;
        let char_file: Arc<OwnedFd> = Arc::new(open_char(id).map_err(fail0)?.into());

        let (tx, rx) = mpsc::channel();
        let exited = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        let nr_queues = info.nr_hw_queues;
        for q_id in 0..nr_queues {
            let st = Arc::new(QueueStats::default());
            stats.push(st.clone());
            let qcfg = QueueConfig {
                q_id,
                depth: info.queue_depth,
                max_io_buf_bytes: info.max_io_buf_bytes,
                char_fd: char_file.as_raw_fd(),
                zero_copy: cfg.zero_copy,
                drop_sys_admin: cfg.unprivileged_queues,
                target: target.clone(),
                stats: st,
            };
            let tx = tx.clone();
            let keep = char_file.clone();
            let ex = exited.clone();
            let spawn = std::thread::Builder::new()
                .name(format!("ublk{id}-q{q_id}"))
                .spawn(move || {
                    let r = run_queue(qcfg, tx);
                    if let Err(e) = &r {
                        eprintln!("ublk{id}: {e:#}");
                    }
                    drop(keep);
                    ex.fetch_add(1, Ordering::SeqCst);
                    r
                });
            match spawn {
                Ok(h) => threads.push(h),
                Err(e) => {
                    return Err((
                        anyhow!(e).context("spawning a queue thread"),
                        threads,
                        Some(char_file),
                    ))
                }
            }
        }
        drop(tx);
        let mut first_err = None;
        for _ in 0..nr_queues {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((_, Ok(()))) => {}
                Ok((q, Err(e))) => {
                    first_err.get_or_insert(e.context(format!("setting up queue {q}")));
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow!("a queue thread did not get ready"));
                    break;
                }
            }
        }
        if let Some(e) = first_err {
            return Err((e, threads, Some(char_file)));
        }
        // Every tag of every queue has its FETCH_REQ pending: START_DEV.
        let pid = std::process::id() as i32;
        if let Err(e) = ctrl.start_dev(id, pid) {
            return Err((e.context("START_DEV"), threads, Some(char_file)));
        }
        let bnode = block_path(id);
        let live = wait_node(
            &bnode,
            Path::new(&format!("/sys/class/block/ublkb{id}/dev")),
            true,
            Duration::from_secs(10),
        )
        .and_then(|_| {
            File::open(&bnode)
                .map(drop)
                .with_context(|| format!("open {}", bnode.display()))
        });
        if let Err(e) = live {
            return Err((e, threads, Some(char_file)));
        }
        let info = ctrl.get_dev_info(id).unwrap_or(info);
        Ok(Running {
            info,
            char_file,
            threads,
            stats,
            exited,
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn block_path(&self) -> PathBuf {
        block_path(self.id)
    }

    pub fn char_path(&self) -> PathBuf {
        char_path(self.id)
    }

    /// The device info as read back after START_DEV.
    pub fn info(&self) -> &ublksrv_ctrl_dev_info {
        &self.info
    }

    /// The flags ADD_DEV granted.
    pub fn flags(&self) -> u64 {
        self.info.flags
    }

    pub fn zero_copy(&self) -> bool {
        self.cfg.zero_copy
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    pub fn target(&self) -> &dyn Target {
        &*self.target
    }

    /// The server's /dev/ublkcN (the driver allows only one open), e.g. to
    /// try splices against it.
    pub fn char_fd(&self) -> Option<BorrowedFd<'_>> {
        self.char_file.as_ref().map(|f| f.as_fd())
    }

    /// Fresh device info from the driver.
    pub fn dev_info(&mut self) -> Result<ublksrv_ctrl_dev_info> {
        self.ctrl.get_dev_info(self.id)
    }

    /// Counters summed over the queues.
    pub fn stats(&self) -> QueueStatsSnapshot {
        let mut s = QueueStatsSnapshot::default();
        for q in &self.stats {
            s += q.snapshot();
        }
        s
    }

    /// Have queue threads ended (the device was stopped from outside, or a
    /// queue failed)?
    pub fn queues_exited(&self) -> usize {
        self.exited.load(Ordering::SeqCst)
    }

    /// STOP_DEV (in-flight I/O completes first, then the driver aborts the
    /// fetches), join the queue threads, close the char device, DEL_DEV, and
    /// wait for the nodes to go.
    ///
    /// DEL_DEV waits for the last close of `/dev/ublkbN`: close every fd of the
    /// block device that this process holds first, or this call does not return.
    pub fn stop_and_delete(mut self) -> Result<()> {
        self.do_delete()
    }

    fn do_delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        let threads = std::mem::take(&mut self.threads);
        let errs = teardown(&mut self.ctrl, self.id, threads, self.char_file.take());
        wait_gone(&self.block_path(), Duration::from_secs(5));
        wait_gone(&self.char_path(), Duration::from_secs(5));
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("deleting ublk device {}: {}", self.id, errs.join("; "))
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Err(e) = self.do_delete() {
            eprintln!("{e:#}");
        }
    }
}
