//! Localization metrics: how well an attribution map finds the annotated object.
//!
//! Maps and masks are row-major `height × width` slices of the same length. The
//! optional `ignore` mask (e.g. VOC's "void" border) removes pixels from a metric
//! entirely.

use super::check;
use super::error::{MetricError, MetricResult};

/// Exact pixel ROC-AUC of `scores` against the `positives` mask.
///
/// Computed as the Mann–Whitney statistic with mid-ranks: the fraction of
/// (positive, negative) pixel pairs where the positive scores higher, a tie counting
/// 1/2. O(n log n) by sorting. Pixels with `ignore == true` are left out. `Ok(None)`
/// when the kept pixels hold no positive or no negative. Errors on length mismatch or NaN.
pub fn roc_auc(
    scores: &[f32],
    positives: &[bool],
    ignore: Option<&[bool]>,
) -> MetricResult<Option<f64>> {
    check::same_len("positives", scores.len(), positives.len())?;
    check::ignore_len(ignore, scores.len())?;
    check::no_nan("scores", scores)?;
    let mut kept: Vec<(f32, bool)> = (0..scores.len())
        .filter(|&i| !check::is_ignored(ignore, i))
        .map(|i| (scores[i], positives[i]))
        .collect();
    let n_pos = kept.iter().filter(|p| p.1).count();
    let n_neg = kept.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    kept.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Some(pairwise_wins(&kept) / (n_pos as f64 * n_neg as f64)))
}

/// Σ over positives of (#negatives strictly below + ½ #negatives tied), for pixels
/// sorted by ascending score. This equals the mid-rank Mann–Whitney U.
fn pairwise_wins(sorted: &[(f32, bool)]) -> f64 {
    let mut wins = 0.0_f64;
    let mut negatives_below = 0usize;
    let mut start = 0;
    while start < sorted.len() {
        let score = sorted[start].0;
        let end = start + sorted[start..].iter().take_while(|p| p.0 == score).count();
        let pos = sorted[start..end].iter().filter(|p| p.1).count();
        let neg = (end - start) - pos;
        wins += pos as f64 * (negatives_below as f64 + 0.5 * neg as f64);
        negatives_below += neg;
        start = end;
    }
    wins
}

/// `(row, col)` of the maximum of a row-major map with `width` columns.
///
/// On ties the first maximum in row-major order wins. Errors on an empty map, a length
/// that is not a multiple of `width`, or NaN.
pub fn argmax_2d(map: &[f32], width: usize) -> MetricResult<(usize, usize)> {
    argmax_2d_masked(map, width, None)
}

/// [`argmax_2d`] restricted to pixels not marked in `ignore` (the point the pointing
/// game uses). Errors as `argmax_2d`, and when every pixel is ignored.
pub fn argmax_2d_masked(
    map: &[f32],
    width: usize,
    ignore: Option<&[bool]>,
) -> MetricResult<(usize, usize)> {
    check::grid_height("map", map.len(), width)?;
    check::ignore_len(ignore, map.len())?;
    check::no_nan("map", map)?;
    let mut best: Option<usize> = None;
    for (i, &v) in map.iter().enumerate() {
        if check::is_ignored(ignore, i) {
            continue;
        }
        // Strictly greater: the first maximum in row-major order is kept.
        if best.is_none_or(|b| v > map[b]) {
            best = Some(i);
        }
    }
    best.map(|i| (i / width, i % width))
        .ok_or(MetricError::Empty {
            what: "map pixels outside the ignore mask",
        })
}

