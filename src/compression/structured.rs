//! Structured L1 filter pruning (Li et al. 2017): in each selected conv layer the filters with
//! the smallest L1 norms are physically removed, together with their BatchNorm channels, the
//! next conv layer's input channels and, after the last conv layer, the matching columns of the
//! first linear layer (channel-major flattening: feature `c*P + p` belongs to channel c). The
//! result is a genuinely smaller dense network, described by an explicit layout.

use super::{Budget, Compression, Method, PlannedStage, bce_with_logits};
use crate::models::network::{on_any_arch, on_net};
use crate::models::vgg::LayoutItem;
use crate::models::{Arch, FamilyArch, Network, Vgg, VggArch};
use anyhow::{Context, Result, bail, ensure};
use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// What structured pruning needs of a family: checking the settings against an architecture
/// and building the physically smaller network. The defaults say the family has none, so a new
/// family starts with `impl FilterPrunable for MyArch {}` in its own file.
pub trait FilterPrunable: FamilyArch {
    /// Checks `settings` against this architecture, before any training.
    fn check_filter_pruning(&self, settings: &FilterPruning) -> Result<()> {
        let _ = settings;
        bail!("structured pruning is not implemented for this network family")
    }

    /// The pruned network (before fine-tuning).
    fn prune_filters(&self, net: &Self::Net, settings: &FilterPruning) -> Result<Self::Net> {
        let _ = (net, settings);
        bail!("structured pruning is not implemented for this network family")
    }
}

/// VGG: the selected conv layers, as [`prune_filters`].
impl FilterPrunable for VggArch {
    fn check_filter_pruning(&self, _settings: &FilterPruning) -> Result<()> {
        Ok(())
    }

    fn prune_filters(&self, net: &Vgg, settings: &FilterPruning) -> Result<Vgg> {
        prune_filters(net, settings)
    }
}

/// L1 filter pruning settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilterPruning {
    /// Fraction of filters removed from each selected layer (paper: 0.7).
    pub rate: f64,
    /// 0-based indices of the conv layers to prune; empty = the authors' choice for VGG16
    /// (conv1_1 and conv4_1..conv5_3: 0, 7..=12), or every conv layer for other layouts.
    pub layers: Vec<usize>,
    /// Fine-tuning epochs (paper: 60); other settings from `prune_train`.
    pub epochs: usize,
}

impl Default for FilterPruning {
    fn default() -> Self {
        FilterPruning {
            rate: 0.7,
            layers: vec![],
            epochs: 8,
        }
    }
}

impl FilterPruning {
    /// Checks the settings against the family they will prune (also when a config is
    /// validated, before any training): `layers` names VGG conv layers, so it is refused for a
    /// ResNet, whose channel groups are all pruned at `rate`.
    pub fn check_family(&self, arch: &Arch) -> Result<()> {
        on_any_arch!(arch, a => a.check_filter_pruning(self))
            .with_context(|| format!("structured pruning of a {} network", arch.family()))
    }

    /// The conv layers pruned in a network of `convs` conv layers.
    pub fn selected_layers(&self, convs: usize) -> Vec<usize> {
        if !self.layers.is_empty() {
            self.layers.clone()
        } else if convs == 13 {
            vec![0, 7, 8, 9, 10, 11, 12]
        } else {
            (0..convs).collect()
        }
    }
}

