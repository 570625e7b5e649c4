//! The grid as cells: run one by one (and two at once) they give the single-process results
//! number for number; on a real one-node Slurm cluster (started here when Debian's slurm-wlm
//! and munge are installed and we are root) `faithful slurm --submit` gives the same results,
//! also after one cell's job is killed mid-way and the grid resubmitted; the Kubernetes manifest
//! passes the Kubernetes schema (`kubernetes-validate`, when installed).

use burn::prelude::*;
use faithful::cells;
use faithful::config::ExperimentConfig;
use faithful::experiment::{self, CellOutcome};
use faithful::report::ResultRow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The CI grid with ROAR on (one percentage, one epoch), so every cell kind is exercised.
fn grid() -> ExperimentConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ci.toml");
    let mut cfg = ExperimentConfig::load(&path).unwrap();
    cfg.roar.enabled = true;
    cfg.roar.percents = vec![50];
    cfg.roar.epochs = 1;
    cfg
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rows(dir: &Path) -> Vec<ResultRow> {
    let text = std::fs::read_to_string(dir.join("results.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("results.json").display()));
    serde_json::from_str(&text).unwrap()
}

/// Asserts two runs' results are equal number for number: every field of every row but the
/// two wall-clock measurements (training seconds, latency), the per-pair CSV byte for byte and
/// the ROAR points.
fn assert_same_results(a: &Path, b: &Path) {
    let strip = |mut r: Vec<ResultRow>| {
        for row in &mut r {
            row.train_seconds = 0.0;
            row.latency_ms = 0.0;
        }
        serde_json::to_string(&r).unwrap()
    };
    let (ra, rb) = (rows(a), rows(b));
    assert_eq!(ra.len(), rb.len());
    assert_eq!(strip(ra), strip(rb), "{} vs {}", a.display(), b.display());
    for file in ["pairs.csv", "roar.json"] {
        let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
        assert!(read(a) == read(b), "{file} differs");
    }
}

/// The reference: the whole grid in one process (computed once per test binary).
fn single_process() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = out_dir("single");
        experiment::run(&grid(), &dir, &Device::flex()).unwrap();
        dir
    })
}

