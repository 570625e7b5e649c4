//! The shared fine-tuning loop: a compression method's task loss plus `beta` times an
//! attribution-matching regularizer, with the teacher frozen in evaluation mode.

use super::{
    EpochRecord, Normalization, TrainConfig, Validator, checkpoint, draw_dropout, epoch_batches,
    epoch_record, finite_loss, make_batch, progress,
};
use crate::attribution::closed_form::gradcam_weights;
use crate::attribution::one_hot;
use crate::compression::{Compression, StepHook};
use crate::data::Dataset;
use crate::matching::{
    MatchConfig, MatchInputs, MatchLayer, MatchTarget, Regularizer, WeightsGradient,
};
use crate::models::head::HeadPooling;
use crate::models::{HeadDropout, Network};
use crate::util::derive_seed;
use anyhow::{Result, bail};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

/// (sample index, class) pairs to match, from the teacher's logits (N, K).
pub fn match_pairs(teacher_logits: &[f32], k: usize, target: MatchTarget) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (n, row) in teacher_logits.chunks(k).enumerate() {
        let top = row
            .iter()
            .enumerate()
            .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
        match target {
            MatchTarget::Top1 => pairs.push((n, top)),
            MatchTarget::Predicted => {
                let before = pairs.len();
                pairs.extend(
                    row.iter()
                        .enumerate()
                        .filter(|(_, v)| **v > 0.0)
                        .map(|(j, _)| (n, j)),
                );
                if pairs.len() == before {
                    pairs.push((n, top));
                }
            }
        }
    }
    pairs
}

fn select_rows<const D: usize>(t: Tensor<D>, idx: &Tensor<1, Int>) -> Tensor<D> {
    t.select(0, idx.clone())
}

fn select_dropout(drop: &HeadDropout, idx: &Tensor<1, Int>) -> HeadDropout {
    HeadDropout {
        masks: drop
            .masks
            .iter()
            .map(|m| m.clone().map(|m| select_rows(m, idx)))
            .collect(),
    }
}

/// Everything one fine-tuning stage needs besides the networks and data.
#[derive(Clone, Copy)]
pub struct FineTuneSpec<'a> {
    /// Compression method (task loss).
    pub compression: &'a dyn Compression,
    /// Matching regularizer (with its strength).
    pub regularizer: &'a dyn Regularizer,
    /// Matching settings.
    pub matching: &'a MatchConfig,
    /// Optimisation settings.
    pub train: &'a TrainConfig,
    /// Seed of this stage.
    pub seed: u64,
    /// Label for progress and errors.
    pub label: &'a str,
}

/// One student of a lockstep fine-tuning run.
pub struct StudentRun<'a> {
    /// The student, on an autodiff device.
    pub model: Network,
    /// Its loss and settings.
    pub spec: FineTuneSpec<'a>,
    /// Its stage folder (checkpoints).
    pub dir: std::path::PathBuf,
    /// Hash of what the student starts from (teacher, earlier pruning round, data); part of
    /// the stage key, so a changed upstream stage retrains this one.
    pub upstream: String,
}

/// Fine-tunes `student` (autodiff device) against `teacher` (plain device, evaluation mode).
/// Resumes from a checkpoint in `dir` when one matches these settings.
pub fn fine_tune(
    student: Network,
    teacher: &Network,
    data: &Dataset,
    norm: &Normalization,
    spec: &FineTuneSpec,
    dir: &Path,
) -> Result<Network> {
    let run = StudentRun {
        model: student,
        spec: *spec,
        dir: dir.to_path_buf(),
        upstream: String::new(),
    };
    Ok(fine_tune_lockstep(vec![run], teacher, data, norm, None)?
        .remove(0)
        .0)
}

fn check_compatible(student: &Network, teacher: &Network, spec: &FineTuneSpec) -> Result<()> {
    spec.train.validate(spec.label)?;
    let (st, tt) = (
        student.arch().attribution_shape()?,
        teacher.arch().attribution_shape()?,
    );
    if st.1 != tt.1 {
        bail!(
            "{}: student and teacher attribution maps differ in size ({} vs {})",
            spec.label,
            st.1,
            tt.1
        );
    }
    let pooled_side = |net: &Network, side: usize| match net.head().pool {
        HeadPooling::Max { kernel } => side / kernel.max(1),
        HeadPooling::GlobalAverage => 1,
    };
    // a head that pools to 1x1 is matched at its last conv layer instead (see MatchLayer::Pool5)
    let (s_side, t_side) = (pooled_side(student, st.1), pooled_side(teacher, tt.1));
    if spec.matching.layer == MatchLayer::Pool5 && s_side >= 2 && t_side >= 2 && s_side != t_side {
        bail!(
            "{}: matching at pool5 needs both heads to pool to maps of the same side, got \
             {s_side}x{s_side} (student) and {t_side}x{t_side} (teacher)",
            spec.label
        );
    }
    Ok(())
}

