//! ONNX export of a quantized network in the QDQ format onnxruntime runs with int8 kernels:
//! every weighted layer reads its input through `QuantizeLinear` -> `DequantizeLinear` (uint8,
//! per tensor, the observer's frozen scale and zero point) and its weights as int8 initializers
//! through `DequantizeLinear` (per output channel, axis 0, zero point 0). onnxruntime fuses
//! these patterns into `QLinearConv` / int8 matrix products where it can. With fewer than 8
//! activation bits a `Clip` to the representable range comes before each `QuantizeLinear`, so
//! the uint8 tensor holds exactly the trained levels.
//!
//! The graph computes what faithful's fake-quantized forward computes, up to float summation
//! order and onnxruntime's integer requantization (see the interop test for the tolerance).

use super::onnx::{GraphBuilder, ModelProto, TensorProto, attr_float, attr_int, attr_ints};
use crate::models::head::HeadPooling;
use crate::models::network::FamilyNet;
use crate::models::quant::{Observer, QuantNet, QuantSpec, Step, quantize_rows};
use anyhow::Result;
use burn::prelude::*;

/// `TensorProto.DataType` codes.
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;

fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read a tensor: {e:?}"))
}

/// An initializer of raw little-endian bytes.
fn raw(g: &mut GraphBuilder, name: &str, dims: &[usize], data_type: i32, bytes: Vec<u8>) {
    g.inits.push(TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.into(),
        raw_data: bytes,
    });
}

/// `QuantizeLinear` -> `DequantizeLinear` of the current value with `observer`'s range; nothing
/// for an observer that has seen no batch (the fake-quantized forward passes such a tensor
/// unchanged too).
/// Returns the activation's scale when it is quantized.
fn quantize_activation(
    g: &mut GraphBuilder,
    observer: &Observer,
    spec: &QuantSpec,
    name: &str,
) -> Result<Option<f32>> {
    let Some((scale, zero)) = observer.scale_and_zero(spec)? else {
        return Ok(None);
    };
    let (s, z) = (format!("{name}_scale"), format!("{name}_zero"));
    g.init(&s, &[], &[scale]);
    raw(g, &z, &[], UINT8, vec![zero]);
    if spec.act_bits < 8 {
        let levels = spec.act_levels() as f32;
        let (lo, hi) = (format!("{name}_min"), format!("{name}_max"));
        g.init(&lo, &[], &[(0.0 - zero as f32) * scale]);
        g.init(&hi, &[], &[(levels - zero as f32) * scale]);
        g.node("Clip", &format!("{name}_clip"), &[&lo, &hi], vec![]);
    }
    g.node("QuantizeLinear", &format!("{name}_q"), &[&s, &z], vec![]);
    g.node("DequantizeLinear", &format!("{name}_dq"), &[&s, &z], vec![]);
    Ok(Some(scale))
}

/// Int8 weights `w` (out first) with per-output scales, dequantized; returns the float
/// weight's value name and the scales.
fn dequantized_weight(
    g: &mut GraphBuilder,
    name: &str,
    dims: &[usize],
    w: &[f32],
    bits: u32,
) -> (String, Vec<f32>) {
    let (ints, scales) = quantize_rows(w, dims[0], bits);
    let (q, s, z, out) = (
        format!("{name}_int8"),
        format!("{name}_scale"),
        format!("{name}_zero"),
        format!("{name}_dq"),
    );
    raw(g, &q, dims, INT8, ints.iter().map(|v| *v as u8).collect());
    g.init(&s, &[dims[0]], &scales);
    raw(g, &z, &[dims[0]], INT8, vec![0; dims[0]]);
    g.node_with(
        "DequantizeLinear",
        &out,
        &[&q, &s, &z],
        vec![attr_int("axis", 0)],
    );
    (out, scales)
}

