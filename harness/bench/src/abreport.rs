//! The report of the interleaved bench, on the host: per-round ratios of zero copy to the
//! other configurations, their medians with intervals ([`crate::interval`]), per boot and
//! per client, the spread between boots, where the two clients disagree beyond their
//! intervals, and the latency and cost tables at QD1 and QD32 (p50/p99 completion
//! latency, CPU time per I/O, the server's share of it, io-wq punts per I/O).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};

use crate::interval::{median_ci, spread, Estimate};

/// One run, a row of ab.tsv.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub round: u32,
    pub backing: String,
    pub config: String,
    /// fio or engine ([`crate::client::Client`]).
    pub client: String,
    pub workload: String,
    pub bytes: u64,
    pub ios: u64,
    pub runtime_ms: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub cpu_ticks: u64,
    pub hz: f64,
    pub iowq: u64,
    /// The ublk server's CPU time in ticks (0 where there is no server, or none recorded).
    pub srv_ticks: u64,
}

impl Row {
    /// Bytes per second: the throughput, and for a fixed block size proportional to IOPS.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 * 1000.0 / self.runtime_ms.max(1) as f64
    }
}

/// The rows of an ab.tsv (header first, as `ab::HEADER`, or `ab::HEADER_FIO_ONLY` from
/// before the second client: those rows are fio's, with no server time).
pub fn parse_tsv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| anyhow!("empty ab.tsv"))?;
    let fio_only = if header == crate::ab::HEADER {
        false
    } else if header == crate::ab::HEADER_FIO_ONLY {
        true
    } else {
        bail!("ab.tsv has an unknown header: {header:?}");
    };
    let want = header.split('\t').count();
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let mut f: Vec<&str> = l.split('\t').collect();
        if f.len() != want {
            bail!("ab.tsv line {}: {} fields, {want} expected", i + 2, f.len());
        }
        if fio_only {
            f.insert(4, "fio");
            f.push("0");
        }
        let n = |k: usize| -> Result<u64> {
            f[k].parse()
                .with_context(|| format!("ab.tsv line {}, field {}: {:?}", i + 2, k + 1, f[k]))
        };
        rows.push(Row {
            round: n(0)? as u32,
            backing: f[2].to_string(),
            config: f[3].to_string(),
            client: f[4].to_string(),
            workload: f[5].to_string(),
            bytes: n(6)?,
            ios: n(7)?,
            runtime_ms: n(8)?,
            p50_ns: n(9)?,
            p99_ns: n(10)?,
            cpu_ticks: n(11)?,
            hz: f[12]
                .parse()
                .with_context(|| format!("ab.tsv line {}: hz {:?}", i + 2, f[12]))?,
            iowq: n(13)?,
            srv_ticks: n(14)?,
        });
    }
    Ok(rows)
}

/// What a ratio compares: one backing, workload and client, `num` over `den`.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub backing: &'a str,
    pub workload: &'a str,
    pub client: &'a str,
    pub num: &'a str,
    pub den: &'a str,
}

/// The per-round ratios of `p.num`'s rate to `p.den`'s, taken only from rounds that
/// measured both.
pub fn round_ratios(rows: &[Row], p: Pair) -> Vec<f64> {
    let (num, den) = (p.num, p.den);
    let mut by_round: BTreeMap<u32, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.backing == p.backing && r.workload == p.workload && r.client == p.client)
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

/// The headline ratios: (name, backing, workload, numerator, denominator). The last is
/// the ceiling of the 4K one: zero copy does the same I/O on the same file as the raw file
/// does, so it cannot run faster than the file, and file/copy bounds zc/copy.
pub const HEADLINE: [(&str, &str, &str, &str, &str); 9] = [
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
    (
        "file_vs_copy_iops_4k",
        "ext4-direct",
        "randread-4k-qd32",
        "file",
        "copy",
    ),
];

/// The median of the values of `f` over some rows.
fn median_of(rows: &[&Row], f: impl Fn(&Row) -> f64) -> Option<f64> {
    let v: Vec<f64> = rows.iter().map(|r| f(r)).collect();
    median_ci(&v).map(|e| e.median)
}

/// One boot's results: its label and rows.
pub struct Boot {
    pub label: String,
    pub rows: Vec<Row>,
}

