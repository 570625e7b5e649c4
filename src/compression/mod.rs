//! Compression methods: each is one file behind the [`Compression`] trait. A method builds the
//! student from the teacher and defines the task part of the fine-tuning loss; attribution
//! matching ([`crate::matching`]) is added on top by the shared fine-tuning loop.

pub mod kd;
pub mod structured;
pub mod structured_resnet;
pub mod unstructured;

use crate::models::Network;
use anyhow::Result;
use burn::prelude::*;

/// A compression method with a fine-tuning stage.
pub trait Compression {
    /// Name used in configs and reports (e.g. `kd`).
    fn name(&self) -> &'static str;
    /// Builds the (untrained or freshly compressed) student from `base` (the teacher, or the
    /// previous round's network); `seed` seeds any fresh weights.
    fn make_student(&self, base: &Network, device: &Device, seed: u64) -> Result<Network>;
    /// Task loss of one batch: student logits (tracked), teacher logits and multi-hot targets
    /// (constants).
    fn task_loss(&self, student: Tensor<2>, teacher: Tensor<2>, targets: Tensor<2>) -> Tensor<1>;
    /// Whether fine-tuning must keep the student's zero weights at zero (unstructured pruning).
    fn keeps_zeros(&self) -> bool {
        false
    }
}

/// Mean multi-label soft-margin loss (binary cross-entropy with logits, averaged over
/// samples and classes), written stably: `softplus(z) - y z`.
pub fn bce_with_logits(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (softplus(logits.clone()) - logits * targets).mean()
}

/// Stable `log(1 + exp(x))` = `max(x, 0) + log1p(exp(-|x|))`. The sign is taken as a
/// constant mask with sign(0) = +1, so the gradient is exactly sigmoid(x) everywhere,
/// including x = 0 (where `abs` and `clamp_min` would give 1 instead of 1/2).
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let positive = x.clone().detach().greater_equal_elem(0.0).float();
    let sign = positive.clone().mul_scalar(2.0).sub_scalar(1.0);
    x.clone() * positive + (x * sign).neg().exp().log1p()
}

/// Stable `log sigmoid(x) = -softplus(-x)`.
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    softplus(x.neg()).neg()
}
