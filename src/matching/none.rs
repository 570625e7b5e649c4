//! Naive fine-tuning: no attribution matching.

use super::{MatchInputs, Regularizer};
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// The `none` regularizer (the paper's "naive" baseline).
pub struct NoMatching;

impl Regularizer for NoMatching {
    fn name(&self) -> &'static str {
        "none"
    }
    fn needs_weights(&self) -> bool {
        false
    }
    fn maps(&self, _: &MatchInputs, _: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)> {
        None
    }
}
