//! Export for PyTorch users: `<out>.safetensors` with torchvision's naming and shapes, and
//! `<out>.json` describing the network in plain terms, layer by layer.
//!
//! Naming (the same as torchvision's `vgg*_bn`, so a torchvision model of the same layout
//! loads the file with `load_state_dict`): `features.{i}` for the i-th entry of the feature
//! sequential, which repeats conv (`weight` OIHW, `bias`), BatchNorm (`weight`, `bias`,
//! `running_mean`, `running_var`, `num_batches_tracked`) and ReLU, with a `MaxPool2d(2, 2)`
//! after each stage; its last entry is the head's pool (pool5): `MaxPool2d(2, 2)` for a
//! [`HeadPool::Max2`] head or `AdaptiveMaxPool2d(1)` for a [`HeadPool::GlobalMax`] head, which
//! has no parameters, so parameter names do not depend on the head. `classifier` is
//! Linear-ReLU-Dropout-...-Linear, the j-th linear layer being `classifier.{3j}` (`weight`
//! `[out, in]`, `bias`). Flattening is channel-major (`torch.flatten(x, 1)` on NCHW).
//! `python/faithful_torch.py` builds the `nn.Module` from the JSON and loads the weights.

use super::plain;
use crate::models::network::on_net;
use crate::models::torchvision::{
    apply_state_dict, read_state_dict, torchvision_classifier_index, torchvision_feature_indices,
};
use crate::models::vgg::HeadPool;
use crate::models::{Network, Vgg, VggArch};
use crate::util::write_atomic;
use anyhow::{Context, Result, anyhow, bail, ensure};
use burn::prelude::*;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Format tag written to (and required in) the JSON description.
pub const FORMAT: &str = "faithful-torch-export";

/// The weights and description paths of an export: `out` with `.safetensors` / `.json`
/// appended; an `out` that already ends in `.safetensors` or `.json` names the same pair.
pub fn export_paths(out: &Path) -> (PathBuf, PathBuf) {
    let stem = match out.extension().and_then(|e| e.to_str()) {
        Some("safetensors" | "json") => out.with_extension(""),
        _ => out.to_path_buf(),
    };
    let with = |ext: &str| {
        let mut s: OsString = stem.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".safetensors"), with(".json"))
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What PyTorch export needs of a family: writing its weights and the JSON that rebuilds it.
/// The default says the family has none, so a new family starts with
/// `impl TorchExport for MyNet {}` in its own file.
pub trait TorchExport {
    /// As [`export_torch_with_normalization`] for this family.
    fn export_torch(
        &self,
        out: &Path,
        class_names: Option<&[String]>,
        normalization: Option<([f32; 3], [f32; 3])>,
    ) -> Result<()> {
        let _ = (class_names, normalization);
        bail!(
            "{}: PyTorch export is not implemented for this network family (ONNX export is)",
            out.display()
        )
    }
}

impl TorchExport for Vgg {
    fn export_torch(
        &self,
        out: &Path,
        class_names: Option<&[String]>,
        normalization: Option<([f32; 3], [f32; 3])>,
    ) -> Result<()> {
        export_torch_with_normalization(self, out, class_names, normalization)
    }
}

