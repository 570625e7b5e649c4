//! The `quantized` family: a network of another family as it is deployed in integer
//! arithmetic, simulated in float ("fake quantization") so it can be fine-tuned.
//!
//! - BatchNorm is folded into the convolutions (with the running statistics), as deployment
//!   does; the folded weights and biases are the trainable parameters.
//! - Weights are quantized per output channel, symmetrically: `scale_c = max|w_c| / (2^(b-1)-1)`,
//!   `w_q = clamp(round(w / scale_c), -(2^(b-1)-1), 2^(b-1)-1) * scale_c`.
//! - The input of every weighted layer (the image, every conv's input, every linear layer's
//!   input) is quantized per tensor, affinely onto `0 ..= 2^b - 1`: `scale = (hi - lo) / (2^b - 1)`,
//!   `zero = round(-lo / scale)`, `x_q = (clamp(round(x / scale) + zero, 0, 2^b - 1) - zero) * scale`.
//!   `[lo, hi]` always contains 0 (so zero padding is exact) and comes from a moving-average
//!   observer of each batch's min and max, which freezes after `observer_steps` updates.
//! - Rounding is half to even (burn's `round`, as ONNX's QuantizeLinear), not half away from
//!   zero: 2.5 rounds to 2.
//! - Gradients are straight-through: the rounding passes the gradient unchanged, the clamp of
//!   an activation to `[lo, hi]` stops it outside the range. Weights are never clipped (their
//!   scale comes from their own maximum).
//!
//! Per-channel symmetric weight quantization commutes with BatchNorm folding: folding scales
//! channel `c` by `g_c`, which scales `max|w_c|` and so `scale_c` by `|g_c|` and leaves the
//! integers unchanged (up to sign). Quantizing the folded weights is therefore exactly the
//! deployed network, whichever way round it is done (tested).

use super::head::{HeadPooling, HeadQuant, PiecewiseLinearHead};
use super::layers::{Layer, LayerGraph, LayerList, WeightKind, WeightLayer};
use super::network::{Arch, FamilyArch, FamilyNet, Network};
use anyhow::{Context, Result, bail};
use burn::module::{Module, Param, RunningState};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use serde::{Deserialize, Serialize};

/// Bit widths and observer settings of a quantized network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantSpec {
    /// Weight bits (2 to 8), symmetric per output channel.
    pub weight_bits: u32,
    /// Activation bits (2 to 8), affine per tensor.
    pub act_bits: u32,
    /// Observer updates (training batches) before the activation ranges freeze.
    pub observer_steps: usize,
    /// Weight of each new batch's min and max in the observers' moving average.
    pub observer_momentum: f64,
}

impl Default for QuantSpec {
    fn default() -> Self {
        QuantSpec {
            weight_bits: 8,
            act_bits: 8,
            observer_steps: 300,
            observer_momentum: 0.01,
        }
    }
}

impl QuantSpec {
    /// Checks the bit widths and observer settings.
    pub fn validate(&self) -> Result<()> {
        for (name, bits) in [
            ("weight_bits", self.weight_bits),
            ("act_bits", self.act_bits),
        ] {
            if !(2..=8).contains(&bits) {
                bail!("{name} must be 2 to 8 (an int8 deployment holds at most 8), got {bits}");
            }
        }
        if self.observer_steps == 0 {
            bail!("observer_steps must be at least 1: the activation ranges need a batch");
        }
        if !(self.observer_momentum > 0.0 && self.observer_momentum <= 1.0) {
            bail!(
                "observer_momentum must be in (0, 1], got {}",
                self.observer_momentum
            );
        }
        Ok(())
    }

    /// Largest integer of a weight (symmetric).
    pub fn weight_max(&self) -> f64 {
        ((1u32 << (self.weight_bits - 1)) - 1) as f64
    }

    /// Largest integer of an activation (`0 ..= levels`).
    pub fn act_levels(&self) -> f64 {
        ((1u32 << self.act_bits) - 1) as f64
    }
}

/// Symmetric per-output-channel fake quantization of conv weights (out, in, kh, kw) to
/// `bits`, with a straight-through gradient.
pub fn fake_quant_channels(w: Tensor<4>, bits: u32) -> Tensor<4> {
    fake_quant_channels_scaled(w, bits).0
}

