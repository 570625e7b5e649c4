//! Trains several KD students of one seed in lockstep against a finished run's teacher, each
//! with its own regularizer and matching settings, and prints their test mAP and attribution
//! metrics under both pair protocols. The teacher's forward pass dominates a /8 student step,
//! so a dozen variants cost little more than the demo's four students; this is how the demo's
//! matching defaults were compared (README, "How these defaults were reached").
//!
//! `matching_variants RUN_DIR SEED OUT_DIR VARIANT...`, a variant being
//! `label=regularizer[,key=value...]` with keys `beta` (this regularizer's beta), `scale`
//! (`paper-map` / `per-position`), `warmup` (epochs), `drop` (SSWA), `dropout` (the
//! student's head dropout) and `init` (N > 0: the student starts from the N-th other initial
//! weights of this seed, the weights of the pipeline's replicate N under `kd.replicates`, so
//! variants sharing an `init` are paired replicates). A variant labelled
//! like the demo's student (`none`, `ewa`, `swa`, `sswa`) with no keys draws the demo's random
//! numbers, so it reproduces that student exactly.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use faithful::compression::Compression;
use faithful::compression::kd::{Distillation, student_init_seed};
use faithful::config::ExperimentConfig;
use faithful::evaluation::{self, EvalConfig, PairSet};
use faithful::matching::{self, BetaScale, MatchConfig};
use faithful::models::{Network, load_model};
use faithful::training::{FineTuneSpec, StudentRun, fine_tune_lockstep};
use faithful::util::derive_seed;
use std::path::PathBuf;

struct Variant {
    label: String,
    regularizer: String,
    matching: MatchConfig,
    /// The student's head dropout, where it differs from the teacher's.
    dropout: Option<f64>,
    /// Which initial weights of the seed the student starts from (0: the demo's).
    init: usize,
}

fn parse_variant(text: &str, base: &MatchConfig) -> Result<Variant> {
    let (label, rest) = text
        .split_once('=')
        .with_context(|| format!("variant '{text}': expected label=regularizer[,key=value]"))?;
    let mut parts = rest.split(',');
    let regularizer = parts.next().unwrap_or_default().to_string();
    let mut matching = base.clone();
    let mut dropout = None;
    let mut init = 0;
    for kv in parts {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("variant '{text}': '{kv}' is not key=value"))?;
        match key {
            "beta" => {
                let beta: f64 = value.parse()?;
                matching.beta_ewa = beta;
                matching.beta_swa = beta;
            }
            "scale" => {
                matching.beta_scale = match value {
                    "paper-map" => BetaScale::PaperMap,
                    "per-position" => BetaScale::PerPosition,
                    other => bail!("variant '{text}': unknown scale '{other}'"),
                }
            }
            "warmup" => matching.warmup_epochs = value.parse()?,
            "drop" => matching.drop = value.parse()?,
            "dropout" => dropout = Some(value.parse()?),
            "init" => init = value.parse()?,
            other => bail!("variant '{text}': unknown key '{other}'"),
        }
    }
    Ok(Variant {
        label: label.to_string(),
        regularizer,
        matching,
        dropout,
        init,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: matching_variants RUN_DIR SEED OUT_DIR VARIANT...");
    }
    let run_dir = PathBuf::from(&args[0]);
    let seed: u64 = args[1].parse()?;
    let out_dir = PathBuf::from(&args[2]);
    let cfg = ExperimentConfig::load(&run_dir.join("config.toml"))?;
    let variants = args[3..]
        .iter()
        .map(|v| parse_variant(v, &cfg.matching))
        .collect::<Result<Vec<_>>>()?;
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let splits = cfg.dataset.load(&cfg.data)?;
    let norm = cfg.input_norm.of(&splits.train);
    let teacher = load_model(
        &run_dir
            .join(format!("seed-{seed}"))
            .join("teacher")
            .join("model.safetensors"),
        &device,
    )?;
    let method = cfg.method("kd")?;
    let stage = method.stages()?.remove(0);
    let regs = variants
        .iter()
        .map(|v| matching::by_name(&v.regularizer, &v.matching))
        .collect::<Result<Vec<_>>>()?;
    let labels: Vec<String> = variants.iter().map(|v| format!("kd-{}", v.label)).collect();
    let train = cfg.student_train.clone();
    let mut runs = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        // the pipeline's replicate `init` (kd.replicates) starts from the same weights
        let init_seed = student_init_seed(seed, v.init);
        let student = match v.dropout {
            None => stage.compression.make_student(&teacher, &ad, init_seed)?,
            Some(p) => Distillation {
                student_dropout: Some(p),
                ..cfg.kd.clone()
            }
            .make_student(&teacher, &ad, init_seed)?,
        };
        runs.push(StudentRun {
            model: student,
            spec: FineTuneSpec {
                compression: stage.compression.as_ref(),
                regularizer: regs[i].as_ref(),
                matching: &v.matching,
                train: &train,
                seed: derive_seed(seed, "kd-0"),
                label: &labels[i],
            },
            dir: out_dir.join(&labels[i]),
            upstream: String::new(),
        });
    }
    let tuned = fine_tune_lockstep(runs, &teacher, &splits.train, &norm, None)?;
    let eval_cfg = EvalConfig {
        pairs: PairSet::Predicted,
        ..cfg.eval.clone()
    };
    let method = faithful::attribution::by_name(&cfg.eval.attributions[0])?;
    let reference =
        evaluation::reference_maps(&teacher, method, &splits.test, &norm, eval_cfg.batch_size)?;
    // the teacher's own maps are the reference maps: score them without computing them again
    let teacher_maps: Vec<Vec<f32>> = evaluation::ground_truth_pairs(&splits.test)
        .iter()
        .map(|pair| reference[pair].clone())
        .collect();
    let teacher_eval = evaluation::evaluate_maps(
        &teacher,
        &splits.test,
        &norm,
        &teacher_maps,
        Some(&reference),
        &eval_cfg,
    )?;
    let evaluate_student = |model: &Network| {
        evaluation::evaluate(
            model,
            &splits.test,
            &norm,
            method,
            Some(&reference),
            &eval_cfg,
        )
    };
    println!(
        "seed\tvariant\tmAP\tF1\tAUC_pred\tpoint_pred\tpairs_pred\tAUC_present\tpoint_present\tcos"
    );
    let row = |label: &str, e: &evaluation::Evaluation| {
        let (p, q) = (&e.protocols.predicted, &e.protocols.present);
        println!(
            "{seed}\t{label}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{}\t{:.2}\t{:.2}\t{:.3}",
            e.quality.map, e.quality.f1, p.auc, p.point_acc, p.pairs, q.auc, q.point_acc, q.cos
        );
    };
    row("teacher", &teacher_eval);
    for ((model, _), v) in tuned.into_iter().zip(&variants) {
        row(&v.label, &evaluate_student(&model.valid())?);
    }
    Ok(())
}
