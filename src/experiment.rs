//! An experiment end to end: data -> teacher -> for each compression method, one compressed
//! network per regularizer -> evaluation -> report. Every stage checkpoints into the output
//! folder, so running the same command on the same folder resumes where it stopped.

use crate::attribution::{self, Attribution};
use crate::cells::{self, Cell, CellKind, CellRecord};
use crate::compression::kd::student_init_seed;
use crate::compression::unstructured::sparsity;
use crate::compression::{Budget, Compression, Method};
use crate::config::ExperimentConfig;
use crate::data::{Dataset, Splits};
use crate::evaluation::health::{self, Warning};
use crate::evaluation::{self, MapSet, PairSet, ground_truth_pairs, roar};
use crate::explain::{DATASET_INFO_FILE, DatasetInfo};
use crate::matching::{self, Regularizer};
use crate::models::{Network, save_model};
use crate::report::{self, EpochRecord, ResultRow, overlay};
use crate::training::checkpoint::stage_key;
use crate::training::{
    self, FineTuneSpec, Normalization, Stage, StudentRun, TrainConfig, ValScores, Validator,
};
use crate::util::{config_name, derive_seed, write_atomic};
use anyhow::{Context, Result};
use burn::prelude::*;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
#[derive(Clone)]
struct Trained {
    compression: String,
    regularizer: String,
    round: usize,
    /// Which of the regularizer's students of this seed (`kd.replicates`); 0 for the teacher.
    replicate: usize,
    model: Network,
    seconds: f64,
    /// Per-epoch record of the stage that produced the network (last stage for pruning rounds).
    history: Vec<EpochRecord>,
    /// Hash of every input that determined this network (settings, data, upstream stages).
    key: String,
}

/// What every stage of one seed shares.
struct Ctx<'a> {
    cfg: &'a ExperimentConfig,
    splits: &'a Splits,
    /// The teacher's training images: `splits.train` unless the dataset draws the teacher its
    /// own (`teacher_cues = "none"`).
    teacher_train: &'a Dataset,
    norm: &'a Normalization,
    /// The attribution methods of `eval.attributions`; the first is the main one.
    methods: &'a [&'static dyn Attribution],
    seed: u64,
    dir: PathBuf,
    ad: Device,
    /// Scores a network on the validation split after every epoch.
    validate: Option<&'a Validator<'a>>,
    /// mAP (in %) of a random ranking on the test split.
    chance: f64,
    /// Hash of the data and its normalisation.
    data_key: String,
}

/// What every cell of a run shares, loaded once per process.
struct Prepared {
    splits: Splits,
    /// The teacher's own training images, where the dataset draws them (`teacher_cues`).
    teacher_train: Option<Dataset>,
    norm: Normalization,
    /// The attribution methods of `eval.attributions`; the first is the main one.
    methods: Vec<&'static dyn Attribution>,
    /// mAP (in %) of a random ranking on the test split.
    chance: f64,
    /// Hash of the data and its normalisation.
    data_key: String,
    /// A sentence describing the dataset.
    described: String,
}

/// Loads the data and what derives from it, and writes the run folder's `normalization.json`
/// and `dataset.json` (atomically: cells running at once write the same bytes).
fn prepare(cfg: &ExperimentConfig, out: &Path) -> Result<Prepared> {
    eprintln!("loading the {} dataset ...", cfg.dataset.name());
    let splits = cfg.dataset.load(&cfg.data)?;
    let teacher_train = cfg.dataset.teacher_train(&cfg.data)?;
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
    let methods: Vec<&'static dyn Attribution> = cfg
        .eval
        .attributions
        .iter()
        .map(|name| attribution::by_name(name))
        .collect::<Result<_>>()?;
    let chance = health::chance_map(&splits.test, cfg.eval.map_variant)?;
    let data_key = stage_key(&(
        splits.train.fingerprint(),
        splits.val.fingerprint(),
        teacher_train.as_ref().map(|d| d.fingerprint()),
        &norm,
        pretrained_fingerprint(cfg)?,
    ));
    let described = cfg.dataset.describe(&cfg.data, &splits);
    Ok(Prepared {
        splits,
        teacher_train,
        norm,
        methods,
        chance,
        data_key,
        described,
    })
}

/// Runs the experiment described by `cfg` into `out` on `device` (a plain device; autodiff is
/// enabled internally for training): every cell of [`cells::plan`] in this process, seed by
/// seed, then the report. Cells finished earlier (a current record) are skipped, and the
/// results so far are merged after every cell, so a partial run has tables too.
pub fn run(cfg: &ExperimentConfig, out: &Path, device: &Device) -> Result<Outcome> {
    cfg.validate()?;
    let _lock = crate::util::RunLock::acquire(out)?;
    clear_run_outputs(out)?;
    write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    let prep = prepare(cfg, out)?;
    let plan = cells::plan(cfg);
    let mut work: Vec<&Cell> = plan.iter().filter(|c| c.kind != CellKind::Report).collect();
    // seed by seed: a reader sees whole seeds early; the plan's level order is for schedulers
    work.sort_by_key(|c| (cfg.seeds.iter().position(|s| Some(*s) == c.seed), c.level));
    let mut memo = Memo::default();
    for cell in work {
        run_prepared_cell(cfg, &prep, cell, out, device, &mut memo, Duration::ZERO)?;
        merge_records(cfg, out, &plan, &prep.data_key, false)?;
    }
    merge_records(cfg, out, &plan, &prep.data_key, true)
}

