//! Networks (the VGG family) and their persistence: weights as `.safetensors` next to a JSON
//! architecture description.
//!
//! A saved network is a pair: `<name>.safetensors` (burn's tensor names, e.g.
//! `blocks.0.conv.weight`) and `<name>.arch.json` (a [`VggArch`]). Loading checks that the two
//! belong together: every tensor the architecture needs is in the file with its shape, and every
//! tensor in the file is one the architecture needs. Errors name the file and the tensor.

pub mod head;
pub mod layers;
pub mod network;
pub mod quant;
pub mod resnet;
pub mod torchvision;
pub mod torchvision_resnet;
pub mod vgg;

pub use head::{HeadDropout, PiecewiseLinearHead};
pub use network::{Arch, FAMILIES, FamilyArch, FamilyNet, Network};
pub use resnet::{ResNet, ResNetArch, StageWidths};
pub use torchvision::{
    TorchvisionImport, import_torchvision_vgg, import_torchvision_vgg_new_head,
    torchvision_vgg_arch,
};
pub use vgg::{LayoutItem, Vgg, VggArch, preset_layout};

use crate::util::write_atomic;
use anyhow::{Context, Result, anyhow, bail, ensure};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Imports torchvision weights (`.safetensors` or `.pth`) of the named network: `vgg11_bn`,
/// `vgg13_bn`, `vgg16_bn`, `vgg19_bn`, `resnet18` or `resnet34`. With `num_classes` the last
/// layer is replaced by a fresh one (seeded by `seed`) with that many outputs.
pub fn import_torchvision(
    name: &str,
    weights: &Path,
    num_classes: Option<usize>,
    device: &Device,
    seed: u64,
) -> Result<Network> {
    let arch = Arch::torchvision(name, num_classes.unwrap_or(1000))?;
    import_into(&arch, weights, device, num_classes.map(|_| seed))
}

/// A teacher of architecture `arch` started from torchvision weights at `path`; a label set of
/// other than 1000 classes gets a fresh last layer seeded by `seed`.
pub fn import_pretrained(arch: &Arch, path: &Path, device: &Device, seed: u64) -> Result<Network> {
    let new_head = (arch.num_classes() != 1000).then_some(seed);
    import_into(arch, path, device, new_head)
}

/// torchvision weights into `arch`, through its family's [`TorchvisionImport`].
fn import_into(
    arch: &Arch,
    path: &Path,
    device: &Device,
    new_head: Option<u64>,
) -> Result<Network> {
    network::on_any_arch!(arch, a => a.import_torchvision(path, device, new_head).map(Network::from))
        .with_context(|| format!("importing into a {} network", arch.family()))
}

/// Path of the architecture JSON that accompanies a weights file.
pub fn arch_path(weights: &Path) -> PathBuf {
    weights.with_extension("arch.json")
}

/// Checks that `path` names an existing file: a missing file and a directory (e.g. a run folder
/// given where its `model.safetensors` was meant) get errors that say so.
pub fn check_model_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a directory, expected a model.safetensors file",
            path.display()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("model file {} is missing (no such file)", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot access model file {}", path.display())),
    }
}

/// Saves a network: `<path>` (safetensors) and `<path minus extension>.arch.json`.
///
/// The weights are written first and the architecture last, each atomically, so an
/// architecture file never describes weights that are not there. If the architecture cannot be
/// written, the weights just written are removed again (with any older architecture file) so no
/// half of a pair is left behind.
pub fn save_model(model: &Network, path: &Path) -> Result<()> {
    // `valid()` first: burn's BatchNorm running statistics lag one update behind until synced,
    // and saving the unsynced module would store stale statistics.
    let bytes = module_bytes(&model.valid(), path)?;
    let arch_json = serde_json::to_string_pretty(&model.arch())?;
    let ap = arch_path(path);
    write_atomic(path, &bytes)
        .with_context(|| format!("cannot save the model weights {}", path.display()))?;
    if let Err(e) = write_atomic(&ap, arch_json.as_bytes()) {
        let _ = std::fs::remove_file(path);
        if ap.is_file() {
            let _ = std::fs::remove_file(&ap);
        }
        return Err(e.context(format!(
            "cannot save the architecture {}; removed the weights {} again",
            ap.display(),
            path.display()
        )));
    }
    Ok(())
}

