//! Compression methods: each is one file implementing [`Method`] (its config section, its
//! validation and its schedule of fine-tuning stages) and [`Compression`] for each stage (how a
//! student is made from the previous stage's network, its task loss, and an optional hook run
//! after every optimiser step). Attribution matching ([`crate::matching`]) is added on top by
//! the shared fine-tuning loop; the experiment runs every method's stages with one loop.

pub mod kd;
pub mod quantize;
pub mod structured;
pub mod structured_resnet;
pub mod unstructured;

use crate::models::Network;
use anyhow::Result;
use burn::prelude::*;

/// What is run after every optimiser step of a student (e.g. re-zeroing pruned weights).
/// `Send + Sync`: lockstep students take their steps on separate threads.
pub type StepHook = Box<dyn Fn(Network) -> Network + Send + Sync>;

/// Which of the experiment's fine-tuning settings a stage uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// `student_train`: students trained from scratch (KD).
    Student,
    /// `prune_train`: fine-tuning of pruned networks.
    Prune,
}

/// One fine-tuning stage of a method: every regularizer's student is made from its own network
/// of the previous stage (the teacher for the first stage) and fine-tuned.
pub struct PlannedStage {
    /// Student construction and task loss of this stage.
    pub compression: Box<dyn Compression>,
    /// Its optimisation settings: this budget of the experiment ...
    pub budget: Budget,
    /// ... with this many epochs instead of the budget's, where given.
    pub epochs: Option<usize>,
    /// 0 for a single-stage method; 1, 2, ... for the rounds of an iterative one.
    pub round: usize,
    /// The method's settings that determine this stage, as JSON (hashed into its stage key).
    pub settings_key: String,
}

/// A compression method of the experiment grid.
pub trait Method {
    /// Name used in configs and reports (`kd`, `unstructured`, `structured`).
    fn name(&self) -> &'static str;
    /// Checks the method's config section before any work starts.
    fn validate(&self) -> Result<()>;
    /// The method's fine-tuning stages, in order; the last stage's networks are the method's
    /// result and earlier ones are reported as its intermediate rounds.
    fn stages(&self) -> Result<Vec<PlannedStage>>;
    /// Students per regularizer and seed, each from its own fresh initial weights (only a
    /// method that starts from fresh weights has more than one).
    fn replicates(&self) -> usize {
        1
    }
}

/// Methods run one after another, written `a+b` in `compressions` (`kd+quantize`): the stages
/// of each in turn, every method starting from the networks the one before left. Stages are
/// numbered 1, 2, ... across the chain, so each has its own folder and the last one's networks
/// are the chain's result.
pub struct Chain<'a> {
    /// The chain's name as written (`kd+quantize`).
    pub name: &'static str,
    /// The methods, in order.
    pub parts: Vec<&'a dyn Method>,
}

impl Method for Chain<'_> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn validate(&self) -> Result<()> {
        self.parts.iter().try_for_each(|m| m.validate())
    }
    fn stages(&self) -> Result<Vec<PlannedStage>> {
        let mut out = Vec::new();
        for part in &self.parts {
            for mut stage in part.stages()? {
                stage.settings_key = format!("{}:{}", part.name(), stage.settings_key);
                out.push(stage);
            }
        }
        for (i, stage) in out.iter_mut().enumerate() {
            stage.round = i + 1;
        }
        Ok(out)
    }
    /// The first method's: later methods start from its networks.
    fn replicates(&self) -> usize {
        self.parts.first().map_or(1, |m| m.replicates())
    }
}

/// The `'static` name of a chain: chains are named by config strings, and a report keeps the
/// name, so each distinct name is kept once for the life of the process.
pub fn chain_name(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// One method behind a box, as [`crate::config::ExperimentConfig::method`] returns chains.
pub struct Single<'a>(pub &'a dyn Method);

impl Method for Single<'_> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
    fn stages(&self) -> Result<Vec<PlannedStage>> {
        self.0.stages()
    }
    fn replicates(&self) -> usize {
        self.0.replicates()
    }
}

/// A compression method with a fine-tuning stage (`Send + Sync`: lockstep students share it
/// across threads).
pub trait Compression: Send + Sync {
    /// Name used in configs and reports (e.g. `kd`).
    fn name(&self) -> &'static str;
    /// Builds the (untrained or freshly compressed) student from `base` (the teacher, or the
    /// previous round's network); `seed` seeds any fresh weights.
    fn make_student(&self, base: &Network, device: &Device, seed: u64) -> Result<Network>;
    /// Task loss of one batch: student logits (tracked), teacher logits and multi-hot targets
    /// (constants).
    fn task_loss(&self, student: Tensor<2>, teacher: Tensor<2>, targets: Tensor<2>) -> Tensor<1>;
    /// Run after every optimiser step of `student` (as made by [`Compression::make_student`]),
    /// or `None`: unstructured pruning re-zeroes the weights it pruned.
    fn step_hook(&self, _student: &Network) -> Option<StepHook> {
        None
    }
}

/// Mean multi-label soft-margin loss (binary cross-entropy with logits, averaged over
/// samples and classes), written stably: `softplus(z) - y z`.
pub fn bce_with_logits(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (softplus(logits.clone()) - logits * targets).mean()
}

/// Stable `log(1 + exp(x))` = `max(x, 0) + log1p(exp(-|x|))`. The sign is taken as a
/// constant mask with sign(0) = +1, so the gradient is exactly sigmoid(x) everywhere,
/// including x = 0 (where `abs` and `clamp_min` would give 1 instead of 1/2).
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let positive = x.clone().detach().greater_equal_elem(0.0).float();
    let sign = positive.clone().mul_scalar(2.0).sub_scalar(1.0);
    x.clone() * positive + (x * sign).neg().exp().log1p()
}

/// Stable `log sigmoid(x) = -softplus(-x)`.
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    softplus(x.neg()).neg()
}
