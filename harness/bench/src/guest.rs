//! The in-guest run: backings, targets (file, kernel loop, ublk copy, ublk
//! zero copy), the workload matrix, criterion, and results.tsv.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use criterion::{Criterion, SamplingMode, Throughput};

use crate::engine::{run_workers, Pattern, Worker};
use crate::stats::{user_hz, CpuTicks, KprobeCounter};

#[derive(Debug)]
pub struct Opts {
    pub smoke: bool,
    pub out: PathBuf,
    pub measure: Duration,
    pub warmup: Duration,
    pub size_mib: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backing {
    /// O_DIRECT file on ext4 on the scratch virtio disk.
    Ext4Direct,
    /// Buffered file on tmpfs.
    TmpfsBuffered,
}

impl Backing {
    fn name(self) -> &'static str {
        match self {
            Backing::Ext4Direct => "ext4-direct",
            Backing::TmpfsBuffered => "tmpfs-buffered",
        }
    }
    fn direct(self) -> bool {
        self == Backing::Ext4Direct
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Loop,
    Copy,
    Zc,
}

#[derive(Clone, Copy, Debug)]
struct TargetSpec {
    kind: Kind,
    queues: u16,
}

impl TargetSpec {
    fn name(self) -> String {
        match self.kind {
            Kind::File => "file".into(),
            Kind::Loop => "loop".into(),
            Kind::Copy => format!("ublk-copy-q{}", self.queues),
            Kind::Zc => format!("ublk-zc-q{}", self.queues),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Workload {
    pattern: Pattern,
    bs: u64,
    qd: usize,
}

impl Workload {
    fn name(&self) -> String {
        format!("{}-{}k-qd{}", self.pattern.name(), self.bs / 1024, self.qd)
    }
}

/// A live target: the file to do I/O on, and what to tear down.
struct Live {
    file: File,
    loopdev: Option<String>,
    ublk: Option<ublk::Device>,
}

impl Live {
    fn teardown(self) -> Result<()> {
        drop(self.file);
        if let Some(d) = self.ublk {
            d.stop_and_delete()
                .context("stop and delete the ublk device")?;
        }
        if let Some(l) = self.loopdev {
            run("losetup", &["-d", &l])?;
        }
        Ok(())
    }
}

pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn open_rw(path: &Path, direct: bool) -> Result<File> {
    let mut oo = OpenOptions::new();
    oo.read(true).write(true);
    if direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    oo.open(path)
        .with_context(|| format!("open {} (O_DIRECT={direct})", path.display()))
}

fn start(backing: Backing, path: &Path, t: TargetSpec) -> Result<Live> {
    Ok(match t.kind {
        Kind::File => Live {
            file: open_rw(path, backing.direct())?,
            loopdev: None,
            ublk: None,
        },
        Kind::Loop => {
            let dio = if backing.direct() {
                "--direct-io=on"
            } else {
                "--direct-io=off"
            };
            let p = path.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
            let dev = run("losetup", &[dio, "-f", "--show", p]).context("attach a loop device")?;
            let file = open_rw(Path::new(&dev), true)?;
            Live {
                file,
                loopdev: Some(dev),
                ublk: None,
            }
        }
        Kind::Copy | Kind::Zc => {
            let target = ublk::TargetConfig::Loop {
                path: path.to_path_buf(),
                buffered: !backing.direct(),
            };
            let mut cfg = ublk::DeviceConfig::new();
            cfg.zero_copy = t.kind == Kind::Zc;
            cfg.nr_queues = t.queues;
            cfg.depth = 64;
            cfg.max_io_buf_bytes = 1 << 20;
            let dev = ublk::Device::start(&cfg, &target)
                .with_context(|| format!("start ublk {} on {}", t.name(), path.display()))?;
            let file = open_rw(&dev.block_path(), true)?;
            Live {
                file,
                loopdev: None,
                ublk: Some(dev),
            }
        }
    })
}

/// Creates and fills a backing file of `size` bytes.
pub(crate) fn make_backing(path: &Path, size: u64, direct: bool) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    for _ in 0..size >> 20 {
        f.write_all(&chunk)
            .with_context(|| format!("fill {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    if direct {
        // Start from a cold page cache so O_DIRECT sees no cached pages.
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
    Ok(())
}

pub(crate) fn setup_ext4(mnt: &Path) -> Result<()> {
    let disk = std::env::var("VMRUN_SCRATCH_DISK").map_err(|_| {
        anyhow!("VMRUN_SCRATCH_DISK is not set: run in the guest with a scratch disk")
    })?;
    run("mkfs.ext4", &["-q", "-F", &disk]).context("mkfs.ext4 on the scratch disk")?;
    std::fs::create_dir_all(mnt).with_context(|| format!("mkdir {}", mnt.display()))?;
    let m = mnt.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    run("mount", &["-t", "ext4", &disk, m]).context("mount the scratch ext4")?;
    Ok(())
}

fn matrix(smoke: bool) -> (Vec<TargetSpec>, Vec<Workload>) {
    let q1 = |kind| TargetSpec { kind, queues: 1 };
    let targets = vec![
        q1(Kind::File),
        q1(Kind::Loop),
        q1(Kind::Copy),
        q1(Kind::Zc),
        TargetSpec {
            kind: Kind::Copy,
            queues: 2,
        },
        TargetSpec {
            kind: Kind::Zc,
            queues: 2,
        },
    ];
    let mut w = Vec::new();
    if smoke {
        for (pattern, bs) in [
            (Pattern::SeqRead, 512 << 10),
            (Pattern::SeqWrite, 512 << 10),
            (Pattern::RandRead, 4 << 10),
        ] {
            w.push(Workload {
                pattern,
                bs,
                qd: 32,
            });
        }
    } else {
        for pattern in Pattern::ALL {
            for bs in [4u64 << 10, 64 << 10, 512 << 10, 1 << 20] {
                for qd in [1, 32] {
                    w.push(Workload { pattern, bs, qd });
                }
            }
        }
    }
    (targets, w)
}

const HEADER: &str = "backing\ttarget\tqueues\tjobs\tworkload\tpattern\tbs\tqd\tmean_ns\tlo_ns\thi_ns\tbytes_per_iter\tios_per_iter\tmib_s\tiops\tcpu_user_s\tcpu_sys_s\tbytes_total\tios_total\tcpu_s_per_gib\tiowq_per_io\tiowq_workers";

struct Acc {
    bytes: u64,
    ios: u64,
    cpu: CpuTicks,
    iowq: u64,
    err: Option<anyhow::Error>,
}

fn estimate(home: &Path, group: &str, id: &str) -> Result<(f64, f64, f64)> {
    let p = home.join(group).join(id).join("new/estimates.json");
    let s = std::fs::read_to_string(&p)
        .with_context(|| format!("read criterion estimates {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&s).with_context(|| format!("parse {}", p.display()))?;
    let m = &v["mean"];
    let get = |x: &serde_json::Value| {
        x.as_f64()
            .ok_or_else(|| anyhow!("no mean in {}", p.display()))
    };
    Ok((
        get(&m["point_estimate"])?,
        get(&m["confidence_interval"]["lower_bound"])?,
        get(&m["confidence_interval"]["upper_bound"])?,
    ))
}

/// io-wq worker threads of this process (the bench's rings and the ublk
/// server's queue rings), counted by name.
fn iowq_workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .map(|c| c.starts_with("iou-wrk"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// The bench needs root in the guest (ublk, losetup, mkfs).
pub(crate) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the bench needs root (ublk, losetup, mkfs): run it in the guest via scripts/bench.sh"
        );
    }
    Ok(())
}

/// The accelerator as the guest sees it: kvm-clock is offered only under KVM.
pub(crate) fn guest_accel() -> &'static str {
    let clocksource = std::fs::read_to_string(
        "/sys/devices/system/clocksource/clocksource0/available_clocksource",
    )
    .unwrap_or_default();
    if clocksource.contains("kvm-clock") {
        "kvm"
    } else {
        "tcg (no kvm-clock)"
    }
}

pub fn run_guest(o: &Opts) -> Result<()> {
    require_root()?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("mkdir {}", o.out.display()))?;
    let release = run("uname", &["-r"])?;
    let guest_accel = guest_accel();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let size = o.size_mib << 20;

    let iowq = match KprobeCounter::new("io_wq_submit_work").and_then(|k| k.count_only().map(|_| k))
    {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("ublk-bench: io-wq punts not counted: {e:#}");
            None
        }
    };

    let mut meta = File::create(o.out.join("meta.txt")).context("create meta.txt")?;
    writeln!(meta, "release\t{release}")?;
    writeln!(meta, "guest_accel\t{guest_accel}")?;
    writeln!(meta, "cpus\t{cpus}")?;
    writeln!(meta, "smoke\t{}", o.smoke)?;
    writeln!(meta, "backing_mib\t{}", o.size_mib)?;
    writeln!(
        meta,
        "criterion\tsample_size 10, flat sampling, warm_up {} ms, measurement {} ms, nresamples 1000",
        o.warmup.as_millis(),
        o.measure.as_millis()
    )?;
    writeln!(
        meta,
        "iowq_probe\t{}",
        iowq.as_ref().map(|k| k.symbol.as_str()).unwrap_or("none")
    )?;

    let home = PathBuf::from("/tmp/ublk-bench-criterion");
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(o.warmup)
        .measurement_time(o.measure)
        .nresamples(1000)
        .without_plots()
        .output_directory(&home);

    let mut tsv = File::create(o.out.join("results.tsv")).context("create results.tsv")?;
    writeln!(tsv, "{HEADER}")?;

    let mnt = PathBuf::from("/tmp/ublk-bench-ext4");
    setup_ext4(&mnt)?;
    let (targets, workloads) = matrix(o.smoke);
    let hz = user_hz();
    for backing in [Backing::Ext4Direct, Backing::TmpfsBuffered] {
        let path = match backing {
            Backing::Ext4Direct => mnt.join("backing.img"),
            Backing::TmpfsBuffered => PathBuf::from("/tmp/ublk-bench-backing.img"),
        };
        make_backing(&path, size, backing.direct())?;
        for &t in &targets {
            eprintln!("ublk-bench: {} / {}", backing.name(), t.name());
            let live = start(backing, &path, t)?;
            let group_name = format!("{}-{}", backing.name(), t.name());
            let mut g = c.benchmark_group(&group_name);
            g.sampling_mode(SamplingMode::Flat);
            let jobs = usize::from(t.queues);
            for w in &workloads {
                if jobs > 1 && w.qd == 1 {
                    continue; // one I/O in flight uses one queue: nothing to learn
                }
                let per_job_qd = (w.qd / jobs).max(1);
                let span = size / jobs as u64;
                let mut workers = (0..jobs)
                    .map(|j| {
                        let mut wk = Worker::new(
                            w.pattern,
                            w.bs,
                            per_job_qd,
                            span * j as u64,
                            span,
                            0x9e37 + j as u64,
                        )?;
                        if jobs > 1 {
                            wk.cpu = Some(j % cpus);
                        }
                        Ok(wk)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let ios_per_iter = w.qd as u64;
                let mut acc = Acc {
                    bytes: 0,
                    ios: 0,
                    cpu: CpuTicks::default(),
                    iowq: 0,
                    err: None,
                };
                g.throughput(Throughput::Bytes(ios_per_iter * w.bs));
                let id = w.name();
                g.bench_function(&id, |b| {
                    b.iter_custom(|iters| {
                        if acc.err.is_some() {
                            return Duration::from_millis(1);
                        }
                        let n = iters * ios_per_iter;
                        let c0 = CpuTicks::read();
                        let k0 = iowq.as_ref().map(|k| k.hits());
                        let r = run_workers(&mut workers, &live.file, n);
                        let c1 = CpuTicks::read();
                        let k1 = iowq.as_ref().map(|k| k.hits());
                        match (r, c0, c1) {
                            (Ok(d), Ok(c0), Ok(c1)) => {
                                let dc = c1.delta(c0);
                                acc.cpu.user += dc.user;
                                acc.cpu.sys += dc.sys;
                                acc.bytes += n * w.bs;
                                acc.ios += n;
                                if let (Some(Ok(a)), Some(Ok(b))) = (k0, k1) {
                                    acc.iowq += b.saturating_sub(a);
                                }
                                d
                            }
                            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                                acc.err = Some(e);
                                Duration::from_millis(1)
                            }
                        }
                    })
                });
                if let Some(e) = acc.err.take() {
                    return Err(e.context(format!("{group_name} {id}")));
                }
                let (mean, lo, hi) = estimate(&home, &group_name, &id)?;
                let secs = mean / 1e9;
                let mib_s = (ios_per_iter * w.bs) as f64 / secs / (1u64 << 20) as f64;
                let iops = ios_per_iter as f64 / secs;
                let cpu_s = (acc.cpu.user + acc.cpu.sys) as f64 / hz;
                let gib = acc.bytes as f64 / (1u64 << 30) as f64;
                let iowq_s = if iowq.is_some() {
                    format!("{:.3}", acc.iowq as f64 / acc.ios.max(1) as f64)
                } else {
                    "-".into()
                };
                writeln!(
                    tsv,
                    "{}\t{}\t{}\t{jobs}\t{id}\t{}\t{}\t{}\t{mean:.0}\t{lo:.0}\t{hi:.0}\t{}\t{ios_per_iter}\t{mib_s:.2}\t{iops:.1}\t{:.2}\t{:.2}\t{}\t{}\t{:.3}\t{iowq_s}\t{}",
                    backing.name(),
                    t.name(),
                    t.queues,
                    w.pattern.name(),
                    w.bs,
                    w.qd,
                    ios_per_iter * w.bs,
                    acc.cpu.user as f64 / hz,
                    acc.cpu.sys as f64 / hz,
                    acc.bytes,
                    acc.ios,
                    cpu_s / gib.max(1e-12),
                    iowq_workers(),
                )?;
                tsv.flush()?;
            }
            g.finish();
            live.teardown()?;
        }
        if !backing.direct() {
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = run("umount", &[mnt.to_str().unwrap_or("/tmp/ublk-bench-ext4")]);
    drop(iowq);
    eprintln!("ublk-bench: done, results in {}", o.out.display());
    Ok(())
}
