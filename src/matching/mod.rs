//! Attribution-matching regularizers (paper section 3): each is one file behind the
//! [`Regularizer`] trait plus one line in [`REGISTRY`]. A regularizer turns the student's and
//! the teacher's attribution-layer activations into a pair of maps; by default the configured
//! [`MapDistance`] compares them, and a regularizer with its own loss (e2KD) overrides
//! [`Regularizer::loss`]. Each entry builds its regularizer from the matching settings, taking
//! its strength and options from them and checking them.

pub mod e2kd;
pub mod ewa;
pub mod none;
pub mod settings;
pub mod sswa;
pub mod swa;

pub use settings::{MatchConfig, MatchLayer, MatchTarget, WeightsGradient};

use anyhow::{Result, bail};
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a regularizer sees for one batch of matched (image, class) pairs.
pub struct MatchInputs {
    /// Student activations at the matched layer (P, Cs, h, w), tracked for autodiff.
    pub student_features: Tensor<4>,
    /// Student Grad-CAM channel weights for each pair's class (P, Cs), tracked (closed form).
    pub student_weights: Tensor<2>,
    /// Teacher activations at the matched layer (P, Ct, h, w), constants.
    pub teacher_features: Tensor<4>,
    /// Teacher Grad-CAM channel weights (P, Ct), constants.
    pub teacher_weights: Tensor<2>,
    /// Side of the (square) network input in pixels, for maps compared at input resolution.
    pub input_side: usize,
}

/// A matching regularizer: produces (student map, teacher map), each (P, h, w). `Send + Sync`:
/// lockstep students share it across threads.
pub trait Regularizer: Send + Sync {
    /// Name used in configs and reports.
    fn name(&self) -> &'static str;
    /// Whether Grad-CAM channel weights are needed (skips their computation otherwise).
    fn needs_weights(&self) -> bool;
    /// The two maps to match, or `None` when the regularizer adds no loss.
    fn maps(&self, inputs: &MatchInputs, rng: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)>;
    /// Its strength beta (0 for `none`).
    fn beta(&self) -> f64;
    /// The un-weighted loss between the student's maps (tracked) and the teacher's (constants):
    /// by default the configured distance, scaled as configured.
    fn loss(&self, student: Tensor<3>, teacher: Tensor<3>, cfg: &MatchConfig) -> Tensor<1> {
        cfg.distance.scaled_loss(student, teacher, cfg.beta_scale)
    }
}

/// A registry line: a regularizer's name and how it is built from the matching settings.
pub struct Entry {
    /// Name used in configs and reports.
    pub name: &'static str,
    /// Builds the regularizer, checking its strength and options.
    pub build: fn(&MatchConfig) -> Result<Box<dyn Regularizer>>,
}

/// Every regularizer, in report order.
pub static REGISTRY: &[Entry] = &[
    none::ENTRY,
    ewa::ENTRY,
    swa::ENTRY,
    sswa::ENTRY,
    e2kd::ENTRY,
];

/// Names of every registered regularizer, in report order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Builds the regularizer `name` from the matching settings; an unknown name is an error
/// listing the known ones.
pub fn by_name(name: &str, cfg: &MatchConfig) -> Result<Box<dyn Regularizer>> {
    let entry = REGISTRY.iter().find(|e| e.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown regularizer '{name}' (known: {})",
            names().join(", ")
        )
    })?;
    (entry.build)(cfg)
}

/// A strength that must be a positive number; `key` names it in the error.
pub fn positive_beta(beta: f64, key: &str, regularizer: &str) -> Result<f64> {
    if !(beta.is_finite() && beta > 0.0) {
        bail!("{key} must be a positive number for regularizer '{regularizer}', got {beta}");
    }
    Ok(beta)
}

/// How SSWA drops teacher channels.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SswaMode {
    /// The authors' code: exactly round(C * drop) teacher channels, chosen once per batch.
    FixedCount,
    /// The paper's eq. (6): an i.i.d. Bernoulli(drop) mask per pair and channel.
    Bernoulli,
}

/// The paper's regularizers, the default grid (naive, EWA, SWA, SSWA).
pub const PAPER: &[&str] = &["none", "ewa", "swa", "sswa"];

/// How two maps are compared in the loss.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MapDistance {
    /// The authors' code: mean over pairs and positions of the squared difference of the
    /// l2-normalised maps (their beta values 100/50 are on this scale).
    MeanSquared,
    /// The paper's eq. (2): mean over pairs of the l2 norm of the difference of normalised maps.
    L2,
}

/// The map size on which the paper's betas are defined: 14×14, VGG16's last conv output at 224 px.
pub const PAPER_MAP_POSITIONS: usize = 14 * 14;

