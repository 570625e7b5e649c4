//! Networks (the VGG family) and their persistence: weights as `.safetensors` next to a JSON
//! architecture description, written atomically.

pub mod torchvision;
pub mod vgg;

pub use torchvision::{
    import_torchvision_vgg, import_torchvision_vgg_new_head, torchvision_vgg_arch,
};
pub use vgg::{HeadDropout, LayoutItem, Vgg, VggArch, preset_layout};

use crate::util::write_atomic;
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use std::path::{Path, PathBuf};

/// Path of the architecture JSON that accompanies a weights file.
pub fn arch_path(weights: &Path) -> PathBuf {
    weights.with_extension("arch.json")
}

/// Saves a network: `<path>` (safetensors) and `<path minus extension>.arch.json`, both atomic.
pub fn save_model(model: &Vgg, path: &Path) -> Result<()> {
    // `valid()` first: burn's BatchNorm running statistics lag one update behind until synced,
    // and saving the unsynced module would store stale statistics.
    let synced = model.valid();
    let mut store = SafetensorsStore::from_bytes(None);
    synced
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot serialise model for {}: {e}", path.display()))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("cannot serialise model for {}: {e}", path.display()))?;
    write_atomic(
        &arch_path(path),
        serde_json::to_string_pretty(&model.arch)?.as_bytes(),
    )?;
    write_atomic(path, &bytes)
}

/// Loads a network saved by [`save_model`] onto `device`.
pub fn load_model(path: &Path, device: &Device) -> Result<Vgg> {
    let ap = arch_path(path);
    let text = std::fs::read_to_string(&ap)
        .with_context(|| format!("cannot read architecture file {}", ap.display()))?;
    let arch: VggArch = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid architecture description", ap.display()))?;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read weights {}", path.display()))?;
    // every tensor is overwritten by the file; the seed only keeps the draw deterministic
    let mut model = arch.init(device, 0)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("{}: cannot load weights: {e}", path.display()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        bail!(
            "{}: weights do not fit the architecture in {} (missing {:?}, errors {:?})",
            path.display(),
            ap.display(),
            result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
            result.errors
        );
    }
    Ok(model)
}

/// Loads PyTorch-named weights (state_dict names, `[out, in]` linear weights, BN `weight/bias`)
/// from a safetensors file into `model`, renaming keys with `(regex, replacement)` pairs first.
/// Every tensor of the model must be found; unused source tensors are reported as an error too.
pub fn import_pytorch_safetensors(
    model: Vgg,
    path: &Path,
    renames: &[(&str, &str)],
) -> Result<Vgg> {
    let mut model = model;
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter);
    for (from, to) in renames {
        store = store.with_key_remapping(*from, *to);
    }
    let result = model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("{}: cannot import PyTorch weights: {e}", path.display()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        bail!(
            "{}: PyTorch weights do not fit (missing {:?}, errors {:?})",
            path.display(),
            result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
            result.errors
        );
    }
    Ok(model)
}
