//! The pruning sweep (paper Figure 3): metric versus pruning rate per regularizer, from the
//! per-round evaluations of iterative unstructured pruning, as CSV and PNG.

use super::ResultRow;
use crate::metrics::mean_std;
use crate::util::write_atomic;
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Line colours of the regularizers, in config order (none, ewa, swa, sswa by default).
pub const COLORS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// Reads one metric of a row.
pub type Metric = fn(&ResultRow) -> f64;

/// The four plotted metrics: name and accessor.
pub const METRICS: [(&str, Metric); 4] = [
    ("map", |r| r.map),
    ("auc", |r| r.auc),
    ("cos", |r| r.cos),
    ("l2", |r| r.l2),
];

/// (sparsity %, mean metric) per round for one regularizer, averaged over seeds.
fn curve(rows: &[ResultRow], reg: &str, metric: fn(&ResultRow) -> f64) -> Vec<(f64, f64)> {
    curve_by_round(rows, reg, metric)
        .into_iter()
        .map(|(_, x, y)| (x, y))
        .collect()
}

/// (round, sparsity %, mean metric) per round for one regularizer, averaged over seeds.
fn curve_by_round(
    rows: &[ResultRow],
    reg: &str,
    metric: fn(&ResultRow) -> f64,
) -> Vec<(usize, f64, f64)> {
    let mut rounds: Vec<usize> = rows
        .iter()
        .filter(|r| r.compression == "unstructured" && r.regularizer == reg)
        .map(|r| r.round)
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .map(|round| {
            let members: Vec<&ResultRow> = rows
                .iter()
                .filter(|r| {
                    r.compression == "unstructured" && r.regularizer == reg && r.round == round
                })
                .collect();
            let x = mean_std(
                &members
                    .iter()
                    .map(|r| 100.0 * r.sparsity)
                    .collect::<Vec<_>>(),
            )
            .0;
            let y = mean_std(&members.iter().map(|r| metric(r)).collect::<Vec<_>>()).0;
            (round, x, y)
        })
        .collect()
}

/// Writes `sweep.csv` (regularizer, sparsity and every metric per round, means over seeds) and
/// `sweep.png` (four panels left to right: mAP, AUC, cos, l2 against sparsity).
pub fn write(rows: &[ResultRow], regularizers: &[String], out: &Path) -> Result<()> {
    let mut csv = String::from("regularizer,sparsity_pct,map,auc,cos,l2\n");
    for reg in regularizers {
        let curves: Vec<Vec<(f64, f64)>> =
            METRICS.iter().map(|(_, f)| curve(rows, reg, *f)).collect();
        for (k, &(x, map)) in curves[0].iter().enumerate() {
            let (auc, cos, l2) = (curves[1][k].1, curves[2][k].1, curves[3][k].1);
            let _ = writeln!(csv, "{reg},{x:.2},{map:.4},{auc:.4},{cos:.5},{l2:.5}");
        }
    }
    write_atomic(&out.join("sweep.csv"), csv.as_bytes())?;
    let png = out.join("sweep.png");
    let tmp = out.join(".sweep.png.tmp.png");
    let drawn = draw(rows, regularizers, &tmp)
        .with_context(|| format!("cannot write the sweep plot {}", png.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, &png)
                .map_err(|e| anyhow!("cannot move {} to {}: {e}", tmp.display(), png.display()))
        });
    if drawn.is_err() {
        // a full disk must not leave the half-drawn temp file behind
        let _ = std::fs::remove_file(&tmp);
    }
    drawn
}

/// A chart with linear f64 axes on a bitmap.
pub(crate) type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One labelled curve: a 2 px line with a dot at every point.
pub(crate) fn draw_curve(
    chart: &mut Chart,
    pts: &[(f64, f64)],
    color: RGBColor,
    label: &str,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    chart
        .draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(2)))
        .map_err(|x| e(&x))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
        .map_err(|x| e(&x))?;
    Ok(())
}

