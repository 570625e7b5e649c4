//! The `faithful` command line: parses arguments, calls the library, prints.

use anyhow::{Context, Result};
use burn::prelude::*;
use clap::{Parser, Subcommand, ValueEnum};
use faithful::config::ExperimentConfig;
use faithful::explain::ClassChoice;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "faithful",
    version,
    about = "Attribution-preserving network compression"
)]
struct Cli {
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Flex, global = true)]
    backend: Backend,
    /// Train on a backend whose training gradients are not verified (wgpu; see `doctor`).
    #[arg(long, global = true)]
    allow_unverified_training: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// Pure-Rust CPU backend.
    Flex,
    /// GPU through wgpu (build with `--features wgpu`).
    Wgpu,
    /// GPU through wgpu's Vulkan path with the SPIR-V compiler (build with `--features vulkan`).
    Vulkan,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// ONNX (opset 13), BatchNorm folded, dynamic batch.
    Onnx,
    /// ONNX whose mostly-zero weight tensors (an unstructured-pruned network's) are stored
    /// sparse (`sparse_initializer`); onnxruntime and `faithful::runtime` read it.
    OnnxSparse,
    /// safetensors with torchvision-style names + a JSON architecture description.
    Torch,
}

#[derive(Subcommand)]
enum Command {
    /// Train a teacher, distil students with each regularizer, evaluate, report.
    Demo {
        /// Smaller, faster run (a smoke test, 70-110 s on 2 cores).
        #[arg(long)]
        quick: bool,
        /// Experiment config (TOML); default: the built-in demo config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output folder (default runs/demo-<time>); an existing one is resumed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seeds to run, overriding the config (e.g. --seeds 0,1,2).
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
    },
    /// Run an experiment grid described by a TOML config (compressions x regularizers x seeds).
    Experiment {
        /// The experiment config (see `configs/`).
        config: PathBuf,
        /// Output folder (default runs/<config name>); an existing one is resumed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seeds to run, overriding the config.
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// Print the grid's cells (index, id, kind, level, status in --out, needs) and exit.
        #[arg(long, conflicts_with = "cell")]
        list_cells: bool,
        /// Run one cell only: its id (`kd-s0`), its index, or `env` for the index a scheduler
        /// sets (SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX).
        #[arg(long)]
        cell: Option<String>,
        /// With --cell N or env: N counts the cells of this dependency level only.
        #[arg(long, requires = "cell")]
        level: Option<usize>,
        /// With --cell: wait up to this many seconds for the cells it needs to finish.
        #[arg(long, default_value_t = 0, requires = "cell")]
        wait: u64,
    },
    /// Write (and with --submit, submit) Slurm job arrays that run a grid's cells, one array per
    /// dependency level chained with afterok.
    Slurm {
        /// The experiment config.
        config: PathBuf,
        /// The shared run folder (every node must see it).
        #[arg(long)]
        out: PathBuf,
        /// Seeds to run, overriding the config.
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// Slurm partition.
        #[arg(long)]
        partition: Option<String>,
        /// Time limit: `HH:MM:SS` for every cell kind, or `teacher=..,students=..,roar=..,report=..`.
        #[arg(long, default_value = "")]
        time: String,
        /// CPUs per cell (per kind as for --time).
        #[arg(long, default_value = "")]
        cpus_per_task: String,
        /// Memory per cell, e.g. `8G` (per kind as for --time).
        #[arg(long, default_value = "")]
        mem: String,
        /// GPUs per cell (per kind as for --time).
        #[arg(long, default_value = "")]
        gpus_per_task: String,
        /// The faithful binary the cells run (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Submit the scripts with sbatch.
        #[arg(long)]
        submit: bool,
    },
    /// Print a Kubernetes manifest that runs a grid's cells: a ConfigMap and one Indexed Job per
    /// dependency level (pods wait for the cells they need).
    K8s {
        /// The experiment config.
        config: PathBuf,
        /// Name of the grid's Kubernetes objects.
        #[arg(long, default_value = "faithful-grid")]
        name: String,
        /// Container image with `faithful` on its PATH.
        #[arg(long)]
        image: String,
        /// PersistentVolumeClaim (ReadWriteMany) holding the shared run folder.
        #[arg(long)]
        pvc: String,
        /// Where the claim is mounted in the pods.
        #[arg(long, default_value = "/runs")]
        mount: String,
        /// The run folder inside the pods (default: <mount>/<name>).
        #[arg(long)]
        out: Option<String>,
        /// Seeds to run, overriding the config.
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// CPU request per cell (per kind as for `slurm --time`).
        #[arg(long, default_value = "")]
        cpu: String,
        /// Memory request per cell, e.g. `8Gi` (per kind).
        #[arg(long, default_value = "")]
        memory: String,
        /// nvidia.com/gpu per cell (per kind).
        #[arg(long, default_value = "")]
        gpus: String,
        /// Seconds a pod waits for the cells it needs.
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        wait: u64,
    },
    /// Measure training throughput (images/s) for the teacher and each regularizer.
    Bench {
        /// Images per timed epoch.
        #[arg(long, default_value_t = 512)]
        images: usize,
        /// Experiment config whose architectures are timed.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Time the same stages in PyTorch and onnxruntime too, interleaved, side by side
        /// (needs a Python with torch, onnxruntime, safetensors and numpy).
        #[arg(long)]
        compare: bool,
        /// With --compare: interleaved rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// With --compare: timed calls per stage and round.
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// With --compare: the Python interpreter.
        #[arg(long, default_value = "python3")]
        python: String,
        /// With --compare: write bench.md and bench.json here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Predict and explain image files with a saved network: heat-map overlay PNGs per class.
    Explain {
        /// The network's weights (`model.safetensors` in a run folder).
        #[arg(long)]
        model: PathBuf,
        /// Image files (JPEG or PNG, any size).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Explain this class (by name) instead of the top ones.
        #[arg(long)]
        class: Option<String>,
        /// Number of top-scoring classes to explain.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Attribution method (`gradcam`, `gradcam-closed`).
        #[arg(long, default_value = "gradcam")]
        method: String,
        /// Dataset description (class names, normalisation); default: the run's dataset.json.
        #[arg(long)]
        info: Option<PathBuf>,
        /// Output folder for the overlays and explanations.json.
        #[arg(long, default_value = "explanations")]
        out: PathBuf,
    },
    /// Export a saved network for deployment: ONNX, or safetensors + JSON for PyTorch users.
    Export {
        /// The network's weights (`model.safetensors` in a run folder).
        #[arg(long)]
        model: PathBuf,
        /// Output path without extension (`.onnx`, or `.safetensors` + `.json`, are added).
        #[arg(long)]
        out: PathBuf,
        /// `onnx` or `torch`.
        #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
        format: ExportFormat,
        /// Dataset description (class names, normalisation); default: the run's dataset.json.
        #[arg(long)]
        info: Option<PathBuf>,
        /// ONNX: leave the input normalisation out of the graph (inputs are then normalised).
        #[arg(long)]
        no_normalization: bool,
    },
    /// Import torchvision VGG-BN or ResNet weights (`.safetensors` or `.pth`) as a faithful
    /// network.
    Import {
        /// torchvision architecture: vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn, resnet18 or resnet34.
        #[arg(long, default_value = "vgg16_bn")]
        arch: String,
        /// The state_dict file.
        #[arg(long)]
        weights: PathBuf,
        /// Replace the classifier's last layer by a fresh one with this many classes.
        #[arg(long)]
        num_classes: Option<usize>,
        /// Where to write the faithful network (`.safetensors`, with its `.arch.json`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Rebuild report.html of a finished or partial run folder.
    Report {
        /// The run folder (with config.toml and results.json).
        run: PathBuf,
    },
    /// Op-by-op parity of the chosen backend against flex: every op of a training step at the
    /// config teacher's shapes, each output's worst error (`--backend wgpu` on a GPU machine).
    Doctor {
        /// Experiment config whose teacher gives the shapes (default: the demo's).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Relative error above which an op is marked as differing.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f64,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Print the built-in experiment config as TOML (a starting point for --config).
    Config {
        /// The --quick variant.
        #[arg(long)]
        quick: bool,
    },
}

fn device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Flex => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => {
            eprintln!(
                "warning: with burn 0.22.1's wgpu backend, training gradients disagree with \
                 PyTorch's on the reference fixture (inference agrees); use flex for numbers \
                 you report (README, GPU backend)"
            );
            Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
        }
        #[cfg(not(feature = "wgpu"))]
        Backend::Wgpu => {
            anyhow::bail!("this build has no wgpu backend: rebuild with --features wgpu")
        }
        #[cfg(feature = "vulkan")]
        Backend::Vulkan => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(not(feature = "vulkan"))]
        Backend::Vulkan => {
            anyhow::bail!("this build has no vulkan backend: rebuild with --features vulkan")
        }
    }
}