/// [`fake_quant_channels`] and the per-channel scales (out, 1, 1, 1).
pub fn fake_quant_channels_scaled(w: Tensor<4>, bits: u32) -> (Tensor<4>, Tensor<4>) {
    let largest = w.clone().detach().abs().max_dim(1).max_dim(2).max_dim(3);
    symmetric(w, largest, bits)
}

/// Symmetric fake quantization of `w` with the scale `largest / (2^(bits-1) - 1)` (largest
/// magnitude per output, shaped to broadcast), straight through; returns the scales too.
fn symmetric<const D: usize>(
    w: Tensor<D>,
    largest: Tensor<D>,
    bits: u32,
) -> (Tensor<D>, Tensor<D>) {
    let qmax = ((1u32 << (bits - 1)) - 1) as f64;
    let scale = largest.div_scalar(qmax).clamp_min(1e-12);
    let q = straight_through(w, |v| {
        (v / scale.clone()).round().clamp(-qmax, qmax) * scale.clone()
    });
    (q, scale)
}

/// The bias as int8 kernels add it: rounded to int32 at scale `input scale x weight scale`
/// (per output), straight through. `input_scale` (shape [1]) is `None` for an unquantized
/// input, whose bias stays float. At 4 activation bits this grid is coarse enough to matter.
pub fn fake_quant_bias(
    bias: Tensor<1>,
    input_scale: Option<Tensor<1>>,
    weight_scale: Tensor<1>,
) -> Tensor<1> {
    match input_scale {
        None => bias,
        Some(si) => {
            let step = weight_scale * si;
            straight_through(bias, |b| (b / step.clone()).round() * step.clone())
        }
    }
}

/// Symmetric per-output-unit fake quantization of linear weights (d_in, d_out), as
/// [`fake_quant_channels`].
pub fn fake_quant_columns(w: Tensor<2>, bits: u32) -> Tensor<2> {
    fake_quant_columns_scaled(w, bits).0
}

/// [`fake_quant_columns`] and the per-unit scales (1, d_out).
pub fn fake_quant_columns_scaled(w: Tensor<2>, bits: u32) -> (Tensor<2>, Tensor<2>) {
    let largest = w.clone().detach().abs().max_dim(0);
    symmetric(w, largest, bits)
}