/// The clients that appear in the boots' rows, fio first.
pub fn clients(boots: &[Boot]) -> Vec<&'static str> {
    crate::client::Client::ALL
        .iter()
        .map(|c| c.name())
        .filter(|c| boots.iter().any(|b| b.rows.iter().any(|r| r.client == *c)))
        .collect()
}

/// The headline estimates of one client: name -> one estimate per boot (None where the
/// boot did not run that backing, workload or client).
pub fn headline(boots: &[Boot], client: &str) -> Vec<(&'static str, Vec<Option<Estimate>>)> {
    HEADLINE
        .iter()
        .map(|&(name, backing, workload, num, den)| {
            let p = Pair {
                backing,
                workload,
                client,
                num,
                den,
            };
            let per = boots
                .iter()
                .map(|bt| median_ci(&round_ratios(&bt.rows, p)))
                .collect();
            (name, per)
        })
        .collect()
}

/// True when two estimates' intervals are disjoint: the clients disagree beyond what
/// either measured. Estimates without an interval never disagree.
pub fn disagree(a: &Estimate, b: &Estimate) -> bool {
    a.coverage > 0.0 && b.coverage > 0.0 && (a.hi < b.lo || b.hi < a.lo)
}

/// The boots in which fio's and the engine's estimates of each headline ratio disagree.
fn disagreements(boots: &[Boot]) -> BTreeMap<&'static str, Vec<String>> {
    let fio = headline(boots, "fio");
    let eng = headline(boots, "engine");
    let mut out = BTreeMap::new();
    for ((name, f), (_, e)) in fio.iter().zip(&eng) {
        let bad: Vec<String> = boots
            .iter()
            .zip(f.iter().zip(e))
            .filter_map(|(b, pair)| match pair {
                (Some(x), Some(y)) if disagree(x, y) => Some(b.label.clone()),
                _ => None,
            })
            .collect();
        out.insert(*name, bad);
    }
    out
}

fn spread_cell(per: &[Option<Estimate>]) -> String {
    let meds: Vec<f64> = per.iter().flatten().map(|e| e.median).collect();
    if meds.len() < 2 {
        return "-".into();
    }
    spread(&meds).map_or("-".into(), |(lo, hi)| {
        format!("{:+.0}% / {:+.0}%", (lo - 1.0) * 100.0, (hi - 1.0) * 100.0)
    })
}