/// The safetensors bytes of a module (burn's tensor names, without the family's enum variant, so
/// a network's file is the same whether saved as a [`Network`] or as its family's type).
fn module_bytes<M: Module>(module: &M, path: &Path) -> Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None).skip_enum_variants(true);
    module
        .save_into(&mut store)
        .map_err(|e| anyhow!("cannot serialise model for {}: {e}", path.display()))?;
    store
        .get_bytes()
        .map_err(|e| anyhow!("cannot serialise model for {}: {e}", path.display()))
}

/// Parses an architecture description (the text of an `.arch.json` file) and checks it;
/// every error names `file`.
pub fn parse_arch(text: &str, file: &Path) -> Result<Arch> {
    let arch: Arch = serde_json::from_str(text)
        .with_context(|| format!("{}: not a valid architecture description", file.display()))?;
    arch.validate()
        .with_context(|| format!("{}: invalid architecture", file.display()))?;
    Ok(arch)
}

/// [`VggArch::validate`] plus the limits it does not check itself: hidden widths of at least 1,
/// and at most 31 pools (its `1 << pools` overflows at 64, and 2^31-pixel inputs are far beyond
/// any real network).
pub(crate) fn check_vgg_arch(arch: &VggArch) -> Result<()> {
    let pools = arch
        .items()?
        .iter()
        .filter(|i| **i == LayoutItem::Pool)
        .count();
    ensure!(
        pools < 32,
        "layout '{}' has {pools} pools; at most 31 are supported",
        arch.layout
    );
    ensure!(
        arch.hidden.iter().all(|&h| h > 0),
        "hidden widths must be at least 1, got {:?}",
        arch.hidden
    );
    arch.validate()
}

/// Reads and checks the architecture file `path`, naming it in every error.
pub fn read_arch(path: &Path) -> Result<Arch> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read architecture file {}", path.display()))?;
    parse_arch(&text, path)
}

/// Every tensor a network of architecture `arch` holds, as burn names it in a saved file, with
/// its shape. Computed from the architecture alone, so a file can be checked before any network
/// is allocated.
pub fn expected_tensors(arch: &Arch) -> Result<Vec<(String, Vec<usize>)>> {
    arch.expected_tensors()
}

/// Every tensor a [`Vgg`] of architecture `arch` holds, as burn names it in a saved file
/// (`blocks.{i}.conv.weight`, `blocks.{i}.bn.running_var`, `hidden.{j}.weight`,
/// `classifier.bias`, ...), with its shape. Computed from the architecture alone, so a file can
/// be checked before any network is allocated.
pub(crate) fn expected_vgg_tensors(arch: &VggArch) -> Result<Vec<(String, Vec<usize>)>> {
    let mut out = Vec::new();
    let mut in_ch = 3;
    for (i, c) in arch.conv_channels()?.into_iter().enumerate() {
        out.push((format!("blocks.{i}.conv.weight"), vec![c, in_ch, 3, 3]));
        if arch.conv_bias {
            out.push((format!("blocks.{i}.conv.bias"), vec![c]));
        }
        for t in ["gamma", "beta", "running_mean", "running_var"] {
            out.push((format!("blocks.{i}.bn.{t}"), vec![c]));
        }
        in_ch = c;
    }
    let (c, side) = arch.attribution_shape()?;
    let pooled = side / arch.head_pool_kernel(side).max(1);
    let mut d_in = c
        .checked_mul(pooled)
        .and_then(|x| x.checked_mul(pooled))
        .context("the head's input width overflows")?;
    for (j, &h) in arch.hidden.iter().enumerate() {
        out.push((format!("hidden.{j}.weight"), vec![d_in, h]));
        out.push((format!("hidden.{j}.bias"), vec![h]));
        d_in = h;
    }
    out.push(("classifier.weight".into(), vec![d_in, arch.num_classes]));
    out.push(("classifier.bias".into(), vec![arch.num_classes]));
    Ok(out)
}

