//! A small CPU inference runtime for faithful's float ONNX exports, whose convolutions and
//! fully connected layers skip zero weights: the deployment path of unstructured-pruned
//! networks. Dense tensor libraries (flex, onnxruntime) multiply the zeros a pruned network
//! keeps; here every weight tensor is held in compressed rows (per output channel, the non-zero
//! weights and where they apply), so the work is proportional to the non-zeros.
//!
//! It runs the operators faithful's exporters write for float networks (every family): `Conv`
//! (groups 1), `Relu`, `MaxPool`, `GlobalAveragePool`, `GlobalMaxPool`, `Flatten` (axis 1),
//! `Gemm` (`transB = 1`), `Add`, and per-channel `Sub`/`Div` (the input normalisation). Weights
//! come from `initializer` or `sparse_initializer` alike. Any other operator or attribute is
//! refused when the model is loaded, naming the node.

use crate::export::onnx::{AttributeProto, ModelProto, NodeProto};
use crate::export::onnx_sparse::{float_values, sparse_parts};
use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// A dense array: shape (outermost first) and row-major values.
#[derive(Clone, Debug, Default)]
struct Array {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// A weight matrix in compressed rows: row `r`'s non-zeros are
/// `cols[ptr[r]..ptr[r + 1]]` / `vals[..]`.
#[derive(Clone, Debug)]
struct Rows {
    ptr: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl Rows {
    fn from_dense(values: &[f32], rows: usize) -> Self {
        let width = values.len() / rows.max(1);
        let (positions, vals): (Vec<usize>, Vec<f32>) = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, v)| (i, *v))
            .unzip();
        Self::from_sorted(&positions, &vals, width, rows)
    }

    /// From ascending linear positions in a `rows x width` matrix and their values.
    fn from_sorted(positions: &[usize], values: &[f32], width: usize, rows: usize) -> Self {
        let mut ptr = vec![0usize; rows + 1];
        for &p in positions {
            ptr[p / width + 1] += 1;
        }
        for r in 0..rows {
            ptr[r + 1] += ptr[r];
        }
        Self {
            ptr,
            cols: positions.iter().map(|&p| (p % width) as u32).collect(),
            vals: values.to_vec(),
        }
    }

    fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let span = self.ptr[r]..self.ptr[r + 1];
        self.cols[span.clone()]
            .iter()
            .zip(&self.vals[span])
            .map(|(&c, &v)| (c as usize, v))
    }
}

/// A weight tensor `[out, in, ...]` as rows over the flattened inner dimensions.
#[derive(Clone, Debug)]
struct Weight {
    dims: Vec<usize>,
    rows: Rows,
}

#[derive(Clone, Debug)]
enum Op {
    Conv {
        w: Weight,
        bias: Vec<f32>,
        stride: [usize; 2],
        /// top, left, bottom, right
        pads: [usize; 4],
    },
    Relu,
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
    },
    GlobalAverage,
    GlobalMax,
    Flatten,
    Gemm {
        w: Weight,
        bias: Vec<f32>,
    },
    Add,
    /// `x - c` or `x / c` with `c` one value per channel of `[N, C, H, W]`.
    Channel {
        divide: bool,
        c: Vec<f32>,
    },
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    inputs: Vec<String>,
    output: String,
}

/// A loaded network, ready to run.
#[derive(Clone, Debug)]
pub struct Runtime {
    steps: Vec<Step>,
    input: String,
    output: String,
    /// Input channels and side (from the graph's input).
    input_dims: [usize; 3],
    /// The index of the last step reading each value (its buffer can be reused there).
    last_use: HashMap<String, usize>,
}

/// Operators [`Runtime`] runs.
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "Relu",
    "MaxPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Gemm",
    "Add",
    "Sub",
    "Div",
];

