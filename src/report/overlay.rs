//! Heat-map overlay images: an input image blended with a colormapped attribution
//! map, the ground-truth mask outline and a marker at the map's maximum; a plain grid
//! layout, and a labelled figure (column titles, row captions, legend with a colorbar)
//! whose text is drawn with `ab_glyph` and the embedded DejaVu font (no system fonts); the
//! choice of figure rows; and an atomic PNG writer.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use anyhow::{Context, Result, bail, ensure};
use image::{ImageFormat, Rgb, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Weight of the colormapped map when blended over the image.
pub const MAP_ALPHA: f32 = 0.5;
/// Colour of the ground-truth mask outline.
pub const OUTLINE_COLOR: [u8; 3] = [255, 255, 255];
/// Colour of the marker drawn at the map's maximum (absent from the jet colormap's
/// saturated ends, so it stands out on the hot spot it marks).
pub const MARKER_COLOR: [u8; 3] = [0, 255, 0];
/// Background colour of [`grid`] and [`figure`] (shows through the gaps).
pub const GRID_BACKGROUND: [u8; 3] = [40, 40, 40];
/// Colour of the titles, captions and legend of [`figure`].
pub const TEXT_COLOR: [u8; 3] = [235, 235, 235];
/// Colour of the hatching of a constant (e.g. all-zero) map.
pub const HATCH_COLOR: [u8; 3] = [150, 150, 150];
/// Colour of the border and tag of a panel whose network misses the row's class.
pub const MISSED_COLOR: [u8; 3] = [230, 40, 40];
/// Pixels between panels and around a [`figure`].
pub const GAP: u32 = 4;

/// Font size of the column titles.
const TITLE_SIZE: f64 = 15.0;
/// Font size of captions, legend and panel labels.
const TEXT_SIZE: f64 = 13.0;
/// Text is shrunk down to this size to fit; below it, it is clipped instead.
const MIN_TEXT_SIZE: f64 = 8.0;
/// Size of the colorbar in the legend.
const COLORBAR: (u32, u32) = (120, 10);
/// Spacing of the hatch lines of a constant map, in output pixels.
const HATCH_STEP: u32 = 8;

/// One panel of an overlay figure.
#[derive(Debug, Clone, Copy)]
pub struct Panel<'a> {
    /// CHW RGB image in [0, 1], length `3 * h * w`.
    pub image: &'a [f32],
    /// Attribution map at image resolution (`h * w`), any range; min-max normalised
    /// inside. A constant map ([`is_constant`], e.g. all zero) is drawn as zeros, hatched
    /// and labelled `zero map` (or `constant map`), and gets no marker.
    pub map: Option<&'a [f32]>,
    /// Ground-truth mask (`h * w`); its outline is drawn in white.
    pub mask: Option<&'a [bool]>,
    /// Draw a marker at the map's argmax (first maximum in row-major order); ignored
    /// when there is no map or the map is constant.
    pub mark_max: bool,
}

/// Colormap: value in [0, 1] -> RGB (jet-like: blue -> cyan -> yellow -> red).
/// Values outside [0, 1] are clamped; NaN maps like 0.
pub fn colormap(v: f32) -> [u8; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let channel = |centre: f32| to_u8(1.5 - (4.0 * v - centre).abs());
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// Renders one panel to an RGB image at `scale`x (nearest-neighbour upscaling so small
/// images are visible): the image blended with a jet colormap of the map
/// (alpha [`MAP_ALPHA`]), then the mask outline and the argmax marker drawn after
/// scaling as 1-px lines at output resolution. A constant map is hatched and labelled
/// instead of marked.
pub fn render_panel(p: &Panel, h: usize, w: usize, scale: u32) -> Result<RgbImage> {
    ensure!(h > 0 && w > 0, "panel size must be positive, got {h}x{w}");
    ensure!(scale > 0, "scale must be at least 1, got 0");
    let hw = h
        .checked_mul(w)
        .with_context(|| format!("panel size {h}x{w} overflows"))?;
    check_len("image", 3 * hw, p.image.len(), h, w)?;
    if let Some(mask) = p.mask {
        check_len("mask", hw, mask.len(), h, w)?;
    }
    let norm = p.map.map(|m| normalise(m, h, w)).transpose()?;
    let out_w = scaled(w, scale)?;
    let out_h = scaled(h, scale)?;

    let base = blend(p.image, norm.as_deref(), hw);
    let s = scale as usize;
    let mut out = RgbImage::from_fn(out_w, out_h, |x, y| {
        Rgb(base[(y as usize / s) * w + x as usize / s])
    });
    let flat = p.map.is_some_and(is_constant);
    if flat {
        hatch(&mut out);
    }
    if let Some(mask) = p.mask {
        draw_outline(&mut out, mask, h, w, s);
    }
    match (&norm, p.map) {
        // a constant map has no peak: say so instead of marking pixel 0
        (Some(_), Some(map)) if flat => {
            let all_zero = map.iter().all(|&v| v == 0.0);
            let labels = if all_zero {
                ["zero map", "zero"]
            } else {
                ["constant map", "const"]
            };
            label_centre(&mut out, labels)?;
        }
        (Some(norm), _) if p.mark_max => draw_marker(&mut out, argmax(norm), w, s),
        _ => {}
    }
    Ok(out)
}

/// Whether a map is constant (all zero included) up to float rounding: it has no maximum
/// worth marking. Grad-CAM's ReLU makes a map all zero where a class has no positive evidence.
pub fn is_constant(map: &[f32]) -> bool {
    let (lo, hi) = map
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v as f64), hi.max(v as f64))
        });
    // a few ulps of the magnitude: bilinear upsampling of a constant leaves rounding noise
    hi - lo <= 4.0 * f32::EPSILON as f64 * lo.abs().max(hi.abs())
}

/// Lays out rows of panels into one grid image with `gap` pixels between panels and
/// around the border, on a dark grey background. Each row is as tall as its tallest
/// panel; the image is as wide as the widest row. Panels are top-left aligned in
/// their cells. Size: width = gap + max over rows of sum(panel width + gap),
/// height = gap + sum over non-empty rows of (row height + gap).
pub fn grid(rows: &[Vec<RgbImage>], gap: u32) -> RgbImage {
    let row_w = |r: &Vec<RgbImage>| r.iter().map(|i| i.width() + gap).sum::<u32>();
    let row_h = |r: &Vec<RgbImage>| r.iter().map(RgbImage::height).max().unwrap_or(0);
    let width = gap + rows.iter().map(row_w).max().unwrap_or(0);
    let height = gap
        + rows
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| row_h(r) + gap)
            .sum::<u32>();
    let mut out = RgbImage::from_pixel(width, height, Rgb(GRID_BACKGROUND));
    let mut y = gap;
    for row in rows.iter().filter(|r| !r.is_empty()) {
        let mut x = gap;
        for img in row {
            image::imageops::replace(&mut out, img, x.into(), y.into());
            x += img.width() + gap;
        }
        y += row_h(row) + gap;
    }
    out
}

