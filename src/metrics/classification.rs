//! Multi-label classification metrics: average precision, mAP and sample-averaged F1.
//!
//! Score ties are handled as one threshold: all samples sharing a score enter the
//! ranking together, so their order in the input never changes the result.

use super::check;
use super::error::{MetricError, MetricResult};

/// VOC2010+ average precision of one class over samples.
///
/// Samples are ranked by `scores` (descending); precision and recall are taken after
/// each distinct score (a tied group counts as one threshold); precision is made
/// non-increasing from the right (interpolated); AP = Σ Δrecall × interpolated
/// precision. `Ok(None)` when no target is positive. Errors on a length mismatch or NaN.
pub fn average_precision_voc(scores: &[f32], targets: &[bool]) -> MetricResult<Option<f64>> {
    let Some(mut curve) = pr_curve(scores, targets)? else {
        return Ok(None);
    };
    let mut best = 0.0_f64;
    for point in curve.iter_mut().rev() {
        best = best.max(point.precision);
        point.precision = best;
    }
    Ok(Some(area_under_steps(&curve)))
}

/// Non-interpolated average precision, as sklearn's `average_precision_score`.
///
/// AP = Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct score thresholds in descending order.
/// `Ok(None)` when no target is positive. Errors on a length mismatch or NaN.
pub fn average_precision_step(scores: &[f32], targets: &[bool]) -> MetricResult<Option<f64>> {
    Ok(pr_curve(scores, targets)?.map(|curve| area_under_steps(&curve)))
}

/// Usual VOC mAP: mean over classes with at least one positive of
/// [`average_precision_voc`] on that class's column.
///
/// `scores` and `targets` are row-major `[n, c]`; targets must be 0 or 1. Errors when
/// no class has a positive (the mean would be over nothing).
pub fn map_per_class(scores: &[f32], targets: &[u8], n: usize, c: usize) -> MetricResult<f64> {
    check_matrix(scores, targets, n, c)?;
    let per_class = (0..c).map(|class| {
        let column = |i: usize| i * c + class;
        let col_scores: Vec<f32> = (0..n).map(|i| scores[column(i)]).collect();
        let col_targets: Vec<bool> = (0..n).map(|i| targets[column(i)] == 1).collect();
        average_precision_voc(&col_scores, &col_targets)
    });
    mean_of_defined(per_class, "map_per_class", "no class has a positive sample")
}

/// Per-sample mAP (the authors' variant): mean over samples (rows) with at least one
/// positive of [`average_precision_step`] over that sample's `c` classes.
///
/// `scores` and `targets` are row-major `[n, c]`; targets must be 0 or 1. Errors when
/// no sample has a positive.
pub fn map_per_sample(scores: &[f32], targets: &[u8], n: usize, c: usize) -> MetricResult<f64> {
    check_matrix(scores, targets, n, c)?;
    let per_sample = (0..n).map(|i| {
        let row = i * c..(i + 1) * c;
        let row_targets: Vec<bool> = targets[row.clone()].iter().map(|&t| t == 1).collect();
        average_precision_step(&scores[row], &row_targets)
    });
    mean_of_defined(
        per_sample,
        "map_per_sample",
        "no sample has a positive class",
    )
}

/// Sample-averaged F1 of thresholded predictions.
///
/// A class is predicted positive where `logit > threshold_logit` (0.0 ⇔ probability
/// 0.5). Per sample F1 = 2|P∩T| / (|P|+|T|); a sample with no predicted and no true
/// positives scores 1.0 (nothing to find, nothing claimed: a perfect answer). Mean
/// over all `n` samples. Errors when `n == 0`, on NaN logits or threshold, or on
/// non-0/1 targets.
pub fn f1_samples(
    logits: &[f32],
    targets: &[u8],
    n: usize,
    c: usize,
    threshold_logit: f32,
) -> MetricResult<f64> {
    check_matrix(logits, targets, n, c)?;
    if threshold_logit.is_nan() {
        return Err(MetricError::InvalidParameter {
            what: "threshold_logit",
            detail: "must not be NaN",
        });
    }
    if n == 0 {
        return Err(MetricError::Empty {
            what: "f1_samples input (n = 0)",
        });
    }
    let total: f64 = (0..n)
        .map(|i| {
            let row = i * c..(i + 1) * c;
            sample_f1(&logits[row.clone()], &targets[row], threshold_logit)
        })
        .sum();
    Ok(total / n as f64)
}

