//! Unstructured magnitude pruning (Han et al. 2015), iterative: after round k the conv weights
//! are pruned to the cumulative rate `1 - (1 - r)^k` by one global magnitude threshold over all
//! conv layers (the head is not pruned, as in the authors' code), or per layer as an option.
//! It needs nothing from a family: every 4-D parameter (a convolution kernel) of any network is
//! found with burn's module visitor, in module order.
//! Fine-tuning keeps pruned weights exactly zero ([`crate::training`] re-applies the masks after
//! every optimiser step).

use super::{Budget, Compression, Method, PlannedStage, StepHook, bce_with_logits};
use crate::models::Network;
use anyhow::{Result, ensure};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
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

/// The values of every convolution kernel (4-D parameter), in module order.
fn weights_of(model: &Network) -> Vec<Vec<f32>> {
    struct Kernels(Vec<Vec<f32>>);
    impl ModuleVisitor for Kernels {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 4 {
                self.0.push(
                    param
                        .val()
                        .into_data()
                        .convert::<f32>()
                        .try_into_vec::<f32>()
                        .unwrap_or_default(),
                );
            }
        }
    }
    let mut kernels = Kernels(Vec::new());
    model.visit(&mut kernels);
    kernels.0
}

/// Multiplies every convolution kernel, in module order, by its mask.
struct MaskKernels<'a> {
    masks: &'a [Tensor<4>],
    next: usize,
}

impl ModuleMapper for MaskKernels<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 4 {
            return param;
        }
        let mask = self.masks[self.next].clone();
        self.next += 1;
        mask_param(param, mask)
    }
}

/// `model` with every convolution kernel multiplied by its mask (module order).
fn apply_masks(model: Network, masks: &[Tensor<4>]) -> Network {
    let mut mapper = MaskKernels { masks, next: 0 };
    let model = model.map(&mut mapper);
    debug_assert_eq!(mapper.next, masks.len(), "one mask per kernel");
    model
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
pub fn prune_to(model: Network, fraction: f64, scope: PruneScope) -> Result<Network> {
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
    let device = model.devices()[0].clone();
    let masks: Vec<Tensor<4>> = shapes_of(&model)
        .into_iter()
        .zip(weights.iter().zip(thresholds))
        .map(|(shape, (w, t))| {
            let keep: Vec<f32> = w.iter().map(|v| f32::from(v.abs() > t)).collect();
            Tensor::<1>::from_data(TensorData::new(keep, [w.len()]), &device).reshape(shape)
        })
        .collect();
    Ok(apply_masks(model, &masks))
}

/// The shapes of every convolution kernel, in module order.
fn shapes_of(model: &Network) -> Vec<[usize; 4]> {
    struct Shapes(Vec<[usize; 4]>);
    impl ModuleVisitor for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 4 {
                let d = param.val().dims();
                self.0.push([d[0], d[1], d[2], d[3]]);
            }
        }
    }
    let mut shapes = Shapes(Vec::new());
    model.visit(&mut shapes);
    shapes.0
}

/// `w * mask` as a fresh leaf: the product is detached so no autodiff graph from an earlier
/// step hangs on the parameter, and gradient tracking is restored where it was on.
fn mask_param<const D: usize>(param: Param<Tensor<D>>, mask: Tensor<4>) -> Param<Tensor<D>> {
    param.map(|w| {
        let tracked = w.is_require_grad();
        let mask: Tensor<D> = mask.reshape(w.shape());
        let masked = (w * mask.detach()).detach();
        if tracked {
            masked.require_grad()
        } else {
            masked
        }
    })
}

/// Fraction of conv weights that are exactly zero.
pub fn sparsity(model: &Network) -> f64 {
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
    pub fn from_zeros(model: &Network) -> Self {
        let device = model.devices()[0].clone();
        let masks = shapes_of(model)
            .into_iter()
            .zip(weights_of(model))
            .map(|(shape, w)| {
                let keep: Vec<f32> = w.iter().map(|v| f32::from(*v != 0.0)).collect();
                Tensor::<1>::from_data(TensorData::new(keep, [w.len()]), &device).reshape(shape)
            })
            .collect();
        ConvMasks { masks }
    }

    /// Whether any weight is masked (a dense network has nothing to keep at zero).
    pub fn prunes_any(&self) -> bool {
        self.masks
            .iter()
            .any(|m| m.clone().min().into_scalar::<f32>() < 1.0)
    }

    /// Zeroes the masked weights (keeps parameter ids, so optimiser state stays attached).
    pub fn apply(&self, model: Network) -> Network {
        apply_masks(model, &self.masks)
    }
}

impl MagnitudePruning {
    /// Checks the settings before any work starts.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..1.0).contains(&self.rate) && self.rounds >= 1,
            "unstructured: rate must be in [0, 1) and rounds at least 1"
        );
        Ok(())
    }
}

impl Method for MagnitudePruning {
    fn name(&self) -> &'static str {
        "unstructured"
    }
    fn validate(&self) -> Result<()> {
        MagnitudePruning::validate(self)
    }
    /// `rounds` stages: round k prunes the network of round k - 1 (the teacher for round 1) to
    /// the cumulative rate `1 - (1 - rate)^k` and fine-tunes it for `epochs_per_round` with the
    /// pruning budget.
    fn stages(&self) -> Result<Vec<PlannedStage>> {
        (1..=self.rounds)
            .map(|round| {
                let step = PruningRound {
                    target: cumulative_rate(self.rate, round),
                    scope: self.scope,
                };
                Ok(PlannedStage {
                    settings_key: serde_json::to_string(&(
                        step.target,
                        self.scope,
                        self.epochs_per_round,
                    ))?,
                    compression: Box::new(step),
                    budget: Budget::Prune,
                    epochs: Some(self.epochs_per_round),
                    round,
                })
            })
            .collect()
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

    fn make_student(&self, base: &Network, device: &Device, _seed: u64) -> Result<Network> {
        prune_to(base.clone().fork(device).train(), self.target, self.scope)
    }

    fn task_loss(&self, student: Tensor<2>, _teacher: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        bce_with_logits(student, targets)
    }

    /// Momentum and weight decay move pruned weights off zero; the masks of the freshly pruned
    /// student put them back after every step.
    fn step_hook(&self, student: &Network) -> Option<StepHook> {
        let masks = ConvMasks::from_zeros(student);
        Some(Box::new(move |model| masks.apply(model)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Arch, VggArch};

    #[test]
    fn masking_keeps_weights_trainable_and_zeros_exact() {
        let device = Device::flex().autodiff();
        let arch = VggArch {
            layout: "4,M,4,M".into(),
            input_size: 8,
            ..VggArch::default()
        };
        let model = prune_to(
            Arch::from(arch).init(&device, 0).unwrap(),
            0.5,
            PruneScope::Global,
        )
        .unwrap();
        let masks = ConvMasks::from_zeros(&model);
        let model = masks.apply(model);
        let vgg = model.as_vgg("test").unwrap();
        assert!(vgg.blocks.iter().all(|b| b.conv.weight.is_require_grad()));
        assert!((sparsity(&model) - 0.5).abs() < 0.02);
        // a second backward works: no graph from the masking step is left on the weights
        for _ in 0..2 {
            let y = model.forward(Tensor::ones([2, 3, 8, 8], &device)).sum();
            let grads = y.backward();
            assert!(vgg.blocks[0].conv.weight.grad(&grads).is_some());
        }
    }
}
