//! One thread and one io_uring per hardware queue.
//!
//! The thread marks itself PR_SET_IO_FLUSHER, maps the queue's io descriptor
//! array (read-only), sends FETCH_REQ for every tag, reports "ready", and
//! then serves: a completed FETCH/COMMIT_AND_FETCH hands it a request, the
//! target says what it becomes ([`Target::queue_io`]), the ops it asks for run on
//! the same ring, each completion goes back to the target ([`Target::io_done`]),
//! and the result the target commits goes back with COMMIT_AND_FETCH_REQ.  The
//! queue decides nothing about a request: it moves SQEs and CQEs.  When the device stops, the driver
//! completes every pending fetch with UBLK_IO_RES_ABORT (-ENODEV); the thread
//! leaves once every tag is aborted and no backend op is in flight.
//!
//! The thread that sends the FETCH_REQs becomes the queue's daemon
//! (`ubq->ubq_daemon`): all later commands of the queue must come from it,
//! which is why the ring and the loop live in this one thread.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use io_uring::{opcode, squeue, types, IoUring};

use crate::targets::{Action, DataRef, Io, IoOp, Request, Target};
use crate::uapi::*;

/// user_data: low 16 bits the tag, bits 16.. the kind.
const KIND_UBLK: u64 = 1 << 16;
const KIND_TARGET: u64 = 2 << 16;
const TAG_MASK: u64 = 0xffff;

/// Counters a queue keeps; shared so a running device can be inspected.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub requests: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub discards: AtomicU64,
    pub write_zeroes: AtomicU64,
    /// Requests committed with a negative result.
    pub errors: AtomicU64,
    /// IORING_OP_SPLICE operations submitted (zero-copy mode).
    pub splices: AtomicU64,
    /// Data ops that moved fewer bytes than asked and were continued.
    pub short_transfers: AtomicU64,
    /// Data ops that completed with -EAGAIN and were run again.
    pub eagain_retries: AtomicU64,
}

impl QueueStats {
    pub fn snapshot(&self) -> QueueStatsSnapshot {
        QueueStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            discards: self.discards.load(Ordering::Relaxed),
            write_zeroes: self.write_zeroes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            splices: self.splices.load(Ordering::Relaxed),
            short_transfers: self.short_transfers.load(Ordering::Relaxed),
            eagain_retries: self.eagain_retries.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatsSnapshot {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub write_zeroes: u64,
    pub errors: u64,
    pub splices: u64,
    pub short_transfers: u64,
    pub eagain_retries: u64,
}

impl std::ops::AddAssign for QueueStatsSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.reads += o.reads;
        self.writes += o.writes;
        self.flushes += o.flushes;
        self.discards += o.discards;
        self.write_zeroes += o.write_zeroes;
        self.errors += o.errors;
        self.splices += o.splices;
        self.short_transfers += o.short_transfers;
        self.eagain_retries += o.eagain_retries;
    }
}

/// Everything a queue thread needs.
pub struct QueueConfig {
    pub q_id: u16,
    pub depth: u16,
    pub max_io_buf_bytes: u32,
    /// /dev/ublkcN, kept open by the device for the threads' lifetime.
    pub char_fd: RawFd,
    pub zero_copy: bool,
    /// Drop CAP_SYS_ADMIN from this thread's effective set before FETCH_REQ.
    pub drop_sys_admin: bool,
    pub target: Arc<dyn Target>,
    pub stats: Arc<QueueStats>,
}

/// <linux/prctl.h> (not in every libc crate version).
pub const PR_SET_IO_FLUSHER: libc::c_int = 57;

/// Set PR_SET_IO_FLUSHER on the calling thread: memory reclaim must not
/// wait on I/O to our own device while we serve it.
pub fn set_io_flusher() -> Result<()> {
    // SAFETY: plain prctl.
    let r = unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        bail!("prctl(PR_SET_IO_FLUSHER, 1) failed (needs CAP_SYS_RESOURCE, Linux >= 5.6): {e}");
    }
    Ok(())
}

