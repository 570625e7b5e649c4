//! ResNet family (He et al. 2016), as torchvision's resnet18/34 (basic blocks) and
//! resnet50/101/152 (bottleneck blocks), plus a small CPU-sized layout; all with a width divisor. The attribution layer is the last stage's
//! output (torchvision's `layer4`), the head a global average pool and one linear layer, so the
//! closed-form Grad-CAM applies.
//!
//! Widths normally follow `base_width * 2^s`; a structurally pruned network instead carries
//! explicit per-stage widths ([`StageWidths`]), because pruning leaves every stage and every
//! block with its own channel count. The block structure (which blocks project) never changes.
//!
//! A block is a chain of conv + BatchNorm layers with ReLUs between them, plus a shortcut; its
//! [`BlockKind`] says the chain's kernel sizes, which conv carries the stride and how much wider
//! the residual stream is than the block's inside. Everything else (forward, counts, saved
//! tensors, ONNX export, torchvision import, structured pruning) walks the chain, so a new kind
//! of block is one variant of [`BlockKind`].
//!
//! Tensor names follow torchvision's modules (`conv1`, `bn1`, `layers.{s}.{b}.conv1`..`conv3`,
//! `layers.{s}.{b}.downsample_conv`, `fc`), with torchvision's `layer1..layer4` as `layers.0..3`.

use super::head::{HeadPooling, PiecewiseLinearHead};
use super::network::{FamilyArch, FamilyNet};
use anyhow::{Context, Result, bail, ensure};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use serde::{Deserialize, Serialize};

/// The first layers, before the residual stages.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// torchvision's: 7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2 (input / 4).
    Imagenet,
    /// For small inputs (CIFAR-style): one 3x3 conv stride 1, BN, ReLU.
    #[default]
    Small,
}

/// The kind of residual block.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// Two 3x3 convs, the first with the stride (resnet18/34).
    #[default]
    Basic,
    /// 1x1 (reduce), 3x3 (with the stride, torchvision's "v1.5"), 1x1 (expand by 4)
    /// (resnet50/101/152).
    Bottleneck,
}

impl BlockKind {
    /// Kernel sizes of the block's conv chain.
    pub fn kernels(self) -> &'static [usize] {
        match self {
            BlockKind::Basic => &[3, 3],
            BlockKind::Bottleneck => &[1, 3, 1],
        }
    }

    /// Index of the conv in the chain that carries the block's stride.
    pub fn stride_at(self) -> usize {
        match self {
            BlockKind::Basic => 0,
            BlockKind::Bottleneck => 1,
        }
    }

    /// Residual-stream channels per internal channel (torchvision's `expansion`).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    /// Number of internal widths of a block (its convs but the last).
    pub fn internal(self) -> usize {
        self.kernels().len() - 1
    }
}

/// torchvision's ResNets this family builds and imports.
pub const TORCHVISION_RESNETS: &[&str] =
    &["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// Largest channel count a stage can have: `base_width` (at most 4096) doubled over 8 stages.
/// Explicit widths are held to the same bound, so no description allocates beyond it.
const MAX_WIDTH: usize = 4096 << 7;

/// Explicit channel counts of one stage, for a network whose widths no longer follow
/// `base_width * 2^s` (one made by structured pruning).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StageWidths {
    /// Channels of the stage's residual stream: every block's output and the projection
    /// shortcut's; in stage 0 also the stem's (its first block has an identity shortcut).
    pub out: usize,
    /// Internal channels of each block (its conv1's output = its conv2's input), one entry per
    /// block of the stage.
    pub mid: Vec<usize>,
}

/// Architecture of a [`ResNet`]; saved next to every model so it can be rebuilt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetArch {
    /// Blocks per stage: a preset (`resnet18` = 2,2,2,2; `resnet34` = 3,4,6,3; `resnet50` =
    /// 3,4,6,3, `resnet101` = 3,4,23,3, `resnet152` = 3,8,36,3 with bottleneck blocks; `small`
    /// = 1,1,1,1) or a list like `2,2`. Stage s has `base_width * 2^s` internal channels and
    /// `expansion` times as many in its residual stream (before the divisor) unless `widths` is
    /// given; every stage after the first halves the resolution.
    pub layout: String,
    /// The kind of block; absent: the preset's (bottleneck for resnet50/101/152, else basic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockKind>,
    /// The stem.
    pub stem: Stem,
    /// Channels of the stem and the first stage (torchvision: 64).
    pub base_width: usize,
    /// Every conv layer's channel count is divided by this.
    pub width_divisor: usize,
    /// Number of output classes.
    pub num_classes: usize,
    /// Input side length in pixels (square inputs).
    pub input_size: usize,
    /// Dropout probability before the linear head (torchvision: none).
    pub dropout: f64,
    /// Explicit widths, one entry per stage, replacing `base_width * 2^s` (which is then
    /// unused); divided by `width_divisor` like derived widths (rounded down, at least 1).
    /// Absent (the default, and not written) for a network built from `base_width`, so files
    /// and configs from before pruned ResNets load unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<StageWidths>>,
}