/// Fine-tunes several students in lockstep: every student sees the same batches with the same
/// augmentation (a paired comparison), and the teacher runs once per batch for all of them.
/// All students share the first one's training settings and seed. Each student checkpoints
/// into its own folder after every epoch and resumes from it. Returns each student with its
/// per-epoch record (validated by `validate` when given).
pub fn fine_tune_lockstep(
    runs: Vec<StudentRun>,
    teacher: &Network,
    data: &Dataset,
    norm: &Normalization,
    validate: Option<&Validator>,
) -> Result<Vec<(Network, Vec<EpochRecord>)>> {
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    let (cfg, seed) = (first.spec.train, first.spec.seed);
    let device = first.model.devices()[0].clone();
    super::ensure_verified_training_backend(&device)?;
    let k = teacher.num_classes();
    let mut states = Vec::new();
    for mut run in runs {
        run.model = own_state(run.model);
        check_compatible(&run.model, teacher, &run.spec)?;
        if run.spec.train != cfg || run.spec.seed != seed {
            bail!(
                "{}: lockstep students must share training settings and seed",
                run.spec.label
            );
        }
        let key = checkpoint::stage_key(&(
            cfg,
            seed,
            &run.model.arch(),
            run.spec.compression.name(),
            run.spec.regularizer.name(),
            run.spec.regularizer.beta(),
            run.spec.matching,
            &run.upstream,
        ));
        // The hook sees the fresh student (e.g. its pruning masks), not a resumed checkpoint.
        let hook = run.spec.compression.step_hook(&run.model);
        let resumed = checkpoint::resume(run.model, cfg.optimizer(), &run.dir, &key, &device)?;
        states.push(State {
            model: resumed.model,
            done: resumed.history.len(),
            history: resumed.history,
            key,
            optim: resumed.optim,
            spec: run.spec,
            dir: run.dir,
            sums: (0.0, 0.0),
            hook,
        });
    }
    let steps_per_epoch = epoch_batches(data.len(), cfg.batch_size, seed, 0).len();
    let epochs = cfg.epochs_for(steps_per_epoch);
    let total = steps_per_epoch * epochs;
    let start = states.iter().map(|s| s.done).min().unwrap_or(0);
    let label = if states.len() == 1 {
        states[0].spec.label.to_string()
    } else {
        "students".to_string()
    };
    let bar = progress(total as u64, &label);
    bar.set_position((start * steps_per_epoch) as u64);
    for epoch in start..epochs {
        let mut data_rng =
            ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("data-epoch-{epoch}")));
        let mut rngs: Vec<ChaCha8Rng> = states
            .iter()
            .map(|s| {
                ChaCha8Rng::seed_from_u64(derive_seed(
                    seed,
                    &format!("{}-epoch-{epoch}", s.spec.label),
                ))
            })
            .collect();
        let started = std::time::Instant::now();
        let batches = epoch_batches(data.len(), cfg.batch_size, seed, epoch);
        for (step, idx) in batches.iter().enumerate() {
            let lr = cfg.lr_at(epoch * steps_per_epoch + step, steps_per_epoch, total);
            let aug = cfg.augmenter();
            let (x, y) = make_batch(data, idx, norm, aug, &mut data_rng, &device);
            // Teacher: evaluation mode on the plain device, constants for the students' losses.
            let t_feat = teacher.features(x.clone().inner());
            let t_logits = teacher.head_logits(t_feat.clone());
            let t_vals: Vec<f32> = t_logits
                .to_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("cannot read teacher logits: {e:?}"))?;
            let batch = Batch {
                x: &x,
                y: &y,
                t_feat: &t_feat,
                t_logits: &t_logits,
                t_vals: &t_vals,
            };
            // The students' steps are independent (each has its own graph, optimiser and
            // random stream), so they run on rayon's threads: at small sizes one network's ops
            // are too small to keep two cores busy. The numbers do not depend on the order.
            states
                .par_iter_mut()
                .zip(rngs.par_iter_mut())
                .filter(|(st, _)| st.trains_in(epoch))
                .try_for_each(|(st, rng)| {
                    // each student ramps its own beta (lockstep students may differ in matching)
                    let ramp = beta_ramp(
                        st.spec.matching.warmup_epochs,
                        epoch * steps_per_epoch + step,
                        steps_per_epoch,
                    );
                    student_step(st, teacher, &batch, k, lr, ramp, rng, (epoch, step))
                })?;
            bar.inc(1);
        }
        let nb = batches.len().max(1) as f64;
        let rate = data.len() as f64 / started.elapsed().as_secs_f64();
        let mut msg = format!("{rate:.0} img/s");
        let records: Vec<Option<EpochRecord>> = states
            .par_iter()
            .map(|st| {
                if !st.trains_in(epoch) {
                    return Ok(None);
                }
                let matched = (st.spec.regularizer.beta() > 0.0).then_some(st.sums.1 / nb);
                epoch_record(epoch, st.sums.0 / nb, matched, &st.model, validate).map(Some)
            })
            .collect::<Result<_>>()?;
        for (st, record) in states.iter_mut().zip(records) {
            let Some(record) = record else {
                continue;
            };
            msg.push_str(&format!("; {} {}", st.spec.label, record.summary()));
            st.history.push(record);
            st.sums = (0.0, 0.0);
            st.done = epoch + 1;
            checkpoint::save(&st.model, &st.optim, &st.dir, &st.key, &st.history)?;
        }
        super::epoch_done(&bar, &label, epoch, epochs, msg);
    }
    bar.finish_and_clear();
    Ok(states.into_iter().map(|s| (s.model, s.history)).collect())
}

