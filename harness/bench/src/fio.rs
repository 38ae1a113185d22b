//! fio as the interleaved bench's client: the command line of one timed job and what its
//! JSON output says (bytes, I/Os, runtime, completion latency percentiles).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// One fio workload: its access pattern, block size and queue depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// fio's --rw: read, write, randread, randwrite; or pcwrite: sequential writes through
    /// the device's page cache, fdatasync every 16, over the first 32 MiB again and again,
    /// so that pages are rewritten while under writeback (what stable pages make wait).
    pub rw: &'static str,
    pub bs: u64,
    pub qd: u32,
}

impl Job {
    /// `seqread-512k-qd16`, `randread-4k-qd32`: the workload's name in every report.
    pub fn name(&self) -> String {
        let pat = match self.rw {
            "read" => "seqread",
            "write" => "seqwrite",
            "pcwrite" => return format!("pcwrite-{}k-sync16", self.bs >> 10),
            other => other,
        };
        format!("{pat}-{}k-qd{}", self.bs >> 10, self.qd)
    }

    pub fn is_write(&self) -> bool {
        self.rw.ends_with("write")
    }

    /// The arguments of a time-based run of `secs` seconds on `file` (the first `size`
    /// bytes), io_uring engine, O_DIRECT unless `direct` is false (a tmpfs file).
    pub fn args(&self, file: &Path, size: u64, secs: u32, direct: bool) -> Vec<String> {
        let pc = self.rw == "pcwrite";
        let mut a = vec![
            "--name=ab".into(),
            format!("--filename={}", file.display()),
            "--ioengine=io_uring".into(),
            format!("--direct={}", u8::from(direct && !pc)),
            format!("--rw={}", if pc { "write" } else { self.rw }),
            format!("--bs={}", self.bs),
            format!("--iodepth={}", self.qd),
            format!("--size={}", if pc { size.min(32 << 20) } else { size }),
            format!("--runtime={secs}"),
            "--time_based=1".into(),
            "--numjobs=1".into(),
            "--randrepeat=0".into(),
            "--norandommap=1".into(),
            "--clat_percentiles=1".into(),
            "--percentile_list=50:99".into(),
            "--output-format=json".into(),
        ];
        if pc {
            a.push("--fdatasync=16".into());
        }
        a
    }
}

/// What one fio run measured, in its own direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub bytes: u64,
    pub ios: u64,
    pub runtime_ms: u64,
    pub clat_p50_ns: u64,
    pub clat_p99_ns: u64,
}

fn u64_at(v: &Value, path: &[&str]) -> Result<u64> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| anyhow!("fio's JSON has no {}", path.join(".")))?;
    }
    cur.as_u64()
        .or_else(|| cur.as_f64().map(|f| f as u64))
        .ok_or_else(|| anyhow!("fio's {} is not a number: {cur}", path.join(".")))
}

