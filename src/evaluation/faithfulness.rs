//! Do the maps explain the network? Perturbation metrics that ask whether the pixels a map
//! ranks first are the ones the network uses, and the model-randomisation sanity check:
//! - **deletion / insertion** (Petsiuk et al. 2018, as RISE and Quantus): the class probability
//!   as the map's top pixels are removed (filled with the training mean) or inserted into an
//!   all-mean image, in `steps` equal fractions; the score is the area under that curve
//!   (deletion: lower is better; insertion: higher is better);
//! - **ROAD** (Rong et al., ICML 2022, remove and debias): the class probability after removing
//!   the top k% of pixels by noisy linear imputation (each removed pixel the weighted mean of
//!   its 8 neighbours, solved by Jacobi iteration, plus Gaussian noise), which leaks less of the
//!   mask's shape than a constant fill; most relevant first and, as baseline, a random order;
//! - **cascading model randomisation** (Adebayo et al., NeurIPS 2018): the network's parameter
//!   groups are re-initialised from the top (logits) down, one more at each step, and each
//!   step's maps are compared with the trained network's by Spearman rank correlation; a method
//!   whose maps hardly change explains the architecture, not the learned function.

use crate::attribution::Attribution;
use crate::data::Dataset;
use crate::models::Network;
use crate::training::Normalization;
use anyhow::{Result, ensure};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Settings of the perturbation metrics and the sanity check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaithfulnessConfig {
    /// Ground-truth pairs scored per network and method (the first ones in image order; 0
    /// turns deletion, insertion, ROAD and the sanity check off).
    pub pairs: usize,
    /// Fractions of the deletion and insertion curves (steps + 1 points from 0 to 1).
    pub steps: usize,
    /// Percentages removed for ROAD.
    pub road_percents: Vec<u32>,
    /// Standard deviation of ROAD's imputation noise, in normalised input units.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub road_noise: f32,
    /// Pairs whose maps the sanity check compares (of the `pairs` above).
    pub sanity_pairs: usize,
}

impl Default for FaithfulnessConfig {
    fn default() -> Self {
        FaithfulnessConfig {
            pairs: 100,
            steps: 16,
            road_percents: vec![10, 30, 50, 70, 90],
            road_noise: 0.01,
            sanity_pairs: 32,
        }
    }
}

impl FaithfulnessConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.steps >= 1,
            "eval.faithfulness.steps must be at least 1"
        );
        ensure!(
            self.road_percents.iter().all(|&k| (1..=100).contains(&k)),
            "eval.faithfulness.road_percents must lie in 1..=100, got {:?}",
            self.road_percents
        );
        ensure!(
            self.road_noise.is_finite() && self.road_noise >= 0.0,
            "eval.faithfulness.road_noise must be finite and non-negative"
        );
        Ok(())
    }
}

/// One network's perturbation scores under one attribution method (means over pairs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Perturbation {
    /// Area under the deletion curve (class probability; lower: the map found what matters).
    pub deletion: f64,
    /// Area under the insertion curve (higher is better).
    pub insertion: f64,
    /// ROAD, most relevant first: (percent removed, mean class probability).
    pub road: Vec<(u32, f64)>,
    /// ROAD in a random order (the baseline the map must beat).
    pub road_random: Vec<(u32, f64)>,
    /// Pairs averaged over.
    pub pairs: usize,
    /// Each pair's (image, class, deletion, insertion), for `pairs.csv` (not in
    /// `results.json`).
    #[serde(skip)]
    pub per_pair: Vec<(usize, usize, f64, f64)>,
}

/// One step of the cascading randomisation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SanityStep {
    /// The parameter group re-initialised last (all groups above it are re-initialised too).
    pub layer: String,
    /// Mean Spearman rank correlation of the maps with the trained network's.
    pub spearman: f64,
}

/// Pixel indices by decreasing map value (ties in index order: deterministic).
pub fn pixel_order(map: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..map.len()).collect();
    idx.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    idx
}

/// A normalised image (3 planes) with `pixels` set to the channel mean (0 after normalising).
fn remove(image: &[f32], pixels: &[usize]) -> Vec<f32> {
    let plane = image.len() / 3;
    let mut out = image.to_vec();
    for c in 0..3 {
        for &p in pixels {
            out[c * plane + p] = 0.0;
        }
    }
    out
}

