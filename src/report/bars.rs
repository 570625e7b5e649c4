//! Bar charts with error bars: each attribution metric per network (the teacher, then every
//! compression method's final networks grouped by method and coloured by regularizer), mean ±
//! sample standard deviation over seeds, as one 2×2-panel PNG.

use super::ResultRow;
use super::sweep::{COLORS, Metric, register_font};
use crate::metrics::mean_std;
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width and height of the bar-chart figure in pixels.
pub const SIZE: (u32, u32) = (1400, 980);
/// Height of the strip above the panels holding the title and the legend.
const HEADER: u32 = 78;
/// Colour of the teacher's bar.
const TEACHER_COLOR: RGBColor = RGBColor(60, 60, 60);

/// One bar: a network's metric averaged over seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct BarStat {
    /// Compression method (`none` for the teacher).
    pub compression: String,
    /// Regularizer (`-` for the teacher).
    pub regularizer: String,
    /// Mean over the seeds where the metric is defined (NaN when it is defined for none).
    pub mean: f64,
    /// Sample standard deviation over those seeds (0 for fewer than two).
    pub std: f64,
    /// Seeds where the metric is defined.
    pub defined: usize,
    /// Seeds with a row.
    pub seeds: usize,
}

/// The four panels: title and accessor of the row's own (the run's `eval.pairs`) metrics.
pub const PANELS: [(&str, Metric); 4] = [
    ("Grad-CAM AUC against masks (%)", |r| r.auc),
    ("pointing accuracy (%)", |r| r.point_acc),
    ("cosine similarity to the teacher's maps", |r| r.cos),
    ("normalised l2 distance to the teacher's maps", |r| r.l2),
];

/// One bar per network, the teacher (`compression = none`) first, then each compression method
/// in order of appearance with its regularizers in order of appearance, at that method's last
/// round; mean ± sample std over seeds of the defined (finite) values of `metric`.
pub fn bar_stats(rows: &[ResultRow], metric: Metric) -> Vec<BarStat> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows.iter().filter(|r| r.compression == "none") {
        push_new(&mut keys, r);
    }
    for r in rows.iter().filter(|r| r.compression != "none") {
        push_new(&mut keys, r);
    }
    keys.into_iter()
        .map(|(c, reg)| {
            let last = last_round(rows, &c);
            let values: Vec<f64> = rows
                .iter()
                .filter(|r| r.compression == c && r.regularizer == reg && r.round == last)
                .map(metric)
                .collect();
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            let (mean, std) = mean_std(&finite);
            BarStat {
                compression: c,
                regularizer: reg,
                mean,
                std,
                defined: finite.len(),
                seeds: values.len(),
            }
        })
        .collect()
}

fn push_new(keys: &mut Vec<(String, String)>, r: &ResultRow) {
    let k = (r.compression.clone(), r.regularizer.clone());
    if !keys.contains(&k) {
        keys.push(k);
    }
}

/// The last round of a compression method (0 without rounds).
fn last_round(rows: &[ResultRow], compression: &str) -> usize {
    rows.iter()
        .filter(|r| r.compression == compression)
        .map(|r| r.round)
        .max()
        .unwrap_or(0)
}

/// Encodes an RGB buffer as PNG.
pub(crate) fn encode_png(buf: Vec<u8>, (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("bad chart buffer"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| anyhow!("cannot encode chart PNG: {e}"))?;
    Ok(out.into_inner())
}

/// The 2×2 figure of `panels` (title, metric) as PNG bytes, under a figure `title`.
pub fn bars_png(rows: &[ResultRow], panels: &[(&str, Metric)], title: &str) -> Result<Vec<u8>> {
    register_font();
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (header, body) = root.split_vertically(HEADER);
        let regs = regularizers(rows);
        draw_header(&header, title, &regs)?;
        let cols = if panels.len() > 1 { 2 } else { 1 };
        let grid_rows = panels.len().div_ceil(cols);
        for (area, &(name, metric)) in body.split_evenly((grid_rows, cols)).iter().zip(panels) {
            draw_panel(&root, area, name, &bar_stats(rows, metric), &regs)?;
        }
        root.present().map_err(plot_err)?;
    }
    encode_png(buf, SIZE)
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("bar chart: {e}")
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Regularizers of the compressed networks, in order of appearance (their colour order).
pub(crate) fn regularizers(rows: &[ResultRow]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| r.compression != "none") {
        if !v.contains(&r.regularizer) {
            v.push(r.regularizer.clone());
        }
    }
    v
}