fn headline_table(s: &mut String, boots: &[Boot]) {
    let cl = clients(boots);
    let both = cl.len() == 2;
    let dis = disagreements(boots);
    let _ = write!(s, "| ratio | client |");
    for b in boots {
        let _ = write!(s, " {} |", b.label);
    }
    let _ = write!(s, " spread between boots |");
    if both {
        let _ = write!(s, " clients agree |");
    }
    let _ = write!(s, "\n|---|---|");
    for _ in boots {
        let _ = write!(s, "---:|");
    }
    let _ = write!(s, "---:|");
    if both {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for c in &cl {
        for (name, per) in headline(boots, c) {
            let _ = write!(s, "| {name} | {c} |");
            for e in &per {
                let _ = write!(s, " {} |", e.map_or("-".to_string(), |e| e.show()));
            }
            let _ = write!(s, " {} |", spread_cell(&per));
            if both {
                let cell = match dis.get(name) {
                    Some(v) if !v.is_empty() => format!("**no**: {}", v.join(", ")),
                    _ => "yes".into(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
    }
}

/// (backing, workload) of every row, sorted and unique.
fn keys(rows: &[Row]) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.backing.clone(), r.workload.clone()))
        .collect();
    k.sort();
    k.dedup();
    k
}

fn every_ratio(s: &mut String, b: &Boot) {
    let _ = writeln!(s, "\n## {}: every ratio\n", b.label);
    let _ = writeln!(
        s,
        "| backing | workload | client | zc/copy | zc/loop | zc/file |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|");
    for c in clients(std::slice::from_ref(b)) {
        for (bk, w) in keys(&b.rows) {
            let show = |den| {
                let p = Pair {
                    backing: &bk,
                    workload: &w,
                    client: c,
                    num: "zc",
                    den,
                };
                median_ci(&round_ratios(&b.rows, p)).map_or("-".to_string(), |e| e.show())
            };
            let _ = writeln!(
                s,
                "| {bk} | {w} | {c} | {} | {} | {} |",
                show("copy"),
                show("loop"),
                show("file")
            );
        }
    }
}

/// The latency and cost of the 4K workloads at one queue depth, medians over every round
/// of every boot.
fn cost_table(s: &mut String, boots: &[Boot], qd: &str) {
    let rows: Vec<&Row> = boots.iter().flat_map(|b| &b.rows).collect();
    let mut ks: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.workload.contains("-4k-") && r.workload.ends_with(qd))
        .map(|r| (r.backing.clone(), r.workload.clone()))
        .collect();
    ks.sort();
    ks.dedup();
    if ks.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Latency and cost, 4K at {} (medians over every round of every boot)\n",
        qd.to_uppercase()
    );
    let _ = writeln!(
        s,
        "| backing | workload | client | config | runs | IOPS | p50 µs | p99 µs | CPU µs per I/O | server CPU µs per I/O | CPUs busy | io-wq punts per I/O |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let cl = clients(boots);
    for (bk, w) in &ks {
        for c in &cl {
            for cfg in crate::ab::CONFIGS {
                let rs: Vec<&Row> = rows
                    .iter()
                    .copied()
                    .filter(|r| {
                        &r.backing == bk && &r.workload == w && r.client == *c && r.config == cfg
                    })
                    .collect();
                if rs.is_empty() {
                    continue;
                }
                let secs = |r: &Row| r.runtime_ms.max(1) as f64 / 1000.0;
                let per_io = |t: u64, r: &Row| t as f64 / r.hz.max(1.0) * 1e6 / r.ios.max(1) as f64;
                let iops = median_of(&rs, |r| r.ios as f64 / secs(r));
                let p50 = median_of(&rs, |r| r.p50_ns as f64 / 1000.0);
                let p99 = median_of(&rs, |r| r.p99_ns as f64 / 1000.0);
                let cpu = median_of(&rs, |r| per_io(r.cpu_ticks, r));
                let srv = if cfg == "copy" || cfg == "zc" {
                    median_of(&rs, |r| per_io(r.srv_ticks, r))
                } else {
                    None
                };
                let busy = median_of(&rs, |r| r.cpu_ticks as f64 / r.hz.max(1.0) / secs(r));
                let punts = median_of(&rs, |r| r.iowq as f64 / r.ios.max(1) as f64);
                let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
                let _ = writeln!(
                    s,
                    "| {bk} | {w} | {c} | {cfg} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    rs.len(),
                    f(iops, 0),
                    f(p50, 1),
                    f(p99, 1),
                    f(cpu, 1),
                    f(srv, 1),
                    f(busy, 2),
                    f(punts, 3)
                );
            }
        }
    }
}

/// The markdown report of one or more boots.
pub fn markdown(boots: &[Boot], meta: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ublk interleaved bench\n");
    for (k, v) in meta {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(
        s,
        "\nEach ratio is the median of per-round ratios (zero copy over the other \
         configuration, measured in the same round by the same client, in a fresh order) \
         with a distribution-free interval of at least 95% for that median. A ratio whose \
         interval is wider than ±10% is marked `not measured`. Where both clients ran, \
         `clients agree` is **no** for the boots in which fio's interval and the engine's \
         do not overlap.\n"
    );
    headline_table(&mut s, boots);
    for qd in ["qd1", "qd32"] {
        cost_table(&mut s, boots, qd);
    }
    for b in boots {
        every_ratio(&mut s, b);
    }
    s
}

/// `RATIO name median lo hi measured|not-measured` lines, one per headline ratio of each
/// boot and client (prefixed with the boot's label when there are several, and the
/// client's name when it is not fio). A `DISAGREE name boot` line follows for every boot
/// whose clients disagree on a ratio.
pub fn ratio_lines(boots: &[Boot]) -> Vec<String> {
    let mut out = Vec::new();
    for c in clients(boots) {
        for (name, per) in headline(boots, c) {
            for (b, e) in boots.iter().zip(per) {
                let mut label = if boots.len() > 1 {
                    format!("{}:", b.label)
                } else {
                    String::new()
                };
                if c != "fio" {
                    label = format!("{c}:{label}");
                }
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
    }
    for (name, bad) in disagreements(boots) {
        for b in bad {
            out.push(format!("DISAGREE {name} {b}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: u32, config: &str, client: &str, workload: &str, bytes: u64, ms: u64) -> String {
        format!(
            "{round}\t0\text4-direct\t{config}\t{client}\t{workload}\t{bytes}\t{}\t{ms}\t1000\t2000\t50\t100\t{}\t{}",
            bytes / 4096,
            if config == "zc" { 0 } else { bytes / 4096 / 2 },
            if config == "zc" || config == "copy" { 20 } else { 0 }
        )
    }

    /// Rounds of every configuration; the engine sees zero copy at `eng_zc`.
    fn tsv_clients(rounds: u32, zc: u64, copy: u64, eng_zc: Option<u64>) -> String {
        let mut s = format!("{}\n", crate::ab::HEADER);
        for r in 0..rounds {
            // Round 3 is slow for everyone: a loaded host, which pairing cancels.
            let slow = if r == 3 { 4 } else { 1 };
            for (c, b) in [("zc", zc), ("copy", copy), ("loop", zc), ("file", zc * 2)] {
                s += &row(r, c, "fio", "randread-4k-qd32", b, 1000 * slow);
                s.push('\n');
                if let Some(ez) = eng_zc {
                    let b = if c == "zc" { ez } else { b };
                    s += &row(r, c, "engine", "randread-4k-qd32", b, 1000 * slow);
                    s.push('\n');
                }
            }
        }
        s
    }

    fn tsv(rounds: u32, zc: u64, copy: u64) -> String {
        tsv_clients(rounds, zc, copy, None)
    }

    fn pair<'a>(client: &'a str, den: &'a str) -> Pair<'a> {
        Pair {
            backing: "ext4-direct",
            workload: "randread-4k-qd32",
            client,
            num: "zc",
            den,
        }
    }

    #[test]
    fn parses_and_pairs_within_rounds() {
        let rows = parse_tsv(&tsv(6, 300 << 20, 100 << 20)).expect("parses");
        assert_eq!(rows.len(), 24);
        let r = round_ratios(&rows, pair("fio", "copy"));
        assert_eq!(r.len(), 6);
        assert!(r.iter().all(|x| (x - 3.0).abs() < 1e-9), "{r:?}");
        let e = median_ci(&r).expect("estimate");
        assert!(e.measured());
        let r = round_ratios(&rows, pair("fio", "file"));
        assert!(r.iter().all(|x| (x - 0.5).abs() < 1e-9), "{r:?}");
        // No such workload or client: no ratios.
        let mut p = pair("fio", "copy");
        p.workload = "seqread-512k-qd16";
        assert!(round_ratios(&rows, p).is_empty());
        assert!(round_ratios(&rows, pair("engine", "copy")).is_empty());
    }

    #[test]
    fn clients_are_paired_apart() {
        let rows =
            parse_tsv(&tsv_clients(6, 300 << 20, 100 << 20, Some(200 << 20))).expect("parses");
        assert_eq!(rows.len(), 48);
        let f = round_ratios(&rows, pair("fio", "copy"));
        let e = round_ratios(&rows, pair("engine", "copy"));
        assert!(f.iter().all(|x| (x - 3.0).abs() < 1e-9), "{f:?}");
        assert!(e.iter().all(|x| (x - 2.0).abs() < 1e-9), "{e:?}");
    }

    #[test]
    fn the_fio_only_header_still_reads() {
        let mut t = format!("{}\n", crate::ab::HEADER_FIO_ONLY);
        t += "0\t1\text4-direct\tzc\trandread-4k-qd32\t4096\t1\t1000\t10\t20\t5\t100\t0\n";
        let rows = parse_tsv(&t).expect("parses");
        assert_eq!(rows[0].client, "fio");
        assert_eq!(rows[0].workload, "randread-4k-qd32");
        assert_eq!((rows[0].iowq, rows[0].srv_ticks), (0, 0));
    }

    #[test]
    fn a_round_missing_one_side_is_left_out() {
        let mut t = tsv(6, 2 << 20, 1 << 20);
        t += &row(6, "zc", "fio", "randread-4k-qd32", 2 << 20, 1000);
        t.push('\n');
        let rows = parse_tsv(&t).expect("parses");
        assert_eq!(round_ratios(&rows, pair("fio", "copy")).len(), 6);
    }

    #[test]
    fn bad_tsv() {
        assert!(parse_tsv("").is_err());
        assert!(format!("{:#}", parse_tsv("a\tb\n").unwrap_err()).contains("unknown header"));
        let t = format!("{}\n1\t2\n", crate::ab::HEADER);
        assert!(format!("{:#}", parse_tsv(&t).unwrap_err()).contains("2 fields, 15 expected"));
        let t = format!(
            "{}\n{}\n",
            crate::ab::HEADER,
            row(0, "zc", "fio", "w", 1, 1)
        )
        .replace("1000\t2000", "x\t2000");
        assert!(format!("{:#}", parse_tsv(&t).unwrap_err()).contains("field 10"));
    }

    #[test]
    fn disagreement_needs_disjoint_intervals() {
        let e = |lo, m, hi| Estimate {
            median: m,
            lo,
            hi,
            coverage: 0.96,
            n: 6,
        };
        assert!(disagree(&e(1.0, 1.1, 1.2), &e(1.3, 1.4, 1.5)));
        assert!(disagree(&e(1.3, 1.4, 1.5), &e(1.0, 1.1, 1.2)));
        assert!(!disagree(&e(1.0, 1.1, 1.3), &e(1.3, 1.4, 1.5)));
        let mut none = e(1.0, 1.0, 1.0);
        none.coverage = 0.0;
        assert!(!disagree(&none, &e(2.0, 2.1, 2.2)));
    }

    #[test]
    fn report_marks_what_is_not_measured_and_where_clients_disagree() {
        let boots = vec![
            Boot {
                label: "v3".into(),
                rows: parse_tsv(&tsv_clients(6, 300 << 20, 100 << 20, Some(200 << 20)))
                    .expect("parses"),
            },
            Boot {
                label: "v3 again".into(),
                rows: parse_tsv(&tsv_clients(3, 300 << 20, 100 << 20, Some(300 << 20)))
                    .expect("parses"),
            },
        ];
        let md = markdown(&boots, &[("kernel".into(), "6.1.192-ublkzc".into())]);
        assert!(md.contains("| zc_vs_copy_iops_4k | fio | 3.00 [3.00, 3.00] | not measured (3.00 [no interval], n=3) | +0% / +0% | **no**: v3 |"), "{md}");
        assert!(md.contains("| zc_vs_copy_iops_4k | engine | 2.00 [2.00, 2.00] | not measured (3.00 [no interval], n=3) | -20% / +20% | **no**: v3 |"), "{md}");
        assert!(
            md.contains("| zc_vs_copy_read_512k | fio | - | - | - | yes |"),
            "{md}"
        );
        // The cost table: 4096 B I/Os, 50 ticks at 100 Hz per run of 1 s; the server's 20.
        assert!(
            md.contains(
                "| ext4-direct | randread-4k-qd32 | fio | copy | 9 | 25600 | 1.0 | 2.0 | 19.5 | 7.8 | 0.50 | 0.500 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| ext4-direct | randread-4k-qd32 | fio | loop | 9 | 76800 | 1.0 | 2.0 | 6.5 | - | 0.50 | 0.500 |"
            ),
            "{md}"
        );
        assert!(md.contains("## Latency and cost, 4K at QD32"), "{md}");
        assert!(!md.contains("## Latency and cost, 4K at QD1 "), "{md}");
        let lines = ratio_lines(&boots);
        for want in [
            "RATIO v3:zc_vs_copy_iops_4k 3.000 3.000 3.000 measured",
            "RATIO v3 again:zc_vs_copy_iops_4k 3.000 3.000 3.000 not-measured",
            "RATIO engine:v3:zc_vs_copy_iops_4k 2.000 2.000 2.000 measured",
            "RATIO v3:zc_vs_loop_512k n/a",
            "DISAGREE zc_vs_copy_iops_4k v3",
        ] {
            assert!(lines.contains(&want.to_string()), "{want}: {lines:?}");
        }
        assert!(!lines
            .iter()
            .any(|l| l.contains("DISAGREE zc_vs_copy_iops_4k v3 again")));
    }
}
