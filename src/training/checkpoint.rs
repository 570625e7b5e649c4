//! Per-epoch checkpoints of a training stage, written atomically, so an interrupted run
//! resumes and loses at most the current epoch. A checkpoint belongs to one stage key (a hash
//! of the stage's settings); a checkpoint with another key is ignored and overwritten.
//! The SGD momentum buffer is not saved: a resumed stage restarts it at zero.

use crate::models::{Vgg, load_model, save_model};
use crate::util::write_atomic;
use anyhow::{Context, Result};
use burn::prelude::*;
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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Saves the model and the number of finished epochs.
pub fn save(model: &Vgg, dir: &Path, key: &str, epochs_done: usize) -> Result<()> {
    save_model(model, &dir.join("checkpoint.safetensors"))?;
    let state = State {
        key: key.to_string(),
        epochs_done,
    };
    write_atomic(
        &dir.join("checkpoint.json"),
        serde_json::to_string(&state)?.as_bytes(),
    )
}

/// Returns the checkpointed model and its finished epochs if `dir` holds one for `key`,
/// else the given model and 0.
pub fn resume(model: Vgg, dir: &Path, key: &str, device: &Device) -> Result<(Vgg, usize)> {
    let state_path = dir.join("checkpoint.json");
    let Ok(text) = std::fs::read_to_string(&state_path) else {
        return Ok((model, 0));
    };
    let state: State = serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt checkpoint state", state_path.display()))?;
    if state.key != key {
        return Ok((model, 0));
    }
    let loaded = load_model(&dir.join("checkpoint.safetensors"), device)?;
    Ok((loaded, state.epochs_done))
}
