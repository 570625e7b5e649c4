//! The ROAR figure (the paper's Fig. 7): F1 of a classifier retrained on images whose top k%
//! pixels (by each network's maps, or at random) are removed, versus k; as a Markdown table
//! with verdicts and a PNG.

use super::sweep::{COLORS, draw_curve, draw_legend, register_font};
use super::{fmt_mean_std, mean_of_defined};
use crate::evaluation::roar::RoarPoint;
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Rankings in order of appearance (the unperturbed `-` left out).
fn rankings(points: &[RoarPoint]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in points.iter().filter(|p| p.ranking != "-") {
        if !out.contains(&p.ranking) {
            out.push(p.ranking.clone());
        }
    }
    out
}

/// Percentages in increasing order, 0 (unperturbed) first when present.
fn percents(points: &[RoarPoint]) -> Vec<u32> {
    let mut out: Vec<u32> = points.iter().map(|p| p.percent).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// F1 values over seeds of a ranking at a percentage (the unperturbed classifier at 0%).
fn f1s(points: &[RoarPoint], ranking: &str, percent: u32) -> Vec<f64> {
    points
        .iter()
        .filter(|p| {
            p.percent == percent && (p.ranking == ranking || (percent == 0 && p.ranking == "-"))
        })
        .map(|p| p.f1)
        .collect()
}

/// Mean over the removal percentages (k > 0) of a ranking's mean F1.
fn curve_mean(points: &[RoarPoint], ranking: &str) -> f64 {
    let ks: Vec<u32> = percents(points).into_iter().filter(|&k| k > 0).collect();
    mean_of_defined(
        &ks.iter()
            .map(|&k| mean_of_defined(&f1s(points, ranking, k)))
            .collect::<Vec<_>>(),
    )
}

/// Mean over k > 0 of |F1(a) − F1(b)| (mean F1 over seeds at each k).
fn curve_distance(points: &[RoarPoint], a: &str, b: &str) -> f64 {
    let ks: Vec<u32> = percents(points).into_iter().filter(|&k| k > 0).collect();
    mean_of_defined(
        &ks.iter()
            .map(|&k| {
                (mean_of_defined(&f1s(points, a, k)) - mean_of_defined(&f1s(points, b, k))).abs()
            })
            .collect::<Vec<_>>(),
    )
}

/// The ROAR section of `results.md` (empty without points).
pub fn markdown(points: &[RoarPoint]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let ks = percents(points);
    let seeds = {
        let mut s: Vec<u64> = points.iter().map(|p| p.seed).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    let method = &points[0].method;
    let mut out = format!(
        "## ROAR: remove the maps' top pixels and retrain (the paper's Fig. 7)\n\n\
         Sample F1 (%) of a classifier retrained on images whose top k% pixels by each \
         network's {method} maps (of the classes it predicts) are removed, mean ± std over \
         {seeds} seed(s); 0% is the classifier on unperturbed images. Lower is better: the \
         maps found what the task needs. `random` removes pixels in a random order.\n\n| ranking |"
    );
    for k in &ks {
        let _ = write!(out, " {k}% |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(ks.len()));
    out.push('\n');
    for r in rankings(points) {
        let _ = write!(out, "| {r} |");
        for &k in &ks {
            let _ = write!(out, " {} |", fmt_mean_std(&f1s(points, &r, k), 2));
        }
        out.push('\n');
    }
    out.push('\n');
    let random = curve_mean(points, "random");
    for r in rankings(points).iter().filter(|r| *r != "random") {
        let m = curve_mean(points, r);
        let _ = writeln!(
            out,
            "- {r}'s maps {} random: mean F1 over k {m:.2} vs {random:.2}.",
            if m < random { "beat" } else { "do not beat" }
        );
    }
    let students: Vec<String> = rankings(points)
        .into_iter()
        .filter(|r| r != "teacher" && r != "random")
        .collect();
    let naive = students.iter().find(|r| r.ends_with(" none"));
    if let Some(naive) = naive {
        let d_naive = curve_distance(points, naive, "teacher");
        for s in students.iter().filter(|s| *s != naive) {
            let d = curve_distance(points, s, "teacher");
            let _ = writeln!(
                out,
                "- {s}'s curve is {} the teacher's than {naive}'s: mean |ΔF1| {d:.2} vs {d_naive:.2}.",
                if d < d_naive {
                    "closer to"
                } else {
                    "not closer to"
                }
            );
        }
    }
    out.push('\n');
    out
}

/// Draws F1 versus k, one line per ranking, to `path` (written to a temporary name first).
pub fn plot(points: &[RoarPoint], path: &Path) -> Result<()> {
    register_font();
    let tmp = path.with_extension("tmp.png");
    let err = |e: &dyn std::fmt::Display| anyhow!("ROAR plot: {e}");
    {
        let root = BitMapBackend::new(&tmp, (640, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let ks = percents(points);
        let curves: Vec<(String, Vec<(f64, f64)>)> = rankings(points)
            .into_iter()
            .map(|r| {
                let pts = ks
                    .iter()
                    .map(|&k| (k as f64, mean_of_defined(&f1s(points, &r, k))))
                    .filter(|p| p.1.is_finite())
                    .collect();
                (r, pts)
            })
            .collect();
        let ys = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1));
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo > hi { (0.0, 100.0) } else { (lo, hi) };
        let pad = ((hi - lo) * 0.1).max(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption("ROAR: F1 of the retrained classifier", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-2f64..100f64, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("pixels removed (%)")
            .y_desc("F1 (%)")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        for (c, (name, pts)) in curves.iter().enumerate() {
            let color = if name == "random" {
                BLACK
            } else {
                COLORS[(c + 1) % COLORS.len()]
            };
            draw_curve(&mut chart, pts, color, name).map_err(|e| err(&e))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seed: u64, ranking: &str, percent: u32, f1: f64) -> RoarPoint {
        RoarPoint {
            seed,
            ranking: ranking.into(),
            method: "gradcam".into(),
            percent,
            map: 0.0,
            f1,
        }
    }

    #[test]
    fn the_table_and_verdicts_follow_the_curves() {
        let mut pts = Vec::new();
        for seed in 0..2 {
            pts.push(p(seed, "-", 0, 80.0));
            for (r, f) in [
                ("teacher", 40.0),
                ("kd none", 60.0),
                ("kd sswa", 45.0),
                ("random", 70.0),
            ] {
                pts.push(p(seed, r, 10, f + seed as f64));
                pts.push(p(seed, r, 50, f - 10.0));
            }
        }
        let md = markdown(&pts);
        assert!(md.contains("| ranking | 0% | 10% | 50% |"), "{md}");
        assert!(
            md.contains("| teacher | 80.00 ± 0.00 | 40.50 ± 0.71 | 30.00 ± 0.00 |"),
            "{md}"
        );
        assert!(
            md.contains("- teacher's maps beat random: mean F1 over k 35.25 vs 65.25."),
            "{md}"
        );
        // sswa: |45.5-40.5| and |35-30| -> 5; naive: 20 and 20 -> 20
        assert!(md.contains("- kd sswa's curve is closer to the teacher's than kd none's: mean |ΔF1| 5.00 vs 20.00."), "{md}");
        assert!(markdown(&[]).is_empty());
    }
}