/// Any network through its family's [`TorchExport`]; a family without one is an error naming
/// it.
pub fn export_torch_network(
    model: &Network,
    out: &Path,
    class_names: Option<&[String]>,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<()> {
    on_net!(model, n => n.export_torch(out, class_names, normalization))
        .with_context(|| format!("the {} family", model.arch().family()))
}

/// Writes `<out>.safetensors` and `<out>.json` (see the module docs for the naming); class
/// names, when given, must number the network's classes. The input normalisation is not known
/// to the network, so the JSON's `input.normalization` is `null`; see
/// [`export_torch_with_normalization`] to fill it. A network holding NaN or infinite values is
/// refused (the error names the weights file and the tensor) and nothing is written.
pub fn export_torch(model: &Vgg, out: &Path, class_names: Option<&[String]>) -> Result<()> {
    export_torch_with_normalization(model, out, class_names, None)
}

/// As [`export_torch`], also recording the per-channel input normalisation `(mean, std)` the
/// network was trained with (`x_normalised = (x - mean) / std` on RGB in [0, 1]). The weights
/// are written first and the JSON last; if the JSON cannot be written the weights are removed.
pub fn export_torch_with_normalization(
    model: &Vgg,
    out: &Path,
    class_names: Option<&[String]>,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<()> {
    let (weights_path, json_path) = export_paths(out);
    let arch = &model.arch;
    check_export_inputs(&json_path, arch.num_classes, class_names, normalization)?;
    let (indices, pool5) = torchvision_feature_indices(arch)
        .with_context(|| format!("cannot export to {}", json_path.display()))?;
    let (blocks, linears) =
        plain(model).with_context(|| format!("cannot export {}", weights_path.display()))?;
    ensure!(
        blocks.len() == indices.len(),
        "{}: the network has {} conv blocks but its layout '{}' lists {}",
        json_path.display(),
        blocks.len(),
        arch.layout,
        indices.len()
    );

    let mut tensors: Vec<ExportTensor> = Vec::new();
    let mut f32t = |name: String, shape: Vec<usize>, v: &[f32]| {
        tensors.push(f32_tensor(name, shape, v));
    };
    let mut layers = Vec::new();
    let mut in_ch = 3;
    for (b, idx) in blocks.iter().zip(&indices) {
        let shape = b.shape;
        ensure!(
            shape[1] == in_ch,
            "conv block {} takes {} channels but the previous block gives {in_ch}",
            idx.conv,
            shape[1]
        );
        let c = shape[0];
        f32t(
            format!("features.{}.weight", idx.conv),
            shape.to_vec(),
            &b.weight,
        );
        if let Some(bias) = &b.bias {
            f32t(format!("features.{}.bias", idx.conv), vec![c], bias);
        }
        let bn = format!("features.{}", idx.bn);
        f32t(format!("{bn}.weight"), vec![c], &b.gamma);
        f32t(format!("{bn}.bias"), vec![c], &b.beta);
        f32t(format!("{bn}.running_mean"), vec![c], &b.mean);
        f32t(format!("{bn}.running_var"), vec![c], &b.var);
        layers.push(
            json!({"index": idx.conv, "type": "conv", "in": in_ch, "out": c,
            "kernel": shape[2], "stride": 1, "padding": shape[2] / 2, "bias": b.bias.is_some()}),
        );
        layers.push(
            json!({"index": idx.bn, "type": "bn", "channels": c, "eps": b.eps,
            "momentum": b.momentum}),
        );
        layers.push(json!({"index": idx.relu, "type": "relu"}));
        match (idx.pool, b.pool_after) {
            (Some(p), true) => {
                layers.push(json!({"index": p, "type": "maxpool", "kernel": 2, "stride": 2}))
            }
            (None, false) => {}
            _ => bail!(
                "{}: block {} pools differently from its layout '{}'",
                json_path.display(),
                idx.conv,
                arch.layout
            ),
        }
        in_ch = c;
    }
    for idx in &indices {
        tensors.push(batches_tracked(&format!("features.{}", idx.bn)));
    }
    let (head_pool, pool_layer) = match arch.head_pool {
        HeadPool::Max2 => (
            "max2",
            json!({"index": pool5, "type": "maxpool", "kernel": 2, "stride": 2}),
        ),
        HeadPool::GlobalMax => (
            "global_max",
            json!({"index": pool5, "type": "global_maxpool"}),
        ),
    };
    layers.push(pool_layer);

    let mut classifier = Vec::new();
    for (j, lin) in linears.iter().enumerate() {
        let out_in = lin.out_in;
        let i = torchvision_classifier_index(j);
        tensors.push(f32_tensor(
            format!("classifier.{i}.weight"),
            vec![out_in.0, out_in.1],
            &lin.weight,
        ));
        if let Some(bias) = &lin.bias {
            tensors.push(f32_tensor(
                format!("classifier.{i}.bias"),
                vec![out_in.0],
                bias,
            ));
        }
        classifier.push(
            json!({"index": i, "type": "linear", "in": out_in.1, "out": out_in.0,
            "bias": lin.bias.is_some()}),
        );
        if j + 1 < linears.len() {
            classifier.push(json!({"index": i + 1, "type": "relu"}));
            classifier.push(json!({"index": i + 2, "type": "dropout", "p": arch.dropout}));
        }
    }
    let (c, side) = arch.attribution_shape()?;
    let pooled = side / arch.head_pool_kernel(side);
    let description = json!({
        "format": FORMAT,
        "version": 1,
        "weights": weights_path.file_name().map(|n| n.to_string_lossy().to_string()),
        "input": input_description(arch.input_size, normalization),
        "features": layers,
        "head": {
            "pool": head_pool,
            "pooled_shape": [c, pooled, pooled],
            "flatten": "channel-major: torch.flatten(x, 1) on NCHW (feature c*h*w + y*w + x)",
            "dropout": arch.dropout,
        },
        "classifier": classifier,
        "num_classes": arch.num_classes,
        "class_names": class_names,
        "notes": "features.{i} and classifier.{i} are positions in two nn.Sequential, as in \
                  torchvision's vgg*_bn; the model returns logits (no softmax or sigmoid).",
    });
    write_export(&weights_path, &json_path, &tensors, &description)
}

/// One tensor of an export: name, shape, little-endian bytes, dtype.
pub(crate) type ExportTensor = (String, Vec<usize>, Vec<u8>, safetensors::Dtype);

/// An `f32` tensor of an export.
pub(crate) fn f32_tensor(name: String, shape: Vec<usize>, values: &[f32]) -> ExportTensor {
    (name, shape, le_bytes(values), safetensors::Dtype::F32)
}

/// The `num_batches_tracked` counter PyTorch's BatchNorm saves (0: its value is unused in
/// evaluation and with a momentum set).
pub(crate) fn batches_tracked(bn: &str) -> ExportTensor {
    (
        format!("{bn}.num_batches_tracked"),
        vec![],
        0i64.to_le_bytes().to_vec(),
        safetensors::Dtype::I64,
    )
}

/// The JSON's `input` section: square RGB NCHW input and its normalisation, if known.
pub(crate) fn input_description(side: usize, normalization: Option<([f32; 3], [f32; 3])>) -> Value {
    json!({
        "layout": "NCHW",
        "channels": 3,
        "height": side,
        "width": side,
        "normalization": normalization.map(|(m, s)| json!({"mean": m, "std": s})),
    })
}

/// Class names must number the classes; a normalisation must be usable.
pub(crate) fn check_export_inputs(
    json_path: &Path,
    num_classes: usize,
    class_names: Option<&[String]>,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<()> {
    if let Some(names) = class_names {
        ensure!(
            names.len() == num_classes,
            "{}: {} class names given for a network with {num_classes} classes",
            json_path.display(),
            names.len(),
        );
    }
    if let Some((mean, std)) = normalization {
        ensure!(
            mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s != 0.0),
            "{}: normalisation std must be finite and non-zero, mean finite; got mean {mean:?} \
             std {std:?}",
            json_path.display()
        );
    }
    Ok(())
}

/// Writes the weights, then the description; if the description cannot be written the weights
/// are removed again, so no half export is left behind.
pub(crate) fn write_export(
    weights_path: &Path,
    json_path: &Path,
    tensors: &[ExportTensor],
    description: &Value,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, bytes, dtype)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow!("{}: tensor {name}: {e}", weights_path.display()))
        })
        .collect::<Result<_>>()?;
    let mut info = std::collections::HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(info))
        .map_err(|e| anyhow!("{}: cannot serialise: {e}", weights_path.display()))?;
    let text = serde_json::to_string_pretty(description)?;
    write_atomic(weights_path, &bytes)?;
    if let Err(e) = write_atomic(json_path, text.as_bytes()) {
        // the weights alone cannot be loaded: do not leave half an export behind
        let _ = std::fs::remove_file(weights_path);
        return Err(e.context(format!("removed {} again", weights_path.display())));
    }
    Ok(())
}