/// Loads a network saved by [`save_model`] onto `device`.
///
/// Weights stored as f16, bf16 or f64 (a checkpoint halved to save space, or written by a tool
/// that keeps doubles) load too: they are converted to f32, the type faithful computes in.
/// Refused, with an error naming the file and the tensor: a tensor the architecture does not
/// have (e.g. conv biases when `conv_bias` is false), a missing one, one of another shape, a
/// non-float element type, and non-finite (NaN or infinite) values.
pub fn load_model(path: &Path, device: &Device) -> Result<Network> {
    check_model_file(path)?;
    let ap = arch_path(path);
    let arch = read_arch(&ap)?;
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read model weights {}", path.display()))?;
    let tensors = checked_tensors(&bytes, &arch, path, &ap)?;
    // every tensor is overwritten by the file; the seed only keeps the draw deterministic
    let mut model = arch
        .init(device, 0)
        .with_context(|| format!("{}: cannot build the network", ap.display()))?;
    apply_f32(&mut model, &tensors, path)?;
    Ok(model)
}

/// Name -> (shape, f32 values) of the tensors of a file that passed [`checked_tensors`].
type F32Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads the tensors of a saved model and checks them against `arch`: the names and shapes must
/// be exactly [`expected_tensors`], the values floating point (converted to f32) and finite.
/// All problems are listed in one error naming `file` (and `arch_file`).
fn checked_tensors(bytes: &[u8], arch: &Arch, file: &Path, arch_file: &Path) -> Result<F32Tensors> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", file.display()))?;
    let expected = expected_tensors(arch)
        .with_context(|| format!("{}: invalid architecture", arch_file.display()))?;
    let mut problems = Problems::default();
    let mut out = F32Tensors::new();
    for (name, shape) in &expected {
        let view = match st.tensor(name) {
            Ok(v) => v,
            Err(_) => {
                problems.missing.push(name.clone());
                continue;
            }
        };
        if view.shape() != shape.as_slice() {
            problems.misshaped.push(format!(
                "{name} has shape {:?}, expected {shape:?}",
                view.shape()
            ));
            continue;
        }
        match torchvision::float_values(&view) {
            None => problems.bad_values.push(format!(
                "{name} has element type {:?}, expected a float type (f32, f16, bf16 or f64)",
                view.dtype()
            )),
            Some(v) => match torchvision::non_finite(&v) {
                Some(what) => problems.bad_values.push(format!("{name} holds {what}")),
                None => {
                    out.insert(name.clone(), (shape.clone(), v));
                }
            },
        }
    }
    let known: std::collections::BTreeSet<&str> =
        expected.iter().map(|(n, _)| n.as_str()).collect();
    problems.unexpected = st
        .names()
        .into_iter()
        .filter(|n| !known.contains(n))
        .map(str::to_string)
        .collect();
    problems.unexpected.sort();
    problems.into_result(file, arch_file, arch)?;
    Ok(out)
}

/// What is wrong with a weights file, by tensor name.
#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    unexpected: Vec<String>,
    misshaped: Vec<String>,
    bad_values: Vec<String>,
}

impl Problems {
    fn into_result(self, file: &Path, arch_file: &Path, arch: &Arch) -> Result<()> {
        let sections = [
            ("missing", self.missing.join(", ")),
            ("unexpected", self.unexpected.join(", ")),
            ("mis-shaped", self.misshaped.join("; ")),
            ("bad values", self.bad_values.join("; ")),
        ];
        if sections.iter().all(|(_, s)| s.is_empty()) {
            return Ok(());
        }
        let mut msg = format!(
            "{}: the weights do not fit the architecture in {} ({})",
            file.display(),
            arch_file.display(),
            arch.describe()
        );
        for (label, s) in sections.iter().filter(|(_, s)| !s.is_empty()) {
            msg += &format!("\n  {label}: {s}");
        }
        bail!(msg)
    }
}

