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
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// Pure-Rust CPU backend.
    Flex,
    /// GPU through wgpu (build with `--features wgpu`).
    Wgpu,
}

#[derive(Subcommand)]
enum Command {
    /// Train a teacher, distil students with each regularizer, evaluate, report.
    Demo {
        /// Smaller, faster run (a smoke test, under 2 minutes).
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
    },
    /// Measure training throughput (images/s) for the teacher and each regularizer.
    Bench {
        /// Images per timed epoch.
        #[arg(long, default_value_t = 512)]
        images: usize,
        /// Experiment config whose architectures are timed.
        #[arg(long)]
        config: Option<PathBuf>,
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
        Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(not(feature = "wgpu"))]
        Backend::Wgpu => {
            anyhow::bail!("this build has no wgpu backend: rebuild with --features wgpu")
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

fn main() -> Result<()> {
    let cli = Cli::parse();
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
        Command::Experiment { config, out, seeds } => {
            let mut cfg = ExperimentConfig::load(&config)?;
            if let Some(s) = seeds {
                cfg.seeds = s;
            }
            let name = config
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(name));
            report_outcome(&cfg, &out, cli.backend)?;
        }
        Command::Bench { images, config } => {
            let cfg = load_config(&config, false)?;
            let dev = device(cli.backend)?;
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
                    println!(
                        "  {:<16} p={:.3}  peak at ({}, {})  -> {}",
                        c.class,
                        c.probability,
                        c.peak.0,
                        c.peak.1,
                        c.overlay.display()
                    );
                }
            }
            println!("wrote {}", out.join("explanations.json").display());
        }
        Command::Config { quick } => {
            print!("{}", load_config(&None, quick)?.to_toml()?);
        }
    }
    Ok(())
}
