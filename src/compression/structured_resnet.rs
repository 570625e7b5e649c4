//! Structured L1 filter pruning of a ResNet that respects residual coupling (the grouping of
//! Torch-Pruning's dependency graph, Fang et al. 2023). Channels that a residual addition joins
//! must be removed together, or the addition no longer lines up; so channels are pruned in
//! groups, and every member of a group keeps the same index set:
//!
//! - a block's internal channels (conv1's output = bn1 = conv2's input) are a group of their
//!   own, ranked by conv1's filter L1 norms as in [`kept_filters`] (Li et al. 2017);
//! - each stage's residual stream is one coupled group: every block's conv2/bn2 output, the
//!   stage's projection shortcut (downsample_conv/bn) output, in stage 0 the stem's output
//!   (stage 0's first block has an identity shortcut), and on the reading side every block's
//!   conv1 input and identity shortcut, the next stage's first conv1 and downsample_conv input
//!   channels, and after the last stage the rows of `fc`.
//!
//! The result is a genuinely smaller dense ResNet whose widths are written as explicit
//! [`StageWidths`] in its architecture.

use super::structured::{FilterPrunable, FilterPruning, index, kept_filters};
use crate::models::resnet::{Block, BlockKind, StageWidths};
use crate::models::{ResNet, ResNetArch};
use anyhow::{Result, ensure};
use burn::module::{Module, Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// Which channels a pruned ResNet keeps: ascending indices into the full network's channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetKept {
    /// Per stage: the kept channels of the residual stream (stage 0's include the stem's).
    pub stream: Vec<Vec<usize>>,
    /// Per stage, per block: the kept internal channels of the block.
    pub mid: Vec<Vec<Vec<usize>>>,
}

/// The conv layers whose filters write into stage `s`'s residual stream: the stem (stage 0),
/// every block's conv2 and the projection shortcut.
fn stream_writers(model: &ResNet, s: usize) -> Vec<&Conv2d> {
    let stem = (s == 0).then_some(&model.conv1);
    stem.into_iter()
        .chain(
            model.layers[s]
                .iter()
                .flat_map(|b| std::iter::once(b.last_conv()).chain(b.downsample_conv.as_ref())),
        )
        .collect()
}

/// The writers' filters side by side, one row per output channel: (out, sum of in*kh*kw, 1, 1).
/// A row's L1 norm is the sum of the writers' filter L1 norms for that channel, so
/// [`kept_filters`] ranks the group by it with its own rounding and tie rule.
fn group_weight(writers: &[&Conv2d]) -> Tensor<4> {
    let rows = writers
        .iter()
        .map(|c| {
            let w = c.weight.val();
            let [o, i, kh, kw] = w.dims();
            w.reshape([o, i * kh * kw, 1, 1])
        })
        .collect();
    Tensor::cat(rows, 1)
}

/// The grouping above relies on torchvision's shortcut placement, which [`ResNetArch`] always
/// builds: identity shortcuts everywhere except a projection at the first block of every stage
/// after the first. Anything else would couple the groups differently, so it is refused.
fn check_shortcuts(model: &ResNet) -> Result<()> {
    ensure!(
        !model.layers.is_empty(),
        "a ResNet needs at least one stage"
    );
    ensure!(
        model.layers.iter().flatten().all(|b| b.conv3.is_none()),
        "structured pruning handles basic blocks (two convs) only, not bottleneck blocks"
    );
    for (s, stage) in model.layers.iter().enumerate() {
        for (b, block) in stage.iter().enumerate() {
            let projects = block.downsample_conv.is_some();
            ensure!(
                projects == (s > 0 && b == 0) && projects == block.downsample_bn.is_some(),
                "structured pruning expects a projection shortcut exactly at the first block of \
                 stages 1.., but block {b} of stage {s} {}",
                if projects { "has one" } else { "has none" }
            );
        }
    }
    Ok(())
}

