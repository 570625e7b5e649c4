//! Throughput benchmark: images/s of the teacher's training step and of a student's
//! fine-tuning step with each regularizer, so the cost of attribution matching is visible.

use crate::attribution::gradcam::cam_from_weights;
use crate::attribution::one_hot;
use crate::compression::{Compression, bce_with_logits};
use crate::config::ExperimentConfig;
use crate::data::synthetic;
use crate::matching;
use crate::models::{HeadDropout, VggArch};
use crate::training::{self, FineTuneSpec, Normalization, TrainConfig};
use crate::util::derive_seed;
use crate::util::seeded_random;
use anyhow::Result;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use std::time::Instant;

pub mod compare;

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// What was timed.
    pub stage: String,
    /// Images per second (training steps, including batch preparation).
    pub images_per_second: f64,
    /// Milliseconds per step.
    pub ms_per_step: f64,
}

/// Times one epoch over `images` images (after a short warm-up) for the teacher and for a
/// student with each regularizer, using the architectures of `cfg`.
pub fn run(cfg: &ExperimentConfig, images: usize, device: &Device) -> Result<Vec<BenchRow>> {
    let mut data_cfg = cfg.data.clone();
    data_cfg.n_train = images;
    data_cfg.n_val = 1;
    data_cfg.n_test = 1;
    let data = synthetic::generate(&data_cfg)?.train;
    let norm = Normalization::of(&data);
    let ad = device.clone().autodiff();
    let dir = std::env::temp_dir().join(format!("faithful-bench-{}", std::process::id()));
    let train = TrainConfig {
        epochs: 1,
        min_steps: 0,
        warmup_epochs: 0.0,
        ..cfg.student_train.clone()
    };
    let steps = training::epoch_batches(data.len(), train.batch_size, 0, 0)
        .len()
        .max(1);
    let warm = data.subset(&(0..train.batch_size.min(data.len())).collect::<Vec<_>>());
    let mut rows = Vec::new();

    let teacher = cfg.teacher_arch().init(&ad, 1)?;
    // exactly one timed epoch: no step budget, no warm-up
    let teacher_cfg = TrainConfig {
        epochs: 1,
        min_steps: 0,
        warmup_epochs: 0.0,
        ..cfg.teacher.train.clone()
    };
    let time_teacher = |d: &crate::data::Dataset, tag: &str| -> Result<f64> {
        let t0 = Instant::now();
        let _ = std::fs::remove_dir_all(&dir);
        let stage_dir = dir.join(tag);
        let stage = training::Stage {
            dir: &stage_dir,
            label: tag,
            validate: None,
            upstream: "",
        };
        training::train_supervised(teacher.clone(), d, &norm, &teacher_cfg, 0, &stage)?;
        Ok(t0.elapsed().as_secs_f64())
    };
    time_teacher(&warm, "warm")?;
    let secs = time_teacher(&data, "teacher")?;
    rows.push(row("teacher (supervised)", secs, data.len(), steps));
    let teacher = teacher.valid();

    let kd = &cfg.kd;
    for name in matching::PAPER {
        let reg = matching::by_name(name, &cfg.matching)?;
        let student = kd.make_student(&teacher, &ad, derive_seed(0, "bench-student"))?;
        let spec = FineTuneSpec {
            compression: kd,
            regularizer: reg.as_ref(),
            matching: &cfg.matching,
            train: &train,
            seed: 0,
            label: name,
        };
        let _ = std::fs::remove_dir_all(&dir);
        training::fine_tune(
            student.clone(),
            &teacher,
            &warm,
            &norm,
            &spec,
            &dir.join("w"),
        )?;
        let t0 = Instant::now();
        training::fine_tune(student, &teacher, &data, &norm, &spec, &dir.join(name))?;
        let secs = t0.elapsed().as_secs_f64();
        rows.push(row(
            &format!("student kd + {name}"),
            secs,
            data.len(),
            steps,
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows.extend(attribution_throughput(
        &teacher,
        &data,
        &norm,
        cfg.eval.batch_size,
    )?);
    Ok(rows)
}

/// Maps per second of every registered attribution method on `model` (evaluation mode), over
/// up to 256 images of `data` in batches of `batch` (after a one-batch warm-up).
pub fn attribution_throughput(
    model: &crate::models::Network,
    data: &crate::data::Dataset,
    norm: &Normalization,
    batch: usize,
) -> Result<Vec<BenchRow>> {
    let images = data.len().min(256);
    let pairs: Vec<(usize, usize)> = (0..images).map(|i| (i, i % data.num_classes())).collect();
    let mut rows = Vec::new();
    for method in crate::attribution::REGISTRY {
        let warm = &pairs[..batch.min(pairs.len())];
        crate::evaluation::attribution_maps(model, *method, data, norm, warm, batch)?;
        let t0 = Instant::now();
        crate::evaluation::attribution_maps(model, *method, data, norm, &pairs, batch)?;
        let secs = t0.elapsed().as_secs_f64();
        rows.push(row(
            &format!("attribution {} (maps)", method.name()),
            secs,
            images,
            images.div_ceil(batch.max(1)),
        ));
    }
    Ok(rows)
}

/// The reference fixture's network (conv 32-64-128-256, pool, fc 256, fc 20) at batch 32 on
/// 64x64 inputs: median ms of a plain BCE training step and of a step whose loss also contains
/// the closed-form Grad-CAM (`BCE + 50 mean(cam * mask)`). The PyTorch numbers for the same
/// network and steps (double backprop) are in `../shared/reference/README.md`.
pub fn fixture_steps(device: &Device, iterations: usize) -> Result<Vec<BenchRow>> {
    let ad = device.clone().autodiff();
    let arch = VggArch::reference_fixture();
    let mut model = arch.init(&ad, 0)?;
    let x = seeded_random([32, 3, 64, 64], Distribution::Normal(0.0, 1.0), &ad, 0);
    let y = seeded_random([32, 20], Distribution::Uniform(0.0, 1.0), &ad, 1)
        .greater_elem(0.5)
        .float();
    let mask = seeded_random([32, 8, 8], Distribution::Uniform(0.0, 1.0), &ad, 2);
    let mut optim = TrainConfig {
        momentum: 0.9,
        weight_decay: 5e-4,
        ..TrainConfig::default()
    }
    .optimizer();
    let mut rows = Vec::new();
    for with_cam in [false, true] {
        let mut times = Vec::new();
        for i in 0..iterations + 3 {
            let t0 = Instant::now();
            let a = model.features(x.clone());
            let head = model.head_view();
            let mut loss = bce_with_logits(
                head.forward(a.clone(), &HeadDropout::none(head.layers())),
                y.clone(),
            );
            if with_cam {
                let w = crate::attribution::closed_form::gradcam_weights(
                    &head,
                    a.clone(),
                    one_hot(&[3; 32], 20, &ad),
                    &HeadDropout::none(2),
                );
                loss = loss
                    + (cam_from_weights(a, w.div_scalar(64.0)) * mask.clone())
                        .mean()
                        .mul_scalar(50.0);
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
            let _ = model.classifier.weight.val().into_data(); // wait for the step to finish
            if i >= 3 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[times.len() / 2];
        let stage = if with_cam {
            "fixture net: Grad-CAM-loss step (closed form)"
        } else {
            "fixture net: plain step"
        };
        rows.push(BenchRow {
            stage: stage.into(),
            images_per_second: 32.0 / median,
            ms_per_step: 1e3 * median,
        });
    }
    Ok(rows)
}

fn row(stage: &str, secs: f64, images: usize, steps: usize) -> BenchRow {
    BenchRow {
        stage: stage.into(),
        images_per_second: images as f64 / secs,
        ms_per_step: 1e3 * secs / steps as f64,
    }
}