/// <linux/capability.h>
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SYS_ADMIN: u32 = 21;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Remove CAP_SYS_ADMIN from the calling thread's effective capabilities (capset(2) acts
/// on the calling thread only; the rest of the process keeps it).
pub fn drop_cap_sys_admin() -> Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) through valid pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("capget");
    }
    data[(CAP_SYS_ADMIN / 32) as usize].effective &= !(1 << (CAP_SYS_ADMIN % 32));
    // SAFETY: capset reads the header and two CapData through valid pointers.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("capset (dropping CAP_SYS_ADMIN)");
    }
    Ok(())
}

/// An anonymous or file mapping, unmapped on drop.  The descriptor mapping
/// holds a reference on /dev/ublkcN, so it must go before DEL_DEV.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn descriptors(char_fd: RawFd, q_id: u16, depth: u16) -> Result<Mapping> {
        let page = page_size();
        let len = queue_cmd_buf_size(depth, page);
        let off = queue_cmd_buf_offset(q_id, page);
        // SAFETY: mapping a device region read-only; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                char_fd,
                off as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            bail!("mmap of queue {q_id}'s io descriptors ({len} bytes at {off:#x}): {e}");
        }
        Ok(Mapping { ptr, len })
    }

    fn anonymous(len: usize) -> Result<Mapping> {
        // SAFETY: fresh private anonymous mapping (page aligned, zeroed).
        // NORESERVE: depth x max_io_buf_bytes can be large, and pages are
        // only touched as requests use them.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            bail!("allocating {len} bytes of io buffers: {e}");
        }
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf is safe.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct TagState {
    /// The request being served and the target's state of it.
    io: Option<Io>,
    /// The op in flight (or last run) for it.
    op: Option<IoOp>,
    aborted: bool,
}

struct Queue {
    cfg: QueueConfig,
    ring: IoUring,
    desc: Mapping,
    bufs: Option<Mapping>,
    tags: Vec<TagState>,
    nr_aborted: usize,
    ops_in_flight: usize,
}

impl Queue {
    fn data_ref(&self, tag: u16) -> DataRef {
        match &self.bufs {
            Some(m) => DataRef::Buffer {
                addr: m.ptr as u64 + u64::from(tag) * u64::from(self.cfg.max_io_buf_bytes),
            },
            None => DataRef::ZeroCopy {
                char_fd: self.cfg.char_fd,
            },
        }
    }

    fn buf_addr(&self, tag: u16) -> u64 {
        match self.data_ref(tag) {
            DataRef::Buffer { addr } => addr,
            // Zero copy: no buffer at all (the patched driver accepts 0).
            DataRef::ZeroCopy { .. } => 0,
        }
    }

    fn push(&mut self, sqe: &squeue::Entry) -> Result<()> {
        loop {
            // SAFETY: buffers referenced by our SQEs (descriptor-owned
            // buffers, the server buffers) live as long as the queue.
            let pushed = unsafe { self.ring.submission().push(sqe).is_ok() };
            if pushed {
                return Ok(());
            }
            self.ring
                .submit()
                .context("io_uring_enter (flush full SQ)")?;
        }
    }

    fn ublk_cmd(&mut self, op: u32, tag: u16, result: i32) -> Result<()> {
        let cmd = ublksrv_io_cmd {
            q_id: self.cfg.q_id,
            tag,
            result,
            addr: self.buf_addr(tag),
        };
        let sqe = opcode::UringCmd16::new(types::Fd(self.cfg.char_fd), op)
            .cmd(cmd.to_bytes())
            .build()
            .user_data(KIND_UBLK | u64::from(tag));
        self.push(&sqe)
    }

    fn commit(&mut self, tag: u16, result: i32) -> Result<()> {
        let t = std::mem::take(&mut self.tags[usize::from(tag)]);
        self.tags[usize::from(tag)].aborted = t.aborted;
        if result < 0 {
            let n = self.cfg.stats.errors.fetch_add(1, Ordering::Relaxed);
            // The server log tells why a request failed (first few only).
            if n < 16 {
                let (req, leg, done) = match t.io {
                    Some(io) => (Some(io.req), io.leg, io.done),
                    None => (None, 0, 0),
                };
                eprintln!(
                    "ublk queue {}: tag {tag}: request {req:?} failed in leg {leg} after \
                     {done} bytes: {} (last op {:?})",
                    self.cfg.q_id,
                    errno_str(result),
                    t.op
                );
            }
        }
        self.ublk_cmd(UBLK_IO_COMMIT_AND_FETCH_REQ, tag, result)
    }