/// The channels kept when pruning every group of `model` at `rate`: `ceil((1 - rate) * C)`
/// per group (at least one; ties keep the lower index).
///
/// Importance: a block's internal channel is ranked by the L1 norm of its conv1 filter, as in
/// VGG pruning. A residual-stream channel is ranked by the *sum* of the L1 norms of all the conv
/// filters writing into it (stem, every conv2, the projection): the addition sums their
/// outputs, so a channel is unimportant only when it is small in every writer, and a channel
/// small in one writer but large in another is kept. Readers' input weights are not counted
/// (as Li et al. rank by the filter alone). The norms are unnormalised, so a writer with
/// larger weights weighs more, as its output does in the sum.
pub fn kept_channels(model: &ResNet, rate: f64) -> Result<ResNetKept> {
    check_shortcuts(model)?;
    let stream = (0..model.layers.len())
        .map(|s| kept_filters(&group_weight(&stream_writers(model, s)), rate))
        .collect();
    let mid = model
        .layers
        .iter()
        .map(|stage| {
            stage
                .iter()
                .map(|b| kept_filters(&b.conv1.weight.val(), rate))
                .collect()
        })
        .collect();
    Ok(ResNetKept { stream, mid })
}

/// The architecture of the pruned network: explicit widths with the kept channel counts, and
/// no divisor (they are counts already).
pub fn pruned_arch(arch: &ResNetArch, kept: &ResNetKept) -> ResNetArch {
    let widths = kept
        .stream
        .iter()
        .zip(&kept.mid)
        .map(|(out, mids)| StageWidths {
            out: out.len(),
            mid: mids.iter().map(Vec::len).collect(),
        })
        .collect();
    ResNetArch {
        widths: Some(widths),
        width_divisor: 1,
        ..arch.clone()
    }
}

/// A kept set must be non-empty, strictly ascending and within the `channels` it selects from.
fn check_set(set: &[usize], channels: usize, what: &str) -> Result<()> {
    ensure!(
        !set.is_empty()
            && set.windows(2).all(|w| w[0] < w[1])
            && set.last().is_some_and(|&c| c < channels),
        "{what}: kept channels {set:?} must be non-empty, ascending and below {channels}"
    );
    Ok(())
}

/// `kept` has one set per stage and per block of `model`, each valid for its channel count.
fn check_kept(model: &ResNet, kept: &ResNetKept) -> Result<()> {
    let stages = model.layers.len();
    ensure!(
        kept.stream.len() == stages && kept.mid.len() == stages,
        "one kept-channel set per stage ({stages}) expected"
    );
    for (s, stage) in model.layers.iter().enumerate() {
        let width = stage[0].bn2.gamma.dims()[0];
        check_set(&kept.stream[s], width, &format!("stage {s} stream"))?;
        ensure!(
            kept.mid[s].len() == stage.len(),
            "stage {s}: one kept-channel set per block ({}) expected",
            stage.len()
        );
        for (b, (block, set)) in stage.iter().zip(&kept.mid[s]).enumerate() {
            let mid = block.bn1.gamma.dims()[0];
            check_set(set, mid, &format!("stage {s} block {b} internal"))?;
        }
    }
    Ok(())
}

/// `src`'s weight restricted to the `out` filters and (when given) the `inp` input channels.
fn slice_conv(src: &Conv2d, dst: &mut Conv2d, out: &Tensor<1, Int>, inp: Option<&Tensor<1, Int>>) {
    let mut w = src.weight.val().select(0, out.clone());
    if let Some(i) = inp {
        w = w.select(1, i.clone());
    }
    dst.weight = Param::from_tensor(w);
    dst.bias = src
        .bias
        .as_ref()
        .map(|b| Param::from_tensor(b.val().select(0, out.clone())));
}

/// `src`'s affine parameters and running statistics restricted to the `keep` channels.
fn slice_bn(src: &BatchNorm, dst: &mut BatchNorm, keep: &Tensor<1, Int>) {
    dst.gamma = Param::from_tensor(src.gamma.val().select(0, keep.clone()));
    dst.beta = Param::from_tensor(src.beta.val().select(0, keep.clone()));
    dst.running_mean = RunningState::new(src.running_mean.value().select(0, keep.clone()));
    dst.running_var = RunningState::new(src.running_var.value().select(0, keep.clone()));
}