fn load_config(path: &Option<PathBuf>, quick: bool) -> Result<ExperimentConfig> {
    match path {
        Some(p) => ExperimentConfig::load(p),
        None if quick => Ok(ExperimentConfig::quick()),
        None => Ok(ExperimentConfig::demo()),
    }
}

fn report_outcome(cfg: &ExperimentConfig, out: &std::path::Path, backend: Backend) -> Result<()> {
    let started = std::time::Instant::now();
    let outcome = faithful::experiment::run(cfg, out, &device(backend)?)
        .with_context(|| format!("experiment into {}", out.display()))?;
    println!("{}", outcome.table);
    println!(
        "wrote {} (results.json, results.md, pairs.csv, overlays-*.png, config.toml) in {:.0} s",
        outcome.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Flex => "flex",
        Backend::Wgpu => "wgpu",
        Backend::Vulkan => "vulkan",
    }
}

/// `faithful experiment --cell`: one cell of the grid.
fn run_one_cell(
    cfg: &ExperimentConfig,
    out: &std::path::Path,
    spec: &str,
    level: Option<usize>,
    wait: u64,
    backend: Backend,
) -> Result<()> {
    let plan = faithful::cells::plan(cfg);
    let cell = faithful::cells::select(&plan, spec, level)?;
    let outcome = faithful::experiment::run_cell(
        cfg,
        out,
        &device(backend)?,
        cell,
        std::time::Duration::from_secs(wait),
    )
    .with_context(|| format!("cell {} of {}", cell.id, out.display()))?;
    match outcome {
        faithful::experiment::CellOutcome::Merged(o) => println!("{}", o.table),
        faithful::experiment::CellOutcome::Skipped => {
            println!("cell {}: already finished", cell.id)
        }
        // the cell's own log line says how long it took
        faithful::experiment::CellOutcome::Ran => {}
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    faithful::training::allow_unverified_training(cli.allow_unverified_training);
    match cli.command {
        Command::Demo {
            quick,
            config,
            out,
            seeds,
        } => {
            let mut cfg = load_config(&config, quick)?;
            if let Some(s) = seeds {
                cfg.seeds = s;
            }
            let out = out.unwrap_or_else(|| {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from(format!("runs/demo-{stamp}"))
            });
            report_outcome(&cfg, &out, cli.backend)?;
        }
        Command::Experiment {
            config,
            out,
            seeds,
            list_cells,
            cell,
            level,
            wait,
        } => {
            let mut cfg = ExperimentConfig::load(&config)?;
            if let Some(s) = seeds {
                cfg.seeds = s;
            }
            let name = config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(name));
            if list_cells {
                print!("{}", faithful::experiment::list_cells(&cfg, &out)?);
            } else if let Some(spec) = cell {
                run_one_cell(&cfg, &out, &spec, level, wait, cli.backend)?;
            } else {
                report_outcome(&cfg, &out, cli.backend)?;
            }
        }
        Command::Slurm {
            config,
            out,
            seeds,
            partition,
            time,
            cpus_per_task,
            mem,
            gpus_per_task,
            binary,
            submit,
        } => {
            let mut cfg = ExperimentConfig::load(&config)?;
            if let Some(s) = seeds {
                cfg.seeds = s;
            }
            use faithful::cluster::{PerKind, slurm};
            let opts = slurm::SlurmOptions {
                binary: match binary {
                    Some(b) => std::path::absolute(b)?,
                    None => std::env::current_exe()?,
                },
                backend: backend_name(cli.backend).into(),
                partition,
                time: PerKind::parse("time", &time)?,
                cpus_per_task: PerKind::parse("cpus-per-task", &cpus_per_task)?,
                mem: PerKind::parse("mem", &mem)?,
                gpus_per_task: PerKind::parse("gpus-per-task", &gpus_per_task)?,
            };
            let scripts = slurm::write_scripts(&cfg, &std::path::absolute(&out)?, &opts)?;
            println!(
                "wrote {} ({} levels, cells listed in cells.tsv)",
                scripts.dir.display(),
                scripts.levels.len()
            );
            if submit {
                print!("{}", slurm::submit(&scripts)?);
            } else {
                println!("submit with: bash {}", scripts.submit.display());
            }
        }
        Command::K8s {
            config,
            name,
            image,
            pvc,
            mount,
            out,
            seeds,
            cpu,
            memory,
            gpus,
            wait,
        } => {
            let mut cfg = ExperimentConfig::load(&config)?;
            if let Some(s) = seeds {
                cfg.seeds = s;
            }
            use faithful::cluster::{PerKind, k8s};
            let run = out.unwrap_or_else(|| format!("{}/{name}", mount.trim_end_matches('/')));
            let opts = k8s::K8sOptions {
                name,
                image,
                claim: pvc,
                mount,
                run,
                backend: backend_name(cli.backend).into(),
                cpu: PerKind::parse("cpu", &cpu)?,
                memory: PerKind::parse("memory", &memory)?,
                gpus: PerKind::parse("gpus", &gpus)?,
                wait_seconds: wait,
            };
            print!("{}", k8s::manifest(&cfg, &opts)?);
        }
        Command::Bench {
            images,
            config,
            compare,
            rounds,
            iters,
            python,
            out,
        } => {
            let cfg = load_config(&config, false)?;
            let dev = device(cli.backend)?;
            if compare {
                let opts = faithful::bench::compare::CompareOptions {
                    rounds,
                    iters,
                    python,
                    batch: cfg.student_train.batch_size,
                    eval_batch: cfg.eval.batch_size,
                };
                let work =
                    std::env::temp_dir().join(format!("faithful-compare-{}", std::process::id()));
                let result = faithful::bench::compare::compare(&cfg, &opts, &dev, &work)?;
                let md = result.markdown();
                println!("{md}");
                if let Some(out) = out {
                    std::fs::create_dir_all(&out)
                        .with_context(|| format!("cannot create {}", out.display()))?;
                    faithful::util::write_atomic(&out.join("bench.md"), md.as_bytes())?;
                    faithful::util::write_atomic(
                        &out.join("bench.json"),
                        serde_json::to_string_pretty(&result)?.as_bytes(),
                    )?;
                }
                return Ok(());
            }
            let mut rows = faithful::bench::fixture_steps(&dev, 10)?;
            rows.extend(faithful::bench::run(&cfg, images, &dev)?);
            println!("| stage | images/s | ms/step |\n|---|---:|---:|");
            for r in &rows {
                println!(
                    "| {} | {:.1} | {:.1} |",
                    r.stage, r.images_per_second, r.ms_per_step
                );
            }
            println!("{}", serde_json::to_string(&rows)?);
        }
        Command::Explain {
            model,
            images,
            class,
            top,
            method,
            info,
            out,
        } => {
            let choice = match class {
                Some(name) => ClassChoice::Named(name),
                None => ClassChoice::Top(top),
            };
            let explained = faithful::explain::explain_files(
                &model,
                info.as_deref(),
                &images,
                faithful::attribution::by_name(&method)?,
                &choice,
                &out,
                &device(cli.backend)?,
            )?;
            for e in &explained {
                println!("{} ({}x{}):", e.image.display(), e.size.0, e.size.1);
                for c in &e.classes {
                    println!("  {}", c.summary());
                }
            }
            println!("wrote {}", out.join("explanations.json").display());
        }
        Command::Export {
            model,
            out,
            format,
            info,
            no_normalization,
        } => {
            // the model file first: a missing model is reported as such, whatever else is wrong
            faithful::models::check_model_file(&model)?;
            let dev = device(cli.backend)?;
            let net = faithful::models::load_model(&model, &dev)?;
            let info_path = info.or_else(|| faithful::explain::find_dataset_info(&model));
            let info = match info_path.as_deref() {
                Some(p) => {
                    let i = faithful::explain::DatasetInfo::load(p)?;
                    faithful::export::check_dataset_info(&i, &net, p)?;
                    Some(i)
                }
                None => None,
            };
            let norm = info
                .as_ref()
                .filter(|_| !no_normalization)
                .map(|i| (i.normalization.mean, i.normalization.std));
            let written = match format {
                ExportFormat::Onnx => {
                    let path = out.with_extension("onnx");
                    faithful::export::export_onnx(&net, &path, norm)?;
                    path.display().to_string()
                }
                ExportFormat::OnnxSparse => {
                    let path = out.with_extension("onnx");
                    let (summary, dense_bytes, sparse_bytes) =
                        faithful::export::onnx_sparse::export_onnx_sparse(&net, &path, norm)?;
                    format!(
                        "{} ({} of {} weight tensors sparse, {:.1}% of their weights non-zero; \
                         {sparse_bytes} bytes, dense ONNX {dense_bytes} bytes)",
                        path.display(),
                        summary.tensors,
                        summary.tensors + summary.dense_tensors,
                        100.0 * summary.nonzero as f64 / summary.elements.max(1) as f64
                    )
                }
                ExportFormat::Torch => {
                    let names = info.as_ref().map(|i| i.class_names.as_slice());
                    faithful::export::export_torch_network(&net, &out, names, norm)?;
                    let (w, j) = faithful::export::torch::export_paths(&out);
                    format!("{} and {}", w.display(), j.display())
                }
            };
            if info.is_none() {
                eprintln!(
                    "note: no dataset.json found; class names and normalisation not recorded"
                );
            }
            println!(
                "wrote {written} ({} parameters, {:.2} MMACs)",
                net.params(),
                net.macs() as f64 / 1e6
            );
        }
        Command::Import {
            arch,
            weights,
            num_classes,
            out,
        } => {
            if out.is_dir() {
                anyhow::bail!(
                    "{} is a directory; --out names the .safetensors file to write",
                    out.display()
                );
            }
            let dev = device(cli.backend)?;
            let net = faithful::models::import_torchvision(&arch, &weights, num_classes, &dev, 0)?;
            faithful::models::save_model(&net, &out)?;
            println!(
                "wrote {} ({} parameters, {} classes)",
                out.display(),
                net.params(),
                net.num_classes()
            );
        }
        Command::Report { run } => {
            let path = faithful::experiment::report(&run)
                .with_context(|| format!("report of {}", run.display()))?;
            println!("wrote {}", path.display());
        }
        Command::Doctor {
            config,
            tolerance,
            json,
        } => {
            let cfg = load_config(&config, false)?;
            let dev = device(cli.backend)?;
            let rows = faithful::doctor::op_parity(&cfg, &dev, 0)?;
            println!(
                "backend {} against flex, {} op outputs:\n",
                backend_name(cli.backend),
                rows.len()
            );
            print!("{}", faithful::doctor::markdown(&rows, tolerance));
            if let Some(path) = json {
                faithful::util::write_atomic(
                    &path,
                    serde_json::to_string_pretty(&rows)?.as_bytes(),
                )?;
            }
            let differing = rows
                .iter()
                .filter(|r| r.relative.is_nan() || r.relative > tolerance)
                .count();
            if differing > 0 {
                anyhow::bail!(
                    "{differing} op outputs differ from flex by more than {tolerance:e} (relative)"
                );
            }
            println!("\nevery op agrees with flex within {tolerance:e}");
        }
        Command::Config { quick } => {
            print!("{}", load_config(&None, quick)?.to_toml()?);
        }
    }
    Ok(())
}