/// Loads checked f32 tensors into `model` through burn's safetensors store; every tensor of the
/// model must be set.
fn apply_f32<M: Module>(model: &mut M, tensors: &F32Tensors, file: &Path) -> Result<()> {
    let raw: Vec<(&String, &Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = raw
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.to_vec(), b)
                .map(|v| (n.as_str(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: cannot convert the weights: {e}", file.display()))?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| anyhow!("{}: cannot convert the weights: {e}", file.display()))?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes)).skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| anyhow!("{}: cannot load weights: {e}", file.display()))?;
    ensure!(
        result.errors.is_empty() && result.missing.is_empty() && result.unused.is_empty(),
        "{}: weights do not fit the network (missing {:?}, unused {:?}, errors {:?})",
        file.display(),
        result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
        result.unused,
        result.errors
    );
    Ok(())
}

/// Loads PyTorch-named weights (state_dict names, `[out, in]` linear weights, BN `weight/bias`)
/// from a safetensors file into `model`, renaming keys with `(regex, replacement)` pairs first.
/// Every tensor of the model must be found.
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
        .map_err(|e| anyhow!("{}: cannot import PyTorch weights: {e}", path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::ModuleSnapshot;

    #[test]
    fn expected_tensors_are_the_ones_burn_saves() {
        let device = Device::flex();
        for arch in [
            VggArch {
                layout: "4,M,6,M".into(),
                input_size: 8,
                hidden: vec![5, 3],
                ..VggArch::default()
            },
            VggArch {
                layout: "4,M,6,6,M".into(),
                input_size: 16,
                conv_bias: false,
                head_pool: vgg::HeadPool::GlobalMax,
                ..VggArch::default()
            },
        ] {
            let net = arch.init(&device, 0).unwrap();
            let mut saved: Vec<(String, Vec<usize>)> = net
                .collect(None, None, false)
                .into_iter()
                .map(|t| (t.name.clone(), t.shape.to_vec()))
                .collect();
            saved.sort();
            let mut expected = expected_tensors(&arch.clone().into()).unwrap();
            expected.sort();
            assert_eq!(expected, saved, "{arch:?}");
        }
    }

    #[test]
    fn hand_counted_tensor_list_of_a_two_block_network() {
        // conv 3->4, pool, conv 4->2, pool5 on 8x8: head input 2 * 2 * 2 = 8
        let arch = VggArch {
            layout: "4,M,2,M".into(),
            input_size: 8,
            num_classes: 3,
            conv_bias: false,
            ..VggArch::default()
        };
        let t: BTreeMap<String, Vec<usize>> = expected_tensors(&arch.into())
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(t.len(), 2 * 5 + 2);
        assert_eq!(t["blocks.1.conv.weight"], vec![2, 4, 3, 3]);
        assert_eq!(t["blocks.0.bn.running_var"], vec![4]);
        assert_eq!(t["classifier.weight"], vec![8, 3]);
        assert!(!t.contains_key("blocks.0.conv.bias"));
    }

    #[test]
    fn arch_text_errors_name_the_file() {
        let f = Path::new("dir/net.arch.json");
        for text in [
            "{not json",
            r#"{"num_classes": 0}"#,
            r#"{"dropout": 1.5}"#,
            r#"{"layout": "4,M,x,M"}"#,
            r#"{"hidden": [0]}"#,
            r#"{"layout": "8,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M,M"}"#,
            r#"{"surprise": 1}"#,
        ] {
            let e = format!("{:#}", parse_arch(text, f).unwrap_err());
            assert!(e.contains("dir/net.arch.json"), "{text}: {e}");
        }
        assert_eq!(parse_arch("{}", f).unwrap(), Arch::Vgg(VggArch::default()));
        assert_eq!(
            parse_arch(r#"{"family": "vgg"}"#, f).unwrap(),
            Arch::Vgg(VggArch::default())
        );
        assert_eq!(
            parse_arch(r#"{"family": "resnet", "layout": "resnet18"}"#, f).unwrap(),
            Arch::ResNet(ResNetArch {
                layout: "resnet18".into(),
                ..ResNetArch::default()
            })
        );
        for text in [
            r#"{"family": "alexnet"}"#,
            r#"{"family": 3}"#,
            r#"{"family": "resnet", "hidden": []}"#,
            r#"{"layout": "tiny", "layout": "small"}"#,
            r#"{"family": "resnet", "family": "vgg"}"#,
        ] {
            let e = format!("{:#}", parse_arch(text, f).unwrap_err());
            assert!(e.contains("dir/net.arch.json"), "{text}: {e}");
        }
    }
}
