//! Training: the teacher's supervised training and the shared fine-tuning loop in which every
//! compression method meets every matching regularizer. SGD with momentum and weight decay,
//! step or cosine schedule, seeded augmentation, atomic per-epoch checkpoints and progress bars.

pub mod batch;
pub mod checkpoint;
pub mod finetune;
pub mod schedule;

pub use crate::matching::{MatchConfig, MatchLayer, MatchTarget};
pub use batch::{Augment, Normalization, make_batch};
pub use finetune::{FineTuneSpec, StudentRun, fine_tune, fine_tune_lockstep};
pub use schedule::Schedule;

use crate::compression::bce_with_logits;
use crate::data::Dataset;
use crate::models::{HeadDropout, Network};
use crate::util::derive_seed;
use anyhow::{Result, bail};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One finished epoch of a training stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean task loss over the epoch's batches (BCE for the teacher, the compression's loss
    /// for students).
    pub task_loss: f64,
    /// Mean un-scaled matching loss (absent without matching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_loss: Option<f64>,
    /// Validation mAP in % (NaN, written as `null`, without validation).
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub val_map: f64,
    /// Validation sample-averaged F1 in %.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub val_f1: f64,
    /// Fraction of validation (image, class) scores predicted present (logit > 0).
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub val_positive_rate: f64,
}

/// Validation scores of one epoch's network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValScores {
    /// mAP in %.
    pub map: f64,
    /// Sample-averaged F1 in %.
    pub f1: f64,
    /// Fraction of (image, class) scores predicted present.
    pub positive_rate: f64,
}

/// Scores a network (on the autodiff device) on the validation split after each epoch; the
/// experiment supplies it, so training needs no evaluation code.
pub type Validator<'a> = dyn Fn(&Network) -> Result<ValScores> + Sync + 'a;

/// The record of a finished epoch; validation scores are NaN without a validator.
pub fn epoch_record(
    epoch: usize,
    task_loss: f64,
    match_loss: Option<f64>,
    model: &Network,
    validate: Option<&Validator>,
) -> Result<EpochRecord> {
    let nan = ValScores {
        map: f64::NAN,
        f1: f64::NAN,
        positive_rate: f64::NAN,
    };
    let val = validate.map(|v| v(model)).transpose()?.unwrap_or(nan);
    Ok(EpochRecord {
        epoch: epoch + 1,
        task_loss,
        match_loss,
        val_map: val.map,
        val_f1: val.f1,
        val_positive_rate: val.positive_rate,
    })
}

impl EpochRecord {
    /// The epoch as a log fragment: losses and validation scores.
    pub fn summary(&self) -> String {
        let mut s = format!("task {:.4}", self.task_loss);
        if let Some(m) = self.match_loss {
            s.push_str(&format!(" match {m:.4}"));
        }
        if self.val_map.is_finite() {
            s.push_str(&format!(
                " val mAP {:.1}% F1 {:.1}%",
                self.val_map, self.val_f1
            ));
        }
        s
    }
}

/// Optimisation settings of one training stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Random crop (zero padding of `crop_pad` px) and horizontal flip.
    pub augment: bool,
    /// Padding for the random crop.
    pub crop_pad: usize,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// What `augment` does: `crop-flip` (padded random crop + flip; default) or `resized-crop`
    /// (torchvision's RandomResizedCrop + flip, as the paper's code).
    pub augmentation: AugmentKind,
    /// Area fraction range of `resized-crop` (torchvision: 0.08..1).
    #[serde(serialize_with = "crate::util::ser_f32_pair")]
    pub crop_scale: [f32; 2],
    /// Largest l2 norm of each parameter tensor's gradient (burn's per-tensor norm clipping);
    /// 0 turns clipping off (as the paper). The normalised-map matching loss has gradients of
    /// order 1/||map||, which explode while a student's map is near zero.
    pub grad_clip: f64,
    /// Epochs over which the learning rate ramps linearly from 0 to the schedule's value
    /// (0: none). A deep plain VGG trained from scratch on a small dataset can sit at chance
    /// for hundreds of steps at full rate; a warm-up lets it leave chance early.
    pub warmup_epochs: f64,
    /// The fewest optimisation steps the stage takes: on a small dataset `epochs` is raised
    /// until `epochs x steps per epoch` reaches it (0: off). A from-scratch VGG needs a number
    /// of steps, not of epochs, to leave its initial plateau; counted in epochs, a small dataset
    /// gets too few (README, "Teacher recipe").
    pub min_steps: usize,
}