/// What running one cell did.
#[derive(Debug)]
pub enum CellOutcome {
    /// The cell ran and saved its record.
    Ran,
    /// A current record existed; nothing was done.
    Skipped,
    /// The report cell merged every record.
    Merged(Outcome),
}

/// Runs one cell of `cfg`'s grid into the shared run folder `out`: waits up to `wait` for the
/// cells it needs, takes the cell's lock, and writes its record. A training cell writes only
/// its own stage folders and record, so cells run at once on machines sharing `out`; the
/// report cell takes the run's lock and merges every cell's record.
pub fn run_cell(
    cfg: &ExperimentConfig,
    out: &Path,
    device: &Device,
    cell: &Cell,
    wait: Duration,
) -> Result<CellOutcome> {
    cfg.validate()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // `faithful report` reads the run's config; the report cell rewrites it, the first cell
    // to come leaves it for a partial report
    if !out.join("config.toml").is_file() {
        write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    }
    let prep = prepare(cfg, out)?;
    let plan = cells::plan(cfg);
    if cell.kind == CellKind::Report {
        let key_of = |id: &str| key_of_id(cfg, &plan, &prep.data_key, id);
        cells::await_needs(out, cell, &key_of, wait)?;
        let _lock = crate::util::RunLock::acquire(out)?;
        write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        let outcome = merge_records(cfg, out, &plan, &prep.data_key, true)?;
        return Ok(CellOutcome::Merged(outcome));
    }
    run_prepared_cell(cfg, &prep, cell, out, device, &mut Memo::default(), wait)
}

/// The current key of the cell named `id` in `plan`.
fn key_of_id(cfg: &ExperimentConfig, plan: &[Cell], data_key: &str, id: &str) -> Result<String> {
    let cell = plan
        .iter()
        .find(|c| c.id == id)
        .with_context(|| format!("no cell {id} in this grid"))?;
    cells::cell_key(cfg, data_key, cell)
}

/// [`run_cell`] for a training cell once the data is loaded.
fn run_prepared_cell(
    cfg: &ExperimentConfig,
    prep: &Prepared,
    cell: &Cell,
    out: &Path,
    device: &Device,
    memo: &mut Memo,
    wait: Duration,
) -> Result<CellOutcome> {
    let plan = cells::plan(cfg);
    let key = cells::cell_key(cfg, &prep.data_key, cell)?;
    if cells::finished(out, &cell.id, &key)?.is_some() {
        eprintln!(
            "cell {}: finished earlier (current record); skipped",
            cell.id
        );
        return Ok(CellOutcome::Skipped);
    }
    let key_of = |id: &str| key_of_id(cfg, &plan, &prep.data_key, id);
    cells::await_needs(out, cell, &key_of, wait)?;
    let _lock = cells::lock(out, &cell.id)?;
    // another process may have finished it while this one waited
    if cells::finished(out, &cell.id, &key)?.is_some() {
        eprintln!("cell {}: finished by another process; skipped", cell.id);
        return Ok(CellOutcome::Skipped);
    }
    let started = Instant::now();
    eprintln!("cell {} ({}) ...", cell.id, cell.kind.label());
    let record = execute(cfg, prep, cell, out, device, memo, key)?;
    cells::save(out, &record)?;
    eprintln!(
        "cell {}: done in {:.0} s",
        cell.id,
        started.elapsed().as_secs_f64()
    );
    Ok(CellOutcome::Ran)
}

/// What one process keeps between the cells of a seed (the teacher, its maps, the first
/// compression method's networks for ROAR), so a single-process run does not reload them.
#[derive(Default)]
struct Memo {
    seed: Option<u64>,
    teacher: Option<Trained>,
    references: Option<Vec<MapSet>>,
    finals: Vec<(String, Vec<Trained>)>,
}

impl Memo {
    /// Forgets everything of another seed.
    fn enter(&mut self, seed: u64) {
        if self.seed != Some(seed) {
            *self = Memo {
                seed: Some(seed),
                ..Memo::default()
            };
        }
    }

    fn teacher(&mut self, ctx: &Ctx) -> Result<Trained> {
        self.enter(ctx.seed);
        if self.teacher.is_none() {
            self.teacher = Some(train_teacher(ctx)?);
        }
        Ok(self.teacher.clone().expect("set above"))
    }

    /// The teacher's maps of every method, for cos / l2 of the same method.
    fn references(&mut self, ctx: &Ctx, teacher: &Trained) -> Result<Vec<MapSet>> {
        if self.references.is_none() {
            let maps = ctx
                .methods
                .iter()
                .map(|m| {
                    evaluation::reference_maps(
                        &teacher.model,
                        *m,
                        &ctx.splits.test,
                        ctx.norm,
                        ctx.cfg.eval.batch_size,
                    )
                })
                .collect::<Result<Vec<MapSet>>>()?;
            self.references = Some(maps);
        }
        Ok(self.references.clone().expect("set above"))
    }

    /// The last stage's networks of `compression` (loaded from their finished stages when
    /// another process trained them).
    fn finals(&mut self, ctx: &Ctx, compression: &str, teacher: &Trained) -> Result<Vec<Trained>> {
        if let Some((_, f)) = self.finals.iter().find(|(c, _)| c == compression) {
            return Ok(f.clone());
        }
        let (finals, _) = method_students(ctx, ctx.cfg.method(compression)?.as_ref(), teacher)?;
        self.finals.push((compression.to_string(), finals.clone()));
        Ok(finals)
    }
}

