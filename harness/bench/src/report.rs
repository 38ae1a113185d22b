//! Host side: results.tsv -> bench.md (tables), bench.svg (bar chart, plotters) and
//! the headline ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Clone)]
pub struct Row {
    pub backing: String,
    pub target: String,
    pub workload: String,
    pub mib_s: f64,
    pub iops: f64,
    pub cpu_s_per_gib: f64,
    pub iowq_per_io: Option<f64>,
    /// io-wq worker threads alive in the bench process after the measurement.
    pub iowq_workers: Option<u64>,
    /// Relative half-width of criterion's 95% confidence interval of the mean.
    pub ci_rel: f64,
}

pub fn parse_tsv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| anyhow!("empty results.tsv"))?
        .split('\t')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow!("results.tsv has no column {name}"))
    };
    let (cb, ct, cw) = (col("backing")?, col("target")?, col("workload")?);
    let (cm, ci, cc, ck) = (
        col("mib_s")?,
        col("iops")?,
        col("cpu_s_per_gib")?,
        col("iowq_per_io")?,
    );
    let (cmean, clo, chi) = (col("mean_ns")?, col("lo_ns")?, col("hi_ns")?);
    let mut rows = Vec::new();
    for (n, l) in lines.enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        let ctx = || format!("results.tsv line {}", n + 2);
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| anyhow!("missing field {i}"))
                .with_context(ctx)
        };
        let num = |i: usize| -> Result<f64> { get(i)?.parse::<f64>().with_context(ctx) };
        let mean = num(cmean)?;
        rows.push(Row {
            backing: get(cb)?.into(),
            target: get(ct)?.into(),
            workload: get(cw)?.into(),
            mib_s: num(cm)?,
            iops: num(ci)?,
            cpu_s_per_gib: num(cc)?,
            iowq_per_io: get(ck)?.parse::<f64>().ok(),
            iowq_workers: header
                .iter()
                .position(|h| *h == "iowq_workers")
                .and_then(|i| f.get(i))
                .and_then(|v| v.parse().ok()),
            ci_rel: if mean > 0.0 {
                (num(chi)? - num(clo)?) / 2.0 / mean
            } else {
                0.0
            },
        });
    }
    Ok(rows)
}

fn find<'a>(rows: &'a [Row], backing: &str, target: &str, workload: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.backing == backing && r.target == target && r.workload == workload)
}

/// (name, value) of the headline ratios that the data allows: the four
/// named ones on the ext4 O_DIRECT backing, then the same four on the
/// tmpfs buffered backing with a `_tmpfs` suffix.
pub fn ratios(rows: &[Row]) -> Vec<(String, Option<f64>)> {
    let mut out = Vec::new();
    for (b, suffix) in [("ext4-direct", ""), ("tmpfs-buffered", "_tmpfs")] {
        let tput = |t: &str, w: &str| find(rows, b, t, w).map(|r| r.mib_s);
        let iops = |t: &str, w: &str| find(rows, b, t, w).map(|r| r.iops);
        let div = |a: Option<f64>, c: Option<f64>| match (a, c) {
            (Some(a), Some(c)) if c > 0.0 => Some(a / c),
            _ => None,
        };
        let (zc, copy) = ("ublk-zc-q1", "ublk-copy-q1");
        let (r512, w512, r4k) = (
            "seqread-512k-qd32",
            "seqwrite-512k-qd32",
            "randread-4k-qd32",
        );
        for (name, v) in [
            (
                "zc_vs_copy_read_512k",
                div(tput(zc, r512), tput(copy, r512)),
            ),
            (
                "zc_vs_copy_write_512k",
                div(tput(zc, w512), tput(copy, w512)),
            ),
            ("zc_vs_loop_512k", div(tput(zc, r512), tput("loop", r512))),
            ("zc_vs_copy_iops_4k", div(iops(zc, r4k), iops(copy, r4k))),
        ] {
            out.push((format!("{name}{suffix}"), v));
        }
    }
    out
}

pub const RATIO_DEFS: &str = "One ublk queue, QD32, on the ext4 O_DIRECT backing (`_tmpfs`: the \
tmpfs buffered backing): read = seqread 512K, write = seqwrite 512K, zc_vs_loop = seqread 512K, \
iops_4k = randread 4K (IOPS).";

const TARGETS: [&str; 6] = [
    "file",
    "loop",
    "ublk-copy-q1",
    "ublk-zc-q1",
    "ublk-copy-q2",
    "ublk-zc-q2",
];