    fn read_desc(&self, tag: u16) -> ublksrv_io_desc {
        let p = self.desc.ptr as *const ublksrv_io_desc;
        // SAFETY: tag < depth, inside the mapped array; the driver wrote it
        // before completing the fetch we just reaped (the CQ head load is an
        // acquire).
        unsafe { std::ptr::read_volatile(p.add(usize::from(tag))) }
    }

    /// Does what the target said.
    fn act(&mut self, tag: u16, action: Action) -> Result<()> {
        match action {
            Action::Commit(res) => self.commit(tag, res),
            Action::Submit(op) | Action::Continue(op) | Action::Retry(op) => self.run_op(tag, op),
        }
    }

    fn run_op(&mut self, tag: u16, op: IoOp) -> Result<()> {
        self.tags[usize::from(tag)].op = Some(op);
        if op.is_sync() {
            let res = op.run_sync();
            return self.op_done(tag, res);
        }
        if matches!(op, IoOp::Splice { .. }) {
            self.cfg.stats.splices.fetch_add(1, Ordering::Relaxed);
        }
        let sqe = op
            .to_sqe(KIND_TARGET | u64::from(tag))
            .context("op has no io_uring form")?;
        self.ops_in_flight += 1;
        self.push(&sqe)
    }

    fn new_request(&mut self, tag: u16) -> Result<()> {
        let desc = self.read_desc(tag);
        let req = Request::from_desc(self.cfg.q_id, tag, &desc);
        let s = &self.cfg.stats;
        s.requests.fetch_add(1, Ordering::Relaxed);
        match req.op {
            UBLK_IO_OP_READ => &s.reads,
            UBLK_IO_OP_WRITE => &s.writes,
            UBLK_IO_OP_FLUSH => &s.flushes,
            UBLK_IO_OP_DISCARD => &s.discards,
            _ => &s.write_zeroes,
        }
        .fetch_add(1, Ordering::Relaxed);
        let mut io = Io::new(req, self.data_ref(tag));
        let action = self.cfg.target.queue_io(&mut io);
        let t = &mut self.tags[usize::from(tag)];
        t.io = Some(io);
        t.op = None;
        self.act(tag, action)
    }

    fn op_done(&mut self, tag: u16, res: i32) -> Result<()> {
        let t = self.tags[usize::from(tag)];
        let (Some(mut io), Some(op)) = (t.io, t.op) else {
            bail!("queue {}: completion for idle tag {tag}", self.cfg.q_id);
        };
        let action = self.cfg.target.io_done(&mut io, &op, res);
        self.tags[usize::from(tag)].io = Some(io);
        let s = &self.cfg.stats;
        match action {
            Action::Continue(_) => {
                s.short_transfers.fetch_add(1, Ordering::Relaxed);
            }
            Action::Retry(_) if res == -libc::EAGAIN => {
                s.eagain_retries.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.act(tag, action)
    }

    fn ublk_done(&mut self, tag: u16, res: i32) -> Result<()> {
        match res {
            UBLK_IO_RES_OK => self.new_request(tag),
            UBLK_IO_RES_ABORT => {
                self.mark_dead(tag);
                Ok(())
            }
            _ => {
                // Includes UBLK_IO_RES_NEED_GET_DATA, which we never ask for,
                // and a rejected command (-EINVAL/-EBUSY).  The tag has no
                // command pending any more: count it as gone.
                eprintln!(
                    "ublk queue {}: tag {tag}: command failed: {}",
                    self.cfg.q_id,
                    errno_str(res)
                );
                self.mark_dead(tag);
                Ok(())
            }
        }
    }

    fn mark_dead(&mut self, tag: u16) {
        let t = &mut self.tags[usize::from(tag)];
        if !t.aborted {
            t.aborted = true;
            self.nr_aborted += 1;
        }
    }

    fn handle(&mut self, user_data: u64, res: i32) -> Result<()> {
        let tag = (user_data & TAG_MASK) as u16;
        if usize::from(tag) >= self.tags.len() {
            bail!("queue {}: completion for unknown tag {tag}", self.cfg.q_id);
        }
        match user_data & !TAG_MASK {
            KIND_UBLK => self.ublk_done(tag, res),
            KIND_TARGET => {
                self.ops_in_flight = self.ops_in_flight.saturating_sub(1);
                self.op_done(tag, res)
            }
            k => bail!("queue {}: bad user_data kind {k:#x}", self.cfg.q_id),
        }
    }

    fn finished(&self) -> bool {
        self.nr_aborted == self.tags.len() && self.ops_in_flight == 0
    }

    fn reap(&mut self) -> Vec<(u64, i32)> {
        self.ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect()
    }

    fn serve(&mut self) -> Result<()> {
        while !self.finished() {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e).context("io_uring_enter"),
            }
            for (ud, res) in self.reap() {
                self.handle(ud, res)?;
            }
        }
        Ok(())
    }
}

