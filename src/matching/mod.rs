//! Attribution-matching regularizers (paper section 3): each is one file behind the
//! [`Regularizer`] trait, listed in [`by_name`]. A regularizer turns the student's and the
//! teacher's attribution-layer activations into a pair of maps; [`MapDistance`] compares them.

pub mod ewa;
pub mod none;
pub mod sswa;
pub mod swa;

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
}

/// A matching regularizer: produces (student map, teacher map), each (P, h, w).
pub trait Regularizer {
    /// Name used in configs and reports.
    fn name(&self) -> &'static str;
    /// Whether Grad-CAM channel weights are needed (skips their computation otherwise).
    fn needs_weights(&self) -> bool;
    /// The two maps to match, or `None` when the regularizer adds no loss.
    fn maps(&self, inputs: &MatchInputs, rng: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)>;
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

/// Builds a regularizer by name (`none`, `ewa`, `swa`, `sswa`).
pub fn by_name(name: &str, sswa_mode: SswaMode, drop: f64) -> Result<Box<dyn Regularizer>> {
    Ok(match name {
        "none" => Box::new(none::NoMatching),
        "ewa" => Box::new(ewa::Ewa),
        "swa" => Box::new(swa::Swa),
        "sswa" => {
            if !(0.0..1.0).contains(&drop) {
                bail!("sswa drop rate must be in [0, 1), got {drop}");
            }
            Box::new(sswa::Sswa {
                mode: sswa_mode,
                drop,
            })
        }
        other => bail!("unknown regularizer '{other}' (known: none, ewa, swa, sswa)"),
    })
}

/// Names of all regularizers, in report order.
pub const ALL: &[&str] = &["none", "ewa", "swa", "sswa"];

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
