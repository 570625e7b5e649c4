//! Per-epoch checkpoints of a training stage, written atomically, so an interrupted run
//! resumes and loses at most the current epoch. A checkpoint belongs to one stage key (a hash
//! of the stage's settings); a checkpoint with another key is ignored and overwritten.
//! The optimizer's state (SGD momentum, AdamW moments) is saved with the weights, so a resumed
//! stage continues exactly as an uninterrupted one would.

use super::EpochRecord;
use crate::models::{Network, load_model, save_model};
use crate::util::write_atomic;
use anyhow::{Context, Result, anyhow};
use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::prelude::*;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct State {
    key: String,
    epochs_done: usize,
    /// Hash of each checkpoint file, so a truncated, replaced or missing file is caught on
    /// resume instead of silently training on (absent in checkpoints of older versions).
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
}

const MODEL_FILE: &str = "checkpoint.safetensors";

/// A stable hash of anything serialisable (FNV-1a over its JSON).
pub fn stage_key<T: Serialize>(settings: &T) -> String {
    let json = serde_json::to_string(settings).unwrap_or_default();
    format!("{:016x}", fnv1a(json.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = crate::util::Fnv1a::default();
    h.write(bytes);
    h.finish()
}

const OPTIMIZER_FILE: &str = "checkpoint.optim.bpk";

const HISTORY_FILE: &str = "history.json";

/// Saves the model, the optimizer's state, the per-epoch record and the number of finished
/// epochs. The state file is written last: a checkpoint only counts once all are on disk.
pub fn save(
    model: &Network,
    optim: &ModuleOptimizer,
    dir: &Path,
    key: &str,
    history: &[EpochRecord],
) -> Result<()> {
    let epochs_done = history.len();
    save_model(model, &dir.join(MODEL_FILE))?;
    write_atomic(
        &dir.join(HISTORY_FILE),
        serde_json::to_string_pretty(history)?.as_bytes(),
    )?;
    let record = optim
        .to_record()
        .into_bytes()
        .map_err(|e| anyhow!("cannot serialise the optimizer state: {e:?}"))?;
    write_atomic(&dir.join(OPTIMIZER_FILE), &record)?;
    let mut files = std::collections::BTreeMap::new();
    for name in [MODEL_FILE, OPTIMIZER_FILE, HISTORY_FILE] {
        files.insert(name.to_string(), crate::util::file_hash(&dir.join(name))?);
    }
    let state = State {
        key: key.to_string(),
        epochs_done,
        files,
    };
    write_atomic(
        &dir.join("checkpoint.json"),
        serde_json::to_string(&state)?.as_bytes(),
    )
}

/// A stage restored from its checkpoint (or fresh).
pub struct Resumed {
    /// The network (path-derived parameter ids, see [`stable_param_ids`]).
    pub model: Network,
    /// The optimizer, with its saved state when there is one.
    pub optim: ModuleOptimizer,
    /// One record per finished epoch.
    pub history: Vec<EpochRecord>,
}

/// Returns the checkpointed model, the optimizer with its saved state and the finished epochs'
/// records if `dir` holds a checkpoint for `key`, else the given model and optimizer and no
/// epochs.
pub fn resume(
    model: Network,
    optim: ModuleOptimizer,
    dir: &Path,
    key: &str,
    device: &Device,
) -> Result<Resumed> {
    let Some(epochs_done) = finished_epochs(dir, key)? else {
        return Ok(Resumed {
            model: stable_param_ids(model),
            optim,
            history: Vec::new(),
        });
    };
    let history = read_history(dir, epochs_done)?;
    let loaded = stable_param_ids(load_model(&dir.join(MODEL_FILE), device)?);
    let optim_path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&optim_path)
        .with_context(|| format!("cannot read {}", optim_path.display()))?;
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| anyhow!("{}: corrupt optimizer state: {e:?}", optim_path.display()))?;
    let optim = optim.load_record(record);
    Ok(Resumed {
        model: loaded,
        optim,
        history,
    })
}

/// The first `epochs_done` epoch records of a checkpoint (the file must hold at least that
/// many: the record is written before the state file that counts the epochs).
fn read_history(dir: &Path, epochs_done: usize) -> Result<Vec<EpochRecord>> {
    let path = dir.join(HISTORY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: missing; the checkpoint in {} cannot be resumed (delete the folder to retrain)",
            path.display(),
            dir.display()
        )
    })?;
    let mut history: Vec<EpochRecord> = serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt training record", path.display()))?;
    anyhow::ensure!(
        history.len() == epochs_done,
        "{}: holds {} epochs, checkpoint.json says {epochs_done}; delete {} to retrain",
        path.display(),
        history.len(),
        dir.display()
    );
    history.truncate(epochs_done);
    Ok(history)
}

/// The finished epochs of the checkpoint in `dir` if there is one for `key`.
fn finished_epochs(dir: &Path, key: &str) -> Result<Option<usize>> {
    let state_path = dir.join("checkpoint.json");
    let Ok(text) = std::fs::read_to_string(&state_path) else {
        return Ok(None);
    };
    let state: State = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: corrupt checkpoint state; delete {} to retrain this stage",
            state_path.display(),
            dir.display()
        )
    })?;
    if state.key != key || state.files.is_empty() {
        eprintln!(
            "{}: settings or upstream stages changed since its checkpoint; retraining",
            dir.display()
        );
        return Ok(None);
    }
    verify_files(dir, &state)?;
    eprintln!(
        "{}: reusing its checkpoint ({} epochs done)",
        dir.display(),
        state.epochs_done
    );
    Ok(Some(state.epochs_done))
}

/// Checks that every checkpoint file is the one checkpoint.json was written with.
fn verify_files(dir: &Path, state: &State) -> Result<()> {
    for (name, hash) in &state.files {
        let path = dir.join(name);
        let actual = crate::util::file_hash(&path).with_context(|| {
            format!(
                "checkpoint file {} is missing; delete {} to retrain this stage",
                path.display(),
                dir.display()
            )
        })?;
        anyhow::ensure!(
            &actual == hash,
            "checkpoint file {} was changed or truncated since it was written; delete {} to \
             retrain this stage",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Gives every parameter of `model` an id derived from its module path (`blocks.0.conv.weight`,
/// ...). Optimizer state is keyed by parameter id, and ids are otherwise drawn afresh whenever a
/// network is built, so without this a resumed process could not match the saved momentum to
/// its parameters.
pub fn stable_param_ids(model: Network) -> Network {
    model.map(&mut PathIds { path: Vec::new() })
}

struct PathIds {
    path: Vec<String>,
}

impl ModuleMapper for PathIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        let id = fnv1a(self.path.join(".").as_bytes());
        Param::from_mapped_value(ParamId::from(id), value, mapper)
    }
}
