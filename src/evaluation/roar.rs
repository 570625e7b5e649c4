//! ROAR, RemOve And Retrain (Hooker et al., NeurIPS 2019; the paper's appendix E, Fig. 7): the
//! top k% pixels of every training and test image, ranked by a network's maps, are removed, a
//! fresh classifier is trained on the perturbed training images and scored on the perturbed
//! test images. If the maps find what the task needs, accuracy falls faster than with a random
//! ranking; and a compressed network whose maps are preserved should give the teacher's curve.
//!
//! Each image is ranked by the per-pixel maximum of the network's min-max normalised maps of
//! the classes it predicts (logit > 0; its top class when it predicts none): the labels are not
//! used, so the mask carries no label the classifier could read. Removed pixels get the
//! training mean (ROAR) or noisy linear imputation (ROAD's debiased fill, less mask shape
//! leaking through). Every (ranking, k) cell is a training stage of its own: resumable, and
//! skipped when its result file holds the same key.

use super::faithfulness::{impute, pixel_order};
use crate::attribution::Attribution;
use crate::data::Dataset;
use crate::evaluation::MapVariant;
use crate::evaluation::health::prediction_quality;
use crate::models::{Arch, Network};
use crate::training::checkpoint::stage_key;
use crate::training::{self, Normalization, Stage, TrainConfig};
use crate::util::write_atomic;
use anyhow::{Context, Result, ensure};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What fills the removed pixels.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RoarFill {
    /// The training set's per-channel mean (ROAR).
    #[default]
    Mean,
    /// Noisy linear imputation from the neighbours (ROAD).
    Impute,
}

/// ROAR settings (`[roar]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoarConfig {
    /// Off by default: it trains `(networks + 1) x percents + 1` classifiers per seed.
    pub enabled: bool,
    /// Percentages of pixels removed.
    pub percents: Vec<u32>,
    /// Whose maps rank the pixels: the teacher and, of the first compression method, the
    /// networks of these regularizers (a random ranking is always added).
    pub regularizers: Vec<String>,
    /// What fills the removed pixels.
    pub fill: RoarFill,
    /// The retrained classifier is the teacher's architecture at this width divisor.
    pub width_divisor: usize,
    /// Training epochs of each classifier (the teacher's other training settings).
    pub epochs: usize,
    /// At least this many optimiser steps (epochs are added until reached).
    pub min_steps: usize,
}

impl Default for RoarConfig {
    fn default() -> Self {
        RoarConfig {
            enabled: false,
            percents: vec![10, 30, 50, 70, 90],
            regularizers: vec!["none".into(), "sswa".into()],
            fill: RoarFill::Mean,
            width_divisor: 2,
            epochs: 32,
            min_steps: 0,
        }
    }
}

impl RoarConfig {
    /// Checks the settings against the grid's regularizers.
    pub fn validate(&self, grid_regularizers: &[String]) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        ensure!(
            !self.percents.is_empty() && self.percents.iter().all(|&k| (1..100).contains(&k)),
            "roar.percents must be non-empty, each in 1..=99, got {:?}",
            self.percents
        );
        ensure!(
            self.width_divisor >= 1,
            "roar.width_divisor must be at least 1"
        );
        ensure!(self.epochs >= 1, "roar.epochs must be at least 1");
        for r in &self.regularizers {
            ensure!(
                grid_regularizers.contains(r),
                "roar.regularizers lists '{r}', which is not in the grid's regularizers ({})",
                grid_regularizers.join(", ")
            );
        }
        Ok(())
    }
}

/// One point of a ROAR curve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoarPoint {
    /// Seed of the run.
    pub seed: u64,
    /// Whose maps ranked the pixels (`teacher`, `kd none`, ..., `random`; `-` at 0%).
    pub ranking: String,
    /// The attribution method of the ranking.
    pub method: String,
    /// Percentage of pixels removed.
    pub percent: u32,
    /// mAP of the retrained classifier on the perturbed test images, in %.
    pub map: f64,
    /// Sample F1 of it, in %.
    pub f1: f64,
}

/// Pixel orders (most relevant first), one per image, from `model`'s maps of the classes it
/// predicts.
pub fn rankings(
    model: &Network,
    method: &dyn Attribution,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
) -> Result<Vec<Vec<u32>>> {
    let logits = super::predict(model, data, norm, batch)?;
    let k = data.num_classes();
    let mut pairs = Vec::new();
    for i in 0..data.len() {
        let row = &logits[i * k..(i + 1) * k];
        let predicted: Vec<usize> = (0..k).filter(|&c| row[c] > 0.0).collect();
        let top = (0..k)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0);
        let chosen = if predicted.is_empty() {
            vec![top]
        } else {
            predicted
        };
        pairs.extend(chosen.into_iter().map(|c| (i, c)));
    }
    let maps = super::attribution_maps(model, method, data, norm, &pairs, batch)?;
    let mut combined = vec![vec![0f32; data.pixels()]; data.len()];
    for (&(i, _), mut m) in pairs.iter().zip(maps) {
        // an all-equal map normalises to zeros
        let _ = crate::metrics::min_max_normalize(&mut m);
        for (c, v) in combined[i].iter_mut().zip(&m) {
            *c = c.max(*v);
        }
    }
    Ok(combined
        .iter()
        .map(|m| pixel_order(m).into_iter().map(|p| p as u32).collect())
        .collect())
}

/// A random pixel order per image.
pub fn random_rankings(images: usize, pixels: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..images)
        .map(|_| {
            let mut order: Vec<u32> = (0..pixels as u32).collect();
            order.shuffle(&mut rng);
            order
        })
        .collect()
}

