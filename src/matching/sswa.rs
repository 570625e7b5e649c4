//! SSWA: stochastic SWA; teacher channel weights are randomly dropped (paper eq. 6).

use super::{MatchInputs, Regularizer, SswaMode};
use crate::attribution::gradcam::cam_from_weights;
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
}
