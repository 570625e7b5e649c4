//! Similarity between two attribution maps of the same shape (e.g. teacher vs. student).

use super::check;
use super::error::MetricResult;

/// Cosine similarity a·b / (‖a‖‖b‖), accumulated in f64.
///
/// If both maps are all-zero the result is 1.0 (two dead maps agree). If exactly one
/// is all-zero the result is 0.0: a dead map carries no attribution at all, so it is
/// treated as maximally unlike a live (typically non-negative) one. Errors on length
/// mismatch, empty input, or NaN/infinite values.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> MetricResult<f64> {
    check_pair(a, b)?;
    let (na, nb) = (norm(a), norm(b));
    Ok(match (na == 0.0, nb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        (false, false) => (dot(a, b) / (na * nb)).clamp(-1.0, 1.0),
    })
}

/// Euclidean distance between the L2-normalised maps, ‖a/‖a‖ − b/‖b‖‖₂ (not squared).
///
/// An all-zero map normalises to the zero vector. The range is [0, 2], and [0, √2]
/// for non-negative maps; for two non-zero maps l2² = 2 − 2·cos. Errors as
/// [`cosine_similarity`].
pub fn normalized_l2(a: &[f32], b: &[f32]) -> MetricResult<f64> {
    check_pair(a, b)?;
    let (sa, sb) = (inverse_or_zero(norm(a)), inverse_or_zero(norm(b)));
    let squared: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) * sa - f64::from(y) * sb;
            d * d
        })
        .sum();
    Ok(squared.sqrt())
}

/// Same length, non-empty, finite.
fn check_pair(a: &[f32], b: &[f32]) -> MetricResult<()> {
    check::same_len("second map", a.len(), b.len())?;
    check::non_empty("map", a)?;
    check::all_finite("first map", a)?;
    check::all_finite("second map", b)
}

/// Euclidean norm in f64.
fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// Dot product in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// 1/x, or 0 for x = 0 (so a zero map stays zero).
fn inverse_or_zero(x: f64) -> f64 {
    if x > 0.0 { 1.0 / x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    const A: [f32; 5] = [0.1, 0.7, 0.0, 2.5, 1.2];
    const B: [f32; 5] = [0.3, 0.2, 0.9, 1.0, 0.0];

    #[test]
    fn hand_case() {
        // a = [1, 2, 2] (‖a‖ = 3), b = [2, 0, 0] (‖b‖ = 2): cos = 2/6 = 1/3.
        // a/‖a‖ − b/‖b‖ = [1/3 − 1, 2/3, 2/3] → squared norm 4/9 + 4/9 + 4/9 = 4/3.
        close(
            cosine_similarity(&[1.0, 2.0, 2.0], &[2.0, 0.0, 0.0]).unwrap(),
            1.0 / 3.0,
        );
        close(
            normalized_l2(&[1.0, 2.0, 2.0], &[2.0, 0.0, 0.0]).unwrap(),
            (4.0_f64 / 3.0).sqrt(),
        );
    }

    #[test]
    fn symmetric_and_scale_invariant() {
        let cos = cosine_similarity(&A, &B).unwrap();
        let l2 = normalized_l2(&A, &B).unwrap();
        close(cosine_similarity(&B, &A).unwrap(), cos);
        close(normalized_l2(&B, &A).unwrap(), l2);
        let a3: Vec<f32> = A.iter().map(|v| v * 3.0).collect();
        close(cosine_similarity(&a3, &B).unwrap(), cos);
        close(normalized_l2(&a3, &B).unwrap(), l2);
        // l2² = 2 − 2 cos for non-zero maps.
        close(l2 * l2, 2.0 - 2.0 * cos);
    }

    #[test]
    fn identical_and_orthogonal() {
        close(cosine_similarity(&A, &A).unwrap(), 1.0);
        close(normalized_l2(&A, &A).unwrap(), 0.0);
        let x = [1.0, 0.0, 2.0, 0.0];
        let y = [0.0, 3.0, 0.0, 0.5];
        close(cosine_similarity(&x, &y).unwrap(), 0.0);
        close(normalized_l2(&x, &y).unwrap(), 2.0_f64.sqrt());
        // Opposite maps reach the upper end of the range.
        let neg: Vec<f32> = A.iter().map(|v| -v).collect();
        close(cosine_similarity(&A, &neg).unwrap(), -1.0);
        close(normalized_l2(&A, &neg).unwrap(), 2.0);
    }

    #[test]
    fn zero_maps() {
        let z = [0.0_f32; 5];
        close(cosine_similarity(&z, &z).unwrap(), 1.0);
        close(cosine_similarity(&z, &A).unwrap(), 0.0);
        close(cosine_similarity(&A, &z).unwrap(), 0.0);
        close(normalized_l2(&z, &z).unwrap(), 0.0);
        close(normalized_l2(&z, &A).unwrap(), 1.0);
    }

    #[test]
    fn errors() {
        assert!(cosine_similarity(&A, &B[..4]).is_err());
        assert!(normalized_l2(&A, &B[..4]).is_err());
        assert!(cosine_similarity(&[], &[]).is_err());
        assert!(cosine_similarity(&[1.0, f32::NAN], &[1.0, 1.0]).is_err());
        assert!(normalized_l2(&[1.0, 1.0], &[f32::INFINITY, 1.0]).is_err());
    }
}
