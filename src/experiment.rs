//! The knowledge-distillation experiment end to end: data -> teacher -> one student per
//! regularizer -> evaluation -> report. Every stage checkpoints into the output folder, so
//! running the same command on the same folder resumes where it stopped.

use crate::attribution::{self, Attribution};
use crate::compression::Compression;
use crate::config::ExperimentConfig;
use crate::data::Splits;
use crate::data::synthetic;
use crate::evaluation::{self, MapSet, ground_truth_pairs};
use crate::matching;
use crate::models::{Vgg, save_model};
use crate::report::{self, ResultRow, overlay};
use crate::training::{self, FineTuneSpec, Normalization, StudentRun};
use crate::util::{derive_seed, write_atomic};
use anyhow::{Context, Result};
use burn::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a finished experiment leaves behind.
#[derive(Debug)]
pub struct Outcome {
    /// One row per network and seed.
    pub rows: Vec<ResultRow>,
    /// The Markdown results table.
    pub table: String,
    /// The output folder.
    pub out: PathBuf,
}

/// A trained network and what is needed to report it.
struct Trained {
    name: String,
    regularizer: String,
    model: Vgg,
    seconds: f64,
}

/// Runs the experiment described by `cfg` into `out` on `device` (a plain device; autodiff is
/// enabled internally for training).
pub fn run(cfg: &ExperimentConfig, out: &Path, device: &Device) -> Result<Outcome> {
    cfg.validate()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    eprintln!("generating the synthetic dataset ...");
    let splits = synthetic::generate(&cfg.data)?;
    for d in [&splits.train, &splits.val, &splits.test] {
        d.validate()?;
    }
    let norm = Normalization::of(&splits.train);
    write_atomic(
        &out.join("normalization.json"),
        serde_json::to_string_pretty(&norm)?.as_bytes(),
    )?;
    let method = attribution::by_name(&cfg.eval.attribution)?;
    let mut rows = Vec::new();
    let mut pairs_csv = String::from(report::PAIRS_CSV_HEADER);
    for &seed in &cfg.seeds {
        let seed_dir = out.join(format!("seed-{seed}"));
        let trained = train_all(cfg, &splits, &norm, seed, &seed_dir, device)?;
        let teacher = &trained[0].model;
        eprintln!("evaluating (seed {seed}) ...");
        let reference =
            evaluation::reference_maps(teacher, method, &splits.test, &norm, cfg.eval.batch_size)?;
        for t in &trained {
            let (scores, pairs) = evaluation::evaluate(
                &t.model,
                &splits.test,
                &norm,
                method,
                Some(&reference),
                &cfg.eval,
            )?;
            let compression = if t.regularizer == "-" { "none" } else { "kd" };
            let mut row = ResultRow::new(&t.name, compression, &t.regularizer, seed, &scores);
            row.params = t.model.params();
            row.macs = t.model.macs();
            row.train_seconds = t.seconds;
            pairs_csv.push_str(&report::pairs_csv(&label(t), seed, &pairs));
            rows.push(row);
        }
        if seed == cfg.seeds[0] {
            draw_overlays(cfg, &trained, &splits, &norm, method, &reference, out)?;
        }
        report::write_json(&rows, &out.join("results.json"))?;
    }
    write_atomic(&out.join("pairs.csv"), pairs_csv.as_bytes())?;
    let table = report::markdown_table(&rows);
    write_atomic(
        &out.join("results.md"),
        results_markdown(cfg, &table).as_bytes(),
    )?;
    Ok(Outcome {
        rows,
        table,
        out: out.to_path_buf(),
    })
}

fn label(t: &Trained) -> String {
    if t.regularizer == "-" {
        format!("teacher {}", t.name)
    } else {
        format!("{} {}", t.name, t.regularizer)
    }
}

fn network_name(model: &Vgg) -> String {
    format!("{}/{}", model.arch.layout, model.arch.width_divisor)
}

/// Trains (or resumes) the teacher and one student per regularizer; index 0 is the teacher.
fn train_all(
    cfg: &ExperimentConfig,
    splits: &Splits,
    norm: &Normalization,
    seed: u64,
    dir: &Path,
    device: &Device,
) -> Result<Vec<Trained>> {
    let ad = device.clone().autodiff();
    ad.seed(derive_seed(seed, "teacher-init"));
    let start = Instant::now();
    let teacher = cfg.teacher_arch().init(&ad)?;
    let teacher = training::train_supervised(
        teacher,
        &splits.train,
        norm,
        &cfg.teacher.train,
        derive_seed(seed, "teacher"),
        &dir.join("teacher"),
        "teacher",
    )?;
    save_model(&teacher, &dir.join("teacher").join("model.safetensors"))?;
    let teacher = teacher.valid();
    let mut trained = vec![Trained {
        name: network_name(&teacher),
        regularizer: "-".into(),
        model: teacher.clone(),
        seconds: start.elapsed().as_secs_f64(),
    }];
    let regs = cfg
        .regularizers
        .iter()
        .map(|r| matching::by_name(r, cfg.matching.sswa_mode, cfg.matching.drop))
        .collect::<Result<Vec<_>>>()?;
    let stages: Vec<String> = cfg.regularizers.iter().map(|r| format!("kd-{r}")).collect();
    let start = Instant::now();
    let mut runs = Vec::new();
    for ((reg_name, reg), stage) in cfg.regularizers.iter().zip(&regs).zip(&stages) {
        // The same initial student for every regularizer: the comparison is paired.
        ad.seed(derive_seed(seed, "student-init"));
        let model = cfg.kd.make_student(&teacher, &ad)?;
        let spec = FineTuneSpec {
            compression: &cfg.kd,
            regularizer: reg.as_ref(),
            beta: cfg.matching.beta(reg_name),
            matching: &cfg.matching,
            train: &cfg.student_train,
            seed: derive_seed(seed, "student"),
            label: stage,
        };
        runs.push(StudentRun {
            model,
            spec,
            dir: dir.join(stage),
        });
    }
    let students = training::fine_tune_lockstep(runs, &teacher, &splits.train, norm)?;
    // Students train together; each is charged an equal share of the wall time.
    let share = start.elapsed().as_secs_f64() / students.len().max(1) as f64;
    for ((student, reg_name), stage) in students.into_iter().zip(&cfg.regularizers).zip(&stages) {
        save_model(&student, &dir.join(stage).join("model.safetensors"))?;
        let student = student.valid();
        trained.push(Trained {
            name: network_name(&student),
            regularizer: reg_name.clone(),
            model: student,
            seconds: share,
        });
    }
    Ok(trained)
}

