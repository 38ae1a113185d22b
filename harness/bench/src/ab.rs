//! The interleaved bench, in the guest: every configuration (the backing file, the kernel
//! loop driver, ublk copy mode, ublk zero copy) is live at once on the same backing, and
//! each round runs every workload on every configuration once, for a short time, in a
//! fresh order. Ratios are then taken within a round (`abreport`), so the host's load
//! lands on both sides of each ratio. Two clients run every workload in the same round,
//! fio and the bench's own engine ([`crate::client`]); the server is the `ublk` CLI given
//! by path, so that a server built for another revision of the series can be measured by
//! the same method.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ublk_suite::blockio::Rng;

use crate::client::{self, Client};
use crate::fio::Job;
use crate::guest::{guest_accel, make_backing, require_root, run, setup_ext4};
use crate::stats::{pid_holding, proc_ticks, user_hz, CpuTicks, KprobeCounter};

/// Options of `ublk-bench ab`.
#[derive(Debug, Clone)]
pub struct AbOpts {
    pub out: PathBuf,
    pub ublk: PathBuf,
    pub rounds: u32,
    pub secs: u32,
    pub seed: u64,
    pub size_mib: u64,
    pub backings: Vec<Backing>,
    /// Only these workloads (report names); empty: all.
    pub workloads: Vec<String>,
    /// The clients that run every workload in every round.
    pub clients: Vec<Client>,
    pub smoke: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backing {
    Ext4Direct,
    TmpfsBuffered,
}

impl Backing {
    pub fn name(self) -> &'static str {
        match self {
            Backing::Ext4Direct => "ext4-direct",
            Backing::TmpfsBuffered => "tmpfs-buffered",
        }
    }

    pub fn parse(s: &str) -> Result<Backing> {
        match s {
            "ext4" | "ext4-direct" => Ok(Backing::Ext4Direct),
            "tmpfs" | "tmpfs-buffered" => Ok(Backing::TmpfsBuffered),
            _ => bail!("unknown backing {s:?}: ext4 or tmpfs"),
        }
    }

    fn direct(self) -> bool {
        self == Backing::Ext4Direct
    }
}

/// The configurations of every round.
pub const CONFIGS: [&str; 4] = ["file", "loop", "copy", "zc"];

/// The workloads: the headline ones (512K sequential at QD16, 4K random at QD32), the QD1
/// latency ones, and page-cache writes with fdatasync (the cost of stable pages).
pub fn jobs(smoke: bool) -> Vec<Job> {
    let all = vec![
        Job {
            rw: "read",
            bs: 512 << 10,
            qd: 16,
        },
        Job {
            rw: "write",
            bs: 512 << 10,
            qd: 16,
        },
        Job {
            rw: "randread",
            bs: 4 << 10,
            qd: 32,
        },
        Job {
            rw: "randwrite",
            bs: 4 << 10,
            qd: 32,
        },
        Job {
            rw: "randread",
            bs: 4 << 10,
            qd: 1,
        },
        Job {
            rw: "randwrite",
            bs: 4 << 10,
            qd: 1,
        },
        Job {
            rw: "pcwrite",
            bs: 64 << 10,
            qd: 1,
        },
    ];
    if smoke {
        // One large and one small workload: every path of the run, at half the cost.
        all.into_iter().step_by(2).take(2).collect()
    } else {
        all
    }
}

/// A fresh order of `n` items: a Fisher-Yates shuffle driven by `rng`.
pub fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// The columns of ab.tsv, one row per run: `srv_ticks` is the ublk server's own CPU
/// time (its threads and io-wq workers; 0 for the file and the loop driver).
pub const HEADER: &str = "round\tslot\tbacking\tconfig\tclient\tworkload\tbytes\tios\truntime_ms\tclat_p50_ns\tclat_p99_ns\tcpu_ticks\thz\tiowq\tsrv_ticks";

/// The header of ab.tsv before the second client and the server's CPU time: fio only.
pub const HEADER_FIO_ONLY: &str = "round\tslot\tbacking\tconfig\tworkload\tbytes\tios\truntime_ms\tclat_p50_ns\tclat_p99_ns\tcpu_ticks\thz\tiowq";

/// A live configuration: the path fio runs on and how to take it down.
struct Live {
    config: &'static str,
    path: PathBuf,
    direct: bool,
    loopdev: Option<String>,
    ublk_id: Option<u32>,
    /// The ublk server's pid (the process holding /dev/ublkcN).
    srv_pid: Option<i32>,
}

