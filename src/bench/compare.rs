//! `faithful bench --compare`: faithful's training steps, attribution maps and inference timed
//! side by side with PyTorch, and with onnxruntime running faithful's own ONNX export, in one
//! run.
//!
//! Both sides time the same networks: faithful builds the teacher and the /8 student of the
//! config, exports them (its PyTorch export, loaded by `python/faithful_torch.py`, and its ONNX
//! export) and starts `python/bench_compare.py` on them. Rounds are interleaved: a round of
//! faithful's stages, then a round of the Python side's, so that machine noise (another process,
//! the CPU's clock) hits both alike. Each stage is the median of a few calls after a warm-up;
//! the table gives the median over rounds and the spread (min–max). Peak memory is the
//! process's peak resident set during the stage (the kernel's counter, reset before it; both
//! processes hold their own baseline of code and data, so compare differences, not totals).

use crate::attribution::gradcam::cam_from_weights;
use crate::attribution::{closed_form::gradcam_weights, one_hot};
use crate::compression::{Compression, bce_with_logits};
use crate::config::ExperimentConfig;
use crate::data::{Dataset, synthetic};
use crate::matching;
use crate::models::{HeadDropout, Network, VggArch};
use crate::training::{FineTuneSpec, Normalization, StudentRun, TrainConfig, fine_tune_lockstep};
use crate::util::{derive_seed, seeded_random};
use anyhow::{Context, Result, bail};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// The Python side, embedded so that the binary needs no source checkout.
const SCRIPTS: &[(&str, &str)] = &[
    (
        "bench_compare.py",
        include_str!("../../python/bench_compare.py"),
    ),
    (
        "bench_torch.py",
        include_str!("../../python/bench_torch.py"),
    ),
    (
        "faithful_torch.py",
        include_str!("../../python/faithful_torch.py"),
    ),
];

/// Settings of one comparison.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Interleaved rounds (each side times every stage once per round).
    pub rounds: usize,
    /// Timed calls per stage and round (after one warm-up call).
    pub iters: usize,
    /// The Python interpreter with torch, onnxruntime, safetensors and numpy.
    pub python: String,
    /// Training batch size (and the larger inference batch).
    pub batch: usize,
    /// Attribution batch size (as `eval.batch_size`).
    pub eval_batch: usize,
}

/// One stage measured by one framework over the rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    /// Milliseconds per call, one value per round.
    pub ms: Vec<f64>,
    /// Peak resident memory in MB during the stage, one value per round.
    pub peak_mb: Vec<f64>,
}

/// The whole comparison: per stage, per framework (`faithful`, `pytorch`, `onnxruntime`).
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// CPU model, cores and vector extensions of this machine.
    pub machine: String,
    /// Worker threads on each side.
    pub threads: usize,
    /// Versions of the reference frameworks.
    pub versions: BTreeMap<String, String>,
    /// Stage name -> framework -> series, in the order measured.
    pub stages: Vec<(String, BTreeMap<String, Series>)>,
    /// What each stage holds (batch sizes, what is included).
    pub notes: Vec<String>,
    /// Teacher MACs over the structured-pruned teacher's.
    pub mac_ratio: f64,
}

/// Runs the comparison; `work` is a scratch folder (created, and removed afterwards).
pub fn compare(
    cfg: &ExperimentConfig,
    opts: &CompareOptions,
    device: &Device,
    work: &Path,
) -> Result<Comparison> {
    if opts.rounds == 0 || opts.iters == 0 || opts.batch == 0 || opts.eval_batch == 0 {
        bail!("bench --compare: rounds, iters and batch sizes must be at least 1");
    }
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = compare_in(cfg, opts, device, work);
    let _ = std::fs::remove_dir_all(work);
    result
}

