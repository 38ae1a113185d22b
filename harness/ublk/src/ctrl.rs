//! The control path: /dev/ublk-control, commands as IORING_OP_URING_CMD on an
//! SQE128 ring with `struct ublksrv_ctrl_cmd` in the command area.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::uapi::*;

pub const CONTROL_PATH: &str = "/dev/ublk-control";

/// An error code a control command returned, kept typed so callers can tell
/// e.g. ENODEV ("no such device") from real failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrlError {
    pub cmd: u32,
    pub errno: i32,
}

impl std::fmt::Display for CtrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {}",
            cmd_name(self.cmd),
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for CtrlError {}

pub fn cmd_name(cmd: u32) -> &'static str {
    match cmd {
        UBLK_CMD_GET_QUEUE_AFFINITY => "UBLK_CMD_GET_QUEUE_AFFINITY",
        UBLK_CMD_GET_DEV_INFO => "UBLK_CMD_GET_DEV_INFO",
        UBLK_CMD_ADD_DEV => "UBLK_CMD_ADD_DEV",
        UBLK_CMD_DEL_DEV => "UBLK_CMD_DEL_DEV",
        UBLK_CMD_START_DEV => "UBLK_CMD_START_DEV",
        UBLK_CMD_STOP_DEV => "UBLK_CMD_STOP_DEV",
        UBLK_CMD_SET_PARAMS => "UBLK_CMD_SET_PARAMS",
        UBLK_CMD_GET_PARAMS => "UBLK_CMD_GET_PARAMS",
        UBLK_CMD_START_USER_RECOVERY => "UBLK_CMD_START_USER_RECOVERY",
        UBLK_CMD_END_USER_RECOVERY => "UBLK_CMD_END_USER_RECOVERY",
        _ => "UBLK_CMD_?",
    }
}

/// True if `err` is (or wraps) a control command failure with `errno`.
pub fn is_errno(err: &anyhow::Error, errno: i32) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<CtrlError>().map(|c| c.errno) == Some(errno))
}

/// What ADD_DEV should create.
#[derive(Debug, Clone)]
pub struct AddSpec {
    /// Wanted device id, None for "any".
    pub dev_id: Option<u32>,
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub max_io_buf_bytes: u32,
    pub flags: u64,
}