#[test]
fn cells_one_at_a_time_and_two_at_once_match_the_single_process_run() {
    let cfg = grid();
    let plan = cells::plan(&cfg);
    let dir = out_dir("cells");
    let dev = Device::flex();
    let run = |spec: &str| {
        let cell = cells::select(&plan, spec, None).unwrap();
        experiment::run_cell(&cfg, &dir, &dev, cell, Duration::ZERO).unwrap()
    };
    // a cell whose needs have not finished is refused, naming them
    let kd = cells::select(&plan, "kd-s0", None).unwrap();
    let e = experiment::run_cell(&cfg, &dir, &dev, kd, Duration::ZERO).unwrap_err();
    assert!(format!("{e:#}").contains("needs teacher-s0"), "{e:#}");
    assert!(matches!(run("teacher-s0"), CellOutcome::Ran));
    assert!(matches!(run("teacher-s0"), CellOutcome::Skipped));
    // the students cells two at a time, in threads of this process
    std::thread::scope(|s| {
        let a = s.spawn(|| run("kd-s0"));
        let b = s.spawn(|| run("structured-s0"));
        a.join().unwrap();
        b.join().unwrap();
    });
    assert!(matches!(run("unstructured-s0"), CellOutcome::Ran));
    // a partial report merges what has finished and says what has not
    let report = cells::select(&plan, "report", None).unwrap();
    let e = experiment::run_cell(&cfg, &dir, &dev, report, Duration::ZERO).unwrap_err();
    assert!(format!("{e:#}").contains("roar-s0"), "{e:#}");
    experiment::report(&dir).unwrap();
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(
        md.contains("Partial results") && md.contains("not yet: roar-s0"),
        "{md}"
    );
    assert!(matches!(run("roar-s0"), CellOutcome::Ran));
    assert!(matches!(run("report"), CellOutcome::Merged(_)));
    assert_same_results(single_process(), &dir);
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(!md.contains("Partial results"));
    let listed = experiment::list_cells(&cfg, &dir).unwrap();
    assert_eq!(
        listed.matches("\tdone\t").count(),
        plan.len() - 1,
        "{listed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cell_held_by_another_process_is_refused_not_run_twice() {
    let cfg = grid();
    let dir = out_dir("locked");
    let plan = cells::plan(&cfg);
    let _held = cells::lock(&dir, "teacher-s0").unwrap();
    let cell = cells::select(&plan, "teacher-s0", None).unwrap();
    let e = experiment::run_cell(&cfg, &dir, &Device::flex(), cell, Duration::ZERO).unwrap_err();
    assert!(
        format!("{e:#}").contains("is being run by another faithful process"),
        "{e:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn faithful_bin() -> &'static str {
    env!("CARGO_BIN_EXE_faithful")
}

fn command_exists(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_kubernetes_manifest_passes_the_kubernetes_schema() {
    if !command_exists("kubernetes-validate") {
        eprintln!("SKIPPED: kubernetes-validate not found (pip install kubernetes-validate)");
        return;
    }
    let dir = out_dir("k8s");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("grid.toml");
    std::fs::write(&config, grid().to_toml().unwrap()).unwrap();
    let out = Command::new(faithful_bin())
        .args([
            "k8s",
            config.to_str().unwrap(),
            "--image",
            "example.org/faithful:1",
        ])
        .args(["--pvc", "runs", "--cpu", "2,report=1", "--memory", "4Gi"])
        .args(["--gpus", "students=1", "--name", "ci-grid"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = String::from_utf8(out.stdout).unwrap();
    // one ConfigMap and one Job per level: teacher, students, ROAR, report
    assert_eq!(manifest.matches("\"kind\": \"Job\"").count(), 4);
    let validate = |text: &str, name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let o = Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.30.0", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, said) = validate(&manifest, "grid.yaml");
    assert!(ok, "{said}");
    // the validator does check: a misspelt field and a wrong type are both rejected
    let (ok, _) = validate(
        &manifest.replacen("\"completionMode\"", "\"completionMod\"", 1),
        "misspelt.yaml",
    );
    assert!(!ok, "a misspelt field passed the schema check");
    let (ok, _) = validate(
        &manifest.replacen("\"parallelism\": 1", "\"parallelism\": \"one\"", 1),
        "wrong-type.yaml",
    );
    assert!(!ok, "a string parallelism passed the schema check");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-node Slurm cluster for the life of the value (stopped on drop, also on a panic).
struct LocalSlurm {
    dir: PathBuf,
    conf: PathBuf,
}

impl LocalSlurm {
    fn start() -> Option<LocalSlurm> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let tools = [
            "munged",
            "slurmctld",
            "slurmd",
            "sbatch",
            "squeue",
            "scancel",
        ];
        if !root || !tools.iter().all(|t| command_exists(t)) {
            eprintln!(
                "SKIPPED: real Slurm cluster test (needs root and Debian's slurm-wlm and munge; \
                 .ci/run installs them)"
            );
            return None;
        }
        let dir = out_dir("slurm-cluster");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh");
        let port = 20000 + std::process::id() % 20000;
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", dir.to_str().unwrap()])
            .env("SLURM_LOCAL_PORT", port.to_string())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the local Slurm cluster did not start: {said}"
        );
        eprintln!("{said}");
        let conf = dir.join("slurm.conf");
        Some(LocalSlurm { dir, conf })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// The queue's lines (`jobid_index state`).
    fn queue(&self) -> Vec<String> {
        let o = self
            .command("squeue")
            .args(["-h", "-r", "-o", "%i %T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_until_empty(&self, limit: Duration) {
        let started = Instant::now();
        while !self.queue().is_empty() {
            assert!(
                started.elapsed() < limit,
                "Slurm jobs still queued after {limit:?}: {:?}",
                self.queue()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn submit(&self, config: &Path, run: &Path) -> String {
        let out = self
            .command(faithful_bin())
            .args([
                "slurm",
                config.to_str().unwrap(),
                "--out",
                run.to_str().unwrap(),
            ])
            .args(["--cpus-per-task", "1", "--time", "00:20:00", "--submit"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_grid_on_a_real_slurm_cluster_matches_one_process_also_after_a_killed_cell() {
    let Some(slurm) = LocalSlurm::start() else {
        return;
    };
    let config = out_dir("slurm-config").with_extension("toml");
    std::fs::write(&config, grid().to_toml().unwrap()).unwrap();
    let reference = single_process();

    // the whole grid through sbatch, two cells at a time on the node's 2 CPUs
    let run = out_dir("slurm-run");
    let started = Instant::now();
    let said = slurm.submit(&config, &run);
    assert_eq!(said.matches(": job ").count(), 4, "{said}");
    slurm.wait_until_empty(Duration::from_secs(600));
    eprintln!(
        "grid through Slurm: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        run.join("results.json").is_file(),
        "the report cell did not run; logs in {}",
        run.join("slurm/logs").display()
    );
    assert_same_results(reference, &run);

    // kill the longest students cell (unstructured pruning, index 3) mid-way, then resubmit
    let killed = out_dir("slurm-killed");
    slurm.submit(&config, &killed);
    let started = Instant::now();
    let victim = loop {
        let running = slurm
            .queue()
            .into_iter()
            .find(|l| l.ends_with(" RUNNING") && l.split(' ').next().unwrap().ends_with("_3"));
        if let Some(line) = running {
            break line.split(' ').next().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "cell 3 never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // let it train a little, then kill it
    std::thread::sleep(Duration::from_secs(2));
    let status = slurm.command("scancel").arg(&victim).status().unwrap();
    assert!(status.success());
    // the levels after it can never run (afterok): Slurm drops them
    slurm.wait_until_empty(Duration::from_secs(600));
    assert!(
        !killed.join("cells/unstructured-s0.json").exists(),
        "the killed cell finished anyway; kill it earlier"
    );
    assert!(!killed.join("results.json").exists());
    let finished: Vec<std::time::SystemTime> = ["teacher-s0", "kd-s0"]
        .iter()
        .map(|id| {
            std::fs::metadata(killed.join(format!("cells/{id}.json")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    slurm.submit(&config, &killed);
    slurm.wait_until_empty(Duration::from_secs(600));
    assert_same_results(reference, &killed);
    // nothing finished was redone
    for (id, before) in ["teacher-s0", "kd-s0"].iter().zip(finished) {
        let after = std::fs::metadata(killed.join(format!("cells/{id}.json")))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "cell {id} was redone");
    }
    for d in [run, killed] {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(config);
}