fn compare_in(
    cfg: &ExperimentConfig,
    opts: &CompareOptions,
    device: &Device,
    work: &Path,
) -> Result<Comparison> {
    let mut ours = FaithfulStages::new(cfg, opts, device, &work.join("stages"))?;
    let teacher_stem = work.join("teacher");
    let student_stem = work.join("student");
    let mut extra = Vec::new();
    for (name, net) in ours.inference_nets() {
        let stem = work.join(name);
        crate::export::export_torch_network(net, &stem, None, None)?;
        crate::export::export_onnx(net, &stem.with_extension("onnx"), None)?;
        if name != "teacher" && name != "student" {
            extra.push(format!("{name}={}", stem.display()));
        }
    }
    let mut python = PythonSide::start(opts, work, &teacher_stem, &student_stem, &extra)?;
    let mut stages: Vec<(String, BTreeMap<String, Series>)> = Vec::new();
    let mut record = |framework: &str, stage: &str, ms: f64, peak: f64| {
        let pos = match stages.iter().position(|(s, _)| s == stage) {
            Some(p) => p,
            None => {
                stages.push((stage.to_string(), BTreeMap::new()));
                stages.len() - 1
            }
        };
        let series = stages[pos].1.entry(framework.to_string()).or_default();
        series.ms.push(ms);
        series.peak_mb.push(peak);
    };
    for round in 0..opts.rounds {
        eprintln!(
            "bench --compare: round {}/{} (faithful)",
            round + 1,
            opts.rounds
        );
        for (stage, ms, peak) in ours.round()? {
            record("faithful", &stage, ms, peak);
        }
        for (stage, ms, peak) in ours.sparse_round()? {
            record(RUNTIME, &stage, ms, peak);
        }
        eprintln!(
            "bench --compare: round {}/{} (python)",
            round + 1,
            opts.rounds
        );
        for (framework, stage, ms, peak) in python.round()? {
            record(&framework, &stage, ms, peak);
        }
    }
    let mut versions = python.versions.clone();
    python.quit();
    versions.insert("faithful".into(), env!("CARGO_PKG_VERSION").into());
    let macs = |n: &Network| n.macs() as f64;
    let mac_ratio = macs(&ours.teacher_eval) / macs(&ours.structured);
    let density = ours.runtimes[2].1.density();
    let mut notes = notes(cfg, opts);
    notes.push(format!(
        "{PRUNED_NAME}: the teacher with {:.0}% of its conv weights zeroed (global magnitude); \
         `faithful` is flex's dense forward, `faithful runtime` is faithful's sparse runtime \
         (`faithful::runtime`, on the sparse ONNX file: {:.1}% of all conv and linear weights \
         non-zero), onnxruntime runs the dense ONNX file. The runtime also runs the other \
         networks (their weights dense, held the same way)",
        100.0 * PRUNED_FRACTION,
        100.0 * density
    ));
    notes.push(format!(
        "{STRUCTURED_NAME}: filter pruning at rate {} ({:.1}x fewer MACs than the teacher)",
        cfg.structured.rate, mac_ratio
    ));
    Ok(Comparison {
        mac_ratio,
        machine: machine_description(),
        threads: rayon::current_num_threads(),
        versions,
        stages,
        notes,
    })
}

fn notes(cfg: &ExperimentConfig, opts: &CompareOptions) -> Vec<String> {
    vec![
        format!(
            "teacher: `{}` ({}), student: width /{}; training steps at batch {}, SGD with \
             momentum, BCE (students: the KD loss, T = {}, alpha = {})",
            cfg.teacher_arch().layout_name(),
            cfg.teacher_arch().describe(),
            cfg.kd.width_divisor,
            opts.batch,
            cfg.kd.temperature,
            cfg.kd.alpha
        ),
        "faithful's student steps are its real fine-tuning loop (batch preparation with \
         augmentation and the teacher's forward pass included, per step); PyTorch's are the same \
         losses on a fixed batch. PyTorch computes the student's Grad-CAM by double backprop \
         (create_graph=True, as the authors' code); faithful by its closed form"
            .into(),
        "fixture net: the reference fixture's network (conv 32-64-128-256, fc 256, fc 20), batch \
         32, 64 px; the Grad-CAM-loss step adds 50 mean(cam * mask) of class 3"
            .into(),
        format!(
            "teacher Grad-CAM maps: one batch of {} (image, class) pairs at the last conv layer",
            opts.eval_batch
        ),
        "inference: evaluation mode, logits of N images; onnxruntime runs faithful's own ONNX \
         export of the same weights (BatchNorm folded)"
            .into(),
    ]
}

