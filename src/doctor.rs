//! `faithful doctor`: op-by-op parity of a backend against flex. Every op a training step uses
//! (convolution forward and its weight, input and bias gradients; BatchNorm's training forward,
//! batch mean and variance, and backward, both burn's fused op and the same computed from plain
//! reductions; ReLU; max-pool and its backward; linear; the reductions) runs on the chosen
//! backend and on flex from the same inputs, at the shapes of a real network (each convolution
//! of the config's teacher at its training batch size), and each output's worst error is
//! reported. On a backend whose training disagrees with flex, the first failing row names the op.

use crate::config::ExperimentConfig;
use crate::models::layers::{Layer, LayerGraph};
use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::relu;
use burn::tensor::module::{batch_norm_train, conv2d, linear, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One output of one op: how far the backend is from flex.
#[derive(Clone, Debug, Serialize)]
pub struct OpParity {
    /// The op and output (`conv2d weight grad`).
    pub op: String,
    /// The input shape(s).
    pub shape: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `max_abs` relative to the largest magnitude of flex's output (scale-free: a gradient of
    /// size 1e-3 and one of size 1e3 are judged alike).
    pub relative: f64,
}

/// One op at one shape, run on any device.
#[derive(Clone, Debug)]
enum Case {
    /// Convolution (+ bias), forward and the three gradients.
    Conv {
        input: [usize; 4],
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// BatchNorm in training mode: burn's `batch_norm_train`, and the same from reductions.
    BatchNorm { input: [usize; 4] },
    /// ReLU forward and backward.
    Relu { input: [usize; 4] },
    /// Max-pool forward and backward.
    MaxPool {
        input: [usize; 4],
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Linear layer forward and gradients.
    Linear {
        batch: usize,
        inputs: usize,
        outputs: usize,
    },
    /// `mean_dim`, `sum_dim`, `max_dim` over each axis.
    Reductions { input: [usize; 4] },
}

/// Named outputs of a case.
type Outputs = Vec<(String, Vec<f32>)>;

/// The cases for a network at batch size `batch`: one per distinct convolution geometry (with
/// BatchNorm at its output shape), ReLU, max-pool and the reductions at each distinct
/// activation shape, and the classifier. Shapes come from running the layers on one image.
fn cases(graph: &LayerGraph, batch: usize, side: usize, device: &Device) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let x = Tensor::<4>::zeros([1, 3, side, side], device);
    collect(&graph.layers, x, batch, &mut cases);
    cases
}

/// Adds the cases of `layers` run from `x` (one image) and returns their output.
fn collect(layers: &[Layer], mut x: Tensor<4>, batch: usize, cases: &mut Vec<Case>) -> Tensor<4> {
    fn push(cases: &mut Vec<Case>, c: Case) {
        if !cases.iter().any(|d| format!("{d:?}") == format!("{c:?}")) {
            cases.push(c);
        }
    }
    for layer in layers {
        let [_, c, h, w] = x.dims();
        let input = [batch, c, h, w];
        match layer {
            Layer::Weighted(wl) => {
                let [out, _, k, _] = wl.weight.dims();
                if h == 1 && w == 1 && k == 1 {
                    push(
                        cases,
                        Case::Linear {
                            batch,
                            inputs: c,
                            outputs: out,
                        },
                    );
                } else {
                    push(
                        cases,
                        Case::Conv {
                            input,
                            out_channels: out,
                            kernel: k,
                            stride: wl.stride[0],
                            padding: wl.padding[0],
                        },
                    );
                    let [_, oc, oh, ow] = wl.forward(x.clone()).dims();
                    push(
                        cases,
                        Case::BatchNorm {
                            input: [batch, oc, oh, ow],
                        },
                    );
                }
            }
            Layer::Relu => push(cases, Case::Relu { input }),
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                push(
                    cases,
                    Case::MaxPool {
                        input,
                        kernel: kernel[0],
                        stride: stride[0],
                        padding: padding[0],
                    },
                );
                push(cases, Case::Reductions { input });
            }
            Layer::Residual { branch, shortcut } => {
                collect(branch, x.clone(), batch, cases);
                collect(shortcut, x.clone(), batch, cases);
                x = layer.forward(x);
                continue;
            }
            Layer::GlobalAvgPool | Layer::Flatten => {}
        }
        x = layer.forward(x);
    }
    x
}

/// Fills a tensor of `shape` on `device` with values in [-1, 1) from `rng`.
fn random<const D: usize>(rng: &mut ChaCha8Rng, shape: [usize; D], device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read a tensor back: {e:?}"))
}

fn grad_of<const D: usize>(
    t: &Tensor<D>,
    grads: &burn::tensor::Gradients,
    what: &str,
) -> Result<Vec<f32>> {
    values(
        t.grad(grads)
            .with_context(|| format!("no gradient for {what}"))?,
    )
}

impl Case {
    fn describe(&self) -> (String, String) {
        let s = |d: &[usize]| format!("{d:?}");
        match self {
            Case::Conv {
                input,
                out_channels,
                kernel,
                stride,
                padding,
            } => (
                "conv2d".into(),
                format!(
                    "{} -> {out_channels}, k{kernel} s{stride} p{padding}",
                    s(input)
                ),
            ),
            Case::BatchNorm { input } => ("batch-norm".into(), s(input)),
            Case::Relu { input } => ("relu".into(), s(input)),
            Case::MaxPool {
                input,
                kernel,
                stride,
                padding,
            } => (
                "max-pool".into(),
                format!("{}, k{kernel} s{stride} p{padding}", s(input)),
            ),
            Case::Linear {
                batch,
                inputs,
                outputs,
            } => ("linear".into(), format!("[{batch}, {inputs}] -> {outputs}")),
            Case::Reductions { input } => ("reductions".into(), s(input)),
        }
    }

    /// Runs the case on `device` (inputs drawn from `seed`, so every device sees the same).
    fn run(&self, device: &Device, seed: u64) -> Result<Outputs> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ad = device.clone().autodiff();
        let mut out = Outputs::new();
        match *self {
            Case::Conv {
                input,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let x = random(&mut rng, input, &ad).require_grad();
                let w =
                    random(&mut rng, [out_channels, input[1], kernel, kernel], &ad).require_grad();
                let b = random(&mut rng, [out_channels], &ad).require_grad();
                let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
                let y = conv2d(x.clone(), w.clone(), Some(b.clone()), options);
                let g = random(&mut rng, y.dims(), &ad);
                out.push(("forward".into(), values(y.clone().inner())?));
                let grads = (y * g).sum().backward();
                out.push(("input grad".into(), grad_of(&x, &grads, "the input")?));
                out.push(("weight grad".into(), grad_of(&w, &grads, "the weight")?));
                out.push(("bias grad".into(), grad_of(&b, &grads, "the bias")?));
            }
            Case::BatchNorm { input } => {
                let c = input[1];
                let x = random(&mut rng, input, &ad).mul_scalar(2.0).add_scalar(0.5);
                let x = x.require_grad();
                let gamma = random(&mut rng, [c], &ad).add_scalar(1.5).require_grad();
                let beta = random(&mut rng, [c], &ad).require_grad();
                let g = random(&mut rng, input, &ad);
                let fused = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                out.push(("forward".into(), values(fused.output.clone().inner())?));
                out.push(("batch mean".into(), values(fused.mean.clone().inner())?));
                out.push((
                    "batch variance".into(),
                    values(fused.variance.clone().inner())?,
                ));
                let grads = (fused.output * g.clone()).sum().backward();
                out.push(("input grad".into(), grad_of(&x, &grads, "the input")?));
                out.push(("gamma grad".into(), grad_of(&gamma, &grads, "gamma")?));
                out.push(("beta grad".into(), grad_of(&beta, &grads, "beta")?));
                // the same normalisation from plain reductions: a candidate workaround
                let x2 = x.clone().detach().require_grad();
                let mean = x2.clone().mean_dim(0).mean_dim(2).mean_dim(3);
                let centred = x2.clone() - mean;
                let var = centred
                    .clone()
                    .powi_scalar(2)
                    .mean_dim(0)
                    .mean_dim(2)
                    .mean_dim(3);
                let y = centred / var.add_scalar(1e-5).sqrt();
                let y = y * gamma.clone().detach().reshape([1, c, 1, 1])
                    + beta.clone().detach().reshape([1, c, 1, 1]);
                out.push(("composed forward".into(), values(y.clone().inner())?));
                let grads = (y * g).sum().backward();
                out.push((
                    "composed input grad".into(),
                    grad_of(&x2, &grads, "the input")?,
                ));
            }
            Case::Relu { input } => {
                let x = random(&mut rng, input, &ad).require_grad();
                let y = relu(x.clone());
                let g = random(&mut rng, input, &ad);
                out.push(("forward".into(), values(y.clone().inner())?));
                let grads = (y * g).sum().backward();
                out.push(("input grad".into(), grad_of(&x, &grads, "the input")?));
            }
            Case::MaxPool {
                input,
                kernel,
                stride,
                padding,
            } => {
                let x = random(&mut rng, input, &ad).require_grad();
                let options = MaxPoolOptions::new([kernel; 2])
                    .with_stride([stride; 2])
                    .with_padding([padding; 2]);
                let y = max_pool2d(x.clone(), options);
                let g = random(&mut rng, y.dims(), &ad);
                out.push(("forward".into(), values(y.clone().inner())?));
                let grads = (y * g).sum().backward();
                out.push(("input grad".into(), grad_of(&x, &grads, "the input")?));
            }
            Case::Linear {
                batch,
                inputs,
                outputs,
            } => {
                let x = random(&mut rng, [batch, inputs], &ad).require_grad();
                let w = random(&mut rng, [inputs, outputs], &ad).require_grad();
                let b = random(&mut rng, [outputs], &ad).require_grad();
                let y = linear(x.clone(), w.clone(), Some(b.clone()));
                let g = random(&mut rng, [batch, outputs], &ad);
                out.push(("forward".into(), values(y.clone().inner())?));
                let grads = (y * g).sum().backward();
                out.push(("input grad".into(), grad_of(&x, &grads, "the input")?));
                out.push(("weight grad".into(), grad_of(&w, &grads, "the weight")?));
                out.push(("bias grad".into(), grad_of(&b, &grads, "the bias")?));
            }
            Case::Reductions { input } => {
                let x = random(&mut rng, input, device);
                for axis in 0..4 {
                    out.push((
                        format!("mean_dim({axis})"),
                        values(x.clone().mean_dim(axis))?,
                    ));
                    out.push((format!("sum_dim({axis})"), values(x.clone().sum_dim(axis))?));
                    out.push((format!("max_dim({axis})"), values(x.clone().max_dim(axis))?));
                }
            }
        }
        Ok(out)
    }
}

