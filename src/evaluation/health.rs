//! Training health: is a network learning at all? Finds networks at chance, networks that
//! predict nothing, and flat task losses, from the per-epoch record and the test predictions,
//! so that no failed training passes silently into a results table.

use crate::data::Dataset;
use crate::evaluation::MapVariant;
use crate::metrics;
use crate::training::EpochRecord;
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What kind of health problem a [`Warning`] reports.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// mAP no better than a network that ranks at random (the class base rates).
    AtChance,
    /// The network predicts no class present for (almost) any image.
    PredictsNothing,
    /// The task loss did not fall over training.
    FlatLoss,
    /// Attribution metrics are undefined (no pair qualifies).
    NoPairs,
}

/// A health problem of one network, said in words.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Warning {
    /// The kind of problem.
    pub kind: WarningKind,
    /// What was measured, in a sentence.
    pub message: String,
}

impl Warning {
    fn new(kind: WarningKind, message: String) -> Self {
        Warning { kind, message }
    }
}

/// Prediction quality of a network on one split, with what a health check needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PredictionQuality {
    /// mAP in %.
    pub map: f64,
    /// Sample-averaged F1 at probability 0.5, in %.
    pub f1: f64,
    /// Fraction of (image, class) scores predicted present (logit > 0).
    pub positive_rate: f64,
    /// Fraction of (image, class) pairs labelled present.
    pub label_rate: f64,
}

/// mAP, F1 and the rate of positive predictions of logits (N×K, row-major) on `data`.
pub fn prediction_quality(
    logits: &[f32],
    data: &Dataset,
    variant: MapVariant,
) -> Result<PredictionQuality> {
    let (n, k) = (data.len(), data.num_classes());
    let map = match variant {
        MapVariant::PerClass => metrics::map_per_class(logits, &data.labels, n, k),
        MapVariant::PerSample => metrics::map_per_sample(logits, &data.labels, n, k),
    }
    .with_context(|| format!("mAP on {}", data.name))?;
    let f1 = metrics::f1_samples(logits, &data.labels, n, k, 0.0)
        .with_context(|| format!("F1 on {}", data.name))?;
    let total = logits.len().max(1) as f64;
    Ok(PredictionQuality {
        map: 100.0 * map,
        f1: 100.0 * f1,
        positive_rate: logits.iter().filter(|&&v| v > 0.0).count() as f64 / total,
        label_rate: data.labels.iter().filter(|&&l| l == 1).count() as f64 / total,
    })
}

/// Random rankings averaged for [`chance_map`].
const CHANCE_DRAWS: u64 = 8;

/// The mAP (in %) of a network that ranks images at random: the mean over a few seeded random
/// score matrices, with the same mAP definition as the evaluation (interpolated AP of a random
/// ranking is above the base rate, so the base rate alone would be too low a bar).
pub fn chance_map(data: &Dataset, variant: MapVariant) -> Result<f64> {
    let (n, k) = (data.len(), data.num_classes());
    let mut sum = 0.0;
    for draw in 0..CHANCE_DRAWS {
        let mut rng = ChaCha8Rng::seed_from_u64(draw);
        let mut scores: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        scores.shuffle(&mut rng);
        sum += prediction_quality(&scores, data, variant)?.map;
    }
    Ok(sum / CHANCE_DRAWS as f64)
}

/// A network is "at chance" when its mAP has covered less than this fraction of the way from
/// chance to 100%.
pub const AT_CHANCE_FRACTION: f64 = 0.1;
/// A network "predicts nothing" when it predicts fewer positives than this fraction of the
/// labelled positives.
pub const PREDICTS_NOTHING_FRACTION: f64 = 0.05;
/// A task loss is "flat" when its best later epoch is less than this fraction below the first.
pub const FLAT_LOSS_FRACTION: f64 = 0.01;
/// The fewest epochs for which a flat loss is judged.
pub const FLAT_LOSS_MIN_EPOCHS: usize = 3;

/// Whether an mAP (in %) is at chance given the chance mAP (in %).
pub fn is_at_chance(map: f64, chance: f64) -> bool {
    map < chance + AT_CHANCE_FRACTION * (100.0 - chance)
}

/// The health problems of a network, from its test predictions, the chance mAP of the test
/// split, and its training record (empty when it was not trained in this run).
pub fn check(test: &PredictionQuality, chance: f64, history: &[EpochRecord]) -> Vec<Warning> {
    let mut found = Vec::new();
    if is_at_chance(test.map, chance) {
        found.push(Warning::new(
            WarningKind::AtChance,
            format!(
                "test mAP {:.1}% is at chance (random ranking: {chance:.1}%); the network has \
                 not learned the task",
                test.map
            ),
        ));
    }
    if test.positive_rate < PREDICTS_NOTHING_FRACTION * test.label_rate {
        found.push(Warning::new(
            WarningKind::PredictsNothing,
            format!(
                "predicts {:.2}% of (image, class) pairs present where {:.1}% are: the network \
                 has collapsed to predicting (almost) nothing (F1 {:.1}%)",
                100.0 * test.positive_rate,
                100.0 * test.label_rate,
                test.f1
            ),
        ));
    }
    if let Some(w) = flat_loss(history) {
        found.push(w);
    }
    found
}