impl Default for ResNetArch {
    fn default() -> Self {
        ResNetArch {
            layout: "small".into(),
            block: None,
            stem: Stem::Small,
            base_width: 16,
            width_divisor: 1,
            num_classes: 10,
            input_size: 64,
            dropout: 0.0,
            widths: None,
        }
    }
}

impl ResNetArch {
    /// torchvision's ResNet `name` (see [`TORCHVISION_RESNETS`]) for `num_classes` classes at
    /// 224 px.
    pub fn torchvision(name: &str, num_classes: usize) -> Result<Self> {
        ensure!(
            TORCHVISION_RESNETS.contains(&name),
            "unknown torchvision ResNet '{name}' (known: {})",
            TORCHVISION_RESNETS.join(", ")
        );
        Ok(ResNetArch {
            layout: name.into(),
            block: None,
            stem: Stem::Imagenet,
            base_width: 64,
            width_divisor: 1,
            num_classes,
            input_size: 224,
            dropout: 0.0,
            widths: None,
        })
    }

    /// The kind of block: `block`, or the preset's.
    pub fn block_kind(&self) -> BlockKind {
        self.block.unwrap_or(match self.layout.as_str() {
            "resnet50" | "resnet101" | "resnet152" => BlockKind::Bottleneck,
            _ => BlockKind::Basic,
        })
    }

