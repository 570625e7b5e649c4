//! Grad-CAM++ (Chattopadhyay et al., WACV 2018) at the attribution layer, as pytorch-grad-cam
//! computes it: channel weights `w_c = sum_ij relu(g_ij) * a_ij` with
//! `a_ij = g_ij^2 / (2 g_ij^2 + (sum_ab A_ab) g_ij^3)` (0 where `g_ij = 0`), `g = d logit / dA`,
//! then `ReLU(sum_c w_c A_c)`. The second and third derivatives of the paper's exponential
//! output are powers of the first for a piecewise-linear head, which is why the gradient's
//! powers appear.

use super::Attribution;
use super::gradcam::{GradCam, cam_from_weights};
use crate::models::Network;
use anyhow::{Result, ensure};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Added to the denominator of `a_ij` (pytorch-grad-cam's value).
const EPS: f64 = 1e-6;

/// Grad-CAM++ channel weights (N, C) from features A and gradients g, both (N, C, h, w).
pub fn gradcam_pp_weights(features: Tensor<4>, grads: Tensor<4>) -> Tensor<2> {
    let g2 = grads.clone().powi_scalar(2);
    let g3 = g2.clone() * grads.clone();
    let activation_sums = features.sum_dims(&[2, 3]);
    let denominator = g2.clone().mul_scalar(2.0) + g3 * activation_sums;
    let alpha = (g2 / denominator.add_scalar(EPS)).mask_fill(grads.clone().equal_elem(0.0), 0.0);
    (relu(grads) * alpha).sum_dims(&[2, 3]).flatten(1, 3)
}

/// Grad-CAM++ through burn's autodiff.
pub struct GradCamPlusPlus;

impl Attribution for GradCamPlusPlus {
    fn name(&self) -> &'static str {
        "gradcam++"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        ensure!(x.dims()[0] == classes.len(), "one class per image expected");
        let features = model.features(x);
        let grads = GradCam::gradient(model, features.clone(), classes)?;
        let features = features.inner();
        let weights = gradcam_pp_weights(features.clone(), grads);
        Ok(cam_from_weights(features, weights))
    }
}