/// F1 of one sample; 1.0 when both prediction and truth are empty.
fn sample_f1(logits: &[f32], targets: &[u8], threshold: f32) -> f64 {
    let (mut predicted, mut actual, mut both) = (0usize, 0usize, 0usize);
    for (&logit, &target) in logits.iter().zip(targets) {
        let p = logit > threshold;
        let t = target == 1;
        predicted += usize::from(p);
        actual += usize::from(t);
        both += usize::from(p && t);
    }
    if predicted + actual == 0 {
        1.0
    } else {
        2.0 * both as f64 / (predicted + actual) as f64
    }
}

/// Checks a row-major `[n, c]` score matrix and its 0/1 targets.
fn check_matrix(scores: &[f32], targets: &[u8], n: usize, c: usize) -> MetricResult<()> {
    let len = check::area("score matrix [n, c]", n, c)?;
    check::same_len("scores", len, scores.len())?;
    check::same_len("targets", len, targets.len())?;
    check::no_nan("scores", scores)?;
    check::binary_targets(targets)
}

/// Mean of the `Some` values, propagating the first error; `Undefined` when none.
fn mean_of_defined(
    values: impl Iterator<Item = MetricResult<Option<f64>>>,
    what: &'static str,
    reason: &'static str,
) -> MetricResult<f64> {
    let (mut sum, mut count) = (0.0_f64, 0usize);
    for value in values {
        if let Some(v) = value? {
            sum += v;
            count += 1;
        }
    }
    if count == 0 {
        Err(MetricError::Undefined { what, reason })
    } else {
        Ok(sum / count as f64)
    }
}

/// One operating point of the precision-recall curve.
#[derive(Debug, Clone, Copy)]
struct PrPoint {
    recall: f64,
    precision: f64,
}

/// Precision-recall after each distinct score, highest first; `None` without positives.
fn pr_curve(scores: &[f32], targets: &[bool]) -> MetricResult<Option<Vec<PrPoint>>> {
    check::same_len("targets", scores.len(), targets.len())?;
    check::no_nan("scores", scores)?;
    let positives = targets.iter().filter(|&&t| t).count();
    if positives == 0 {
        return Ok(None);
    }
    let curve = cumulative_counts(scores, targets)
        .into_iter()
        .map(|(tp, fp)| PrPoint {
            recall: tp as f64 / positives as f64,
            precision: tp as f64 / (tp + fp) as f64,
        })
        .collect();
    Ok(Some(curve))
}

/// Cumulative (true positives, false positives) after each group of equal scores,
/// visiting scores from the highest down. Scores must be NaN-free.
fn cumulative_counts(scores: &[f32], targets: &[bool]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // total_cmp puts -0.0 right below 0.0, so `==` below still groups them together.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut counts = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if targets[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let group_ends = order
            .get(k + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if group_ends {
            counts.push((tp, fp));
        }
    }
    counts
}

