//! Per-epoch checkpoints of a training stage, written atomically, so an interrupted run
//! resumes and loses at most the current epoch. A checkpoint belongs to one stage key (a hash
//! of the stage's settings); a checkpoint with another key is ignored and overwritten.
//! The optimizer's state (SGD momentum, AdamW moments) is saved with the weights, so a resumed
//! stage continues exactly as an uninterrupted one would.

use crate::models::{Vgg, load_model, save_model};
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
}

/// A stable hash of anything serialisable (FNV-1a over its JSON).
pub fn stage_key<T: Serialize>(settings: &T) -> String {
    let json = serde_json::to_string(settings).unwrap_or_default();
    format!("{:016x}", fnv1a(json.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const OPTIMIZER_FILE: &str = "checkpoint.optim.bpk";

/// Saves the model, the optimizer's state and the number of finished epochs. The state file is
/// written last: a checkpoint only counts once all three are on disk.
pub fn save(
    model: &Vgg,
    optim: &ModuleOptimizer,
    dir: &Path,
    key: &str,
    epochs_done: usize,
) -> Result<()> {
    save_model(model, &dir.join("checkpoint.safetensors"))?;
    let record = optim
        .to_record()
        .into_bytes()
        .map_err(|e| anyhow!("cannot serialise the optimizer state: {e:?}"))?;
    write_atomic(&dir.join(OPTIMIZER_FILE), &record)?;
    let state = State {
        key: key.to_string(),
        epochs_done,
    };
    write_atomic(
        &dir.join("checkpoint.json"),
        serde_json::to_string(&state)?.as_bytes(),
    )
}

/// Returns the checkpointed model, the optimizer with its saved state and the finished epochs
/// if `dir` holds a checkpoint for `key`, else the given model and optimizer and 0. The model
/// returned has path-derived parameter ids (see [`stable_param_ids`]) either way.
pub fn resume(
    model: Vgg,
    optim: ModuleOptimizer,
    dir: &Path,
    key: &str,
    device: &Device,
) -> Result<(Vgg, ModuleOptimizer, usize)> {
    let Some(epochs_done) = finished_epochs(dir, key)? else {
        return Ok((stable_param_ids(model), optim, 0));
    };
    let loaded = stable_param_ids(load_model(&dir.join("checkpoint.safetensors"), device)?);
    let optim_path = dir.join(OPTIMIZER_FILE);
    // A checkpoint written before optimizer states were saved resumes with a fresh optimizer.
    let optim = match std::fs::read(&optim_path) {
        Ok(bytes) => {
            let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes))
                .map_err(|e| anyhow!("{}: corrupt optimizer state: {e:?}", optim_path.display()))?;
            optim.load_record(record)
        }
        Err(_) => optim,
    };
    Ok((loaded, optim, epochs_done))
}

/// The finished epochs of the checkpoint in `dir` if there is one for `key`.
fn finished_epochs(dir: &Path, key: &str) -> Result<Option<usize>> {
    let state_path = dir.join("checkpoint.json");
    let Ok(text) = std::fs::read_to_string(&state_path) else {
        return Ok(None);
    };
    let state: State = serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt checkpoint state", state_path.display()))?;
    Ok((state.key == key).then_some(state.epochs_done))
}

/// Gives every parameter of `model` an id derived from its module path (`blocks.0.conv.weight`,
/// ...). Optimizer state is keyed by parameter id, and ids are otherwise drawn afresh whenever a
/// network is built, so without this a resumed process could not match the saved momentum to
/// its parameters.
pub fn stable_param_ids(model: Vgg) -> Vgg {
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
