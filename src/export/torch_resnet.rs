//! PyTorch export of a [`ResNet`]: `<out>.safetensors` with torchvision's ResNet names
//! (`conv1`, `bn1`, `layer{s+1}.{b}.conv{k}` / `bn{k}`, `layer{s+1}.{b}.downsample.0` / `.1`,
//! `fc`; BatchNorm `weight`/`bias`/`running_*`/`num_batches_tracked`, `fc.weight` `[out, in]`),
//! so a torchvision `resnet18` ... `resnet152` of the same widths loads it with a strict
//! `load_state_dict`, and `<out>.json` describing the stem and every block (each conv's
//! channels, kernel, stride and padding, the shortcut) for `python/faithful_torch.py`, which
//! builds any layout (divided, pruned, small stem) under the same names. `torchvision` in the
//! JSON names the torchvision constructor that fits, when one does.

use super::finite;
use super::torch::{
    ExportTensor, FORMAT, TorchExport, batches_tracked, check_export_inputs, export_paths,
    f32_tensor, input_description, write_export,
};
use crate::models::resnet::{ResNet, Stem, TORCHVISION_RESNETS};
use anyhow::{Context, Result};
use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use serde_json::{Value, json};
use std::path::Path;

impl TorchExport for ResNet {
    fn export_torch(
        &self,
        out: &Path,
        class_names: Option<&[String]>,
        normalization: Option<([f32; 3], [f32; 3])>,
    ) -> Result<()> {
        export_resnet_torch(self, out, class_names, normalization)
    }
}

/// Adds a conv's weight; returns its description.
fn conv_tensor(tensors: &mut Vec<ExportTensor>, conv: &Conv2d, name: &str) -> Result<Value> {
    let [o, i, k, _] = conv.weight.dims();
    let weight = finite(&format!("{name}.weight"), conv.weight.val())?;
    tensors.push(f32_tensor(
        format!("{name}.weight"),
        vec![o, i, k, k],
        &weight,
    ));
    Ok(json!({"in": i, "out": o, "kernel": k, "stride": conv.stride[0], "padding": k / 2}))
}

/// Adds a BatchNorm's tensors under PyTorch's names; returns its description.
fn bn_tensors(tensors: &mut Vec<ExportTensor>, bn: &BatchNorm, name: &str) -> Result<Value> {
    let c = bn.gamma.dims()[0];
    let t =
        |suffix: &str, values: Vec<f32>| f32_tensor(format!("{name}.{suffix}"), vec![c], &values);
    tensors.push(t(
        "weight",
        finite(&format!("{name}.weight"), bn.gamma.val())?,
    ));
    tensors.push(t("bias", finite(&format!("{name}.bias"), bn.beta.val())?));
    tensors.push(t(
        "running_mean",
        finite(&format!("{name}.running_mean"), bn.running_mean.value())?,
    ));
    tensors.push(t(
        "running_var",
        finite(&format!("{name}.running_var"), bn.running_var.value())?,
    ));
    tensors.push(batches_tracked(name));
    Ok(json!({"channels": c, "eps": bn.epsilon, "momentum": bn.momentum}))
}

/// The torchvision constructor whose network has exactly these tensors, if any.
fn torchvision_name(model: &ResNet) -> Option<&'static str> {
    let a = &model.arch;
    let plain = a.stem == Stem::Imagenet
        && a.base_width == 64
        && a.width_divisor == 1
        && a.widths.is_none()
        && a.block.is_none_or(|b| b == a.block_kind());
    TORCHVISION_RESNETS
        .iter()
        .find(|name| plain && a.layout == **name)
        .copied()
}

/// Writes `<out>.safetensors` and `<out>.json` (see the module docs); class names, when given,
/// must number the classes. A network holding NaN or infinite values is refused (naming the
/// tensor) and nothing is written.
pub fn export_resnet_torch(
    model: &ResNet,
    out: &Path,
    class_names: Option<&[String]>,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<()> {
    let (weights_path, json_path) = export_paths(out);
    let arch = &model.arch;
    check_export_inputs(&json_path, arch.num_classes, class_names, normalization)?;
    let model = model.valid();
    let mut tensors = Vec::new();
    let built = describe(&model, &mut tensors)
        .with_context(|| format!("cannot export {}", weights_path.display()))?;
    let description = json!({
        "format": FORMAT,
        "version": 1,
        "family": "resnet",
        "torchvision": torchvision_name(&model),
        "weights": weights_path.file_name().map(|n| n.to_string_lossy().to_string()),
        "input": input_description(arch.input_size, normalization),
        "stem": built.stem,
        "layers": built.layers,
        "head": {"pool": "global_average", "dropout": arch.dropout},
        "fc": built.fc,
        "num_classes": arch.num_classes,
        "class_names": class_names,
        "notes": "each block: relu(bn_k(conv_k(...)) with ReLU between the convs, plus the \
                  shortcut (identity, or downsample = conv 1x1 + BN), then ReLU; torchvision's \
                  module names; the model returns logits (no softmax or sigmoid).",
    });
    write_export(&weights_path, &json_path, &tensors, &description)
}

/// The JSON parts of an export, with their tensors added on the way.
struct Described {
    stem: Value,
    layers: Vec<Vec<Value>>,
    fc: Value,
}

fn describe(model: &ResNet, tensors: &mut Vec<ExportTensor>) -> Result<Described> {
    let stem = json!({
        "conv": conv_tensor(tensors, &model.conv1, "conv1")?,
        "bn": bn_tensors(tensors, &model.bn1, "bn1")?,
        "maxpool": model.arch.stem == Stem::Imagenet,
    });
    let mut layers = Vec::new();
    for (s, stage) in model.layers.iter().enumerate() {
        let mut blocks = Vec::new();
        for (b, block) in stage.iter().enumerate() {
            let p = format!("layer{}.{b}", s + 1);
            let mut chain = Vec::new();
            for (k, (conv, bn)) in block.chain().into_iter().enumerate() {
                chain.push(json!({
                    "conv": conv_tensor(tensors, conv, &format!("{p}.conv{}", k + 1))?,
                    "bn": bn_tensors(tensors, bn, &format!("{p}.bn{}", k + 1))?,
                }));
            }
            let downsample = match block.shortcut() {
                Some((conv, bn)) => json!({
                    "conv": conv_tensor(tensors, conv, &format!("{p}.downsample.0"))?,
                    "bn": bn_tensors(tensors, bn, &format!("{p}.downsample.1"))?,
                }),
                None => Value::Null,
            };
            blocks.push(json!({"name": p, "chain": chain, "downsample": downsample}));
        }
        layers.push(blocks);
    }
    let [d_in, d_out] = model.fc.weight.dims();
    let weight = finite("fc.weight", model.fc.weight.val().transpose())?;
    tensors.push(f32_tensor("fc.weight".into(), vec![d_out, d_in], &weight));
    let bias = match &model.fc.bias {
        Some(b) => finite("fc.bias", b.val())?,
        None => vec![0.0; d_out],
    };
    tensors.push(f32_tensor("fc.bias".into(), vec![d_out], &bias));
    Ok(Described {
        stem,
        layers,
        fc: json!({"in": d_in, "out": d_out}),
    })
}
