//! Real-data sources run through the whole experiment with nothing but a config: a VOC-layout
//! directory (the loader's fixture) and the shipped dataset configs.

use burn::prelude::*;
use faithful::config::ExperimentConfig;
use faithful::report::ResultRow;
use std::path::PathBuf;

fn manifest(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Equal up to JSON's float round trip; NaN (no predicted pairs) equals NaN.
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-9
}

#[test]
fn a_voc_layout_directory_trains_and_evaluates_from_a_config_alone() {
    let dir = tempfile::tempdir().unwrap();
    faithful::data::voc::write_voc_fixture(dir.path()).unwrap();
    // The CI grid's tiny settings, pointed at the VOC tree, with the paper's augmentation.
    let ci = std::fs::read_to_string(manifest("configs/ci.toml")).unwrap();
    assert!(ci.contains("[teacher.train]\n"));
    let text = ci.replace(
        "[teacher.train]\n",
        "[teacher.train]\naugmentation = \"resized-crop\"\n",
    ) + &format!(
        "\n[dataset]\nsource = \"voc\"\nroot = {:?}\nsize = 32\n",
        dir.path().display().to_string()
    );
    // A misspelt key is rejected with its name.
    let typo = text.replace("size = 32\n", "size = 32\ndificult = \"exclude\"\n");
    let err = format!("{:#}", ExperimentConfig::from_toml(&typo).unwrap_err());
    assert!(err.contains("dificult"), "{err}");
    let mut cfg = ExperimentConfig::from_toml(&text).unwrap();
    cfg.compressions = vec!["kd".into(), "structured".into()];
    cfg.regularizers = vec!["none".into(), "swa".into()];
    cfg.validate().unwrap();
    assert_eq!(cfg.dataset.name(), "voc");
    assert_eq!(
        cfg.teacher.train.augmentation,
        faithful::training::AugmentKind::ResizedCrop
    );

    let out = dir.path().join("run");
    let outcome = faithful::experiment::run(&cfg, &out, &Device::flex()).unwrap();
    let rows: Vec<ResultRow> =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    // teacher + (kd, structured) x (none, swa)
    assert_eq!(rows.len(), 5);
    for (a, b) in rows.iter().zip(&outcome.rows) {
        assert_eq!(
            (&a.network, &a.compression, &a.regularizer),
            (&b.network, &b.compression, &b.regularizer)
        );
        assert!(same(a.map, b.map) && same(a.l2, b.l2), "{a:?} vs {b:?}");
    }
    for r in &rows {
        assert!(r.map.is_finite() && (0.0..=100.0).contains(&r.map), "{r:?}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("PASCAL VOC 2012"), "{md}");
    let info = faithful::explain::DatasetInfo::load(&out.join("dataset.json")).unwrap();
    assert_eq!(info.class_names.len(), 20);
    assert_eq!(info.class_names[0], "aeroplane");
    assert_eq!(info.class_names[19], "tvmonitor");
}

#[test]
fn the_shipped_dataset_configs_load_and_validate() {
    for name in ["configs/fashion-canvas.toml", "configs/voc.toml"] {
        let cfg =
            ExperimentConfig::load(&manifest(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_ne!(cfg.dataset.name(), "synthetic", "{name}");
        // what is saved next to results must load back to the same config
        let back = ExperimentConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(back, cfg, "{name}");
    }
}

#[test]
fn a_missing_dataset_directory_is_named_in_the_error() {
    let mut cfg = ExperimentConfig::from_toml(
        "[dataset]\nsource = \"voc\"\nroot = \"/nonexistent/VOCdevkit-here\"\nsize = 32\n",
    )
    .unwrap();
    cfg.seeds = vec![0];
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        faithful::experiment::run(&cfg, dir.path(), &Device::flex()).unwrap_err()
    );
    assert!(err.contains("/nonexistent/VOCdevkit-here"), "{err}");
}

#[test]
fn a_folder_rerun_on_other_data_retrains_everything_and_matches_a_fresh_run() {
    let mut cfg = ExperimentConfig::load(&manifest("configs/ci.toml")).unwrap();
    cfg.compressions = vec!["kd".into()];
    cfg.regularizers = vec!["none".into()];
    let dir = tempfile::tempdir().unwrap();
    faithful::experiment::run(&cfg, dir.path(), &Device::flex()).unwrap();
    let rows = |d: &std::path::Path| -> Vec<String> {
        let text = std::fs::read_to_string(d.join("results.json")).unwrap();
        let rows: Vec<faithful::report::ResultRow> = serde_json::from_str(&text).unwrap();
        rows.iter()
            .map(|r| format!("{} {} {}", r.map, r.f1, r.auc))
            .collect()
    };
    let before = rows(dir.path());
    // other data in the same folder: every stage's key changes, nothing stale is reused
    cfg.data.seed += 1;
    faithful::experiment::run(&cfg, dir.path(), &Device::flex()).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    faithful::experiment::run(&cfg, fresh.path(), &Device::flex()).unwrap();
    assert_eq!(rows(dir.path()), rows(fresh.path()));
    assert_ne!(rows(dir.path()), before);
}