/// Σ (recallₖ − recallₖ₋₁) × precisionₖ, with recall₋₁ = 0.
fn area_under_steps(curve: &[PrPoint]) -> f64 {
    let mut previous_recall = 0.0;
    let mut area = 0.0;
    for point in curve {
        area += (point.recall - previous_recall) * point.precision;
        previous_recall = point.recall;
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    fn bools(v: &[u8]) -> Vec<bool> {
        v.iter().map(|&t| t == 1).collect()
    }

    #[test]
    fn ap_alternating_case() {
        // Ranks: (P=1, R=1/2), (1/2, 1/2), (2/3, 1), (2/4, 1).
        // Step: 1/2·1 + 1/2·2/3 = 5/6. Interpolated precision at the two recall steps
        // is max(1, ..) = 1 and max(2/3, 1/2) = 2/3, so VOC is also 5/6.
        let s = [0.9, 0.8, 0.7, 0.6];
        let t = bools(&[1, 0, 1, 0]);
        close(average_precision_step(&s, &t).unwrap().unwrap(), 5.0 / 6.0);
        close(average_precision_voc(&s, &t).unwrap().unwrap(), 5.0 / 6.0);
    }

    #[test]
    fn ap_variants_differ_when_precision_rises() {
        // Ranks: (P=0, R=0), (1/2, 1/2), (2/3, 1).
        // Step: 1/2·1/2 + 1/2·2/3 = 7/12.
        // VOC: precision at R=1/2 is lifted to max(1/2, 2/3) = 2/3 → 1/2·2/3 + 1/2·2/3 = 2/3.
        let s = [0.9, 0.8, 0.7];
        let t = bools(&[0, 1, 1]);
        close(average_precision_step(&s, &t).unwrap().unwrap(), 7.0 / 12.0);
        close(average_precision_voc(&s, &t).unwrap().unwrap(), 2.0 / 3.0);
    }

    #[test]
    fn ap_tied_scores_form_one_threshold() {
        // The tie at 0.9 enters together: (P=1/2, R=1/2), then (2/3, 1).
        // Step: 1/2·1/2 + 1/2·2/3 = 7/12 (it would be 5/6 if the positive came first).
        // VOC: 1/2·2/3 + 1/2·2/3 = 2/3.
        let t = bools(&[1, 0, 1]);
        close(
            average_precision_step(&[0.9, 0.9, 0.1], &t)
                .unwrap()
                .unwrap(),
            7.0 / 12.0,
        );
        close(
            average_precision_voc(&[0.9, 0.9, 0.1], &t)
                .unwrap()
                .unwrap(),
            2.0 / 3.0,
        );
        // Input order inside the tie does not matter.
        let t2 = bools(&[0, 1, 1]);
        close(
            average_precision_step(&[0.9, 0.9, 0.1], &t2)
                .unwrap()
                .unwrap(),
            7.0 / 12.0,
        );
    }

    #[test]
    fn ap_perfect_ranking_is_one_and_no_positives_is_none() {
        let t = bools(&[0, 1, 0, 1]);
        let s = [0.1, 0.9, 0.2, 0.8];
        close(average_precision_voc(&s, &t).unwrap().unwrap(), 1.0);
        close(average_precision_step(&s, &t).unwrap().unwrap(), 1.0);
        assert_eq!(average_precision_voc(&s, &[false; 4]), Ok(None));
        assert_eq!(average_precision_step(&[], &[]), Ok(None));
    }

    #[test]
    fn ap_rejects_bad_input() {
        assert!(matches!(
            average_precision_voc(&[0.1, 0.2], &[true]),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert!(matches!(
            average_precision_step(&[0.1, f32::NAN], &[true, false]),
            Err(MetricError::NotFinite { index: 1, .. })
        ));
    }

    #[test]
    fn map_per_class_hand_case_skips_classes_without_positives() {
        // n = 4 samples, c = 3 classes (row-major).
        // class 0: scores [.9,.8,.7,.6], targets [1,0,1,0] → VOC AP 5/6.
        // class 1: scores [.1,.9,.8,.7], targets [0,0,1,1] → ranked (0,1,1,0):
        //          (P=0,R=0),(1/2,1/2),(2/3,1),(1/2,1) → interpolated 2/3 at both steps → 2/3.
        // class 2: no positives → skipped (counting it as 0 would give 1/2).
        // mAP = (5/6 + 2/3) / 2 = 3/4.
        let scores = [
            0.9, 0.1, 0.5, //
            0.8, 0.9, 0.4, //
            0.7, 0.8, 0.3, //
            0.6, 0.7, 0.2,
        ];
        let targets = [
            1, 0, 0, //
            0, 0, 0, //
            1, 1, 0, //
            0, 1, 0,
        ];
        close(map_per_class(&scores, &targets, 4, 3).unwrap(), 0.75);
    }

    #[test]
    fn map_per_sample_hand_case() {
        // Row 0: scores [.9,.8,.7,.6], targets [1,0,1,0] → step AP 5/6.
        // Row 1: scores [.7,.9,.8,.1], targets [1,0,1,0] → ranked (0,1,1,0) → 1/2·1/2 + 1/2·2/3 = 7/12
        //        (VOC would give 2/3, so this checks the step variant is used).
        // Row 2: no positives → skipped.
        // Mean = (10/12 + 7/12) / 2 = 17/24.
        let scores = [
            0.9, 0.8, 0.7, 0.6, //
            0.7, 0.9, 0.8, 0.1, //
            0.5, 0.5, 0.5, 0.5,
        ];
        let targets = [
            1, 0, 1, 0, //
            1, 0, 1, 0, //
            0, 0, 0, 0,
        ];
        close(
            map_per_sample(&scores, &targets, 3, 4).unwrap(),
            17.0 / 24.0,
        );
    }

    #[test]
    fn map_errors() {
        let s = [0.1, 0.2, 0.3, 0.4];
        assert!(matches!(
            map_per_class(&s, &[0, 0, 0, 0], 2, 2),
            Err(MetricError::Undefined { .. })
        ));
        assert!(matches!(
            map_per_sample(&s, &[0, 0, 0, 0], 2, 2),
            Err(MetricError::Undefined { .. })
        ));
        assert!(matches!(
            map_per_class(&s, &[0, 1, 0], 2, 2),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert!(matches!(
            map_per_class(&s, &[0, 1, 0, 1], 2, 3),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert!(matches!(
            map_per_sample(&s, &[0, 2, 0, 1], 2, 2),
            Err(MetricError::InvalidTarget { index: 1, value: 2 })
        ));
        assert!(matches!(
            map_per_class(&[0.1, f32::NAN, 0.3, 0.4], &[0, 1, 0, 1], 2, 2),
            Err(MetricError::NotFinite { index: 1, .. })
        ));
    }

    #[test]
    fn f1_hand_case_with_empty_empty_sample() {
        // Sample 0: P = {0, 2} (logits 1, 2 > 0), T = {0, 1} → 2·1 / (2+2) = 1/2.
        // Sample 1: P = {}, T = {} → 1 by convention.
        // Sample 2: logit 0 is not > 0, so P = {1}, T = {1} → 1.
        // Sample 3: P = {}, T = {0} → 0.
        // Mean = (1/2 + 1 + 1 + 0) / 4 = 5/8.
        let logits = [
            1.0, -1.0, 2.0, //
            -1.0, -1.0, -1.0, //
            0.0, 3.0, -2.0, //
            -1.0, -1.0, -1.0,
        ];
        let targets = [
            1, 1, 0, //
            0, 0, 0, //
            0, 1, 0, //
            1, 0, 0,
        ];
        close(f1_samples(&logits, &targets, 4, 3, 0.0).unwrap(), 0.625);
        // Raising the threshold to 1.5 drops class 0 from sample 0's prediction:
        // P = {2}, T = {0, 1} → 0; sample 2 still predicts {1} (3 > 1.5) → mean 2/4.
        close(f1_samples(&logits, &targets, 4, 3, 1.5).unwrap(), 0.5);
    }

    #[test]
    fn f1_errors() {
        assert!(f1_samples(&[], &[], 0, 3, 0.0).is_err());
        assert!(f1_samples(&[0.0, 1.0], &[0, 1], 1, 2, f32::NAN).is_err());
        assert!(f1_samples(&[f32::NAN, 1.0], &[0, 1], 1, 2, 0.0).is_err());
        assert!(f1_samples(&[0.0, 1.0], &[0], 1, 2, 0.0).is_err());
    }
}