/// Runs every case for `cfg`'s teacher on `device` and on flex and returns one row per op
/// output. `device` may be flex itself (the suite then checks only that it runs).
pub fn op_parity(cfg: &ExperimentConfig, device: &Device, seed: u64) -> Result<Vec<OpParity>> {
    let side = cfg.data.size;
    let arch = cfg.teacher_arch_for(cfg.data.num_classes, side);
    let reference = Device::flex();
    let net = arch.init(&reference, seed)?;
    let graph = net.layer_graph()?;
    let batch = cfg.teacher.train.batch_size;
    let mut rows = Vec::new();
    for (i, case) in cases(&graph, batch, side, &reference).iter().enumerate() {
        let case_seed = crate::util::derive_seed(seed, &format!("doctor-{i}"));
        let expected = case.run(&reference, case_seed)?;
        let got = case.run(device, case_seed)?;
        let (op, shape) = case.describe();
        for ((name, want), (_, have)) in expected.iter().zip(&got) {
            rows.push(compare(&format!("{op} {name}"), &shape, want, have));
        }
        // burn's fused training BatchNorm against the same from plain ops, on the backend
        // itself: an independent check of the fused kernel that needs no second device
        let named = |n: &str| got.iter().find(|(m, _)| m == n).map(|(_, v)| v);
        if let (Some(fused), Some(composed)) = (named("forward"), named("composed forward")) {
            rows.push(compare(
                "batch-norm fused vs composed (backend alone)",
                &shape,
                composed,
                fused,
            ));
        }
    }
    Ok(rows)
}