/// Encodes `img` to PNG and writes it atomically to `path` (creating parent folders).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .with_context(|| format!("cannot encode PNG for {}", path.display()))?;
    crate::util::write_atomic(path, &bytes.into_inner())
}

/// Marks a panel whose network misses the row's class: a 2-px border and a `missed` tag in
/// the top-right corner, both in [`MISSED_COLOR`].
pub fn mark_missed(panel: &mut RgbImage) -> Result<()> {
    let (w, h) = panel.dimensions();
    for y in 0..h {
        for x in 0..w {
            if x < 2 || y < 2 || x + 2 >= w || y + 2 >= h {
                panel.put_pixel(x, y, Rgb(MISSED_COLOR));
            }
        }
    }
    let size = fit_size("missed", w.saturating_sub(4), TEXT_SIZE)?;
    let (tw, th) = (text_width("missed", size)? + 4, line_height(size));
    let x0 = w.saturating_sub(tw);
    fill_rect(panel, (x0, 0), (tw, th), MISSED_COLOR);
    draw_text(panel, "missed", (x0 as i32 + 2, 0), size, [255, 255, 255])
}

/// Title of a network's column: `teacher` for the uncompressed network (compression `none`),
/// otherwise the compression (`KD`, `structured`, `unstructured`) with the regularizer:
/// `naive` for `none`, `+ EWA` (upper case) for the others.
pub fn column_title(compression: &str, regularizer: &str) -> String {
    let method = match compression {
        "none" => return "teacher".into(),
        "kd" => "KD".to_string(),
        other => other.to_string(),
    };
    match regularizer {
        "none" => format!("{method} naive"),
        r => format!("{method} + {}", r.to_uppercase()),
    }
}

/// One chosen row of an overlay figure: a test (image, class) pair and which networks
/// predict the class (logit > 0), in network order (teacher first).
#[derive(Clone, Debug, PartialEq)]
pub struct RowChoice {
    /// Test image index.
    pub image: usize,
    /// Class index.
    pub class: usize,
    /// Per network: does it predict the class present?
    pub correct: Vec<bool>,
}

impl RowChoice {
    /// Every network predicts the class.
    pub fn all_correct(&self) -> bool {
        self.correct.iter().all(|&c| c)
    }
}

/// Chooses up to `n` rows for an overlay figure as the paper's Fig. 4: pairs that every
/// network predicts correctly first; only if there are fewer than `n` of those, the others,
/// those the teacher gets right first, then by how many networks get them right. `pairs` are
/// (image, class) pairs with the class present, in test order (kept within ties: the choice
/// never looks at the maps); `logits[net]` is that network's `images x k` logits, row-major.
pub fn choose_rows(
    pairs: &[(usize, usize)],
    logits: &[Vec<f32>],
    k: usize,
    n: usize,
) -> Vec<RowChoice> {
    let mut rows: Vec<RowChoice> = pairs
        .iter()
        .map(|&(image, class)| RowChoice {
            image,
            class,
            correct: logits.iter().map(|l| l[image * k + class] > 0.0).collect(),
        })
        .collect();
    let key = |r: &RowChoice| {
        let count = r.correct.iter().filter(|&&c| c).count();
        (r.all_correct(), r.correct.first() == Some(&true), count)
    };
    rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
    rows.truncate(n);
    rows
}

/// Caption of a figure row: test image and class name, plus the networks (named by their
/// `titles`, teacher first) that miss the class, if any.
pub fn row_caption(row: &RowChoice, class_name: &str, titles: &[String]) -> String {
    let missed: Vec<&str> = row
        .correct
        .iter()
        .zip(titles)
        .filter(|(c, _)| !**c)
        .map(|(_, t)| t.as_str())
        .collect();
    let mut caption = format!("test image {}, class {class_name}", row.image);
    if !missed.is_empty() {
        caption.push_str(&format!(" (missed by {})", missed.join(", ")));
    }
    caption
}

/// Legend lines of an overlay figure (the colorbar is drawn by [`figure`]): the outline and
/// marker always; the hatching when `any_constant` map is shown; the red border, and how many
/// rows every network predicts, when some row is not all-correct.
pub fn legend(rows: &[RowChoice], any_constant: bool) -> Vec<String> {
    let mut lines = vec![
        "white outline: ground-truth mask of the row's class".to_string(),
        "green cross: maximum of the map".to_string(),
    ];
    if any_constant {
        lines
            .push("hatched \"zero map\": the map is zero everywhere (no positive evidence)".into());
    }
    let all = rows.iter().filter(|r| r.all_correct()).count();
    if all < rows.len() {
        lines.push(
            "red border, \"missed\": the network does not predict the class (logit <= 0)".into(),
        );
        lines.push(format!(
            "{all} of {} rows are predicted by every network (the test set has no more)",
            rows.len()
        ));
    }
    lines
}

/// The figure's text for the `.txt` beside it: a `columns:` line with the column titles, then
/// `rows:` and one caption per line (the format `report::html` reads back; the legend is in
/// the image only).
pub fn caption_text(titles: &[String], rows: &[FigureRow]) -> String {
    let captions: Vec<&str> = rows.iter().map(|r| r.caption.as_str()).collect();
    format!(
        "columns: {}\nrows:\n{}\n",
        titles.join(", "),
        captions.join("\n")
    )
}

/// One row of a [`figure`]: its caption and its panels, left to right.
#[derive(Clone, Debug)]
pub struct FigureRow {
    /// Drawn above the row's panels, left-aligned.
    pub caption: String,
    /// The row's panels (see [`render_panel`]).
    pub panels: Vec<RgbImage>,
}

