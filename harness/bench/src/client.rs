//! The interleaved bench's two clients: Debian's fio and the bench's own io_uring engine
//! ([`crate::engine`]). Both run the same [`Job`] for the same time on the same device,
//! in the same round, so a ratio that one client reports can be checked against the
//! other's: a disagreement beyond the intervals points at a client, not at the kernel.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::engine::{Pattern, Timed, Worker};
use crate::fio::{self, Job, Outcome};

/// Which program drove a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Fio,
    Engine,
}

impl Client {
    pub const ALL: [Client; 2] = [Client::Fio, Client::Engine];

    pub fn name(self) -> &'static str {
        match self {
            Client::Fio => "fio",
            Client::Engine => "engine",
        }
    }

    pub fn parse(s: &str) -> Result<Client> {
        match s {
            "fio" => Ok(Client::Fio),
            "engine" => Ok(Client::Engine),
            _ => bail!("unknown client {s:?}: fio or engine"),
        }
    }
}

/// One timed run: `job` on `path` (its first `size` bytes) for `secs` seconds, O_DIRECT
/// when `direct`; `seed` starts the engine's random offsets.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub job: &'a Job,
    pub path: &'a Path,
    pub size: u64,
    pub secs: u32,
    pub direct: bool,
    pub seed: u64,
}

/// Runs `s` with `client`.
pub fn run(client: Client, fio_bin: &Path, s: Spec) -> Result<Outcome> {
    match client {
        Client::Fio => run_fio(fio_bin, s.job, s.path, s.size, s.secs, s.direct),
        Client::Engine => run_engine(s.job, s.path, s.size, s.secs, s.direct, s.seed),
    }
}

fn run_fio(
    fio_bin: &Path,
    job: &Job,
    path: &Path,
    size: u64,
    secs: u32,
    direct: bool,
) -> Result<Outcome> {
    let out = Command::new(fio_bin)
        .args(job.args(path, size, secs, direct))
        .output()
        .context("running fio")?;
    if !out.status.success() {
        bail!(
            "fio {} on {} failed ({}): {}",
            job.name(),
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fio::parse(&String::from_utf8_lossy(&out.stdout), job)
}

fn pattern(job: &Job) -> Result<Pattern> {
    Ok(match job.rw {
        "read" => Pattern::SeqRead,
        "write" => Pattern::SeqWrite,
        "randread" => Pattern::RandRead,
        "randwrite" => Pattern::RandWrite,
        other => bail!("the engine has no access pattern {other:?}"),
    })
}

fn open(path: &Path, write: bool, direct: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(write);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path).with_context(|| {
        format!(
            "open {} ({}{})",
            path.display(),
            if write { "read-write" } else { "read-only" },
            if direct { ", O_DIRECT" } else { "" }
        )
    })
}

fn outcome(job: &Job, t: &Timed) -> Result<Outcome> {
    let runtime_ms = t.elapsed.as_millis() as u64;
    if t.ios == 0 || runtime_ms == 0 {
        bail!(
            "the engine moved nothing in {}: {} I/Os in {runtime_ms} ms",
            job.name(),
            t.ios
        );
    }
    Ok(Outcome {
        bytes: t.bytes,
        ios: t.ios,
        runtime_ms,
        clat_p50_ns: t.percentile_ns(50.0),
        clat_p99_ns: t.percentile_ns(99.0),
    })
}

fn run_engine(
    job: &Job,
    path: &Path,
    size: u64,
    secs: u32,
    direct: bool,
    seed: u64,
) -> Result<Outcome> {
    let dur = Duration::from_secs(secs.into());
    if job.rw == "pcwrite" {
        return run_pcwrite(job, path, size, dur);
    }
    let p = pattern(job)?;
    let f = open(path, p.is_write(), direct)?;
    let mut w = Worker::new(p, job.bs, job.qd as usize, 0, size, seed)?;
    let t = w
        .run_timed(&f, dur)
        .with_context(|| format!("engine {} on {}", job.name(), path.display()))?;
    outcome(job, &t)
}

/// fio's pcwrite job by plain syscalls: `bs` writes through the page cache over the first
/// 32 MiB again and again, fdatasync after every 16. The latency is the write's.
fn run_pcwrite(job: &Job, path: &Path, size: u64, dur: Duration) -> Result<Outcome> {
    let f = open(path, true, false)?;
    let span = size.min(32 << 20) / job.bs * job.bs;
    if span == 0 {
        bail!("{} bytes hold no {}-byte write", size, job.bs);
    }
    let buf = vec![0xa5u8; job.bs as usize];
    let start = Instant::now();
    let mut t = Timed::default();
    let mut off = 0u64;
    while start.elapsed() < dur {
        let t0 = Instant::now();
        f.write_all_at(&buf, off)
            .with_context(|| format!("write {} bytes at {off} to {}", job.bs, path.display()))?;
        t.lat_ns.push(t0.elapsed().as_nanos() as u64);
        t.ios += 1;
        t.bytes += job.bs;
        off = (off + job.bs) % span;
        if t.ios % 16 == 0 {
            f.sync_data()
                .with_context(|| format!("fdatasync {}", path.display()))?;
        }
    }
    t.elapsed = start.elapsed();
    outcome(job, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rw: &'static str, bs: u64, qd: u32) -> Job {
        Job { rw, bs, qd }
    }

    #[test]
    fn names_round_trip() {
        for c in Client::ALL {
            assert_eq!(Client::parse(c.name()).expect("known"), c);
        }
        assert!(format!("{:#}", Client::parse("dd").unwrap_err()).contains("fio or engine"));
    }

    #[test]
    fn patterns_of_the_jobs() {
        assert_eq!(
            pattern(&job("randread", 4096, 32)).ok(),
            Some(Pattern::RandRead)
        );
        assert_eq!(
            pattern(&job("write", 4096, 1)).ok(),
            Some(Pattern::SeqWrite)
        );
        assert!(pattern(&job("pcwrite", 65536, 1)).is_err());
    }

    #[test]
    fn engine_runs_on_a_plain_file() {
        // Buffered I/O on a temporary file: the engine's whole path, no device needed.
        let dir = std::env::temp_dir().join(format!("ublk-bench-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("f");
        let f = File::create(&p).expect("create");
        f.set_len(1 << 20).expect("set_len");
        for j in [
            job("randread", 4096, 4),
            job("randwrite", 4096, 1),
            job("pcwrite", 65536, 1),
        ] {
            let o = run_engine(&j, &p, 1 << 20, 1, false, 7).expect("runs");
            assert!(o.ios > 0 && o.bytes == o.ios * j.bs, "{o:?}");
            assert!(o.clat_p50_ns <= o.clat_p99_ns, "{o:?}");
        }
        let e = run_engine(
            &job("randread", 4096, 1),
            &dir.join("absent"),
            1 << 20,
            1,
            false,
            7,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("absent"), "{e:#}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let t = Timed {
            lat_ns: (1..=100).rev().collect(),
            ..Timed::default()
        };
        assert_eq!(t.percentile_ns(50.0), 50);
        assert_eq!(t.percentile_ns(99.0), 99);
        assert_eq!(t.percentile_ns(100.0), 100);
        assert_eq!(Timed::default().percentile_ns(50.0), 0);
    }
}
