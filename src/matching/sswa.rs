//! SSWA: stochastic SWA; teacher channel weights are randomly dropped (paper eq. 6).

use super::{Entry, MatchConfig, MatchInputs, Regularizer, SswaMode, positive_beta};
use crate::attribution::gradcam::cam_from_weights;
use anyhow::{Result, bail};
use burn::prelude::*;
use rand::Rng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// Grad-CAM matching against a teacher map with randomly dropped channels.
pub struct Sswa {
    /// Fixed-count (authors' code) or Bernoulli (paper).
    pub mode: SswaMode,
    /// Drop rate in [0, 1).
    pub drop: f64,
    /// Strength (`matching.beta_swa`, shared with SWA as in the paper: 50).
    pub beta: f64,
}

impl Sswa {
    /// Keep mask (P, C): 1 keeps a teacher channel's weight, 0 drops it.
    pub fn keep_mask(&self, pairs: usize, channels: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        match self.mode {
            SswaMode::FixedCount => {
                let count = ((channels as f64) * self.drop).round() as usize;
                let mut row = vec![1f32; channels];
                for c in sample(rng, channels, count.min(channels)) {
                    row[c] = 0.0;
                }
                row.repeat(pairs)
            }
            SswaMode::Bernoulli => (0..pairs * channels)
                .map(|_| {
                    if rng.random::<f64>() < self.drop {
                        0.0
                    } else {
                        1.0
                    }
                })
                .collect(),
        }
    }
}

impl Regularizer for Sswa {
    fn name(&self) -> &'static str {
        "sswa"
    }
    fn needs_weights(&self) -> bool {
        true
    }
    fn maps(&self, inp: &MatchInputs, rng: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)> {
        let [p, c] = inp.teacher_weights.dims();
        let keep = self.keep_mask(p, c, rng);
        let keep =
            Tensor::<2>::from_data(TensorData::new(keep, [p, c]), &inp.teacher_weights.device());
        Some((
            cam_from_weights(inp.student_features.clone(), inp.student_weights.clone()),
            cam_from_weights(
                inp.teacher_features.clone(),
                inp.teacher_weights.clone() * keep,
            ),
        ))
    }
    fn beta(&self) -> f64 {
        self.beta
    }
}

/// Registry line.
pub const ENTRY: Entry = Entry {
    name: "sswa",
    build,
};

fn build(cfg: &MatchConfig) -> Result<Box<dyn Regularizer>> {
    let beta = positive_beta(cfg.beta_swa, "matching.beta_swa", "sswa")?;
    if !(0.0..1.0).contains(&cfg.drop) {
        bail!("sswa drop rate must be in [0, 1), got {}", cfg.drop);
    }
    Ok(Box::new(Sswa {
        mode: cfg.sswa_mode,
        drop: cfg.drop,
        beta,
    }))
}