/// Lays out a self-explanatory figure on a dark background: a header band with one title
/// centred over each column (shrunk to fit the column), then per row its caption above its
/// panels, then the `legend` lines and a jet colorbar (low -> high). Columns are as wide as
/// their widest panel, [`GAP`] pixels apart and from the border; the figure is widened when
/// a caption or legend line is wider than the panels.
pub fn figure(titles: &[String], rows: &[FigureRow], legend: &[String]) -> Result<RgbImage> {
    let ncol = rows.iter().map(|r| r.panels.len()).max().unwrap_or(0);
    let col_w: Vec<u32> = (0..ncol)
        .map(|j| {
            let widths = rows
                .iter()
                .filter_map(|r| r.panels.get(j))
                .map(|p| p.width());
            widths.max().unwrap_or(0)
        })
        .collect();
    let col_x: Vec<u32> = col_w
        .iter()
        .scan(GAP, |x, &w| {
            let left = *x;
            *x += w + GAP;
            Some(left)
        })
        .collect();
    let text_h = line_height(TEXT_SIZE);
    let header_h = line_height(TITLE_SIZE) + GAP;
    let row_h = |r: &FigureRow| r.panels.iter().map(RgbImage::height).max().unwrap_or(0);
    let mut widest = GAP + col_w.iter().map(|w| w + GAP).sum::<u32>();
    for line in rows.iter().map(|r| &r.caption).chain(legend) {
        widest = widest.max(2 * GAP + text_width(line, TEXT_SIZE)?);
    }
    widest = widest.max(2 * GAP + colorbar_width()?);
    let height = GAP
        + header_h
        + rows.iter().map(|r| text_h + row_h(r) + GAP).sum::<u32>()
        + (legend.len() as u32 + 1) * text_h
        + GAP;
    let mut out = RgbImage::from_pixel(widest, height, Rgb(GRID_BACKGROUND));
    for ((title, &x), &w) in titles.iter().zip(&col_x).zip(&col_w) {
        let size = fit_size(title, w, TITLE_SIZE)?;
        let left = x as i32 + (w as i32 - text_width(title, size)? as i32) / 2;
        draw_text(&mut out, title, (left, GAP as i32), size, TEXT_COLOR)?;
    }
    let mut y = GAP + header_h;
    for row in rows {
        draw_text(
            &mut out,
            &row.caption,
            (GAP as i32, y as i32),
            TEXT_SIZE,
            TEXT_COLOR,
        )?;
        y += text_h;
        for (panel, &x) in row.panels.iter().zip(&col_x) {
            image::imageops::replace(&mut out, panel, x.into(), y.into());
        }
        y += row_h(row) + GAP;
    }
    for line in legend {
        draw_text(
            &mut out,
            line,
            (GAP as i32, y as i32),
            TEXT_SIZE,
            TEXT_COLOR,
        )?;
        y += text_h;
    }
    draw_colorbar(&mut out, (GAP, y))?;
    Ok(out)
}

/// The legend's last line: `map: low`, a jet colorbar, `high`.
fn draw_colorbar(out: &mut RgbImage, (x, y): (u32, u32)) -> Result<()> {
    let (low, high) = ("map value: low", "high");
    draw_text(out, low, (x as i32, y as i32), TEXT_SIZE, TEXT_COLOR)?;
    let bar_x = x + text_width(low, TEXT_SIZE)? + 6;
    let bar_y = y + (line_height(TEXT_SIZE) - COLORBAR.1) / 2;
    for dx in 0..COLORBAR.0 {
        let c = colormap(dx as f32 / (COLORBAR.0 - 1) as f32);
        for dy in 0..COLORBAR.1 {
            if bar_x + dx < out.width() && bar_y + dy < out.height() {
                out.put_pixel(bar_x + dx, bar_y + dy, Rgb(c));
            }
        }
    }
    let high_x = (bar_x + COLORBAR.0 + 6) as i32;
    draw_text(out, high, (high_x, y as i32), TEXT_SIZE, TEXT_COLOR)
}

fn colorbar_width() -> Result<u32> {
    Ok(text_width("map value: low", TEXT_SIZE)?
        + 6
        + COLORBAR.0
        + 6
        + text_width("high", TEXT_SIZE)?)
}

/// Height of a line of text of font size `size`, in pixels (see [`draw_text`]).
fn line_height(size: f64) -> u32 {
    (size * 1.3).ceil() as u32
}

/// The embedded DejaVu Sans (the `dejavu` crate), parsed once.
fn font() -> Result<&'static FontRef<'static>> {
    static FONT: std::sync::OnceLock<Option<FontRef<'static>>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(dejavu::sans::regular()).ok())
        .as_ref()
        .context("the embedded DejaVu font cannot be read")
}

/// Width in pixels of `text` at font size `size` (the sum of glyph advances and kerning).
fn text_width(text: &str, size: f64) -> Result<u32> {
    let font = font()?.as_scaled(PxScale::from(size as f32));
    let mut width = 0.0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            width += font.kern(p, id);
        }
        width += font.h_advance(id);
        prev = Some(id);
    }
    Ok(width.ceil() as u32)
}

/// The largest font size up to `preferred` (down to [`MIN_TEXT_SIZE`]) at which `text` fits
/// in `max_w` pixels; [`MIN_TEXT_SIZE`] when it never does.
fn fit_size(text: &str, max_w: u32, preferred: f64) -> Result<f64> {
    let mut size = preferred;
    while size > MIN_TEXT_SIZE && text_width(text, size)? > max_w {
        size -= 1.0;
    }
    Ok(size.max(MIN_TEXT_SIZE))
}

/// Draws one line of anti-aliased text whose line box (height [`line_height`]) starts at
/// `(x, top)`: ascenders reach `top`, descenders stay above `top + size`. Anything outside the
/// image is clipped.
fn draw_text(
    img: &mut RgbImage,
    text: &str,
    (x, top): (i32, i32),
    size: f64,
    color: [u8; 3],
) -> Result<()> {
    let scale = PxScale::from(size as f32);
    let font = font()?.as_scaled(scale);
    let baseline = top as f32 + font.ascent();
    let mut caret = x as f32;
    let mut prev = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            caret += font.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += font.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue; // a space
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + gx as i64;
            let py = bounds.min.y as i64 + gy as i64;
            if (0..img.width() as i64).contains(&px) && (0..img.height() as i64).contains(&py) {
                let dst = img.get_pixel_mut(px as u32, py as u32);
                let a = coverage.clamp(0.0, 1.0);
                for (d, &c) in dst.0.iter_mut().zip(&color) {
                    *d = (*d as f32 * (1.0 - a) + c as f32 * a).round() as u8;
                }
            }
        });
    }
    Ok(())
}