/// The outcome of fio's first job in `json` (`--output-format=json`), in the job's
/// direction. An error names what is missing, or the job's error code.
pub fn parse(json: &str, job: &Job) -> Result<Outcome> {
    // fio may print notes before the JSON document.
    let start = json
        .find('{')
        .ok_or_else(|| anyhow!("no JSON in fio's output: {json:?}"))?;
    let v: Value = serde_json::from_str(&json[start..]).context("parsing fio's JSON output")?;
    let j = v
        .get("jobs")
        .and_then(|j| j.get(0))
        .ok_or_else(|| anyhow!("fio's JSON has no jobs"))?;
    let err = u64_at(j, &["error"]).unwrap_or(0);
    if err != 0 {
        bail!("fio's job ended with error {err}");
    }
    let dir = if job.is_write() { "write" } else { "read" };
    let d = j
        .get(dir)
        .ok_or_else(|| anyhow!("fio's job has no {dir} section"))?;
    let out = Outcome {
        bytes: u64_at(d, &["io_bytes"])?,
        ios: u64_at(d, &["total_ios"])?,
        runtime_ms: u64_at(d, &["runtime"])?,
        clat_p50_ns: u64_at(d, &["clat_ns", "percentile", "50.000000"])?,
        clat_p99_ns: u64_at(d, &["clat_ns", "percentile", "99.000000"])?,
    };
    if out.ios == 0 || out.runtime_ms == 0 {
        bail!(
            "fio moved nothing: {} I/Os in {} ms",
            out.ios,
            out.runtime_ms
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "ab",
      "error" : 0,
      "read" : {
        "io_bytes" : 8388608,
        "bw_bytes" : 8388608,
        "iops" : 2048.0,
        "runtime" : 1000,
        "total_ios" : 2048,
        "clat_ns" : {
          "min" : 1000,
          "percentile" : { "50.000000" : 14848, "99.000000" : 60160 }
        }
      },
      "write" : {
        "io_bytes" : 0,
        "total_ios" : 0,
        "runtime" : 0,
        "clat_ns" : { "min" : 0 }
      }
    }
  ]
}"#;

    #[test]
    fn names() {
        let j = Job {
            rw: "read",
            bs: 512 << 10,
            qd: 16,
        };
        assert_eq!(j.name(), "seqread-512k-qd16");
        assert!(!j.is_write());
        let j = Job {
            rw: "randwrite",
            bs: 4096,
            qd: 1,
        };
        assert_eq!(j.name(), "randwrite-4k-qd1");
        assert!(j.is_write());
    }

    #[test]
    fn command_line() {
        let j = Job {
            rw: "randread",
            bs: 4096,
            qd: 32,
        };
        let a = j.args(Path::new("/dev/ublkb3"), 1 << 28, 2, true);
        for want in [
            "--filename=/dev/ublkb3",
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4096",
            "--iodepth=32",
            "--size=268435456",
            "--runtime=2",
            "--time_based=1",
            "--output-format=json",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} not in {a:?}");
        }
        let a = j.args(Path::new("/tmp/f"), 1 << 20, 1, false);
        assert!(a.iter().any(|x| x == "--direct=0"));
    }

    #[test]
    fn page_cache_writes() {
        let j = Job {
            rw: "pcwrite",
            bs: 64 << 10,
            qd: 1,
        };
        assert_eq!(j.name(), "pcwrite-64k-sync16");
        assert!(j.is_write());
        let a = j.args(Path::new("/dev/ublkb0"), 1 << 28, 1, true);
        for want in [
            "--direct=0",
            "--rw=write",
            "--size=33554432",
            "--fdatasync=16",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} not in {a:?}");
        }
    }

    #[test]
    fn parses_a_read_job() {
        let j = Job {
            rw: "randread",
            bs: 4096,
            qd: 32,
        };
        let o = parse(SAMPLE, &j).expect("parses");
        assert_eq!(o.bytes, 8 << 20);
        assert_eq!(o.ios, 2048);
        assert_eq!(o.runtime_ms, 1000);
        assert_eq!((o.clat_p50_ns, o.clat_p99_ns), (14848, 60160));
    }

    #[test]
    fn a_write_job_reads_the_write_section() {
        let j = Job {
            rw: "write",
            bs: 512 << 10,
            qd: 16,
        };
        // The sample's read section has percentiles and its write section has none: the
        // error shows the write section was read.
        let e = parse(SAMPLE, &j).unwrap_err();
        assert!(
            format!("{e:#}").contains("no clat_ns.percentile.50.000000"),
            "{e:#}"
        );
    }

    #[test]
    fn errors_are_named() {
        let j = Job {
            rw: "read",
            bs: 4096,
            qd: 1,
        };
        let e = parse("fio: failed to open /dev/nope", &j).unwrap_err();
        assert!(format!("{e:#}").contains("no JSON"), "{e:#}");
        let e = parse(r#"{"jobs":[{"error":5,"read":{}}]}"#, &j).unwrap_err();
        assert!(format!("{e:#}").contains("error 5"), "{e:#}");
        let e = parse(r#"{"jobs":[]}"#, &j).unwrap_err();
        assert!(format!("{e:#}").contains("no jobs"), "{e:#}");
        let e = parse(
            r#"{"jobs":[{"error":0,"read":{"io_bytes":0,"total_ios":0,"runtime":0,
               "clat_ns":{"percentile":{"50.000000":0,"99.000000":0}}}}]}"#,
            &j,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("moved nothing"), "{e:#}");
    }
}