/// The legend of the labelled curves, on a translucent white box.
pub(crate) fn draw_legend<'a>(
    chart: &mut Chart<'a, 'a>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())
}

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` (once per process).
pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // The font travels inside the binary (the `dejavu` crate): no system fonts needed.
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Rounds are evenly spaced on the x axis (each removes the same share of what is left, so this
/// is a log scale of the weights kept) and labelled with their sparsity: a linear sparsity
/// axis would squeeze the interesting last rounds into its right edge.
fn draw(rows: &[ResultRow], regularizers: &[String], path: &Path) -> Result<()> {
    register_font();
    let mut sparsity_of_round: Vec<(usize, f64)> = regularizers
        .first()
        .map(|r| {
            curve_by_round(rows, r, |r| r.map)
                .into_iter()
                .map(|(k, x, _)| (k, x))
                .collect()
        })
        .unwrap_or_default();
    sparsity_of_round.sort_by_key(|p| p.0);
    let last_round = sparsity_of_round.last().map_or(1, |p| p.0) as f64;
    let label = |x: &f64| -> String {
        sparsity_of_round
            .iter()
            .find(|(k, _)| (*k as f64 - x).abs() < 1e-6)
            .map_or(String::new(), |(_, s)| format!("{s:.1}"))
    };
    let root = BitMapBackend::new(path, (1400, 380)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("sweep plot: {e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let titles = [
        "mAP (%)",
        "Grad-CAM AUC (%)",
        "cosine to teacher",
        "normalised l2 to teacher",
    ];
    for (i, ((panel, (_, metric)), title)) in root
        .split_evenly((1, 4))
        .iter()
        .zip(METRICS)
        .zip(titles)
        .enumerate()
    {
        // undefined points (no correctly predicted pair) are left out of the plot, not drawn at 0
        let curves: Vec<Vec<(f64, f64)>> = regularizers
            .iter()
            .map(|r| {
                curve_by_round(rows, r, metric)
                    .into_iter()
                    .filter(|p| p.2.is_finite())
                    .map(|(k, _, y)| (k as f64, y))
                    .collect()
            })
            .collect();
        let ys = curves
            .iter()
            .flatten()
            .map(|p| p.1)
            .filter(|v| v.is_finite());
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            continue;
        }
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .margin_right(22)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5f64..last_round + 0.5, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("pruned conv weights (%), one step per round")
            .x_labels(9)
            .x_label_formatter(&label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        for (c, (pts, reg)) in curves.iter().zip(regularizers).enumerate() {
            draw_curve(&mut chart, pts, COLORS[c % COLORS.len()], reg).map_err(|e| err(&e))?;
        }
        // one legend, where the first panel's curves are not: they stay high until the end
        if i > 0 {
            continue;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::Scores;

    fn row(reg: &str, seed: u64, round: usize, sparsity: f64, map: f64) -> ResultRow {
        let s = Scores {
            map,
            f1: 0.0,
            auc: 50.0,
            point_acc: 0.0,
            cos: 0.5,
            l2: 0.5,
            pairs: 1,
        };
        let mut r = ResultRow::new("n", "unstructured", reg, seed, &s);
        r.round = round;
        r.sparsity = sparsity;
        r
    }

    #[test]
    fn curves_average_seeds_per_round_in_round_order() {
        let rows = vec![
            row("swa", 0, 2, 0.36, 70.0),
            row("swa", 0, 1, 0.20, 90.0),
            row("swa", 1, 1, 0.20, 80.0),
            row("none", 0, 1, 0.20, 10.0),
        ];
        assert_eq!(
            curve(&rows, "swa", |r| r.map),
            vec![(20.0, 85.0), (36.0, 70.0)]
        );
        assert_eq!(curve(&rows, "none", |r| r.map), vec![(20.0, 10.0)]);
        let dir = std::env::temp_dir().join(format!("faithful-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write(&rows, &["none".into(), "swa".into()], &dir).unwrap();
        let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
        assert!(csv.contains("swa,20.00,85.0000"), "{csv}");
        assert!(image::open(dir.join("sweep.png")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
