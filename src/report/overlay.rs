//! Heat-map overlay images: an input image blended with a colormapped attribution
//! map, the ground-truth mask outline and a marker at the map's maximum, plus a grid
//! layout and an atomic PNG writer. No text is drawn; the Markdown report captions.

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
/// Background colour of [`grid`] (shows through the gaps).
pub const GRID_BACKGROUND: [u8; 3] = [40, 40, 40];

/// One panel of an overlay figure.
#[derive(Debug, Clone, Copy)]
pub struct Panel<'a> {
    /// CHW RGB image in [0, 1], length `3 * h * w`.
    pub image: &'a [f32],
    /// Attribution map at image resolution (`h * w`), any range; min-max normalised
    /// inside, a constant map becomes all zeros.
    pub map: Option<&'a [f32]>,
    /// Ground-truth mask (`h * w`); its outline is drawn in white.
    pub mask: Option<&'a [bool]>,
    /// Draw a marker at the map's argmax (first maximum in row-major order); ignored
    /// when there is no map.
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
/// scaling as 1-px lines at output resolution.
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
    if let Some(mask) = p.mask {
        draw_outline(&mut out, mask, h, w, s);
    }
    if let (Some(norm), true) = (&norm, p.mark_max) {
        draw_marker(&mut out, argmax(norm), w, s);
    }
    Ok(out)
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

/// Min-max normalises the map to [0, 1]; constant map -> zeros; non-finite -> error.
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
    Ok(if range > 0.0 {
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
        // A constant map equals the all-zero map (blue everywhere).
        let flat = vec![3.0; 16];
        let p = Panel {
            map: Some(&flat),
            ..panel(&image)
        };
        let out = render_panel(&p, 4, 4, 1).unwrap();
        let c = colormap(0.0);
        let want = c.map(|c| to_u8(0.25 + 0.5 * c as f32 / 255.0));
        assert!(out.pixels().all(|px| px.0 == want));
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
}