/// `quantize(x)` in the forward pass, the identity in the backward pass.
fn straight_through<const D: usize>(
    x: Tensor<D>,
    quantize: impl Fn(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let q = quantize(x.clone().detach());
    x.clone() + (q - x.detach())
}

/// Per-weight integer and scale of symmetric per-channel quantization along `axis` 0 of a
/// flattened (out, rest) weight: what the int8 export stores.
pub fn quantize_rows(weights: &[f32], rows: usize, bits: u32) -> (Vec<i8>, Vec<f32>) {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let per_row = weights.len() / rows.max(1);
    let mut ints = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(rows);
    for row in weights.chunks(per_row.max(1)) {
        let scale = (row.iter().fold(0f32, |m, v| m.max(v.abs())) / qmax).max(1e-12);
        scales.push(scale);
        ints.extend(
            row.iter()
                .map(|v| (v / scale).round_ties_even().clamp(-qmax, qmax) as i8),
        );
    }
    (ints, scales)
}

/// A moving-average min/max observer of one activation tensor: state `[lo, hi, updates]`.
#[derive(Module, Debug)]
pub struct Observer {
    /// `[lo, hi, updates so far]`.
    pub state: RunningState<Tensor<1>>,
}

impl Observer {
    /// An observer that has seen nothing (its tensor passes unquantized until it has).
    pub fn new(device: &Device) -> Self {
        Observer {
            state: RunningState::new(Tensor::zeros([3], device)),
        }
    }

    /// `(lo, hi, updates)`, each of shape [1].
    pub fn range(&self, device: &Device) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        // value_sync: an update on this thread is visible at once (value() lags one behind)
        let v = self.state.value_sync().to_device(device);
        (v.clone().slice(0..1), v.clone().slice(1..2), v.slice(2..3))
    }

    /// Folds one batch's min and max (0 included) into the range: the first batch sets it,
    /// later ones move it by `momentum`, until `observer_steps` updates are done.
    pub fn update<const D: usize>(&self, x: &Tensor<D>, spec: &QuantSpec) {
        let device = x.device();
        let old = self.state.value_sync().to_device(&device);
        let x = x.clone().detach();
        let batch_lo = x.clone().min().clamp_max(0.0);
        let batch_hi = x.max().clamp_min(0.0);
        let (lo, hi, count) = (
            old.clone().slice(0..1),
            old.clone().slice(1..2),
            old.clone().slice(2..3),
        );
        let first = count.clone().equal_elem(0.0).float();
        let active = count.clone().lower_elem(spec.observer_steps as f64).float();
        let m = spec.observer_momentum;
        let mix = |old: Tensor<1>, new: Tensor<1>| {
            let ema = old.clone().mul_scalar(1.0 - m) + new.clone().mul_scalar(m);
            let next = first.clone() * new + (first.clone().neg().add_scalar(1.0)) * ema;
            active.clone() * next + (active.clone().neg().add_scalar(1.0)) * old
        };
        let updated = Tensor::cat(
            vec![mix(lo, batch_lo), mix(hi, batch_hi), count + active.clone()],
            0,
        );
        self.state.update(updated.detach());
    }

    /// `x` fake-quantized against the range (observing `x` first when `observe`), exactly as
    /// ONNX's QuantizeLinear -> DequantizeLinear: `q = clamp(round(x / scale) + zero, 0,
    /// levels)`, `x_q = (q - zero) * scale`. Straight through inside the representable range
    /// `[-zero * scale, (levels - zero) * scale]`, no gradient outside. Before any update, `x`
    /// passes unchanged.
    pub fn fake_quant<const D: usize>(
        &self,
        x: Tensor<D>,
        spec: &QuantSpec,
        observe: bool,
    ) -> Tensor<D> {
        if observe {
            self.update(&x, spec);
        }
        let grid = self.grid::<D>(&x.device(), spec);
        let q = ((x.clone().detach() / grid.scale.clone()).round() + grid.zero.clone())
            .clamp(0.0, spec.act_levels());
        let dequantized = (q - grid.zero) * grid.scale;
        let clipped = x.clone().max_pair(grid.lo).min_pair(grid.hi);
        let quantized = clipped.clone() + (dequantized - clipped.detach());
        quantized * grid.on.clone() + x * (grid.on.neg().add_scalar(1.0))
    }

    /// 1 where `x` lies inside the representable range (or nothing was observed yet), 0 where
    /// it is clipped: the straight-through derivative of [`Observer::fake_quant`].
    pub fn inside<const D: usize>(&self, x: Tensor<D>, spec: &QuantSpec) -> Tensor<D> {
        let grid = self.grid::<D>(&x.device(), spec);
        let within = x.clone().greater_equal(grid.lo).float() * x.lower_equal(grid.hi).float();
        within * grid.on.clone() + grid.on.neg().add_scalar(1.0)
    }

    /// The scale of the current grid (shape [1]), `None` before any batch (the tensor then
    /// passes unquantized). Reads the observer's state (one small host read).
    pub fn scale(&self, device: &Device, spec: &QuantSpec) -> Option<Tensor<1>> {
        let (lo, hi, seen) = self.range(device);
        if seen.into_scalar::<f32>() <= 0.0 {
            return None;
        }
        Some((hi - lo).div_scalar(spec.act_levels()).clamp_min(1e-8))
    }

    /// The quantization grid of the current range, shaped to broadcast over rank `D`.
    fn grid<const D: usize>(&self, device: &Device, spec: &QuantSpec) -> Grid<D> {
        let (lo, hi, seen) = self.range(device);
        let levels = spec.act_levels();
        let scale = (hi - lo.clone()).div_scalar(levels).clamp_min(1e-8);
        let zero = (lo.neg() / scale.clone()).round().clamp(0.0, levels);
        let b = |t: Tensor<1>| t.reshape([1; D]);
        Grid {
            lo: b(zero.clone().neg() * scale.clone()),
            hi: b(zero.clone().neg().add_scalar(levels) * scale.clone()),
            scale: b(scale),
            zero: b(zero),
            on: b(seen.greater_elem(0.0).float()),
        }
    }

    /// `(scale, zero point)` of the range, for the int8 export; `None` before any batch.
    pub fn scale_and_zero(&self, spec: &QuantSpec) -> Result<Option<(f32, u8)>> {
        let v: Vec<f32> = self
            .state
            .value_sync()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read an observer: {e:?}"))?;
        if v[2] <= 0.0 {
            return Ok(None);
        }
        let levels = spec.act_levels() as f32;
        let scale = ((v[1] - v[0]) / levels).max(1e-8);
        let zero = (-v[0] / scale).round_ties_even().clamp(0.0, levels);
        Ok(Some((scale, zero as u8)))
    }
}