/// How the matching loss is scaled before beta multiplies it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BetaScale {
    /// The same beta means the same pull on a map of any size, on the paper's 14×14 scale:
    /// a mean-squared loss is multiplied by (positions / 196), i.e. it becomes the per-map sum
    /// of squared differences over 196. Nearest-upsampling both maps leaves it unchanged, and on
    /// 14×14 maps it equals the authors' loss, so the paper's betas (100 EWA, 50 SWA/SSWA) apply
    /// at any resolution. The `l2` distance is scale-free already and is not changed.
    #[default]
    PaperMap,
    /// The authors' code as it is: the mean over map positions, so the pull of a given beta
    /// shrinks with the number of positions (the paper's betas are then right only for 14×14).
    PerPosition,
}

impl BetaScale {
    /// The factor applied to a `distance` loss over maps of `positions` positions.
    pub fn factor(self, distance: MapDistance, positions: usize) -> f64 {
        match (self, distance) {
            (BetaScale::PaperMap, MapDistance::MeanSquared) => {
                positions as f64 / PAPER_MAP_POSITIONS as f64
            }
            _ => 1.0,
        }
    }
}

/// Each map (P, h, w) divided by its l2 norm; the epsilon keeps the gradient finite at 0.
pub fn l2_normalize(maps: Tensor<3>) -> Tensor<2> {
    let flat: Tensor<2> = maps.flatten(1, 2);
    let norm = flat
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .add_scalar(1e-12)
        .sqrt();
    flat / norm
}

impl MapDistance {
    /// The matching loss between student and teacher maps (teacher maps are constants), scaled
    /// as `scale` says.
    pub fn scaled_loss(
        self,
        student: Tensor<3>,
        teacher: Tensor<3>,
        scale: BetaScale,
    ) -> Tensor<1> {
        let [_, h, w] = student.dims();
        self.loss(student, teacher)
            .mul_scalar(scale.factor(self, h * w))
    }

    /// The matching loss between student and teacher maps (teacher maps are constants).
    pub fn loss(self, student: Tensor<3>, teacher: Tensor<3>) -> Tensor<1> {
        let diff = l2_normalize(student) - l2_normalize(teacher.detach());
        match self {
            MapDistance::MeanSquared => diff.powi_scalar(2).mean(),
            MapDistance::L2 => diff
                .powi_scalar(2)
                .sum_dim(1)
                .add_scalar(1e-12)
                .sqrt()
                .mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(values: Vec<f32>, side: usize) -> Tensor<3> {
        Tensor::from_data(TensorData::new(values, [1, side, side]), &Device::flex())
    }

    /// Nearest-neighbour upsampling of a side x side map by 2 in each direction.
    fn upsample2(v: &[f32], side: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for y in 0..2 * side {
            for x in 0..2 * side {
                out.push(v[(y / 2) * side + x / 2]);
            }
        }
        out
    }

    fn loss_of(a: &[f32], b: &[f32], side: usize, d: MapDistance, s: BetaScale) -> f32 {
        d.scaled_loss(maps(a.to_vec(), side), maps(b.to_vec(), side), s)
            .into_scalar::<f32>()
    }

    #[test]
    fn paper_map_scale_gives_the_same_pull_at_any_resolution() {
        // Upsampling by 2 multiplies positions by 4 and each normalised value by 1/2, so the
        // per-map sum of squared differences is unchanged; the per-position mean drops 4x.
        let a = [1.0, 0.0, 2.0, 0.5, 0.0, 3.0, 1.0, 1.0, 0.2];
        let b = [0.0, 1.0, 1.0, 0.5, 2.0, 0.0, 0.3, 1.0, 0.0];
        let (a2, b2) = (upsample2(&a, 3), upsample2(&b, 3));
        let ms = MapDistance::MeanSquared;
        let small = loss_of(&a, &b, 3, ms, BetaScale::PaperMap);
        let large = loss_of(&a2, &b2, 6, ms, BetaScale::PaperMap);
        assert!((small - large).abs() < 1e-6 * small, "{small} vs {large}");
        let small_raw = loss_of(&a, &b, 3, ms, BetaScale::PerPosition);
        let large_raw = loss_of(&a2, &b2, 6, ms, BetaScale::PerPosition);
        assert!((small_raw / large_raw - 4.0).abs() < 1e-4);
        // by hand: ||a/|a| - b/|b|||^2 / 196 on the paper scale
        let unit = |v: &[f32]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let (ua, ub) = (unit(&a), unit(&b));
        let sq: f32 = ua.iter().zip(&ub).map(|(x, y)| (x - y).powi(2)).sum();
        assert!(
            (small - sq / 196.0).abs() < 1e-6,
            "{small} vs {}",
            sq / 196.0
        );
        // at 14x14 the paper scale is the authors' mean
        assert_eq!(BetaScale::PaperMap.factor(ms, 196), 1.0);
        // the l2 distance is scale-free and left alone
        let l2 = MapDistance::L2;
        let l2_small = loss_of(&a, &b, 3, l2, BetaScale::PaperMap);
        let l2_large = loss_of(&a2, &b2, 6, l2, BetaScale::PaperMap);
        assert!((l2_small - sq.sqrt()).abs() < 1e-5 && (l2_small - l2_large).abs() < 1e-5);
    }
}