fn color_of(bar: &BarStat, regs: &[String]) -> RGBColor {
    if bar.compression == "none" {
        return TEACHER_COLOR;
    }
    let i = regs.iter().position(|r| *r == bar.regularizer).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

fn draw_header(area: &Area, title: &str, regs: &[String]) -> Result<()> {
    let centre = (SIZE.0 as i32 / 2, 8);
    let style =
        TextStyle::from(("sans-serif", 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(title.to_string(), centre, style))
        .map_err(plot_err)?;
    let mut entries = vec![("teacher".to_string(), TEACHER_COLOR)];
    for (i, r) in regs.iter().enumerate() {
        entries.push((r.clone(), COLORS[i % COLORS.len()]));
    }
    let font =
        TextStyle::from(("sans-serif", 17).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let step = 150;
    let mut x = SIZE.0 as i32 / 2 - step * entries.len() as i32 / 2;
    for (name, color) in entries {
        area.draw(&Rectangle::new([(x, 44), (x + 22, 62)], color.filled()))
            .map_err(plot_err)?;
        area.draw(&Text::new(name, (x + 30, 53), font.clone()))
            .map_err(plot_err)?;
        x += step;
    }
    Ok(())
}

/// Groups of bars on the x axis: the teacher, then each compression method.
fn groups(stats: &[BarStat]) -> Vec<String> {
    let mut g: Vec<String> = Vec::new();
    for s in stats {
        if !g.contains(&s.compression) {
            g.push(s.compression.clone());
        }
    }
    g
}

/// (low, high) of the y axis: every mean ± std with a margin; metrics that are never negative
/// keep a bottom at or above 0.
fn y_range(stats: &[BarStat]) -> (f64, f64) {
    let defined = stats.iter().filter(|s| s.mean.is_finite());
    let (lo, hi) = defined.fold((f64::MAX, f64::MIN), |(a, b), s| {
        (a.min(s.mean - s.std), b.max(s.mean + s.std))
    });
    if lo > hi {
        return (0.0, 1.0);
    }
    // a flat set of bars still gets an axis around it
    let pad = ((hi - lo) * 0.12).max(hi.abs() * 0.02).max(1e-3);
    let low = if lo >= 0.0 {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    (low, hi + pad)
}

fn draw_panel(
    root: &Area,
    area: &Area,
    title: &str,
    stats: &[BarStat],
    regs: &[String],
) -> Result<()> {
    let groups = groups(stats);
    let (lo, hi) = y_range(stats);
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 19))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..n - 0.5, lo..hi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    let width = 0.8 / regs.len().max(1) as f64;
    let mut placed: Vec<(&BarStat, (f64, f64))> = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        let members: Vec<&BarStat> = stats.iter().filter(|s| &s.compression == g).collect();
        let left = gi as f64 - width * members.len() as f64 / 2.0;
        for (j, s) in members.iter().enumerate() {
            let x0 = left + j as f64 * width;
            draw_bar(&mut chart, s, (x0, x0 + width), lo, color_of(s, regs))?;
            placed.push((s, (x0, x0 + width)));
        }
        let label = if g == "none" { "teacher" } else { g.as_str() };
        let (px, py) = chart.backend_coord(&(gi as f64, lo));
        let style =
            TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(label.to_string(), (px, py + 8), style))
            .map_err(plot_err)?;
    }
    for (s, span) in placed {
        draw_seed_count(&mut chart, s, span)?;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One bar from the axis bottom to the mean, with an error bar of ± one std; `n/a` when the
/// metric is defined for no seed.
fn draw_bar(
    chart: &mut Chart,
    s: &BarStat,
    (x0, x1): (f64, f64),
    lo: f64,
    color: RGBColor,
) -> Result<()> {
    let pad = (x1 - x0) * 0.08;
    let (a, b) = (x0 + pad, x1 - pad);
    if !s.mean.is_finite() {
        let style = TextStyle::from(("sans-serif", 14).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(std::iter::once(Text::new(
                "n/a",
                ((a + b) / 2.0, lo),
                style,
            )))
            .map_err(plot_err)?;
        return Ok(());
    }
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(a, lo), (b, s.mean)],
            color.filled(),
        )))
        .map_err(plot_err)?;
    let (mid, cap) = ((a + b) / 2.0, (b - a) * 0.25);
    let (top, bottom) = (s.mean + s.std, s.mean - s.std);
    let whisker = BLACK.stroke_width(2);
    chart
        .draw_series([
            PathElement::new(vec![(mid, bottom), (mid, top)], whisker),
            PathElement::new(vec![(mid - cap, top), (mid + cap, top)], whisker),
            PathElement::new(vec![(mid - cap, bottom), (mid + cap, bottom)], whisker),
        ])
        .map_err(plot_err)?;
    Ok(())
}