fn floats(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Indices (ascending) of the filters kept in a conv weight (out, in, kh, kw): the
/// `ceil((1 - rate) * out)` largest L1 norms, at least one; ties keep the lower index.
pub fn kept_filters(weight: &Tensor<4>, rate: f64) -> Vec<usize> {
    let out = weight.dims()[0];
    let norms = floats(weight.clone().abs().sum_dims(&[1, 2, 3]).reshape([out]));
    let keep = (((1.0 - rate) * out as f64).ceil() as usize).clamp(1, out);
    let mut order: Vec<usize> = (0..out).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut kept = order[..keep].to_vec();
    kept.sort_unstable();
    kept
}

/// The indices as an Int tensor for `select`.
pub(crate) fn index(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// The physically smaller network keeping `kept[i]` filters of conv layer i.
pub fn slice_network(model: &Vgg, kept: &[Vec<usize>]) -> Result<Vgg> {
    ensure!(
        kept.len() == model.blocks.len(),
        "one kept-filter list per conv layer expected"
    );
    let device = model.devices()[0].clone();
    let arch = pruned_arch(&model.arch, kept)?;
    // every tensor is overwritten below; the seed only keeps the draw deterministic
    let mut out = arch.init(&device, 0)?;
    let mut prev: Option<Tensor<1, Int>> = None;
    for ((src, dst), keep) in model.blocks.iter().zip(out.blocks.iter_mut()).zip(kept) {
        let idx = index(keep, &device);
        let mut w = src.conv.weight.val().select(0, idx.clone());
        if let Some(p) = &prev {
            w = w.select(1, p.clone());
        }
        dst.conv.weight = Param::from_tensor(w);
        dst.conv.bias = src
            .conv
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().select(0, idx.clone())));
        dst.bn.gamma = Param::from_tensor(src.bn.gamma.val().select(0, idx.clone()));
        dst.bn.beta = Param::from_tensor(src.bn.beta.val().select(0, idx.clone()));
        dst.bn.running_mean = RunningState::new(src.bn.running_mean.value().select(0, idx.clone()));
        dst.bn.running_var = RunningState::new(src.bn.running_var.value().select(0, idx.clone()));
        prev = Some(idx);
    }
    // First linear layer: keep the rows (burn stores [in, out]) of the kept channels' features.
    let (_, side) = model.arch.attribution_shape()?;
    let pooled = side / model.arch.head_pool_kernel(side);
    let per_channel = pooled * pooled;
    let last = kept.last().map(Vec::as_slice).unwrap_or(&[]);
    let rows: Vec<usize> = last
        .iter()
        .flat_map(|&c| (c * per_channel)..((c + 1) * per_channel))
        .collect();
    let rows = index(&rows, &device);
    let first_linear = |src: &burn::nn::Linear, dst: &mut burn::nn::Linear| {
        dst.weight = Param::from_tensor(src.weight.val().select(0, rows.clone()));
        dst.bias = src.bias.as_ref().map(|b| Param::from_tensor(b.val()));
    };
    if model.hidden.is_empty() {
        first_linear(&model.classifier, &mut out.classifier);
    } else {
        first_linear(&model.hidden[0], &mut out.hidden[0]);
        for (s, d) in model.hidden.iter().zip(out.hidden.iter_mut()).skip(1) {
            *d = s.clone();
        }
        out.classifier = model.classifier.clone();
    }
    Ok(out)
}

/// The architecture of the pruned network: an explicit layout with the kept channel counts.
fn pruned_arch(arch: &VggArch, kept: &[Vec<usize>]) -> Result<VggArch> {
    let mut convs = kept.iter();
    let tokens: Vec<String> = arch
        .items()?
        .iter()
        .map(|item| match item {
            LayoutItem::Pool => "M".to_string(),
            LayoutItem::Conv(_) => convs.next().map_or(0, Vec::len).to_string(),
        })
        .collect();
    Ok(VggArch {
        layout: tokens.join(","),
        width_divisor: 1,
        ..arch.clone()
    })
}

/// One-shot L1 filter pruning of the selected layers.
pub fn prune_filters(model: &Vgg, cfg: &FilterPruning) -> Result<Vgg> {
    ensure!(
        (0.0..1.0).contains(&cfg.rate),
        "filter pruning rate must be in [0, 1), got {}",
        cfg.rate
    );
    let convs = model.blocks.len();
    let selected = cfg.selected_layers(convs);
    ensure!(
        selected.iter().all(|&i| i < convs),
        "pruned layer index out of range 0..{convs}"
    );
    let kept: Vec<Vec<usize>> = model
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let rate = if selected.contains(&i) { cfg.rate } else { 0.0 };
            kept_filters(&b.conv.weight.val(), rate)
        })
        .collect();
    slice_network(model, &kept)
}

impl FilterPruning {
    /// Checks the settings before any work starts.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..1.0).contains(&self.rate),
            "structured: rate must be in [0, 1), got {}",
            self.rate
        );
        Ok(())
    }
}

impl Method for FilterPruning {
    fn name(&self) -> &'static str {
        "structured"
    }
    fn validate(&self) -> Result<()> {
        FilterPruning::validate(self)
    }
    /// One stage: the teacher's filters pruned once, fine-tuned for `epochs` with the pruning
    /// budget.
    fn stages(&self) -> Result<Vec<PlannedStage>> {
        Ok(vec![PlannedStage {
            compression: Box::new(self.clone()),
            budget: Budget::Prune,
            epochs: Some(self.epochs),
            round: 0,
            settings_key: serde_json::to_string(self)?,
        }])
    }
}

impl Compression for FilterPruning {
    fn name(&self) -> &'static str {
        "structured"
    }

    /// VGG: the selected conv layers, as [`prune_filters`]. ResNet: every channel group at
    /// `rate`, coupled across residual additions ([`prune_resnet`]); `layers` names VGG conv
    /// layers and is refused for it.
    fn make_student(&self, base: &Network, device: &Device, _seed: u64) -> Result<Network> {
        let base = base.valid();
        self.check_family(&base.arch())?;
        let pruned = on_net!(&base, n => n.arch.prune_filters(n, self).map(Network::from))?;
        Ok(pruned.fork(device).train())
    }

    fn task_loss(&self, student: Tensor<2>, _teacher: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        bce_with_logits(student, targets)
    }
}