impl Runtime {
    /// Reads an ONNX file written by faithful's exporters (dense or sparse weights).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let model = ModelProto::decode(bytes.as_slice())
            .with_context(|| format!("{} is not an ONNX model", path.display()))?;
        Self::from_model(&model).with_context(|| format!("cannot run {}", path.display()))
    }

    /// Builds the runtime of an in-memory ONNX model.
    pub fn from_model(model: &ModelProto) -> Result<Self> {
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let mut consts: HashMap<String, Array> = HashMap::new();
        for t in &graph.initializer {
            if t.data_type != crate::export::onnx::DATA_TYPE_FLOAT {
                continue; // integer tensors feed operators this runtime refuses by name
            }
            let shape = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            consts.insert(
                t.name.clone(),
                Array {
                    shape,
                    data: float_values(t)?,
                },
            );
        }
        let mut sparse: HashMap<String, Weight> = HashMap::new();
        for s in &graph.sparse_initializer {
            let crate::export::onnx_sparse::SparseParts {
                name,
                dims,
                positions,
                values,
            } = sparse_parts(s)?;
            ensure!(
                dims.len() >= 2,
                "sparse tensor `{name}` has rank {}",
                dims.len()
            );
            let width: usize = dims[1..].iter().product();
            let rows = Rows::from_sorted(&positions, &values, width, dims[0]);
            sparse.insert(name, Weight { dims, rows });
        }
        let weight = |name: &str| -> Result<Weight> {
            if let Some(w) = sparse.get(name) {
                return Ok(w.clone());
            }
            let a = consts
                .get(name)
                .with_context(|| format!("weight `{name}` is not an initializer"))?;
            ensure!(
                a.shape.len() >= 2,
                "weight `{name}` has rank {}",
                a.shape.len()
            );
            Ok(Weight {
                dims: a.shape.clone(),
                rows: Rows::from_dense(&a.data, a.shape[0]),
            })
        };
        let vector = |name: Option<&String>, len: usize| -> Result<Vec<f32>> {
            match name {
                None => Ok(vec![0.0; len]),
                Some(n) => {
                    let a = consts
                        .get(n)
                        .with_context(|| format!("bias `{n}` is not an initializer"))?;
                    ensure!(
                        a.data.len() == len,
                        "bias `{n}` has {} values, not {len}",
                        a.data.len()
                    );
                    Ok(a.data.clone())
                }
            }
        };
        let mut steps = Vec::new();
        for node in &graph.node {
            let op = parse_node(node, &weight, &vector, &consts)
                .with_context(|| format!("node `{}` ({})", node.name, node.op_type))?;
            let inputs = match op {
                Op::Add => node.input.clone(),
                _ => node.input.iter().take(1).cloned().collect(),
            };
            let output = node
                .output
                .first()
                .context("a node without output")?
                .clone();
            steps.push(Step { op, inputs, output });
        }
        let input = graph.input.first().context("the graph has no input")?;
        let dims: Vec<usize> = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(crate::export::onnx::DimensionValue::DimValue(v)) => *v as usize,
                        _ => 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        ensure!(dims.len() == 4, "the graph's input is not [N, C, H, W]");
        let mut last_use = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            for name in &step.inputs {
                last_use.insert(name.clone(), i);
            }
        }
        let output = graph
            .output
            .first()
            .context("the graph has no output")?
            .name
            .clone();
        // the graph's output is read after the last step
        last_use.insert(output.clone(), usize::MAX);
        Ok(Self {
            last_use,
            steps,
            input: input.name.clone(),
            output: graph
                .output
                .first()
                .context("the graph has no output")?
                .name
                .clone(),
            input_dims: [dims[1], dims[2], dims[3]],
        })
    }

    /// Fraction of non-zero weights over every conv and fully connected layer.
    pub fn density(&self) -> f64 {
        let (mut nz, mut all) = (0usize, 0usize);
        for s in &self.steps {
            if let Op::Conv { w, .. } | Op::Gemm { w, .. } = &s.op {
                nz += w.rows.vals.len();
                all += w.dims.iter().product::<usize>();
            }
        }
        nz as f64 / all.max(1) as f64
    }

    /// Runs `n` images (`[n, C, H, W]` row-major) and returns the output (`[n, K]` logits).
    pub fn run(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let [c, h, w] = self.input_dims;
        ensure!(
            x.len() == n * c * h * w,
            "runtime: {} input values for {n} images of {c}x{h}x{w}",
            x.len()
        );
        let mut values: HashMap<&str, Array> = HashMap::new();
        values.insert(
            &self.input,
            Array {
                shape: vec![n, c, h, w],
                data: x.to_vec(),
            },
        );
        for (index, step) in self.steps.iter().enumerate() {
            let arg = |i: usize| -> Result<&Array> {
                let name = &step.inputs[i];
                values
                    .get(name.as_str())
                    .with_context(|| format!("value `{name}` is used before it is computed"))
            };
            let out = match &step.op {
                Op::Add => add(arg(0)?, arg(1)?)?,
                op if self.last_use.get(step.inputs[0].as_str()) == Some(&index) => {
                    // the value's last reader: take it and let the op reuse its buffer
                    let x = values
                        .remove(step.inputs[0].as_str())
                        .context("value used before it is computed")?;
                    apply(op, x)?
                }
                op => apply(op, arg(0)?.clone())?,
            };
            values.insert(&step.output, out);
        }
        Ok(values
            .remove(self.output.as_str())
            .context("the graph never computes its output")?
            .data)
    }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_pair(node: &NodeProto, name: &str, default: usize) -> Result<[usize; 2]> {
    match attr(node, name) {
        None => Ok([default; 2]),
        Some(a) if a.ints.len() == 2 && a.ints.iter().all(|&v| v > 0) => {
            Ok([a.ints[0] as usize, a.ints[1] as usize])
        }
        Some(a) => bail!("`{name}` = {:?}: two positive values expected", a.ints),
    }
}

