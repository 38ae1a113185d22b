//! Fixtures of the series v3 fault and edge tests (ublk_zc_fill.rs, ublk_zc_edges.rs,
//! ublk_zc_faults.rs):
//!
//! - [`zc_test`]: the body of a test runs in a thread of its own under a time limit and a
//!   [`Watchdog`], so that a hang fails under the test's name (after the blocked tasks
//!   are dumped) instead of stalling the run; the kernel log of the test is read
//!   afterwards and any splat fails it;
//! - [`HoldExit`]: a loop target on the server's own queue loop that holds a data request
//!   until the test says what to do with it: serve it, commit a result, or end the queue
//!   thread (the queue's daemon) there and then;
//! - [`Held`]: a one-queue zero-copy device on a tmpfs file served by [`HoldExit`], and
//!   the background I/O whose request it holds;
//! - io_uring helpers that wait with a deadline, sockets that are full, and a look at
//!   io-wq's workers (which kernel function they sleep in).
//!
//! Included with `mod zc_fixtures;` by each of those test files; each uses part of it.
#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use io_uring::{cqueue, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ublk::targets::{Action, Hooks, Io, LoopTarget, Request, Target, Wrap};
use ublk::uapi::*;
use ublk::{Device, DeviceConfig};
use ublk_suite::blockio::{open_direct, AlignedBuf};
use ublk_suite::kmsg::{splats, KmsgTail};
use ublk_suite::scratch::{backing_file, Backing, BackingFile};
use ublk_suite::watchdog::Watchdog;

/// Progress on stderr (not captured by libtest): a hang shows how far the test got.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "  .. {msg}");
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `body` in a thread of its own and fails the calling test if it fails, panics,
/// or is still running after `secs` seconds (a hang: the [`Watchdog`] dumps the blocked
/// tasks and this process's kernel stacks first). Then reads the kernel log of the test
/// (from before the body on) and fails on any splat in it.
pub fn zc_test<F>(name: &str, secs: u64, body: F)
where
    F: FnOnce() -> Result<()> + Send + 'static,
{
    let mut kmsg = match KmsgTail::from_now() {
        Ok(k) => k,
        Err(e) => panic!("{name}: {e:#}"),
    };
    let wd = Watchdog::new(name, secs);
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-body"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        panic!("{name}: spawning the test body: {e}");
    }
    // a little after the watchdog, so that its dump comes first
    let verdict = rx.recv_timeout(Duration::from_secs(secs) + Duration::from_secs(2));
    drop(wd);
    let log = kmsg.lines();
    match verdict {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("{e:#}"),
        Ok(Err(p)) => panic!("{}", panic_text(&*p)),
        Err(_) => panic!(
            "{name}: still running after {secs} s: hung (the watchdog dumped the blocked \
             tasks to the kernel log and this process's stacks to stderr)"
        ),
    }
    let log = log.unwrap_or_else(|e| panic!("{name}: the kernel log: {e:#}"));
    let bad = splats(&log);
    assert!(
        bad.is_empty(),
        "{name}: the kernel log of the test has splats:\n{}",
        bad.join("\n")
    );
    println!("{name}: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Waits up to `timeout` for `cond`, looking every 10 ms; fails naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Joins `h` if it ends within `timeout`; fails naming `what` otherwise (the thread is
/// left running: it is stuck in the kernel).
pub fn join_within<T>(what: &str, h: std::thread::JoinHandle<T>, timeout: Duration) -> Result<T> {
    wait_until(what, timeout, || h.is_finished())?;
    h.join().map_err(|p| anyhow!("{what}: {}", panic_text(&*p)))
}

/// A process-unique number, for file names.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// io_uring with deadlines
// ---------------------------------------------------------------------------------

/// Pushes one SQE and submits it.
pub fn submit(ring: &mut IoUring, sqe: &squeue::Entry) -> Result<()> {
    // SAFETY: the SQEs of these tests name only fds and offsets (splice, cancel), no user
    // memory that would have to outlive the submission.
    unsafe { ring.submission().push(sqe) }.map_err(|_| anyhow!("the SQ is full"))?;
    ring.submit().context("io_uring_enter")?;
    Ok(())
}

/// The next CQE, waiting up to `timeout` (io_uring_enter with a timeout: no polling).
pub fn wait_cqe(ring: &mut IoUring, timeout: Duration) -> Result<Option<cqueue::Entry>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = ring.completion().next() {
            return Ok(Some(c));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let ts = types::Timespec::new()
            .sec(left.as_secs())
            .nsec(left.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(e).context("io_uring_enter (waiting for a CQE)"),
        }
    }
}

/// The CQEs of `ring` until one with `user_data` arrives (within `timeout`): (that
/// one's result, the others as (user_data, result)).
pub fn wait_cqe_of(
    ring: &mut IoUring,
    user_data: u64,
    timeout: Duration,
) -> Result<(i32, Vec<(u64, i32)>)> {
    let deadline = Instant::now() + timeout;
    let mut others = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_cqe(ring, left)? {
            Some(c) if c.user_data() == user_data => return Ok((c.result(), others)),
            Some(c) => others.push((c.user_data(), c.result())),
            None => {
                bail!("no CQE for request {user_data} within {timeout:?} (other CQEs: {others:?})")
            }
        }
    }
}