struct State<'a> {
    model: Network,
    done: usize,
    history: Vec<EpochRecord>,
    key: String,
    optim: burn::optim::ModuleOptimizer,
    spec: FineTuneSpec<'a>,
    dir: std::path::PathBuf,
    sums: (f64, f64),
    hook: Option<StepHook>,
}

impl State<'_> {
    /// Whether the student trains in `epoch` (a resumed student may be ahead of the others).
    fn trains_in(&self, epoch: usize) -> bool {
        self.done <= epoch
    }
}

struct Batch<'b> {
    x: &'b Tensor<4>,
    y: &'b Tensor<2>,
    t_feat: &'b Tensor<4>,
    t_logits: &'b Tensor<2>,
    t_vals: &'b [f32],
}

#[allow(clippy::too_many_arguments)]
fn student_step(
    st: &mut State,
    teacher: &Network,
    b: &Batch,
    k: usize,
    lr: f64,
    ramp: f64,
    rng: &mut ChaCha8Rng,
    (epoch, step): (usize, usize),
) -> Result<()> {
    let spec = &st.spec;
    let device = b.x.device();
    let drop = draw_dropout(&st.model, b.x.dims()[0], rng, &device);
    let s_feat = st.model.features(b.x.clone());
    let s_logits = st.model.head().forward(s_feat.clone(), &drop);
    let task = spec
        .compression
        .task_loss(s_logits, b.t_logits.clone(), b.y.clone());
    let mut loss = task.clone();
    let beta = spec.regularizer.beta();
    if beta > 0.0 {
        let term = matching_term(
            &st.model,
            teacher,
            s_feat,
            b.t_feat.clone(),
            b.t_vals,
            k,
            &drop,
            spec,
            rng,
        );
        if let Some(term) = term {
            st.sums.1 += finite_loss(&term, spec.label, epoch, step)?;
            loss = loss + term.mul_scalar(beta * ramp);
        }
    }
    st.sums.0 += finite_loss(&task, spec.label, epoch, step)?;
    finite_loss(&loss, spec.label, epoch, step)?;
    let grads = GradientsParams::from_grads(loss.backward(), &st.model);
    st.model = st.optim.step(lr, st.model.clone(), grads);
    if let Some(hook) = &st.hook {
        st.model = hook(st.model.clone());
    }
    sync_running_state(&st.model);
    Ok(())
}

/// `model` with autodiff leaves and running state of its own. Clones of one network share
/// both, and lockstep students step on separate threads: their graphs would merge and one
/// student's BatchNorm statistics would mix into another's. The values and parameter ids are
/// kept (`valid` then `train`, burn's round trip through the inner backend).
fn own_state(model: Network) -> Network {
    model.valid().train()
}

/// Folds the step's running-state updates (BatchNorm statistics, quantization observers) into
/// each state's value before the student's next step, which may run on another thread. burn
/// keeps an update under the thread that made it, and a training forward on another thread
/// reads the value without it: statistics (and an observer's range, which the fake
/// quantization trains with) would depend on which thread took which step. `valid()` syncs
/// every running state in place; the copy it returns is dropped.
fn sync_running_state(model: &Network) {
    let _ = model.valid();
}

/// Fraction of beta in force at global step `step`: a linear ramp over `warmup_epochs` epochs,
/// reaching 1 at the end of the ramp (and 1 throughout without one).
pub fn beta_ramp(warmup_epochs: f64, step: usize, steps_per_epoch: usize) -> f64 {
    let ramp_steps = warmup_epochs * steps_per_epoch as f64;
    if ramp_steps <= 0.0 {
        return 1.0;
    }
    ((step + 1) as f64 / ramp_steps).min(1.0)
}

