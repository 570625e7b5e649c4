//! Nothing fails silently: a network that predicts nothing and a teacher stuck at chance are
//! reported in results.json and results.md; changed upstream settings retrain what depends on
//! them.

use burn::prelude::*;
use faithful::config::ExperimentConfig;
use faithful::evaluation::health::{self, WarningKind};
use faithful::report::ResultRow;
use std::path::{Path, PathBuf};

fn tiny() -> ExperimentConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ci.toml");
    let mut cfg = ExperimentConfig::load(&path).unwrap();
    cfg.compressions = vec!["kd".into()];
    cfg
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-health-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn read_rows(dir: &Path) -> Vec<ResultRow> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

fn kinds(r: &ResultRow) -> Vec<WarningKind> {
    r.warnings.iter().map(|w| w.kind).collect()
}

#[test]
fn a_teacher_stuck_at_chance_is_reported_in_the_results_and_the_log_record() {
    let mut cfg = tiny();
    // A learning rate this small leaves the network where it started: at chance, loss flat.
    cfg.teacher.train.lr = 1e-9;
    cfg.teacher.train.epochs = 3;
    cfg.teacher.train.augment = false;
    cfg.regularizers = vec!["none".into()];
    let dir = out_dir("chance");
    faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap();
    let rows = read_rows(&dir);
    let teacher = &rows[0];
    assert_eq!(teacher.history.len(), 3, "one record per epoch");
    assert!(teacher.history.iter().all(|e| e.val_map.is_finite()));
    let k = kinds(teacher);
    assert!(k.contains(&WarningKind::FlatLoss), "{:?}", teacher.warnings);
    assert!(k.contains(&WarningKind::AtChance), "{:?}", teacher.warnings);
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(md.contains("WARNINGS") && md.contains("at chance"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_network_that_predicts_nothing_is_reported() {
    let cfg = tiny();
    let splits = cfg.dataset.load(&cfg.data).unwrap();
    let device = Device::flex();
    let model = cfg.teacher_arch().init(&device, 0).unwrap();
    let faithful::models::Network::Vgg(mut model) = model else {
        panic!("the tiny config is a VGG")
    };
    // Every logit pushed far below 0: no class is ever predicted present.
    let bias = model.classifier.bias.take().unwrap();
    model.classifier.bias = Some(bias.map(|b| b.ones_like().mul_scalar(-1e3)));
    let model = faithful::models::Network::Vgg(model);
    let norm = faithful::training::Normalization::of(&splits.train);
    let method = faithful::attribution::by_name("gradcam").unwrap();
    let ev = faithful::evaluation::evaluate(&model, &splits.test, &norm, method, None, &cfg.eval)
        .unwrap();
    assert_eq!(ev.quality.positive_rate, 0.0);
    assert_eq!(ev.protocols.predicted.pairs, 0);
    assert!(
        ev.protocols.present.pairs > 0,
        "present pairs do not depend on predictions"
    );
    let chance = health::chance_map(&splits.test, cfg.eval.map_variant).unwrap();
    let warnings = health::check(&ev.quality, chance, &[]);
    assert!(
        warnings
            .iter()
            .any(|w| w.kind == WarningKind::PredictsNothing),
        "{warnings:?}"
    );
}

#[test]
fn a_changed_teacher_retrains_its_students_and_matches_a_fresh_run() {
    let mut cfg = tiny();
    cfg.regularizers = vec!["none".into(), "swa".into()];
    let dir = out_dir("stale");
    faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap();
    let before = read_rows(&dir);
    cfg.teacher.train.epochs += 1;
    faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap();
    let changed = read_rows(&dir);
    let fresh_dir = out_dir("fresh");
    faithful::experiment::run(&cfg, &fresh_dir, &Device::flex()).unwrap();
    let fresh = read_rows(&fresh_dir);
    let key = |r: &ResultRow| format!("{} {} {} {}", r.map, r.f1, r.auc, r.l2);
    let keys = |rows: &[ResultRow]| rows.iter().map(key).collect::<Vec<_>>();
    assert_eq!(keys(&changed), keys(&fresh), "stale students were reused");
    assert_ne!(
        keys(&before)[1..],
        keys(&changed)[1..],
        "the change made no difference"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh_dir);
}