/// The machine's CPU, as `/proc/cpuinfo` names it, its core count and widest x86 vector
/// extension.
pub fn machine_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let simd = if flags.contains(" avx512f") {
        "AVX-512"
    } else if flags.contains(" avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    format!(
        "{model}, {} logical cores, {simd}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// Resets this process's peak resident memory counter (Linux `clear_refs` 5); false where it
/// is not supported (the peak is then the process's peak so far).
pub fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak resident memory in MB (Linux `VmHWM`), NaN where unknown.
pub fn peak_memory_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Median milliseconds of `iters` calls of `f` after one warm-up call, and the peak memory.
fn timed(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    reset_peak_memory();
    f()?;
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f()?;
        ms.push(1e3 * t0.elapsed().as_secs_f64());
    }
    Ok((median(&mut ms), peak_memory_mb()))
}

/// Median of `v` (sorted in place); NaN for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The framework name of faithful's own runtime in the results.
const RUNTIME: &str = "faithful-runtime";
/// Fraction of the teacher's conv weights the sparse-inference stages zero.
const PRUNED_FRACTION: f64 = 0.97;
/// Stage-name stem of the unstructured-pruned teacher.
const PRUNED_NAME: &str = "teacher-97%-pruned";
/// Stage-name stem of the structured-pruned teacher.
const STRUCTURED_NAME: &str = "teacher-filter-pruned";

/// The name of an inference stage (as the Python side names it).
fn inference_stage(net: &str, images: usize) -> String {
    let plural = if images == 1 { "" } else { "s" };
    format!("{net} inference, {images} image{plural}")
}

/// A network being trained step by step with its optimiser.
struct Trainee {
    model: Option<Network>,
    optim: burn::optim::ModuleOptimizer,
}

impl Trainee {
    fn new(model: Network) -> Self {
        let optim = TrainConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            ..TrainConfig::default()
        }
        .optimizer();
        Self {
            model: Some(model),
            optim,
        }
    }

    /// One SGD step on BCE (plus `50 mean(cam_3 * mask)` when a mask is given).
    fn step(&mut self, x: &Tensor<4>, y: &Tensor<2>, cam_mask: Option<&Tensor<3>>) -> Result<()> {
        let model = self.model.take().expect("a trainee always holds its model");
        let a = model.features(x.clone());
        let head = model.head();
        let layers = head.layers();
        let logits = head.forward(a.clone(), &HeadDropout::none(layers));
        let mut loss = bce_with_logits(logits, y.clone());
        if let Some(mask) = cam_mask {
            let [n, _, h, w] = a.dims();
            let target = one_hot(&vec![3; n], y.dims()[1], &x.device());
            let weights = gradcam_weights(&head, a.clone(), target, &HeadDropout::none(layers));
            let cam = cam_from_weights(a, weights.div_scalar((h * w) as f64));
            loss = loss + (cam * mask.clone()).mean().mul_scalar(50.0);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(1e-3, model, grads));
        Ok(())
    }
}

