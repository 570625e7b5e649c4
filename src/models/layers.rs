//! A network's canonical layer list, for methods that walk layers one by one (relevance
//! propagation: LRP, Excitation Backprop, RAP). Each family rewrites itself into this form
//! through [`LayerList`], as zennit's canonizers do: BatchNorm folded into the preceding conv,
//! linear layers as 1x1 convolutions on (N, C, 1, 1) so that every activation is 4-D, and a
//! residual block as a branch and a shortcut whose outputs are added.
//!
//! The list's forward pass equals the network's (a test checks it for every family with random
//! BatchNorm statistics), so a method walking the list explains the network itself.

use super::Network;
use super::head::HeadPooling;
use super::network::on_net;
use super::resnet::{Block, ResNet, Stem};
use super::vgg::Vgg;
use anyhow::{Result, bail};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

/// Whether a weighted layer was a convolution or a linear (dense) layer; LRP composites pick
/// their rule by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightKind {
    /// A convolution (BatchNorm folded in).
    Conv,
    /// A linear layer, held as a 1x1 convolution.
    Dense,
}

/// A convolution with its BatchNorm folded in (or a linear layer as a 1x1 convolution).
#[derive(Clone, Debug)]
pub struct WeightLayer {
    /// Weights (out, in, kh, kw).
    pub weight: Tensor<4>,
    /// Bias (out), when there is one.
    pub bias: Option<Tensor<1>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Symmetric zero padding.
    pub padding: [usize; 2],
    /// Convolution or linear layer.
    pub kind: WeightKind,
}

impl WeightLayer {
    /// The layer with other weights and bias (a rule's modified parameters), same geometry.
    pub fn apply(&self, x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        conv2d(
            x,
            weight,
            bias,
            ConvOptions::new(self.stride, self.padding, [1, 1], 1),
        )
    }

    /// The layer's own output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.apply(x, self.weight.clone(), self.bias.clone())
    }
}

/// One layer of the canonical list (a few dozen per network, built once per batch, so the
/// unboxed weighted variant's size does not matter).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    /// A convolution or linear layer.
    Weighted(WeightLayer),
    /// Rectified linear unit.
    Relu,
    /// Max-pool (padding with -inf, as PyTorch's).
    MaxPool {
        /// Kernel side.
        kernel: [usize; 2],
        /// Stride.
        stride: [usize; 2],
        /// Padding.
        padding: [usize; 2],
    },
    /// Global average pool to (N, C, 1, 1).
    GlobalAvgPool,
    /// Channel-major flatten (N, C, h, w) -> (N, C*h*w, 1, 1).
    Flatten,
    /// `branch(x) + shortcut(x)`; an empty shortcut is the identity.
    Residual {
        /// The block's convolutions and ReLUs.
        branch: Vec<Layer>,
        /// The projection (empty for the identity).
        shortcut: Vec<Layer>,
    },
}

impl Layer {
    /// The layer's output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Layer::Weighted(w) => w.forward(x),
            Layer::Relu => relu(x),
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            } => max_pool2d(
                x,
                MaxPoolOptions::new(*kernel)
                    .with_stride(*stride)
                    .with_padding(*padding),
            ),
            Layer::GlobalAvgPool => x.mean_dims(&[2, 3]),
            Layer::Flatten => {
                let [n, c, h, w] = x.dims();
                x.reshape([n, c * h * w, 1, 1])
            }
            Layer::Residual { branch, shortcut } => {
                sequence_forward(branch, x.clone()) + sequence_forward(shortcut, x)
            }
        }
    }
}

/// The output of layers applied in order.
pub fn sequence_forward(layers: &[Layer], x: Tensor<4>) -> Tensor<4> {
    layers.iter().fold(x, |x, l| l.forward(x))
}

/// A network as a canonical layer list.
#[derive(Clone, Debug)]
pub struct LayerGraph {
    /// The layers from the input image to the logits (N, K, 1, 1).
    pub layers: Vec<Layer>,
    /// The attribution layer (Grad-CAM's) is the output of `layers[..features_at]`.
    pub features_at: usize,
}

impl LayerGraph {
    /// The input of every layer and, last, the logits: `len() + 1` tensors.
    pub fn activations(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut out = Vec::with_capacity(self.layers.len() + 1);
        out.push(x);
        for layer in &self.layers {
            let next = layer.forward(out[out.len() - 1].clone());
            out.push(next);
        }
        out
    }

    /// Logits (N, K).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        sequence_forward(&self.layers, x).flatten(1, 3)
    }
}

/// A family that can rewrite itself as a [`LayerGraph`]; families without it get a clear
/// error from the layer-walking methods instead of a wrong map.
pub trait LayerList {
    /// The canonical layer list of the network in evaluation mode.
    fn layer_graph(&self) -> Result<LayerGraph> {
        bail!("relevance propagation is not implemented for this network family")
    }
}

impl Network {
    /// The canonical layer list (BatchNorm folded, linear layers as 1x1 convolutions).
    pub fn layer_graph(&self) -> Result<LayerGraph> {
        on_net!(self, n => n.layer_graph())
    }
}