/// An activation quantization grid, broadcastable over a rank-`D` tensor.
struct Grid<const D: usize> {
    /// Lowest and highest representable values.
    lo: Tensor<D>,
    hi: Tensor<D>,
    scale: Tensor<D>,
    zero: Tensor<D>,
    /// 1 once the observer has seen a batch.
    on: Tensor<D>,
}

/// A convolution with BatchNorm folded in.
#[derive(Module, Debug)]
pub struct QConv {
    /// Folded weights (out, in, kh, kw).
    pub weight: Param<Tensor<4>>,
    /// Folded bias (out).
    pub bias: Param<Tensor<1>>,
}

/// The feature part's structure (indices into [`QuantNet::convs`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Convolution `index` (its input quantized by observer `index`).
    Conv {
        /// Index into `convs` and `observers`.
        index: usize,
        /// Stride.
        stride: [usize; 2],
        /// Zero padding.
        padding: [usize; 2],
    },
    /// ReLU.
    Relu,
    /// Max-pool.
    MaxPool {
        /// Kernel.
        kernel: [usize; 2],
        /// Stride.
        stride: [usize; 2],
        /// Padding.
        padding: [usize; 2],
    },
    /// `branch(x) + shortcut(x)` (empty shortcut: identity).
    Residual {
        /// The block's steps.
        branch: Vec<Step>,
        /// The projection's steps.
        shortcut: Vec<Step>,
    },
}

/// The architecture of a quantized network: the float architecture it came from (its
/// structure) and the quantization settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantArch {
    /// The float network's architecture.
    pub base: Box<Arch>,
    /// Bits and observers.
    pub spec: QuantSpec,
}

impl QuantArch {
    /// `W8A8 of vgg small` and the like.
    pub fn describe_short(&self) -> String {
        format!(
            "W{}A{} of {} {}",
            self.spec.weight_bits,
            self.spec.act_bits,
            self.base.family(),
            self.base.layout_name()
        )
    }
}

/// A network of another family, BatchNorm folded, fake-quantized (see the module docs).
#[derive(Module, Debug)]
pub struct QuantNet {
    /// The feature part's convolutions, in walk order.
    pub convs: Vec<QConv>,
    /// Hidden linear layers of the head.
    pub hidden: Vec<Linear>,
    /// The classifier.
    pub classifier: Linear,
    /// One observer per weighted layer's input: the convolutions, then the head's layers.
    pub observers: Vec<Observer>,
    /// Whether the observers learn (training mode; `valid()` turns it off, as for BatchNorm).
    pub training: Param<burn::module::Flag>,
    /// The feature part's structure.
    #[module(skip)]
    pub plan: Vec<Step>,
    /// The head's pool.
    #[module(skip)]
    pub pool: HeadPooling,
    /// The architecture this network was built from.
    #[module(skip)]
    pub arch: QuantArch,
}

impl QuantNet {
    /// `net` (any family with a canonical layer list, itself not quantized) with BatchNorm
    /// folded, ready for quantization-aware fine-tuning with `spec`. The folded parameters are
    /// new leaves on `net`'s device; observers start empty.
    pub fn from_network(net: &Network, spec: &QuantSpec) -> Result<QuantNet> {
        spec.validate()?;
        if let Network::Quant(q) = net {
            bail!(
                "the network is quantized already ({} weight bits); quantize its float base",
                q.arch.spec.weight_bits
            );
        }
        let graph = net
            .layer_graph()
            .context("quantization folds BatchNorm through the canonical layer list")?;
        let device = net.devices()[0].clone();
        let mut convs = Vec::new();
        let plan = steps(&graph.layers[..graph.features_at], &mut convs)?;
        let head = net.head();
        let observers = (0..convs.len() + head.layers())
            .map(|_| Observer::new(&device))
            .collect();
        Ok(QuantNet {
            convs,
            hidden: head.hidden.to_vec(),
            classifier: head.classifier.clone(),
            observers,
            training: Param::from_bool(true),
            plan,
            pool: head.pool,
            arch: QuantArch {
                base: Box::new(net.arch()),
                spec: spec.clone(),
            },
        })
    }

