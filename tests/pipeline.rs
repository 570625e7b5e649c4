//! The demo pipeline end to end on a tiny config: outputs, determinism, resume, bad input.

use burn::prelude::*;
use faithful::config::ExperimentConfig;
use faithful::models::{load_model, save_model};
use faithful::report::ResultRow;
use std::path::PathBuf;

/// The shipped CI grid: every compression x every regularizer on a tiny dataset.
fn tiny() -> ExperimentConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ci.toml");
    ExperimentConfig::load(&path).unwrap()
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-pipeline-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn read_rows(dir: &std::path::Path) -> Vec<ResultRow> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn demo_writes_every_output_and_is_deterministic_and_resumable() {
    let cfg = tiny();
    let a = out_dir("a");
    let outcome = faithful::experiment::run(&cfg, &a, &Device::flex()).unwrap();
    for f in [
        "results.json",
        "results.md",
        "pairs.csv",
        "config.toml",
        "normalization.json",
        "dataset.json",
        "sweep.csv",
        "sweep.png",
        "overlays-kd.png",
        "overlays-structured.png",
        "overlays-unstructured.png",
    ] {
        assert!(a.join(f).exists(), "missing {f}");
    }
    let rows = read_rows(&a);
    // teacher + 4 KD students + 4 structured + 4 x 2 unstructured rounds
    assert_eq!(rows.len(), 1 + 4 + 4 + 8);
    assert_eq!(rows[0].regularizer, "-");
    let regs: Vec<&str> = rows[1..5].iter().map(|r| r.regularizer.as_str()).collect();
    assert_eq!(regs, vec!["none", "ewa", "swa", "sswa"]);
    let structured = &rows[5];
    assert_eq!(structured.compression, "structured");
    assert!(structured.params < rows[0].params && structured.macs < rows[0].macs);
    for r in rows.iter().filter(|r| r.compression == "unstructured") {
        let want = 1.0 - 0.8f64.powi(r.round as i32);
        assert!(
            (r.sparsity - want).abs() < 0.01,
            "round {} sparsity {}",
            r.round,
            r.sparsity
        );
    }
    let md = std::fs::read_to_string(a.join("results.md")).unwrap();
    assert!(md.contains("## kd") && md.contains("## structured") && md.contains("every round"));
    // the teacher compared with itself
    if rows[0].pairs > 0 {
        assert!((rows[0].cos - 1.0).abs() < 1e-6 && rows[0].l2.abs() < 1e-6);
    }
    // students are 1/2 width: about a quarter of the conv parameters
    assert!(
        rows[1].params * 3 < rows[0].params,
        "{} vs {}",
        rows[1].params,
        rows[0].params
    );
    assert!(rows.iter().all(|r| (0.0..=100.0).contains(&r.map)));
    assert!(outcome.table.contains("| sswa |"));
    // the saved config reproduces the run
    let saved = ExperimentConfig::load(&a.join("config.toml")).unwrap();
    assert_eq!(saved, cfg);

    // rerun into the finished folder: everything is loaded from checkpoints, same numbers
    let t0 = std::time::Instant::now();
    faithful::experiment::run(&cfg, &a, &Device::flex()).unwrap();
    let again = read_rows(&a);
    assert_eq!(
        again.iter().map(|r| r.map).collect::<Vec<_>>(),
        rows.iter().map(|r| r.map).collect::<Vec<_>>()
    );
    eprintln!("resumed run took {:.1}s", t0.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&a);
}