fn attr_pads(node: &NodeProto) -> Result<[usize; 4]> {
    match attr(node, "pads") {
        None => Ok([0; 4]),
        Some(a) if a.ints.len() == 4 && a.ints.iter().all(|&v| v >= 0) => {
            // ONNX order: begin of each axis, then end of each axis
            Ok([
                a.ints[0] as usize,
                a.ints[1] as usize,
                a.ints[2] as usize,
                a.ints[3] as usize,
            ])
        }
        Some(a) => bail!("`pads` = {:?}: four values >= 0 expected", a.ints),
    }
}

fn refuse_attrs(node: &NodeProto, allowed: &[&str]) -> Result<()> {
    for a in &node.attribute {
        ensure!(
            allowed.contains(&a.name.as_str()),
            "attribute `{}` is not supported",
            a.name
        );
    }
    Ok(())
}

/// Looks up a bias vector of a given length by (optional) initializer name.
type VectorLookup<'a> = dyn Fn(Option<&String>, usize) -> Result<Vec<f32>> + 'a;

fn parse_node(
    node: &NodeProto,
    weight: &dyn Fn(&str) -> Result<Weight>,
    vector: &VectorLookup,
    consts: &HashMap<String, Array>,
) -> Result<Op> {
    let input = |i: usize| {
        node.input
            .get(i)
            .with_context(|| format!("input {i} is missing"))
    };
    Ok(match node.op_type.as_str() {
        "Conv" => {
            refuse_attrs(
                node,
                &["kernel_shape", "strides", "pads", "dilations", "group"],
            )?;
            ensure!(
                attr_int(node, "group", 1) == 1,
                "grouped convolutions are not supported"
            );
            ensure!(
                attr_pair(node, "dilations", 1)? == [1, 1],
                "dilations are not supported"
            );
            let w = weight(input(1)?)?;
            ensure!(w.dims.len() == 4, "conv weight of rank {}", w.dims.len());
            Op::Conv {
                bias: vector(node.input.get(2), w.dims[0])?,
                stride: attr_pair(node, "strides", 1)?,
                pads: attr_pads(node)?,
                w,
            }
        }
        "Relu" => Op::Relu,
        "MaxPool" => {
            refuse_attrs(node, &["kernel_shape", "strides", "pads", "ceil_mode"])?;
            ensure!(
                attr_int(node, "ceil_mode", 0) == 0,
                "ceil_mode is not supported"
            );
            let kernel = attr_pair(node, "kernel_shape", 0)?;
            ensure!(
                kernel[0] > 0 && kernel[1] > 0,
                "MaxPool without kernel_shape"
            );
            Op::MaxPool {
                kernel,
                stride: attr_pair(node, "strides", 1)?,
                pads: attr_pads(node)?,
            }
        }
        "GlobalAveragePool" => Op::GlobalAverage,
        "GlobalMaxPool" => Op::GlobalMax,
        "Flatten" => {
            ensure!(
                attr_int(node, "axis", 1) == 1,
                "Flatten with axis other than 1"
            );
            Op::Flatten
        }
        "Gemm" => {
            refuse_attrs(node, &["transB", "transA", "alpha", "beta"])?;
            ensure!(
                attr_int(node, "transB", 0) == 1 && attr_int(node, "transA", 0) == 0,
                "only Gemm with transB = 1 and transA = 0 is supported"
            );
            for name in ["alpha", "beta"] {
                let v = attr(node, name).and_then(|a| a.f).unwrap_or(1.0);
                ensure!(v == 1.0, "Gemm {name} = {v} (only 1 is supported)");
            }
            let w = weight(input(1)?)?;
            ensure!(w.dims.len() == 2, "Gemm weight of rank {}", w.dims.len());
            Op::Gemm {
                bias: vector(node.input.get(2), w.dims[0])?,
                w,
            }
        }
        "Add" => {
            ensure!(node.input.len() == 2, "Add needs two inputs");
            Op::Add
        }
        "Sub" | "Div" => {
            let c = consts
                .get(input(1)?)
                .context("the second operand must be an initializer")?;
            let ones = c.shape.iter().enumerate().all(|(i, &d)| i == 1 || d == 1);
            ensure!(
                c.shape.len() == 4 && ones,
                "the second operand must have shape [1, C, 1, 1], not {:?}",
                c.shape
            );
            Op::Channel {
                divide: node.op_type == "Div",
                c: c.data.clone(),
            }
        }
        other => bail!(
            "operator {other} is not supported by faithful's runtime (it runs {})",
            SUPPORTED.join(", ")
        ),
    })
}

