//! The experiment grid as independent cells: one teacher per seed, one cell per seed and
//! compression method (its students train in lockstep), ROAR per seed, and the report that
//! merges them. Each cell reads its inputs from and writes its outputs to the shared run
//! folder, so cells can run as separate processes on separate machines (Slurm job arrays,
//! Kubernetes Indexed Jobs) as well as one after another in one process.
//!
//! A finished cell leaves `cells/<id>.json`, keyed by everything that determines it; a cell
//! whose record has the current key is skipped. A running cell holds `cells/<id>.lock`, so two
//! processes never write one cell's stages at once.

use crate::config::ExperimentConfig;
use crate::evaluation::PairScore;
use crate::evaluation::roar::RoarPoint;
use crate::report::ResultRow;
use crate::training::checkpoint::stage_key;
use crate::util::{RunLock, write_atomic};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The folder of cell records, logs and locks inside a run folder.
pub const CELLS_DIR: &str = "cells";

/// What a cell does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// Trains (or reuses) one seed's teacher and evaluates it.
    Teacher,
    /// Makes and fine-tunes one compression method's networks, one per regularizer, in
    /// lockstep, and evaluates every stage's networks.
    Students {
        /// The compression method (`compressions` entry).
        compression: String,
    },
    /// ROAR retraining for one seed (teacher and first compression method's rankings).
    Roar,
    /// Merges every cell's record into the run's tables, plots and report page.
    Report,
}

impl CellKind {
    /// A short name for the kind, as resource options and scripts use it.
    pub fn label(&self) -> &'static str {
        match self {
            CellKind::Teacher => "teacher",
            CellKind::Students { .. } => "students",
            CellKind::Roar => "roar",
            CellKind::Report => "report",
        }
    }
}

/// The cell kinds' labels, in dependency order.
pub const KIND_LABELS: [&str; 4] = ["teacher", "students", "roar", "report"];

/// One cell of the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Position in [`plan`]'s order (also the Slurm array index).
    pub index: usize,
    /// A stable name: `teacher-s0`, `kd-s0`, `roar-s0`, `report`.
    pub id: String,
    /// What the cell does.
    pub kind: CellKind,
    /// The seed (none for the report).
    pub seed: Option<u64>,
    /// Cells that must have finished first (ids).
    pub needs: Vec<String>,
    /// Dependency level: every cell's needs are at lower levels.
    pub level: usize,
}

/// The grid's cells in dependency order (level by level, seeds in config order).
pub fn plan(cfg: &ExperimentConfig) -> Vec<Cell> {
    let mut cells: Vec<Cell> = Vec::new();
    let push = |cells: &mut Vec<Cell>, id: String, kind, seed, needs: Vec<String>, level| {
        cells.push(Cell {
            index: 0,
            id,
            kind,
            seed,
            needs,
            level,
        })
    };
    for &s in &cfg.seeds {
        push(
            &mut cells,
            format!("teacher-s{s}"),
            CellKind::Teacher,
            Some(s),
            vec![],
            0,
        );
    }
    for &s in &cfg.seeds {
        for c in &cfg.compressions {
            let kind = CellKind::Students {
                compression: c.clone(),
            };
            push(
                &mut cells,
                format!("{c}-s{s}"),
                kind,
                Some(s),
                vec![format!("teacher-s{s}")],
                1,
            );
        }
    }
    let roar_level = 2;
    if cfg.roar.enabled {
        for &s in &cfg.seeds {
            let mut needs = vec![format!("teacher-s{s}")];
            needs.extend(cfg.compressions.first().map(|c| format!("{c}-s{s}")));
            push(
                &mut cells,
                format!("roar-s{s}"),
                CellKind::Roar,
                Some(s),
                needs,
                roar_level,
            );
        }
    }
    let work: Vec<String> = cells.iter().map(|c| c.id.clone()).collect();
    let top = cells.iter().map(|c| c.level).max().unwrap_or(0) + 1;
    push(
        &mut cells,
        "report".into(),
        CellKind::Report,
        None,
        work,
        top,
    );
    for (i, c) in cells.iter_mut().enumerate() {
        c.index = i;
    }
    cells
}

/// The levels of a plan: `levels[l]` holds the cells of level `l`, in plan order.
pub fn levels(cells: &[Cell]) -> Vec<Vec<&Cell>> {
    let count = cells.iter().map(|c| c.level + 1).max().unwrap_or(0);
    let mut out = vec![Vec::new(); count];
    for c in cells {
        out[c.level].push(c);
    }
    out.retain(|l| !l.is_empty());
    out
}

