//! Naive fine-tuning: no attribution matching.

use super::{Entry, MatchConfig, MatchInputs, Regularizer};
use anyhow::Result;
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
    fn beta(&self) -> f64 {
        0.0
    }
}

/// Registry line.
pub const ENTRY: Entry = Entry {
    name: "none",
    build,
};

fn build(_: &MatchConfig) -> Result<Box<dyn Regularizer>> {
    Ok(Box::new(NoMatching))
}