fn fill_rect(img: &mut RgbImage, (x0, y0): (u32, u32), (w, h): (u32, u32), color: [u8; 3]) {
    for y in y0..(y0 + h).min(img.height()) {
        for x in x0..(x0 + w).min(img.width()) {
            img.put_pixel(x, y, Rgb(color));
        }
    }
}

/// Diagonal 1-px hatch lines every [`HATCH_STEP`] pixels.
fn hatch(out: &mut RgbImage) {
    for (x, y, px) in out.enumerate_pixels_mut() {
        if (x + y) % HATCH_STEP == 0 {
            *px = Rgb(HATCH_COLOR);
        }
    }
}

/// Writes a label in the middle of the panel on a dark box, shrunk to fit its width; the
/// short form of `[long, short]` when the long one does not fit even at the smallest size.
fn label_centre(out: &mut RgbImage, [long, short]: [&str; 2]) -> Result<()> {
    let (w, h) = out.dimensions();
    let room = w.saturating_sub(6);
    let text = if text_width(long, MIN_TEXT_SIZE)? <= room {
        long
    } else {
        short
    };
    let size = fit_size(text, room, TEXT_SIZE)?;
    let (tw, th) = (text_width(text, size)? + 6, line_height(size));
    let (x0, y0) = (w.saturating_sub(tw) / 2, h.saturating_sub(th) / 2);
    fill_rect(out, (x0, y0), (tw, th), GRID_BACKGROUND);
    draw_text(out, text, (x0 as i32 + 3, y0 as i32), size, TEXT_COLOR)
}

fn check_len(what: &str, expected: usize, actual: usize, h: usize, w: usize) -> Result<()> {
    ensure!(
        expected == actual,
        "{what} has {actual} values, expected {expected} for a {h}x{w} panel"
    );
    Ok(())
}

fn scaled(n: usize, scale: u32) -> Result<u32> {
    u32::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .with_context(|| format!("output size {n} x scale {scale} does not fit in u32"))
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Min-max normalises the map to [0, 1]; constant map ([`is_constant`]) -> zeros;
/// non-finite -> error.
fn normalise(map: &[f32], h: usize, w: usize) -> Result<Vec<f32>> {
    check_len("map", h * w, map.len(), h, w)?;
    if let Some(i) = map.iter().position(|v| !v.is_finite()) {
        bail!("map value at index {i} is {} (must be finite)", map[i]);
    }
    let (lo, hi) = map
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v as f64), hi.max(v as f64))
        });
    let range = hi - lo;
    Ok(if !is_constant(map) {
        map.iter()
            .map(|&v| ((v as f64 - lo) / range) as f32)
            .collect()
    } else {
        vec![0.0; map.len()]
    })
}

/// Per-pixel RGB at input resolution: the image, blended with the colormapped map.
fn blend(image: &[f32], norm: Option<&[f32]>, hw: usize) -> Vec<[u8; 3]> {
    (0..hw)
        .map(|i| {
            let mut px = [image[i], image[hw + i], image[2 * hw + i]];
            if let Some(norm) = norm {
                let c = colormap(norm[i]);
                for (v, c) in px.iter_mut().zip(c) {
                    *v = (1.0 - MAP_ALPHA) * v.clamp(0.0, 1.0) + MAP_ALPHA * c as f32 / 255.0;
                }
            }
            px.map(to_u8)
        })
        .collect()
}

/// First maximum in row-major order.
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Draws the mask outline: for every mask pixel with a 4-neighbour outside the mask
/// (the image border counts as outside), the 1-px edge of its scaled block that faces
/// that neighbour. At scale 1 this colours exactly the outline pixels.
fn draw_outline(out: &mut RgbImage, mask: &[bool], h: usize, w: usize, s: usize) {
    let inside = |y: isize, x: isize| {
        y >= 0
            && x >= 0
            && (y as usize) < h
            && (x as usize) < w
            && mask[y as usize * w + x as usize]
    };
    for y in 0..h {
        for x in 0..w {
            if !mask[y * w + x] {
                continue;
            }
            let (yi, xi) = (y as isize, x as isize);
            let (y0, x0, last) = (y * s, x * s, s - 1);
            for k in 0..s {
                let mut put = |dy: usize, dx: usize| {
                    out.put_pixel((x0 + dx) as u32, (y0 + dy) as u32, Rgb(OUTLINE_COLOR))
                };
                if !inside(yi - 1, xi) {
                    put(0, k);
                }
                if !inside(yi + 1, xi) {
                    put(last, k);
                }
                if !inside(yi, xi - 1) {
                    put(k, 0);
                }
                if !inside(yi, xi + 1) {
                    put(k, last);
                }
            }
        }
    }
}

