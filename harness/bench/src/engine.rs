//! The I/O engine: one io_uring per submitting thread, a pipeline of `qd`
//! reads or writes of `bs` bytes kept full until `n` I/Os have completed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use ublk::buf::AlignedBuf;

use anyhow::{bail, Context, Result};
use io_uring::{opcode, types, IoUring};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    SeqRead,
    SeqWrite,
    RandRead,
    RandWrite,
}

impl Pattern {
    pub const ALL: [Pattern; 4] = [
        Pattern::SeqRead,
        Pattern::SeqWrite,
        Pattern::RandRead,
        Pattern::RandWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pattern::SeqRead => "seqread",
            Pattern::SeqWrite => "seqwrite",
            Pattern::RandRead => "randread",
            Pattern::RandWrite => "randwrite",
        }
    }

    pub fn is_write(self) -> bool {
        matches!(self, Pattern::SeqWrite | Pattern::RandWrite)
    }

    pub fn is_random(self) -> bool {
        matches!(self, Pattern::RandRead | Pattern::RandWrite)
    }
}

/// One submitting thread's state: its ring, buffers and position.
pub struct Worker {
    ring: IoUring,
    bufs: Vec<AlignedBuf>,
    pattern: Pattern,
    bs: u64,
    qd: usize,
    /// The region [base, base + span) this worker touches.
    base: u64,
    span: u64,
    cursor: u64,
    rng: u64,
    /// Pin to this CPU while running (for multi-queue targets).
    pub cpu: Option<usize>,
}

impl Worker {
    pub fn new(
        pattern: Pattern,
        bs: u64,
        qd: usize,
        base: u64,
        span: u64,
        seed: u64,
    ) -> Result<Worker> {
        if span < bs {
            bail!("region of {span} bytes is smaller than the block size {bs}");
        }
        let ring = IoUring::new((qd as u32).next_power_of_two().max(2))
            .context("io_uring_setup for the bench ring")?;
        let bufs = (0..qd)
            .map(|i| AlignedBuf::filled(bs as usize, 0x5a ^ i as u8))
            .collect();
        Ok(Worker {
            ring,
            bufs,
            pattern,
            bs,
            qd,
            base,
            span: span - span % bs,
            cursor: 0,
            rng: seed | 1,
            cpu: None,
        })
    }

    fn next_offset(&mut self) -> u64 {
        let blocks = self.span / self.bs;
        let blk = if self.pattern.is_random() {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks
        } else {
            let b = self.cursor % blocks;
            self.cursor = self.cursor.wrapping_add(1);
            b
        };
        self.base + blk * self.bs
    }

    fn push(&mut self, fd: i32, slot: usize) -> Result<()> {
        let off = self.next_offset();
        let ptr = self.bufs[slot].as_mut_ptr();
        let len = self.bs as u32;
        let sqe = if self.pattern.is_write() {
            opcode::Write::new(types::Fd(fd), ptr, len)
                .offset(off)
                .build()
        } else {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(off)
                .build()
        }
        .user_data(slot as u64);
        // SAFETY: the buffer lives in self.bufs for as long as the ring, and
        // a slot is reused only after its completion was reaped.
        unsafe { self.ring.submission().push(&sqe) }.context("submission queue full")?;
        Ok(())
    }

    /// Run `n` I/Os with up to `qd` in flight; returns the wall time.
    pub fn run(&mut self, file: &File, n: u64) -> Result<Duration> {
        if let Some(cpu) = self.cpu {
            pin_to(cpu)?;
        }
        let fd = file.as_raw_fd();
        let start = Instant::now();
        let mut issued = 0u64;
        let mut done = 0u64;
        let mut free: Vec<usize> = (0..self.qd).rev().collect();
        while done < n {
            while issued < n {
                let Some(slot) = free.pop() else { break };
                self.push(fd, slot)?;
                issued += 1;
            }
            self.ring.submit_and_wait(1).context("io_uring_enter")?;
            let mut cq = self.ring.completion();
            cq.sync();
            for cqe in &mut cq {
                let res = cqe.result();
                if res < 0 {
                    bail!(
                        "{} of {} bytes failed: {}",
                        self.pattern.name(),
                        self.bs,
                        std::io::Error::from_raw_os_error(-res)
                    );
                }
                if res as u64 != self.bs {
                    bail!("short {}: {res} of {} bytes", self.pattern.name(), self.bs);
                }
                free.push(cqe.user_data() as usize);
                done += 1;
            }
        }
        Ok(start.elapsed())
    }
}

/// What a timed run measured: completed I/Os, bytes, wall time, and the completion
/// latency of every I/O (from its submission to its completion) in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    pub ios: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub lat_ns: Vec<u64>,
}

impl Timed {
    /// The `p`-th percentile (0 < p <= 100) of the latencies, nearest rank; 0 when
    /// nothing completed.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.lat_ns.is_empty() {
            return 0;
        }
        let mut v = self.lat_ns.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

impl Worker {
    /// Keep `qd` I/Os in flight for `dur`, then wait for those still in flight. Every
    /// completion's latency is taken from the moment its SQE went into the ring.
    pub fn run_timed(&mut self, file: &File, dur: Duration) -> Result<Timed> {
        let fd = file.as_raw_fd();
        let start = Instant::now();
        let deadline = start + dur;
        let mut t = Timed::default();
        let mut issued_at = vec![start; self.qd];
        let mut free: Vec<usize> = (0..self.qd).rev().collect();
        let mut inflight = 0usize;
        loop {
            let issuing = Instant::now() < deadline;
            if issuing {
                while let Some(slot) = free.pop() {
                    self.push(fd, slot)?;
                    issued_at[slot] = Instant::now();
                    inflight += 1;
                }
            }
            if inflight == 0 {
                break;
            }
            self.ring.submit_and_wait(1).context("io_uring_enter")?;
            let now = Instant::now();
            let mut cq = self.ring.completion();
            cq.sync();
            for cqe in &mut cq {
                let res = cqe.result();
                if res < 0 {
                    bail!(
                        "{} of {} bytes failed: {}",
                        self.pattern.name(),
                        self.bs,
                        std::io::Error::from_raw_os_error(-res)
                    );
                }
                if res as u64 != self.bs {
                    bail!("short {}: {res} of {} bytes", self.pattern.name(), self.bs);
                }
                let slot = cqe.user_data() as usize;
                t.lat_ns
                    .push(now.duration_since(issued_at[slot]).as_nanos() as u64);
                t.ios += 1;
                t.bytes += self.bs;
                inflight -= 1;
                free.push(slot);
            }
        }
        t.elapsed = start.elapsed();
        Ok(t)
    }
}

pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pin to CPU {cpu}"));
        }
    }
    Ok(())
}

/// Run `n` I/Os split over the workers (one thread each when there are
/// several); returns the wall time of the slowest.
pub fn run_workers(workers: &mut [Worker], file: &File, n: u64) -> Result<Duration> {
    if workers.len() == 1 {
        return workers[0].run(file, n);
    }
    let per = n.div_ceil(workers.len() as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .map(|w| s.spawn(move || w.run(file, per)))
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("bench worker thread panicked"))??;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(start.elapsed())
}