fn dims4(a: &Array) -> Result<[usize; 4]> {
    ensure!(
        a.shape.len() == 4,
        "expected [N, C, H, W], got {:?}",
        a.shape
    );
    Ok([a.shape[0], a.shape[1], a.shape[2], a.shape[3]])
}

fn apply(op: &Op, mut x: Array) -> Result<Array> {
    let x = &mut x;
    Ok(match op {
        Op::Conv {
            w,
            bias,
            stride,
            pads,
        } => conv(x, w, bias, *stride, *pads)?,
        Op::Relu => {
            x.data.par_iter_mut().for_each(|v| *v = v.max(0.0));
            std::mem::take(x)
        }
        Op::MaxPool {
            kernel,
            stride,
            pads,
        } => max_pool(x, *kernel, *stride, *pads)?,
        Op::GlobalAverage | Op::GlobalMax => {
            let [n, c, h, w] = dims4(x)?;
            let plane = (h * w).max(1);
            let data = x
                .data
                .chunks(plane)
                .map(|p| match op {
                    Op::GlobalAverage => p.iter().sum::<f32>() / plane as f32,
                    _ => p.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                })
                .collect();
            Array {
                shape: vec![n, c, 1, 1],
                data,
            }
        }
        Op::Flatten => {
            let n = x.shape.first().copied().unwrap_or(1);
            Array {
                shape: vec![n, x.data.len() / n.max(1)],
                data: std::mem::take(&mut x.data),
            }
        }
        Op::Gemm { w, bias } => gemm(x, w, bias)?,
        Op::Channel { divide, c } => {
            let [_, ch, h, wd] = dims4(x)?;
            ensure!(
                c.len() == ch,
                "{} per-channel constants for {ch} channels",
                c.len()
            );
            x.data
                .par_chunks_mut((h * wd).max(1))
                .enumerate()
                .for_each(|(p, plane)| {
                    let k = c[p % ch];
                    plane
                        .iter_mut()
                        .for_each(|v| *v = if *divide { *v / k } else { *v - k });
                });
            std::mem::take(x)
        }
        Op::Add => unreachable!("Add has two operands"),
    })
}