/// The CQE result as errno name or count.
pub fn res(r: i32) -> String {
    ublk_suite::sys::cqe_display(r)
}

/// Kernel-internal errnos that must never reach userspace (include/linux/errno.h).
pub fn is_kernel_internal_errno(r: i32) -> bool {
    (-530..=-512).contains(&r)
}

// ---------------------------------------------------------------------------------
// Sockets and io-wq
// ---------------------------------------------------------------------------------

/// A connected loopback TCP pair (sender, receiver).
pub fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    ublk_suite::net::loopback_up()?;
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let tx = TcpStream::connect(l.local_addr()?).context("connecting")?;
    let (rx, _) = l.accept().context("accept")?;
    Ok((tx, rx))
}

fn set_sock_buf(fd: BorrowedFd<'_>, opt: libc::c_int, v: libc::c_int) -> Result<()> {
    // SAFETY: setsockopt reads sizeof(c_int) bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt");
    }
    Ok(())
}

/// Makes the send side of `tx` (to `rx`, which does not read) full: small buffers, then
/// junk until the socket takes nothing more.  Returns the junk's length, which the
/// peer has to read before anything sent later.
pub fn fill_socket(tx: &TcpStream, rx: &TcpStream) -> Result<usize> {
    set_sock_buf(tx.as_fd(), libc::SO_SNDBUF, 4096)?;
    set_sock_buf(rx.as_fd(), libc::SO_RCVBUF, 4096)?;
    tx.set_nonblocking(true).context("O_NONBLOCK")?;
    let (mut junk, chunk) = (0usize, [0xeeu8; 1024]);
    let (t0, mut refused) = (Instant::now(), 0);
    // the window closes as the peer's buffer fills: a few refusals in a row, 20 ms
    // apart, mean that no ACK will open it again
    while refused < 5 && t0.elapsed() < Duration::from_secs(10) {
        match (&*tx).write(&chunk) {
            Ok(n) => (junk, refused) = (junk + n, 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("filling the socket"),
        }
    }
    tx.set_nonblocking(false).context("blocking again")?;
    Ok(junk)
}

/// An io-wq worker of this process (`iou-wrk-*`) whose kernel stack contains one of
/// `funcs`: "TID COMM: first matching frame", or None.
pub fn iowq_worker_in(funcs: &[&str]) -> Option<String> {
    let rd = std::fs::read_dir("/proc/self/task").ok()?;
    for t in rd.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("iou-wrk") {
            continue;
        }
        let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
        if let Some(l) = stack.lines().find(|l| funcs.iter().any(|f| l.contains(f))) {
            return Some(format!(
                "{} {}: {}",
                t.file_name().to_string_lossy(),
                comm.trim(),
                l.trim()
            ));
        }
    }
    None
}

/// The calling thread's kernel tid.
pub fn gettid() -> i32 {
    // SAFETY: gettid(2) takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

// ---------------------------------------------------------------------------------
// HoldExit: hold a request, then serve, commit, or end the queue's daemon
// ---------------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the test tells a held request (and its queue thread) to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// Serve it as the loop target does (splice or copy), then commit.
    Serve,
    /// Commit this result without touching the data.
    Commit(i32),
    /// End the queue thread (the queue's daemon) here, without committing: it unwinds
    /// (its ring is closed, its descriptor mapping unmapped) and exits.
    ExitThread,
}

/// The unwind payload of [`Go::ExitThread`].
pub const EXIT_THREAD: &str = "HoldExit: the queue thread ends on the test's order";

#[derive(Default)]
struct HoldState {
    hold: bool,
    closed: bool,
    held: VecDeque<Request>,
    go: Option<Go>,
    /// tid of the queue thread that ended on Go::ExitThread
    exited: Option<i32>,
}

/// The hooks of a loop target that holds data requests while holding is on: the queue
/// thread waits in `queue_io()` until the test says what to do ([`Go`]).  One request at
/// a time (its queue thread waits), so use it on a one-queue device.
#[derive(Default)]
pub struct HoldExit {
    st: Mutex<HoldState>,
    cv: Condvar,
}

/// A loop target with [`HoldExit`]'s hooks.
pub type HoldExitTarget = Wrap<HoldExit>;

impl HoldExit {
    pub fn target(inner: LoopTarget) -> HoldExitTarget {
        Wrap::new(inner, HoldExit::default())
    }

    pub fn set_hold(&self, on: bool) {
        lock(&self.st).hold = on;
    }