/// One block sliced: internal channels `mid`, input channels `inp` (the previous stream's),
/// output channels `out` (its stage's stream).
fn slice_block(
    src: &Block,
    dst: &mut Block,
    inp: &Tensor<1, Int>,
    mid: &Tensor<1, Int>,
    out: &Tensor<1, Int>,
) {
    slice_conv(&src.conv1, &mut dst.conv1, mid, Some(inp));
    slice_bn(&src.bn1, &mut dst.bn1, mid);
    slice_conv(&src.conv2, &mut dst.conv2, out, Some(mid));
    slice_bn(&src.bn2, &mut dst.bn2, out);
    if let (Some(sc), Some(dc)) = (&src.downsample_conv, &mut dst.downsample_conv) {
        slice_conv(sc, dc, out, Some(inp));
    }
    if let (Some(sb), Some(db)) = (&src.downsample_bn, &mut dst.downsample_bn) {
        slice_bn(sb, db, out);
    }
}

/// The physically smaller network keeping the `kept` channels of every group.
pub fn slice_resnet(model: &ResNet, kept: &ResNetKept) -> Result<ResNet> {
    check_shortcuts(model)?;
    check_kept(model, kept)?;
    let device = model.devices()[0].clone();
    // every tensor is overwritten below; the seed only keeps the draw deterministic
    let mut out = pruned_arch(&model.arch, kept).init(&device, 0)?;
    let stream: Vec<Tensor<1, Int>> = kept.stream.iter().map(|k| index(k, &device)).collect();
    // the stem writes into stage 0's stream; its input (RGB) is never pruned
    slice_conv(&model.conv1, &mut out.conv1, &stream[0], None);
    slice_bn(&model.bn1, &mut out.bn1, &stream[0]);
    for (s, (src, dst)) in model.layers.iter().zip(out.layers.iter_mut()).enumerate() {
        for (b, (sb, db)) in src.iter().zip(dst.iter_mut()).enumerate() {
            // a stage's first block reads the previous stage's stream (stage 0: the stem's,
            // which is its own)
            let inp = &stream[if b == 0 { s.saturating_sub(1) } else { s }];
            let mid = index(&kept.mid[s][b], &device);
            slice_block(sb, db, inp, &mid, &stream[s]);
        }
    }
    // the head averages each channel, so fc's input rows (burn stores [in, out]) are channels
    let last = stream.last().expect("checked: at least one stage");
    out.fc.weight = Param::from_tensor(model.fc.weight.val().select(0, last.clone()));
    out.fc.bias = model.fc.bias.as_ref().map(|b| Param::from_tensor(b.val()));
    Ok(out)
}

/// One-shot L1 structured pruning of every channel group of `model` at `rate`.
pub fn prune_resnet(model: &ResNet, rate: f64) -> Result<ResNet> {
    ensure!(
        (0.0..1.0).contains(&rate),
        "filter pruning rate must be in [0, 1), got {rate}"
    );
    slice_resnet(model, &kept_channels(model, rate)?)
}

/// ResNet: every channel group at `rate`, coupled across residual additions ([`prune_resnet`]).
impl FilterPrunable for ResNetArch {
    /// `layers` names VGG conv layers, so it is refused here.
    fn check_filter_pruning(&self, settings: &FilterPruning) -> Result<()> {
        ensure!(
            self.block_kind() == BlockKind::Basic,
            "structured pruning of {:?}-block ResNets is not implemented yet (it needs the \
             stem as its own channel group and two internal groups per block); basic-block \
             ResNets (resnet18, resnet34, small and block lists) are supported",
            self.block_kind()
        );
        ensure!(
            settings.layers.is_empty(),
            "structured.layers ({:?}) selects vgg conv layers and applies to the vgg family \
             only; a resnet is pruned in every channel group at structured.rate, so leave \
             layers empty",
            settings.layers
        );
        Ok(())
    }

    fn prune_filters(&self, net: &ResNet, settings: &FilterPruning) -> Result<ResNet> {
        prune_resnet(net, settings.rate)
    }
}