/// Which training augmentation [`TrainConfig::augment`] applies.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    /// Zero-padded random crop of `crop_pad` pixels and horizontal flip.
    #[default]
    CropFlip,
    /// RandomResizedCrop (area in `crop_scale`, aspect ratio 3/4..4/3) and horizontal flip.
    ResizedCrop,
}

/// torchvision's RandomResizedCrop area range.
pub const DEFAULT_CROP_SCALE: [f32; 2] = [0.08, 1.0];

/// Which optimiser a stage uses.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum and L2 weight decay (the paper's).
    Sgd,
    /// AdamW (decoupled weight decay); `momentum` is its beta1.
    Adamw,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 30,
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            augment: true,
            crop_pad: 4,
            optimizer: OptimizerKind::Sgd,
            augmentation: AugmentKind::CropFlip,
            crop_scale: DEFAULT_CROP_SCALE,
            grad_clip: 0.0,
            warmup_epochs: 0.0,
            min_steps: 0,
        }
    }
}

impl TrainConfig {
    /// Checks the settings, naming the stage in errors.
    pub fn validate(&self, stage: &str) -> Result<()> {
        if self.batch_size == 0 {
            bail!("{stage}: batch_size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("{stage}: lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("{stage}: momentum must be in [0, 1), got {}", self.momentum);
        }
        if self.weight_decay < 0.0 {
            bail!("{stage}: weight_decay must be >= 0");
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            bail!(
                "{stage}: grad_clip must be >= 0 (0: off), got {}",
                self.grad_clip
            );
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            bail!(
                "{stage}: warmup_epochs must be >= 0 (0: none), got {}",
                self.warmup_epochs
            );
        }
        let [lo, hi] = self.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            bail!("{stage}: crop_scale must satisfy 0 < min <= max <= 1, got [{lo}, {hi}]");
        }
        self.schedule.validate(stage)
    }

    /// The augmentation of a training batch, or None without augmentation.
    pub fn augmenter(&self) -> Option<Augment> {
        if !self.augment {
            return None;
        }
        Some(match self.augmentation {
            AugmentKind::CropFlip => Augment::CropFlip { pad: self.crop_pad },
            AugmentKind::ResizedCrop => Augment::ResizedCrop {
                scale: (self.crop_scale[0], self.crop_scale[1]),
            },
        })
    }

    /// The epochs this stage runs with `steps_per_epoch` steps each: `epochs`, raised to reach
    /// `min_steps`.
    pub fn epochs_for(&self, steps_per_epoch: usize) -> usize {
        if self.min_steps == 0 || steps_per_epoch == 0 {
            return self.epochs;
        }
        self.epochs.max(self.min_steps.div_ceil(steps_per_epoch))
    }

    /// The learning rate at global step `step` of `total`, `steps_per_epoch` per epoch: the
    /// schedule's rate times the linear warm-up factor.
    pub fn lr_at(&self, step: usize, steps_per_epoch: usize, total: usize) -> f64 {
        let warm_steps = self.warmup_epochs * steps_per_epoch as f64;
        let warm = if warm_steps > 0.0 {
            ((step + 1) as f64 / warm_steps).min(1.0)
        } else {
            1.0
        };
        warm * self.schedule.lr(self.lr, step, total)
    }