/// A JSON field as an unsigned integer, or an error naming the file and the field.
fn uint(v: &Value, key: &str, what: &str, file: &Path) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| anyhow!("{}: {what} lacks an integer '{key}' field", file.display()))
}

fn float(v: &Value, key: &str, what: &str, file: &Path) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("{}: {what} lacks a numeric '{key}' field", file.display()))
}

fn kind(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("?")
}

/// Rebuilds the architecture (and BatchNorm eps/momentum per block) from an export's JSON.
fn arch_from_description(d: &Value, file: &Path) -> Result<(VggArch, Vec<(f64, f64)>)> {
    ensure!(
        d.get("format").and_then(Value::as_str) == Some(FORMAT),
        "{}: not a faithful PyTorch export description (format is not '{FORMAT}')",
        file.display()
    );
    let input = d
        .get("input")
        .ok_or_else(|| anyhow!("{}: no 'input' section", file.display()))?;
    let (h, w) = (
        uint(input, "height", "input", file)?,
        uint(input, "width", "input", file)?,
    );
    ensure!(
        h == w,
        "{}: input is {h}x{w}, only square inputs are supported",
        file.display()
    );
    ensure!(
        uint(input, "channels", "input", file)? == 3,
        "{}: only 3-channel inputs are supported",
        file.display()
    );
    let features = d
        .get("features")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{}: no 'features' list", file.display()))?;
    let mut tokens: Vec<String> = Vec::new();
    let mut bn_params = Vec::new();
    let mut conv_bias: Option<bool> = None;
    let mut in_ch = 3;
    let mut head_pool = None;
    // expected order: (conv, bn, relu, [maxpool])+ then the head pool
    let mut pos = 0;
    while pos < features.len() {
        let layer = &features[pos];
        let at = format!("features[{pos}]");
        if let Some(i) = layer.get("index").and_then(Value::as_u64) {
            ensure!(
                i as usize == pos,
                "{}: {at} has index {i}; entries must be listed in order",
                file.display()
            );
        }
        let last = pos + 1 == features.len();
        match kind(layer) {
            "conv" => {
                ensure!(
                    features.len() >= pos + 4
                        && kind(&features[pos + 1]) == "bn"
                        && kind(&features[pos + 2]) == "relu",
                    "{}: {at}: a conv must be followed by bn and relu",
                    file.display()
                );
                let cin = uint(layer, "in", &at, file)?;
                let cout = uint(layer, "out", &at, file)?;
                ensure!(
                    cin == in_ch,
                    "{}: {at} takes {cin} channels, the previous layer gives {in_ch}",
                    file.display()
                );
                ensure!(
                    uint(layer, "kernel", &at, file)? == 3
                        && uint(layer, "padding", &at, file)? == 1
                        && layer.get("stride").and_then(Value::as_u64).unwrap_or(1) == 1,
                    "{}: {at}: only 3x3 convs with padding 1 and stride 1 are supported",
                    file.display()
                );
                let bias = layer
                    .get("bias")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| anyhow!("{}: {at} lacks 'bias'", file.display()))?;
                ensure!(
                    conv_bias.is_none_or(|b| b == bias),
                    "{}: {at}: either every conv has a bias or none does",
                    file.display()
                );
                conv_bias = Some(bias);
                let bn = &features[pos + 1];
                let bat = format!("features[{}]", pos + 1);
                ensure!(
                    uint(bn, "channels", &bat, file)? == cout,
                    "{}: {bat} normalises a different number of channels than {at} outputs",
                    file.display()
                );
                bn_params.push((
                    float(bn, "eps", &bat, file)?,
                    float(bn, "momentum", &bat, file)?,
                ));
                tokens.push(cout.to_string());
                in_ch = cout;
                pos += 3;
            }
            "maxpool" => {
                ensure!(
                    uint(layer, "kernel", &at, file)? == 2
                        && uint(layer, "stride", &at, file)? == 2,
                    "{}: {at}: only 2x2 max-pools with stride 2 are supported",
                    file.display()
                );
                ensure!(
                    tokens.last().is_some_and(|t| t != "M"),
                    "{}: {at}: a max-pool must follow a conv block",
                    file.display()
                );
                tokens.push("M".into());
                if last {
                    head_pool = Some(HeadPool::Max2);
                }
                pos += 1;
            }
            "global_maxpool" => {
                ensure!(
                    last && tokens.last().is_some_and(|t| t != "M"),
                    "{}: {at}: a global max-pool may only be the head's pool, after a conv block",
                    file.display()
                );
                tokens.push("M".into());
                head_pool = Some(HeadPool::GlobalMax);
                pos += 1;
            }
            other => bail!(
                "{}: {at} has unsupported type '{other}' (expected conv, maxpool or global_maxpool)",
                file.display()
            ),
        }
    }
    let head_pool = head_pool.ok_or_else(|| {
        anyhow!(
            "{}: 'features' must end with the head's pool (maxpool or global_maxpool)",
            file.display()
        )
    })?;
    let classifier = d
        .get("classifier")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{}: no 'classifier' list", file.display()))?;
    let mut outs = Vec::new();
    let mut prev_out = None;
    for (pos, layer) in classifier.iter().enumerate() {
        let at = format!("classifier[{pos}]");
        let expected = match pos % 3 {
            0 => "linear",
            1 => "relu",
            _ => "dropout",
        };
        ensure!(
            kind(layer) == expected,
            "{}: {at} is '{}', expected '{expected}' (Linear, ReLU, Dropout, ..., Linear)",
            file.display(),
            kind(layer)
        );
        if expected == "linear" {
            let (i, o) = (
                uint(layer, "in", &at, file)?,
                uint(layer, "out", &at, file)?,
            );
            if let Some(p) = prev_out {
                ensure!(
                    i == p,
                    "{}: {at} takes {i} features, the previous linear gives {p}",
                    file.display()
                );
            }
            ensure!(
                layer.get("bias").and_then(Value::as_bool).unwrap_or(true),
                "{}: {at}: linear layers without bias are not supported",
                file.display()
            );
            prev_out = Some(o);
            outs.push(o);
        }
    }
    ensure!(
        classifier.len() % 3 == 1,
        "{}: 'classifier' must end with a linear layer",
        file.display()
    );
    let num_classes = outs.pop().context("empty classifier")?;
    let dropout = d
        .get("head")
        .and_then(|h| h.get("dropout"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let arch = VggArch {
        layout: tokens.join(","),
        width_divisor: 1,
        num_classes,
        input_size: h,
        dropout,
        hidden: outs,
        conv_bias: conv_bias.unwrap_or(false),
        head_pool,
    };
    arch.validate()
        .with_context(|| format!("{}: the described network is not valid", file.display()))?;
    Ok((arch, bn_params))
}

/// Reads a network written by [`export_torch`] back: `path` is the stem given to the export
/// or either of its two files. The architecture comes from the JSON alone (plain layer list),
/// the weights from the safetensors beside it; any tensor missing, mis-shaped or left over is
/// an error naming it.
pub fn import_torch_export(path: &Path, device: &Device) -> Result<Vgg> {
    let (weights_path, json_path) = export_paths(path);
    let text = std::fs::read_to_string(&json_path)
        .with_context(|| format!("cannot read {}", json_path.display()))?;
    let description: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", json_path.display()))?;
    let (arch, bn_params) = arch_from_description(&description, &json_path)?;
    let sd = read_state_dict(&weights_path)?;
    let mut model = apply_state_dict(&arch, &sd, device, None, &weights_path)?;
    for (block, (eps, momentum)) in model.blocks.iter_mut().zip(bn_params) {
        block.bn.epsilon = eps;
        block.bn.momentum = momentum;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_paths_append_or_replace_the_extension() {
        let (w, j) = export_paths(Path::new("out/model.v2"));
        assert_eq!(w, PathBuf::from("out/model.v2.safetensors"));
        assert_eq!(j, PathBuf::from("out/model.v2.json"));
        let (w, j) = export_paths(Path::new("m.json"));
        assert_eq!(
            (w, j),
            (PathBuf::from("m.safetensors"), PathBuf::from("m.json"))
        );
    }

    #[test]
    fn descriptions_with_wrong_structure_are_refused_with_a_reason() {
        let f = Path::new("x.json");
        let base = json!({
            "format": FORMAT,
            "input": {"channels": 3, "height": 4, "width": 4},
            "features": [
                {"type": "conv", "in": 3, "out": 2, "kernel": 3, "padding": 1, "bias": true},
                {"type": "bn", "channels": 2, "eps": 1e-5, "momentum": 0.1},
                {"type": "relu"},
                {"type": "maxpool", "kernel": 2, "stride": 2}
            ],
            "classifier": [{"type": "linear", "in": 8, "out": 3, "bias": true}]
        });
        let (arch, bn) = arch_from_description(&base, f).unwrap();
        assert_eq!(arch.layout, "2,M");
        assert_eq!(arch.num_classes, 3);
        assert_eq!(bn, vec![(1e-5, 0.1)]);
        let err = |d: Value| format!("{:#}", arch_from_description(&d, f).unwrap_err());
        let mut d = base.clone();
        d["features"][0]["in"] = json!(4);
        assert!(err(d).contains("takes 4 channels"));
        let mut d = base.clone();
        d["features"][1]["channels"] = json!(5);
        assert!(err(d).contains("different number of channels"));
        let mut d = base.clone();
        d["format"] = json!("other");
        assert!(err(d).contains("not a faithful"));
        let mut d = base.clone();
        d["classifier"] = json!([{"type": "relu"}]);
        assert!(err(d).contains("expected 'linear'"));
        let mut d = base;
        d["features"][3] = json!({"type": "avgpool"});
        assert!(err(d).contains("unsupported type 'avgpool'"));
    }
}
