//! An experiment end to end: data -> teacher -> for each compression method, one compressed
//! network per regularizer -> evaluation -> report. Every stage checkpoints into the output
//! folder, so running the same command on the same folder resumes where it stopped.

use crate::attribution::{self, Attribution};
use crate::compression::Compression;
use crate::compression::unstructured::{PruningRound, cumulative_rate, sparsity};
use crate::config::ExperimentConfig;
use crate::data::Splits;
use crate::evaluation::{self, MapSet, PairSet, ground_truth_pairs};
use crate::explain::{DATASET_INFO_FILE, DatasetInfo};
use crate::matching::{self, Regularizer};
use crate::models::{Vgg, save_model};
use crate::report::{self, ResultRow, overlay};
use crate::training::{self, FineTuneSpec, Normalization, StudentRun, TrainConfig};
use crate::util::{derive_seed, write_atomic};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a finished experiment leaves behind.
#[derive(Debug)]
pub struct Outcome {
    /// One row per network, seed (and pruning round).
    pub rows: Vec<ResultRow>,
    /// The Markdown results tables.
    pub table: String,
    /// The output folder.
    pub out: PathBuf,
}

/// A trained network and what is needed to report it.
struct Trained {
    compression: String,
    regularizer: String,
    round: usize,
    model: Vgg,
    seconds: f64,
}

/// What every stage of one seed shares.
struct Ctx<'a> {
    cfg: &'a ExperimentConfig,
    splits: &'a Splits,
    norm: &'a Normalization,
    method: &'a dyn Attribution,
    seed: u64,
    dir: PathBuf,
    ad: Device,
}

/// Runs the experiment described by `cfg` into `out` on `device` (a plain device; autodiff is
/// enabled internally for training).
pub fn run(cfg: &ExperimentConfig, out: &Path, device: &Device) -> Result<Outcome> {
    cfg.validate()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    refuse_other_data(cfg, &out.join("config.toml"))?;
    write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    eprintln!("loading the {} dataset ...", cfg.dataset.name());
    let splits = cfg.dataset.load(&cfg.data)?;
    let arch = cfg.teacher_arch_for(splits.train.num_classes(), splits.train.height);
    arch.validate().context("teacher.arch for this dataset")?;
    let norm = cfg.input_norm.of(&splits.train);
    write_atomic(
        &out.join("normalization.json"),
        serde_json::to_string_pretty(&norm)?.as_bytes(),
    )?;
    // Lets `faithful explain` use any network of this run without further flags.
    DatasetInfo {
        name: splits.train.name.clone(),
        class_names: splits.train.class_names.clone(),
        normalization: norm.clone(),
    }
    .save(&out.join(DATASET_INFO_FILE))?;
    let method = attribution::by_name(&cfg.eval.attribution)?;
    let mut rows = Vec::new();
    let mut pairs_csv = String::from(report::PAIRS_CSV_HEADER);
    for &seed in &cfg.seeds {
        let ctx = Ctx {
            cfg,
            splits: &splits,
            norm: &norm,
            method,
            seed,
            dir: out.join(format!("seed-{seed}")),
            ad: device.clone().autodiff(),
        };
        let teacher = train_teacher(&ctx)?;
        let reference = evaluation::reference_maps(
            &teacher.model,
            method,
            &splits.test,
            &norm,
            cfg.eval.batch_size,
        )?;
        let mut evaluate = |t: &Trained| -> Result<()> {
            let (row, csv) = evaluate_row(&ctx, t, &reference)?;
            rows.push(row);
            pairs_csv.push_str(&csv);
            Ok(())
        };
        evaluate(&teacher)?;
        for compression in &cfg.compressions {
            let (finals, rounds) = match compression.as_str() {
                "kd" => (kd_students(&ctx, &teacher.model)?, vec![]),
                "structured" => (structured_students(&ctx, &teacher.model)?, vec![]),
                _ => unstructured_students(&ctx, &teacher.model)?,
            };
            for t in rounds.iter().chain(&finals) {
                evaluate(t)?;
            }
            if seed == cfg.seeds[0] {
                let mut nets = vec![&teacher];
                nets.extend(finals.iter());
                draw_overlays(
                    &ctx,
                    &nets,
                    &reference,
                    &out.join(format!("overlays-{compression}.png")),
                )?;
            }
        }
        report::write_json(&rows, &out.join("results.json"))?;
    }
    write_atomic(&out.join("pairs.csv"), pairs_csv.as_bytes())?;
    if cfg.compressions.iter().any(|c| c == "unstructured") {
        report::sweep::write(&rows, &cfg.regularizers, out)?;
    }
    let table = report::tables_by_compression(&rows, &cfg.compressions);
    write_atomic(
        &out.join("results.md"),
        results_markdown(cfg, &cfg.dataset.describe(&cfg.data, &splits), &table).as_bytes(),
    )?;
    Ok(Outcome {
        rows,
        table,
        out: out.to_path_buf(),
    })
}

