//! Relevance propagation over a network's canonical layer list
//! ([`crate::models::layers::LayerGraph`]): the common base of LRP, Excitation Backprop and
//! RAP. A method only says how relevance crosses a weighted layer ([`WeightedStep`]); the walk
//! handles the rest the same way for every method and family:
//! - ReLU passes relevance unchanged;
//! - max- and average-pools redistribute it in proportion to each input's share of the output
//!   (`R_in = a * J^T (R / z)`: the maximum takes all, an average splits by value);
//! - a flatten reshapes it back;
//! - a residual addition `z_b + z_s` splits it between the two summands (by the method's
//!   [`WeightedStep::residual_split`]: in proportion to them, or to their positive parts for
//!   the positive rules), then each part is propagated through its path and the two are added
//!   at the fork.
//!
//! Denominators that are exactly zero give zero relevance (the authors' `safe_divide`).

use crate::models::Network;
use crate::models::layers::{Layer, LayerGraph, WeightLayer, sequence_forward};
use anyhow::{Result, anyhow};
use burn::prelude::*;
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;

/// Where a weighted layer sits: rules differ for the layer reading the image and the one
/// producing the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The first layer: its input is the (normalised, signed) image.
    Input,
    /// A layer between the first and the last (inputs are ReLU outputs, non-negative).
    Hidden,
    /// The last layer, producing the logits.
    Output,
}

/// How relevance crosses one weighted layer: a method's rule.
pub trait WeightedStep {
    /// Relevance at the input `a` of `layer`, given relevance `r` at its output.
    fn step(
        &self,
        layer: &WeightLayer,
        a: &Tensor<4>,
        r: Tensor<4>,
        position: Position,
    ) -> Result<Tensor<4>>;

    /// Relevance `r` of a residual sum `z_b + z_s` split between its summands; by default in
    /// proportion to them ([`proportional_split`]).
    fn residual_split(&self, zb: Tensor<4>, zs: Tensor<4>, r: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        proportional_split(zb, zs, r)
    }
}

/// `r z_b / (z_b + z_s)` and `r z_s / (z_b + z_s)`: exact conservation, but a summand of the
/// other sign than the sum gets relevance of the other sign (unbounded when the two nearly
/// cancel).
pub fn proportional_split(zb: Tensor<4>, zs: Tensor<4>, r: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    let s = safe_div(r, zb.clone() + zs.clone());
    (zb * s.clone(), zs * s)
}

/// The z+ rule on the addition (both weights 1): shares of the positive parts only,
/// `r z_b⁺ / (z_b⁺ + z_s⁺)`, so non-negative relevance stays non-negative.
pub fn positive_split(zb: Tensor<4>, zs: Tensor<4>, r: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    proportional_split(zb.clamp_min(0.0), zs.clamp_min(0.0), r)
}

/// `a / b` where `b != 0`, 0 where `b == 0`.
pub fn safe_div(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let zero = b.clone().equal_elem(0.0);
    (a / b.mask_fill(zero.clone(), 1.0)).mask_fill(zero, 0.0)
}

/// `W^T s` for the convolution `layer` with weights `weight` (no bias), back to the shape of
/// `a`: the transposed convolution, with the output padding that restores the input side.
pub fn transpose(layer: &WeightLayer, weight: Tensor<4>, s: Tensor<4>, a: &Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = a.dims();
    let [_, _, oh, ow] = s.dims();
    let [_, _, kh, kw] = weight.dims();
    let extra = |side: usize, out: usize, k: usize, d: usize| {
        side + 2 * layer.padding[d] - ((out - 1) * layer.stride[d] + k)
    };
    let options = ConvTransposeOptions::new(
        layer.stride,
        layer.padding,
        [extra(h, oh, kh, 0), extra(w, ow, kw, 1)],
        [1, 1],
        1,
    );
    conv_transpose2d(s, weight, None, options)
}

/// `J^T s` of `f` at `x`, by autodiff: for a pool this routes `s` as the forward pass did.
pub fn vjp(f: impl Fn(Tensor<4>) -> Tensor<4>, x: &Tensor<4>, s: Tensor<4>) -> Result<Tensor<4>> {
    let tracked = x.clone().inner().autodiff().require_grad();
    let grads = (f(tracked.clone()) * s).sum().backward();
    tracked
        .grad(&grads)
        .ok_or_else(|| anyhow!("autodiff produced no gradient for a pool's input"))
}

/// `a * J^T (r / f(a))`: each input's share of the output, for pools.
fn proportional(layer: &Layer, a: &Tensor<4>, r: Tensor<4>) -> Result<Tensor<4>> {
    let z = layer.forward(a.clone());
    let g = vjp(|x| layer.forward(x), a, safe_div(r, z))?;
    Ok(a.clone() * g)
}