/// A handle on /dev/ublk-control with its own small SQE128 ring.  Commands
/// are synchronous.  Not shared between threads (START_DEV blocks).
pub struct Ctrl {
    file: File,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Ctrl {
    pub fn open() -> Result<Ctrl> {
        let file = match OpenOptions::new().read(true).write(true).open(CONTROL_PATH) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
                "{CONTROL_PATH} does not exist: the kernel has no ublk driver \
                 (CONFIG_BLK_DEV_UBLK; or `modprobe ublk_drv`)"
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open {CONTROL_PATH} (needs root)"))
            }
        };
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build(4)
            .context("io_uring_setup(SQE128) for the control ring")?;
        Ok(Ctrl { file, ring })
    }

    /// Issue one command, return the CQE result (>= 0) or a CtrlError.
    fn cmd(&mut self, op: u32, c: ublksrv_ctrl_cmd) -> Result<i32> {
        let sqe = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op)
            .cmd(c.to_bytes())
            .build()
            .user_data(u64::from(op));
        // SAFETY: every buffer `c.addr` points to is owned by the caller and
        // outlives this synchronous call.
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| anyhow::anyhow!("control ring full"))?;
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if self.ring.completion().is_empty() {
                        continue;
                    }
                    break;
                }
                Err(e) => return Err(e).context("io_uring_enter on the control ring"),
            }
        }
        let cqe = self
            .ring
            .completion()
            .next()
            .context("control ring: no completion")?;
        let res = cqe.result();
        if res < 0 {
            return Err(CtrlError {
                cmd: op,
                errno: -res,
            }
            .into());
        }
        Ok(res)
    }

    fn header(dev_id: u32) -> ublksrv_ctrl_cmd {
        ublksrv_ctrl_cmd {
            dev_id,
            queue_id: u16::MAX,
            ..Default::default()
        }
    }

    /// ADD_DEV.  Returns the device info as the driver wrote it back: the
    /// allocated dev_id, the queue count it kept and, in `flags`, the flags it
    /// GRANTED (6.1 masks those it does not know).
    pub fn add_dev(&mut self, spec: &AddSpec) -> Result<ublksrv_ctrl_dev_info> {
        let dev_id = spec.dev_id.unwrap_or(u32::MAX);
        let mut info = ublksrv_ctrl_dev_info {
            nr_hw_queues: spec.nr_hw_queues,
            queue_depth: spec.queue_depth,
            max_io_buf_bytes: spec.max_io_buf_bytes,
            dev_id,
            ublksrv_pid: -1,
            flags: spec.flags,
            ..Default::default()
        };
        let mut c = Self::header(dev_id);
        c.addr = &mut info as *mut _ as u64;
        c.len = std::mem::size_of::<ublksrv_ctrl_dev_info>() as u16;
        match self.cmd(UBLK_CMD_ADD_DEV, c) {
            Ok(_) => Ok(info),
            Err(e) if is_errno(&e, libc::EEXIST) => {
                Err(e.context(format!("ublk device id {dev_id} is already in use")))
            }
            Err(e) => Err(e),
        }
    }

    pub fn del_dev(&mut self, dev_id: u32) -> Result<()> {
        self.cmd(UBLK_CMD_DEL_DEV, Self::header(dev_id))?;
        Ok(())
    }

    /// START_DEV: blocks until every queue has sent FETCH_REQ for every tag,
    /// then adds the disk.  `pid` is the server process.
    pub fn start_dev(&mut self, dev_id: u32, pid: i32) -> Result<()> {
        let mut c = Self::header(dev_id);
        c.data[0] = pid as u64;
        self.cmd(UBLK_CMD_START_DEV, c)?;
        Ok(())
    }

    /// STOP_DEV: removes the disk (waiting for in-flight requests) and aborts
    /// every pending FETCH with UBLK_IO_RES_ABORT.  Also fine on a device that
    /// was never started: it then only aborts the fetches.
    pub fn stop_dev(&mut self, dev_id: u32) -> Result<()> {
        self.cmd(UBLK_CMD_STOP_DEV, Self::header(dev_id))?;
        Ok(())
    }

    pub fn get_dev_info(&mut self, dev_id: u32) -> Result<ublksrv_ctrl_dev_info> {
        let mut info = ublksrv_ctrl_dev_info::default();
        let mut c = Self::header(dev_id);
        c.addr = &mut info as *mut _ as u64;
        c.len = std::mem::size_of::<ublksrv_ctrl_dev_info>() as u16;
        self.cmd(UBLK_CMD_GET_DEV_INFO, c)?;
        Ok(info)
    }

    pub fn set_params(&mut self, dev_id: u32, params: &ublk_params) -> Result<()> {
        let mut p = *params;
        p.len = std::mem::size_of::<ublk_params>() as u32;
        let mut c = Self::header(dev_id);
        c.addr = &mut p as *mut _ as u64;
        c.len = std::mem::size_of::<ublk_params>() as u16;
        self.cmd(UBLK_CMD_SET_PARAMS, c)?;
        Ok(())
    }

    pub fn get_params(&mut self, dev_id: u32) -> Result<ublk_params> {
        let mut p = ublk_params {
            len: std::mem::size_of::<ublk_params>() as u32,
            ..Default::default()
        };
        let mut c = Self::header(dev_id);
        c.addr = &mut p as *mut _ as u64;
        c.len = std::mem::size_of::<ublk_params>() as u16;
        self.cmd(UBLK_CMD_GET_PARAMS, c)?;
        Ok(p)
    }
}

fn probe_once(ctrl: &mut Ctrl, wanted: u64) -> Result<u64> {
    let info = ctrl.add_dev(&AddSpec {
        dev_id: None,
        nr_hw_queues: 1,
        queue_depth: 1,
        max_io_buf_bytes: 4096,
        flags: wanted,
    })?;
    ctrl.del_dev(info.dev_id)
        .with_context(|| format!("deleting the throw-away device {}", info.dev_id))?;
    Ok(info.flags)
}

/// Ask the running kernel which flags it grants, the way ADD_DEV negotiates:
/// add a throw-away device asking for `wanted`, read the flags back, delete
/// it.  A kernel may refuse some combinations with EINVAL (the series
/// refuses UBLK_F_SPLICE_ZC with recovery or NEED_GET_DATA): then each flag
/// is asked for alone and the grants are merged (flags the driver adds on
/// its own, e.g. URING_CMD_COMP_IN_TASK for a modular driver, included).
pub fn probe_features(wanted: u64) -> Result<u64> {
    let mut ctrl = Ctrl::open()?;
    match probe_once(&mut ctrl, wanted) {
        Ok(f) => Ok(f),
        Err(e) if is_errno(&e, libc::EINVAL) => {
            let mut granted = 0;
            for bit in (0..64).map(|b| 1u64 << b).filter(|b| wanted & b != 0) {
                match probe_once(&mut ctrl, bit) {
                    Ok(f) => granted |= f,
                    Err(e) if is_errno(&e, libc::EINVAL) => {}
                    Err(e) => {
                        return Err(e).context("adding a throw-away device to probe the features")
                    }
                }
            }
            Ok(granted)
        }
        Err(e) => Err(e).context("adding a throw-away device to probe the features"),
    }
}