    /// The SGD optimiser these settings describe.
    pub fn optimizer(&self) -> ModuleOptimizer {
        let clip =
            (self.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(self.grad_clip as f32));
        if self.optimizer == OptimizerKind::Adamw {
            return AdamWConfig::new()
                .with_beta_1(self.momentum as f32)
                .with_weight_decay(self.weight_decay as f32)
                .with_grad_clipping(clip)
                .init();
        }
        SgdConfig::new()
            .with_momentum((self.momentum > 0.0).then_some(MomentumConfig {
                momentum: self.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay((self.weight_decay > 0.0).then_some(WeightDecayConfig {
                penalty: self.weight_decay as f32,
            }))
            .with_gradient_clipping(clip)
            .init()
    }
}

/// Shuffled batches of training indices for one epoch; the order depends only on seed and epoch.
pub fn epoch_batches(n: usize, batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("shuffle-{epoch}")));
    idx.shuffle(&mut rng);
    // Drop a last tiny batch: BatchNorm statistics of 1-2 images are noise.
    idx.chunks(batch)
        .filter(|c| c.len() >= batch.min(n).div_ceil(2).max(2))
        .map(|c| c.to_vec())
        .collect()
}

/// Draws inverted-dropout masks for a model's head layers (None when p = 0).
pub fn draw_dropout(
    model: &Network,
    batch: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> HeadDropout {
    let head = model.head();
    let p = head.dropout;
    if p <= 0.0 {
        return HeadDropout::none(head.layers());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let masks = head
        .input_widths()
        .into_iter()
        .map(|d| {
            let v: Vec<f32> = (0..batch * d)
                .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
                .collect();
            Some(Tensor::<2>::from_data(
                TensorData::new(v, [batch, d]),
                device,
            ))
        })
        .collect();
    HeadDropout { masks }
}

/// A progress bar with rate and ETA (hidden when stderr is not a terminal).
pub fn progress(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Reports the end of an epoch: on the bar's message when it is drawn, else as a log line
/// (so logs of non-interactive runs still show progress).
pub fn epoch_done(bar: &ProgressBar, label: &str, epoch: usize, epochs: usize, msg: String) {
    let line = format!("{label}: epoch {}/{epochs} {msg}", epoch + 1);
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        // Keep every epoch's line above the bar: the validation curve stays readable.
        bar.println(line);
    }
}

/// Converts a loss tensor to f64, failing with a clear message on NaN or infinity.
pub fn finite_loss(loss: &Tensor<1>, stage: &str, epoch: usize, step: usize) -> Result<f64> {
    let v: f64 = loss.clone().into_scalar::<f32>() as f64;
    if !v.is_finite() {
        bail!(
            "{stage}: loss became {v} at epoch {epoch}, step {step}; lower the learning rate or beta"
        );
    }
    Ok(v)
}

/// Where a supervised stage trains and checkpoints, and who validates it.
pub struct Stage<'a> {
    /// Stage folder (checkpoints, training record).
    pub dir: &'a Path,
    /// Label for progress and errors.
    pub label: &'a str,
    /// Scores the network on the validation split after every epoch.
    pub validate: Option<&'a Validator<'a>>,
    /// Hash of everything upstream of this stage that determines its result besides its own
    /// settings (e.g. the data's identity, the network it starts from).
    pub upstream: &'a str,
}

/// Whether training on a backend other than flex was allowed explicitly.
static UNVERIFIED_TRAINING_ALLOWED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Allows training on backends whose training gradients are not verified (wgpu): the user's
/// explicit override (`--allow-unverified-training`, or `FAITHFUL_ALLOW_UNVERIFIED_TRAINING=1`).
pub fn allow_unverified_training(allowed: bool) {
    UNVERIFIED_TRAINING_ALLOWED.store(allowed, std::sync::atomic::Ordering::SeqCst);
}

/// Refuses to train on a backend other than flex unless allowed: burn 0.22.1's wgpu training
/// gradients disagreed with PyTorch's by up to 39% on an NVIDIA GPU while flex's agree to 3e-6
/// (README, GPU backend), so numbers trained there cannot be trusted yet. Inference and
/// evaluation are not affected.
pub fn ensure_verified_training_backend(device: &Device) -> Result<()> {
    let allowed = UNVERIFIED_TRAINING_ALLOWED.load(std::sync::atomic::Ordering::SeqCst)
        || std::env::var("FAITHFUL_ALLOW_UNVERIFIED_TRAINING").is_ok_and(|v| v == "1");
    if allowed || device.clone().inner() == Device::flex() {
        return Ok(());
    }
    bail!(
        "training on this backend ({device:?}) is refused: with burn 0.22.1, wgpu training \
         gradients disagreed with PyTorch's by up to 39% on an NVIDIA GPU (inference agrees), \
         so networks trained there cannot be trusted yet (README, GPU backend). Train with \
         --backend flex, check your GPU with `faithful --backend wgpu doctor`, or pass \
         --allow-unverified-training to train anyway"
    )
}

/// Trains a network from scratch on multi-hot labels (the teacher), resuming from a checkpoint
/// in `dir` if one matches `key`. `model` must live on an autodiff device. Returns the network
/// and its per-epoch record.
pub fn train_supervised(
    model: Network,
    data: &Dataset,
    norm: &Normalization,
    cfg: &TrainConfig,
    seed: u64,
    stage: &Stage,
) -> Result<(Network, Vec<EpochRecord>)> {
    train_supervised_until(model, data, norm, cfg, seed, stage, usize::MAX)
}

/// [`train_supervised`] that stops (as if interrupted) once `stop_after` epochs are done.
fn train_supervised_until(
    model: Network,
    data: &Dataset,
    norm: &Normalization,
    cfg: &TrainConfig,
    seed: u64,
    stage: &Stage,
    stop_after: usize,
) -> Result<(Network, Vec<EpochRecord>)> {
    let (dir, label) = (stage.dir, stage.label);
    cfg.validate(label)?;
    let device = model.devices()[0].clone();
    ensure_verified_training_backend(&device)?;
    let key = checkpoint::stage_key(&(cfg, seed, &model.arch(), "supervised", stage.upstream));
    let resumed = checkpoint::resume(model, cfg.optimizer(), dir, &key, &device)?;
    let (mut model, mut optim, mut history) = (resumed.model, resumed.optim, resumed.history);
    let start = history.len();
    let steps_per_epoch = epoch_batches(data.len(), cfg.batch_size, seed, 0).len();
    let epochs = cfg.epochs_for(steps_per_epoch);
    if epochs > cfg.epochs {
        eprintln!(
            "{label}: {epochs} epochs instead of {} to reach min_steps = {} ({steps_per_epoch} \
             steps per epoch)",
            cfg.epochs, cfg.min_steps
        );
    }
    let total = steps_per_epoch * epochs;
    let bar = progress(total as u64, label);
    bar.set_position((start * steps_per_epoch) as u64);
    for epoch in start..epochs.min(stop_after) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("{label}-epoch-{epoch}")));
        let mut sum = 0.0;
        let started = std::time::Instant::now();
        let batches = epoch_batches(data.len(), cfg.batch_size, seed, epoch);
        for (step, idx) in batches.iter().enumerate() {
            let lr = cfg.lr_at(epoch * steps_per_epoch + step, steps_per_epoch, total);
            let (x, y) = make_batch(data, idx, norm, cfg.augmenter(), &mut rng, &device);
            let drop = draw_dropout(&model, idx.len(), &mut rng, &device);
            let logits = model.head().forward(model.features(x), &drop);
            let loss = bce_with_logits(logits, y);
            sum += finite_loss(&loss, label, epoch, step)?;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc(1);
        }
        let rate = data.len() as f64 / started.elapsed().as_secs_f64();
        let loss = sum / batches.len().max(1) as f64;
        let record = epoch_record(epoch, loss, None, &model, stage.validate)?;
        epoch_done(
            &bar,
            label,
            epoch,
            epochs,
            format!("{}, {rate:.0} img/s", record.summary()),
        );
        history.push(record);
        checkpoint::save(&model, &optim, dir, &key, &history)?;
    }
    bar.finish_and_clear();
    Ok((model, history))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::VggArch;

    /// The largest l2 norm of a parameter tensor's change over one plain SGD step (lr 1) on a
    /// loss with huge gradients.
    fn largest_step(grad_clip: f64) -> f32 {
        let device = Device::flex().autodiff();
        let arch = VggArch {
            layout: "4,M,8,M".into(),
            num_classes: 3,
            input_size: 8,
            dropout: 0.0,
            ..VggArch::default()
        };
        let model = arch.init(&device, 1).unwrap();
        let cfg = TrainConfig {
            lr: 1.0,
            momentum: 0.0,
            weight_decay: 0.0,
            grad_clip,
            ..TrainConfig::default()
        };
        let x = Tensor::<4>::ones([2, 3, 8, 8], &device);
        let loss = model.forward(x).sum().mul_scalar(1e4);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let before = model.classifier.weight.val().inner();
        let after = cfg.optimizer().step(1.0, model, grads);
        let delta = after.classifier.weight.val().inner() - before;
        delta
            .powi_scalar(2)
            .sum()
            .sqrt()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()[0]
    }

    fn classifier_weights(model: &Network) -> Vec<f32> {
        model
            .as_vgg("test")
            .unwrap()
            .classifier
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }

    /// An interrupted stage resumed in a "new process" (a freshly built network, so fresh
    /// parameter ids) ends with exactly the weights of an uninterrupted one, because the SGD
    /// momentum is checkpointed too; without the saved momentum it would not.
    #[test]
    fn resuming_after_an_interruption_matches_an_uninterrupted_run() {
        let device = Device::flex().autodiff();
        let data = crate::data::synthetic::generate(&crate::data::synthetic::SyntheticConfig {
            size: 32,
            num_classes: 3,
            n_train: 24,
            n_val: 2,
            n_test: 2,
            ..Default::default()
        })
        .unwrap()
        .train;
        let norm = Normalization::of(&data);
        let arch = VggArch {
            layout: "4,M,8,M".into(),
            num_classes: 3,
            input_size: 32,
            ..VggArch::default()
        };
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 8,
            lr: 0.05,
            momentum: 0.9,
            ..TrainConfig::default()
        };
        let root = std::env::temp_dir().join(format!("faithful-resume-{}", std::process::id()));
        let run = |dir: &str, stop: usize| {
            let model: Network = arch.init(&device, 7).unwrap().into();
            let dir = root.join(dir);
            let stage = Stage {
                dir: &dir,
                label: "t",
                validate: None,
                upstream: "",
            };
            train_supervised_until(model, &data, &norm, &cfg, 3, &stage, stop)
                .unwrap()
                .0
        };
        let whole = classifier_weights(&run("whole", 3));
        run("resumed", 1);
        let resumed = classifier_weights(&run("resumed", 3));
        assert_eq!(
            whole, resumed,
            "resumed run differs from the uninterrupted one"
        );

        // A missing optimizer state is an error naming the file, not a silent restart
        // without momentum; so are a truncated model file and a hand-edited epoch count.
        let try_run = |dir: &str| {
            let model: Network = arch.init(&device, 7).unwrap().into();
            let dir = root.join(dir);
            let stage = Stage {
                dir: &dir,
                label: "t",
                validate: None,
                upstream: "",
            };
            train_supervised_until(model, &data, &norm, &cfg, 3, &stage, 3)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        run("no-momentum", 1);
        std::fs::remove_file(root.join("no-momentum").join("checkpoint.optim.bpk")).unwrap();
        let err = try_run("no-momentum").unwrap_err();
        assert!(
            err.contains("checkpoint.optim.bpk") && err.contains("delete"),
            "{err}"
        );

        run("truncated", 1);
        let model_file = root.join("truncated").join("checkpoint.safetensors");
        let bytes = std::fs::read(&model_file).unwrap();
        std::fs::write(&model_file, &bytes[..bytes.len() / 2]).unwrap();
        let err = try_run("truncated").unwrap_err();
        assert!(
            err.contains("checkpoint.safetensors") && err.contains("delete"),
            "{err}"
        );

        run("edited", 1);
        let state_file = root.join("edited").join("checkpoint.json");
        let text = std::fs::read_to_string(&state_file).unwrap();
        std::fs::write(
            &state_file,
            text.replace("\"epochs_done\":1", "\"epochs_done\":3"),
        )
        .unwrap();
        let err = try_run("edited").unwrap_err();
        assert!(err.contains("history.json") && err.contains("3"), "{err}");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn min_steps_raise_the_epochs_of_small_datasets_only() {
        let cfg = TrainConfig {
            epochs: 30,
            min_steps: 2500,
            ..TrainConfig::default()
        };
        // 900 images at batch 32: 28 steps per epoch -> ceil(2500 / 28) = 90 epochs
        assert_eq!(cfg.epochs_for(28), 90);
        // 3000 images: 93 steps per epoch, 30 epochs = 2790 steps already
        assert_eq!(cfg.epochs_for(93), 30);
        let off = TrainConfig {
            min_steps: 0,
            ..cfg
        };
        assert_eq!(off.epochs_for(28), 30);
    }

    #[test]
    fn warm_up_ramps_the_learning_rate_then_follows_the_schedule() {
        let cfg = TrainConfig {
            lr: 0.1,
            warmup_epochs: 2.0,
            schedule: Schedule::Constant,
            ..TrainConfig::default()
        };
        // 10 steps per epoch: 20 warm-up steps, step s at (s + 1) / 20 of the rate
        assert!((cfg.lr_at(0, 10, 100) - 0.005).abs() < 1e-12);
        assert!((cfg.lr_at(9, 10, 100) - 0.05).abs() < 1e-12);
        assert!((cfg.lr_at(19, 10, 100) - 0.1).abs() < 1e-12);
        assert!((cfg.lr_at(50, 10, 100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn gradient_clipping_bounds_each_parameter_step() {
        // Without clipping the classifier's step is the raw (huge) gradient; with clip 0.5 and
        // lr 1 its l2 norm is at most 0.5.
        assert!(largest_step(0.0) > 10.0);
        let clipped = largest_step(0.5);
        assert!(clipped <= 0.5 + 1e-4 && clipped > 0.4, "{clipped}");
        let bad = TrainConfig {
            grad_clip: -1.0,
            ..TrainConfig::default()
        };
        assert!(
            bad.validate("x")
                .unwrap_err()
                .to_string()
                .contains("grad_clip")
        );
    }
}
