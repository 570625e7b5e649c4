//! Integrated Gradients (Sundararajan et al., ICML 2017) on the input pixels:
//! `IG_i = (x_i - x'_i) * mean_k d logit_t / dx_i at x' + (k + 1/2)/m (x - x')`, the midpoint
//! Riemann sum over `m` steps, with the all-zero baseline `x'` in the network's normalised input
//! space (the training set's mean image). The map is the positive part of the sum over colour
//! channels, at input resolution: evidence for the class, as Grad-CAM's ReLU keeps it.

use super::{Attribution, one_hot};
use crate::models::Network;
use anyhow::{Result, anyhow, ensure};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Riemann steps of the evaluation method (Captum's default is 50; 32 keeps the completeness
/// gap of the demo's networks under about 1% of the logit difference).
pub const DEFAULT_STEPS: usize = 32;

/// Integrated Gradients of `logit[n, classes[n]]` with respect to the input, (N, 3, H, W),
/// from the zero baseline with `steps` midpoint steps.
pub fn integrated_gradients(
    model: &Network,
    x: Tensor<4>,
    classes: &[usize],
    steps: usize,
) -> Result<Tensor<4>> {
    ensure!(steps >= 1, "integrated gradients need at least one step");
    ensure!(x.dims()[0] == classes.len(), "one class per image expected");
    let k = model.num_classes();
    ensure!(
        classes.iter().all(|&c| c < k),
        "class index out of range 0..{k}"
    );
    // the input is tracked, so BatchNorm would take its training path (batch statistics)
    // unless the layers' training flags are off: `valid` turns them off whatever the caller's
    // module state
    let model = model.valid();
    let device = x.device();
    let target = one_hot(classes, k, &device).inner();
    let mut total = x.zeros_like();
    for s in 0..steps {
        let alpha = (s as f64 + 0.5) / steps as f64;
        let point = x
            .clone()
            .mul_scalar(alpha)
            .inner()
            .autodiff()
            .require_grad();
        let selected = (model.forward(point.clone()) * target.clone()).sum();
        let grads = selected.backward();
        let g = point
            .grad(&grads)
            .ok_or_else(|| anyhow!("autodiff produced no gradient for the input"))?;
        total = total + g;
    }
    Ok(x * total.div_scalar(steps as f64))
}

/// Integrated Gradients maps: the positive part of the channel sum, at input resolution.
pub struct IntegratedGradients;

impl Attribution for IntegratedGradients {
    fn name(&self) -> &'static str {
        "integrated-gradients"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        let ig = integrated_gradients(model, x, classes, DEFAULT_STEPS)?;
        Ok(relu(ig.sum_dim(1)).squeeze_dim(1))
    }
}
