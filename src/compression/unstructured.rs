//! Unstructured magnitude pruning (Han et al. 2015), iterative: after round k the conv weights
//! are pruned to the cumulative rate `1 - (1 - r)^k` by one global magnitude threshold over all
//! conv layers (the head is not pruned, as in the authors' code), or per layer as an option.
//! Fine-tuning keeps pruned weights exactly zero ([`crate::training`] re-applies the masks after
//! every optimiser step).

use super::{Compression, bce_with_logits};
use crate::models::Vgg;
use anyhow::{Result, ensure};
use burn::module::{Module, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Where the magnitude threshold is computed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PruneScope {
    /// One threshold over all conv weights (the authors').
    Global,
    /// The same rate in every conv layer.
    PerLayer,
}

/// Iterative magnitude pruning settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MagnitudePruning {
    /// Rate r pruned from the surviving weights in each round (paper: 0.2).
    pub rate: f64,
    /// Number of rounds (paper: 16, i.e. 97.2%).
    pub rounds: usize,
    /// Global or per-layer threshold.
    pub scope: PruneScope,
    /// Fine-tuning epochs after each round (paper: 30); other settings from `prune_train`.
    pub epochs_per_round: usize,
}

impl Default for MagnitudePruning {
    fn default() -> Self {
        MagnitudePruning {
            rate: 0.2,
            rounds: 16,
            scope: PruneScope::Global,
            epochs_per_round: 1,
        }
    }
}

/// Cumulative pruned fraction after `round` rounds of rate `r`.
pub fn cumulative_rate(r: f64, round: usize) -> f64 {
    1.0 - (1.0 - r).powi(round as i32)
}

fn weights_of(model: &Vgg) -> Vec<Vec<f32>> {
    model
        .blocks
        .iter()
        .map(|b| {
            b.conv
                .weight
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default()
        })
        .collect()
}

/// The magnitude below which weights are pruned so that `fraction` of `values` is pruned
/// (ties at the threshold are pruned too, so at least that fraction goes).
fn threshold(values: &mut [f32], fraction: f64) -> f32 {
    let count = ((values.len() as f64) * fraction).round() as usize;
    if count == 0 {
        return -1.0;
    }
    let k = count.min(values.len()) - 1;
    let (_, nth, _) = values.select_nth_unstable_by(k, |a, b| a.abs().total_cmp(&b.abs()));
    nth.abs()
}

/// Prunes conv weights to the given total fraction (weights already zero count as pruned).
pub fn prune_to(model: Vgg, fraction: f64, scope: PruneScope) -> Result<Vgg> {
    ensure!(
        (0.0..1.0).contains(&fraction),
        "pruning fraction must be in [0, 1), got {fraction}"
    );
    let weights = weights_of(&model);
    let thresholds: Vec<f32> = match scope {
        PruneScope::Global => {
            let mut all: Vec<f32> = weights.iter().flatten().copied().collect();
            vec![threshold(&mut all, fraction); weights.len()]
        }
        PruneScope::PerLayer => weights
            .iter()
            .map(|w| threshold(&mut w.clone(), fraction))
            .collect(),
    };
    let mut model = model;
    for (block, t) in model.blocks.iter_mut().zip(thresholds) {
        let keep = block.conv.weight.val().abs().greater_elem(t).float();
        block.conv.weight = mask_param(block.conv.weight.clone(), &keep);
    }
    Ok(model)
}

/// `w * mask` as a fresh leaf: the product is detached so no autodiff graph from an earlier
/// step hangs on the parameter, and gradient tracking is restored where it was on.
fn mask_param(param: Param<Tensor<4>>, mask: &Tensor<4>) -> Param<Tensor<4>> {
    param.map(|w| {
        let tracked = w.is_require_grad();
        let masked = (w * mask.clone().detach()).detach();
        if tracked {
            masked.require_grad()
        } else {
            masked
        }
    })
}

/// Fraction of conv weights that are exactly zero.
pub fn sparsity(model: &Vgg) -> f64 {
    let w = weights_of(model);
    let total: usize = w.iter().map(Vec::len).sum();
    let zeros: usize = w.iter().flatten().filter(|v| **v == 0.0).count();
    zeros as f64 / total.max(1) as f64
}

/// Keep-masks (1 = weight alive) of every conv layer, read from the exact zeros of a pruned
/// model; re-applied after each optimiser step so pruned weights stay zero.
#[derive(Clone, Debug)]
pub struct ConvMasks {
    masks: Vec<Tensor<4>>,
}

impl ConvMasks {
    /// Masks of a model's current zeros.
    pub fn from_zeros(model: &Vgg) -> Self {
        let masks = model
            .blocks
            .iter()
            .map(|b| b.conv.weight.val().detach().not_equal_elem(0.0).float())
            .collect();
        ConvMasks { masks }
    }

    /// Zeroes the masked weights (keeps parameter ids, so optimiser state stays attached).
    pub fn apply(&self, model: Vgg) -> Vgg {
        let mut model = model;
        for (block, mask) in model.blocks.iter_mut().zip(&self.masks) {
            block.conv.weight = mask_param(block.conv.weight.clone(), mask);
        }
        model
    }
}

/// One round of magnitude pruning as a compression method: the student is the given network
/// pruned to `target` and fine-tuned on the ground truth alone (no KD term, as the authors).
pub struct PruningRound {
    /// Cumulative fraction after this round.
    pub target: f64,
    /// Threshold scope.
    pub scope: PruneScope,
}

impl Compression for PruningRound {
    fn name(&self) -> &'static str {
        "unstructured"
    }

    fn make_student(&self, base: &Vgg, device: &Device, _seed: u64) -> Result<Vgg> {
        prune_to(base.clone().fork(device).train(), self.target, self.scope)
    }

    fn task_loss(&self, student: Tensor<2>, _teacher: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        bce_with_logits(student, targets)
    }

    fn keeps_zeros(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::VggArch;

    #[test]
    fn masking_keeps_weights_trainable_and_zeros_exact() {
        let device = Device::flex().autodiff();
        let arch = VggArch {
            layout: "4,M,4,M".into(),
            input_size: 8,
            ..VggArch::default()
        };
        let model = prune_to(arch.init(&device, 0).unwrap(), 0.5, PruneScope::Global).unwrap();
        let masks = ConvMasks::from_zeros(&model);
        let model = masks.apply(model);
        assert!(model.blocks.iter().all(|b| b.conv.weight.is_require_grad()));
        assert!((sparsity(&model) - 0.5).abs() < 0.02);
        // a second backward works: no graph from the masking step is left on the weights
        for _ in 0..2 {
            let y = model.forward(Tensor::ones([2, 3, 8, 8], &device)).sum();
            let grads = y.backward();
            assert!(model.blocks[0].conv.weight.grad(&grads).is_some());
        }
    }
}
