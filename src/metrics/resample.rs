//! Resizing and rescaling of attribution maps.

use super::check;
use super::error::{MetricError, MetricResult};

/// Resizes a row-major `h × w` map to `out_h × out_w` by bilinear interpolation.
///
/// Matches PyTorch `F.interpolate(mode="bilinear", align_corners=False)` with an
/// explicit output size: source coordinate = (dst + 0.5) · in/out − 0.5, clamped at 0
/// from below, neighbour indices clamped at the border. Works for shrinking too (like
/// PyTorch, without antialiasing). Errors on zero sizes, a length other than `h · w`,
/// or NaN/infinite values.
pub fn upsample_bilinear(
    map: &[f32],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> MetricResult<Vec<f32>> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(MetricError::InvalidShape {
            what: "upsample_bilinear",
            detail: format!("sizes must be positive, got {h} x {w} -> {out_h} x {out_w}"),
        });
    }
    let in_len = check::area("input map", h, w)?;
    check::area("output map", out_h, out_w)?;
    check::same_len("map", in_len, map.len())?;
    check::all_finite("map", map)?;
    let rows = source_taps(h, out_h);
    let cols = source_taps(w, out_w);
    let at = |r: usize, c: usize| f64::from(map[r * w + c]);
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in &rows {
        for x in &cols {
            let top = (1.0 - x.frac) * at(y.lo, x.lo) + x.frac * at(y.lo, x.hi);
            let bottom = (1.0 - x.frac) * at(y.hi, x.lo) + x.frac * at(y.hi, x.hi);
            out.push(((1.0 - y.frac) * top + y.frac * bottom) as f32);
        }
    }
    Ok(out)
}

/// Rescales a map in place to [0, 1] by (v − min) / (max − min).
///
/// A constant map becomes all zeros; an empty map is left as is. Errors on NaN or
/// infinite values (the map is then left unchanged).
pub fn min_max_normalize(map: &mut [f32]) -> MetricResult<()> {
    check::all_finite("map", map)?;
    let (min, max) = map
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
    let range = max - min;
    for v in map.iter_mut() {
        *v = if range > 0.0 {
            ((f64::from(*v) - min) / range).clamp(0.0, 1.0) as f32
        } else {
            0.0
        };
    }
    Ok(())
}

/// The two source samples and the weight of the second for one output index.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    frac: f64,
}

/// PyTorch's `align_corners=False` source positions along one axis (`in_len`, `out_len` > 0).
fn source_taps(in_len: usize, out_len: usize) -> Vec<Tap> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|dst| {
            let src = ((dst as f64 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(in_len - 1);
            let hi = (lo + 1).min(in_len - 1);
            Tap {
                lo,
                hi,
                frac: src - lo as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_all(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn two_by_two_to_four_by_four_by_hand() {
        // Scale 1/2: dst 0..4 → src max(0, -0.25)=0, 0.25, 0.75, 1.25 (→ clamped to index 1).
        // Row 0 of [[0,1],[2,3]]: [0, 0.25, 0.75, 1]; row 1 (src 0.25): 0.75·row0 + 0.25·[2,2.25,2.75,3].
        let out = upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4).unwrap();
        #[rustfmt::skip]
        let expected = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        close_all(&out, &expected);
    }

    #[test]
    fn non_integer_ratio_and_downsampling() {
        // 1 × 3 → 1 × 2: scale 1.5, src = 0.25 and 1.75 → [2.5, 17.5].
        close_all(
            &upsample_bilinear(&[0.0, 10.0, 20.0], 1, 3, 1, 2).unwrap(),
            &[2.5, 17.5],
        );
        // 1 × 2 → 1 × 3: scale 2/3, src = max(0, -1/6)=0, 0.5, 7/6 → clamped [0, 5, 10].
        close_all(
            &upsample_bilinear(&[0.0, 10.0], 1, 2, 1, 3).unwrap(),
            &[0.0, 5.0, 10.0],
        );
    }

    #[test]
    fn constant_and_identity() {
        let out = upsample_bilinear(&[0.7; 6], 2, 3, 7, 5).unwrap();
        close_all(&out, &[0.7; 35]);
        let map: Vec<f32> = (0..12).map(|i| (i * i) as f32 * 0.1).collect();
        assert_eq!(upsample_bilinear(&map, 3, 4, 3, 4).unwrap(), map);
    }

    #[test]
    fn upsample_errors() {
        assert!(upsample_bilinear(&[0.0; 4], 2, 2, 0, 4).is_err());
        assert!(upsample_bilinear(&[0.0; 3], 2, 2, 4, 4).is_err());
        assert!(upsample_bilinear(&[0.0, f32::NAN, 0.0, 0.0], 2, 2, 4, 4).is_err());
    }

    #[test]
    fn min_max() {
        let mut m = [2.0, 4.0, 3.0, 6.0];
        min_max_normalize(&mut m).unwrap();
        close_all(&m, &[0.0, 0.5, 0.25, 1.0]);
        let mut c = [5.0; 3];
        min_max_normalize(&mut c).unwrap();
        assert_eq!(c, [0.0; 3]);
        let mut e: [f32; 0] = [];
        min_max_normalize(&mut e).unwrap();
        let mut bad = [1.0, f32::NAN];
        assert!(min_max_normalize(&mut bad).is_err());
        assert_eq!(bad[0], 1.0);
    }
}
