//! The piecewise-linear head contract every network family implements: after the attribution
//! layer A (N, C, h, w) comes a pool (max or global average), a channel-major flatten, linear
//! layers with ReLU between them, and dropout before each linear layer. Such a head is linear in
//! A once its ReLU and max-pool routing are fixed, which is what the closed-form Grad-CAM
//! gradient ([`crate::attribution::closed_form`]) needs; the families only describe their head
//! through [`PiecewiseLinearHead`], they do not compute gradients themselves.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

/// Dropout masks for the head's linear layers, drawn once per step so that the forward pass
/// and the closed-form Grad-CAM weights see the same mask (as autodiff would).
#[derive(Clone, Debug)]
pub struct HeadDropout {
    /// One (N, d_in) mask per linear layer, already scaled by 1/(1-p); `None` in eval mode.
    pub masks: Vec<Option<Tensor<2>>>,
}

impl HeadDropout {
    /// No dropout (evaluation).
    pub fn none(layers: usize) -> Self {
        HeadDropout {
            masks: vec![None; layers],
        }
    }
}

/// The pool between the attribution layer and the head's first linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadPooling {
    /// Non-overlapping max-pool with this kernel (= stride); a kernel equal to the map side is a
    /// global max-pool.
    Max {
        /// Kernel side.
        kernel: usize,
    },
    /// Global average pool (ResNet).
    GlobalAverage,
}

/// A view of a family's head: its pool and linear layers (borrowed from the network).
#[derive(Clone, Copy, Debug)]
pub struct PiecewiseLinearHead<'a> {
    /// The pool after the attribution layer.
    pub pool: HeadPooling,
    /// Hidden linear layers, each followed by ReLU.
    pub hidden: &'a [Linear],
    /// The final linear layer producing logits.
    pub classifier: &'a Linear,
    /// Dropout probability before each linear layer in training.
    pub dropout: f64,
}

impl PiecewiseLinearHead<'_> {
    /// Number of linear layers.
    pub fn layers(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Input width of each linear layer (for drawing dropout masks).
    pub fn input_widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.hidden.iter().map(|l| l.weight.dims()[0]).collect();
        widths.push(self.classifier.weight.dims()[0]);
        widths
    }

    /// The pool applied to A (N, C, h, w).
    pub fn pool(&self, a: Tensor<4>) -> Tensor<4> {
        match self.pool {
            HeadPooling::Max { kernel } => max_pool2d(a, MaxPoolOptions::new([kernel, kernel])),
            HeadPooling::GlobalAverage => a.mean_dims(&[2, 3]),
        }
    }

    /// Logits: pool -> flatten (channel-major) -> [dropout -> linear -> ReLU]* -> dropout ->
    /// linear.
    pub fn forward(&self, a: Tensor<4>, drop: &HeadDropout) -> Tensor<2> {
        let mut z: Tensor<2> = self.pool(a).flatten(1, 3);
        for (i, lin) in self.hidden.iter().enumerate() {
            z = relu(lin.forward(apply_mask(z, &drop.masks[i])));
        }
        self.classifier
            .forward(apply_mask(z, &drop.masks[self.hidden.len()]))
    }

    /// Parameters of the linear layers.
    pub fn params(&self) -> usize {
        std::iter::once(self.classifier)
            .chain(self.hidden)
            .map(|l| {
                l.weight.dims().iter().product::<usize>()
                    + l.bias.as_ref().map_or(0, |b| b.dims()[0])
            })
            .sum()
    }

    /// Multiply-accumulates of the linear layers for one image.
    pub fn macs(&self) -> usize {
        std::iter::once(self.classifier)
            .chain(self.hidden)
            .map(|l| l.weight.dims().iter().product::<usize>())
            .sum()
    }
}

/// `z * mask` where a mask is given.
pub fn apply_mask(z: Tensor<2>, mask: &Option<Tensor<2>>) -> Tensor<2> {
    match mask {
        Some(m) => z * m.clone(),
        None => z,
    }
}
