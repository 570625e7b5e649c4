//! The piecewise-linear head contract every network family implements: after the attribution
//! layer A (N, C, h, w) comes a pool (max or global average), a channel-major flatten, linear
//! layers with ReLU between them, and dropout before each linear layer. Such a head is linear in
//! A once its ReLU and max-pool routing are fixed, which is what the closed-form Grad-CAM
//! gradient ([`crate::attribution::closed_form`]) needs; the families only describe their head
//! through [`PiecewiseLinearHead`], they do not compute gradients themselves.

use super::quant::{Observer, QuantSpec};
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

/// Fake quantization of a head's linear layers (the `quantized` family): each layer's input
/// per tensor against its observer's range, its weight per output unit.
#[derive(Clone, Copy, Debug)]
pub struct HeadQuant<'a> {
    /// Bits and observer settings.
    pub spec: &'a QuantSpec,
    /// One observer per linear layer (hidden layers, then the classifier).
    pub observers: &'a [Observer],
    /// Whether the network is in training mode (observers learn only then).
    pub training: bool,
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
    /// Fake quantization of the linear layers (none for a float network).
    pub quant: Option<HeadQuant<'a>>,
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
    /// linear. A quantized head's observers learn their ranges here (in training).
    pub fn forward(&self, a: Tensor<4>, drop: &HeadDropout) -> Tensor<2> {
        let mut z: Tensor<2> = self.pool(a).flatten(1, 3);
        for i in 0..self.hidden.len() {
            z = relu(self.linear(i, apply_mask(z, &drop.masks[i]), true));
        }
        let last = self.hidden.len();
        self.linear(last, apply_mask(z, &drop.masks[last]), true)
    }

    /// Linear layer `i` (hidden layers, then the classifier), as [`PiecewiseLinearHead::weight`]
    /// and [`PiecewiseLinearHead::input`] make it; `observe`: let the input's observer learn.
    pub fn linear(&self, i: usize, z: Tensor<2>, observe: bool) -> Tensor<2> {
        let bias = self.layer(i).bias.as_ref().map(|b| b.val());
        let Some(q) = &self.quant else {
            // burn's `linear`, as `Linear::forward` computes it, so a float head is unchanged
            return burn::tensor::module::linear(z, self.weight(i), bias);
        };
        let z = self.input(i, z, observe);
        let (w, w_scale) =
            super::quant::fake_quant_columns_scaled(self.layer(i).weight.val(), q.spec.weight_bits);
        let d_out = w.dims()[1];
        let bias = bias.map(|b| {
            let input_scale = q.observers[i].scale(&b.device(), q.spec);
            super::quant::fake_quant_bias(b, input_scale, w_scale.reshape([d_out]))
        });
        burn::tensor::module::linear(z, w, bias)
    }

    /// Linear layer `i` (hidden layers, then the classifier).
    pub fn layer(&self, i: usize) -> &Linear {
        self.hidden.get(i).unwrap_or(self.classifier)
    }

    /// The weight (d_in, d_out) layer `i` computes with: fake-quantized per output unit in a
    /// quantized head (with a straight-through gradient).
    pub fn weight(&self, i: usize) -> Tensor<2> {
        let w = self.layer(i).weight.val();
        match &self.quant {
            Some(q) => super::quant::fake_quant_columns(w, q.spec.weight_bits),
            None => w,
        }
    }

    /// The input layer `i` sees: fake-quantized against its observer's range in a quantized
    /// head (straight-through inside the range, zero gradient outside).
    pub fn input(&self, i: usize, z: Tensor<2>, observe: bool) -> Tensor<2> {
        match &self.quant {
            Some(q) => {
                // as the feature part: observers learn in training mode on an autodiff device
                let learn = observe && q.training && z.device().is_autodiff();
                q.observers[i].fake_quant(z, q.spec, learn)
            }
            None => z,
        }
    }

    /// Where the input of layer `i` lies inside its quantization range (1) or is clipped (0),
    /// the derivative of its fake quantization; `None` in a float head.
    pub fn input_clip_mask(&self, i: usize, z: Tensor<2>) -> Option<Tensor<2>> {
        self.quant
            .as_ref()
            .map(|q| q.observers[i].inside(z, q.spec))
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