/// The symmetric padding of a conv, or an error for asymmetric or input-dependent padding.
fn padding_of(conv: &Conv2d) -> Result<[usize; 2]> {
    match conv.padding {
        PaddingConfig2d::Valid => Ok([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Ok([top, left])
        }
        PaddingConfig2d::Same
            if conv.stride == [1, 1] && conv.kernel_size.iter().all(|k| k % 2 == 1) =>
        {
            Ok([conv.kernel_size[0] / 2, conv.kernel_size[1] / 2])
        }
        ref p => bail!("relevance propagation needs symmetric conv padding, not {p:?}"),
    }
}

/// `conv` followed by the eval-mode `bn`, as one convolution: with `s = gamma / sqrt(var +
/// eps)`, weights `w[o] * s[o]` and bias `(b[o] - mean[o]) * s[o] + beta[o]`.
pub fn fold_conv_bn(conv: &Conv2d, bn: &BatchNorm) -> Result<WeightLayer> {
    if conv.groups != 1 || conv.dilation != [1, 1] {
        bail!("relevance propagation needs ungrouped, undilated convolutions");
    }
    let weight = conv.weight.val();
    let out = weight.dims()[0];
    let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([out], &weight.device()),
    };
    let folded_bias = (bias - bn.running_mean.value()) * scale.clone() + bn.beta.val();
    Ok(WeightLayer {
        weight: weight * scale.reshape([out, 1, 1, 1]),
        bias: Some(folded_bias),
        stride: conv.stride,
        padding: padding_of(conv)?,
        kind: WeightKind::Conv,
    })
}

/// A linear layer (weights (in, out) as burn stores them) as a 1x1 convolution.
pub fn dense(linear: &Linear) -> WeightLayer {
    let [d_in, d_out] = linear.weight.dims();
    WeightLayer {
        weight: linear.weight.val().transpose().reshape([d_out, d_in, 1, 1]),
        bias: linear.bias.as_ref().map(|b| b.val()),
        stride: [1, 1],
        padding: [0, 0],
        kind: WeightKind::Dense,
    }
}

/// The head after the attribution layer: pool, flatten, linear layers with ReLU between.
fn head_layers(pool: HeadPooling, hidden: &[Linear], classifier: &Linear) -> Vec<Layer> {
    let mut layers = vec![match pool {
        HeadPooling::Max { kernel } => Layer::MaxPool {
            kernel: [kernel, kernel],
            stride: [kernel, kernel],
            padding: [0, 0],
        },
        HeadPooling::GlobalAverage => Layer::GlobalAvgPool,
    }];
    layers.push(Layer::Flatten);
    for lin in hidden {
        layers.push(Layer::Weighted(dense(lin)));
        layers.push(Layer::Relu);
    }
    layers.push(Layer::Weighted(dense(classifier)));
    layers
}

impl LayerList for Vgg {
    fn layer_graph(&self) -> Result<LayerGraph> {
        let mut layers = Vec::new();
        for block in &self.blocks {
            layers.push(Layer::Weighted(fold_conv_bn(&block.conv, &block.bn)?));
            layers.push(Layer::Relu);
            if block.pool_after {
                layers.push(Layer::MaxPool {
                    kernel: [2, 2],
                    stride: [2, 2],
                    padding: [0, 0],
                });
            }
        }
        let features_at = layers.len();
        let head = self.head_view();
        layers.extend(head_layers(head.pool, head.hidden, head.classifier));
        Ok(LayerGraph {
            layers,
            features_at,
        })
    }
}

/// A residual block: its conv chain with ReLUs between, the projection, and the ReLU after
/// the addition.
fn block_layers(block: &Block) -> Result<[Layer; 2]> {
    let chain = block.chain();
    let last = chain.len() - 1;
    let mut branch = Vec::new();
    for (k, (conv, bn)) in chain.into_iter().enumerate() {
        branch.push(Layer::Weighted(fold_conv_bn(conv, bn)?));
        if k < last {
            branch.push(Layer::Relu);
        }
    }
    let shortcut = match block.shortcut() {
        Some((conv, bn)) => vec![Layer::Weighted(fold_conv_bn(conv, bn)?)],
        None => Vec::new(),
    };
    Ok([Layer::Residual { branch, shortcut }, Layer::Relu])
}

impl LayerList for ResNet {
    fn layer_graph(&self) -> Result<LayerGraph> {
        let mut layers = vec![
            Layer::Weighted(fold_conv_bn(&self.conv1, &self.bn1)?),
            Layer::Relu,
        ];
        if self.arch.stem == Stem::Imagenet {
            layers.push(Layer::MaxPool {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
            });
        }
        for block in self.layers.iter().flatten() {
            layers.extend(block_layers(block)?);
        }
        let features_at = layers.len();
        let head = self.head();
        layers.extend(head_layers(head.pool, head.hidden, head.classifier));
        Ok(LayerGraph {
            layers,
            features_at,
        })
    }
}