/// Draws a 1-px cross centred on the scaled block of input pixel `idx`.
fn draw_marker(out: &mut RgbImage, idx: usize, w: usize, s: usize) {
    let (cx, cy) = ((idx % w) * s + s / 2, (idx / w) * s + s / 2);
    let arm = (2 * s).max(2) as isize;
    let (ow, oh) = (out.width() as isize, out.height() as isize);
    for d in -arm..=arm {
        for (x, y) in [
            (cx as isize + d, cy as isize),
            (cx as isize, cy as isize + d),
        ] {
            if (0..ow).contains(&x) && (0..oh).contains(&y) {
                out.put_pixel(x as u32, y as u32, Rgb(MARKER_COLOR));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform grey CHW image.
    fn grey(h: usize, w: usize, v: f32) -> Vec<f32> {
        vec![v; 3 * h * w]
    }

    fn panel<'a>(image: &'a [f32]) -> Panel<'a> {
        Panel {
            image,
            map: None,
            mask: None,
            mark_max: false,
        }
    }

    #[test]
    fn colormap_endpoints_hue_and_clamping() {
        let [r0, _, b0] = colormap(0.0);
        assert!(
            b0 > r0 && b0 > 100,
            "0 should be blue, got {:?}",
            colormap(0.0)
        );
        let [r1, _, b1] = colormap(1.0);
        assert!(
            r1 > b1 && r1 > 100,
            "1 should be red, got {:?}",
            colormap(1.0)
        );
        // Middle is green-ish (cyan -> yellow passes through green).
        let [r, g, b] = colormap(0.5);
        assert!(
            g > r && g > b,
            "0.5 should be green-ish, got {:?}",
            [r, g, b]
        );
        // Monotone-ish: red share rises, blue share falls along the scale.
        let steps: Vec<[u8; 3]> = (0..=20).map(|i| colormap(i as f32 / 20.0)).collect();
        for pair in steps.windows(2) {
            assert!(pair[1][0] >= pair[0][0] || pair[1][2] == 0, "{pair:?}");
            assert!(pair[1][2] <= pair[0][2] || pair[1][0] == 0, "{pair:?}");
        }
        assert!(steps[15][0] > steps[5][0] && steps[5][2] > steps[15][2]);
        assert_eq!(colormap(-3.0), colormap(0.0));
        assert_eq!(colormap(7.0), colormap(1.0));
        assert_eq!(colormap(f32::NAN), colormap(0.0));
    }

    #[test]
    fn output_size_and_plain_pixels_equal_image() {
        let (h, w) = (3, 5);
        let image: Vec<f32> = (0..3 * h * w).map(|i| i as f32 / 44.0).collect();
        let out = render_panel(&panel(&image), h, w, 4).unwrap();
        assert_eq!(out.dimensions(), (20, 12));
        for y in 0..12u32 {
            for x in 0..20u32 {
                let i = (y / 4) as usize * w + (x / 4) as usize;
                let want = [0, 1, 2].map(|c| (image[c * h * w + i] * 255.0).round() as u8);
                assert_eq!(out.get_pixel(x, y).0, want, "pixel ({x},{y})");
            }
        }
    }

    #[test]
    fn map_changes_pixels_and_constant_map_is_zero() {
        let image = grey(4, 4, 0.5);
        let map: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let p = Panel {
            map: Some(&map),
            ..panel(&image)
        };
        let out = render_panel(&p, 4, 4, 1).unwrap();
        let lo = out.get_pixel(0, 0).0;
        let hi = out.get_pixel(3, 3).0;
        assert!(lo[2] > lo[0], "min of map should be blue-tinted: {lo:?}");
        assert!(hi[0] > hi[2], "max of map should be red-tinted: {hi:?}");
        // A constant map is drawn as the all-zero map (blue) away from the hatch lines and
        // the label in the middle: check the top row, which the centred label does not reach.
        let image = grey(16, 16, 0.5);
        let flat = vec![3.0; 256];
        let p = Panel {
            map: Some(&flat),
            ..panel(&image)
        };
        let out = render_panel(&p, 16, 16, 4).unwrap();
        let c = colormap(0.0);
        let want = c.map(|c| to_u8(0.25 + 0.5 * c as f32 / 255.0));
        for x in 0..64u32 {
            let expected = if x % 8 == 0 { HATCH_COLOR } else { want };
            assert_eq!(out.get_pixel(x, 0).0, expected, "pixel ({x}, 0)");
        }
    }

    /// Pixels of `img` inside the rectangle that differ from `background`.
    fn ink(
        img: &RgbImage,
        xs: std::ops::Range<u32>,
        ys: std::ops::Range<u32>,
        background: [u8; 3],
    ) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 != background)
            .count()
    }

    #[test]
    fn constant_maps_are_recognised_up_to_rounding() {
        assert!(is_constant(&[0.0; 9]));
        assert!(is_constant(&[2.5; 9]));
        // one ulp of 1.0 apart: upsampling noise, not a peak
        assert!(is_constant(&[1.0, 1.0 + f32::EPSILON, 1.0]));
        // a tiny but real bump on zero is not constant
        assert!(!is_constant(&[0.0, 1e-30, 0.0]));
        assert!(!is_constant(&[0.0, 0.5, 0.0]));
    }

    #[test]
    fn zero_and_constant_maps_get_no_marker_but_a_hatched_label() {
        let (h, w, s) = (16, 16, 4);
        let image = grey(h, w, 0.5);
        for value in [0.0f32, 2.5] {
            let map = vec![value; h * w];
            let p = Panel {
                map: Some(&map),
                mark_max: true,
                ..panel(&image)
            };
            let out = render_panel(&p, h, w, s).unwrap();
            assert!(
                out.pixels().all(|px| px.0 != MARKER_COLOR),
                "a constant map ({value}) must not be marked"
            );
            // hatch lines: (x + y) divisible by 8 at output resolution
            assert_eq!(out.get_pixel(0, 0).0, HATCH_COLOR);
            assert_eq!(out.get_pixel(5, 3).0, HATCH_COLOR);
            // the label: light text on a dark box in the middle rows, nothing in the top row
            let middle = ink(&out, 0..64, 28..36, GRID_BACKGROUND);
            let light = (0..64u32)
                .flat_map(|x| (26..38u32).map(move |y| (x, y)))
                .filter(|&(x, y)| out.get_pixel(x, y).0.iter().all(|&c| c > 160))
                .count();
            assert!(middle > 0 && light > 20, "no label: {light} light pixels");
            assert!(out.pixels().any(|px| px.0 == GRID_BACKGROUND));
        }
        // the same panel with one bump: marked, no label box
        let mut map = vec![0.0f32; h * w];
        map[3 * w + 9] = 1.0;
        let p = Panel {
            map: Some(&map),
            mark_max: true,
            ..panel(&image)
        };
        let out = render_panel(&p, h, w, s).unwrap();
        assert_eq!(out.get_pixel(9 * 4 + 2, 3 * 4 + 2).0, MARKER_COLOR);
        assert!(
            out.pixels()
                .all(|px| px.0 != GRID_BACKGROUND && px.0 != HATCH_COLOR)
        );
    }

    #[test]
    fn column_titles_name_compression_and_regularizer() {
        assert_eq!(column_title("none", "-"), "teacher");
        assert_eq!(column_title("kd", "none"), "KD naive");
        assert_eq!(column_title("kd", "ewa"), "KD + EWA");
        assert_eq!(column_title("kd", "sswa"), "KD + SSWA");
        assert_eq!(column_title("structured", "swa"), "structured + SWA");
        assert_eq!(column_title("unstructured", "none"), "unstructured naive");
    }

    #[test]
    fn rows_every_network_gets_right_come_first() {
        // 3 networks (teacher first), 2 classes, 4 images; logit > 0 means predicted
        let k = 2;
        let logits = vec![
            //   img0         img1        img2         img3
            vec![1.0, 0.0, 0.0, 2.0, -1.0, 0.0, 3.0, 1.0], // teacher
            vec![-1.0, 0.0, 0.0, 1.0, 1.0, 0.0, -2.0, 0.5], // student a
            vec![0.5, 0.0, 0.0, 1.0, 2.0, 0.0, -1.0, 0.0], // student b (0.0 is not > 0)
        ];
        let pairs = [(0, 0), (1, 1), (2, 0), (3, 1), (3, 0)];
        // (0,0): T a- b    (1,1): all    (2,0): T- a b    (3,1): T a b-    (3,0): T a- b-
        let ids = |rows: &[RowChoice]| -> Vec<(usize, usize)> {
            rows.iter().map(|r| (r.image, r.class)).collect()
        };
        let two = choose_rows(&pairs, &logits, k, 2);
        assert_eq!(ids(&two)[0], (1, 1));
        assert!(two[0].all_correct() && !two[1].all_correct());
        // only one all-correct pair: filled with teacher-right pairs, most networks right first
        let all = choose_rows(&pairs, &logits, k, 10);
        assert_eq!(ids(&all), vec![(1, 1), (0, 0), (3, 1), (3, 0), (2, 0)]);
        assert_eq!(all[1].correct, vec![true, false, true]);
        assert_eq!(all[3].correct, vec![true, false, false]);
        assert_eq!(all[4].correct, vec![false, true, true]);
        // with two all-correct pairs, n = 2 takes exactly those, in test order
        let mut fixed = logits.clone();
        fixed[1][0] = 1.0; // student a now gets (0,0)
        let two = choose_rows(&pairs, &fixed, k, 2);
        assert_eq!(ids(&two), vec![(0, 0), (1, 1)]);
        assert!(two.iter().all(RowChoice::all_correct));
        assert!(choose_rows(&[], &logits, k, 3).is_empty());
    }

    #[test]
    fn captions_and_legend_say_which_networks_miss() {
        let titles: Vec<String> = ["teacher", "KD naive", "KD + SWA"]
            .map(String::from)
            .to_vec();
        let ok = RowChoice {
            image: 7,
            class: 1,
            correct: vec![true; 3],
        };
        let bad = RowChoice {
            image: 2,
            class: 0,
            correct: vec![true, false, false],
        };
        assert_eq!(
            row_caption(&ok, "circle", &titles),
            "test image 7, class circle"
        );
        assert_eq!(
            row_caption(&bad, "square", &titles),
            "test image 2, class square (missed by KD naive, KD + SWA)"
        );
        let plain = legend(std::slice::from_ref(&ok), false);
        assert!(plain.iter().any(|l| l.contains("white outline")));
        assert!(plain.iter().any(|l| l.contains("green cross")));
        assert!(
            !plain
                .iter()
                .any(|l| l.contains("missed") || l.contains("zero map"))
        );
        let mixed = legend(&[ok, bad], true);
        assert!(mixed.iter().any(|l| l.contains("red border")));
        assert!(mixed.iter().any(|l| l.contains("1 of 2 rows")));
        assert!(mixed.iter().any(|l| l.contains("zero map")));
    }

    #[test]
    fn missed_panels_get_a_red_border_and_tag() {
        let grey_px = [128, 128, 128];
        let mut p = RgbImage::from_pixel(80, 60, Rgb(grey_px));
        mark_missed(&mut p).unwrap();
        for (x, y) in [(0, 0), (1, 30), (79, 59), (40, 58), (78, 20)] {
            assert_eq!(p.get_pixel(x, y).0, MISSED_COLOR, "border pixel ({x},{y})");
        }
        assert_eq!(p.get_pixel(40, 40).0, grey_px);
        assert_eq!(p.get_pixel(3, 3).0, grey_px);
        // the tag: white text on red in the top-right corner, not in the top-left
        let white = (40..80u32)
            .flat_map(|x| (0..20u32).map(move |y| (x, y)))
            .filter(|&(x, y)| p.get_pixel(x, y).0.iter().all(|&c| c > 200))
            .count();
        assert!(white > 5, "no tag text: {white} white pixels");
        assert_eq!(ink(&p, 2..20, 2..20, grey_px), 0);
    }

    /// Rows of `n` uniform panels of `w` x `h`, each in its own colour (none of them the
    /// background or text colour).
    fn uniform_rows(rows: usize, n: usize, w: u32, h: u32, caption: &str) -> Vec<FigureRow> {
        (0..rows)
            .map(|_| FigureRow {
                caption: caption.into(),
                panels: (0..n)
                    .map(|j| RgbImage::from_pixel(w, h, Rgb([60 + 40 * j as u8, 90, 140])))
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn figure_has_a_title_over_every_column() {
        let (w, h) = (90u32, 50u32);
        let titles: Vec<String> = ["image", "teacher", "KD + SSWA"].map(String::from).to_vec();
        let fig = figure(&titles, &uniform_rows(2, 3, w, h, ""), &[]).unwrap();
        let bare = grid(
            &[vec![RgbImage::new(w, h); 3], vec![RgbImage::new(w, h); 3]],
            GAP,
        );
        assert!(
            fig.height() >= bare.height() + 12,
            "no room for the header: {}",
            fig.height()
        );
        assert!(fig.width() >= bare.width());
        // the first panel row starts where the first column's colour first appears
        let x_mid = GAP + w / 2;
        let top = (0..fig.height())
            .find(|&y| fig.get_pixel(x_mid, y).0 == [60, 90, 140])
            .unwrap();
        assert!(top >= 12, "panels start at {top}: no header band");
        for j in 0..3u32 {
            let x0 = GAP + j * (w + GAP);
            let xs: Vec<u32> = (x0..x0 + w)
                .filter(|&x| (0..top).any(|y| fig.get_pixel(x, y).0 != GRID_BACKGROUND))
                .collect();
            assert!(!xs.is_empty(), "no title over column {j}");
            // centred over its column
            let centre = (xs[0] + xs[xs.len() - 1]) as f64 / 2.0;
            let want = (x0 + w / 2) as f64;
            assert!(
                (centre - want).abs() <= 4.0,
                "column {j}: title centre {centre}, column {want}"
            );
        }
        // without titles the header band stays empty
        let untitled = figure(&[], &uniform_rows(2, 3, w, h, ""), &[]).unwrap();
        assert_eq!(
            ink(&untitled, 0..untitled.width(), 0..top, GRID_BACKGROUND),
            0
        );
    }

    #[test]
    fn figure_captions_rows_and_ends_with_a_legend_and_colorbar() {
        let (w, h) = (90u32, 50u32);
        let titles: Vec<String> = ["image", "teacher"].map(String::from).to_vec();
        let plain = figure(&titles, &uniform_rows(2, 2, w, h, ""), &[]).unwrap();
        let captioned = figure(
            &titles,
            &uniform_rows(2, 2, w, h, "test image 3, class circle"),
            &[],
        )
        .unwrap();
        assert_eq!(plain.dimensions(), captioned.dimensions());
        // captions change only pixels outside the panels: find the panel rows first
        let x_mid = GAP + w / 2;
        let panel_rows: Vec<u32> = (0..plain.height())
            .filter(|&y| plain.get_pixel(x_mid, y).0 == [60, 90, 140])
            .collect();
        assert_eq!(panel_rows.len(), 2 * h as usize);
        let second_top = panel_rows[h as usize];
        let diff_above = |y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (0..plain.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| plain.get_pixel(x, y) != captioned.get_pixel(x, y))
                .count()
        };
        assert!(diff_above(0, panel_rows[0]) > 20, "no caption above row 1");
        assert!(
            diff_above(panel_rows[0] + h, second_top) > 20,
            "no caption above row 2"
        );
        for &y in &panel_rows {
            assert_eq!(diff_above(y, y + 1), 0, "a caption drew over panel row {y}");
        }
        // a legend makes the figure taller and wider when its lines are long
        let lines =
            vec!["white outline: ground-truth mask of the row's class, a long line".to_string()];
        let with_legend = figure(&titles, &uniform_rows(2, 2, w, h, ""), &lines).unwrap();
        assert!(with_legend.height() > plain.height());
        assert!(with_legend.width() > plain.width());
        // the colorbar: jet from blue (left) to red (right) below the last panel row
        let below = panel_rows[panel_rows.len() - 1] + 1;
        let find = |img: &RgbImage, c: [u8; 3]| {
            (below..img.height())
                .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
                .find(|&(x, y)| img.get_pixel(x, y).0 == c)
        };
        for img in [&plain, &with_legend] {
            let low = find(img, colormap(0.0)).expect("colorbar low end");
            let high = find(img, colormap(1.0)).expect("colorbar high end");
            assert!(high.0 > low.0 + 50, "low {low:?} high {high:?}");
        }
    }

    #[test]
    fn outline_is_exactly_the_square_border() {
        let (h, w) = (8, 8);
        let image = grey(h, w, 0.2);
        let mask: Vec<bool> = (0..h * w)
            .map(|i| (2..6).contains(&(i / w)) && (2..6).contains(&(i % w)))
            .collect();
        let p = Panel {
            mask: Some(&mask),
            ..panel(&image)
        };
        let out = render_panel(&p, h, w, 1).unwrap();
        let plain = [51, 51, 51];
        for y in 0..8u32 {
            for x in 0..8u32 {
                let in_sq = (2..6).contains(&y) && (2..6).contains(&x);
                let border = in_sq && (y == 2 || y == 5 || x == 2 || x == 5);
                let want = if border { OUTLINE_COLOR } else { plain };
                assert_eq!(out.get_pixel(x, y).0, want, "pixel ({x},{y})");
            }
        }
        // At scale 3 the outline is a 1-px ring on the inner edge of the scaled square.
        let out = render_panel(&p, h, w, 3).unwrap();
        for y in 0..24u32 {
            for x in 0..24u32 {
                let in_sq = (6..18).contains(&y) && (6..18).contains(&x);
                let border = in_sq && (y == 6 || y == 17 || x == 6 || x == 17);
                let want = if border { OUTLINE_COLOR } else { plain };
                assert_eq!(out.get_pixel(x, y).0, want, "scaled pixel ({x},{y})");
            }
        }
    }

    #[test]
    fn outline_at_image_border() {
        let image = grey(3, 3, 0.0);
        let mask = vec![true; 9];
        let p = Panel {
            mask: Some(&mask),
            ..panel(&image)
        };
        let out = render_panel(&p, 3, 3, 1).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, OUTLINE_COLOR);
        assert_eq!(out.get_pixel(1, 1).0, [0, 0, 0]);
    }

    #[test]
    fn marker_at_first_argmax() {
        let (h, w) = (8, 8);
        let image = grey(h, w, 0.5);
        let mut map = vec![0.0f32; h * w];
        map[5 * w + 3] = 2.0; // first max, (x=3, y=5)
        map[6 * w + 6] = 2.0; // tie later in row-major order
        let p = Panel {
            map: Some(&map),
            mark_max: true,
            ..panel(&image)
        };
        let out = render_panel(&p, h, w, 1).unwrap();
        assert_eq!(out.get_pixel(3, 5).0, MARKER_COLOR);
        assert_ne!(out.get_pixel(6, 6).0, MARKER_COLOR);
        // Arms of the cross, nothing on the diagonal.
        assert_eq!(out.get_pixel(1, 5).0, MARKER_COLOR);
        assert_eq!(out.get_pixel(3, 7).0, MARKER_COLOR);
        assert_ne!(out.get_pixel(4, 6).0, MARKER_COLOR);
        // Scaled: centre of the block.
        let out = render_panel(&p, h, w, 4).unwrap();
        assert_eq!(out.get_pixel(3 * 4 + 2, 5 * 4 + 2).0, MARKER_COLOR);
        assert_ne!(out.get_pixel(3 * 4 + 1, 5 * 4 + 1).0, MARKER_COLOR);
        // Without mark_max there is no marker.
        let out = render_panel(
            &Panel {
                mark_max: false,
                ..p
            },
            h,
            w,
            1,
        )
        .unwrap();
        assert!(out.pixels().all(|px| px.0 != MARKER_COLOR));
    }

    #[test]
    fn grid_size_and_placement() {
        let a = RgbImage::from_pixel(10, 6, Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(4, 9, Rgb([0, 0, 255]));
        let rows = vec![vec![a.clone(), b.clone()], vec![a.clone()], vec![]];
        let g = grid(&rows, 2);
        // width: 2 + (10+2) + (4+2) = 20; height: 2 + (9+2) + (6+2) = 21
        assert_eq!(g.dimensions(), (20, 21));
        assert_eq!(g.get_pixel(0, 0).0, GRID_BACKGROUND);
        assert_eq!(g.get_pixel(2, 2).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(11, 7).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(12, 2).0, GRID_BACKGROUND);
        assert_eq!(g.get_pixel(14, 10).0, [0, 0, 255]);
        assert_eq!(g.get_pixel(2, 13).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(14, 13).0, GRID_BACKGROUND);
        assert_eq!(grid(&[vec![a.clone(), b]], 0).dimensions(), (14, 9));
        assert_eq!(grid(&[], 3).dimensions(), (3, 3));
    }

    #[test]
    fn length_mismatches_and_bad_maps_are_errors() {
        let image = grey(4, 4, 0.5);
        let err = render_panel(&panel(&image[..47]), 4, 4, 1).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("48") && msg.contains("47"), "{msg}");
        let short_map = vec![0.0; 15];
        let p = Panel {
            map: Some(&short_map),
            ..panel(&image)
        };
        let msg = render_panel(&p, 4, 4, 1).unwrap_err().to_string();
        assert!(msg.contains("16") && msg.contains("15"), "{msg}");
        let short_mask = vec![true; 17];
        let p = Panel {
            mask: Some(&short_mask),
            ..panel(&image)
        };
        let msg = render_panel(&p, 4, 4, 1).unwrap_err().to_string();
        assert!(msg.contains("16") && msg.contains("17"), "{msg}");
        let mut nan_map = vec![0.0; 16];
        nan_map[7] = f32::NAN;
        let p = Panel {
            map: Some(&nan_map),
            ..panel(&image)
        };
        assert!(render_panel(&p, 4, 4, 1).is_err());
        assert!(render_panel(&panel(&image), 4, 4, 0).is_err());
        assert!(render_panel(&panel(&[]), 0, 4, 1).is_err());
    }

    #[test]
    fn save_png_round_trip() {
        let (h, w) = (5, 7);
        let image: Vec<f32> = (0..3 * h * w).map(|i| (i % 11) as f32 / 10.0).collect();
        let map: Vec<f32> = (0..h * w).map(|i| (i as f32).sin()).collect();
        let mask: Vec<bool> = (0..h * w).map(|i| i % 3 == 0).collect();
        let p = Panel {
            image: &image,
            map: Some(&map),
            mask: Some(&mask),
            mark_max: true,
        };
        let img = render_panel(&p, h, w, 2).unwrap();
        let dir = std::env::temp_dir().join(format!("faithful-overlay-{}", std::process::id()));
        let path = dir.join("sub").join("panel.png");
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn caption_text_lists_columns_then_rows() {
        let titles: Vec<String> = ["image", "teacher", "KD naive"].map(String::from).to_vec();
        let rows = vec![
            FigureRow {
                caption: "test image 1, class circle".into(),
                panels: vec![],
            },
            FigureRow {
                caption: "test image 4, class bar (missed by KD naive)".into(),
                panels: vec![],
            },
        ];
        assert_eq!(
            caption_text(&titles, &rows),
            "columns: image, teacher, KD naive\nrows:\ntest image 1, class circle\n\
             test image 4, class bar (missed by KD naive)\n"
        );
    }

    /// A disc of `radius` around (cx, cy) on a `side` x `side` grid.
    fn disc(side: usize, cx: f32, cy: f32, radius: f32) -> Vec<bool> {
        (0..side * side)
            .map(|i| {
                let (x, y) = ((i % side) as f32, (i / side) as f32);
                (x - cx).powi(2) + (y - cy).powi(2) <= radius * radius
            })
            .collect()
    }

    /// A whole figure as `draw_overlays` builds it (demo --quick sizes: 32 px at scale 4, six
    /// columns), with a missed class and a zero map. Set `FAITHFUL_PREVIEW_DIR` to keep the PNG.
    #[test]
    fn a_full_figure_renders_and_can_be_previewed() {
        let side = 32;
        let names = [
            ("none", "-"),
            ("kd", "none"),
            ("kd", "ewa"),
            ("kd", "swa"),
            ("kd", "sswa"),
        ];
        let titles: Vec<String> = std::iter::once("image".to_string())
            .chain(names.iter().map(|(c, r)| column_title(c, r)))
            .collect();
        let choices = [
            RowChoice {
                image: 12,
                class: 0,
                correct: vec![true; 5],
            },
            RowChoice {
                image: 40,
                class: 3,
                correct: vec![true, true, false, true, true],
            },
        ];
        let mut rows = Vec::new();
        for (r, choice) in choices.iter().enumerate() {
            let (cx, cy) = (10.0 + 10.0 * r as f32, 14.0);
            let mask = disc(side, cx, cy, 6.0);
            let image: Vec<f32> = (0..3 * side * side)
                .map(|i| {
                    if mask[i % (side * side)] {
                        0.8
                    } else {
                        0.25 + 0.1 * (i / (side * side)) as f32
                    }
                })
                .collect();
            let plain = Panel {
                image: &image,
                map: None,
                mask: Some(&mask),
                mark_max: false,
            };
            let mut panels = vec![render_panel(&plain, side, side, 4).unwrap()];
            for (n, &right) in choice.correct.iter().enumerate() {
                let map: Vec<f32> = if !right {
                    vec![0.0; side * side]
                } else {
                    (0..side * side)
                        .map(|i| {
                            let (x, y) = ((i % side) as f32, (i / side) as f32);
                            let (px, py) = (cx + n as f32, cy - n as f32 / 2.0);
                            (-((x - px).powi(2) + (y - py).powi(2)) / 30.0).exp()
                        })
                        .collect()
                };
                let p = Panel {
                    map: Some(&map),
                    mark_max: true,
                    ..plain
                };
                let mut panel = render_panel(&p, side, side, 4).unwrap();
                if !right {
                    mark_missed(&mut panel).unwrap();
                }
                panels.push(panel);
            }
            rows.push(FigureRow {
                caption: row_caption(
                    choice,
                    ["circle", "square", "bar", "triangle"][choice.class],
                    &titles[1..],
                ),
                panels,
            });
        }
        let fig = figure(&titles, &rows, &legend(&choices, true)).unwrap();
        if let Ok(dir) = std::env::var("FAITHFUL_PREVIEW_DIR") {
            save_png(&fig, &Path::new(&dir).join("overlay-figure.png")).unwrap();
            let mut small = Vec::new();
            for n in [0, 1] {
                let map = vec![n as f32; 32 * 32];
                let image = vec![0.4; 3 * 32 * 32];
                let p = Panel {
                    image: &image,
                    map: Some(&map),
                    mask: None,
                    mark_max: true,
                };
                small.push(render_panel(&p, 32, 32, 1).unwrap());
                small.push(render_panel(&p, 32, 32, 3).unwrap());
            }
            save_png(&grid(&[small], 4), &Path::new(&dir).join("zero-panels.png")).unwrap();
        }
        // six columns of 128 px panels and the gaps: the panels set the width
        assert_eq!(fig.width(), GAP + 6 * (128 + GAP));
        assert!(fig.height() > GAP + 2 * (128 + GAP) + 4 * 13);
        assert!(fig.pixels().any(|p| p.0 == MISSED_COLOR));
        assert!(fig.pixels().any(|p| p.0 == MARKER_COLOR));
    }
}