fn errno_str(res: i32) -> String {
    if res < 0 {
        std::io::Error::from_raw_os_error(-res).to_string()
    } else {
        format!("unexpected result {res}")
    }
}

/// Body of a queue thread.  `ready` gets `Ok(())` once every tag has its
/// FETCH_REQ pending (then START_DEV may be issued), or the setup error.
/// Returns when the device has been stopped (all tags aborted).
pub fn run_queue(cfg: QueueConfig, ready: Sender<(u16, Result<()>)>) -> Result<()> {
    let q_id = cfg.q_id;
    let mut q = match setup(cfg) {
        Ok(q) => q,
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = ready.send((q_id, Err(e)));
            bail!("queue {q_id}: {msg}");
        }
    };
    // A fetch that completes before START_DEV is an error (ABORT included).
    let early = q.reap();
    let mut early_err = None;
    for (ud, res) in &early {
        if *res != UBLK_IO_RES_OK && early_err.is_none() {
            early_err = Some(format!(
                "queue {q_id}: FETCH_REQ for tag {} failed: {}",
                ud & TAG_MASK,
                errno_str(*res)
            ));
        }
    }
    match early_err {
        Some(msg) => {
            let _ = ready.send((q_id, Err(anyhow::anyhow!(msg.clone()))));
        }
        None => {
            let _ = ready.send((q_id, Ok(())));
        }
    }
    for (ud, res) in early {
        q.handle(ud, res)?;
    }
    q.serve().with_context(|| format!("queue {q_id}"))
}

fn setup(cfg: QueueConfig) -> Result<Queue> {
    set_io_flusher()?;
    if cfg.drop_sys_admin {
        drop_cap_sys_admin()?;
    }
    // The depth the driver granted (its own rule is the same).
    let depth = crate::validate::depth(u32::from(cfg.depth)).map_err(anyhow::Error::msg)?;
    let desc = Mapping::descriptors(cfg.char_fd, cfg.q_id, depth)?;
    let bufs = if cfg.zero_copy {
        None
    } else {
        Some(Mapping::anonymous(
            usize::from(depth) * cfg.max_io_buf_bytes as usize,
        )?)
    };
    // Room for one ublk command and one backend op per tag.  No SQPOLL.
    let entries = (u32::from(depth) * 2).next_power_of_two().clamp(8, 8192);
    let ring = IoUring::builder()
        .build(entries)
        .with_context(|| format!("io_uring_setup({entries})"))?;
    let mut q = Queue {
        tags: vec![TagState::default(); usize::from(depth)],
        cfg,
        ring,
        desc,
        bufs,
        nr_aborted: 0,
        ops_in_flight: 0,
    };
    for tag in 0..depth {
        q.ublk_cmd(UBLK_IO_FETCH_REQ, tag, -1)?;
    }
    q.ring.submit().context("submitting FETCH_REQ")?;
    Ok(q)
}