/// faithful's side: the networks, inputs and scratch folder of every stage.
struct FaithfulStages<'a> {
    cfg: &'a ExperimentConfig,
    opts: &'a CompareOptions,
    teacher: Trainee,
    fixture: Trainee,
    teacher_eval: Network,
    student_init: Network,
    student_eval: Network,
    /// The teacher with 97% of the weights of every conv layer zeroed (magnitude).
    pruned: Network,
    /// faithful's runtime for each inference network (`inference_nets` order).
    runtimes: Vec<(&'static str, crate::runtime::Runtime)>,
    /// The teacher after structured filter pruning at the config's rate.
    structured: Network,
    x: Tensor<4>,
    y: Tensor<2>,
    fx: Tensor<4>,
    fy: Tensor<2>,
    fmask: Tensor<3>,
    x_plain: Tensor<4>,
    students_data: Dataset,
    eval_data: Dataset,
    norm: Normalization,
    dir: PathBuf,
}

impl<'a> FaithfulStages<'a> {
    fn new(
        cfg: &'a ExperimentConfig,
        opts: &'a CompareOptions,
        device: &Device,
        dir: &Path,
    ) -> Result<Self> {
        let ad = device.clone().autodiff();
        let teacher_arch = cfg.teacher_arch();
        let teacher = teacher_arch.init(&ad, 0)?;
        let teacher_eval = teacher.valid();
        let student_init =
            cfg.kd
                .make_student(&teacher_eval, &ad, derive_seed(0, "bench-student"))?;
        let student_eval = student_init.valid();
        let side = teacher_arch.input_size();
        let k = teacher_arch.num_classes();
        let random =
            |dims: [usize; 4], seed| seeded_random(dims, Distribution::Normal(0.0, 1.0), &ad, seed);
        let labels = |n: usize, k: usize, p: f64, seed| {
            seeded_random([n, k], Distribution::Uniform(0.0, 1.0), &ad, seed)
                .greater_elem(p)
                .float()
        };
        let x = random([opts.batch, 3, side, side], 0);
        let mut data_cfg = cfg.data.clone();
        data_cfg.n_train = opts.batch * opts.iters;
        data_cfg.n_val = 1;
        data_cfg.n_test = opts.eval_batch;
        let splits = synthetic::generate(&data_cfg)?;
        let norm = Normalization::of(&splits.train);
        let pruned = crate::compression::unstructured::prune_to(
            teacher_eval.clone(),
            PRUNED_FRACTION,
            crate::compression::unstructured::PruneScope::PerLayer,
        )?;
        let structured = cfg.structured.make_student(&teacher_eval, device, 0)?;
        let mut runtimes = Vec::new();
        for (name, net) in [
            ("teacher", &teacher_eval),
            ("student", &student_eval),
            (PRUNED_NAME, &pruned),
            (STRUCTURED_NAME, &structured),
        ] {
            let mut proto = crate::export::onnx::network_onnx_model(net, None)?;
            crate::export::onnx_sparse::sparsify(&mut proto, 1.0 / 3.0)?;
            runtimes.push((name, crate::runtime::Runtime::from_model(&proto)?));
        }
        Ok(Self {
            pruned,
            runtimes,
            structured,
            cfg,
            opts,
            teacher: Trainee::new(teacher),
            fixture: Trainee::new(VggArch::reference_fixture().init(&ad, 0)?.into()),
            teacher_eval,
            student_init,
            student_eval,
            x_plain: x.clone().inner(),
            y: labels(opts.batch, k, 0.8, 1),
            x,
            fx: random([32, 3, 64, 64], 2),
            fy: labels(32, 20, 0.5, 3),
            fmask: seeded_random([32, 8, 8], Distribution::Uniform(0.0, 1.0), &ad, 4),
            students_data: splits.train,
            eval_data: splits.test,
            norm,
            dir: dir.to_path_buf(),
        })
    }