/// `pixels` of a normalised image replaced by noisy linear imputation: each removed pixel the
/// mean of its 8 neighbours weighted 1 (edge) and 1/2 (corner), by Jacobi iteration from the
/// channel mean, then N(0, noise²) added.
pub fn impute(
    image: &[f32],
    h: usize,
    w: usize,
    pixels: &[usize],
    noise: f32,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let plane = h * w;
    let mut out = remove(image, pixels);
    let neighbours: [(isize, isize, f32); 8] = [
        (-1, 0, 1.0),
        (1, 0, 1.0),
        (0, -1, 1.0),
        (0, 1, 1.0),
        (-1, -1, 0.5),
        (-1, 1, 0.5),
        (1, -1, 0.5),
        (1, 1, 0.5),
    ];
    for _ in 0..40 {
        let previous = out.clone();
        for c in 0..3 {
            for &p in pixels {
                let (y, x) = ((p / w) as isize, (p % w) as isize);
                let (mut sum, mut weight) = (0f32, 0f32);
                for (dy, dx, wt) in neighbours {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny >= 0 && nx >= 0 && (ny as usize) < h && (nx as usize) < w {
                        sum += wt * previous[c * plane + ny as usize * w + nx as usize];
                        weight += wt;
                    }
                }
                out[c * plane + p] = sum / weight;
            }
        }
    }
    if noise > 0.0 {
        for c in 0..3 {
            for &p in pixels {
                out[c * plane + p] += noise * standard_normal(rng);
            }
        }
    }
    out
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `σ(logit[class])` of each normalised image (all of one shape).
fn probabilities(
    model: &Network,
    images: &[Vec<f32>],
    classes: &[usize],
    side: (usize, usize),
    batch: usize,
) -> Result<Vec<f64>> {
    let device = model.devices()[0].clone();
    let k = model.num_classes();
    let mut out = Vec::with_capacity(images.len());
    for (chunk, cls) in images
        .chunks(batch.max(1))
        .zip(classes.chunks(batch.max(1)))
    {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(flat, [chunk.len(), 3, side.0, side.1]),
            &device,
        );
        let logits = model
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read logits: {e:?}"))?;
        for (n, &c) in cls.iter().enumerate() {
            out.push(1.0 / (1.0 + (-(logits[n * k + c] as f64)).exp()));
        }
    }
    Ok(out)
}

/// Trapezoid area under equally spaced points on [0, 1].
pub fn curve_area(points: &[f64]) -> f64 {
    if points.len() < 2 {
        return points.first().copied().unwrap_or(f64::NAN);
    }
    let n = (points.len() - 1) as f64;
    points.windows(2).map(|p| (p[0] + p[1]) / 2.0).sum::<f64>() / n
}

/// The normalised image of `i`.
fn normalised(data: &Dataset, norm: &Normalization, i: usize) -> Vec<f32> {
    let mut img = data.image(i).to_vec();
    norm.apply(&mut img);
    img
}

/// Deletion, insertion and ROAD of `maps` (input resolution, one per pair) for `model`.
#[allow(clippy::too_many_arguments)]
pub fn perturbation_scores(
    model: &Network,
    data: &Dataset,
    norm: &Normalization,
    pairs: &[(usize, usize)],
    maps: &[Vec<f32>],
    cfg: &FaithfulnessConfig,
    batch: usize,
    seed: u64,
) -> Result<Perturbation> {
    let (h, w) = (data.height, data.width);
    let plane = h * w;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut deletion, mut insertion) = (Vec::new(), Vec::new());
    let mut per_pair = Vec::with_capacity(pairs.len());
    let mut road = vec![Vec::new(); cfg.road_percents.len()];
    let mut road_random = vec![Vec::new(); cfg.road_percents.len()];
    for (&(i, c), map) in pairs.iter().zip(maps) {
        let image = normalised(data, norm, i);
        let order = pixel_order(map);
        let count = |f: f64| ((f * plane as f64).round() as usize).min(plane);
        let mut images = Vec::new();
        for s in 0..=cfg.steps {
            let f = s as f64 / cfg.steps as f64;
            images.push(remove(&image, &order[..count(f)]));
        }
        for s in 0..=cfg.steps {
            let f = s as f64 / cfg.steps as f64;
            // insertion: the top pixels of the image on an all-mean canvas
            images.push(remove(&image, &order[count(f)..]));
        }
        let mut random_order = order.clone();
        random_order.shuffle(&mut rng);
        for &k in &cfg.road_percents {
            let n = count(k as f64 / 100.0);
            images.push(impute(&image, h, w, &order[..n], cfg.road_noise, &mut rng));
            images.push(impute(
                &image,
                h,
                w,
                &random_order[..n],
                cfg.road_noise,
                &mut rng,
            ));
        }
        let classes = vec![c; images.len()];
        let p = probabilities(model, &images, &classes, (h, w), batch)?;
        let m = cfg.steps + 1;
        deletion.push(curve_area(&p[..m]));
        insertion.push(curve_area(&p[m..2 * m]));
        per_pair.push((
            i,
            c,
            deletion[deletion.len() - 1],
            insertion[insertion.len() - 1],
        ));
        for (j, pair) in p[2 * m..].chunks(2).enumerate() {
            road[j].push(pair[0]);
            road_random[j].push(pair[1]);
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let curve = |values: &[Vec<f64>]| {
        cfg.road_percents
            .iter()
            .zip(values)
            .map(|(&k, v)| (k, mean(v)))
            .collect()
    };
    Ok(Perturbation {
        deletion: mean(&deletion),
        insertion: mean(&insertion),
        road: curve(&road),
        road_random: curve(&road_random),
        pairs: pairs.len(),
        per_pair,
    })
}

/// Ranks with ties given their mean rank.
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0f64; v.len()];
    let mut start = 0;
    while start < idx.len() {
        let mut end = start + 1;
        while end < idx.len() && v[idx[end]] == v[idx[start]] {
            end += 1;
        }
        let mean_rank = (start + end - 1) as f64 / 2.0;
        for &i in &idx[start..end] {
            r[i] = mean_rank;
        }
        start = end;
    }
    r
}