    /// Runs `steps` on `x`; `observe`: the observers learn from this batch.
    fn run(&self, steps: &[Step], x: Tensor<4>, observe: bool) -> Tensor<4> {
        let spec = &self.arch.spec;
        steps.iter().fold(x, |x, step| match step {
            Step::Conv {
                index,
                stride,
                padding,
            } => {
                let conv = &self.convs[*index];
                let observer = &self.observers[*index];
                let x = observer.fake_quant(x, spec, observe);
                let (w, w_scale) = fake_quant_channels_scaled(conv.weight.val(), spec.weight_bits);
                let [o, ..] = w.dims();
                let bias = fake_quant_bias(
                    conv.bias.val(),
                    observer.scale(&x.device(), spec),
                    w_scale.reshape([o]),
                );
                conv2d(
                    x,
                    w,
                    Some(bias),
                    ConvOptions::new(*stride, *padding, [1, 1], 1),
                )
            }
            Step::Relu => relu(x),
            Step::MaxPool {
                kernel,
                stride,
                padding,
            } => max_pool2d(
                x,
                MaxPoolOptions::new(*kernel)
                    .with_stride(*stride)
                    .with_padding(*padding),
            ),
            Step::Residual { branch, shortcut } => {
                let b = self.run(branch, x.clone(), observe);
                let s = if shortcut.is_empty() {
                    x
                } else {
                    self.run(shortcut, x, observe)
                };
                b + s
            }
        })
    }

    /// The head's observers.
    fn head_observers(&self) -> &[Observer] {
        &self.observers[self.convs.len()..]
    }

    /// Multiply-accumulates of the convolutions for one image (shapes from a dry run).
    fn conv_macs(&self) -> usize {
        let side = self.arch.base.input_size();
        let device = self.classifier.weight.val().device();
        let mut macs = 0;
        count_macs(
            self,
            &self.plan,
            Tensor::zeros([1, 3, side, side], &device),
            &mut macs,
        );
        macs
    }
}

/// Walks `steps` on one image, adding each convolution's MACs.
fn count_macs(net: &QuantNet, steps: &[Step], x: Tensor<4>, macs: &mut usize) -> Tensor<4> {
    steps.iter().fold(x, |x, step| {
        if let Step::Residual { branch, shortcut } = step {
            count_macs(net, branch, x.clone(), macs);
            count_macs(net, shortcut, x.clone(), macs);
        }
        let y = net.run(std::slice::from_ref(step), x, false);
        if let Step::Conv { index, .. } = step {
            let [o, i, kh, kw] = net.convs[*index].weight.dims();
            let [_, _, h, w] = y.dims();
            *macs += o * i * kh * kw * h * w;
        }
        y
    })
}

/// The steps of a canonical layer list's feature part, pushing each folded convolution.
fn steps(layers: &[Layer], convs: &mut Vec<QConv>) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    for layer in layers {
        out.push(match layer {
            Layer::Weighted(w) => {
                if w.kind != WeightKind::Conv {
                    bail!("a linear layer before the attribution layer cannot be quantized here");
                }
                let [o, ..] = w.weight.dims();
                let bias = w
                    .bias
                    .clone()
                    .unwrap_or_else(|| Tensor::zeros([o], &w.weight.device()));
                convs.push(QConv {
                    weight: Param::from_tensor(w.weight.clone().detach()),
                    bias: Param::from_tensor(bias.detach()),
                });
                Step::Conv {
                    index: convs.len() - 1,
                    stride: w.stride,
                    padding: w.padding,
                }
            }
            Layer::Relu => Step::Relu,
            Layer::MaxPool {
                kernel,
                stride,
                padding,
            } => Step::MaxPool {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            },
            Layer::Residual { branch, shortcut } => Step::Residual {
                branch: steps(branch, convs)?,
                shortcut: steps(shortcut, convs)?,
            },
            Layer::GlobalAvgPool | Layer::Flatten => {
                bail!("a pool to 1x1 before the attribution layer cannot be quantized here")
            }
        });
    }
    Ok(out)
}

