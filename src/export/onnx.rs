//! ONNX export (IR version 8, opset 13) of a [`Vgg`] in evaluation mode.
//!
//! Graph: input `input` float `[N, 3, H, W]` (`N` dynamic) -> optional `Sub`/`Div`
//! normalisation -> per conv block `Conv` (3x3, pad 1, BatchNorm folded into its weights and
//! bias) -> `Relu` -> optional `MaxPool` 2x2/2 -> head pool (`MaxPool` 2x2/2 or
//! `GlobalMaxPool`) -> `Flatten` (axis 1, channel-major as faithful's head) -> `Gemm`
//! (`transB = 1`, weights `[out, in]`) with `Relu` between hidden layers -> output `logits`
//! `[N, K]`.
//!
//! The protobuf messages are hand-written [`prost`] structs carrying the field numbers of
//! `onnx.proto`; only the fields written here are declared, which decoders accept.

use super::plain;
use crate::models::network::on_net;
use crate::models::vgg::HeadPool;
use crate::models::{Network, Vgg};
use crate::util::write_atomic;
use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use std::path::Path;

/// ONNX IR version written.
pub const IR_VERSION: i64 = 8;
/// Default-domain opset written.
pub const OPSET: i64 = 13;
/// `TensorProto.DataType.FLOAT`.
pub const DATA_TYPE_FLOAT: i32 = 1;

/// `onnx.ModelProto` (fields written by this exporter).
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// IR version of the file.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets the graph uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Producing tool.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Producing tool's version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Model version.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Free-form description.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The computation graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

/// `onnx.OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// Operator domain; empty for the default ONNX domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Opset version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Free-form description.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Graph inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Constant tensors stored sparse (see [`super::onnx_sparse`]).
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorProto>,
}

/// `onnx.SparseTensorProto`: the non-zero values and their positions.
#[derive(Clone, PartialEq, Message)]
pub struct SparseTensorProto {
    /// The non-zero values, a 1-D tensor `[nnz]` carrying the tensor's name.
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorProto>,
    /// Their positions: int64 `[nnz]` (row-major linear indices, ascending).
    #[prost(message, optional, tag = "2")]
    pub indices: Option<TensorProto>,
    /// The dense tensor's extents.
    #[prost(int64, repeated, tag = "3")]
    pub dims: Vec<i64>,
}

/// `onnx.NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input value names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator, e.g. `Conv`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Operator attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Operator domain; empty for the default ONNX domain.
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `onnx.AttributeProto` (scalar int/float and int-list attributes).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `AttributeType`: 1 FLOAT, 2 INT, 7 INTS.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    /// Float value.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// Int value.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// Int list value.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

/// `AttributeProto.AttributeType.FLOAT`.
pub const ATTR_FLOAT: i32 = 1;
/// `AttributeProto.AttributeType.INT`.
pub const ATTR_INT: i32 = 2;
/// `AttributeProto.AttributeType.INTS`.
pub const ATTR_INTS: i32 = 7;

/// `onnx.TensorProto` with its values in `raw_data` (little-endian).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Extents, outermost first.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type (1 = FLOAT).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Name (initializer names are graph value names).
    #[prost(string, tag = "8")]
    pub name: String,
    /// Values as little-endian bytes.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// `onnx.ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// Value name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `onnx.TypeProto` (only the tensor case of its `value` oneof).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// `tensor_type` member of the oneof.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

/// `onnx.TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    /// Element type (1 = FLOAT).
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// Dimensions, outermost first.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `onnx.TensorShapeProto.Dimension`.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// Fixed size or symbolic name.
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
}

/// The `value` oneof of [`Dimension`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimensionValue {
    /// A fixed size.
    #[prost(int64, tag = "1")]
    DimValue(i64),
    /// A symbolic (dynamic) size, e.g. `N`.
    #[prost(string, tag = "2")]
    DimParam(String),
}

/// An int-list attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INT,
        i: Some(v),
        ..Default::default()
    }
}

pub(crate) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_FLOAT,
        f: Some(v),
        ..Default::default()
    }
}

/// A float initializer with its values as raw little-endian bytes.
pub fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DATA_TYPE_FLOAT,
        name: name.into(),
        raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// A float graph input or output of the given dimensions.
pub fn value_info(name: &str, dims: &[DimensionValue]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: DATA_TYPE_FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(d.clone()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

/// Folds an eval-mode BatchNorm into the preceding conv: with
/// `s = gamma / sqrt(var + eps)`, the weights of output channel o become `w[o] * s[o]` and the
/// bias `(b[o] - mean[o]) * s[o] + beta[o]` (`b = 0` without conv bias). Weights are OIHW.
#[allow(clippy::too_many_arguments)]
pub fn fold_batch_norm(
    weight: &[f32],
    out_channels: usize,
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let per = weight.len() / out_channels.max(1);
    let scale: Vec<f64> = (0..out_channels)
        .map(|o| gamma[o] as f64 / (var[o] as f64 + eps).sqrt())
        .collect();
    let w = weight
        .iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 * scale[i / per]) as f32)
        .collect();
    let b = (0..out_channels)
        .map(|o| {
            let b0 = bias.map_or(0.0, |b| b[o] as f64);
            ((b0 - mean[o] as f64) * scale[o] + beta[o] as f64) as f32
        })
        .collect();
    (w, b)
}