/// Does a training cell's work and returns its record.
fn execute(
    cfg: &ExperimentConfig,
    prep: &Prepared,
    cell: &Cell,
    out: &Path,
    device: &Device,
    memo: &mut Memo,
    key: String,
) -> Result<CellRecord> {
    let (splits, norm) = (&prep.splits, &prep.norm);
    let validator = |m: &Network| -> Result<ValScores> {
        let logits = evaluation::predict(&m.valid(), &splits.val, norm, cfg.eval.batch_size)?;
        let q = health::prediction_quality(&logits, &splits.val, cfg.eval.map_variant)?;
        Ok(ValScores {
            map: q.map,
            f1: q.f1,
            positive_rate: q.positive_rate,
        })
    };
    let validate: Option<&Validator> = has_positives(&splits.val).then_some(&validator);
    if validate.is_none() {
        eprintln!("WARNING: the validation split has no labelled class; no per-epoch validation");
    }
    let seed = cell
        .seed
        .with_context(|| format!("cell {} has no seed", cell.id))?;
    let ctx = Ctx {
        cfg,
        splits,
        teacher_train: prep.teacher_train.as_ref().unwrap_or(&splits.train),
        norm,
        methods: &prep.methods,
        seed,
        dir: out.join(format!("seed-{seed}")),
        ad: device.clone().autodiff(),
        validate,
        chance: prep.chance,
        data_key: prep.data_key.clone(),
    };
    let mut record = CellRecord {
        key,
        id: cell.id.clone(),
        settings: cells::settings_key(cfg, cell)?,
        rows: Vec::new(),
        pairs: Vec::new(),
        roar: Vec::new(),
        dataset: prep.described.clone(),
    };
    let teacher = memo.teacher(&ctx)?;
    let mut evaluate = |nets: &[&Trained], references: &[MapSet]| -> Result<()> {
        for (row, pairs) in evaluate_all(&ctx, nets, references)? {
            record.rows.push(row);
            record.pairs.push(pairs);
        }
        Ok(())
    };
    match &cell.kind {
        CellKind::Teacher => evaluate(&[&teacher], &memo.references(&ctx, &teacher)?)?,
        CellKind::Students { compression } => {
            let references = memo.references(&ctx, &teacher)?;
            let method = cfg.method(compression)?;
            let (finals, rounds) = method_students(&ctx, method.as_ref(), &teacher)?;
            let nets: Vec<&Trained> = rounds.iter().chain(&finals).collect();
            evaluate(&nets, &references)?;
            if cfg.seeds.first() == Some(&seed) {
                let mut nets = vec![&teacher];
                nets.extend(finals.iter().filter(|t| t.replicate == 0));
                draw_overlays(
                    &ctx,
                    &nets,
                    &references[0],
                    &cells::overlay_path(out, &cell.id),
                )?;
            }
            if cfg.roar.enabled && cfg.compressions.first() == Some(compression) {
                memo.finals.push((compression.clone(), finals));
            }
        }
        CellKind::Roar => {
            let finals = match cfg.compressions.first() {
                Some(c) => memo.finals(&ctx, c, &teacher)?,
                None => Vec::new(),
            };
            record.roar = roar_seed(&ctx, &teacher, &finals)?;
        }
        CellKind::Report => anyhow::bail!("the report cell merges records; it has no work"),
    }
    Ok(record)
}

/// Merges the records of `plan`'s cells into the run's results: `results.json`, `pairs.csv`,
/// `roar.json`, `results.md`, the plots, the overlays and `report.html`. With `complete`, every
/// cell must have a current record (`data_key` given) and a missing one is an error; otherwise
/// the cells finished so far are merged and the page says which are missing. Without a
/// `data_key` (`faithful report`, which loads no data) a record counts when its settings match.
fn merge_records(
    cfg: &ExperimentConfig,
    out: &Path,
    plan: &[Cell],
    data_key: &str,
    complete: bool,
) -> Result<Outcome> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for cell in plan.iter().filter(|c| c.kind != CellKind::Report) {
        let record = if data_key.is_empty() {
            cells::any_record(out, &cell.id)?
                .filter(|r| cells::settings_key(cfg, cell).is_ok_and(|k| k == r.settings))
        } else {
            cells::finished(out, &cell.id, &cells::cell_key(cfg, data_key, cell)?)?
        };
        match record {
            Some(r) => found.push((cell, r)),
            None => missing.push(cell.id.clone()),
        }
    }
    if complete && !missing.is_empty() {
        anyhow::bail!(
            "cannot merge {}: cells {} have not finished",
            out.display(),
            missing.join(", ")
        );
    }
    let described = found
        .first()
        .map(|(_, r)| r.dataset.clone())
        .with_context(|| format!("no cell of {} has finished yet", out.display()))?;
    clear_run_outputs(out)?;
    let mut all_rows = Vec::new();
    let mut pairs_csv = report::PairsCsv::new();
    let mut roar_points = Vec::new();
    for (cell, record) in &found {
        for (row, pairs) in record.rows.iter().zip(&record.pairs) {
            pairs_csv.push(row, pairs)?;
        }
        all_rows.extend(record.rows.iter().cloned());
        roar_points.extend(record.roar.iter().cloned());
        if let CellKind::Students { compression } = &cell.kind {
            copy_overlays(out, &cell.id, compression)?;
        }
    }
    report::write_json(&all_rows, &out.join("results.json"))?;
    write_atomic(&out.join("pairs.csv"), &pairs_csv.finish()?)?;
    if !roar_points.is_empty() {
        write_atomic(
            &out.join("roar.json"),
            serde_json::to_string_pretty(&roar_points)?.as_bytes(),
        )?;
    }
    // the tables, claims and plots are those of the main method; the others get the methods
    // table
    let rows = report::rows_of_method(&all_rows, cfg.eval.primary_attribution());
    if complete {
        report_warnings(&rows);
    }
    let table = report::tables_by_compression(&rows, &cfg.compressions);
    let body = results_markdown(cfg, &described, &table);
    // The warnings go right under the title, where nobody can miss them.
    let (title, rest) = body.split_once("\n\n").unwrap_or(("", &body));
    let claims = report::claims::check_claims(&rows, cfg.eval.pairs);
    let partial = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "> **Partial results:** {} of {} cells have finished; not yet: {}.\n\n",
            found.len(),
            found.len() + missing.len(),
            missing.join(", ")
        )
    };
    let markdown = format!(
        "{title}\n\n{partial}{}{rest}\n{}{}{}",
        report::warnings_markdown(&rows),
        report::claims::claims_markdown(&claims),
        report::methods::methods_markdown(
            &all_rows,
            &cfg.eval.attributions,
            &cfg.compressions,
            cfg.eval.pairs
        ),
        report::methods::faithfulness_markdown(
            &all_rows,
            &cfg.eval.attributions,
            &cfg.compressions
        ),
    ) + &report::roar::markdown(&roar_points);
    // The tables first: a failing plot (a full disk) must not cost the results.
    write_atomic(&out.join("results.md"), markdown.as_bytes())?;
    if cfg.compressions.iter().any(|c| c == "unstructured") && !rows.is_empty() {
        report::sweep::write(&rows, &cfg.regularizers, out)?;
    }
    if !roar_points.is_empty() {
        report::roar::plot(&roar_points, &out.join("roar.png"))?;
    }
    report::html::write_report(out)?;
    Ok(Outcome {
        rows,
        table,
        out: out.to_path_buf(),
    })
}