/// Spearman rank correlation (Pearson correlation of mid-ranks); 0 when either is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Names every float tensor by its module path and records its parameter group (the path
/// without its last component, e.g. `blocks.3.conv`), in visiting order (the forward order
/// of the families' fields).
#[derive(Default)]
struct Paths {
    path: Vec<String>,
    groups: Vec<String>,
    tensors: HashMap<String, TensorData>,
}

impl ModuleVisitor for Paths {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let group = self.path[..self.path.len().saturating_sub(1)].join(".");
        if !self.groups.contains(&group) {
            self.groups.push(group);
        }
        self.tensors
            .insert(self.path.join("."), param.val().into_data());
    }
}

/// Keeps a freshly initialised network's tensors in the chosen groups and puts the trained
/// network's everywhere else. It maps the fresh network, never the trained one: BatchNorm's
/// running statistics are shared between a module and its clones, so mapping a clone of the
/// trained network would overwrite the trained network's own.
struct KeepFresh<'a> {
    path: Vec<String>,
    groups: &'a [String],
    trained: &'a HashMap<String, TensorData>,
}

impl ModuleMapper for KeepFresh<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let group = self.path[..self.path.len().saturating_sub(1)].join(".");
        if self.groups.contains(&group) {
            return param;
        }
        let Some(data) = self.trained.get(&self.path.join(".")) else {
            return param;
        };
        let (id, tensor, _) = param.consume();
        Param::initialized(id, Tensor::from_data(data.clone(), &tensor.device()))
    }
}

/// The cascading randomisation of `model` under `method`: one step per parameter group, from
/// the last (logits) down, each step's maps compared with the trained network's.
pub fn cascading_randomization(
    model: &Network,
    method: &dyn Attribution,
    data: &Dataset,
    norm: &Normalization,
    pairs: &[(usize, usize)],
    batch: usize,
    seed: u64,
) -> Result<Vec<SanityStep>> {
    let device = model.devices()[0].clone();
    let mut trained = Paths::default();
    model.visit(&mut trained);
    let reference = super::attribution_maps(model, method, data, norm, pairs, batch)?;
    let mut steps = Vec::new();
    for depth in 1..=trained.groups.len() {
        let chosen: Vec<String> = trained.groups[trained.groups.len() - depth..].to_vec();
        // a new fresh network per step (see [`KeepFresh`])
        let randomised = model.arch().init(&device, seed)?.map(&mut KeepFresh {
            path: Vec::new(),
            groups: &chosen,
            trained: &trained.tensors,
        });
        let maps = super::attribution_maps(&randomised, method, data, norm, pairs, batch)?;
        let rho: Vec<f64> = reference
            .iter()
            .zip(&maps)
            .map(|(a, b)| spearman(a, b))
            .collect();
        steps.push(SanityStep {
            layer: chosen[0].clone(),
            spearman: rho.iter().sum::<f64>() / rho.len().max(1) as f64,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_hand_cases() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // ranks (0, 1, 2, 3) vs (1.5, 1.5, 0, 3): deviations (-1.5, -0.5, 0.5, 1.5) and
        // (0, 0, -1.5, 1.5), covariance 1.5, variances 5 and 4.5: 1.5 / sqrt(22.5)
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[5.0, 5.0, 1.0, 9.0]);
        assert!((r - 1.5 / 22.5f64.sqrt()).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn curve_area_is_the_trapezoid_mean() {
        assert!((curve_area(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
        assert!((curve_area(&[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-12);
        assert!((curve_area(&[1.0, 1.0, 0.0]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn pixel_order_ranks_high_values_first_and_breaks_ties_by_index() {
        assert_eq!(pixel_order(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
    }

    #[test]
    fn imputation_fills_a_hole_in_a_linear_ramp_exactly() {
        // each channel a horizontal ramp; a removed interior pixel's 8-neighbour weighted mean
        // is its own value, so noise-free imputation restores it
        let (h, w) = (5, 5);
        let image: Vec<f32> = (0..3 * h * w)
            .map(|i| (i % w) as f32 * 0.25 - 0.5)
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let hole = [12, 13];
        let out = impute(&image, h, w, &hole, 0.0, &mut rng);
        for c in 0..3 {
            for &p in &hole {
                assert!((out[c * 25 + p] - image[c * 25 + p]).abs() < 1e-4);
            }
        }
    }
}