#[test]
fn models_round_trip_and_corrupt_files_give_errors_naming_the_file() {
    let dir = out_dir("model");
    let device = Device::flex();
    let model = tiny().teacher_arch().init(&device, 0).unwrap();
    let p = dir.join("m.safetensors");
    save_model(&model, &p).unwrap();
    let back = load_model(&p, &device).unwrap();
    let x = Tensor::<4>::ones([1, 3, 32, 32], &device);
    let (y1, y2) = (
        model.forward(x.clone()).into_data(),
        back.forward(x).into_data(),
    );
    assert_eq!(
        y1.try_to_vec::<f32>().unwrap(),
        y2.try_to_vec::<f32>().unwrap()
    );
    std::fs::write(&p, b"not a safetensors file").unwrap();
    let err = format!("{:#}", load_model(&p, &device).unwrap_err());
    assert!(err.contains("m.safetensors"), "{err}");
    std::fs::remove_file(faithful::models::arch_path(&p)).unwrap();
    let err = format!("{:#}", load_model(&p, &device).unwrap_err());
    assert!(err.contains("m.arch.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_instead_of_nan_results() {
    let mut cfg = tiny();
    cfg.teacher.train.lr = 1e30;
    cfg.teacher.train.epochs = 3;
    let dir = out_dir("nan");
    let err = format!(
        "{:#}",
        faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap_err()
    );
    assert!(
        err.contains("teacher") && err.contains("loss became"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Determinism as a user sees it: the same config and seed, run twice by the `faithful` binary
/// into fresh folders, give identical results. (Within one process, burn's CPU kernels may split
/// parallel reductions differently under load from concurrently running tests, so this is
/// checked across processes, as a user runs it.)
#[test]
fn the_same_config_and_seed_give_the_same_numbers() {
    let mut cfg = tiny();
    cfg.compressions = vec!["kd".into()];
    let dir = out_dir("det");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tiny.toml");
    std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
    let run = |name: &str| {
        let out = dir.join(name);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_faithful"))
            .args([
                "experiment",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .env("RAYON_NUM_THREADS", "2")
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        read_rows(&out)
    };
    let key = |r: &ResultRow| format!("{} {} {} {} {}", r.map, r.f1, r.auc, r.cos, r.l2);
    let (first, second) = (run("one"), run("two"));
    assert_eq!(
        first.iter().map(key).collect::<Vec<_>>(),
        second.iter().map(key).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kd.replicates = 2` trains a second student per regularizer from other initial weights,
/// leaves the first replicate's numbers exactly as a one-replicate run has them, and the
/// tables average a seed's replicates.
#[test]
fn replicates_add_students_without_changing_the_first() {
    let mut cfg = tiny();
    cfg.compressions = vec!["kd".into()];
    cfg.regularizers = vec!["none".into(), "swa".into()];
    let dir = out_dir("replicates");
    let one = faithful::experiment::run(&cfg, &dir.join("one"), &Device::flex()).unwrap();
    cfg.kd.replicates = 2;
    let two_dir = dir.join("two");
    faithful::experiment::run(&cfg, &two_dir, &Device::flex()).unwrap();
    let two = read_rows(&two_dir);
    let kd = |rows: &[ResultRow], replicate: usize| -> Vec<ResultRow> {
        rows.iter()
            .filter(|r| r.compression == "kd" && r.replicate == replicate)
            .cloned()
            .collect()
    };
    let (first, second) = (kd(&two, 0), kd(&two, 1));
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 2);
    let numbers = |r: &ResultRow| (r.regularizer.clone(), r.map, r.f1, r.auc, r.cos);
    assert_eq!(
        kd(&one.rows, 0).iter().map(numbers).collect::<Vec<_>>(),
        first.iter().map(numbers).collect::<Vec<_>>(),
        "adding a replicate changed the first one"
    );
    // other initial weights: other numbers (the replicates are not copies)
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.regularizer, b.regularizer);
        assert_ne!(a.map, b.map, "{} replicates are identical", a.regularizer);
    }
    for reg in ["none", "swa"] {
        assert!(two_dir.join("seed-0").join(format!("kd-{reg}-r1")).is_dir());
    }
    // the table's kd none mAP is the mean of the two replicates, over one seed
    let md = std::fs::read_to_string(two_dir.join("results.md")).unwrap();
    let mean = (first[0].map + second[0].map) / 2.0;
    let line = md
        .lines()
        .find(|l| l.contains("| kd | none |"))
        .expect("kd none row");
    assert!(
        line.contains(&format!("| 1 | {mean:.2} |")),
        "{line} (mean {mean:.2})"
    );
    let csv = std::fs::read_to_string(two_dir.join("pairs.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("replicate"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every shipped config parses and passes validation (a typo there would only surface at the
/// start of an hour-long run otherwise).
#[test]
fn every_shipped_config_loads_and_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            cfg.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} configs found");
}

/// The CI grid (KD only) with two attribution methods and ROAR: one row per network and method,
/// faithfulness scores on every row and the sanity check on the teacher's, a ROAR point per
/// (ranking, k) plus the unperturbed classifier; a second run reuses every ROAR cell and gives
/// the same points.
#[test]
fn several_methods_and_roar_run_in_the_grid_and_resume() {
    let mut cfg = tiny();
    cfg.compressions = vec!["kd".into()];
    cfg.eval.attributions = vec!["gradcam".into(), "lrp".into()];
    cfg.eval.faithfulness.pairs = 4;
    cfg.eval.faithfulness.sanity_pairs = 2;
    cfg.roar.enabled = true;
    cfg.roar.percents = vec![20, 60];
    cfg.roar.epochs = 1;
    let dir = out_dir("roar");
    faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap();
    let rows = read_rows(&dir);
    // teacher + 4 students, each under both methods
    assert_eq!(rows.len(), 2 * 5);
    for method in ["gradcam", "lrp"] {
        let of: Vec<&ResultRow> = rows.iter().filter(|r| r.attribution == method).collect();
        assert_eq!(of.len(), 5, "{method}");
        assert!(
            of.iter()
                .all(|r| r.perturbation.as_ref().is_some_and(|p| p.pairs == 4))
        );
        assert!(of[0].sanity.as_ref().is_some_and(|s| !s.is_empty()));
        assert!(of[1..].iter().all(|r| r.sanity.is_none()));
    }
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(md.contains("lrp AUC") && md.contains("Do the maps explain") && md.contains("ROAR"));
    let pairs = std::fs::read_to_string(dir.join("pairs.csv")).unwrap();
    assert!(pairs.lines().next().unwrap().contains("attribution"));
    let read_points = || -> Vec<faithful::evaluation::roar::RoarPoint> {
        serde_json::from_str(&std::fs::read_to_string(dir.join("roar.json")).unwrap()).unwrap()
    };
    let points = read_points();
    // the unperturbed classifier, then teacher, kd none, kd sswa and random at 20% and 60%
    assert_eq!(points.len(), 1 + 4 * 2);
    let rankings: Vec<&str> = points.iter().map(|p| p.ranking.as_str()).collect();
    assert_eq!(
        rankings,
        vec![
            "-", "teacher", "teacher", "kd none", "kd none", "kd sswa", "kd sswa", "random",
            "random"
        ]
    );
    assert!(dir.join("roar.png").exists());
    let cell = dir.join("seed-0/roar/teacher-k20/result.json");
    let written = std::fs::metadata(&cell).unwrap().modified().unwrap();
    faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap();
    assert_eq!(
        read_points(),
        points,
        "resumed ROAR cells give the same points"
    );
    let again = std::fs::metadata(&cell).unwrap().modified().unwrap();
    assert_eq!(written, again, "a finished ROAR cell was redone");
    let _ = std::fs::remove_dir_all(&dir);
}
