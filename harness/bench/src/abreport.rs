//! The report of the interleaved bench, on the host: per-round ratios of zero copy to the
//! other configurations, their medians with intervals ([`crate::interval`]), per boot and
//! the spread between boots, and the latency and cost table (p50/p99 completion latency,
//! CPU time per I/O, io-wq punts per I/O).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};

use crate::interval::{median_ci, spread, Estimate};

/// One fio run, a row of ab.tsv.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub round: u32,
    pub backing: String,
    pub config: String,
    pub workload: String,
    pub bytes: u64,
    pub ios: u64,
    pub runtime_ms: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub cpu_ticks: u64,
    pub hz: f64,
    pub iowq: u64,
}

impl Row {
    /// Bytes per second: the throughput, and for a fixed block size proportional to IOPS.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 * 1000.0 / self.runtime_ms.max(1) as f64
    }
}

/// The rows of an ab.tsv (header first, as `ab::HEADER`).
pub fn parse_tsv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| anyhow!("empty ab.tsv"))?;
    if header != crate::ab::HEADER {
        bail!("ab.tsv has an unknown header: {header:?}");
    }
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 13 {
            bail!("ab.tsv line {}: {} fields, 13 expected", i + 2, f.len());
        }
        let n = |k: usize| -> Result<u64> {
            f[k].parse()
                .with_context(|| format!("ab.tsv line {}, field {}: {:?}", i + 2, k + 1, f[k]))
        };
        rows.push(Row {
            round: n(0)? as u32,
            backing: f[2].to_string(),
            config: f[3].to_string(),
            workload: f[4].to_string(),
            bytes: n(5)?,
            ios: n(6)?,
            runtime_ms: n(7)?,
            p50_ns: n(8)?,
            p99_ns: n(9)?,
            cpu_ticks: n(10)?,
            hz: f[11]
                .parse()
                .with_context(|| format!("ab.tsv line {}: hz {:?}", i + 2, f[11]))?,
            iowq: n(12)?,
        });
    }
    Ok(rows)
}

