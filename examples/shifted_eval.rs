//! Evaluates a finished run's teacher and KD students of one seed on other images than the
//! run's test split: the test split drawn with other cue rates (does a student's mAP rest on
//! the cues?), or with `--train`, the first 2000 un-augmented training images (is a student
//! limited by data, training mAP well above test, or by its width, the two about equal?).
//! Prints one tab-separated row per network: mAP, F1, then AUC and pointing accuracy under the
//! paper's pair protocol and on every present pair, and cos against the teacher's maps.
//!
//! `shifted_eval RUN_DIR SEED CUE_PROB DECOY_PROB [--train]` (synthetic runs only; with
//! `--train` the cue rates are ignored).

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use faithful::config::ExperimentConfig;
use faithful::evaluation::{self, EvalConfig, PairSet};
use faithful::models::load_model;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: shifted_eval RUN_DIR SEED CUE_PROB DECOY_PROB [--train]");
    }
    let run_dir = PathBuf::from(&args[0]);
    let seed: u64 = args[1].parse().context("SEED")?;
    let cue: f32 = args[2].parse().context("CUE_PROB")?;
    let decoy: f32 = args[3].parse().context("DECOY_PROB")?;
    let on_train = args.get(4).is_some_and(|a| a == "--train");
    let cfg = ExperimentConfig::load(&run_dir.join("config.toml"))?;
    let device = Device::flex();
    let splits = cfg.dataset.load(&cfg.data)?;
    // the run's normalisation comes from its own training split
    let norm = cfg.input_norm.of(&splits.train);
    let images = if on_train {
        let n = splits.train.len().min(2000);
        splits.train.subset(&(0..n).collect::<Vec<_>>())
    } else {
        let mut shifted = cfg.data.clone();
        shifted.cue_prob = cue;
        shifted.false_cue_prob = decoy;
        shifted.validate()?;
        cfg.dataset.load(&shifted)?.test
    };
    let dir = run_dir.join(format!("seed-{seed}"));
    let teacher = load_model(&dir.join("teacher").join("model.safetensors"), &device)?;
    let method = faithful::attribution::by_name(&cfg.eval.attributions[0])?;
    let eval_cfg = EvalConfig {
        pairs: PairSet::Predicted,
        ..cfg.eval.clone()
    };
    let reference =
        evaluation::reference_maps(&teacher, method, &images, &norm, eval_cfg.batch_size)?;
    let mut names = vec!["teacher".to_string()];
    for r in 0..cfg.kd.replicates {
        for reg in &cfg.regularizers {
            names.push(faithful::experiment::student_label("kd", reg, r));
        }
    }
    println!("seed\tnetwork\tmAP\tF1\tAUC_pred\tpoint_pred\tAUC_present\tpoint_present\tcos");
    for name in names {
        let path = dir.join(&name).join("model.safetensors");
        let model = load_model(&path, &device)?;
        let e = evaluation::evaluate(&model, &images, &norm, method, Some(&reference), &eval_cfg)?;
        let (p, q) = (&e.protocols.predicted, &e.protocols.present);
        println!(
            "{seed}\t{name}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.3}",
            e.quality.map, e.quality.f1, p.auc, p.point_acc, q.auc, q.point_acc, q.cos
        );
    }
    Ok(())
}
