//! Training curves from the per-epoch histories of result rows: validation mAP per epoch, one
//! line per network, one panel per compression method, for one seed.

use super::ResultRow;
use super::bars::{encode_png, regularizers};
use super::sweep::{COLORS, register_font};
use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// Height of one panel in pixels (the figure is 1400 wide).
const PANEL_HEIGHT: u32 = 360;
/// Width of the figure in pixels.
const WIDTH: u32 = 1400;

/// One network's curve: its label and (epoch, validation mAP) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// `teacher` or the regularizer.
    pub label: String,
    /// (epoch counted over the whole stage, validation mAP in %).
    pub points: Vec<(f64, f64)>,
}

/// Whether any row carries a training history.
pub fn has_history(rows: &[ResultRow]) -> bool {
    rows.iter().any(|r| !r.history.is_empty())
}

/// The curves of one compression method and seed: the teacher's, then each regularizer's.
/// Rounds of iterative pruning are joined in round order, epochs counted on across rounds.
/// With several students per regularizer (`kd.replicates`), the first replicate's.
pub fn curves(rows: &[ResultRow], compression: &str, seed: u64) -> Vec<Curve> {
    let mut out = Vec::new();
    let teacher: Vec<&ResultRow> = rows
        .iter()
        .filter(|r| r.compression == "none" && r.seed == seed)
        .collect();
    if let Some(c) = joined("teacher", teacher) {
        out.push(c);
    }
    let mut regs: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.compression == compression) {
        if !regs.contains(&r.regularizer.as_str()) {
            regs.push(&r.regularizer);
        }
    }
    for reg in regs {
        let mut members: Vec<&ResultRow> = rows
            .iter()
            .filter(|r| {
                r.compression == compression
                    && r.regularizer == reg
                    && r.seed == seed
                    && r.replicate == 0
            })
            .collect();
        members.sort_by_key(|r| r.round);
        if let Some(c) = joined(reg, members) {
            out.push(c);
        }
    }
    out
}

fn joined(label: &str, rows: Vec<&ResultRow>) -> Option<Curve> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .flat_map(|r| r.history.iter().map(|e| e.val_map))
        .enumerate()
        .filter(|(_, y)| y.is_finite())
        .map(|(i, y)| ((i + 1) as f64, y))
        .collect();
    (!points.is_empty()).then(|| Curve {
        label: label.to_string(),
        points,
    })
}

/// Validation mAP per epoch, one panel per compression method in `compressions`, for `seed`,
/// as PNG bytes; `None` when no row of that seed has a history.
pub fn val_map_png(
    rows: &[ResultRow],
    compressions: &[String],
    seed: u64,
) -> Result<Option<Vec<u8>>> {
    let panels: Vec<(&String, Vec<Curve>)> = compressions
        .iter()
        .map(|c| (c, curves(rows, c, seed)))
        .filter(|(_, cs)| cs.iter().any(|c| c.label != "teacher"))
        .collect();
    if panels.is_empty() {
        return Ok(None);
    }
    register_font();
    let size = (WIDTH, PANEL_HEIGHT * panels.len() as u32);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let regs = regularizers(rows);
        for (area, (c, cs)) in root.split_evenly((panels.len(), 1)).iter().zip(&panels) {
            draw_panel(area, c, seed, cs, &regs)?;
        }
        root.present().map_err(plot_err)?;
    }
    encode_png(buf, size).map(Some)
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("training curves: {e}")
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    compression: &str,
    seed: u64,
    curves: &[Curve],
    regs: &[String],
) -> Result<()> {
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (xmax, lo, hi) = pts.fold((1.0f64, f64::MAX, f64::MIN), |(x, a, b), p| {
        (x.max(p.0), a.min(p.1), b.max(p.1))
    });
    let pad = ((hi - lo) * 0.08).max(0.5);
    let title = format!("{compression}: validation mAP per epoch (seed {seed})");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 19))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(46)
        .y_label_area_size(84)
        // whole epochs on the x axis
        .build_cartesian_2d(
            0..xmax as i32 + 1,
            (lo - pad).max(0.0)..(hi + pad).min(100.5),
        )
        .map_err(plot_err)?;
    let x_desc = if compression == "unstructured" {
        "epoch (counted on over pruning rounds)"
    } else {
        "epoch"
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("validation mAP (%)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    for c in curves {
        // the regularizer's colour in every figure of the report
        let color = match regs.iter().position(|r| *r == c.label) {
            Some(i) if c.label != "teacher" => COLORS[i % COLORS.len()],
            _ => RGBColor(60, 60, 60),
        };
        let pts: Vec<(i32, f64)> = c.points.iter().map(|&(x, y)| (x as i32, y)).collect();
        // markers too: a one-epoch stage has no line to draw
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(c.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::Scores;
    use crate::report::EpochRecord;

    fn row(comp: &str, reg: &str, seed: u64, round: usize, maps: &[f64]) -> ResultRow {
        let s = Scores {
            map: 90.0,
            f1: 80.0,
            auc: 90.0,
            point_acc: 50.0,
            cos: 0.9,
            l2: 0.3,
            pairs: 3,
        };
        let mut r = ResultRow::new("n", comp, reg, seed, &s);
        r.round = round;
        r.history = maps
            .iter()
            .enumerate()
            .map(|(i, &m)| EpochRecord {
                epoch: i + 1,
                task_loss: 1.0,
                match_loss: None,
                val_map: m,
                val_f1: 0.0,
                val_positive_rate: 0.1,
            })
            .collect();
        r
    }

    #[test]
    fn rounds_are_joined_in_order_and_other_seeds_left_out() {
        let rows = vec![
            row("none", "-", 0, 0, &[10.0, 20.0]),
            row("unstructured", "swa", 0, 2, &[50.0]),
            row("unstructured", "swa", 0, 1, &[40.0]),
            row("unstructured", "swa", 1, 1, &[99.0]),
            row("kd", "none", 0, 0, &[5.0]),
        ];
        let cs = curves(&rows, "unstructured", 0);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].label, "teacher");
        assert_eq!(cs[0].points, vec![(1.0, 10.0), (2.0, 20.0)]);
        assert_eq!(cs[1].label, "swa");
        assert_eq!(cs[1].points, vec![(1.0, 40.0), (2.0, 50.0)]);
        let png = val_map_png(&rows, &["kd".into(), "unstructured".into()], 0)
            .unwrap()
            .unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, 2 * PANEL_HEIGHT));
        let no_history = vec![row("kd", "none", 0, 0, &[])];
        assert!(
            val_map_png(&no_history, &["kd".into()], 0)
                .unwrap()
                .is_none()
        );
    }
}