fn ordered<T: PartialEq>(rows: &[Row], key: impl Fn(&Row) -> T) -> Vec<T> {
    let mut v: Vec<T> = Vec::new();
    for r in rows {
        let k = key(r);
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

fn pivot(
    out: &mut String,
    rows: &[Row],
    backing: &str,
    title: &str,
    cell: impl Fn(&Row) -> String,
) {
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| rows.iter().any(|r| r.backing == backing && r.target == *t))
        .collect();
    let _ = writeln!(out, "\n#### {backing}: {title}\n");
    let _ = writeln!(out, "| workload | {} |", targets.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(targets.len()));
    for w in ordered(rows, |r| r.workload.clone()) {
        let cells: Vec<String> = targets
            .iter()
            .map(|t| {
                find(rows, backing, t, &w)
                    .map(&cell)
                    .unwrap_or_else(|| "-".into())
            })
            .collect();
        let _ = writeln!(out, "| {w} | {} |", cells.join(" | "));
    }
}

pub struct Meta {
    pub release: String,
    pub accel: String,
    pub text: BTreeMap<String, String>,
}

pub fn markdown(rows: &[Row], meta: &Meta) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# ublk splice zero copy: benchmarks\n");
    let _ = writeln!(o, "- kernel: `{}`", meta.release);
    let _ = writeln!(
        o,
        "- accelerator: {} (absolute numbers under TCG are emulation-bound; compare ratios)",
        meta.accel
    );
    for k in ["cpus", "backing_mib", "criterion", "iowq_probe", "smoke"] {
        if let Some(v) = meta.text.get(k) {
            let _ = writeln!(o, "- {k}: {v}");
        }
    }
    let _ = writeln!(
        o,
        "- CPU s/GiB: guest-wide busy time from /proc/stat (user+nice+system+irq+softirq over all CPUs), \
         summed over the timed I/O loops, divided by the bytes moved: server threads + kernel + the bench's own submitter"
    );
    let _ = writeln!(o, "- io-wq/IO: kprobe hits on io_wq_submit_work per I/O (guest-wide: the bench ring and the ublk server rings)");
    let _ = writeln!(o, "- ublk-*-q2: 2 queues driven by 2 submitter threads pinned to CPU 0 and 1, QD16 each (QD32 only)\n");
    let _ = writeln!(o, "## Headline ratios\n\n{RATIO_DEFS}\n");
    let _ = writeln!(o, "| ratio | value |\n|---|---:|");
    for (n, v) in ratios(rows) {
        let _ = writeln!(
            o,
            "| {n} | {} |",
            v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into())
        );
    }
    let _ = writeln!(o, "\n## Results");
    for b in ordered(rows, |r| r.backing.clone()) {
        pivot(
            &mut o,
            rows,
            &b,
            "throughput MiB/s (±95% CI of the mean)",
            |r| format!("{:.1} ±{:.0}%", r.mib_s, r.ci_rel * 100.0),
        );
        pivot(&mut o, rows, &b, "IOPS", |r| format!("{:.0}", r.iops));
        pivot(&mut o, rows, &b, "CPU s per GiB (guest-wide)", |r| {
            format!("{:.2}", r.cpu_s_per_gib)
        });
        pivot(
            &mut o,
            rows,
            &b,
            "io-wq work items per I/O (io-wq workers alive)",
            |r| {
                let w = r
                    .iowq_workers
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                r.iowq_per_io
                    .map(|v| format!("{v:.2}{w}"))
                    .unwrap_or_else(|| "-".into())
            },
        );
    }
    o
}