fn ublk_add(ublk: &Path, backing: &Path, zc: bool, buffered: bool, id: u32) -> Result<PathBuf> {
    let file = backing.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let id_s = id.to_string();
    let mut args = vec!["add", "-t", "loop", "-f", file, "-q", "1", "-d", "64"];
    args.extend(["-n", &id_s]);
    if zc {
        args.push("-z");
    }
    if buffered {
        args.push("--buffered-io");
    }
    run(&ublk.to_string_lossy(), &args)?;
    let dev = PathBuf::from(format!("/dev/ublkb{id}"));
    for _ in 0..100 {
        if dev.exists() {
            return Ok(dev);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not appear after `ublk add`", dev.display())
}

fn start_all(o: &AbOpts, b: Backing, path: &Path) -> Result<Vec<Live>> {
    let mut live = Vec::new();
    for config in CONFIGS {
        let l = match config {
            "file" => Live {
                config,
                path: path.to_path_buf(),
                direct: b.direct(),
                loopdev: None,
                ublk_id: None,
                srv_pid: None,
            },
            "loop" => {
                let dio = if b.direct() {
                    "--direct-io=on"
                } else {
                    "--direct-io=off"
                };
                let p = path.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
                let dev = run("losetup", &[dio, "-f", "--show", p])?;
                Live {
                    config,
                    path: PathBuf::from(&dev),
                    direct: true,
                    loopdev: Some(dev),
                    ublk_id: None,
                    srv_pid: None,
                }
            }
            _ => {
                let id = if config == "zc" { 91 } else { 90 };
                let dev = ublk_add(&o.ublk, path, config == "zc", !b.direct(), id)
                    .with_context(|| format!("starting ublk {config} on {}", path.display()))?;
                Live {
                    config,
                    path: dev,
                    direct: true,
                    loopdev: None,
                    ublk_id: Some(id),
                    srv_pid: Some(pid_holding(&format!("/dev/ublkc{id}")).with_context(|| {
                        format!("finding the server of ublk {config} (/dev/ublkc{id})")
                    })?),
                }
            }
        };
        live.push(l);
    }
    Ok(live)
}

fn stop_all(o: &AbOpts, live: Vec<Live>) -> Result<()> {
    let mut first_err = None;
    for l in live {
        let r = if let Some(id) = l.ublk_id {
            run(&o.ublk.to_string_lossy(), &["del", "-n", &id.to_string()]).map(|_| ())
        } else if let Some(d) = &l.loopdev {
            run("losetup", &["-d", d]).map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs the rounds and writes `ab.tsv` and `meta.txt` to `o.out`.
pub fn run_ab(o: &AbOpts) -> Result<()> {
    require_root()?;
    if !o.ublk.is_file() {
        bail!("no ublk server at {}", o.ublk.display());
    }
    let fio_bin = ublk_suite::scratch::find_tool("fio")
        .ok_or_else(|| anyhow!("fio is not installed (scripts/deps.sh installs it)"))?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("mkdir {}", o.out.display()))?;
    let iowq = KprobeCounter::new("io_wq_submit_work")
        .and_then(|k| k.count_only().map(|_| k))
        .context("a kprobe on io_wq_submit_work (io-wq punts)")?;
    let hz = user_hz();
    let size = o.size_mib << 20;
    let jobs: Vec<Job> = jobs(o.smoke)
        .into_iter()
        .filter(|j| o.workloads.is_empty() || o.workloads.contains(&j.name()))
        .collect();
    if jobs.is_empty() {
        bail!("no workload left to run: {:?}", o.workloads);
    }

    let mut meta = File::create(o.out.join("meta.txt")).context("create meta.txt")?;
    writeln!(meta, "release\t{}", run("uname", &["-r"])?)?;
    writeln!(meta, "guest_accel\t{}", guest_accel())?;
    writeln!(
        meta,
        "cpus\t{}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    let names: Vec<&str> = o.clients.iter().map(|c| c.name()).collect();
    writeln!(meta, "method\tinterleaved rounds, io_uring")?;
    writeln!(meta, "clients\t{}", names.join(" "))?;
    writeln!(meta, "rounds\t{}", o.rounds)?;
    writeln!(meta, "secs_per_run\t{}", o.secs)?;
    writeln!(meta, "seed\t{}", o.seed)?;
    writeln!(meta, "backing_mib\t{}", o.size_mib)?;
    writeln!(meta, "server\t{}", o.ublk.display())?;
    writeln!(
        meta,
        "fio\t{}",
        run(&fio_bin.to_string_lossy(), &["--version"])?
    )?;

    let mut tsv = File::create(o.out.join("ab.tsv")).context("create ab.tsv")?;
    writeln!(tsv, "{HEADER}")?;
    let mnt = PathBuf::from("/tmp/ublk-bench-ext4");
    if o.backings.contains(&Backing::Ext4Direct) {
        setup_ext4(&mnt)?;
    }
    let mut rng = Rng::new(o.seed);
    for &b in &o.backings {
        let path = match b {
            Backing::Ext4Direct => mnt.join("ab-backing.img"),
            Backing::TmpfsBuffered => PathBuf::from("/tmp/ublk-bench-ab-backing.img"),
        };
        make_backing(&path, size, b.direct())?;
        let live = start_all(o, b, &path)?;
        let r = rounds(
            o, b, &live, &jobs, &fio_bin, size, hz, &iowq, &mut rng, &mut tsv,
        );
        let s = stop_all(o, live);
        r?;
        s?;
        if !b.direct() {
            let _ = std::fs::remove_file(&path);
        }
    }
    if o.backings.contains(&Backing::Ext4Direct) {
        let _ = run("umount", &["/tmp/ublk-bench-ext4"]);
    }
    eprintln!("ublk-bench ab: done, results in {}", o.out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn rounds(
    o: &AbOpts,
    b: Backing,
    live: &[Live],
    jobs: &[Job],
    fio_bin: &Path,
    size: u64,
    hz: f64,
    iowq: &KprobeCounter,
    rng: &mut Rng,
    tsv: &mut File,
) -> Result<()> {
    // One unrecorded run per configuration first: the first reads of a fresh backing
    // (page cache, extent lookups) are not what any round measures.
    for l in live {
        let job = &jobs[0];
        let spec = client::Spec {
            job,
            path: &l.path,
            size,
            secs: 1,
            direct: l.direct,
            seed: rng.next(),
        };
        client::run(Client::Engine, fio_bin, spec)
            .with_context(|| format!("warming up {} with {}", l.config, job.name()))?;
    }
    for round in 0..o.rounds {
        eprintln!(
            "ublk-bench ab: {} round {}/{}",
            b.name(),
            round + 1,
            o.rounds
        );
        for job in jobs {
            // Every (configuration, client) pair once, in a fresh order.
            let pairs = live.len() * o.clients.len();
            for (slot, i) in shuffled(pairs, rng).into_iter().enumerate() {
                let l = &live[i % live.len()];
                let c = o.clients[i / live.len()];
                let c0 = CpuTicks::read()?;
                let k0 = iowq.hits()?;
                let s0 = l.srv_pid.map(proc_ticks).transpose()?.unwrap_or(0);
                let spec = client::Spec {
                    job,
                    path: &l.path,
                    size,
                    secs: o.secs,
                    direct: l.direct,
                    seed: rng.next(),
                };
                let r = client::run(c, fio_bin, spec)
                    .with_context(|| format!("{} {} on {}", c.name(), job.name(), l.config))?;
                let c1 = CpuTicks::read()?;
                let k1 = iowq.hits()?;
                let s1 = l.srv_pid.map(proc_ticks).transpose()?.unwrap_or(0);
                let dc = c1.delta(c0);
                writeln!(
                    tsv,
                    "{round}\t{slot}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{hz}\t{}\t{}",
                    b.name(),
                    l.config,
                    c.name(),
                    job.name(),
                    r.bytes,
                    r.ios,
                    r.runtime_ms,
                    r.clat_p50_ns,
                    r.clat_p99_ns,
                    dc.user + dc.sys,
                    k1.saturating_sub(k0),
                    s1.saturating_sub(s0),
                )?;
                tsv.flush()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_permutations_and_vary() {
        let mut rng = Rng::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let s = shuffled(4, &mut rng);
            let mut t = s.clone();
            t.sort();
            assert_eq!(t, vec![0, 1, 2, 3]);
            seen.insert(s);
        }
        // 24 orders exist; 50 draws must not keep to a handful.
        assert!(seen.len() >= 12, "only {} orders in 50 rounds", seen.len());
        // The same seed gives the same orders.
        let a: Vec<_> = (0..5).map(|_| shuffled(4, &mut Rng::new(3))).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn workloads() {
        let names: Vec<_> = jobs(false).iter().map(|j| j.name()).collect();
        assert_eq!(
            names,
            [
                "seqread-512k-qd16",
                "seqwrite-512k-qd16",
                "randread-4k-qd32",
                "randwrite-4k-qd32",
                "randread-4k-qd1",
                "randwrite-4k-qd1",
                "pcwrite-64k-sync16"
            ]
        );
        let smoke: Vec<_> = jobs(true).iter().map(|j| j.name()).collect();
        assert_eq!(smoke, ["seqread-512k-qd16", "randread-4k-qd32"]);
    }

    #[test]
    fn backings() {
        assert_eq!(Backing::parse("ext4").ok(), Some(Backing::Ext4Direct));
        assert_eq!(
            Backing::parse("tmpfs-buffered").ok(),
            Some(Backing::TmpfsBuffered)
        );
        assert!(format!("{:#}", Backing::parse("xfs").unwrap_err()).contains("ext4 or tmpfs"));
    }

    #[test]
    fn header_matches_rows() {
        assert_eq!(HEADER.split('\t').count(), 15);
        assert_eq!(HEADER_FIO_ONLY.split('\t').count(), 13);
    }
}