/// Over a bar whose mean is over fewer seeds than there are rows: `k/n` (seeds defined / seeds),
/// drawn after every bar so that no neighbour covers it.
fn draw_seed_count(chart: &mut Chart, s: &BarStat, (x0, x1): (f64, f64)) -> Result<()> {
    if s.defined == s.seeds || !s.mean.is_finite() {
        return Ok(());
    }
    let style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let label = format!("{}/{}", s.defined, s.seeds);
    let at = ((x0 + x1) / 2.0, s.mean + s.std);
    chart
        .draw_series(std::iter::once(Text::new(label, at, style)))
        .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::Scores;

    fn row(comp: &str, reg: &str, seed: u64, round: usize, auc: f64) -> ResultRow {
        let s = Scores {
            map: 90.0,
            f1: 80.0,
            auc,
            point_acc: 50.0,
            cos: 0.9,
            l2: 0.3,
            pairs: 3,
        };
        let mut r = ResultRow::new("n", comp, reg, seed, &s);
        r.round = round;
        r
    }

    fn rows() -> Vec<ResultRow> {
        vec![
            row("kd", "none", 0, 0, 70.0),
            row("none", "-", 0, 0, 96.0),
            row("kd", "none", 1, 0, 74.0),
            row("none", "-", 1, 0, 98.0),
            row("kd", "swa", 0, 0, 80.0),
            row("kd", "swa", 1, 0, f64::NAN),
            row("kd", "swa", 2, 0, 84.0),
            row("kd", "ewa", 0, 0, f64::NAN),
            // an early pruning round (left out) and the last one
            row("unstructured", "none", 0, 1, 10.0),
            row("unstructured", "none", 0, 2, 60.0),
            row("unstructured", "none", 1, 2, 66.0),
        ]
    }

    #[test]
    fn stats_are_mean_and_sample_std_over_seeds_of_final_networks() {
        let stats = bar_stats(&rows(), |r| r.auc);
        let keys: Vec<(&str, &str)> = stats
            .iter()
            .map(|s| (s.compression.as_str(), s.regularizer.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("none", "-"),
                ("kd", "none"),
                ("kd", "swa"),
                ("kd", "ewa"),
                ("unstructured", "none")
            ]
        );
        // teacher: 96, 98 -> mean 97, sample std sqrt(2)
        assert!((stats[0].mean - 97.0).abs() < 1e-12);
        assert!((stats[0].std - 2f64.sqrt()).abs() < 1e-12);
        // kd none: 70, 74 -> 72 ± sqrt(8)
        assert!((stats[1].mean - 72.0).abs() < 1e-12);
        assert!((stats[1].std - 8f64.sqrt()).abs() < 1e-12);
        // kd swa: NaN left out: 80, 84 -> 82 ± sqrt(8), 2 of 3 seeds
        assert!((stats[2].mean - 82.0).abs() < 1e-12);
        assert!((stats[2].std - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!((stats[2].defined, stats[2].seeds), (2, 3));
        // kd ewa: never defined
        assert!(stats[3].mean.is_nan());
        assert_eq!((stats[3].defined, stats[3].seeds), (0, 1));
        // unstructured: round 2 only: 60, 66 -> 63 ± sqrt(18)
        assert!((stats[4].mean - 63.0).abs() < 1e-12);
        assert!((stats[4].std - 18f64.sqrt()).abs() < 1e-12);
        assert_eq!(stats[4].seeds, 2);
    }

    #[test]
    fn y_range_covers_every_error_bar_and_stays_non_negative() {
        let stats = bar_stats(&rows(), |r| r.auc);
        let (lo, hi) = y_range(&stats);
        assert!(lo >= 0.0 && lo <= 63.0 - 18f64.sqrt(), "{lo}");
        assert!(hi >= 97.0 + 2f64.sqrt(), "{hi}");
    }

    #[test]
    fn figure_is_a_png_of_the_stated_size() {
        let png = bars_png(&rows(), &PANELS, "attribution metrics").unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), SIZE);
        // drawn on: not a blank canvas
        let rgb = img.to_rgb8();
        let dark = rgb
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 1000, "{dark} dark pixels");
    }
}
