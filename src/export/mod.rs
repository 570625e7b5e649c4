//! Export of trained (and compressed) networks for use outside faithful: PyTorch-named
//! safetensors with a plain JSON description ([`torch`]) and ONNX ([`onnx`]).
//!
//! Structured-pruned networks are ordinary dense networks with smaller layers (their
//! architecture lists the real channel counts), so they export as such.

pub mod onnx;
pub mod torch;

pub use onnx::export_onnx;
pub use torch::{export_torch, export_torch_with_normalization, import_torch_export};

use anyhow::{Result, anyhow};
use burn::prelude::*;

/// The values of a tensor as f32, row-major.
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow!("cannot read tensor values: {e:?}"))
}

/// One conv block in evaluation mode, as plain numbers: what both exporters write.
pub(crate) struct PlainBlock {
    /// Conv weight, OIHW.
    pub weight: Vec<f32>,
    /// [out, in, kh, kw].
    pub shape: [usize; 4],
    /// Conv bias, if the conv has one.
    pub bias: Option<Vec<f32>>,
    /// BatchNorm gamma, beta, running mean, running variance.
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    /// BatchNorm epsilon and momentum.
    pub eps: f64,
    pub momentum: f64,
    /// Whether a 2x2 max-pool follows (not pool5).
    pub pool_after: bool,
}

/// One head linear layer as plain numbers, PyTorch layout.
pub(crate) struct PlainLinear {
    /// Weight [out, in], row-major.
    pub weight: Vec<f32>,
    /// (out, in).
    pub out_in: (usize, usize),
    /// Bias, if any.
    pub bias: Option<Vec<f32>>,
}

/// Reads every block and head layer of `model` (after syncing BatchNorm statistics).
pub(crate) fn plain(model: &crate::models::Vgg) -> Result<(Vec<PlainBlock>, Vec<PlainLinear>)> {
    let model = model.valid();
    let mut blocks = Vec::new();
    for b in &model.blocks {
        blocks.push(PlainBlock {
            weight: values(b.conv.weight.val())?,
            shape: b.conv.weight.dims(),
            bias: b.conv.bias.as_ref().map(|p| values(p.val())).transpose()?,
            gamma: values(b.bn.gamma.val())?,
            beta: values(b.bn.beta.val())?,
            mean: values(b.bn.running_mean.value())?,
            var: values(b.bn.running_var.value())?,
            eps: b.bn.epsilon,
            momentum: b.bn.momentum,
            pool_after: b.pool_after,
        });
    }
    let mut linears = Vec::new();
    for lin in model
        .hidden
        .iter()
        .chain(std::iter::once(&model.classifier))
    {
        let [d_in, d_out] = lin.weight.dims();
        linears.push(PlainLinear {
            weight: values(lin.weight.val().transpose())?,
            out_in: (d_out, d_in),
            bias: lin.bias.as_ref().map(|p| values(p.val())).transpose()?,
        });
    }
    Ok((blocks, linears))
}