/// The error of `have` against `want`.
fn compare(op: &str, shape: &str, want: &[f32], have: &[f32]) -> OpParity {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let max_abs = if want.len() != have.len() {
        f64::INFINITY
    } else {
        want.iter()
            .zip(have)
            .map(|(a, b)| {
                let d = (*a as f64 - *b as f64).abs();
                if d.is_nan() { f64::INFINITY } else { d }
            })
            .fold(0.0, f64::max)
    };
    OpParity {
        op: op.into(),
        shape: shape.into(),
        max_abs,
        relative: if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        },
    }
}

/// The rows as a Markdown table, with a verdict per row against `tolerance` (relative).
pub fn markdown(rows: &[OpParity], tolerance: f64) -> String {
    let mut s =
        String::from("| op | shape | max abs error | relative | |\n|---|---|---:|---:|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.2e} | {:.2e} | {} |\n",
            r.op,
            r.shape,
            r.max_abs,
            r.relative,
            if r.relative <= tolerance {
                "ok"
            } else {
                "**differs**"
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_relative_to_the_references_scale_and_nan_is_infinite() {
        let r = compare("x", "", &[1000.0, -2000.0], &[1000.0, -1998.0]);
        assert_eq!(r.max_abs, 2.0);
        assert!((r.relative - 1e-3).abs() < 1e-12);
        assert!(compare("x", "", &[1.0], &[f32::NAN]).max_abs.is_infinite());
        assert!(compare("x", "", &[1.0, 2.0], &[1.0]).max_abs.is_infinite());
    }

    #[test]
    fn the_cases_follow_the_networks_shapes() {
        let mut cfg = ExperimentConfig::demo();
        cfg.teacher.train.batch_size = 4;
        let arch = cfg.teacher_arch_for(10, 64);
        let graph = arch
            .init(&Device::flex(), 0)
            .unwrap()
            .layer_graph()
            .unwrap();
        let all = cases(&graph, 4, 64, &Device::flex());
        let first = format!("{:?}", all[0]);
        assert!(first.contains("input: [4, 3, 64, 64]"), "{first}");
        assert!(
            all.iter()
                .any(|c| matches!(c, Case::Linear { outputs: 10, .. }))
        );
        assert!(all.iter().any(|c| matches!(c, Case::BatchNorm { .. })));
        assert!(all.iter().any(|c| matches!(c, Case::MaxPool { .. })));
    }
}