/// The bias: int32 at scale `input scale x weight scale` through `DequantizeLinear` (the QDQ
/// format's bias, which int8 kernels add to their int32 sums) when the input is quantized, else
/// float. Returns the bias value's name. The int32 rounding moves a bias by at most half of
/// `input scale x weight scale`, far below anything the activations resolve.
fn bias(
    g: &mut GraphBuilder,
    name: &str,
    values: &[f32],
    input_scale: Option<f32>,
    weight_scales: &[f32],
) -> String {
    let Some(si) = input_scale else {
        g.init(name, &[values.len()], values);
        return name.to_string();
    };
    let scales: Vec<f32> = weight_scales.iter().map(|sw| si * sw).collect();
    let ints: Vec<i32> = values
        .iter()
        .zip(&scales)
        .map(|(b, s)| {
            (b / s)
                .round_ties_even()
                .clamp(i32::MIN as f32, i32::MAX as f32) as i32
        })
        .collect();
    let (q, s, z, out) = (
        format!("{name}_int32"),
        format!("{name}_scale"),
        format!("{name}_zero"),
        format!("{name}_dq"),
    );
    raw(
        g,
        &q,
        &[values.len()],
        INT32,
        ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    g.init(&s, &[values.len()], &scales);
    raw(g, &z, &[values.len()], INT32, vec![0; 4 * values.len()]);
    g.node_with(
        "DequantizeLinear",
        &out,
        &[&q, &s, &z],
        vec![attr_int("axis", 0)],
    );
    out
}

/// Emits `steps` reading the current value.
fn emit(g: &mut GraphBuilder, net: &QuantNet, steps: &[Step], prefix: &str) -> Result<()> {
    let spec = &net.arch.spec;
    for (k, step) in steps.iter().enumerate() {
        let tag = format!("{prefix}{k}");
        match step {
            Step::Conv {
                index,
                stride,
                padding,
            } => {
                let conv = &net.convs[*index];
                let dims = conv.weight.dims();
                let input_scale = quantize_activation(
                    g,
                    &net.observers[*index],
                    spec,
                    &format!("conv{index}_in"),
                )?;
                let input = g.current.clone();
                let (w, weight_scales) = dequantized_weight(
                    g,
                    &format!("conv{index}_w"),
                    &dims,
                    &values(conv.weight.val())?,
                    spec.weight_bits,
                );
                let b = bias(
                    g,
                    &format!("conv{index}_b"),
                    &values(conv.bias.val())?,
                    input_scale,
                    &weight_scales,
                );
                g.node_with(
                    "Conv",
                    &format!("conv{index}"),
                    &[&input, &w, &b],
                    vec![
                        attr_ints("kernel_shape", &[dims[2] as i64, dims[3] as i64]),
                        attr_ints(
                            "pads",
                            &[
                                padding[0] as i64,
                                padding[1] as i64,
                                padding[0] as i64,
                                padding[1] as i64,
                            ],
                        ),
                        attr_ints("strides", &[stride[0] as i64, stride[1] as i64]),
                        attr_ints("dilations", &[1, 1]),
                        attr_int("group", 1),
                    ],
                );
            }
            Step::Relu => g.node("Relu", &format!("relu_s{tag}"), &[], vec![]),
            Step::MaxPool {
                kernel,
                stride,
                padding,
            } => g.node(
                "MaxPool",
                &format!("pool_s{tag}"),
                &[],
                vec![
                    attr_ints("kernel_shape", &[kernel[0] as i64, kernel[1] as i64]),
                    attr_ints("strides", &[stride[0] as i64, stride[1] as i64]),
                    attr_ints(
                        "pads",
                        &[
                            padding[0] as i64,
                            padding[1] as i64,
                            padding[0] as i64,
                            padding[1] as i64,
                        ],
                    ),
                ],
            ),
            Step::Residual { branch, shortcut } => {
                let input = g.current.clone();
                emit(g, net, branch, &format!("{tag}b"))?;
                let from_branch = g.current.clone();
                g.current = input.clone();
                let from_shortcut = if shortcut.is_empty() {
                    input
                } else {
                    emit(g, net, shortcut, &format!("{tag}s"))?;
                    g.current.clone()
                };
                g.node_with(
                    "Add",
                    &format!("add_s{tag}"),
                    &[&from_branch, &from_shortcut],
                    vec![],
                );
            }
        }
    }
    Ok(())
}

/// Builds the QDQ model of `net` (see the module docs) without writing it.
pub fn onnx_model(
    net: &QuantNet,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<ModelProto> {
    let spec = &net.arch.spec;
    let mut g = GraphBuilder::with_input(normalization)?;
    emit(&mut g, net, &net.plan, "")?;
    match net.pool {
        HeadPooling::Max { kernel } => g.node(
            "MaxPool",
            "pool5",
            &[],
            vec![
                attr_ints("kernel_shape", &[kernel as i64, kernel as i64]),
                attr_ints("strides", &[kernel as i64, kernel as i64]),
            ],
        ),
        HeadPooling::GlobalAverage => g.node("GlobalAveragePool", "pool5", &[], vec![]),
    }
    g.node("Flatten", "flatten", &[], vec![attr_int("axis", 1)]);
    let head = net.head();
    let layers = head.layers();
    for j in 0..layers {
        let lin = head.layer(j);
        let observer = &net.observers[net.convs.len() + j];
        let input_scale = quantize_activation(&mut g, observer, spec, &format!("fc{j}_in"))?;
        let input = g.current.clone();
        let [d_in, d_out] = lin.weight.dims();
        // burn stores (in, out); ONNX Gemm with transB reads (out, in)
        let w = values(lin.weight.val().transpose())?;
        let (wq, weight_scales) = dequantized_weight(
            &mut g,
            &format!("fc{j}_w"),
            &[d_out, d_in],
            &w,
            spec.weight_bits,
        );
        let bias_values = match &lin.bias {
            Some(b) => values(b.val())?,
            None => vec![0.0; d_out],
        };
        let b = bias(
            &mut g,
            &format!("fc{j}_b"),
            &bias_values,
            input_scale,
            &weight_scales,
        );
        let last = j + 1 == layers;
        let out = if last {
            "logits".to_string()
        } else {
            format!("fc{j}")
        };
        g.node_with(
            "Gemm",
            &out,
            &[&input, &wq, &b],
            vec![
                attr_float("alpha", 1.0),
                attr_float("beta", 1.0),
                attr_int("transA", 0),
                attr_int("transB", 1),
            ],
        );
        if !last {
            g.node("Relu", &format!("fc{j}_relu"), &[], vec![]);
        }
    }
    let doc = format!(
        "faithful quantized network ({}), QDQ int8: weights per output channel (symmetric, \
         int8), activations per tensor (uint8){}",
        net.arch.describe_short(),
        super::onnx::normalization_note(normalization)
    );
    Ok(g.finish(
        "faithful_quantized",
        doc,
        net.arch.base.input_size(),
        head.num_classes(),
    ))
}