    /// Blocks per stage.
    pub fn blocks(&self) -> Result<Vec<usize>> {
        let text = match self.layout.as_str() {
            "resnet18" => "2,2,2,2",
            "resnet34" | "resnet50" => "3,4,6,3",
            "resnet101" => "3,4,23,3",
            "resnet152" => "3,8,36,3",
            "small" => "1,1,1,1",
            other => other,
        };
        let blocks = text
            .split(',')
            .map(|t| {
                t.trim().parse::<usize>().with_context(|| {
                    format!(
                        "ResNet layout '{}': '{t}' is not a block count \
                         (presets: resnet18, resnet34, resnet50, resnet101, resnet152, small)",
                        self.layout
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        ensure!(
            !blocks.is_empty()
                && blocks.len() <= 8
                && blocks.iter().all(|&b| (1..=64).contains(&b)),
            "ResNet layout '{}' needs 1 to 8 stages of 1 to 64 blocks each",
            self.layout
        );
        Ok(blocks)
    }

    /// Output channels of stage `s` (its residual stream, after the divisor). With explicit
    /// widths, `s` must be a stage of a validated architecture.
    pub fn stage_width(&self, s: usize) -> usize {
        match &self.widths {
            Some(w) => self.divided(w[s].out),
            None => self.plain_width(s) * self.block_kind().expansion(),
        }
    }

    /// Output channels of the stem: stage 0's stream for basic blocks (whose first block adds
    /// the stem's output to its own), `base_width` (after the divisor) for bottleneck blocks
    /// (whose first block projects it to the 4x wider stream), as torchvision.
    pub fn stem_width(&self) -> usize {
        match self.block_kind() {
            BlockKind::Basic => self.stage_width(0),
            BlockKind::Bottleneck => self.plain_width(0),
        }
    }

    /// `base_width * 2^s` after the divisor: a block's internal width without explicit widths.
    fn plain_width(&self, s: usize) -> usize {
        (self.base_width << s) / self.width_divisor.max(1)
    }

    /// First internal width of block `b` of stage `s` (after the divisor).
    pub fn mid_width(&self, s: usize, b: usize) -> usize {
        self.internal_widths(s, b)[0]
    }

    /// Internal widths of block `b` of stage `s` (after the divisor), one per conv of the
    /// block's chain but the last: `base_width * 2^s` unless explicit widths say otherwise.
    pub fn internal_widths(&self, s: usize, b: usize) -> Vec<usize> {
        match &self.widths {
            Some(w) => vec![self.divided(w[s].mid[b])],
            None => vec![self.plain_width(s); self.block_kind().internal()],
        }
    }

    /// An explicit width after the divisor. Never 0, so that [`FamilyArch::thinner`] of a
    /// pruned network (whose narrowest groups may have one channel) still builds.
    ///
    /// [`FamilyArch::thinner`]: super::FamilyArch::thinner
    fn divided(&self, width: usize) -> usize {
        (width / self.width_divisor.max(1)).max(1)
    }

    /// The explicit widths for messages, `out:mid,mid` per stage (e.g. `4:2,3 8:5,6`); empty
    /// when the widths follow `base_width`.
    pub fn widths_text(&self) -> String {
        let stage = |w: &StageWidths| {
            let mids: Vec<String> = w.mid.iter().map(usize::to_string).collect();
            format!("{}:{}", w.out, mids.join(","))
        };
        self.widths.as_ref().map_or(String::new(), |ws| {
            ws.iter().map(stage).collect::<Vec<_>>().join(" ")
        })
    }

    /// Explicit widths, when present, describe exactly the stages and blocks of the layout.
    fn check_widths(&self, blocks: &[usize]) -> Result<()> {
        let Some(widths) = &self.widths else {
            return Ok(());
        };
        ensure!(
            widths.len() == blocks.len(),
            "widths lists {} stages but layout '{}' has {}",
            widths.len(),
            self.layout,
            blocks.len()
        );
        ensure!(
            self.block_kind() == BlockKind::Basic,
            "explicit widths describe structurally pruned basic-block ResNets; {:?} blocks \
             take their widths from base_width",
            self.block_kind()
        );
        for (s, (w, &count)) in widths.iter().zip(blocks).enumerate() {
            ensure!(
                w.mid.len() == count,
                "widths of stage {s} list {} blocks but layout '{}' has {count}",
                w.mid.len(),
                self.layout
            );
            ensure!(
                std::iter::once(&w.out)
                    .chain(&w.mid)
                    .all(|c| (1..=MAX_WIDTH).contains(c)),
                "widths of stage {s} must be in 1..={MAX_WIDTH}, got {w:?}"
            );
        }
        Ok(())
    }

    /// Checks the architecture before anything is built.
    pub fn validate(&self) -> Result<()> {
        let blocks = self.blocks()?;
        if let Some(kind) = self.block {
            let preset = ResNetArch {
                block: None,
                ..self.clone()
            };
            ensure!(
                !self.layout.starts_with("resnet") || preset.block_kind() == kind,
                "layout '{}' is built from {:?} blocks; block = {kind:?} contradicts it \
                 (give the block counts as a list to build another kind)",
                self.layout,
                preset.block_kind()
            );
        }
        ensure!(self.num_classes >= 1, "num_classes must be at least 1");
        ensure!(self.width_divisor >= 1, "width_divisor must be at least 1");
        self.check_widths(&blocks)?;
        // base_width only has to survive the divisor when it is what sets the widths
        let base_min = if self.widths.is_some() {
            1
        } else {
            self.width_divisor
        };
        ensure!(
            self.base_width >= base_min && self.base_width <= 4096,
            "base_width {} must be in {base_min}..=4096 (at least width_divisor {} when no \
             explicit widths are given)",
            self.base_width,
            self.width_divisor
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1), got {}",
            self.dropout
        );
        ensure!(
            (1..=8192).contains(&self.input_size),
            "input_size must be in 1..=8192, got {}",
            self.input_size
        );
        let side = self.attribution_side_for(blocks.len());
        if side == 0 {
            bail!(
                "input_size {} is too small for {} stages with the {:?} stem",
                self.input_size,
                blocks.len(),
                self.stem
            );
        }
        Ok(())
    }

    fn attribution_side_for(&self, stages: usize) -> usize {
        let mut side = self.input_size;
        if self.stem == Stem::Imagenet {
            side = conv_out(side, 7, 2, 3);
            side = conv_out(side, 3, 2, 1);
        }
        for _ in 1..stages {
            side = conv_out(side, 3, 2, 1);
        }
        side
    }

    /// (channels, side) of the attribution layer.
    pub fn attribution_shape(&self) -> Result<(usize, usize)> {
        let blocks = self.blocks()?;
        self.check_widths(&blocks)?;
        let stages = blocks.len();
        Ok((
            self.stage_width(stages - 1),
            self.attribution_side_for(stages),
        ))
    }

    /// Builds a freshly initialised network with burn's initialisers, seeded (see
    /// [`crate::util::with_burn_rng`]).
    pub fn init(&self, device: &Device, seed: u64) -> Result<ResNet> {
        self.validate()?;
        crate::util::with_burn_rng(device, seed, || {
            let model = self.init_unlocked(device)?;
            crate::util::materialize_params(&model);
            Ok(model)
        })
    }

    fn init_unlocked(&self, device: &Device) -> Result<ResNet> {
        let blocks = self.blocks()?;
        let stem_width = self.stem_width();
        let (k, s, p) = match self.stem {
            Stem::Imagenet => (7, 2, 3),
            Stem::Small => (3, 1, 1),
        };
        let conv1 = conv(3, stem_width, k, s, p, device);
        let bn1 = BatchNormConfig::new(stem_width).init(device);
        let mut in_ch = stem_width;
        let mut layers = Vec::new();
        for (stage, &count) in blocks.iter().enumerate() {
            let out = self.stage_width(stage);
            let mut stage_blocks = Vec::new();
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let widths = self.block_widths(in_ch, stage, b);
                stage_blocks.push(Block::new(self.block_kind(), &widths, stride, device));
                in_ch = out;
            }
            layers.push(stage_blocks);
        }
        let fc = LinearConfig::new(in_ch, self.num_classes).init(device);
        Ok(ResNet {
            conv1,
            bn1,
            layers,
            fc,
            arch: self.clone(),
        })
    }

    /// The channel counts along block `b` of stage `s`, which reads `in_ch` channels: its
    /// input, internal widths and output.
    fn block_widths(&self, in_ch: usize, s: usize, b: usize) -> Vec<usize> {
        std::iter::once(in_ch)
            .chain(self.internal_widths(s, b))
            .chain(std::iter::once(self.stage_width(s)))
            .collect()
    }

    /// Every tensor a [`ResNet`] of this architecture holds, as burn names it in a saved file,
    /// with its shape; computed from the architecture alone.
    pub fn expected_tensors(&self) -> Result<Vec<(String, Vec<usize>)>> {
        self.validate()?;
        let mut out = Vec::new();
        let bn = |out: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
            for t in ["gamma", "beta", "running_mean", "running_var"] {
                out.push((format!("{name}.{t}"), vec![c]));
            }
        };
        let stem_width = self.stem_width();
        let k = if self.stem == Stem::Imagenet { 7 } else { 3 };
        out.push(("conv1.weight".into(), vec![stem_width, 3, k, k]));
        bn(&mut out, "bn1", stem_width);
        let mut in_ch = stem_width;
        for (stage, &count) in self.blocks()?.iter().enumerate() {
            let c = self.stage_width(stage);
            for b in 0..count {
                let p = format!("layers.{stage}.{b}");
                let widths = self.block_widths(in_ch, stage, b);
                for (k, &kernel) in self.block_kind().kernels().iter().enumerate() {
                    let (i, o) = (widths[k], widths[k + 1]);
                    out.push((
                        format!("{p}.conv{}.weight", k + 1),
                        vec![o, i, kernel, kernel],
                    ));
                    bn(&mut out, &format!("{p}.bn{}", k + 1), o);
                }
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                if stride != 1 || in_ch != c {
                    out.push((format!("{p}.downsample_conv.weight"), vec![c, in_ch, 1, 1]));
                    bn(&mut out, &format!("{p}.downsample_bn"), c);
                }
                in_ch = c;
            }
        }
        out.push(("fc.weight".into(), vec![in_ch, self.num_classes]));
        out.push(("fc.bias".into(), vec![self.num_classes]));
        Ok(out)
    }
}

/// Output side of `c` on a `side` x `side` input (square kernels, "same" padding k/2).
fn conv_side(c: &Conv2d, side: usize) -> usize {
    let [_, _, k, _] = c.weight.dims();
    conv_out(side, k, c.stride[0], k / 2)
}

/// Multiply-accumulates of `c` producing a `side` x `side` output.
fn conv_macs(c: &Conv2d, side: usize) -> usize {
    let [o, i, kh, kw] = c.weight.dims();
    o * i * kh * kw * side * side
}

/// Output side of a convolution or pool.
fn conv_out(side: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (side + 2 * padding)
        .checked_sub(kernel)
        .map_or(0, |d| d / stride + 1)
}

fn conv(
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([in_ch, out_ch], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        .init(device)
}

/// A residual block: a chain of conv -> BN layers with ReLUs between them (`conv1`/`bn1`,
/// `conv2`/`bn2` and, for a bottleneck, `conv3`/`bn3`), plus the shortcut (identity, or
/// conv1x1 -> BN when stride or width change), then ReLU.
#[derive(Module, Debug)]
pub struct Block {
    /// First convolution.
    pub conv1: Conv2d,
    /// Its BatchNorm.
    pub bn1: BatchNorm,
    /// Second convolution.
    pub conv2: Conv2d,
    /// Its BatchNorm.
    pub bn2: BatchNorm,
    /// Third convolution (bottleneck blocks).
    pub conv3: Option<Conv2d>,
    /// Its BatchNorm.
    pub bn3: Option<BatchNorm>,
    /// Projection shortcut, when stride or width change.
    pub downsample_conv: Option<Conv2d>,
    /// Its BatchNorm.
    pub downsample_bn: Option<BatchNorm>,
}

impl Block {
    /// A block of `kind` through the channel counts `widths` (input, internal..., output).
    fn new(kind: BlockKind, widths: &[usize], stride: usize, device: &Device) -> Self {
        let kernels = kind.kernels();
        let layer = |k: usize| {
            let s = if k == kind.stride_at() { stride } else { 1 };
            let kernel = kernels[k];
            (
                conv(widths[k], widths[k + 1], kernel, s, kernel / 2, device),
                BatchNormConfig::new(widths[k + 1]).init(device),
            )
        };
        let (conv1, bn1) = layer(0);
        let (conv2, bn2) = layer(1);
        let (conv3, bn3) = match kernels.len() {
            3 => {
                let (c, b) = layer(2);
                (Some(c), Some(b))
            }
            _ => (None, None),
        };
        let (in_ch, out) = (widths[0], widths[widths.len() - 1]);
        let project = stride != 1 || in_ch != out;
        Block {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            downsample_conv: project.then(|| conv(in_ch, out, 1, stride, 0, device)),
            downsample_bn: project.then(|| BatchNormConfig::new(out).init(device)),
        }
    }

    /// The conv -> BN chain, in order.
    pub fn chain(&self) -> Vec<(&Conv2d, &BatchNorm)> {
        let mut chain = vec![(&self.conv1, &self.bn1), (&self.conv2, &self.bn2)];
        if let (Some(c), Some(b)) = (&self.conv3, &self.bn3) {
            chain.push((c, b));
        }
        chain
    }

    /// The conv -> BN chain, in order, mutably.
    pub fn chain_mut(&mut self) -> Vec<(&mut Conv2d, &mut BatchNorm)> {
        let mut chain = vec![
            (&mut self.conv1, &mut self.bn1),
            (&mut self.conv2, &mut self.bn2),
        ];
        if let (Some(c), Some(b)) = (&mut self.conv3, &mut self.bn3) {
            chain.push((c, b));
        }
        chain
    }

    /// The projection shortcut, when there is one.
    pub fn shortcut(&self) -> Option<(&Conv2d, &BatchNorm)> {
        self.downsample_conv
            .as_ref()
            .zip(self.downsample_bn.as_ref())
    }

    /// The conv whose output is added to the shortcut (the chain's last).
    pub fn last_conv(&self) -> &Conv2d {
        self.conv3.as_ref().unwrap_or(&self.conv2)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let chain = self.chain();
        let last = chain.len() - 1;
        let mut y = x.clone();
        for (k, (c, b)) in chain.into_iter().enumerate() {
            y = b.forward(c.forward(y));
            if k < last {
                y = relu(y);
            }
        }
        let shortcut = match self.shortcut() {
            Some((c, b)) => b.forward(c.forward(x)),
            None => x,
        };
        relu(y + shortcut)
    }

    fn convs(&self) -> impl Iterator<Item = &Conv2d> {
        self.chain()
            .into_iter()
            .map(|(c, _)| c)
            .chain(self.downsample_conv.as_ref())
    }
}

/// A ResNet: stem, residual stages (features) and a global-average-pool + linear head.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem convolution.
    pub conv1: Conv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// Residual stages, each a list of blocks.
    pub layers: Vec<Vec<Block>>,
    /// The linear head.
    pub fc: Linear,
    /// The architecture this network was built from.
    #[module(skip)]
    pub arch: ResNetArch,
}

impl ResNet {
    /// The attribution-layer activation A (N, C, h, w): the last stage's output.
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = relu(self.bn1.forward(self.conv1.forward(x)));
        if self.arch.stem == Stem::Imagenet {
            x = max_pool2d(
                x,
                MaxPoolOptions::new([3, 3])
                    .with_stride([2, 2])
                    .with_padding([1, 1]),
            );
        }
        self.layers.iter().flatten().fold(x, |x, b| b.forward(x))
    }

    /// The head: global average pool, dropout, linear.
    pub fn head(&self) -> PiecewiseLinearHead<'_> {
        PiecewiseLinearHead {
            pool: HeadPooling::GlobalAverage,
            hidden: &[],
            classifier: &self.fc,
            dropout: self.arch.dropout,
            quant: None,
        }
    }