fn add(a: &Array, b: &Array) -> Result<Array> {
    ensure!(a.shape == b.shape, "Add of {:?} and {:?}", a.shape, b.shape);
    Ok(Array {
        shape: a.shape.clone(),
        data: a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect(),
    })
}

/// Output extent of a window op.
fn out_len(input: usize, pad: usize, kernel: usize, stride: usize) -> Result<usize> {
    let padded = input + pad;
    ensure!(
        padded >= kernel,
        "a window of {kernel} over {padded} values"
    );
    Ok((padded - kernel) / stride + 1)
}

/// Direct sparse convolution: each output plane starts from its bias, then every non-zero
/// weight `w[co, ci, dy, dx]` adds `w` times the input plane `ci` shifted by `(dy, dx)`; the
/// work is non-zeros x output pixels.
fn conv(
    x: &Array,
    w: &Weight,
    bias: &[f32],
    stride: [usize; 2],
    pads: [usize; 4],
) -> Result<Array> {
    let [n, c, h, wd] = dims4(x)?;
    let [co, ci, kh, kw] = [w.dims[0], w.dims[1], w.dims[2], w.dims[3]];
    ensure!(ci == c, "conv of {c} channels with a weight for {ci}");
    let oh = out_len(h, pads[0] + pads[2], kh, stride[0])?;
    let ow = out_len(wd, pads[1] + pads[3], kw, stride[1])?;
    let mut out = vec![0f32; n * co * oh * ow];
    if stride == [1, 1] {
        conv_stride1(x, w, bias, pads, (oh, ow), &mut out);
    } else {
        conv_strided(x, w, bias, stride, pads, (oh, ow), &mut out);
    }
    Ok(Array {
        shape: vec![n, co, oh, ow],
        data: out,
    })
}

/// Stride 1: the input is zero-padded once, so that a shift by `(dy, dx)` is one offset into
/// the padded plane and every non-zero weight is one contiguous multiply-add over the whole
/// plane (computed at the padded row width; the columns past the output's are dropped).
fn conv_stride1(
    x: &Array,
    w: &Weight,
    bias: &[f32],
    pads: [usize; 4],
    (oh, ow): (usize, usize),
    out: &mut [f32],
) {
    let [n, c, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let [co, kh, kw] = [w.dims[0], w.dims[2], w.dims[3]];
    let (hp, wp) = (h + pads[0] + pads[2], wd + pads[1] + pads[3]);
    let mut padded = vec![0f32; n * c * hp * wp];
    padded
        .par_chunks_mut(hp * wp)
        .zip(x.data.par_chunks(h * wd))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks(wd).enumerate() {
                let start = (y + pads[0]) * wp + pads[1];
                dst[start..start + wd].copy_from_slice(row);
            }
        });
    let span = (oh - 1) * wp + ow;
    out.par_chunks_mut(oh * ow).enumerate().for_each_init(
        || vec![0f32; span],
        |acc, (p, o)| {
            let (img, oc) = (p / co, p % co);
            acc.fill(bias[oc]);
            for (col, v) in w.rows.row(oc) {
                let (ic, dy, dx) = (col / (kh * kw), (col / kw) % kh, col % kw);
                let src = &padded[(img * c + ic) * hp * wp + dy * wp + dx..][..span];
                for (a, &b) in acc.iter_mut().zip(src) {
                    *a += v * b;
                }
            }
            for (y, row) in o.chunks_mut(ow).enumerate() {
                row.copy_from_slice(&acc[y * wp..y * wp + ow]);
            }
        },
    );
}

