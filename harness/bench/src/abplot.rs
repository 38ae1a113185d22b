//! The interleaved bench's plot (plotters, SVG): per workload, zero copy's ratio to copy
//! mode, the loop driver and the raw backing file, each boot's median with its interval,
//! one panel per client. A ratio that is not measured (interval wider than ±10%) is drawn
//! hollow, so the plot never shows more than the tables claim.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::abreport::{clients, round_ratios, Boot, Pair};
use crate::interval::{median_ci, Estimate};

/// The denominators of the plotted ratios and their colours.
const DENS: [(&str, RGBColor); 3] = [
    ("copy", RGBColor(31, 119, 180)),
    ("loop", RGBColor(255, 127, 14)),
    ("file", RGBColor(44, 160, 44)),
];

/// One plotted point: x slot, denominator index, estimate.
struct Point {
    x: f64,
    den: usize,
    e: Estimate,
}

/// The (backing, workload) categories of the x axis, in the order of the rows.
fn categories(boots: &[Boot]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = boots
        .iter()
        .flat_map(|b| b.rows.iter())
        .filter(|r| r.workload != "pcwrite-64k-sync16" || r.backing == "ext4-direct")
        .map(|r| (r.backing.clone(), r.workload.clone()))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn points(boots: &[Boot], cats: &[(String, String)], client: &str) -> Vec<Point> {
    let mut out = Vec::new();
    let slots = (DENS.len() * boots.len()) as f64;
    for (ci, (backing, workload)) in cats.iter().enumerate() {
        for (di, (den, _)) in DENS.iter().enumerate() {
            for (bi, b) in boots.iter().enumerate() {
                let p = Pair {
                    backing,
                    workload,
                    client,
                    num: "zc",
                    den,
                };
                if let Some(e) = median_ci(&round_ratios(&b.rows, p)) {
                    // Spread the boots and the denominators across the category's width.
                    let k = (di * boots.len() + bi) as f64;
                    out.push(Point {
                        x: ci as f64 + 0.15 + 0.7 * (k + 0.5) / slots,
                        den: di,
                        e,
                    });
                }
            }
        }
    }
    out
}

fn short(backing: &str, workload: &str) -> String {
    let b = backing.split('-').next().unwrap_or(backing);
    format!("{b} {workload}")
}

/// Draws the plot of `boots` to `path` (SVG).
pub fn draw(boots: &[Boot], path: &Path) -> Result<()> {
    let cats = categories(boots);
    if cats.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    let cl = clients(boots);
    let width = (160 * cats.len() as u32).max(640);
    let height = 360 * cl.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let panels = root.split_evenly((cl.len().max(1), 1));
    for (panel, client) in panels.iter().zip(&cl) {
        let pts = points(boots, &cats, client);
        let top = pts.iter().map(|p| p.e.hi).fold(1.0f64, f64::max) * 1.1;
        let labels: Vec<String> = cats.iter().map(|(b, w)| short(b, w)).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "zero copy / copy, loop, file, by {client}; per colour, boots left to right: {}; hollow: not measured",
                    boots
                        .iter()
                        .map(|b| b.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..cats.len() as f64, 0f64..top)
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(cats.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("ratio (median, 95% interval)")
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 1.0), (cats.len() as f64, 1.0)],
                BLACK.mix(0.4),
            ))
            .map_err(|e| anyhow!("{e:?}"))?;
        for (di, (den, colour)) in DENS.iter().enumerate() {
            let mine: Vec<&Point> = pts.iter().filter(|p| p.den == di).collect();
            chart
                .draw_series(mine.iter().map(|p| {
                    ErrorBar::new_vertical(p.x, p.e.lo, p.e.median, p.e.hi, colour.filled(), 6)
                }))
                .map_err(|e| anyhow!("{e:?}"))?
                .label(format!("zc/{den}"))
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
            chart
                .draw_series(mine.iter().map(|p| {
                    let style = if p.e.measured() {
                        colour.filled()
                    } else {
                        WHITE.filled()
                    };
                    Circle::new((p.x, p.e.median), 4, style)
                }))
                .map_err(|e| anyhow!("{e:?}"))?;
            chart
                .draw_series(
                    mine.iter()
                        .map(|p| Circle::new((p.x, p.e.median), 4, colour.stroke_width(1))),
                )
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abreport::parse_tsv;

    #[test]
    fn draws_both_clients() {
        let mut t = format!("{}\n", crate::ab::HEADER);
        for r in 0..6u32 {
            for c in ["fio", "engine"] {
                for (cfg, bytes) in [
                    ("zc", 3u64 << 20),
                    ("copy", 1 << 20),
                    ("loop", 2 << 20),
                    ("file", 3 << 20),
                ] {
                    let bytes = bytes + u64::from(r) * 4096;
                    t += &format!(
                        "{r}\t0\text4-direct\t{cfg}\t{c}\trandread-4k-qd32\t{bytes}\t{}\t1000\t1\t2\t3\t100\t0\t0\n",
                        bytes / 4096
                    );
                }
            }
        }
        let boots = vec![Boot {
            label: "b1".into(),
            rows: parse_tsv(&t).expect("parses"),
        }];
        let p = std::env::temp_dir().join(format!("ublk-bench-plot-{}.svg", std::process::id()));
        draw(&boots, &p).expect("draws");
        let svg = std::fs::read_to_string(&p).expect("written");
        std::fs::remove_file(&p).expect("cleanup");
        assert!(svg.contains("<svg"), "not an SVG");
        assert!(
            svg.contains("zero copy / copy, loop, file, by fio;"),
            "no fio panel"
        );
        assert!(svg.contains("by engine;"), "no engine panel");
        assert!(
            svg.contains("zc/copy") && svg.contains("zc/file"),
            "no legend"
        );
        assert!(svg.contains("ext4 randread-4k-qd32"), "no category label");
        let empty: Vec<Boot> = Vec::new();
        assert!(draw(&empty, &p).is_err());
    }
}
