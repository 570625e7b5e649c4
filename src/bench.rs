//! Throughput benchmark: images/s of the teacher's training step and of a student's
//! fine-tuning step with each regularizer, so the cost of attribution matching is visible.

use crate::compression::kd::Distillation;
use crate::config::ExperimentConfig;
use crate::data::synthetic;
use crate::matching;
use crate::training::{self, FineTuneSpec, Normalization, TrainConfig};
use crate::util::derive_seed;
use anyhow::Result;
use burn::prelude::*;
use serde::Serialize;
use std::time::Instant;

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
        ..cfg.student_train.clone()
    };
    let steps = training::epoch_batches(data.len(), train.batch_size, 0, 0)
        .len()
        .max(1);
    let warm = data.subset(&(0..train.batch_size.min(data.len())).collect::<Vec<_>>());
    let mut rows = Vec::new();

    ad.seed(1);
    let teacher = cfg.teacher_arch().init(&ad)?;
    let teacher_cfg = TrainConfig {
        epochs: 1,
        ..cfg.teacher.train.clone()
    };
    let time_teacher = |d: &crate::data::Dataset, tag: &str| -> Result<f64> {
        let t0 = Instant::now();
        let _ = std::fs::remove_dir_all(&dir);
        training::train_supervised(
            teacher.clone(),
            d,
            &norm,
            &teacher_cfg,
            0,
            &dir.join(tag),
            tag,
        )?;
        Ok(t0.elapsed().as_secs_f64())
    };
    time_teacher(&warm, "warm")?;
    let secs = time_teacher(&data, "teacher")?;
    rows.push(row("teacher (supervised)", secs, data.len(), steps));
    let teacher = teacher.valid();

    let kd = Distillation { ..cfg.kd.clone() };
    for name in matching::ALL {
        let reg = matching::by_name(name, cfg.matching.sswa_mode, cfg.matching.drop)?;
        ad.seed(derive_seed(0, "bench-student"));
        let student = kd.make_student(&teacher, &ad)?;
        let spec = FineTuneSpec {
            compression: &kd,
            regularizer: reg.as_ref(),
            beta: cfg.matching.beta(name),
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
    Ok(rows)
}

use crate::compression::Compression;

fn row(stage: &str, secs: f64, images: usize, steps: usize) -> BenchRow {
    BenchRow {
        stage: stage.into(),
        images_per_second: images as f64 / secs,
        ms_per_step: 1e3 * secs / steps as f64,
    }
}