/// Grouped bar chart (plotters, SVG), one panel per backing: QD32 workloads, MiB/s of the
/// one-queue targets.
pub fn plot(rows: &[Row], meta: &Meta, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let targets = ["file", "loop", "ublk-copy-q1", "ublk-zc-q1"];
    let colours = [
        RGBColor(136, 136, 136),
        RGBColor(78, 121, 167),
        RGBColor(242, 142, 43),
        RGBColor(89, 161, 79),
    ];
    let backings = ordered(rows, |r| r.backing.clone());
    let mut workloads: Vec<String> = ordered(rows, |r| r.workload.clone());
    if workloads.iter().any(|w| w.ends_with("-qd32")) {
        workloads.retain(|w| w.ends_with("-qd32"));
    }
    if backings.is_empty() || workloads.is_empty() {
        bail!("nothing to plot");
    }
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("{e:?}");
    let width = (90 * workloads.len() as u32).max(640);
    let root = SVGBackend::new(path, (width, 330 * backings.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    // "tcg (KVM unusable: ...)": the accelerator's name is enough in a title
    let accel = meta
        .accel
        .split_whitespace()
        .next()
        .unwrap_or("unknown accelerator");
    for (panel, b) in root.split_evenly((backings.len(), 1)).iter().zip(&backings) {
        let of = |r: &&Row| &r.backing == b && workloads.contains(&r.workload);
        let max = rows.iter().filter(of).map(|r| r.mib_s).fold(1e-9, f64::max);
        let labels: Vec<String> = workloads
            .iter()
            .map(|w| w.trim_end_matches("-qd32").to_string())
            .collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{b}: MiB/s, QD32, 1 queue ({}, {accel})", meta.release),
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..workloads.len() as f64, 0f64..max * 1.1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(workloads.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("MiB/s")
            .draw()
            .map_err(e)?;
        for (i, (t, c)) in targets.iter().zip(colours).enumerate() {
            let bars: Vec<(f64, f64)> = workloads
                .iter()
                .enumerate()
                .filter_map(|(g, w)| find(rows, b, t, w).map(|r| (g as f64, r.mib_s)))
                .collect();
            chart
                .draw_series(bars.iter().map(|&(g, v)| {
                    let x0 = g + 0.1 + 0.2 * i as f64;
                    Rectangle::new([(x0, 0.0), (x0 + 0.18, v)], c.filled())
                }))
                .map_err(e)?
                .label(*t)
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 8, y + 4)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

pub fn load_meta(results: &Path, vmrun_log: Option<&Path>) -> Result<Meta> {
    let p = results.join("meta.txt");
    let text: BTreeMap<String, String> = std::fs::read_to_string(&p)
        .with_context(|| format!("read {}", p.display()))?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut accel = text
        .get("guest_accel")
        .map(|g| format!("{g} (guest view)"))
        .unwrap_or_else(|| "unknown".into());
    if let Some(log) = vmrun_log {
        if let Ok(s) = std::fs::read_to_string(log) {
            if let Some(l) = s.lines().find(|l| l.contains("vmrun: accelerator")) {
                accel = l
                    .split_once("accelerator")
                    .map(|x| x.1.trim().to_string())
                    .unwrap_or(accel);
            }
        }
    }
    Ok(Meta {
        release: text
            .get("release")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        accel,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tsv() -> String {
        let h = "backing\ttarget\tqueues\tjobs\tworkload\tpattern\tbs\tqd\tmean_ns\tlo_ns\thi_ns\tbytes_per_iter\tios_per_iter\tmib_s\tiops\tcpu_user_s\tcpu_sys_s\tbytes_total\tios_total\tcpu_s_per_gib\tiowq_per_io";
        let mut s = format!("{h}\n");
        for (t, m, i) in [
            ("ublk-zc-q1", 200.0, 4000.0),
            ("ublk-copy-q1", 100.0, 2000.0),
            ("loop", 400.0, 1.0),
        ] {
            for w in [
                "seqread-512k-qd32",
                "seqwrite-512k-qd32",
                "randread-4k-qd32",
            ] {
                s += &format!("ext4-direct\t{t}\t1\t1\t{w}\tseqread\t524288\t32\t100\t90\t110\t1\t32\t{m}\t{i}\t0\t0\t0\t0\t1.5\t0.5\n");
            }
        }
        s
    }

    #[test]
    fn ratios_from_rows() {
        let rows = parse_tsv(&tsv()).unwrap();
        let r = ratios(&rows);
        assert_eq!(r[0], ("zc_vs_copy_read_512k".to_string(), Some(2.0)));
        assert_eq!(r[2], ("zc_vs_loop_512k".to_string(), Some(0.5)));
        assert_eq!(r[3], ("zc_vs_copy_iops_4k".to_string(), Some(2.0)));
        assert_eq!(r[4], ("zc_vs_copy_read_512k_tmpfs".to_string(), None));
        assert!((rows[0].ci_rel - 0.1).abs() < 1e-9);
    }

    #[test]
    fn outputs_render() {
        let rows = parse_tsv(&tsv()).unwrap();
        let meta = Meta {
            release: "6.1.0".into(),
            accel: "tcg".into(),
            text: BTreeMap::new(),
        };
        let md = markdown(&rows, &meta);
        assert!(md.contains("| zc_vs_copy_read_512k | 2.00 |"));
        let p = std::env::temp_dir().join(format!("ublk-bench-matrix-{}.svg", std::process::id()));
        plot(&rows, &meta, &p).expect("plots");
        let svg = std::fs::read_to_string(&p).expect("written");
        std::fs::remove_file(&p).expect("cleanup");
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "not an SVG"
        );
        assert!(
            svg.contains("ublk-zc-q1") && svg.contains("MiB/s, QD32"),
            "no legend or title"
        );
    }

    #[test]
    fn missing_column_is_an_error() {
        assert!(parse_tsv("backing\ttarget\n").is_err());
    }
}