    /// Number of trainable scalars (BatchNorm running statistics are buffers, not counted).
    pub fn params(&self) -> usize {
        let bn = |b: &BatchNorm| 2 * b.gamma.dims()[0];
        let convs: usize = self
            .convs()
            .map(|c| c.weight.dims().iter().product::<usize>())
            .sum();
        let bns: usize = bn(&self.bn1)
            + self
                .layers
                .iter()
                .flatten()
                .flat_map(|b| {
                    b.chain()
                        .into_iter()
                        .map(|(_, n)| n)
                        .chain(b.downsample_bn.as_ref())
                })
                .map(bn)
                .sum::<usize>();
        convs + bns + self.head().params()
    }

    fn convs(&self) -> impl Iterator<Item = &Conv2d> {
        std::iter::once(&self.conv1).chain(self.layers.iter().flatten().flat_map(|b| b.convs()))
    }

    /// Multiply-accumulate operations of one forward pass on one image (convolutions and the
    /// linear head).
    pub fn macs(&self) -> usize {
        let mut side = self.arch.input_size;
        let [o, i, k, _] = self.conv1.weight.dims();
        let stride = if self.arch.stem == Stem::Imagenet {
            2
        } else {
            1
        };
        side = conv_out(side, k, stride, k / 2);
        let mut total = o * i * k * k * side * side;
        if self.arch.stem == Stem::Imagenet {
            side = conv_out(side, 3, 2, 1);
        }
        for block in self.layers.iter().flatten() {
            // every conv's output side from its own stride and padding
            let block_in = side;
            for (c, _) in block.chain() {
                side = conv_side(c, side);
                total += conv_macs(c, side);
            }
            if let Some((c, _)) = block.shortcut() {
                total += conv_macs(c, conv_side(c, block_in));
            }
        }
        total + self.head().macs()
    }
}