/// Copies a students cell's overlay figure (and its caption text) to the run folder's
/// `overlays-<compression>.png`.
fn copy_overlays(out: &Path, id: &str, compression: &str) -> Result<()> {
    let from = cells::overlay_path(out, id);
    if !from.is_file() {
        return Ok(());
    }
    let to = out.join(format!("overlays-{compression}.png"));
    for (a, b) in [
        (from.clone(), to.clone()),
        (from.with_extension("txt"), to.with_extension("txt")),
    ] {
        let bytes = std::fs::read(&a).with_context(|| format!("cannot read {}", a.display()))?;
        write_atomic(&b, &bytes)?;
    }
    Ok(())
}

/// Rebuilds the results and report of a run folder from whatever cells have finished (records
/// whose settings match the folder's `config.toml`); a run folder without cell records (made
/// by an older version) gets its `report.html` rebuilt from `results.json`. Returns the page.
pub fn report(out: &Path) -> Result<PathBuf> {
    let config = out.join("config.toml");
    if !out.join(cells::CELLS_DIR).is_dir() || !config.is_file() {
        return report::html::write_report(out);
    }
    let cfg = ExperimentConfig::load(&config)?;
    let _lock = crate::util::RunLock::acquire(out).context(
        "a run is writing this folder; its results are merged after every cell, so \
         report.html is current already",
    )?;
    merge_records(&cfg, out, &cells::plan(&cfg), "", false)?;
    Ok(out.join("report.html"))
}

/// Removes the run-level outputs of an earlier run in `out` (tables, plots, report), so that
/// nothing a previous config produced (an overlay of a compression no longer in the grid, say)
/// survives into this run's report. Stage folders stay: their keys decide what is reused.
fn clear_run_outputs(out: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let run_output = [
            "results.",
            "pairs.csv",
            "overlays-",
            "sweep.",
            "roar.",
            "report.",
            "bars",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        if run_output && path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove stale {}", path.display()))?;
        }
    }
    Ok(())
}

/// Whether a split has at least one labelled class (mAP is undefined otherwise).
fn has_positives(data: &crate::data::Dataset) -> bool {
    !data.is_empty() && data.labels.contains(&1)
}