/// Pointing game: does the map's maximum land on the object?
///
/// The maximum is taken over non-ignored pixels, first in row-major order on ties
/// (see [`argmax_2d_masked`]). It is a hit if a non-ignored positive pixel lies within
/// Euclidean distance ≤ `tolerance_px` of it (`tolerance_px = 0` means the maximum
/// pixel itself must be positive). Errors on shape/length mismatch, NaN, a negative or
/// non-finite tolerance, or when every pixel is ignored.
pub fn pointing_hit(
    map: &[f32],
    width: usize,
    positives: &[bool],
    ignore: Option<&[bool]>,
    tolerance_px: f32,
) -> MetricResult<bool> {
    check::same_len("positives", map.len(), positives.len())?;
    if !tolerance_px.is_finite() || tolerance_px < 0.0 {
        return Err(MetricError::InvalidParameter {
            what: "tolerance_px",
            detail: "must be finite and >= 0",
        });
    }
    let (row, col) = argmax_2d_masked(map, width, ignore)?;
    let height = map.len() / width;
    let tol = f64::from(tolerance_px);
    // Integer offsets within distance tol are bounded by floor(tol) on each axis.
    let reach = tol.floor() as usize;
    let rows = row.saturating_sub(reach)..=row.saturating_add(reach).min(height - 1);
    for r in rows {
        let cols = col.saturating_sub(reach)..=col.saturating_add(reach).min(width - 1);
        for c in cols {
            let i = r * width + c;
            if positives[i]
                && !check::is_ignored(ignore, i)
                && squared_distance(row, col, r, c) <= tol * tol
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Squared Euclidean distance between two pixel positions.
fn squared_distance(r0: usize, c0: usize, r1: usize, c1: usize) -> f64 {
    let dr = r0.abs_diff(r1) as f64;
    let dc = c0.abs_diff(c1) as f64;
    dr * dr + dc * dc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    /// Tiny deterministic LCG (Numerical Recipes constants).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }
    }

    fn brute_force_auc(scores: &[f32], pos: &[bool]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if pos[i] && !pos[j] {
                    pairs += 1.0;
                    if si > sj {
                        wins += 1.0;
                    } else if si == sj {
                        wins += 0.5;
                    }
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn auc_extremes_and_constant() {
        let pos = [true, true, false, false];
        close(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &pos, None).unwrap().unwrap(),
            1.0,
        );
        close(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &pos, None).unwrap().unwrap(),
            0.0,
        );
        close(roc_auc(&[0.5; 4], &pos, None).unwrap().unwrap(), 0.5);
    }

    #[test]
    fn auc_hand_case_with_ties() {
        // pos {0.5, 0.8}, neg {0.5, 0.2}: pairs (0.5,0.5)=½, (0.5,0.2)=1, (0.8,0.5)=1,
        // (0.8,0.2)=1 → 3.5 / 4 = 0.875.
        let s = [0.5, 0.8, 0.5, 0.2];
        let p = [true, true, false, false];
        close(roc_auc(&s, &p, None).unwrap().unwrap(), 0.875);
    }

    #[test]
    fn auc_invariant_under_monotone_transform_and_matches_brute_force() {
        let mut rng = Lcg(42);
        let n = 300;
        // Quantised scores so that many ties occur.
        let scores: Vec<f32> = (0..n).map(|_| (rng.next() % 20) as f32 / 20.0).collect();
        let pos: Vec<bool> = scores
            .iter()
            .map(|&s| (rng.next() % 100) as f32 / 100.0 < 0.3 + 0.5 * s)
            .collect();
        let auc = roc_auc(&scores, &pos, None).unwrap().unwrap();
        close(auc, brute_force_auc(&scores, &pos));
        assert!(auc > 0.5, "signal should be detected, got {auc}");
        let transformed: Vec<f32> = scores.iter().map(|&s| (3.0 * s).exp() - 7.0).collect();
        close(roc_auc(&transformed, &pos, None).unwrap().unwrap(), auc);
    }

    #[test]
    fn auc_ignore_mask_excludes_pixels() {
        // Without the mask the negative at 0.9 ruins the ranking; ignoring it gives 1.
        let s = [0.8, 0.7, 0.9, 0.1];
        let p = [true, true, false, false];
        close(roc_auc(&s, &p, None).unwrap().unwrap(), 0.5);
        let ig = [false, false, true, false];
        close(roc_auc(&s, &p, Some(&ig)).unwrap().unwrap(), 1.0);
        // Ignoring all negatives leaves AUC undefined.
        let ig_all_neg = [false, false, true, true];
        assert_eq!(roc_auc(&s, &p, Some(&ig_all_neg)), Ok(None));
    }

    #[test]
    fn auc_undefined_and_errors() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false], None), Ok(None));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true], None), Ok(None));
        assert!(roc_auc(&[0.1, 0.2], &[true], None).is_err());
        assert!(roc_auc(&[0.1, 0.2], &[true, false], Some(&[false])).is_err());
        assert!(roc_auc(&[f32::NAN, 0.2], &[true, false], None).is_err());
    }

    #[test]
    fn argmax_first_on_ties() {
        // 3 × 3 map, equal maxima at (0, 2) and (2, 0): the row-major first wins.
        let map = [0.0, 0.1, 0.9, 0.2, 0.3, 0.4, 0.9, 0.5, 0.6];
        assert_eq!(argmax_2d(&map, 3), Ok((0, 2)));
        assert_eq!(argmax_2d(&[1.0, 2.0, 3.0, 4.0, 5.0, 0.0], 3), Ok((1, 1)));
        assert!(argmax_2d(&map, 4).is_err());
        assert!(argmax_2d(&[], 3).is_err());
        assert!(argmax_2d(&[1.0, f32::NAN], 2).is_err());
    }

    #[test]
    fn pointing_hit_miss_and_tie() {
        let mut map = [0.0_f32; 9];
        map[4] = 1.0; // maximum at (1, 1)
        let mut pos = [false; 9];
        pos[4] = true;
        assert_eq!(pointing_hit(&map, 3, &pos, None, 0.0), Ok(true));
        let mut pos_corner = [false; 9];
        pos_corner[0] = true;
        assert_eq!(pointing_hit(&map, 3, &pos_corner, None, 0.0), Ok(false));
        // Tie between (0, 2) and (2, 0): only the first, (0, 2), is tested.
        let tied = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let mut pos_first = [false; 9];
        pos_first[2] = true;
        let mut pos_second = [false; 9];
        pos_second[6] = true;
        assert_eq!(pointing_hit(&tied, 3, &pos_first, None, 0.0), Ok(true));
        assert_eq!(pointing_hit(&tied, 3, &pos_second, None, 0.0), Ok(false));
    }

    #[test]
    fn pointing_tolerance() {
        // Maximum at (1, 1) of a 3 × 3 map; the only positive is (0, 0) at distance √2.
        let mut map = [0.0_f32; 9];
        map[4] = 1.0;
        let mut pos = [false; 9];
        pos[0] = true;
        assert_eq!(pointing_hit(&map, 3, &pos, None, 1.0), Ok(false));
        assert_eq!(pointing_hit(&map, 3, &pos, None, 1.41), Ok(false));
        assert_eq!(pointing_hit(&map, 3, &pos, None, 1.415), Ok(true));
        // Positive at (1, 0), distance exactly 1: the bound is inclusive.
        let mut pos_side = [false; 9];
        pos_side[3] = true;
        assert_eq!(pointing_hit(&map, 3, &pos_side, None, 1.0), Ok(true));
        // A huge tolerance reaches everything but still needs a positive.
        assert_eq!(pointing_hit(&map, 3, &pos, None, 1e30), Ok(true));
        assert_eq!(pointing_hit(&map, 3, &[false; 9], None, 1e30), Ok(false));
    }

    #[test]
    fn pointing_ignore_mask() {
        // The global maximum (1, 1) is ignored, so the next one, (2, 2), is used.
        let map = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5];
        let mut ignore = [false; 9];
        ignore[4] = true;
        let mut pos = [false; 9];
        pos[8] = true;
        assert_eq!(argmax_2d_masked(&map, 3, Some(&ignore)), Ok((2, 2)));
        assert_eq!(pointing_hit(&map, 3, &pos, None, 0.0), Ok(false));
        assert_eq!(pointing_hit(&map, 3, &pos, Some(&ignore), 0.0), Ok(true));
        // An ignored positive never counts, even within the tolerance.
        let mut pos_side = [false; 9];
        pos_side[3] = true; // (1, 0), distance 1 from the maximum (1, 1)
        let mut ignore_side = [false; 9];
        ignore_side[3] = true;
        assert_eq!(pointing_hit(&map, 3, &pos_side, None, 1.0), Ok(true));
        assert_eq!(
            pointing_hit(&map, 3, &pos_side, Some(&ignore_side), 1.0),
            Ok(false)
        );
        assert!(pointing_hit(&map, 3, &[true; 9], Some(&[true; 9]), 0.0).is_err());
    }

    #[test]
    fn pointing_errors() {
        let map = [0.0_f32; 4];
        assert!(pointing_hit(&map, 2, &[false; 3], None, 0.0).is_err());
        assert!(pointing_hit(&map, 3, &[false; 4], None, 0.0).is_err());
        assert!(pointing_hit(&map, 2, &[false; 4], None, -1.0).is_err());
        assert!(pointing_hit(&map, 2, &[false; 4], None, f32::NAN).is_err());
        assert!(pointing_hit(&map, 2, &[false; 4], Some(&[false; 2]), 0.0).is_err());
    }
}
