//! EWA: equally weighted collapsed activation (attention transfer), `M = mean_c A_c^2`.

use super::{Entry, MatchConfig, MatchInputs, Regularizer, positive_beta};
use anyhow::Result;
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// Equal-weight activation matching (paper eq. 3; the code's channel mean differs from the
/// paper's sum by a constant that normalisation removes).
pub struct Ewa {
    /// Strength (`matching.beta_ewa`; paper: 100).
    pub beta: f64,
}

/// `mean_c A_c^2` of activations (P, C, h, w) -> (P, h, w).
pub fn activation_map(features: Tensor<4>) -> Tensor<3> {
    features.powi_scalar(2).mean_dim(1).squeeze_dim(1)
}

impl Regularizer for Ewa {
    fn name(&self) -> &'static str {
        "ewa"
    }
    fn needs_weights(&self) -> bool {
        false
    }
    fn maps(&self, inp: &MatchInputs, _: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)> {
        Some((
            activation_map(inp.student_features.clone()),
            activation_map(inp.teacher_features.clone()),
        ))
    }
    fn beta(&self) -> f64 {
        self.beta
    }
}

/// Registry line.
pub const ENTRY: Entry = Entry { name: "ewa", build };

fn build(cfg: &MatchConfig) -> Result<Box<dyn Regularizer>> {
    let beta = positive_beta(cfg.beta_ewa, "matching.beta_ewa", "ewa")?;
    Ok(Box::new(Ewa { beta }))
}