// ---- the family contract (models/network.rs) ----

impl FamilyNet for ResNet {
    fn features(&self, x: Tensor<4>) -> Tensor<4> {
        ResNet::features(self, x)
    }
    fn head(&self) -> PiecewiseLinearHead<'_> {
        ResNet::head(self)
    }
    fn params(&self) -> usize {
        ResNet::params(self)
    }
    fn macs(&self) -> usize {
        ResNet::macs(self)
    }
}

impl FamilyArch for ResNetArch {
    type Net = ResNet;
    fn init(&self, device: &Device, seed: u64) -> Result<ResNet> {
        ResNetArch::init(self, device, seed)
    }
    fn validate(&self) -> Result<()> {
        ResNetArch::validate(self)
    }
    super::network::common_arch_fields!();
    fn attribution_shape(&self) -> Result<(usize, usize)> {
        ResNetArch::attribution_shape(self)
    }
    fn expected_tensors(&self) -> Result<Vec<(String, Vec<usize>)>> {
        ResNetArch::expected_tensors(self)
    }
    fn describe(&self) -> String {
        let widths = match self.widths_text() {
            t if t.is_empty() => format!("base width {}", self.base_width),
            t => format!("widths (out:mid per stage) {t}"),
        };
        format!(
            "layout '{}', {:?} blocks, {:?} stem, {widths}, width divisor {}, {} classes",
            self.layout,
            self.block_kind(),
            self.stem,
            self.width_divisor,
            self.num_classes
        )
    }
    fn layout_name(&self) -> String {
        if self.layout.starts_with("resnet") {
            self.layout.clone()
        } else {
            format!("resnet-{}", self.layout)
        }
    }
    /// One per block kind, each with two stages (the second with a projection shortcut; a
    /// bottleneck's first block projects too, its stream being wider than the stem).
    fn tiny(num_classes: usize, input_size: usize) -> Vec<Self> {
        [BlockKind::Basic, BlockKind::Bottleneck]
            .into_iter()
            .map(|kind| ResNetArch {
                layout: "1,1".into(),
                block: Some(kind),
                base_width: 4,
                num_classes,
                input_size,
                dropout: 0.5,
                ..ResNetArch::default()
            })
            .collect()
    }
}