/// A hash of the pretrained teacher weights' bytes (empty without them): replacing the file
/// retrains everything downstream.
fn pretrained_fingerprint(cfg: &ExperimentConfig) -> Result<String> {
    let Some(path) = &cfg.teacher.pretrained else {
        return Ok(String::new());
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read teacher.pretrained {}", path.display()))?;
    let mut h = crate::util::Fnv1a::default();
    h.write(&bytes);
    Ok(format!("{:016x}", h.finish()))
}

/// Prints every row's warnings once more at the end, where a reader of the log looks.
fn report_warnings(rows: &[ResultRow]) {
    for r in rows {
        for w in &r.warnings {
            eprintln!(
                "WARNING: {} {} {} (seed {}, round {}): {}",
                r.network, r.compression, r.regularizer, r.seed, r.round, w.message
            );
        }
    }
}

fn network_name(model: &Network) -> String {
    let arch = model.arch();
    let layout = &arch.layout_name();
    let short = if layout.len() > 24 {
        format!("{}…", &layout[..24])
    } else {
        layout.clone()
    };
    format!("{short}/{}", arch.width_divisor())
}

/// The result rows of `nets`, in order (see [`evaluate_rows`]). The networks' evaluations are
/// independent and run on rayon's threads (a network's ops alone keep about one core busy);
/// each network's latency is timed first, alone, so no other network's work is in it.
fn evaluate_all(
    ctx: &Ctx,
    nets: &[&Trained],
    references: &[MapSet],
) -> Result<Vec<(ResultRow, Vec<evaluation::PairScore>)>> {
    let latencies = nets
        .iter()
        .map(|t| evaluation::latency_ms(&t.model, ctx.splits.test.height, 30))
        .collect::<Result<Vec<_>>>()?;
    let rows = nets
        .par_iter()
        .zip(latencies)
        .map(|(t, latency_ms)| evaluate_rows(ctx, t, references, latency_ms))
        .collect::<Result<Vec<_>>>()?;
    Ok(rows.into_iter().flatten().collect())
}

/// One result row per attribution method (in `eval.attributions` order) for a trained
/// network, with each row's pair scores. Prediction quality, latency (`latency_ms`, measured
/// by the caller) and the training health warnings are the network's and are measured once.
fn evaluate_rows(
    ctx: &Ctx,
    t: &Trained,
    references: &[MapSet],
    latency_ms: f64,
) -> Result<Vec<(ResultRow, Vec<evaluation::PairScore>)>> {
    let name = network_name(&t.model);
    let sparsity = sparsity(&t.model);
    let mut out = Vec::with_capacity(ctx.methods.len());
    for (k, (method, reference)) in ctx.methods.iter().zip(references).enumerate() {
        let started = Instant::now();
        let test = &ctx.splits.test;
        let pairs = ground_truth_pairs(test);
        // the teacher's own maps are the reference: not computed twice
        let maps: Vec<Vec<f32>> = if t.compression == "none" {
            pairs
                .iter()
                .map(|p| reference.get(p).cloned().unwrap_or_default())
                .collect()
        } else {
            let batch = ctx.cfg.eval.batch_size;
            evaluation::attribution_maps(&t.model, *method, test, ctx.norm, &pairs, batch)?
        };
        let ev = evaluation::evaluate_maps(
            &t.model,
            test,
            ctx.norm,
            &maps,
            Some(reference),
            &ctx.cfg.eval,
        )?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "evaluated {name} {} {} (seed {}, replicate {}) with {}: {} maps in {secs:.1} s \
             ({:.0} maps/s)",
            t.compression,
            t.regularizer,
            ctx.seed,
            t.replicate,
            method.name(),
            ev.pairs.len(),
            ev.pairs.len() as f64 / secs.max(1e-9)
        );
        let mut row = ResultRow::new(&name, &t.compression, &t.regularizer, ctx.seed, &ev.scores);
        row.attribution = method.name().to_string();
        row.params = t.model.params();
        row.macs = t.model.macs();
        row.train_seconds = t.seconds;
        row.round = t.round;
        row.replicate = t.replicate;
        row.sparsity = sparsity;
        row.latency_ms = latency_ms;
        if k == 0 {
            row.warnings = health::check(&ev.quality, ctx.chance, &t.history);
            row.history = t.history.clone();
        }
        row.warnings.extend(undefined_protocols(&ev.protocols));
        for w in &row.warnings {
            eprintln!(
                "WARNING: {name} {} {} (seed {}{}, {}): {}",
                t.compression,
                t.regularizer,
                ctx.seed,
                row.replicate_tag(),
                method.name(),
                w.message
            );
        }
        row.protocols = Some(ev.protocols);
        faithfulness_of(ctx, t, *method, &pairs, &maps, &mut row)?;
        out.push((row, ev.pairs));
    }
    Ok(out)
}

