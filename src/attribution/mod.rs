//! Attribution methods: each is one file behind the [`Attribution`] trait, listed in [`REGISTRY`].

pub mod closed_form;
pub mod excitation_backprop;
pub mod gradcam;
pub mod gradcam_pp;
pub mod integrated_gradients;
pub mod lrp;
pub mod propagation;
pub mod rap;

use crate::models::Network;
use anyhow::Result;
use burn::prelude::*;

/// An attribution method producing one map per image, at the method's own resolution (the
/// attribution layer for the CAM methods, an intermediate layer for Excitation Backprop, the
/// input pixels for Integrated Gradients, LRP and RAP); users upsample maps to the input size.
pub trait Attribution: Sync {
    /// Name used in configs and reports.
    fn name(&self) -> &'static str;
    /// Maps (N, h, w), non-negative, un-normalised, for class `classes[n]` of image n.
    /// `model` is in evaluation mode (plain device); `x` is a normalised batch.
    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>>;
}

/// All attribution methods, by name.
pub static REGISTRY: &[&dyn Attribution] = &[
    &gradcam::GradCam,
    &gradcam::GradCamClosedForm,
    &gradcam_pp::GradCamPlusPlus,
    &integrated_gradients::IntegratedGradients,
    &excitation_backprop::ExcitationBackprop,
    &excitation_backprop::ContrastiveExcitationBackprop,
    &lrp::LRP_ALPHA1_BETA0,
    &lrp::LRP_EPSILON_PLUS_FLAT,
    &rap::Rap,
];

/// Looks an attribution method up by name, with an error listing the known ones.
pub fn by_name(name: &str) -> Result<&'static dyn Attribution> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.name() == name)
        .ok_or_else(|| {
            let known: Vec<_> = REGISTRY.iter().map(|a| a.name()).collect();
            anyhow::anyhow!(
                "unknown attribution method '{name}' (known: {})",
                known.join(", ")
            )
        })
}

/// One-hot (N, K) float tensor for per-sample classes.
pub fn one_hot(classes: &[usize], num_classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; classes.len() * num_classes];
    for (n, &k) in classes.iter().enumerate() {
        v[n * num_classes + k] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [classes.len(), num_classes]), device)
}