fn flat_loss(history: &[EpochRecord]) -> Option<Warning> {
    let (first, rest) = history.split_first()?;
    if history.len() < FLAT_LOSS_MIN_EPOCHS {
        return None;
    }
    let best = rest
        .iter()
        .map(|e| e.task_loss)
        .fold(f64::INFINITY, f64::min);
    (first.task_loss - best < FLAT_LOSS_FRACTION * first.task_loss.abs()).then(|| {
        Warning::new(
            WarningKind::FlatLoss,
            format!(
                "task loss flat over {} epochs ({:.4} at epoch 1, best later {best:.4}): the \
                 network did not learn; try a lower learning rate, a warm-up or another init",
                history.len(),
                first.task_loss
            ),
        )
    })
}

/// The warning for undefined attribution metrics (no pair qualifies under a protocol).
pub fn no_pairs(protocol: &str) -> Warning {
    Warning::new(
        WarningKind::NoPairs,
        format!(
            "attribution metrics undefined under the {protocol} protocol: no (image, class) pair \
             qualifies because the network predicts no ground-truth class present"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, task_loss: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            task_loss,
            match_loss: None,
            val_map: 50.0,
            val_f1: 50.0,
            val_positive_rate: 0.2,
        }
    }

    fn quality(map: f64, positive_rate: f64) -> PredictionQuality {
        PredictionQuality {
            map,
            f1: 40.0,
            positive_rate,
            label_rate: 0.2,
        }
    }

    fn kinds(w: &[Warning]) -> Vec<WarningKind> {
        w.iter().map(|w| w.kind).collect()
    }

    #[test]
    fn a_healthy_network_has_no_warnings() {
        let h = [record(1, 0.5), record(2, 0.3), record(3, 0.2)];
        assert!(check(&quality(80.0, 0.2), 25.0, &h).is_empty());
    }

    #[test]
    fn at_chance_is_measured_against_the_random_ranking() {
        // chance 25%: the bar is 25 + 0.1 * 75 = 32.5%
        assert_eq!(
            kinds(&check(&quality(32.0, 0.2), 25.0, &[])),
            [WarningKind::AtChance]
        );
        assert!(check(&quality(33.0, 0.2), 25.0, &[]).is_empty());
    }

    #[test]
    fn predicting_nothing_and_flat_losses_are_reported() {
        // 0.5% positives predicted where 20% are labelled: 0.005 < 0.05 * 0.2 = 0.01
        let w = check(&quality(60.0, 0.005), 25.0, &[]);
        assert_eq!(kinds(&w), [WarningKind::PredictsNothing]);
        assert!(w[0].message.contains("0.50%"), "{}", w[0].message);
        // 0.5000 -> best 0.4960: 0.8% below the first epoch, under the 1% bar
        let flat = [record(1, 0.5), record(2, 0.499), record(3, 0.496)];
        assert_eq!(
            kinds(&check(&quality(60.0, 0.2), 25.0, &flat)),
            [WarningKind::FlatLoss]
        );
        // two epochs are too few to judge
        assert!(check(&quality(60.0, 0.2), 25.0, &flat[..2]).is_empty());
    }

    #[test]
    fn chance_map_is_near_the_base_rate_and_below_a_perfect_ranking() {
        let data = crate::data::synthetic::generate(&crate::data::synthetic::SyntheticConfig {
            size: 32,
            num_classes: 4,
            n_train: 4,
            n_val: 4,
            n_test: 200,
            ..Default::default()
        })
        .unwrap()
        .test;
        let base = 100.0 * data.labels.iter().filter(|&&l| l == 1).count() as f64
            / data.labels.len() as f64;
        let chance = chance_map(&data, MapVariant::PerClass).unwrap();
        // interpolated AP of a random ranking lies a little above the base rate
        assert!(
            chance > base && chance < base + 15.0,
            "chance {chance} base {base}"
        );
        let perfect: Vec<f32> = data.labels.iter().map(|&l| l as f32).collect();
        let q = prediction_quality(&perfect, &data, MapVariant::PerClass).unwrap();
        assert!((q.map - 100.0).abs() < 1e-9 && (q.positive_rate - base / 100.0).abs() < 1e-12);
    }
}