    /// Every stage once: (stage, median ms, peak MB).
    fn round(&mut self) -> Result<Vec<(String, f64, f64)>> {
        let iters = self.opts.iters;
        let mut out = Vec::new();
        let (x, y) = (self.x.clone(), self.y.clone());
        let (ms, mb) = timed(iters, || self.teacher.step(&x, &y, None))?;
        out.push(("teacher train step".to_string(), ms, mb));
        out.extend(self.student_steps()?);
        let (fx, fy, fmask) = (self.fx.clone(), self.fy.clone(), self.fmask.clone());
        let (ms, mb) = timed(iters, || self.fixture.step(&fx, &fy, None))?;
        out.push(("fixture train step".into(), ms, mb));
        let (ms, mb) = timed(iters, || self.fixture.step(&fx, &fy, Some(&fmask)))?;
        out.push(("fixture Grad-CAM-loss step".into(), ms, mb));
        out.push(self.gradcam_maps()?);
        for (name, net) in self.inference_nets() {
            for n in [1, self.opts.batch] {
                let x = self.x_plain.clone().narrow(0, 0, n);
                let (ms, mb) = timed(4 * iters, || {
                    let logits = net.forward(x.clone());
                    logits.into_data();
                    Ok(())
                })?;
                out.push((inference_stage(name, n), ms, mb));
            }
        }
        Ok(out)
    }

    /// faithful's runtime on every inference network: (stage, ms, peak MB).
    fn sparse_round(&self) -> Result<Vec<(String, f64, f64)>> {
        let mut out = Vec::new();
        for ((name, runtime), n) in self
            .runtimes
            .iter()
            .flat_map(|r| [(r, 1), (r, self.opts.batch)])
        {
            let x: Vec<f32> = self
                .x_plain
                .clone()
                .narrow(0, 0, n)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let (ms, mb) = timed(4 * self.opts.iters, || {
                runtime.run(&x, n)?;
                Ok(())
            })?;
            out.push((inference_stage(name, n), ms, mb));
        }
        Ok(out)
    }

    /// The networks timed at inference, by stage name.
    fn inference_nets(&self) -> Vec<(&'static str, &Network)> {
        vec![
            ("teacher", &self.teacher_eval),
            ("student", &self.student_eval),
            (PRUNED_NAME, &self.pruned),
            (STRUCTURED_NAME, &self.structured),
        ]
    }