/// Deletion / insertion and ROAD of a row's method on the first `eval.faithfulness.pairs`
/// ground-truth pairs (whose maps the evaluation already computed), and for the teacher the
/// randomisation sanity check.
fn faithfulness_of(
    ctx: &Ctx,
    t: &Trained,
    method: &dyn Attribution,
    all_pairs: &[(usize, usize)],
    all_maps: &[Vec<f32>],
    row: &mut ResultRow,
) -> Result<()> {
    let f = &ctx.cfg.eval.faithfulness;
    let test = &ctx.splits.test;
    let n = f.pairs.min(all_pairs.len());
    let (pairs, maps) = (&all_pairs[..n], &all_maps[..n]);
    if pairs.is_empty() {
        return Ok(());
    }
    let batch = ctx.cfg.eval.batch_size;
    let started = Instant::now();
    let seed = derive_seed(ctx.seed, "perturbation");
    row.perturbation = Some(evaluation::faithfulness::perturbation_scores(
        &t.model, test, ctx.norm, pairs, maps, f, batch, seed,
    )?);
    if t.compression == "none" && f.sanity_pairs > 0 {
        let few = &pairs[..f.sanity_pairs.min(pairs.len())];
        row.sanity = Some(evaluation::faithfulness::cascading_randomization(
            &t.model,
            method,
            test,
            ctx.norm,
            few,
            batch,
            derive_seed(ctx.seed, "sanity"),
        )?);
    }
    eprintln!(
        "faithfulness of {} {} {} with {}: {:.1} s",
        row.network,
        t.compression,
        t.regularizer,
        method.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// ROAR for one seed: the teacher's, the chosen regularizers' (first compression method) and a
/// random ranking, each at every percentage, plus the unperturbed classifier at 0%.
fn roar_seed(ctx: &Ctx, teacher: &Trained, finals: &[Trained]) -> Result<Vec<roar::RoarPoint>> {
    let (cfg, splits) = (ctx.cfg, ctx.splits);
    let rc = &cfg.roar;
    let method = ctx.methods[0];
    let arch = cfg
        .teacher_arch_for(splits.train.num_classes(), splits.train.height)
        .thinner(rc.width_divisor);
    let train_cfg = TrainConfig {
        epochs: rc.epochs,
        min_steps: rc.min_steps,
        ..cfg.teacher.train.clone()
    };
    let retrain = roar::Retrain {
        arch: &arch,
        train: &train_cfg,
        norm: ctx.norm,
        map_variant: cfg.eval.map_variant,
        seed: derive_seed(ctx.seed, "roar"),
        device: &ctx.ad,
    };
    let dir = ctx.dir.join("roar");
    let mut rankers: Vec<(String, Option<&Trained>)> = vec![("teacher".into(), Some(teacher))];
    // one ranking per regularizer: its first replicate's
    for t in finals
        .iter()
        .filter(|t| t.replicate == 0 && rc.regularizers.contains(&t.regularizer))
    {
        rankers.push((format!("{} {}", t.compression, t.regularizer), Some(t)));
    }
    rankers.push(("random".into(), None));
    let mut points = Vec::new();
    let point = |ranking: &str, percent: u32, (map, f1): (f64, f64)| roar::RoarPoint {
        seed: ctx.seed,
        ranking: ranking.into(),
        method: method.name().into(),
        percent,
        map,
        f1,
    };
    let plain_key = roar::cell_key(&ctx.data_key, 0, rc, &retrain);
    let plain = roar::retrain(
        &retrain,
        &splits.train,
        &splits.test,
        &dir.join("plain"),
        &plain_key,
    )?;
    points.push(point("-", 0, plain));
    for (name, trained) in &rankers {
        // the ranking is identified by its network (or the seed for random) and method
        let ranking_key = match trained {
            Some(t) => stage_key(&(&t.key, method.name())),
            None => stage_key(&(&ctx.data_key, "random", ctx.seed)),
        };
        let cells: Vec<(u32, PathBuf, String)> = rc
            .percents
            .iter()
            .map(|&k| {
                let cell = dir.join(format!("{}-k{k}", name.replace(' ', "-")));
                (k, cell, roar::cell_key(&ranking_key, k, rc, &retrain))
            })
            .collect();
        if cells
            .iter()
            .all(|(_, d, key)| roar::cached(d, key).is_some())
        {
            for (k, d, key) in &cells {
                points.push(point(name, *k, roar::cached(d, key).unwrap_or_default()));
            }
            continue;
        }
        let orders = |data: &crate::data::Dataset, salt: &str| -> Result<Vec<Vec<u32>>> {
            Ok(match trained {
                Some(t) => roar::rankings(&t.model, method, data, ctx.norm, cfg.eval.batch_size)?,
                None => {
                    roar::random_rankings(data.len(), data.pixels(), derive_seed(ctx.seed, salt))
                }
            })
        };
        eprintln!(
            "ROAR: ranking the pixels by {name}'s {} maps ...",
            method.name()
        );
        let train_orders = orders(&splits.train, "roar-random-train")?;
        let test_orders = orders(&splits.test, "roar-random-test")?;
        for (k, cell, key) in &cells {
            let fill_seed = derive_seed(ctx.seed, "roar-fill");
            let train = roar::perturb(
                &splits.train,
                &train_orders,
                *k,
                rc.fill,
                ctx.norm,
                fill_seed,
            );
            let test = roar::perturb(&splits.test, &test_orders, *k, rc.fill, ctx.norm, fill_seed);
            let scores = roar::retrain(&retrain, &train, &test, cell, key)?;
            eprintln!("ROAR {name} {k}%: mAP {:.2}, F1 {:.2}", scores.0, scores.1);
            points.push(point(name, *k, scores));
        }
    }
    Ok(points)
}

/// A warning for each pair protocol under which no pair qualifies.
fn undefined_protocols(p: &evaluation::Protocols) -> Vec<Warning> {
    [
        (PairSet::Predicted, "paper's (predicted pairs)"),
        (PairSet::Present, "present-pairs"),
    ]
    .into_iter()
    .filter(|(set, _)| p.get(*set).pairs == 0)
    .map(|(_, name)| health::no_pairs(name))
    .collect()
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
        Some(path) => crate::models::import_pretrained(&arch, path, &ctx.ad, init_seed)?,
    };
    let dir = ctx.dir.join("teacher");
    let stage = Stage {
        dir: &dir,
        label: "teacher",
        validate: ctx.validate,
        upstream: &ctx.data_key,
    };
    let train_seed = derive_seed(ctx.seed, "teacher");
    let (teacher, history) = training::train_supervised(
        teacher,
        ctx.teacher_train,
        ctx.norm,
        &ctx.cfg.teacher.train,
        train_seed,
        &stage,
    )?;
    save_model(&teacher, &dir.join("model.safetensors"))?;
    Ok(Trained {
        compression: "none".into(),
        regularizer: "-".into(),
        round: 0,
        replicate: 0,
        model: teacher.valid(),
        seconds: start.elapsed().as_secs_f64(),
        history,
        key: stage_key(&(
            &ctx.data_key,
            &ctx.cfg.teacher,
            &arch,
            init_seed,
            train_seed,
        )),
    })
}

/// A student's label and folder name: `<stage>-<regularizer>`, with `-r<r>` for replicates
/// after the first (whose folder is the one runs had before there were replicates).
pub fn student_label(stage: &str, regularizer: &str, replicate: usize) -> String {
    match replicate {
        0 => format!("{stage}-{regularizer}"),
        r => format!("{stage}-{regularizer}-r{r}"),
    }
}

fn regularizers(cfg: &ExperimentConfig) -> Result<Vec<Box<dyn Regularizer>>> {
    cfg.regularizers
        .iter()
        .map(|r| matching::by_name(r, &cfg.matching))
        .collect()
}

/// Fine-tunes `replicates` students per regularizer in lockstep; `students[r * n + i]` is
/// replicate r of regularizer i (n regularizers) and checkpoints into
/// `<seed dir>/<stage>-<regularizer>` (replicate 0) or `<stage>-<regularizer>-r<r>`.
/// `upstream[j]` is the hash of everything student j starts from (see [`StudentRun::upstream`]).
#[allow(clippy::too_many_arguments)]
fn fine_tune_all(
    ctx: &Ctx,
    compression: &dyn Compression,
    students: Vec<Network>,
    upstream: Vec<String>,
    teacher: &Network,
    train: &TrainConfig,
    stage: &str,
    round: usize,
) -> Result<Vec<Trained>> {
    let cfg = ctx.cfg;
    let regs = regularizers(cfg)?;
    let n = regs.len().max(1);
    // (replicate, regularizer name) of each student, in `students` order
    let who: Vec<(usize, &String)> = (0..students.len())
        .map(|j| (j / n, &cfg.regularizers[j % n]))
        .collect();
    let labels: Vec<String> = who
        .iter()
        .map(|(r, reg)| student_label(stage, reg, *r))
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
    for (i, (model, upstream)) in students.into_iter().zip(upstream).enumerate() {
        let spec = FineTuneSpec {
            compression,
            regularizer: regs[i % n].as_ref(),
            matching: &cfg.matching,
            train,
            seed: derive_seed(ctx.seed, &format!("{stage}-{round}")),
            label: &labels[i],
        };
        runs.push(StudentRun {
            model,
            spec,
            dir: dirs[i].clone(),
            upstream,
        });
    }
    let keys: Vec<String> = runs
        .iter()
        .map(|r| {
            stage_key(&(
                &r.upstream,
                r.spec.regularizer.beta(),
                train,
                &cfg.matching,
                r.spec.seed,
            ))
        })
        .collect();
    let tuned =
        training::fine_tune_lockstep(runs, teacher, &ctx.splits.train, ctx.norm, ctx.validate)?;
    // Students train together; each is charged an equal share of the wall time.
    let share = start.elapsed().as_secs_f64() / tuned.len().max(1) as f64;
    let mut out = Vec::new();
    for ((((model, history), (replicate, reg)), dir), key) in
        tuned.into_iter().zip(who).zip(&dirs).zip(keys)
    {
        save_model(&model, &dir.join("model.safetensors"))?;
        out.push(Trained {
            // the method's name (a chain's, `kd+quantize`), not the stage's
            compression: stage.into(),
            regularizer: reg.clone(),
            round,
            replicate,
            model: model.valid(),
            seconds: share,
            history,
            key,
        });
    }
    Ok(out)
}

/// Runs a method's stages for every regularizer: each stage makes every regularizer's student
/// from that regularizer's network of the previous stage (the teacher for the first) and
/// fine-tunes them in lockstep. Fresh weights (KD students) come from one seed, so every
/// regularizer starts from identical students (a paired comparison); with several replicates
/// (`kd.replicates`) each replicate draws its own weights, shared by its regularizers. Returns
/// (the last stage's networks, those of all earlier stages), replicate-major.
fn method_students(
    ctx: &Ctx,
    method: &dyn Method,
    teacher: &Trained,
) -> Result<(Vec<Trained>, Vec<Trained>)> {
    let count = ctx.cfg.regularizers.len() * method.replicates();
    let mut current: Vec<Network> = vec![teacher.model.clone(); count];
    let mut upstream = vec![teacher.key.clone(); count];
    let n = ctx.cfg.regularizers.len().max(1);
    let init_seeds: Vec<u64> = (0..count)
        .map(|j| student_init_seed(ctx.seed, j / n))
        .collect();
    let (mut earlier, mut last) = (Vec::new(), Vec::new());
    for stage in method.stages()? {
        let budget = match stage.budget {
            Budget::Student => &ctx.cfg.student_train,
            Budget::Prune => &ctx.cfg.prune_train,
        };
        let train = TrainConfig {
            epochs: stage.epochs.unwrap_or(budget.epochs),
            ..budget.clone()
        };
        let students = current
            .iter()
            .zip(&init_seeds)
            .map(|(m, &init)| stage.compression.make_student(m, &ctx.ad, init))
            .collect::<Result<Vec<_>>>()?;
        let from = upstream
            .iter()
            .zip(&init_seeds)
            .map(|(u, init)| stage_key(&(u, &stage.settings_key, init)))
            .collect();
        let tuned = fine_tune_all(
            ctx,
            stage.compression.as_ref(),
            students,
            from,
            &teacher.model,
            &train,
            method.name(),
            stage.round,
        )?;
        current = tuned.iter().map(|t| t.model.clone()).collect();
        upstream = tuned.iter().map(|t| t.key.clone()).collect();
        earlier.append(&mut last);
        last = tuned;
    }
    Ok((last, earlier))
}

/// One overlay row per chosen test pair: image, then each network's map with the mask outline
/// and the map's maximum marked, under column titles, with row captions and a legend. Pairs
/// every network predicts come first (the paper's Fig. 4); they are chosen by correctness
/// alone, never by how the maps look: no cherry-picking.
fn draw_overlays(ctx: &Ctx, nets: &[&Trained], reference: &MapSet, path: &Path) -> Result<()> {
    let (cfg, test) = (ctx.cfg, &ctx.splits.test);
    let mut logits = Vec::new();
    for t in nets {
        logits.push(evaluation::predict(
            &t.model,
            test,
            ctx.norm,
            cfg.eval.batch_size,
        )?);
    }
    let chosen = overlay::choose_rows(
        &ground_truth_pairs(test),
        &logits,
        test.num_classes(),
        cfg.report.overlays,
    );
    if chosen.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(usize, usize)> = chosen.iter().map(|r| (r.image, r.class)).collect();
    let mut maps: Vec<Vec<Vec<f32>>> = vec![pairs.iter().map(|p| reference[p].clone()).collect()];
    for t in &nets[1..] {
        maps.push(evaluation::attribution_maps(
            &t.model,
            ctx.methods[0],
            test,
            ctx.norm,
            &pairs,
            cfg.eval.batch_size,
        )?);
    }
    let titles: Vec<String> = std::iter::once("image".to_string())
        .chain(
            nets.iter()
                .map(|t| overlay::column_title(&t.compression, &t.regularizer)),
        )
        .collect();
    let (h, w, scale) = (test.height, test.width, cfg.report.overlay_scale);
    let mut rows = Vec::new();
    for (j, row) in chosen.iter().enumerate() {
        let mask = test.class_mask(row.image, row.class);
        let plain = overlay::Panel {
            image: test.image(row.image),
            map: None,
            mask: Some(&mask),
            mark_max: false,
        };
        let mut panels = vec![overlay::render_panel(&plain, h, w, scale)?];
        for (m, &right) in maps.iter().zip(&row.correct) {
            let p = overlay::Panel {
                map: Some(&m[j]),
                mark_max: true,
                ..plain
            };
            let mut panel = overlay::render_panel(&p, h, w, scale)?;
            if !right {
                overlay::mark_missed(&mut panel)?;
            }
            panels.push(panel);
        }
        let class_name = &test.class_names[row.class];
        rows.push(overlay::FigureRow {
            caption: overlay::row_caption(row, class_name, &titles[1..]),
            panels,
        });
    }
    let any_constant = maps.iter().flatten().any(|m| overlay::is_constant(m));
    let legend = overlay::legend(&chosen, any_constant);
    overlay::save_png(&overlay::figure(&titles, &rows, &legend)?, path)?;
    let text = overlay::caption_text(&titles, &rows);
    write_atomic(&path.with_extension("txt"), text.as_bytes())
}

fn results_markdown(cfg: &ExperimentConfig, dataset: &str, tables: &str) -> String {
    format!(
        "# faithful: attribution-preserving compression\n\n\
         Dataset: {dataset}. Teacher `{}`. Compressions: {}. KD students at width /{} \
         (T = {}, alpha = {}); unstructured pruning {} rounds of {} (scope: {}); \
         structured L1 filter pruning at rate {}. Regularizers: {}; beta EWA {} / SWA,SSWA {}; \
         SSWA mode {}, drop {}; matched layer {}, distance {}, target {}. Attribution \
         method for evaluation: {}.\n\n\
         mAP, F1, AUC and point accuracy are in %; AUC and point accuracy are over test (image, \
         class) pairs whose class is present{}; cos and l2 compare \
         each network's map with the teacher's map of the same pair (maps bilinearly upsampled to \
         the input size; l2 = ||a/||a|| - b/||b|| ||, range [0, sqrt 2]). MMACs per image, latency \
         in ms for one image on this machine. Mean ± sample std over seeds.\n\n{tables}\n\
         `overlays-<compression>.png`: per row (captioned with the test image and class), the \
         image with the class mask outlined, then the maps of the teacher and of each compressed \
         network under their column titles, with the map's maximum marked by a green cross. Rows \
         are pairs every network predicts correctly where there are enough; a network that misses \
         the row's class has a red border and a `missed` tag, and an all-zero map (no positive \
         evidence) is hatched and labelled instead of marked. The legend is in the image; the \
         captions are also in the `.txt` beside it.\n",
        cfg.teacher.arch.layout_name(),
        cfg.compressions.join(", "),
        cfg.kd.width_divisor,
        cfg.kd.temperature,
        cfg.kd.alpha,
        cfg.unstructured.rounds,
        cfg.unstructured.rate,
        config_name(&cfg.unstructured.scope),
        cfg.structured.rate,
        cfg.regularizers.join(", "),
        cfg.matching.beta_ewa,
        cfg.matching.beta_swa,
        config_name(&cfg.matching.sswa_mode),
        cfg.matching.drop,
        config_name(&cfg.matching.layer),
        config_name(&cfg.matching.distance),
        config_name(&cfg.matching.target),
        cfg.eval.attributions.join(", "),
        match cfg.eval.pairs {
            PairSet::Predicted => " and predicted by that network",
            PairSet::Present => " (every such pair, predicted or not: `eval.pairs = \"present\"`)",
        },
    )
}

/// `--list-cells`: the grid's cells with their status in `out` (done: a record of the current
/// settings; stale: a record of other settings; running: another process holds the cell's
/// lock; pending).
pub fn list_cells(cfg: &ExperimentConfig, out: &Path) -> Result<String> {
    cfg.validate()?;
    let plan = cells::plan(cfg);
    let status = |c: &Cell| -> &'static str {
        if c.kind == CellKind::Report {
            return if out.join("results.json").is_file() {
                "merged"
            } else {
                "pending"
            };
        }
        let record = cells::any_record(out, &c.id).ok().flatten();
        match record {
            Some(r) if cells::settings_key(cfg, c).is_ok_and(|k| k == r.settings) => "done",
            Some(_) => "stale",
            None if out
                .join(cells::CELLS_DIR)
                .join(format!("{}.lock", c.id))
                .is_file()
                && cells::lock(out, &c.id).is_err() =>
            {
                "running"
            }
            None => "pending",
        }
    };
    Ok(cells::table(&plan, &status))
}