/// Picks a cell by `spec`: its id, its index in the plan, or `env` for the index a scheduler
/// gives (`SLURM_ARRAY_TASK_ID`, else `JOB_COMPLETION_INDEX`). With `level`, a number counts
/// within that level (a Kubernetes Indexed Job per level numbers its pods from 0).
pub fn select<'a>(cells: &'a [Cell], spec: &str, level: Option<usize>) -> Result<&'a Cell> {
    let text = if spec == "env" {
        ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
            .iter()
            .find_map(|v| std::env::var(v).ok())
            .context(
                "--cell env: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set \
                 (not inside a Slurm array job or a Kubernetes Indexed Job?)",
            )?
    } else {
        spec.to_string()
    };
    let ids = || {
        cells
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Ok(n) = text.trim().parse::<usize>() {
        let pool: Vec<&Cell> = match level {
            Some(l) => cells.iter().filter(|c| c.level == l).collect(),
            None => cells.iter().collect(),
        };
        return pool.get(n).copied().with_context(|| {
            format!(
                "cell index {n} is out of range: {} has {} cells ({})",
                level.map_or("the grid".into(), |l| format!("level {l}")),
                pool.len(),
                ids()
            )
        });
    }
    if level.is_some() {
        bail!("--level counts cells by number; give --cell a number or `env`, not `{text}`");
    }
    cells
        .iter()
        .find(|c| c.id == text)
        .with_context(|| format!("no cell `{text}` in this grid; its cells are: {}", ids()))
}

/// What a finished cell leaves behind: its result rows (with their per-pair scores) and ROAR
/// points, under the key of everything that determined them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellRecord {
    /// [`cell_key`] of the cell when it ran.
    pub key: String,
    /// The cell's id.
    pub id: String,
    /// [`settings_key`] of the cell when it ran (what `faithful report` matches without loading
    /// the data).
    pub settings: String,
    /// Result rows, in the single-process run's order.
    pub rows: Vec<ResultRow>,
    /// `pairs[i]`: the per-pair scores of `rows[i]`.
    pub pairs: Vec<Vec<PairScore>>,
    /// ROAR points (ROAR cells only).
    #[serde(default)]
    pub roar: Vec<RoarPoint>,
    /// A sentence describing the dataset, for the results page.
    pub dataset: String,
}

/// The settings part of a cell's key: the program version, the config (all but the seed list:
/// adding seeds does not invalidate finished cells; whether the cell's seed is the first is
/// kept, since the first seed draws the overlays) and the cell's id.
pub fn settings_key(cfg: &ExperimentConfig, cell: &Cell) -> Result<String> {
    let mut settings = cfg.clone();
    settings.seeds.clear();
    let first = cell.seed.is_some() && cell.seed == cfg.seeds.first().copied();
    Ok(stage_key(&(
        env!("CARGO_PKG_VERSION"),
        settings.to_toml()?,
        &cell.id,
        first,
    )))
}

/// The key of a cell: its [`settings_key`] and the hash of the data it reads.
pub fn cell_key(cfg: &ExperimentConfig, data_key: &str, cell: &Cell) -> Result<String> {
    Ok(stage_key(&(settings_key(cfg, cell)?, data_key)))
}

/// Where a cell's record lives.
pub fn record_path(out: &Path, id: &str) -> PathBuf {
    out.join(CELLS_DIR).join(format!("{id}.json"))
}

/// Where a cell draws its overlay figure (students cells of the first seed).
pub fn overlay_path(out: &Path, id: &str) -> PathBuf {
    out.join(CELLS_DIR).join(format!("{id}.overlays.png"))
}

/// The record of `id` if it exists and has `key` (a record of other settings is stale).
pub fn finished(out: &Path, id: &str, key: &str) -> Result<Option<CellRecord>> {
    let path = record_path(out, id);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let record: CellRecord = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: corrupt cell record; delete it to rerun the cell",
            path.display()
        )
    })?;
    Ok((record.key == key).then_some(record))
}

/// Any record of `id`, whatever its key (what `faithful report` shows of a partial run).
pub fn any_record(out: &Path, id: &str) -> Result<Option<CellRecord>> {
    let path = record_path(out, id);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: corrupt cell record", path.display()))
}

/// Writes a cell's record atomically.
pub fn save(out: &Path, record: &CellRecord) -> Result<()> {
    write_atomic(
        &record_path(out, &record.id),
        serde_json::to_string(record)?.as_bytes(),
    )
}

/// Takes the lock of one cell: a second process running the same cell fails at once.
pub fn lock(out: &Path, id: &str) -> Result<RunLock> {
    RunLock::acquire_file(
        &out.join(CELLS_DIR).join(format!("{id}.lock")),
        &format!(
            "cell {id} of {} is being run by another faithful process",
            out.display()
        ),
    )
}