/// `data` with the first `percent`% of each image's `orders` removed.
pub fn perturb(
    data: &Dataset,
    orders: &[Vec<u32>],
    percent: u32,
    fill: RoarFill,
    norm: &Normalization,
    seed: u64,
) -> Dataset {
    let plane = data.pixels();
    let n = (plane * percent as usize).div_ceil(100).min(plane);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = data.clone();
    for (i, order) in orders.iter().enumerate() {
        let removed: Vec<usize> = order[..n].iter().map(|&p| p as usize).collect();
        let image = &mut out.images[i * 3 * plane..(i + 1) * 3 * plane];
        match fill {
            RoarFill::Mean => {
                for c in 0..3 {
                    for &p in &removed {
                        image[c * plane + p] = norm.mean[c];
                    }
                }
            }
            RoarFill::Impute => {
                let mut normalised = image.to_vec();
                norm.apply(&mut normalised);
                let filled = impute(
                    &normalised,
                    data.height,
                    data.width,
                    &removed,
                    0.01,
                    &mut rng,
                );
                for c in 0..3 {
                    for p in 0..plane {
                        image[c * plane + p] = filled[c * plane + p] * norm.std[c] + norm.mean[c];
                    }
                }
            }
        }
    }
    out
}

/// A cell's saved result.
#[derive(Serialize, Deserialize)]
struct CellResult {
    key: String,
    map: f64,
    f1: f64,
}

/// Everything a retraining cell needs besides its data.
pub struct Retrain<'a> {
    /// The classifier's architecture.
    pub arch: &'a Arch,
    /// Its training settings.
    pub train: &'a TrainConfig,
    /// The normalisation of the (unperturbed) training set.
    pub norm: &'a Normalization,
    /// mAP definition.
    pub map_variant: MapVariant,
    /// Seed of the classifier's initialisation and training.
    pub seed: u64,
    /// The autodiff device.
    pub device: &'a Device,
}

/// The saved (mAP, F1) of a cell when its key matches.
pub fn cached(dir: &Path, key: &str) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("result.json")).ok()?;
    let r: CellResult = serde_json::from_str(&text).ok()?;
    (r.key == key).then_some((r.map, r.f1))
}

/// Trains a fresh classifier on `train`, scores it on `test`, saves the result under `key`.
pub fn retrain(
    r: &Retrain,
    train: &Dataset,
    test: &Dataset,
    dir: &Path,
    key: &str,
) -> Result<(f64, f64)> {
    if let Some(done) = cached(dir, key) {
        return Ok(done);
    }
    let model = r.arch.init(r.device, r.seed)?;
    let label = format!(
        "roar {}",
        dir.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let stage = Stage {
        dir,
        label: &label,
        validate: None,
        upstream: key,
    };
    let (model, _) = training::train_supervised(model, train, r.norm, r.train, r.seed, &stage)?;
    let logits = super::predict(&model.valid(), test, r.norm, 64)?;
    let q = prediction_quality(&logits, test, r.map_variant)?;
    let result = CellResult {
        key: key.to_string(),
        map: q.map,
        f1: q.f1,
    };
    write_atomic(
        &dir.join("result.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )
    .with_context(|| format!("cannot save the ROAR result in {}", dir.display()))?;
    Ok((q.map, q.f1))
}

/// The cell key: the ranking's identity, the percentage, the fill and the classifier.
pub fn cell_key(ranking_key: &str, percent: u32, cfg: &RoarConfig, r: &Retrain) -> String {
    stage_key(&(ranking_key, percent, cfg.fill, r.arch, r.train, r.seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbation_removes_the_first_pixels_of_the_order_with_the_mean() {
        let mut d = Dataset::empty("t", vec!["a".into()], 2, 2);
        d.push(&[1.0; 12], &[1], &[1, 1, 0, 0]);
        let norm = Normalization {
            mean: [0.1, 0.2, 0.3],
            std: [1.0; 3],
        };
        // 50% of 4 pixels: the first two of the order
        let out = perturb(&d, &[vec![3, 0, 1, 2]], 50, RoarFill::Mean, &norm, 0);
        assert_eq!(
            out.images,
            vec![0.1, 1.0, 1.0, 0.1, 0.2, 1.0, 1.0, 0.2, 0.3, 1.0, 1.0, 0.3]
        );
        // 10% of 4 pixels rounds up to one pixel
        let out = perturb(&d, &[vec![2, 0, 1, 3]], 10, RoarFill::Mean, &norm, 0);
        assert_eq!(&out.images[..4], &[1.0, 1.0, 0.1, 1.0]);
    }

    #[test]
    fn settings_are_checked_only_when_enabled() {
        let grid = vec!["none".to_string(), "sswa".to_string()];
        let mut cfg = RoarConfig {
            percents: vec![0],
            ..RoarConfig::default()
        };
        cfg.validate(&grid).unwrap();
        cfg.enabled = true;
        assert!(format!("{:#}", cfg.validate(&grid).unwrap_err()).contains("percents"));
        cfg.percents = vec![10, 50];
        cfg.validate(&grid).unwrap();
        cfg.regularizers = vec!["ewa".into()];
        assert!(format!("{:#}", cfg.validate(&grid).unwrap_err()).contains("'ewa'"));
    }

    #[test]
    fn random_rankings_are_permutations_and_seeded() {
        let a = random_rankings(3, 10, 7);
        assert_eq!(a, random_rankings(3, 10, 7));
        for order in &a {
            let mut s = order.clone();
            s.sort();
            assert_eq!(s, (0..10).collect::<Vec<u32>>());
        }
        assert_ne!(a[0], a[1]);
    }
}