/// Builds a graph node by node; `current` is the value the next node reads by default.
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) inits: Vec<TensorProto>,
    pub(crate) current: String,
}

impl GraphBuilder {
    /// An empty graph reading `input`, starting with `(input - mean) / std` per channel when a
    /// normalisation is given.
    pub(crate) fn with_input(normalization: Option<([f32; 3], [f32; 3])>) -> Result<Self> {
        let mut g = GraphBuilder {
            nodes: Vec::new(),
            inits: Vec::new(),
            current: "input".into(),
        };
        if let Some((mean, std)) = normalization {
            ensure!(
                std.iter().all(|s| s.is_finite() && *s != 0.0)
                    && mean.iter().all(|m| m.is_finite()),
                "normalisation std must be finite and non-zero, mean finite; got mean {mean:?} std {std:?}"
            );
            g.init("norm_mean", &[1, 3, 1, 1], &mean);
            g.init("norm_std", &[1, 3, 1, 1], &std);
            g.node("Sub", "input_centred", &["norm_mean"], vec![]);
            g.node("Div", "input_normalised", &["norm_std"], vec![]);
        }
        Ok(g)
    }

    /// Appends a node with exactly these inputs; its output becomes current.
    pub(crate) fn node_with(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        let input = inputs.iter().map(|s| s.to_string()).collect();
        self.nodes.push(NodeProto {
            input,
            output: vec![name.into()],
            name: name.into(),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
        self.current = name.into();
    }

    /// The finished model: input `input` [N, 3, side, side], output `logits` [N, classes].
    pub(crate) fn finish(self, name: &str, doc: String, side: usize, classes: usize) -> ModelProto {
        let graph = GraphProto {
            node: self.nodes,
            name: name.into(),
            initializer: self.inits,
            sparse_initializer: Vec::new(),
            doc_string: doc,
            input: vec![value_info(
                "input",
                &[
                    DimensionValue::DimParam("N".into()),
                    DimensionValue::DimValue(3),
                    DimensionValue::DimValue(side as i64),
                    DimensionValue::DimValue(side as i64),
                ],
            )],
            output: vec![value_info(
                "logits",
                &[
                    DimensionValue::DimParam("N".into()),
                    DimensionValue::DimValue(classes as i64),
                ],
            )],
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "faithful".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            model_version: 1,
            doc_string: "Attribution-preserving compressed CNN exported by faithful".into(),
            graph: Some(graph),
        }
    }

    /// Appends a node fed by the current value (and `extra` inputs); its output becomes current.
    pub(crate) fn node(
        &mut self,
        op: &str,
        name: &str,
        extra: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        let current = self.current.clone();
        let mut inputs = vec![current.as_str()];
        inputs.extend_from_slice(extra);
        self.node_with(op, name, &inputs, attrs);
    }

    /// Adds a float initializer.
    pub(crate) fn init(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        self.inits.push(float_tensor(name, dims, values));
    }
}

/// Builds the ONNX model of `model` (see the module docs) without writing it.
pub fn onnx_model(model: &Vgg, normalization: Option<([f32; 3], [f32; 3])>) -> Result<ModelProto> {
    let arch = &model.arch;
    let (blocks, linears) = plain(model)?;
    let mut g = GraphBuilder::with_input(normalization)?;
    for (i, b) in blocks.iter().enumerate() {
        let [o, c, kh, kw] = b.shape;
        let (w, bias) = fold_batch_norm(
            &b.weight,
            o,
            b.bias.as_deref(),
            &b.gamma,
            &b.beta,
            &b.mean,
            &b.var,
            b.eps,
        );
        ensure!(
            w.iter().chain(&bias).all(|x| x.is_finite()),
            "folding the BatchNorm of conv block {i} (blocks.{i}.bn) into its conv gives \
             non-finite weights: running_var + eps must be positive"
        );
        let (wn, bn) = (format!("conv{i}.weight"), format!("conv{i}.bias"));
        g.init(&wn, &[o, c, kh, kw], &w);
        g.init(&bn, &[o], &bias);
        g.node(
            "Conv",
            &format!("conv{i}"),
            &[&wn, &bn],
            vec![
                attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                attr_ints(
                    "pads",
                    &[
                        (kh / 2) as i64,
                        (kw / 2) as i64,
                        (kh / 2) as i64,
                        (kw / 2) as i64,
                    ],
                ),
                attr_ints("strides", &[1, 1]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", 1),
            ],
        );
        g.node("Relu", &format!("relu{i}"), &[], vec![]);
        if b.pool_after {
            g.node(
                "MaxPool",
                &format!("pool{i}"),
                &[],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                ],
            );
        }
    }
    match arch.head_pool {
        HeadPool::Max2 => g.node(
            "MaxPool",
            "pool5",
            &[],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        HeadPool::GlobalMax => g.node("GlobalMaxPool", "pool5", &[], vec![]),
    }
    g.node("Flatten", "flatten", &[], vec![attr_int("axis", 1)]);
    for (j, lin) in linears.iter().enumerate() {
        let last = j + 1 == linears.len();
        let (o, i) = lin.out_in;
        let (wn, bn) = (format!("fc{j}.weight"), format!("fc{j}.bias"));
        g.init(&wn, &[o, i], &lin.weight);
        let zeros = vec![0.0; o];
        g.init(&bn, &[o], lin.bias.as_deref().unwrap_or(&zeros));
        let out = if last {
            "logits".to_string()
        } else {
            format!("fc{j}")
        };
        g.node(
            "Gemm",
            &out,
            &[&wn, &bn],
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
        "faithful VGG, layout '{}', head pool {:?}, hidden {:?}; BatchNorm folded into the \
         convs (evaluation mode){}",
        arch.layout,
        arch.head_pool,
        arch.hidden,
        normalization_note(normalization)
    );
    Ok(g.finish("faithful_vgg", doc, arch.input_size, arch.num_classes))
}

/// How the graph's input is to be fed, for its doc string.
pub(crate) fn normalization_note(normalization: Option<([f32; 3], [f32; 3])>) -> &'static str {
    if normalization.is_some() {
        "; input normalisation included: feed RGB in [0, 1]"
    } else {
        "; no input normalisation included"
    }
}

/// What ONNX export needs of a family: its evaluation-mode graph. The default says the family
/// has none, so a new family starts with `impl OnnxExport for MyNet {}` in its own file.
pub trait OnnxExport {
    /// The graph, starting with `(input - mean) / std` when `normalization` is given.
    fn onnx_model(&self, normalization: Option<([f32; 3], [f32; 3])>) -> Result<ModelProto> {
        let _ = normalization;
        bail!("ONNX export is not implemented for this network family")
    }
}

impl OnnxExport for crate::models::quant::QuantNet {
    fn onnx_model(&self, normalization: Option<([f32; 3], [f32; 3])>) -> Result<ModelProto> {
        super::onnx_quant::onnx_model(self, normalization)
    }
}

impl OnnxExport for Vgg {
    fn onnx_model(&self, normalization: Option<([f32; 3], [f32; 3])>) -> Result<ModelProto> {
        onnx_model(self, normalization)
    }
}

/// Writes `model` as an ONNX file at `out` (atomically): input `input` `[N, 3, H, W]`, output
/// `logits` `[N, K]`, BatchNorm folded into the convs. With `normalization = Some((mean, std))`
/// the graph starts with `(input - mean) / std` per channel, so it takes RGB in [0, 1].
/// A network holding NaN or infinite values is refused (the error names `out` and the tensor)
/// and nothing is written.
pub fn export_onnx(
    model: &Network,
    out: &Path,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<()> {
    let proto = network_onnx_model(model, normalization)
        .with_context(|| format!("cannot export {}", out.display()))?;
    write_atomic(out, &proto.encode_to_vec())
}

/// The ONNX graph of any network, through its family's [`OnnxExport`].
pub fn network_onnx_model(
    model: &Network,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> Result<ModelProto> {
    on_net!(model, n => n.onnx_model(normalization))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_a_hand_computation() {
        // one output channel, two weights: s = 2 / sqrt(3 + 1) = 1
        let (w, b) = fold_batch_norm(
            &[1.0, -2.0],
            1,
            Some(&[0.5]),
            &[2.0],
            &[0.25],
            &[1.5],
            &[3.0],
            1.0,
        );
        assert_eq!(w, vec![1.0, -2.0]);
        assert_eq!(b, vec![(0.5 - 1.5) * 1.0 + 0.25]);
        // two channels, no bias, eps 0: s = [0.5 / sqrt(0.25), 6 / sqrt(9)] = [1, 2]
        let (w, b) = fold_batch_norm(
            &[1.0, 2.0, 3.0, 4.0],
            2,
            None,
            &[0.5, 6.0],
            &[0.0, 1.0],
            &[1.0, -1.0],
            &[0.25, 9.0],
            0.0,
        );
        assert_eq!(w, vec![1.0, 2.0, 6.0, 8.0]);
        assert_eq!(b, vec![-1.0, 2.0 + 1.0]);
    }

    #[test]
    fn dimension_oneof_round_trips() {
        let v = value_info(
            "x",
            &[
                DimensionValue::DimParam("N".into()),
                DimensionValue::DimValue(7),
            ],
        );
        let bytes = v.encode_to_vec();
        assert_eq!(ValueInfoProto::decode(bytes.as_slice()).unwrap(), v);
        // ValueInfoProto { name = "x" (field 1, wire type 2) ... }: first bytes 0x0a 0x01 'x'
        assert_eq!(&bytes[..3], &[0x0a, 0x01, b'x']);
    }
}