impl FamilyNet for QuantNet {
    fn features(&self, x: Tensor<4>) -> Tensor<4> {
        // observers learn in training mode on an autodiff device, never in evaluation or in an
        // attribution method's input gradient (which runs `valid()` networks)
        let observe = self.training.is_enabled() && x.device().is_autodiff();
        self.run(&self.plan, x, observe)
    }
    fn head(&self) -> PiecewiseLinearHead<'_> {
        PiecewiseLinearHead {
            pool: self.pool,
            hidden: &self.hidden,
            classifier: &self.classifier,
            dropout: self.arch.base.dropout(),
            quant: Some(HeadQuant {
                spec: &self.arch.spec,
                observers: self.head_observers(),
                training: self.training.is_enabled(),
            }),
        }
    }
    fn params(&self) -> usize {
        let convs: usize = self
            .convs
            .iter()
            .map(|c| c.weight.dims().iter().product::<usize>() + c.bias.dims()[0])
            .sum();
        convs + self.head().params()
    }
    fn macs(&self) -> usize {
        self.conv_macs() + self.head().macs()
    }
}

impl FamilyArch for QuantArch {
    type Net = QuantNet;
    fn init(&self, device: &Device, seed: u64) -> Result<QuantNet> {
        let base = self.base.init(device, seed)?;
        QuantNet::from_network(&base, &self.spec)
    }
    fn validate(&self) -> Result<()> {
        if matches!(*self.base, Arch::Quant(_)) {
            bail!("a quantized network's base must be a float network");
        }
        self.base.validate()?;
        self.spec.validate()
    }
    fn num_classes(&self) -> usize {
        self.base.num_classes()
    }
    fn input_size(&self) -> usize {
        self.base.input_size()
    }
    fn for_data(&self, num_classes: usize, input_size: usize) -> Self {
        QuantArch {
            base: Box::new(self.base.for_data(num_classes, input_size)),
            spec: self.spec.clone(),
        }
    }
    fn width_divisor(&self) -> usize {
        self.base.width_divisor()
    }
    fn thinner(&self, divisor: usize) -> Self {
        QuantArch {
            base: Box::new(self.base.thinner(divisor)),
            spec: self.spec.clone(),
        }
    }
    fn attribution_shape(&self) -> Result<(usize, usize)> {
        self.base.attribution_shape()
    }
    fn dropout(&self) -> f64 {
        self.base.dropout()
    }
    fn with_dropout(&self, p: f64) -> Self {
        QuantArch {
            base: Box::new(self.base.with_dropout(p)),
            spec: self.spec.clone(),
        }
    }
    fn expected_tensors(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let net = self.init(&Device::flex(), 0)?;
        let mut out = Vec::new();
        for (i, c) in net.convs.iter().enumerate() {
            out.push((format!("convs.{i}.weight"), c.weight.dims().to_vec()));
            out.push((format!("convs.{i}.bias"), c.bias.dims().to_vec()));
        }
        for (j, l) in net.hidden.iter().enumerate() {
            out.push((format!("hidden.{j}.weight"), l.weight.dims().to_vec()));
            if let Some(b) = &l.bias {
                out.push((format!("hidden.{j}.bias"), b.dims().to_vec()));
            }
        }
        out.push((
            "classifier.weight".into(),
            net.classifier.weight.dims().to_vec(),
        ));
        if let Some(b) = &net.classifier.bias {
            out.push(("classifier.bias".into(), b.dims().to_vec()));
        }
        for k in 0..net.observers.len() {
            out.push((format!("observers.{k}.state"), vec![3]));
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        format!(
            "W{}A{} of {}",
            self.spec.weight_bits,
            self.spec.act_bits,
            self.base.describe()
        )
    }
    fn layout_name(&self) -> String {
        format!(
            "{} W{}A{}",
            self.base.layout_name(),
            self.spec.weight_bits,
            self.spec.act_bits
        )
    }
    fn tiny(num_classes: usize, input_size: usize) -> Vec<Self> {
        super::vgg::VggArch::tiny(num_classes, input_size)
            .into_iter()
            .map(|v| QuantArch {
                base: Box::new(Arch::Vgg(v)),
                spec: QuantSpec {
                    weight_bits: 4,
                    ..QuantSpec::default()
                },
            })
            .collect()
    }
}

/// The canonical list of a quantized network for the relevance methods: its folded convolutions
/// and linear layers with their quantized weights. Activation quantization is not a layer of
/// the list: relevance passes it unchanged, as zennit treats such elementwise steps (the list's
/// logits are the network's up to the activations' rounding).
impl LayerList for QuantNet {
    fn layer_graph(&self) -> Result<LayerGraph> {
        let mut layers = self.layers_of(&self.plan);
        let features_at = layers.len();
        layers.push(match self.pool {
            HeadPooling::Max { kernel } => Layer::MaxPool {
                kernel: [kernel; 2],
                stride: [kernel; 2],
                padding: [0, 0],
            },
            HeadPooling::GlobalAverage => Layer::GlobalAvgPool,
        });
        layers.push(Layer::Flatten);
        let head = self.head();
        for j in 0..head.layers() {
            if j > 0 {
                layers.push(Layer::Relu);
            }
            let w = head.weight(j);
            let [d_in, d_out] = w.dims();
            layers.push(Layer::Weighted(WeightLayer {
                weight: w.transpose().reshape([d_out, d_in, 1, 1]),
                bias: head.layer(j).bias.as_ref().map(|b| b.val()),
                stride: [1, 1],
                padding: [0, 0],
                kind: WeightKind::Dense,
            }));
        }
        Ok(LayerGraph {
            layers,
            features_at,
        })
    }
}

impl QuantNet {
    /// The canonical layers of `steps`, weights quantized.
    fn layers_of(&self, steps: &[Step]) -> Vec<Layer> {
        steps
            .iter()
            .map(|step| match step {
                Step::Conv {
                    index,
                    stride,
                    padding,
                } => {
                    let conv = &self.convs[*index];
                    Layer::Weighted(WeightLayer {
                        weight: fake_quant_channels(conv.weight.val(), self.arch.spec.weight_bits),
                        bias: Some(conv.bias.val()),
                        stride: *stride,
                        padding: *padding,
                        kind: WeightKind::Conv,
                    })
                }
                Step::Relu => Layer::Relu,
                Step::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => Layer::MaxPool {
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                },
                Step::Residual { branch, shortcut } => Layer::Residual {
                    branch: self.layers_of(branch),
                    shortcut: self.layers_of(shortcut),
                },
            })
            .collect()
    }
}
impl super::torchvision::TorchvisionImport for QuantArch {}
impl crate::export::TorchExport for QuantNet {}
impl crate::compression::structured::FilterPrunable for QuantArch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn t1(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn weights_quantize_per_channel_symmetric_rounding_half_to_even() {
        // channel 0: max 1.4 -> 4 bits: qmax 7, scale 0.2; 0.5 / 0.2 = 2.5 -> 2 (half to even),
        // 0.7 / 0.2 = 3.5 -> 4, -1.4 -> -7, 0.1 / 0.2 = 0.5 -> 0
        // channel 1: max 7 -> scale 1; 2.5 -> 2, -3.5 -> -4, 7 -> 7, 1.5 -> 2
        let w = Tensor::<4>::from_data(
            TensorData::new(
                vec![0.5f32, 0.7, -1.4, 0.1, 2.5, -3.5, 7.0, 1.5],
                [2, 4, 1, 1],
            ),
            &Device::flex(),
        );
        let q = vals(fake_quant_channels(w, 4));
        let want = [0.4f32, 0.8, -1.4, 0.0, 2.0, -4.0, 7.0, 2.0];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{q:?}");
        }
        // the integers the export stores: the same grid
        let (ints, scales) = quantize_rows(&[0.5, 0.7, -1.4, 0.1, 2.5, -3.5, 7.0, 1.5], 2, 4);
        assert_eq!(ints, [2, 4, -7, 0, 2, -4, 7, 2]);
        assert!((scales[0] - 0.2).abs() < 1e-7 && (scales[1] - 1.0).abs() < 1e-7);
    }