/// Any stride: per output row, the inner loop runs over the valid output columns.
fn conv_strided(
    x: &Array,
    w: &Weight,
    bias: &[f32],
    stride: [usize; 2],
    pads: [usize; 4],
    (oh, ow): (usize, usize),
    out: &mut [f32],
) {
    let [c, h, wd] = [x.shape[1], x.shape[2], x.shape[3]];
    let [co, kh, kw] = [w.dims[0], w.dims[2], w.dims[3]];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
        let (img, oc) = (p / co, p % co);
        o.fill(bias[oc]);
        for (col, v) in w.rows.row(oc) {
            let (ic, dy, dx) = (col / (kh * kw), (col / kw) % kh, col % kw);
            let src = &x.data[(img * c + ic) * h * wd..][..h * wd];
            // output columns whose input column x*s + dx - pad_left lies inside [0, wd)
            let lo = pads[1].saturating_sub(dx).div_ceil(stride[1]);
            let hi = ((wd + pads[1]).saturating_sub(dx))
                .div_ceil(stride[1])
                .min(ow);
            if lo >= hi {
                continue;
            }
            for y in 0..oh {
                let iy = (y * stride[0] + dy) as isize - pads[0] as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let row = &src[iy as usize * wd..][..wd];
                let first = lo * stride[1] + dx - pads[1];
                for (k, a) in o[y * ow + lo..y * ow + hi].iter_mut().enumerate() {
                    *a += v * row[first + k * stride[1]];
                }
            }
        }
    });
}

fn max_pool(x: &Array, k: [usize; 2], s: [usize; 2], pads: [usize; 4]) -> Result<Array> {
    let [n, c, h, w] = dims4(x)?;
    let oh = out_len(h, pads[0] + pads[2], k[0], s[0])?;
    let ow = out_len(w, pads[1] + pads[3], k[1], s[1])?;
    let mut out = vec![f32::NEG_INFINITY; n * c * oh * ow];
    if k == [2, 2] && s == [2, 2] && pads == [0; 4] {
        // the common 2x2/2 pool, without bounds checks
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
            let src = &x.data[p * h * w..][..h * w];
            for (y, orow) in o.chunks_mut(ow).enumerate() {
                let (r0, r1) = (&src[2 * y * w..][..w], &src[(2 * y + 1) * w..][..w]);
                for (xo, v) in orow.iter_mut().enumerate() {
                    *v = r0[2 * xo]
                        .max(r0[2 * xo + 1])
                        .max(r1[2 * xo])
                        .max(r1[2 * xo + 1]);
                }
            }
        });
        return Ok(Array {
            shape: vec![n, c, oh, ow],
            data: out,
        });
    }
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
        let src = &x.data[p * h * w..][..h * w];
        for y in 0..oh {
            for xo in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for dy in 0..k[0] {
                    let iy = (y * s[0] + dy) as isize - pads[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for dx in 0..k[1] {
                        let ix = (xo * s[1] + dx) as isize - pads[1] as isize;
                        if ix >= 0 && ix < w as isize {
                            m = m.max(src[iy as usize * w + ix as usize]);
                        }
                    }
                }
                o[y * ow + xo] = m;
            }
        }
    });
    Ok(Array {
        shape: vec![n, c, oh, ow],
        data: out,
    })
}

fn gemm(x: &Array, w: &Weight, bias: &[f32]) -> Result<Array> {
    ensure!(x.shape.len() == 2, "Gemm of a rank-{} input", x.shape.len());
    let (n, inner) = (x.shape[0], x.shape[1]);
    let (outs, width) = (w.dims[0], w.dims[1]);
    ensure!(
        inner == width,
        "Gemm of {inner} inputs with a weight for {width}"
    );
    let mut out = vec![0f32; n * outs];
    out.par_chunks_mut(outs).enumerate().for_each(|(img, o)| {
        let row = &x.data[img * inner..][..inner];
        for (j, oj) in o.iter_mut().enumerate() {
            *oj = bias[j] + w.rows.row(j).map(|(i, v)| v * row[i]).sum::<f32>();
        }
    });
    Ok(Array {
        shape: vec![n, outs],
        data: out,
    })
}
