//! SWA: sensitivity-weighted activation matching, i.e. Grad-CAM maps (paper eq. 4).

use super::{Entry, MatchConfig, MatchInputs, Regularizer, positive_beta};
use crate::attribution::gradcam::cam_from_weights;
use anyhow::Result;
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// Grad-CAM matching: `M = ReLU(sum_c U_c A_c)` for both networks.
pub struct Swa {
    /// Strength (`matching.beta_swa`; paper: 50).
    pub beta: f64,
}

impl Regularizer for Swa {
    fn name(&self) -> &'static str {
        "swa"
    }
    fn needs_weights(&self) -> bool {
        true
    }
    fn maps(&self, inp: &MatchInputs, _: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)> {
        Some((
            cam_from_weights(inp.student_features.clone(), inp.student_weights.clone()),
            cam_from_weights(inp.teacher_features.clone(), inp.teacher_weights.clone()),
        ))
    }
    fn beta(&self) -> f64 {
        self.beta
    }
}

/// Registry line.
pub const ENTRY: Entry = Entry { name: "swa", build };

fn build(cfg: &MatchConfig) -> Result<Box<dyn Regularizer>> {
    let beta = positive_beta(cfg.beta_swa, "matching.beta_swa", "swa")?;
    Ok(Box::new(Swa { beta }))
}