    /// The next held request, waiting up to `timeout`.
    pub fn next_held(&self, timeout: Duration) -> Result<Request> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.st);
        loop {
            if let Some(r) = st.held.pop_front() {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no data request reached the server within {timeout:?}");
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn go(&self, g: Go) {
        lock(&self.st).go = Some(g);
        self.cv.notify_all();
    }

    /// The tid of the queue thread that ended on [`Go::ExitThread`], once it has.
    pub fn exited_tid(&self) -> Option<i32> {
        lock(&self.st).exited
    }

    /// No more holding; a request still held is served.  Call before the device stops.
    pub fn close(&self) {
        let mut st = lock(&self.st);
        st.closed = true;
        st.hold = false;
        self.cv.notify_all();
    }

    fn wait_go(&self, req: &Request) -> Go {
        let mut st = lock(&self.st);
        if !st.hold || st.closed {
            return Go::Serve;
        }
        st.go = None;
        st.held.push_back(*req);
        self.cv.notify_all();
        loop {
            if let Some(g) = st.go.take() {
                if g == Go::ExitThread {
                    st.exited = Some(gettid());
                }
                return g;
            }
            if st.closed {
                return Go::Serve;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Hooks<LoopTarget> for HoldExit {
    fn kind(&self) -> &'static str {
        "hold-exit"
    }
    fn queue_io(&self, inner: &LoopTarget, io: &mut Io) -> Action {
        let req = io.req;
        if req.op == UBLK_IO_OP_READ || req.op == UBLK_IO_OP_WRITE {
            match self.wait_go(&req) {
                Go::Serve => {}
                Go::Commit(r) => return Action::Commit(r),
                // no panic hook, no message: the thread just unwinds and ends
                Go::ExitThread => std::panic::resume_unwind(Box::new(EXIT_THREAD)),
            }
        }
        inner.queue_io(io)
    }
}

// ---------------------------------------------------------------------------------
// Held: a device whose requests the test holds
// ---------------------------------------------------------------------------------

/// The background I/O of [`Held::held_io`]: bytes moved and, for a READ, the buffer.
pub type HeldIo = std::thread::JoinHandle<std::io::Result<(usize, Vec<u8>)>>;

/// A one-queue zero-copy device of `depth` tags on a tmpfs file, each I/O of
/// `req_bytes` one request, served by [`HoldExit`].
pub struct Held {
    pub dev: Option<Device>,
    pub target: Arc<HoldExitTarget>,
    pub backing: PathBuf,
    pub req_bytes: usize,
    /// Where the held I/O goes on the device.
    pub req_off: u64,
    _file: BackingFile,
}

impl Held {
    pub fn start(depth: u16, req_bytes: usize) -> Result<Held> {
        ublk_suite::ublkdev::fresh()?;
        ublk_suite::ublkdev::require_splice_zc()?;
        let file =
            backing_file(Backing::Buffered, 8 << 20)?.ok_or_else(|| anyhow!("no backing file"))?;
        let backing = file.path.clone();
        let target = Arc::new(HoldExit::target(LoopTarget::open(&backing, true)?));
        let mut cfg = DeviceConfig::new();
        cfg.zero_copy = true;
        cfg.depth = depth;
        cfg.max_io_buf_bytes = req_bytes as u32;
        let dev = Device::start_with(&cfg, target.clone())?;
        Ok(Held {
            dev: Some(dev),
            target,
            backing,
            req_bytes,
            req_off: 1 << 20,
            _file: file,
        })
    }

    pub fn dev(&self) -> &Device {
        self.dev.as_ref().expect("the device is running")
    }

    pub fn char_fd(&self) -> BorrowedFd<'_> {
        self.dev().char_fd().expect("the server's /dev/ublkcN")
    }

    pub fn block_path(&self) -> PathBuf {
        self.dev().block_path()
    }

    /// Writes `data` at `off` of the backing file.
    pub fn backing_write(&self, off: u64, data: &[u8]) -> Result<()> {
        ublk_suite::files::open_rw(&self.backing)?
            .write_all_at(data, off)
            .context("writing the backing file")
    }

    /// One O_DIRECT READ (or WRITE of `write`) of `req_bytes` at `req_off` in the
    /// background, and the request the server holds for it (the whole I/O).
    pub fn held_io(&self, write: Option<Vec<u8>>) -> Result<(HeldIo, Request)> {
        self.target.set_hold(true);
        let (path, len, off) = (self.block_path(), self.req_bytes, self.req_off);
        let h = std::thread::spawn(move || {
            let f = open_direct(&path).map_err(std::io::Error::other)?;
            let mut buf = AlignedBuf::filled(len, 0xa5);
            match write {
                Some(d) => {
                    buf.as_mut_slice().copy_from_slice(&d);
                    f.write_at(buf.as_slice(), off).map(|n| (n, Vec::new()))
                }
                None => f
                    .read_at(buf.as_mut_slice(), off)
                    .map(|n| (n, buf.as_slice().to_vec())),
            }
        });
        let req = self.target.next_held(Duration::from_secs(20));
        self.target.set_hold(false);
        let req = req?;
        if req.bytes() as usize != len || req.offset() != off {
            bail!("the held request is not the whole I/O ({len} bytes at {off}): {req:?}");
        }
        Ok((h, req))
    }

    /// Stops and deletes the device.
    pub fn finish(mut self) -> Result<()> {
        self.target.close();
        match self.dev.take() {
            Some(d) => d.stop_and_delete(),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.target.close();
    }
}

/// Is `path` (a sysfs entry, a device node) gone?
pub fn gone(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err()
}