/// The per-round ratios of `num`'s rate to `den`'s, for one backing and workload, taken
/// only from rounds that measured both.
pub fn round_ratios(rows: &[Row], backing: &str, workload: &str, num: &str, den: &str) -> Vec<f64> {
    let mut by_round: BTreeMap<u32, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.backing == backing && r.workload == workload)
    {
        let e = by_round.entry(r.round).or_default();
        if r.config == num {
            e.0 = Some(r.rate());
        }
        if r.config == den {
            e.1 = Some(r.rate());
        }
    }
    by_round
        .values()
        .filter_map(|&(a, b)| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

/// The headline ratios: (name, backing, workload, numerator, denominator).
pub const HEADLINE: [(&str, &str, &str, &str, &str); 8] = [
    (
        "zc_vs_copy_read_512k",
        "ext4-direct",
        "seqread-512k-qd16",
        "zc",
        "copy",
    ),
    (
        "zc_vs_copy_write_512k",
        "ext4-direct",
        "seqwrite-512k-qd16",
        "zc",
        "copy",
    ),
    (
        "zc_vs_copy_iops_4k",
        "ext4-direct",
        "randread-4k-qd32",
        "zc",
        "copy",
    ),
    (
        "zc_vs_loop_512k",
        "ext4-direct",
        "seqread-512k-qd16",
        "zc",
        "loop",
    ),
    (
        "zc_vs_copy_read_512k_tmpfs",
        "tmpfs-buffered",
        "seqread-512k-qd16",
        "zc",
        "copy",
    ),
    (
        "zc_vs_copy_write_512k_tmpfs",
        "tmpfs-buffered",
        "seqwrite-512k-qd16",
        "zc",
        "copy",
    ),
    (
        "zc_vs_copy_iops_4k_tmpfs",
        "tmpfs-buffered",
        "randread-4k-qd32",
        "zc",
        "copy",
    ),
    (
        "zc_vs_loop_512k_tmpfs",
        "tmpfs-buffered",
        "seqread-512k-qd16",
        "zc",
        "loop",
    ),
];

/// The median of the values of `f` over the rows of one configuration.
fn median_of(rows: &[&Row], f: impl Fn(&Row) -> f64) -> Option<f64> {
    let v: Vec<f64> = rows.iter().map(|r| f(r)).collect();
    median_ci(&v).map(|e| e.median)
}

/// One boot's results: its label and rows.
pub struct Boot {
    pub label: String,
    pub rows: Vec<Row>,
}

/// The headline estimates of each boot: name -> one estimate per boot (None where the
/// boot did not run that backing).
pub fn headline(boots: &[Boot]) -> Vec<(&'static str, Vec<Option<Estimate>>)> {
    HEADLINE
        .iter()
        .map(|&(name, b, w, num, den)| {
            let per = boots
                .iter()
                .map(|bt| median_ci(&round_ratios(&bt.rows, b, w, num, den)))
                .collect();
            (name, per)
        })
        .collect()
}

/// The markdown report of one or more boots.
pub fn markdown(boots: &[Boot], meta: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ublk interleaved bench (fio)\n");
    for (k, v) in meta {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(
        s,
        "\nEach ratio is the median of per-round ratios (zero copy over the other \
         configuration, measured in the same round, in a fresh order) with a \
         distribution-free interval of at least 95% for that median. A ratio whose interval \
         is wider than ±10% is marked `not measured`.\n"
    );
    let _ = write!(s, "| ratio |");
    for b in boots {
        let _ = write!(s, " {} |", b.label);
    }
    let _ = writeln!(s, " spread between boots |");
    let _ = write!(s, "|---|");
    for _ in boots {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|");
    for (name, per) in headline(boots) {
        let _ = write!(s, "| {name} |");
        for e in &per {
            let _ = write!(s, " {} |", e.map_or("-".to_string(), |e| e.show()));
        }
        let meds: Vec<f64> = per.iter().flatten().map(|e| e.median).collect();
        let sp = if meds.len() > 1 {
            spread(&meds).map_or("-".into(), |(lo, hi)| {
                format!("{:+.0}% / {:+.0}%", (lo - 1.0) * 100.0, (hi - 1.0) * 100.0)
            })
        } else {
            "-".into()
        };
        let _ = writeln!(s, " {sp} |");
    }
    for b in boots {
        let _ = writeln!(s, "\n## {}: every ratio\n", b.label);
        let _ = writeln!(s, "| backing | workload | zc/copy | zc/loop | zc/file |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|");
        let mut keys: Vec<(String, String)> = b
            .rows
            .iter()
            .map(|r| (r.backing.clone(), r.workload.clone()))
            .collect();
        keys.dedup();
        keys.sort();
        keys.dedup();
        for (bk, w) in &keys {
            let show = |den| {
                median_ci(&round_ratios(&b.rows, bk, w, "zc", den))
                    .map_or("-".to_string(), |e| e.show())
            };
            let _ = writeln!(
                s,
                "| {bk} | {w} | {} | {} | {} |",
                show("copy"),
                show("loop"),
                show("file")
            );
        }
        let _ = writeln!(
            s,
            "\n## {}: latency and cost (medians over rounds)\n",
            b.label
        );
        let _ = writeln!(
            s,
            "| backing | workload | config | IOPS | p50 µs | p99 µs | CPU µs per I/O | io-wq punts per I/O |"
        );
        let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|");
        for (bk, w) in keys.iter().filter(|(_, w)| w.contains("-4k-")) {
            for c in crate::ab::CONFIGS {
                let rs: Vec<&Row> = b
                    .rows
                    .iter()
                    .filter(|r| &r.backing == bk && &r.workload == w && r.config == c)
                    .collect();
                if rs.is_empty() {
                    continue;
                }
                let iops = median_of(&rs, |r| r.ios as f64 * 1000.0 / r.runtime_ms.max(1) as f64);
                let p50 = median_of(&rs, |r| r.p50_ns as f64 / 1000.0);
                let p99 = median_of(&rs, |r| r.p99_ns as f64 / 1000.0);
                let cpu = median_of(&rs, |r| {
                    r.cpu_ticks as f64 / r.hz.max(1.0) * 1e6 / r.ios.max(1) as f64
                });
                let punts = median_of(&rs, |r| r.iowq as f64 / r.ios.max(1) as f64);
                let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
                let _ = writeln!(
                    s,
                    "| {bk} | {w} | {c} | {} | {} | {} | {} | {} |",
                    f(iops, 0),
                    f(p50, 1),
                    f(p99, 1),
                    f(cpu, 1),
                    f(punts, 3)
                );
            }
        }
    }
    s
}

/// `RATIO name median lo hi measured|not-measured` lines, one per headline ratio of each
/// boot (prefixed with the boot's label when there are several).
pub fn ratio_lines(boots: &[Boot]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, per) in headline(boots) {
        for (b, e) in boots.iter().zip(per) {
            let label = if boots.len() > 1 {
                format!("{}:", b.label)
            } else {
                String::new()
            };
            out.push(match e {
                Some(e) => format!(
                    "RATIO {label}{name} {:.3} {:.3} {:.3} {}",
                    e.median,
                    e.lo,
                    e.hi,
                    if e.measured() {
                        "measured"
                    } else {
                        "not-measured"
                    }
                ),
                None => format!("RATIO {label}{name} n/a"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: u32, config: &str, workload: &str, bytes: u64, ms: u64) -> String {
        format!(
            "{round}\t0\text4-direct\t{config}\t{workload}\t{bytes}\t{}\t{ms}\t1000\t2000\t50\t100\t{}",
            bytes / 4096,
            if config == "zc" { 0 } else { bytes / 4096 / 2 }
        )
    }

    fn tsv(rounds: u32, zc: u64, copy: u64) -> String {
        let mut s = format!("{}\n", crate::ab::HEADER);
        for r in 0..rounds {
            // Round 3 is slow for everyone: a loaded host, which pairing cancels.
            let slow = if r == 3 { 4 } else { 1 };
            for (c, b) in [("zc", zc), ("copy", copy), ("loop", zc), ("file", zc * 2)] {
                s += &row(r, c, "randread-4k-qd32", b, 1000 * slow);
                s.push('\n');
            }
        }
        s
    }

    #[test]
    fn parses_and_pairs_within_rounds() {
        let rows = parse_tsv(&tsv(6, 300 << 20, 100 << 20)).expect("parses");
        assert_eq!(rows.len(), 24);
        let r = round_ratios(&rows, "ext4-direct", "randread-4k-qd32", "zc", "copy");
        assert_eq!(r.len(), 6);
        assert!(r.iter().all(|x| (x - 3.0).abs() < 1e-9), "{r:?}");
        let e = median_ci(&r).expect("estimate");
        assert!(e.measured());
        let r = round_ratios(&rows, "ext4-direct", "randread-4k-qd32", "zc", "file");
        assert!(r.iter().all(|x| (x - 0.5).abs() < 1e-9), "{r:?}");
        // No such workload: no ratios.
        assert!(round_ratios(&rows, "ext4-direct", "seqread-512k-qd16", "zc", "copy").is_empty());
    }

    #[test]
    fn a_round_missing_one_side_is_left_out() {
        let mut t = tsv(6, 2 << 20, 1 << 20);
        t += &row(6, "zc", "randread-4k-qd32", 2 << 20, 1000);
        t.push('\n');
        let rows = parse_tsv(&t).expect("parses");
        assert_eq!(
            round_ratios(&rows, "ext4-direct", "randread-4k-qd32", "zc", "copy").len(),
            6
        );
    }

    #[test]
    fn bad_tsv() {
        assert!(parse_tsv("").is_err());
        assert!(format!("{:#}", parse_tsv("a\tb\n").unwrap_err()).contains("unknown header"));
        let t = format!("{}\n1\t2\n", crate::ab::HEADER);
        assert!(format!("{:#}", parse_tsv(&t).unwrap_err()).contains("2 fields, 13 expected"));
        let t = format!("{}\n{}\n", crate::ab::HEADER, row(0, "zc", "w", 1, 1))
            .replace("1000\t2000", "x\t2000");
        assert!(format!("{:#}", parse_tsv(&t).unwrap_err()).contains("field 9"));
    }

    #[test]
    fn report_marks_what_is_not_measured() {
        let boots = vec![
            Boot {
                label: "v3".into(),
                rows: parse_tsv(&tsv(6, 300 << 20, 100 << 20)).expect("parses"),
            },
            Boot {
                label: "v3 again".into(),
                rows: parse_tsv(&tsv(3, 300 << 20, 100 << 20)).expect("parses"),
            },
        ];
        let md = markdown(&boots, &[("kernel".into(), "6.1.192-ublkzc".into())]);
        assert!(md.contains("| zc_vs_copy_iops_4k | 3.00 [3.00, 3.00] | not measured (3.00 [no interval], n=3) | +0% / +0% |"), "{md}");
        assert!(md.contains("| zc_vs_copy_read_512k | - | - | - |"), "{md}");
        // The cost table: 4096 B I/Os, 50 ticks at 100 Hz per run of 1 s.
        assert!(
            md.contains(
                "| ext4-direct | randread-4k-qd32 | copy | 25600 | 1.0 | 2.0 | 19.5 | 0.500 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| ext4-direct | randread-4k-qd32 | zc | 76800 | 1.0 | 2.0 | 6.5 | 0.000 |"
            ),
            "{md}"
        );
        let lines = ratio_lines(&boots);
        assert!(
            lines.contains(&"RATIO v3:zc_vs_copy_iops_4k 3.000 3.000 3.000 measured".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"RATIO v3 again:zc_vs_copy_iops_4k 3.000 3.000 3.000 not-measured".to_string()
            ),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"RATIO v3:zc_vs_loop_512k n/a".to_string()),
            "{lines:?}"
        );
    }
}