/// The un-scaled matching loss of one batch, or None for `none`.
#[allow(clippy::too_many_arguments)]
fn matching_term(
    student: &Network,
    teacher: &Network,
    s_feat: Tensor<4>,
    t_feat: Tensor<4>,
    t_logits: &[f32],
    k: usize,
    drop: &HeadDropout,
    spec: &FineTuneSpec,
    rng: &mut ChaCha8Rng,
) -> Option<Tensor<1>> {
    let device = s_feat.device();
    let input_side = student.arch().input_size();
    let pairs = match_pairs(t_logits, k, spec.matching.target);
    let rows: Vec<i64> = pairs.iter().map(|p| p.0 as i64).collect();
    let classes: Vec<usize> = pairs.iter().map(|p| p.1).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);
    let s_a = select_rows(s_feat, &idx);
    let t_a = select_rows(t_feat, &idx.clone().inner());
    let (s_w, t_w) = if spec.regularizer.needs_weights() {
        let target = one_hot(&classes, k, &device);
        let s_w = gradcam_weights(
            &student.head(),
            s_a.clone(),
            target.clone(),
            &select_dropout(drop, &idx),
        );
        let t_head = teacher.head();
        let t_w = gradcam_weights(
            &t_head,
            t_a.clone(),
            target.inner(),
            &HeadDropout::none(t_head.layers()),
        );
        (s_w, t_w)
    } else {
        let z = |c: usize| Tensor::<2>::zeros([rows.len(), c], &device);
        (z(s_a.dims()[1]), z(t_a.dims()[1]))
    };
    let s_w = match spec.matching.weights_gradient {
        WeightsGradient::Through => s_w,
        WeightsGradient::Stopped => s_w.detach(),
    };
    let (s_f, t_f) = match spec.matching.layer {
        MatchLayer::LastConv => (s_a, t_a),
        MatchLayer::Pool5 => {
            let (s_p, t_p) = (
                student.head().pool(s_a.clone()),
                teacher.head().pool(t_a.clone()),
            );
            // a global pool (ResNet, a global-max VGG head) leaves 1x1 maps, which carry no
            // attribution: match the map it pools instead
            let spatial = |t: &Tensor<4>| t.dims()[2] * t.dims()[3] > 1;
            if spatial(&s_p) && spatial(&t_p) {
                (s_p, t_p)
            } else {
                (s_a, t_a)
            }
        }
    };
    let inputs = MatchInputs {
        student_features: s_f,
        student_weights: s_w,
        teacher_features: t_f,
        teacher_weights: t_w,
        input_side,
    };
    let (ms, mt) = spec.regularizer.maps(&inputs, rng)?;
    Some(spec.regularizer.loss(ms, mt, spec.matching))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_pairs_take_the_top1_or_every_predicted_class() {
        // sample 0: logits (-1, 2, 0.5) -> top1 1, predicted {1, 2}
        // sample 1: all negative -> top1 = the largest (-0.1 at class 2); predicted falls back to it
        let logits = [-1.0, 2.0, 0.5, -3.0, -2.0, -0.1];
        assert_eq!(
            match_pairs(&logits, 3, MatchTarget::Top1),
            vec![(0, 1), (1, 2)]
        );
        assert_eq!(
            match_pairs(&logits, 3, MatchTarget::Predicted),
            vec![(0, 1), (0, 2), (1, 2)]
        );
        // ties go to the first class, as argmax
        assert_eq!(match_pairs(&[1.0, 1.0], 2, MatchTarget::Top1), vec![(0, 0)]);
    }

    #[test]
    fn beta_ramps_linearly_over_the_warmup() {
        // 2 warm-up epochs of 10 steps: 20 ramp steps, step s gives (s+1)/20.
        assert_eq!(beta_ramp(2.0, 0, 10), 0.05);
        assert_eq!(beta_ramp(2.0, 9, 10), 0.5);
        assert_eq!(beta_ramp(2.0, 19, 10), 1.0);
        assert_eq!(beta_ramp(2.0, 57, 10), 1.0);
        assert_eq!(beta_ramp(0.0, 0, 10), 1.0);
        assert_eq!(beta_ramp(0.5, 1, 4), 1.0);
    }

    #[test]
    fn beta_follows_the_regularizer() {
        let m = MatchConfig::default();
        let beta = |name: &str| crate::matching::by_name(name, &m).unwrap().beta();
        assert_eq!(
            (
                beta("none"),
                beta("ewa"),
                beta("swa"),
                beta("sswa"),
                beta("e2kd")
            ),
            (0.0, 100.0, 50.0, 50.0, 1.0)
        );
    }
}