/// Stage checkpoints are keyed by their training settings, not by the data they saw; resuming
/// into a folder whose run used other data (or another normalisation or starting point) would
/// silently mix the two, so it is refused.
fn refuse_other_data(cfg: &ExperimentConfig, saved: &Path) -> Result<()> {
    if !saved.exists() {
        return Ok(());
    }
    let old = ExperimentConfig::load(saved)
        .with_context(|| format!("{} exists but cannot be read", saved.display()))?;
    let identity = |c: &ExperimentConfig| {
        (
            c.dataset.clone(),
            c.data.clone(),
            c.input_norm,
            c.teacher.pretrained.clone(),
        )
    };
    if identity(&old) != identity(cfg) {
        bail!(
            "{} holds a run on other data (dataset, data, input_norm or teacher.pretrained \
             differ); choose another output folder",
            saved.parent().unwrap_or(saved).display()
        );
    }
    Ok(())
}

fn network_name(model: &Vgg) -> String {
    let layout = &model.arch.layout;
    let short = if layout.len() > 24 {
        format!("{}…", &layout[..24])
    } else {
        layout.clone()
    };
    format!("{short}/{}", model.arch.width_divisor)
}

fn evaluate_row(ctx: &Ctx, t: &Trained, reference: &MapSet) -> Result<(ResultRow, String)> {
    let (scores, pairs) = evaluation::evaluate(
        &t.model,
        &ctx.splits.test,
        ctx.norm,
        ctx.method,
        Some(reference),
        &ctx.cfg.eval,
    )?;
    let name = network_name(&t.model);
    let mut row = ResultRow::new(&name, &t.compression, &t.regularizer, ctx.seed, &scores);
    row.params = t.model.params();
    row.macs = t.model.macs();
    row.train_seconds = t.seconds;
    row.round = t.round;
    row.sparsity = sparsity(&t.model);
    row.latency_ms = evaluation::latency_ms(&t.model, ctx.splits.test.height, 30)?;
    let tag = format!("{} {} {} r{}", name, t.compression, t.regularizer, t.round);
    Ok((row, report::pairs_csv(&tag, ctx.seed, &pairs)))
}

