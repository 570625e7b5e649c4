//! Export of trained (and compressed) networks for use outside faithful: PyTorch-named
//! safetensors with a plain JSON description ([`torch`]) and ONNX ([`onnx`]).
//!
//! Structured-pruned networks are ordinary dense networks with smaller layers (their
//! architecture lists the real channel counts), so they export as such.

pub mod onnx;
pub mod onnx_quant;
pub mod onnx_resnet;
pub mod onnx_sparse;
pub mod torch;
pub mod torch_resnet;

pub use onnx::OnnxExport;
pub use onnx::export_onnx;
pub use torch::{
    TorchExport, export_torch, export_torch_network, export_torch_with_normalization,
    import_torch_export,
};

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

/// The values of a tensor as f32, refusing non-finite ones with an error naming the tensor
/// (`name`, as burn calls it in a saved model).
pub(crate) fn finite<const D: usize>(name: &str, t: Tensor<D>) -> Result<Vec<f32>> {
    let v = values(t).map_err(|e| anyhow!("tensor {name}: {e}"))?;
    match crate::models::torchvision::non_finite(&v) {
        Some(what) => Err(anyhow!("tensor {name} holds {what}")),
        None => Ok(v),
    }
}

/// Reads every block and head layer of `model` (after syncing BatchNorm statistics); a tensor
/// holding NaN or an infinity is an error naming it.
pub(crate) fn plain(model: &crate::models::Vgg) -> Result<(Vec<PlainBlock>, Vec<PlainLinear>)> {
    let model = model.valid();
    let mut blocks = Vec::new();
    for (i, b) in model.blocks.iter().enumerate() {
        let n = |t: &str| format!("blocks.{i}.{t}");
        blocks.push(PlainBlock {
            weight: finite(&n("conv.weight"), b.conv.weight.val())?,
            shape: b.conv.weight.dims(),
            bias: b
                .conv
                .bias
                .as_ref()
                .map(|p| finite(&n("conv.bias"), p.val()))
                .transpose()?,
            gamma: finite(&n("bn.gamma"), b.bn.gamma.val())?,
            beta: finite(&n("bn.beta"), b.bn.beta.val())?,
            mean: finite(&n("bn.running_mean"), b.bn.running_mean.value())?,
            var: finite(&n("bn.running_var"), b.bn.running_var.value())?,
            eps: b.bn.epsilon,
            momentum: b.bn.momentum,
            pool_after: b.pool_after,
        });
    }
    let mut linears = Vec::new();
    let names = (0..model.hidden.len())
        .map(|j| format!("hidden.{j}"))
        .chain(std::iter::once("classifier".to_string()));
    let layers = model
        .hidden
        .iter()
        .chain(std::iter::once(&model.classifier));
    for (name, lin) in names.zip(layers) {
        let [d_in, d_out] = lin.weight.dims();
        linears.push(PlainLinear {
            weight: finite(&format!("{name}.weight"), lin.weight.val().transpose())?,
            out_in: (d_out, d_in),
            bias: lin
                .bias
                .as_ref()
                .map(|p| finite(&format!("{name}.bias"), p.val()))
                .transpose()?,
        });
    }
    Ok((blocks, linears))
}

/// Checks a dataset description (`dataset.json`, read from `path`) against the network it is
/// exported with: as many class names as the network has classes, and a usable normalisation
/// (finite means, finite non-zero standard deviations). Errors name `path`.
pub fn check_dataset_info(
    info: &crate::explain::DatasetInfo,
    model: &crate::models::Network,
    path: &std::path::Path,
) -> Result<()> {
    let k = model.num_classes();
    anyhow::ensure!(
        info.class_names.len() == k,
        "{}: lists {} class names but the network has {k} classes",
        path.display(),
        info.class_names.len()
    );
    let (mean, std) = (info.normalization.mean, info.normalization.std);
    anyhow::ensure!(
        mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s != 0.0),
        "{}: the normalisation needs finite means and finite non-zero standard deviations, \
         got mean {mean:?} std {std:?}",
        path.display()
    );
    Ok(())
}
