//! ONNX graph of a [`ResNet`]: every conv with its BatchNorm folded in (evaluation mode), ReLU,
//! the stem's max-pool (ImageNet stem), each block as its conv chain (ReLUs between) plus an `Add` of the
//! shortcut (identity, or the folded 1x1 projection), then `GlobalAveragePool`, `Flatten` and a
//! `Gemm` head. Tensors holding NaN or an infinity are refused with their names.

use super::finite;
use super::onnx::{
    GraphBuilder, ModelProto, attr_float, attr_int, attr_ints, fold_batch_norm, normalization_note,
};
use crate::models::resnet::{ResNet, Stem};
use anyhow::{Result, ensure};
use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;

/// Adds `conv` (with `bn` folded in) reading `input`; the output is named `name`.
fn conv_bn(
    g: &mut GraphBuilder,
    (conv, bn): (&Conv2d, &BatchNorm),
    (input, name): (&str, &str),
    burn_names: (&str, &str),
) -> Result<()> {
    let [o, c, kh, kw] = conv.weight.dims();
    let weight = finite(&format!("{}.weight", burn_names.0), conv.weight.val())?;
    let bn_name = |t: &str| format!("{}.{t}", burn_names.1);
    let (w, b) = fold_batch_norm(
        &weight,
        o,
        None,
        &finite(&bn_name("gamma"), bn.gamma.val())?,
        &finite(&bn_name("beta"), bn.beta.val())?,
        &finite(&bn_name("running_mean"), bn.running_mean.value())?,
        &finite(&bn_name("running_var"), bn.running_var.value())?,
        bn.epsilon,
    );
    ensure!(
        w.iter().chain(&b).all(|x| x.is_finite()),
        "folding {} into {} gives non-finite weights: running_var + eps must be positive",
        burn_names.1,
        burn_names.0
    );
    let (wn, bname) = (format!("{name}.weight"), format!("{name}.bias"));
    g.init(&wn, &[o, c, kh, kw], &w);
    g.init(&bname, &[o], &b);
    let stride = conv.stride[0] as i64;
    let pad = (kh / 2) as i64;
    g.node_with(
        "Conv",
        name,
        &[input, &wn, &bname],
        vec![
            attr_ints("kernel_shape", &[kh as i64, kw as i64]),
            attr_ints("pads", &[pad, pad, pad, pad]),
            attr_ints("strides", &[stride, stride]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", 1),
        ],
    );
    Ok(())
}

impl super::onnx::OnnxExport for ResNet {
    fn onnx_model(&self, normalization: Option<([f32; 3], [f32; 3])>) -> Result<ModelProto> {
        onnx_resnet_model(self, normalization)
    }
}

/// Builds the ONNX model of `model` without writing it.
pub fn onnx_resnet_model(
    model: &ResNet,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<ModelProto> {
    let model = model.valid();
    let arch = &model.arch;
    let mut g = GraphBuilder::with_input(normalization)?;
    let input = g.current.clone();
    conv_bn(
        &mut g,
        (&model.conv1, &model.bn1),
        (&input, "stem"),
        ("conv1", "bn1"),
    )?;
    g.node("Relu", "stem_relu", &[], vec![]);
    if arch.stem == Stem::Imagenet {
        g.node(
            "MaxPool",
            "stem_pool",
            &[],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        );
    }
    for (s, stage) in model.layers.iter().enumerate() {
        for (b, block) in stage.iter().enumerate() {
            let p = format!("layers.{s}.{b}");
            let x = g.current.clone();
            let n = |t: &str| format!("s{s}b{b}_{t}");
            let chain = block.chain();
            let last = chain.len() - 1;
            for (k, layer) in chain.into_iter().enumerate() {
                let y = g.current.clone();
                let (conv, bn) = (format!("conv{}", k + 1), format!("bn{}", k + 1));
                conv_bn(
                    &mut g,
                    layer,
                    (&y, &n(&conv)),
                    (&format!("{p}.{conv}"), &format!("{p}.{bn}")),
                )?;
                if k < last {
                    g.node("Relu", &n(&format!("relu{}", k + 1)), &[], vec![]);
                }
            }
            let main = g.current.clone();
            let shortcut = match (&block.downsample_conv, &block.downsample_bn) {
                (Some(c), Some(bn)) => {
                    conv_bn(
                        &mut g,
                        (c, bn),
                        (&x, &n("proj")),
                        (
                            &format!("{p}.downsample_conv"),
                            &format!("{p}.downsample_bn"),
                        ),
                    )?;
                    g.current.clone()
                }
                _ => x,
            };
            g.node_with("Add", &n("add"), &[&main, &shortcut], vec![]);
            g.node("Relu", &n("out"), &[], vec![]);
        }
    }
    g.node("GlobalAveragePool", "pool", &[], vec![]);
    g.node("Flatten", "flatten", &[], vec![attr_int("axis", 1)]);
    let [d_in, d_out] = model.fc.weight.dims();
    let weight = finite("fc.weight", model.fc.weight.val().transpose())?;
    let bias = match &model.fc.bias {
        Some(b) => finite("fc.bias", b.val())?,
        None => vec![0.0; d_out],
    };
    g.init("fc.weight", &[d_out, d_in], &weight);
    g.init("fc.bias", &[d_out], &bias);
    g.node(
        "Gemm",
        "logits",
        &["fc.weight", "fc.bias"],
        vec![
            attr_float("alpha", 1.0),
            attr_float("beta", 1.0),
            attr_int("transA", 0),
            attr_int("transB", 1),
        ],
    );
    let doc = format!(
        "faithful ResNet, layout '{}', {:?} stem, base width {}, width divisor {}; BatchNorm \
         folded into the convs (evaluation mode){}",
        arch.layout,
        arch.stem,
        arch.base_width,
        arch.width_divisor,
        normalization_note(normalization)
    );
    Ok(g.finish("faithful_resnet", doc, arch.input_size, arch.num_classes))
}