/// Relevance at the input of one layer.
fn layer_relevance(
    layer: &Layer,
    a: &Tensor<4>,
    r: Tensor<4>,
    position: Position,
    step: &dyn WeightedStep,
) -> Result<Tensor<4>> {
    match layer {
        Layer::Weighted(w) => step.step(w, a, r, position),
        Layer::Relu => Ok(r),
        Layer::Flatten => Ok(r.reshape(a.dims())),
        Layer::MaxPool { .. } | Layer::GlobalAvgPool => proportional(layer, a, r),
        Layer::Residual { branch, shortcut } => {
            let zb = sequence_forward(branch, a.clone());
            let zs = sequence_forward(shortcut, a.clone());
            let (to_branch, to_shortcut) = step.residual_split(zb, zs, r);
            let rb = sequence_relevance(branch, a, to_branch, step)?;
            let rs = sequence_relevance(shortcut, a, to_shortcut, step)?;
            Ok(rb + rs)
        }
    }
}

/// Relevance at the input of a nested sequence (a residual path: every layer is hidden).
fn sequence_relevance(
    layers: &[Layer],
    x: &Tensor<4>,
    r: Tensor<4>,
    step: &dyn WeightedStep,
) -> Result<Tensor<4>> {
    let mut inputs = vec![x.clone()];
    for l in layers {
        let next = l.forward(inputs[inputs.len() - 1].clone());
        inputs.push(next);
    }
    let mut r = r;
    for (l, a) in layers.iter().zip(&inputs).rev() {
        r = layer_relevance(l, a, r, Position::Hidden, step)?;
    }
    Ok(r)
}

/// Propagates relevance `r`, given at `acts[from]` (the input of layer `from`; `from =
/// layers.len()` for the logits), down to `acts[to]`. `acts` are the graph's
/// [`LayerGraph::activations`]. Returns the relevance at `acts[to..=from]`, in that order.
pub fn propagate(
    graph: &LayerGraph,
    acts: &[Tensor<4>],
    r: Tensor<4>,
    from: usize,
    to: usize,
    step: &dyn WeightedStep,
) -> Result<Vec<Tensor<4>>> {
    let last = graph.layers.len() - 1;
    let mut out = vec![r];
    for i in (to..from).rev() {
        let position = match i {
            0 => Position::Input,
            i if i == last => Position::Output,
            _ => Position::Hidden,
        };
        let r = layer_relevance(
            &graph.layers[i],
            &acts[i],
            out[out.len() - 1].clone(),
            position,
            step,
        )?;
        out.push(r);
    }
    out.reverse();
    Ok(out)
}

/// A batch ready to be explained by propagation: the model's layer list, its activations on the
/// batch, and relevance 1 at each image's class (the common start of LRP, EBP and RAP).
pub struct Walk {
    /// The model's canonical layer list.
    pub graph: LayerGraph,
    /// [`LayerGraph::activations`] of the batch.
    pub acts: Vec<Tensor<4>>,
    /// (N, K, 1, 1): 1 at `classes[n]` of image n.
    pub top: Tensor<4>,
}

impl Walk {
    /// Checks the classes and runs the forward pass.
    pub fn new(model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Self> {
        let graph = model.layer_graph()?;
        check_classes(classes, x.dims()[0], model.num_classes())?;
        let top = one_hot_relevance(classes, model.num_classes(), &x.device());
        let acts = graph.activations(x);
        Ok(Walk { graph, acts, top })
    }

    /// Index of the logits in [`Walk::acts`].
    pub fn logits_at(&self) -> usize {
        self.graph.layers.len()
    }

    /// [`propagate`] on this batch.
    pub fn levels(
        &self,
        r: Tensor<4>,
        from: usize,
        to: usize,
        step: &dyn WeightedStep,
    ) -> Result<Vec<Tensor<4>>> {
        propagate(&self.graph, &self.acts, r, from, to, step)
    }

    /// The relevance at `acts[to]` only.
    pub fn down(
        &self,
        r: Tensor<4>,
        from: usize,
        to: usize,
        step: &dyn WeightedStep,
    ) -> Result<Tensor<4>> {
        Ok(self.levels(r, from, to, step)?.swap_remove(0))
    }

    /// Relevance at the input image, starting from 1 at each image's class.
    pub fn to_input(&self, step: &dyn WeightedStep) -> Result<Tensor<4>> {
        self.down(self.top.clone(), self.logits_at(), 0, step)
    }
}

/// The (N, K, 1, 1) relevance that selects class `classes[n]` of image n with value 1.
pub fn one_hot_relevance(classes: &[usize], num_classes: usize, device: &Device) -> Tensor<4> {
    super::one_hot(classes, num_classes, device).reshape([classes.len(), num_classes, 1, 1])
}

/// Checks one class per image, each in range.
pub fn check_classes(classes: &[usize], images: usize, num_classes: usize) -> Result<()> {
    anyhow::ensure!(images == classes.len(), "one class per image expected");
    anyhow::ensure!(
        classes.iter().all(|&c| c < num_classes),
        "class index out of range 0..{num_classes}"
    );
    Ok(())
}

/// The map of input relevance: the positive part of the sum over colour channels (evidence
/// for the class, as Grad-CAM's ReLU keeps it).
pub fn input_map(relevance: Tensor<4>) -> Tensor<3> {
    burn::tensor::activation::relu(relevance.sum_dim(1)).squeeze_dim(1)
}