    /// Per-step milliseconds of faithful's fine-tuning loop for the student with each of the
    /// paper's regularizers, alone and all four in lockstep (one epoch of `iters` batches).
    fn student_steps(&self) -> Result<Vec<(String, f64, f64)>> {
        let train = TrainConfig {
            epochs: 1,
            min_steps: 0,
            warmup_epochs: 0.0,
            batch_size: self.opts.batch,
            ..self.cfg.student_train.clone()
        };
        let regs = matching::PAPER
            .iter()
            .map(|name| matching::by_name(name, &self.cfg.matching))
            .collect::<Result<Vec<_>>>()?;
        let spec = |i: usize| FineTuneSpec {
            compression: &self.cfg.kd,
            regularizer: regs[i].as_ref(),
            matching: &self.cfg.matching,
            train: &train,
            seed: 0,
            label: matching::PAPER[i],
        };
        let steps = self.opts.iters as f64;
        let mut out = Vec::new();
        let run = |runs: Vec<usize>| -> Result<(f64, f64)> {
            let _ = std::fs::remove_dir_all(&self.dir);
            let runs: Vec<StudentRun> = runs
                .into_iter()
                .map(|i| StudentRun {
                    model: self.student_init.clone(),
                    spec: spec(i),
                    dir: self.dir.join(matching::PAPER[i]),
                    upstream: String::new(),
                })
                .collect();
            reset_peak_memory();
            let t0 = Instant::now();
            fine_tune_lockstep(
                runs,
                &self.teacher_eval,
                &self.students_data,
                &self.norm,
                None,
            )?;
            Ok((1e3 * t0.elapsed().as_secs_f64() / steps, peak_memory_mb()))
        };
        for (i, name) in matching::PAPER.iter().enumerate() {
            let (ms, mb) = run(vec![i])?;
            let stage = if *name == "none" {
                "student KD step".to_string()
            } else {
                format!("student KD + {} step", name.to_uppercase())
            };
            out.push((stage, ms, mb));
        }
        let (ms, mb) = run((0..regs.len()).collect())?;
        out.push((
            format!("{} students in lockstep, one step", regs.len()),
            ms,
            mb,
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(out)
    }

    fn gradcam_maps(&self) -> Result<(String, f64, f64)> {
        let gradcam = crate::attribution::by_name("gradcam")?;
        let k = self.teacher_eval.num_classes();
        let pairs: Vec<(usize, usize)> = (0..self.eval_data.len()).map(|i| (i, i % k)).collect();
        let (ms, mb) = timed(self.opts.iters, || {
            crate::evaluation::attribution_maps(
                &self.teacher_eval,
                gradcam,
                &self.eval_data,
                &self.norm,
                &pairs,
                self.opts.eval_batch,
            )?;
            Ok(())
        })?;
        Ok(("teacher Grad-CAM maps".into(), ms, mb))
    }
}

/// The running `bench_compare.py` process.
struct PythonSide {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    versions: BTreeMap<String, String>,
}

impl PythonSide {
    fn start(
        opts: &CompareOptions,
        work: &Path,
        teacher: &Path,
        student: &Path,
        extra: &[String],
    ) -> Result<Self> {
        for (name, text) in SCRIPTS {
            crate::util::write_atomic(&work.join(name), text.as_bytes())?;
        }
        let onnx = |stem: &Path| stem.with_extension("onnx");
        let mut child = Command::new(&opts.python)
            .arg(work.join("bench_compare.py"))
            .arg("--teacher")
            .arg(teacher)
            .arg("--student")
            .arg(student)
            .arg("--onnx-teacher")
            .arg(onnx(teacher))
            .arg("--onnx-student")
            .arg(onnx(student))
            .args(["--threads", &rayon::current_num_threads().to_string()])
            .args(["--batch", &opts.batch.to_string()])
            .args(["--eval-batch", &opts.eval_batch.to_string()])
            .args(["--iters", &opts.iters.to_string()])
            .args(extra.iter().flat_map(|e| ["--extra", e.as_str()]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "bench --compare: cannot start `{}` (set --python to an interpreter with \
                     torch, onnxruntime, safetensors and numpy)",
                    opts.python
                )
            })?;
        let stdin = child.stdin.take().context("python's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("python's stdout")?);
        let mut side = Self {
            child,
            stdin,
            stdout,
            versions: BTreeMap::new(),
        };
        let ready = side.read_line().with_context(|| {
            format!(
                "bench --compare: `{}` did not start the benchmark (its error is above; it needs \
                 torch, onnxruntime, safetensors and numpy: pip install torch onnxruntime \
                 safetensors numpy)",
                opts.python
            )
        })?;
        for key in ["torch", "onnxruntime"] {
            if let Some(v) = ready.get(key).and_then(|v| v.as_str()) {
                let name = if key == "torch" { "pytorch" } else { key };
                side.versions.insert(name.into(), v.into());
            }
        }
        Ok(side)
    }

    fn read_line(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim().is_empty() {
            bail!("the Python side ended without answering");
        }
        serde_json::from_str(&line).with_context(|| format!("not JSON from Python: {line:?}"))
    }

    /// One round: (framework, stage, ms, peak MB) for every stage the script times.
    fn round(&mut self) -> Result<Vec<(String, String, f64, f64)>> {
        writeln!(self.stdin, "round")?;
        self.stdin.flush()?;
        let answer = self.read_line()?;
        let mut out = Vec::new();
        let Some(frameworks) = answer.as_object() else {
            bail!("the Python side answered {answer}, not an object");
        };
        for (framework, stages) in frameworks {
            for (stage, v) in stages.as_object().into_iter().flatten() {
                let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
                out.push((framework.clone(), stage.clone(), num("ms"), num("peak_mb")));
            }
        }
        Ok(out)
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

impl Comparison {
    /// The Markdown table: per stage, each framework's median ms (min–max over rounds) and
    /// peak MB, and faithful's time over PyTorch's and over onnxruntime's.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Machine: {}; {} threads on each side; {}.\n\n",
            self.machine,
            self.threads,
            self.versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s.push_str(
            "| stage | faithful ms | faithful runtime ms | PyTorch ms | onnxruntime ms | \
             faithful / PyTorch | faithful / onnxruntime | peak MB faithful / PyTorch |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (stage, by) in &self.stages {
            let cell = |f: &str| by.get(f).map_or("–".to_string(), spread);
            let ratio =
                |f: &str| match (self.median_ms(stage, "faithful"), self.median_ms(stage, f)) {
                    (Some(a), Some(b)) => format!("{:.2}×", a / b),
                    _ => "–".into(),
                };
            let peak = |f: &str| {
                by.get(f).map_or("–".into(), |x| {
                    format!("{:.0}", median(&mut x.peak_mb.clone()))
                })
            };
            s.push_str(&format!(
                "| {stage} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
                cell("faithful"),
                cell(RUNTIME),
                cell("pytorch"),
                cell("onnxruntime"),
                ratio("pytorch"),
                ratio("onnxruntime"),
                peak("faithful"),
                peak("pytorch")
            ));
        }
        s.push('\n');
        for line in self.pruning_summary() {
            s.push_str(&format!("- {line}\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s
    }

    /// The median milliseconds of `stage` under `framework`, when measured.
    pub fn median_ms(&self, stage: &str, framework: &str) -> Option<f64> {
        let (_, by) = self.stages.iter().find(|(s, _)| s == stage)?;
        by.get(framework).map(|x| median(&mut x.ms.clone()))
    }

    /// Whether pruning pays at inference: the sparse runtime's speed-up over flex's dense
    /// forward of the same pruned network, and the filter-pruned network's batch throughput
    /// gain against its MAC ratio.
    pub fn pruning_summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (stage, _) in &self.stages {
            if stage.starts_with(PRUNED_NAME) {
                let dense = self.median_ms(stage, "faithful");
                let sparse = self.median_ms(stage, RUNTIME);
                if let (Some(d), Some(sp)) = (dense, sparse) {
                    out.push(format!(
                        "{stage}: the sparse runtime is {:.1}× faster than flex's dense forward",
                        d / sp
                    ));
                }
            }
            if let Some(rest) = stage.strip_prefix(STRUCTURED_NAME) {
                let teacher_stage = format!("teacher{rest}");
                for (engine, label) in [("faithful", "flex"), (RUNTIME, "faithful runtime")] {
                    let teacher = self.median_ms(&teacher_stage, engine);
                    if let (Some(t), Some(p)) = (teacher, self.median_ms(stage, engine)) {
                        out.push(format!(
                            "{stage} ({label}): {:.1}× the teacher's throughput for {:.1}× \
                             fewer MACs ({:.0}% of the MAC ratio)",
                            t / p,
                            self.mac_ratio,
                            100.0 * (t / p) / self.mac_ratio
                        ));
                    }
                }
            }
        }
        out
    }
}

/// "median (min–max)" of a series' milliseconds.
fn spread(x: &Series) -> String {
    let mut v = x.ms.clone();
    let m = median(&mut v);
    let (lo, hi) = (
        v.first().copied().unwrap_or(m),
        v.last().copied().unwrap_or(m),
    );
    let digits = if m < 10.0 { 2 } else { 1 };
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn peak_memory_grows_with_a_touched_allocation_and_resets() {
        if !reset_peak_memory() {
            eprintln!("SKIPPED: this kernel cannot reset the peak-memory counter");
            return;
        }
        let before = peak_memory_mb();
        let mut big = vec![0u8; 64 << 20];
        for page in big.chunks_mut(4096) {
            page[0] = 1; // touch every page so that it is resident
        }
        std::hint::black_box(&big);
        let during = peak_memory_mb();
        assert!(during - before > 50.0, "{before} -> {during}");
        drop(big);
    }
}
