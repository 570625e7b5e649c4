//! Grad-CAM (Selvaraju et al. 2017) at the last conv block: `ReLU(sum_c U_c A_c)`.
//!
//! Two forms: [`GradCam`] obtains `d logit_t / dA` from burn's autodiff and works for any head;
//! [`cam_from_weights`] with [`super::closed_form::gradcam_weights`] is the closed form through the
//! piecewise-linear head, built from ordinary tracked ops so it can sit inside a training loss.

use super::{Attribution, one_hot};
use crate::models::{HeadDropout, Network};
use anyhow::{Result, ensure};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// How the channel weights pool the spatial gradient. ReLU makes the two differ by a positive
/// scale only (H*W), which every normalised use removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Spatial mean (original Grad-CAM).
    Mean,
    /// Spatial sum (the authors' code).
    Sum,
}

/// `ReLU(sum_c U_c A_c)` for features A (N, C, h, w) and weights U (N, C) -> (N, h, w).
pub fn cam_from_weights(features: Tensor<4>, weights: Tensor<2>) -> Tensor<3> {
    let [n, c, _, _] = features.dims();
    let u: Tensor<4> = weights.reshape([n, c, 1, 1]);
    relu((features * u).sum_dim(1)).squeeze_dim(1)
}

/// Grad-CAM through burn's autodiff (first order only): general, used for evaluation.
pub struct GradCam;

impl GradCam {
    /// d(sum_n logit[n, t_n]) / dA for evaluation-mode features A.
    pub fn gradient(model: &Network, features: Tensor<4>, classes: &[usize]) -> Result<Tensor<4>> {
        let device = features.device();
        let a = features.inner().autodiff().require_grad();
        let logits = model.head_logits(a.clone());
        let k = logits.dims()[1];
        ensure!(
            classes.iter().all(|&c| c < k),
            "class index out of range 0..{k}"
        );
        let target = one_hot(classes, k, &device).inner();
        let selected = (logits * target).sum();
        let grads = selected.backward();
        a.grad(&grads).ok_or_else(|| {
            anyhow::anyhow!("autodiff produced no gradient for the attribution layer")
        })
    }

    /// Grad-CAM maps for evaluation-mode features with the given spatial pooling.
    pub fn maps_from_features(
        model: &Network,
        features: Tensor<4>,
        classes: &[usize],
        pooling: Pooling,
    ) -> Result<Tensor<3>> {
        let g = Self::gradient(model, features.clone(), classes)?;
        let w: Tensor<2> = match pooling {
            Pooling::Mean => g.mean_dims(&[2, 3]).flatten(1, 3),
            Pooling::Sum => g.sum_dims(&[2, 3]).flatten(1, 3),
        };
        Ok(cam_from_weights(features.inner(), w))
    }
}

impl Attribution for GradCam {
    fn name(&self) -> &'static str {
        "gradcam"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        ensure!(x.dims()[0] == classes.len(), "one class per image expected");
        let features = model.features(x);
        Self::maps_from_features(model, features, classes, Pooling::Mean)
    }
}

/// Grad-CAM through the closed-form head gradient (no autodiff; same maps up to scale).
pub struct GradCamClosedForm;

impl GradCamClosedForm {
    /// Closed-form maps from features; differentiable when `features` and the model are tracked.
    pub fn maps_from_features(
        model: &Network,
        features: Tensor<4>,
        classes: &[usize],
        drop: &HeadDropout,
    ) -> Tensor<3> {
        let k = model.num_classes();
        let target = one_hot(classes, k, &features.device());
        let w = super::closed_form::gradcam_weights(&model.head(), features.clone(), target, drop);
        cam_from_weights(features, w)
    }
}

impl Attribution for GradCamClosedForm {
    fn name(&self) -> &'static str {
        "gradcam-closed"
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        ensure!(x.dims()[0] == classes.len(), "one class per image expected");
        let k = model.num_classes();
        ensure!(
            classes.iter().all(|&c| c < k),
            "class index out of range 0..{k}"
        );
        let features = model.features(x);
        Ok(Self::maps_from_features(
            model,
            features,
            classes,
            &HeadDropout::none(model.head().layers()),
        ))
    }
}