/// Waits until every cell `needs` names has a record with its key (from `key_of`), polling,
/// for at most `wait` (zero: checks once). Fails naming the cells still missing.
pub fn await_needs(
    out: &Path,
    cell: &Cell,
    key_of: &dyn Fn(&str) -> Result<String>,
    wait: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for id in &cell.needs {
            if finished(out, id, &key_of(id)?)?.is_none() {
                missing.push(id.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= wait {
            bail!(
                "cell {} needs {}, which {} not finished in {} (no current record in {}); run \
                 {} first, or give --wait SECONDS",
                cell.id,
                missing.join(", "),
                if missing.len() == 1 { "has" } else { "have" },
                out.display(),
                out.join(CELLS_DIR).display(),
                if missing.len() == 1 { "it" } else { "them" }
            );
        }
        std::thread::sleep(Duration::from_secs(5).min(wait));
    }
}

/// The cell list as a table (index, id, level, status, needs) for `--list-cells`.
pub fn table(cells: &[Cell], status: &dyn Fn(&Cell) -> &'static str) -> String {
    let mut s = String::from("index\tid\tkind\tlevel\tstatus\tneeds\n");
    for c in cells {
        let needs = if c.kind == CellKind::Report {
            "every other cell".to_string()
        } else if c.needs.is_empty() {
            "-".to_string()
        } else {
            c.needs.join(",")
        };
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{needs}\n",
            c.index,
            c.id,
            c.kind.label(),
            c.level,
            status(c)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(roar: bool) -> ExperimentConfig {
        let mut cfg = ExperimentConfig::demo();
        cfg.seeds = vec![0, 1];
        cfg.compressions = vec!["kd".into(), "structured".into()];
        cfg.roar.enabled = roar;
        cfg
    }

    #[test]
    fn cells_come_in_dependency_order_with_their_needs() {
        let cells = plan(&grid(true));
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "teacher-s0",
                "teacher-s1",
                "kd-s0",
                "structured-s0",
                "kd-s1",
                "structured-s1",
                "roar-s0",
                "roar-s1",
                "report"
            ]
        );
        for c in &cells {
            for need in &c.needs {
                let dep = cells.iter().find(|d| &d.id == need).unwrap();
                assert!(dep.level < c.level, "{} needs {}", c.id, dep.id);
            }
        }
        assert_eq!(cells[6].needs, ["teacher-s0", "kd-s0"]);
        assert_eq!(cells.last().unwrap().needs.len(), 8);
        let lv = levels(&cells);
        assert_eq!(lv.iter().map(Vec::len).collect::<Vec<_>>(), [2, 4, 2, 1]);
        // without ROAR the report moves down a level and the levels stay contiguous
        let without = plan(&grid(false));
        let lv = levels(&without);
        assert_eq!(lv.iter().map(Vec::len).collect::<Vec<_>>(), [2, 4, 1]);
    }

    #[test]
    fn a_cell_is_chosen_by_id_index_or_level_index_and_bad_choices_are_refused() {
        let cells = plan(&grid(false));
        assert_eq!(select(&cells, "kd-s1", None).unwrap().index, 4);
        assert_eq!(select(&cells, "3", None).unwrap().id, "structured-s0");
        assert_eq!(select(&cells, "1", Some(1)).unwrap().id, "structured-s0");
        assert_eq!(select(&cells, "0", Some(2)).unwrap().id, "report");
        let e = select(&cells, "99", None).unwrap_err().to_string();
        assert!(e.contains("out of range") && e.contains("7 cells"), "{e}");
        let e = select(&cells, "kd-s7", None).unwrap_err().to_string();
        assert!(
            e.contains("no cell `kd-s7`") && e.contains("teacher-s0"),
            "{e}"
        );
        assert!(select(&cells, "kd-s0", Some(1)).is_err());
    }

    #[test]
    fn the_key_ignores_the_seed_list_but_not_the_settings() {
        let cfg = grid(false);
        let cells = plan(&cfg);
        let kd1 = &cells[4];
        let key = cell_key(&cfg, "data", kd1).unwrap();
        let mut more = cfg.clone();
        more.seeds = vec![0, 1, 2];
        assert_eq!(cell_key(&more, "data", kd1).unwrap(), key);
        let mut first = cfg.clone();
        first.seeds = vec![1];
        assert_ne!(
            cell_key(&first, "data", kd1).unwrap(),
            key,
            "seed 1 now draws overlays"
        );
        let mut other = cfg.clone();
        other.kd.temperature = 2.0;
        assert_ne!(cell_key(&other, "data", kd1).unwrap(), key);
        assert_ne!(cell_key(&cfg, "other data", kd1).unwrap(), key);
    }
}