/// One overlay row per chosen test pair: image, then each network's map with the mask outline
/// and the map's maximum marked. Pairs are chosen by correctness alone, never by how the maps
/// look: no cherry-picking.
fn draw_overlays(
    cfg: &ExperimentConfig,
    trained: &[Trained],
    splits: &Splits,
    norm: &Normalization,
    method: &dyn Attribution,
    reference: &MapSet,
    out: &Path,
) -> Result<()> {
    let test = &splits.test;
    let k = test.num_classes();
    let mut logits = Vec::new();
    for t in trained {
        logits.push(evaluation::predict(
            &t.model,
            test,
            norm,
            cfg.eval.batch_size,
        )?);
    }
    // Pairs the teacher gets right, those that most networks get right first (test order
    // within ties): the first overlays show networks that are all right, as the paper's figures.
    let mut candidates: Vec<((usize, usize), usize)> = ground_truth_pairs(test)
        .into_iter()
        .filter(|&(i, c)| logits[0][i * k + c] > 0.0)
        .map(|(i, c)| ((i, c), logits.iter().filter(|l| l[i * k + c] > 0.0).count()))
        .collect();
    candidates.sort_by_key(|&(_, right)| std::cmp::Reverse(right));
    let chosen: Vec<(usize, usize)> = candidates
        .into_iter()
        .take(cfg.report.overlays)
        .map(|(p, _)| p)
        .collect();
    if chosen.is_empty() {
        return Ok(());
    }
    let mut maps: Vec<Vec<Vec<f32>>> = vec![chosen.iter().map(|p| reference[p].clone()).collect()];
    for t in &trained[1..] {
        maps.push(evaluation::attribution_maps(
            &t.model,
            method,
            test,
            norm,
            &chosen,
            cfg.eval.batch_size,
        )?);
    }
    let (h, w, scale) = (test.height, test.width, cfg.report.overlay_scale);
    let mut grid_rows = Vec::new();
    for (j, &(i, c)) in chosen.iter().enumerate() {
        let mask = test.class_mask(i, c);
        let image = test.image(i);
        let mut row = vec![overlay::render_panel(
            &overlay::Panel {
                image,
                map: None,
                mask: Some(&mask),
                mark_max: false,
            },
            h,
            w,
            scale,
        )?];
        for m in &maps {
            let p = overlay::Panel {
                image,
                map: Some(&m[j]),
                mask: Some(&mask),
                mark_max: true,
            };
            row.push(overlay::render_panel(&p, h, w, scale)?);
        }
        grid_rows.push(row);
    }
    overlay::save_png(&overlay::grid(&grid_rows, 4), &out.join("overlays.png"))?;
    let captions: Vec<String> = chosen
        .iter()
        .map(|&(i, c)| format!("test image {i}, class {}", test.class_names[c]))
        .collect();
    write_atomic(&out.join("overlays.txt"), captions.join("\n").as_bytes())
}

fn results_markdown(cfg: &ExperimentConfig, table: &str) -> String {
    format!(
        "# faithful: knowledge distillation with attribution matching\n\n\
         Dataset: synthetic (seed {}, {}x{} px, {} classes, {} train / {} test images). \
         Teacher `{}`; students distilled at width /{} (T = {}, alpha = {}). \
         Regularizers: {}; beta EWA {} / SWA,SSWA {}; SSWA mode {:?}, drop {}. \
         Attribution method for evaluation: {}.\n\n\
         mAP, F1, AUC and point accuracy are in %; AUC and point accuracy are over test (image, class) \
         pairs whose class is present and predicted by that network; cos and l2 compare each \
         network's map with the teacher's map of the same pair (maps bilinearly upsampled to the \
         input size; l2 = ||a/||a|| - b/||b|| ||, range [0, sqrt 2]). Mean ± sample std over seeds.\n\n\
         {table}\n\
         `overlays.png`: per row, the image with the class mask outlined, then the maps of the \
         teacher and of each student in the order above, with the map's maximum marked by a green \
         cross (captions in `overlays.txt`).\n",
        cfg.data.seed,
        cfg.data.size,
        cfg.data.size,
        cfg.data.num_classes,
        cfg.data.n_train,
        cfg.data.n_test,
        cfg.teacher.arch.layout,
        cfg.kd.width_divisor,
        cfg.kd.temperature,
        cfg.kd.alpha,
        cfg.regularizers.join(", "),
        cfg.matching.beta_ewa,
        cfg.matching.beta_swa,
        cfg.matching.sswa_mode,
        cfg.matching.drop,
        cfg.eval.attribution,
    )
}