    #[test]
    fn the_weight_gradient_is_straight_through() {
        let w = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32, -0.3, 0.9, 0.05], [1, 4, 1, 1]),
            &Device::flex().autodiff(),
        )
        .require_grad();
        let g = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, -3.0, 4.0], [1, 4, 1, 1]),
            &Device::flex().autodiff(),
        );
        let grads = (fake_quant_channels(w.clone(), 2) * g).sum().backward();
        assert_eq!(vals(w.grad(&grads).unwrap()), [1.0, 2.0, -3.0, 4.0]);
    }

    #[test]
    fn activations_quantize_affinely_and_clip_with_zero_gradient_outside() {
        let spec = QuantSpec {
            act_bits: 2,
            observer_steps: 1,
            observer_momentum: 1.0,
            ..QuantSpec::default()
        };
        let ad = Device::flex().autodiff();
        let obs = Observer::new(&ad);
        // range from this batch: lo = min(-0.3, 0) = -0.3, hi = 0.6 -> 3 levels, scale 0.3,
        // zero = 1: the grid is {-0.3, 0, 0.3, 0.6}
        let x0 = Tensor::<1>::from_data(TensorData::new(vec![-0.3f32, 0.6], [2]), &ad);
        obs.update(&x0, &spec);
        let (lo, hi, n) = obs.range(&ad);
        assert_eq!(
            (vals(lo), vals(hi), vals(n)),
            (vec![-0.3], vec![0.6], vec![1.0])
        );
        // 0.45 / 0.3 = 1.5 -> 2 (even) -> 0.6 - 0.3 = 0.3 ... (q - zero) * scale: round(1.5 + 1) = 2
        // -> (2 - 1) * 0.3 = 0.3; 0.2 -> round(1.67) = 2 -> 0.3; -1 clips to -0.3; 2 clips to 0.6
        let x = Tensor::<1>::from_data(TensorData::new(vec![0.45f32, 0.2, -1.0, 2.0], [4]), &ad)
            .require_grad();
        let y = obs.fake_quant(x.clone(), &spec, false);
        let got = vals(y.clone().inner());
        for (a, b) in got.iter().zip([0.3f32, 0.3, -0.3, 0.6]) {
            assert!((a - b).abs() < 1e-6, "{got:?}");
        }
        let grads = y.sum().backward();
        assert_eq!(vals(x.grad(&grads).unwrap()), [1.0, 1.0, 0.0, 0.0]);
        // frozen after observer_steps updates
        obs.update(&t1(&[-5.0, 5.0]), &spec);
        let (lo, hi, n) = obs.range(&Device::flex());
        assert_eq!(
            (vals(lo), vals(hi), vals(n)),
            (vec![-0.3], vec![0.6], vec![1.0])
        );
    }

    #[test]
    fn observers_start_from_the_first_batch_then_average() {
        let spec = QuantSpec {
            observer_steps: 10,
            observer_momentum: 0.25,
            ..QuantSpec::default()
        };
        let obs = Observer::new(&Device::flex());
        // before any batch the tensor passes unchanged
        let x = t1(&[0.123, -7.0]);
        assert_eq!(vals(obs.fake_quant(x, &spec, false)), [0.123, -7.0]);
        obs.update(&t1(&[1.0, 2.0]), &spec); // lo = 0 (zero is always inside), hi = 2
        obs.update(&t1(&[-4.0, 6.0]), &spec); // lo = 0.75 * 0 + 0.25 * -4 = -1, hi = 1.5 + 1.5 = 3
        let (lo, hi, n) = obs.range(&Device::flex());
        assert_eq!(
            (vals(lo), vals(hi), vals(n)),
            (vec![-1.0], vec![3.0], vec![2.0])
        );
    }

    #[test]
    fn per_channel_quantization_commutes_with_the_batchnorm_fold() {
        // folding multiplies channel c by g_c (any sign): quantize-then-scale equals
        // scale-then-quantize, so the deployed folded network is exactly what was trained
        let w: Vec<f32> = (0..24)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0)
            .collect();
        let g = [0.37f32, -2.5, 1.0];
        let dev = Device::flex();
        let wt = Tensor::<4>::from_data(TensorData::new(w.clone(), [3, 8, 1, 1]), &dev);
        let gt =
            Tensor::<1>::from_data(TensorData::new(g.to_vec(), [3]), &dev).reshape([3, 1, 1, 1]);
        for bits in [2, 4, 8] {
            let a = vals(fake_quant_channels(wt.clone(), bits) * gt.clone());
            let b = vals(fake_quant_channels(wt.clone() * gt.clone(), bits));
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                    "{bits} bits: {x} vs {y}"
                );
            }
        }
    }
}
