//! Excitation Backprop (Zhang et al., ECCV 2016): the marginal winning probability of each
//! unit, passed top-down with `P(a_i) = Σ_j P(a_j) a_i w⁺_ij / Σ_i' a_i' w⁺_i'j` from
//! probability 1 at the explained class. Biases take no share, so the probabilities at every
//! layer sum to 1 (where a unit with probability has any excitatory input).
//!
//! As in Zhang et al. and TorchRay, the map is read at an intermediate layer, not at the
//! (signed) input image: the first activation at a quarter of the input side (VGG's pool2, a
//! ResNet's first stage with the ImageNet stem), or the attribution layer when the network
//! is shallower. It is the sum of the probabilities over channels.
//!
//! Contrastive EBP (`c-ebp`): the probabilities of the class minus those of its "dual" (the
//! same output unit with negated weights), both taken at the attribution layer (Grad-CAM's;
//! TorchRay uses pool5, one pool later), then passed down to the map layer; the map is the
//! positive part.

use super::Attribution;
use super::lrp::{Rule, apply_rule};
use super::propagation::{Position, Walk, WeightedStep, positive_split};
use crate::models::Network;
use crate::models::layers::{LayerGraph, WeightLayer};
use anyhow::Result;
use burn::prelude::*;
use burn::tensor::activation::relu;

/// The excitation rule (z+ without bias), with the output layer's weights negated for the
/// contrastive dual.
#[derive(Clone, Copy, Debug, Default)]
pub struct Excitation {
    /// Negate the output layer's weights (the contrastive dual).
    pub negate_output: bool,
}

impl WeightedStep for Excitation {
    fn step(
        &self,
        layer: &WeightLayer,
        a: &Tensor<4>,
        r: Tensor<4>,
        position: Position,
    ) -> Result<Tensor<4>> {
        if self.negate_output && position == Position::Output {
            let dual = WeightLayer {
                weight: layer.weight.clone().neg(),
                ..layer.clone()
            };
            return Ok(apply_rule(Rule::ZPlus, &dual, a, r));
        }
        Ok(apply_rule(Rule::ZPlus, layer, a, r))
    }

    /// Winning probability passes to the addition's excitatory (positive) summands.
    fn residual_split(&self, zb: Tensor<4>, zs: Tensor<4>, r: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        positive_split(zb, zs, r)
    }
}

/// Index into [`LayerGraph::activations`] of the map layer: the first activation whose side is
/// at most a quarter of the input's, not deeper than the attribution layer.
pub fn map_layer(graph: &LayerGraph, acts: &[Tensor<4>]) -> usize {
    let side = acts[0].dims()[2];
    (1..=graph.features_at)
        .find(|&i| 4 * acts[i].dims()[2] <= side)
        .unwrap_or(graph.features_at)
}

/// Marginal winning probabilities at every activation from `acts[to]` up to the logits,
/// starting from probability 1 at `classes[n]`.
pub fn winning_probabilities(
    model: &Network,
    x: Tensor<4>,
    classes: &[usize],
    to: Option<usize>,
) -> Result<(Vec<Tensor<4>>, usize)> {
    let walk = Walk::new(model, x, classes)?;
    let to = to.unwrap_or_else(|| map_layer(&walk.graph, &walk.acts));
    let levels = walk.levels(
        walk.top.clone(),
        walk.logits_at(),
        to,
        &Excitation::default(),
    )?;
    Ok((levels, to))
}

/// Excitation Backprop maps (marginal winning probability summed over channels).
pub struct ExcitationBackprop;

impl Attribution for ExcitationBackprop {
    fn name(&self) -> &'static str {
        "ebp"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        let (mut p, _) = winning_probabilities(model, x, classes, None)?;
        Ok(relu(p.swap_remove(0).sum_dim(1)).squeeze_dim(1))
    }
}

/// Contrastive Excitation Backprop maps.
pub struct ContrastiveExcitationBackprop;

impl Attribution for ContrastiveExcitationBackprop {
    fn name(&self) -> &'static str {
        "c-ebp"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        let difference = contrastive_probabilities(model, x, classes)?;
        Ok(relu(difference.sum_dim(1)).squeeze_dim(1))
    }
}

/// The class's winning probabilities minus its dual's, at the map layer (before the positive
/// part is taken): both are distributions, so this sums to zero per image.
pub fn contrastive_probabilities(
    model: &Network,
    x: Tensor<4>,
    classes: &[usize],
) -> Result<Tensor<4>> {
    let walk = Walk::new(model, x, classes)?;
    let contrast = walk.graph.features_at;
    let at_contrast = |negate_output| {
        let step = Excitation { negate_output };
        walk.down(walk.top.clone(), walk.logits_at(), contrast, &step)
    };
    let difference = at_contrast(false)? - at_contrast(true)?;
    let to = map_layer(&walk.graph, &walk.acts);
    walk.down(difference, contrast, to, &Excitation::default())
}
