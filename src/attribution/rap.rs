//! Relative Attributing Propagation (Nam et al., AAAI 2020), following the authors' code
//! (`wjNam/Relative_Attributing_Propagation`, `RAP_relprop`):
//! 1. **Output layer:** each input's contribution `a_i w_it` to the explained logit; relevance
//!    is its *absolute* value, rescaled so the layer's relevance sums to the logit. Units that
//!    push strongly against the class are as relevant as those pushing for it (the paper's
//!    "relative influence").
//! 2. **Hidden layers:** positive and negative relevance of each unit are each passed to its
//!    excitatory inputs (z+ shares) and, scaled by the unit's inhibitory fraction
//!    `z⁻/(z⁺ + z⁻)`, to its inhibitory inputs (shares of `|w⁻| a`); then a uniform shift over
//!    the inputs that received anything restores the layer's total (relevance conservation).
//! 3. **Input layer:** the z^B rule with each image's own minimum and maximum as bounds.
//!
//! Pools and residual additions follow the common proportional rules of
//! [`super::propagation`]. Where the authors' conv and linear versions differ (the conv one
//! divides the negative excitatory part by the inhibitory total, which looks like a slip), both
//! use the linear one here. The map is the positive part of the input relevance summed over
//! colour channels. By construction the input relevance sums to the logit, biases included.

use super::Attribution;
use super::lrp::{Rule, apply_rule};
use super::propagation::{Position, Walk, WeightedStep, input_map, safe_div, transpose};
use crate::models::Network;
use crate::models::layers::WeightLayer;
use anyhow::Result;
use burn::prelude::*;

/// Per-image sum over (C, H, W), as (N, 1, 1, 1).
fn total(t: Tensor<4>) -> Tensor<4> {
    t.sum_dims(&[1, 2, 3])
}

/// The output layer: absolute contributions rescaled to sum to the selected logit.
fn output_step(layer: &WeightLayer, a: &Tensor<4>, r: Tensor<4>) -> Tensor<4> {
    let logit = total(layer.forward(a.clone()) * r.clone());
    let contributions = a.clone() * transpose(layer, layer.weight.clone(), r, a);
    let magnitude = contributions.abs();
    let scale = safe_div(logit, total(magnitude.clone()));
    magnitude * scale
}

/// A hidden layer: excitatory and inhibitory shares, then the shift that conserves the total.
fn hidden_step(layer: &WeightLayer, a: &Tensor<4>, r: Tensor<4>) -> Tensor<4> {
    let a = a.clone().clamp_min(0.0);
    let excitatory = layer.weight.clone().clamp_min(0.0);
    let inhibitory = layer.weight.clone().clamp_max(0.0).neg();
    let active = r.clone().not_equal_elem(0.0).float();
    let z_exc = layer.apply(a.clone(), excitatory.clone(), None) * active.clone();
    let z_inh = layer.apply(a.clone(), inhibitory.clone(), None) * active;
    let z_all = z_exc.clone() + z_inh.clone();
    let has_inh = z_inh.not_equal_elem(0.0).float();
    let spread = |w: &Tensor<4>, s: Tensor<4>| a.clone() * transpose(layer, w.clone(), s, &a);
    // every unit's relevance, positive and negative parts alike, to its excitatory inputs ...
    let to_exc = spread(&excitatory, safe_div(r.clone(), z_exc));
    // ... and its inhibitory fraction z_inh / z_all of it to the inhibitory inputs
    let to_inh = spread(&inhibitory, safe_div(r.clone(), z_all) * has_inh);
    let c = to_exc + to_inh;
    let received = c.clone().not_equal_elem(0.0).float();
    let excess = total(c.clone()) - total(r);
    let shift = safe_div(excess, total(received.clone()));
    c - received * shift
}

/// The RAP rule per layer position.
pub struct RapStep;

impl WeightedStep for RapStep {
    fn step(
        &self,
        layer: &WeightLayer,
        a: &Tensor<4>,
        r: Tensor<4>,
        position: Position,
    ) -> Result<Tensor<4>> {
        Ok(match position {
            Position::Output => output_step(layer, a, r),
            Position::Hidden => hidden_step(layer, a, r),
            Position::Input => apply_rule(Rule::ZBox, layer, a, r),
        })
    }
}

/// RAP relevance at the input image (N, 3, H, W) for `classes[n]`.
pub fn input_relevance(model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<4>> {
    Walk::new(model, x, classes)?.to_input(&RapStep)
}

/// Relative Attributing Propagation maps.
pub struct Rap;

impl Attribution for Rap {
    fn name(&self) -> &'static str {
        "rap"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        Ok(input_map(input_relevance(model, x, classes)?))
    }
}