/// Trains (or resumes) the teacher.
fn train_teacher(ctx: &Ctx) -> Result<Trained> {
    let start = Instant::now();
    let arch = ctx
        .cfg
        .teacher_arch_for(ctx.splits.train.num_classes(), ctx.splits.train.height);
    let init_seed = derive_seed(ctx.seed, "teacher-init");
    let teacher = match &ctx.cfg.teacher.pretrained {
        None => arch.init(&ctx.ad, init_seed)?,
        Some(path) if arch.num_classes == 1000 => {
            crate::models::import_torchvision_vgg(&arch, path, &ctx.ad)?
        }
        Some(path) => {
            crate::models::import_torchvision_vgg_new_head(&arch, path, &ctx.ad, init_seed)?
        }
    };
    let dir = ctx.dir.join("teacher");
    let teacher = training::train_supervised(
        teacher,
        &ctx.splits.train,
        ctx.norm,
        &ctx.cfg.teacher.train,
        derive_seed(ctx.seed, "teacher"),
        &dir,
        "teacher",
    )?;
    save_model(&teacher, &dir.join("model.safetensors"))?;
    Ok(Trained {
        compression: "none".into(),
        regularizer: "-".into(),
        round: 0,
        model: teacher.valid(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn regularizers(cfg: &ExperimentConfig) -> Result<Vec<Box<dyn Regularizer>>> {
    cfg.regularizers
        .iter()
        .map(|r| matching::by_name(r, cfg.matching.sswa_mode, cfg.matching.drop))
        .collect()
}

/// Fine-tunes one student per regularizer in lockstep; `students[i]` belongs to regularizer i
/// and checkpoints into `<seed dir>/<stage>-<regularizer>`.
fn fine_tune_all(
    ctx: &Ctx,
    compression: &dyn Compression,
    students: Vec<Vgg>,
    teacher: &Vgg,
    train: &TrainConfig,
    stage: &str,
    round: usize,
) -> Result<Vec<Trained>> {
    let cfg = ctx.cfg;
    let regs = regularizers(cfg)?;
    let labels: Vec<String> = cfg
        .regularizers
        .iter()
        .map(|r| format!("{stage}-{r}"))
        .collect();
    let dirs: Vec<PathBuf> = labels
        .iter()
        .map(|l| {
            if round > 0 {
                ctx.dir.join(l).join(format!("round-{round:02}"))
            } else {
                ctx.dir.join(l)
            }
        })
        .collect();
    let start = Instant::now();
    let mut runs = Vec::new();
    for (i, model) in students.into_iter().enumerate() {
        let spec = FineTuneSpec {
            compression,
            regularizer: regs[i].as_ref(),
            beta: cfg.matching.beta(&cfg.regularizers[i]),
            matching: &cfg.matching,
            train,
            seed: derive_seed(ctx.seed, &format!("{stage}-{round}")),
            label: &labels[i],
        };
        runs.push(StudentRun {
            model,
            spec,
            dir: dirs[i].clone(),
        });
    }
    let tuned = training::fine_tune_lockstep(runs, teacher, &ctx.splits.train, ctx.norm)?;
    // Students train together; each is charged an equal share of the wall time.
    let share = start.elapsed().as_secs_f64() / tuned.len().max(1) as f64;
    let mut out = Vec::new();
    for ((model, reg), dir) in tuned.into_iter().zip(&cfg.regularizers).zip(&dirs) {
        save_model(&model, &dir.join("model.safetensors"))?;
        out.push(Trained {
            compression: compression.name().into(),
            regularizer: reg.clone(),
            round,
            model: model.valid(),
            seconds: share,
        });
    }
    Ok(out)
}

/// Distilled students, all from the same initial weights (a paired comparison).
fn kd_students(ctx: &Ctx, teacher: &Vgg) -> Result<Vec<Trained>> {
    let kd = &ctx.cfg.kd;
    let mut students = Vec::new();
    for _ in &ctx.cfg.regularizers {
        // the same seed for every regularizer: identical initial students
        students.push(kd.make_student(teacher, &ctx.ad, derive_seed(ctx.seed, "student-init"))?);
    }
    fine_tune_all(ctx, kd, students, teacher, &ctx.cfg.student_train, "kd", 0)
}

/// The L1-filter-pruned teacher, fine-tuned once per regularizer.
fn structured_students(ctx: &Ctx, teacher: &Vgg) -> Result<Vec<Trained>> {
    let sp = &ctx.cfg.structured;
    let students = ctx
        .cfg
        .regularizers
        .iter()
        .map(|_| sp.make_student(teacher, &ctx.ad, 0))
        .collect::<Result<Vec<_>>>()?;
    let train = TrainConfig {
        epochs: sp.epochs,
        ..ctx.cfg.prune_train.clone()
    };
    fine_tune_all(ctx, sp, students, teacher, &train, "structured", 0)
}

/// Iterative magnitude pruning: each regularizer's network is pruned further every round and
/// fine-tuned; returns (final round, all earlier rounds).
fn unstructured_students(ctx: &Ctx, teacher: &Vgg) -> Result<(Vec<Trained>, Vec<Trained>)> {
    let up = &ctx.cfg.unstructured;
    let mut current: Vec<Vgg> = ctx
        .cfg
        .regularizers
        .iter()
        .map(|_| teacher.clone())
        .collect();
    let train = TrainConfig {
        epochs: up.epochs_per_round,
        ..ctx.cfg.prune_train.clone()
    };
    let mut earlier = Vec::new();
    let mut last = Vec::new();
    for round in 1..=up.rounds {
        let step = PruningRound {
            target: cumulative_rate(up.rate, round),
            scope: up.scope,
        };
        let students = current
            .iter()
            .map(|m| step.make_student(m, &ctx.ad, 0))
            .collect::<Result<Vec<_>>>()?;
        let tuned = fine_tune_all(ctx, &step, students, teacher, &train, "unstructured", round)?;
        current = tuned.iter().map(|t| t.model.clone()).collect();
        earlier.append(&mut last);
        last = tuned;
    }
    Ok((last, earlier))
}

/// One overlay row per chosen test pair: image, then each network's map with the mask outline
/// and the map's maximum marked. Pairs are chosen by correctness alone, never by how the maps
/// look: no cherry-picking.
fn draw_overlays(ctx: &Ctx, nets: &[&Trained], reference: &MapSet, path: &Path) -> Result<()> {
    let (cfg, test) = (ctx.cfg, &ctx.splits.test);
    let k = test.num_classes();
    let mut logits = Vec::new();
    for t in nets {
        logits.push(evaluation::predict(
            &t.model,
            test,
            ctx.norm,
            cfg.eval.batch_size,
        )?);
    }
    // Pairs the teacher gets right first, then those that most networks get right (test order
    // within ties): the first overlays show networks that are all right, as the paper's figures.
    let mut candidates: Vec<((usize, usize), (bool, usize))> = ground_truth_pairs(test)
        .into_iter()
        .map(|(i, c)| {
            let right = |l: &Vec<f32>| l[i * k + c] > 0.0;
            (
                (i, c),
                (
                    right(&logits[0]),
                    logits.iter().filter(|l| right(l)).count(),
                ),
            )
        })
        .collect();
    candidates.sort_by_key(|&(_, score)| std::cmp::Reverse(score));
    let chosen: Vec<(usize, usize)> = candidates
        .into_iter()
        .take(cfg.report.overlays)
        .map(|(p, _)| p)
        .collect();
    if chosen.is_empty() {
        return Ok(());
    }
    let mut maps: Vec<Vec<Vec<f32>>> = vec![chosen.iter().map(|p| reference[p].clone()).collect()];
    for t in &nets[1..] {
        maps.push(evaluation::attribution_maps(
            &t.model,
            ctx.method,
            test,
            ctx.norm,
            &chosen,
            cfg.eval.batch_size,
        )?);
    }
    let (h, w, scale) = (test.height, test.width, cfg.report.overlay_scale);
    let mut grid_rows = Vec::new();
    for (j, &(i, c)) in chosen.iter().enumerate() {
        let mask = test.class_mask(i, c);
        let image = test.image(i);
        let plain = overlay::Panel {
            image,
            map: None,
            mask: Some(&mask),
            mark_max: false,
        };
        let mut row = vec![overlay::render_panel(&plain, h, w, scale)?];
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
    overlay::save_png(&overlay::grid(&grid_rows, 4), path)?;
    let columns: Vec<String> = nets
        .iter()
        .map(|t| format!("{} {}", t.compression, t.regularizer))
        .collect();
    let captions: Vec<String> = chosen
        .iter()
        .map(|&(i, c)| format!("test image {i}, class {}", test.class_names[c]))
        .collect();
    let text = format!(
        "columns: image, {}\nrows:\n{}\n",
        columns.join(", "),
        captions.join("\n")
    );
    write_atomic(&path.with_extension("txt"), text.as_bytes())
}

fn results_markdown(cfg: &ExperimentConfig, dataset: &str, tables: &str) -> String {
    format!(
        "# faithful: attribution-preserving compression\n\n\
         Dataset: {dataset}. Teacher `{}`. Compressions: {}. KD students at width /{} \
         (T = {}, alpha = {}); unstructured pruning {} rounds of {} (global threshold: {:?}); \
         structured L1 filter pruning at rate {}. Regularizers: {}; beta EWA {} / SWA,SSWA {}; \
         SSWA mode {:?}, drop {}; matched layer {:?}, distance {:?}, target {:?}. Attribution \
         method for evaluation: {}.\n\n\
         mAP, F1, AUC and point accuracy are in %; AUC and point accuracy are over test (image, \
         class) pairs whose class is present{}; cos and l2 compare \
         each network's map with the teacher's map of the same pair (maps bilinearly upsampled to \
         the input size; l2 = ||a/||a|| - b/||b|| ||, range [0, sqrt 2]). MMACs per image, latency \
         in ms for one image on this machine. Mean ± sample std over seeds.\n\n{tables}\n\
         `overlays-<compression>.png`: per row, the image with the class mask outlined, then the \
         maps of the teacher and of each compressed network in the order of the table, with the \
         map's maximum marked by a green cross (captions and column order in the `.txt` beside it).\n",
        cfg.teacher.arch.layout,
        cfg.compressions.join(", "),
        cfg.kd.width_divisor,
        cfg.kd.temperature,
        cfg.kd.alpha,
        cfg.unstructured.rounds,
        cfg.unstructured.rate,
        cfg.unstructured.scope,
        cfg.structured.rate,
        cfg.regularizers.join(", "),
        cfg.matching.beta_ewa,
        cfg.matching.beta_swa,
        cfg.matching.sswa_mode,
        cfg.matching.drop,
        cfg.matching.layer,
        cfg.matching.distance,
        cfg.matching.target,
        cfg.eval.attribution,
        match cfg.eval.pairs {
            PairSet::Predicted => " and predicted by that network",
            PairSet::Present => " (every such pair, predicted or not: `eval.pairs = \"present\"`)",
        },
    )
}
