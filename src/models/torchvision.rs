//! Import of torchvision's `vgg*_bn` networks from a state_dict saved as `.safetensors` or as a
//! PyTorch `.pth` file (read with burn-store's PyTorch reader; no Python needed).
//!
//! torchvision names its layers by position in two `nn.Sequential`s: `features` repeats
//! (conv, bn, relu) per conv layer with a max-pool after each stage, the last max-pool being
//! pool5, and `classifier` is Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear, so the j-th linear
//! layer is `classifier.{3j}`. The same naming is used by [`crate::export::torch`], whose
//! exports are read back through [`apply_state_dict`] as well.
//!
//! torchvision's `AdaptiveAvgPool2d((7, 7))` between `features` and `classifier` is the
//! identity when pool5's output is already 7x7 (224-pixel inputs); [`Vgg`] has no such pool,
//! so other input sizes give a different first linear width, reported as a shape mismatch.

use super::network::FamilyArch;
use super::vgg::{HeadPool, LayoutItem, Vgg, VggArch};
use anyhow::{Context, Result, bail};
use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::store::pytorch_reader::{DType, PytorchReader};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The [`VggArch`] of torchvision's `vgg11_bn`, `vgg13_bn`, `vgg16_bn` or `vgg19_bn` with
/// `num_classes` outputs: 224-pixel input, conv bias, pool5 as a 2x2 max-pool and the
/// classifier's two hidden layers of 4096 units (`hidden = [4096, 4096]`, dropout 0.5).
///
/// Dropout only matters in training; [`Vgg`] applies it before every head linear layer where
/// torchvision skips the first one, so fine-tuning regularises slightly more. Logits in
/// evaluation mode are identical.
pub fn torchvision_vgg_arch(name: &str, num_classes: usize) -> Result<VggArch> {
    let layout = match name {
        "vgg11_bn" => "vgg11",
        "vgg13_bn" => "vgg13",
        "vgg16_bn" => "vgg16",
        "vgg19_bn" => "vgg19",
        other => bail!(
            "unknown torchvision model '{other}': expected vgg11_bn, vgg13_bn, vgg16_bn, \
             vgg19_bn, resnet18 or resnet34 (VGGs without BatchNorm are not supported)"
        ),
    };
    let arch = VggArch {
        layout: layout.into(),
        width_divisor: 1,
        num_classes,
        input_size: 224,
        dropout: 0.5,
        hidden: vec![4096, 4096],
        conv_bias: true,
        head_pool: HeadPool::Max2,
    };
    arch.validate()?;
    Ok(arch)
}

/// Positions of one conv block's layers in torchvision's `features` sequential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIndices {
    /// Index of the `Conv2d` (`features.{conv}.weight`, `.bias`).
    pub conv: usize,
    /// Index of the `BatchNorm2d` (`features.{bn}.weight`, `.bias`, `.running_mean`, ...).
    pub bn: usize,
    /// Index of the `ReLU`.
    pub relu: usize,
    /// Index of the 2x2 `MaxPool2d` following the block, if any (never pool5).
    pub pool: Option<usize>,
}

/// torchvision's `features` positions of every conv block of `arch`, and the position of pool5
/// (the last entry of `features`), as torchvision's `make_layers(cfg, batch_norm=True)` lays
/// them out. Layouts with two consecutive pools are refused: [`Vgg`] would merge them.
pub fn torchvision_feature_indices(arch: &VggArch) -> Result<(Vec<BlockIndices>, usize)> {
    arch.validate()?;
    let items = arch.items()?;
    let mut blocks: Vec<BlockIndices> = Vec::new();
    let mut i = 0;
    for (k, item) in items.iter().enumerate() {
        match item {
            LayoutItem::Conv(_) => {
                blocks.push(BlockIndices {
                    conv: i,
                    bn: i + 1,
                    relu: i + 2,
                    pool: None,
                });
                i += 3;
            }
            LayoutItem::Pool => {
                if k > 0 && items[k - 1] == LayoutItem::Pool {
                    bail!(
                        "layout '{}' has two consecutive pools, which has no torchvision equivalent",
                        arch.layout
                    );
                }
                if k + 1 < items.len()
                    && let Some(last) = blocks.last_mut()
                {
                    last.pool = Some(i);
                }
                i += 1;
            }
        }
    }
    Ok((blocks, i - 1))
}

/// Position of head linear layer `j` (0-based, hidden layers first) in torchvision's
/// `classifier` sequential (Linear, ReLU, Dropout, Linear, ...).
pub fn torchvision_classifier_index(j: usize) -> usize {
    3 * j
}

/// One tensor of a state_dict, converted to f32 when it is floating point.
#[derive(Clone, Debug)]
pub(crate) struct RawTensor {
    /// Element type as stored in the file (for error messages).
    pub dtype: String,
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// Values (row-major) if the tensor is floating point, `None` otherwise.
    pub values: Option<Vec<f32>>,
}

/// A state_dict: tensor name -> tensor.
pub(crate) type StateDict = BTreeMap<String, RawTensor>;

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: renormalise
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Decodes raw bytes of a float type, `size` bytes per element, with `decode`.
fn floats_from_bytes(bytes: &[u8], size: usize, decode: fn(&[u8]) -> f32) -> Vec<f32> {
    bytes.chunks_exact(size).map(decode).collect()
}

/// The values of a safetensors tensor as f32 when its element type is f32, f64, f16 or bf16
/// (little-endian, as the format stores them); `None` for any other element type. f64 values
/// beyond f32's range become infinite, which [`non_finite`] then reports.
pub(crate) fn float_values(view: &safetensors::tensor::TensorView) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => floats_from_bytes(data, 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::F64 => floats_from_bytes(data, 8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        Dtype::F16 => floats_from_bytes(data, 2, |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        Dtype::BF16 => floats_from_bytes(data, 2, |b| {
            f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
        }),
        _ => return None,
    })
}

/// Describes the first value of `values` that is not finite (`"NaN at element 3"`), if any.
pub(crate) fn non_finite(values: &[f32]) -> Option<String> {
    let (i, x) = values.iter().enumerate().find(|(_, x)| !x.is_finite())?;
    Some(format!(
        "{} at element {i} (non-finite values are refused)",
        if x.is_nan() {
            "NaN".to_string()
        } else {
            format!("{x}")
        }
    ))
}

fn read_safetensors(path: &Path) -> Result<StateDict> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        out.insert(
            name,
            RawTensor {
                dtype: format!("{:?}", view.dtype()),
                shape: view.shape().to_vec(),
                values: float_values(&view),
            },
        );
    }
    Ok(out)
}

fn read_pth(path: &Path) -> Result<StateDict> {
    let reader = PytorchReader::new(path)
        .map_err(|e| anyhow::anyhow!("{}: not a readable PyTorch file: {e}", path.display()))?;
    let mut out = StateDict::new();
    for (name, t) in reader.into_tensors() {
        let dtype = t.dtype();
        let values = match dtype {
            DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
                let bytes = t.read().map_err(|e| {
                    anyhow::anyhow!("{}: cannot read tensor {name}: {e}", path.display())
                })?;
                // the reader returns native-endian bytes
                Some(match dtype {
                    DType::F32 => floats_from_bytes(&bytes, 4, |b| {
                        f32::from_ne_bytes([b[0], b[1], b[2], b[3]])
                    }),
                    DType::F64 => floats_from_bytes(&bytes, 8, |b| {
                        f64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    }),
                    DType::F16 => floats_from_bytes(&bytes, 2, |b| {
                        f16_to_f32(u16::from_ne_bytes([b[0], b[1]]))
                    }),
                    _ => floats_from_bytes(&bytes, 2, |b| {
                        f32::from_bits((u16::from_ne_bytes([b[0], b[1]]) as u32) << 16)
                    }),
                })
            }
            _ => None,
        };
        out.insert(
            name,
            RawTensor {
                dtype: format!("{dtype:?}"),
                shape: t.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// Reads a state_dict from `.safetensors` or a PyTorch `.pth`/`.pt` file, told apart by their
/// first bytes (a safetensors file starts with an 8-byte header length and then `{`; anything
/// else goes to the PyTorch reader, which takes ZIP, TAR, legacy and pickle files). A
/// checkpoint that nests the state_dict (`state_dict.features.0.weight`,
/// `module.features.0.weight`, ...) is accepted: the prefix in front of `features.0.weight` is
/// stripped and entries without it are ignored.
pub(crate) fn read_state_dict(path: &Path) -> Result<StateDict> {
    read_state_dict_anchored(path, "features.0.weight")
}

/// [`read_state_dict`] for a network whose first tensor is named `anchor` (VGG:
/// `features.0.weight`, ResNet: `conv1.weight`): a prefix in front of it is stripped.
pub(crate) fn read_state_dict_anchored(path: &Path, anchor: &str) -> Result<StateDict> {
    check_weights_file(path)?;
    let mut head = Vec::with_capacity(9);
    {
        use std::io::Read;
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        f.take(9)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    if head.len() < 2 {
        bail!("{}: file too short to hold any tensor", path.display());
    }
    let sd = if head.get(8) == Some(&b'{') {
        read_safetensors(path)?
    } else {
        read_pth(path)?
    };
    if sd.contains_key(anchor) {
        return Ok(sd);
    }
    let prefix = sd
        .keys()
        .find_map(|k| k.strip_suffix(anchor))
        .map(str::to_string);
    match prefix {
        Some(p) => Ok(sd
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v)))
            .collect()),
        None => Ok(sd),
    }
}

/// Checks that `path` is an existing file, with errors that say what it is instead.
fn check_weights_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a directory, expected a weights file (.safetensors or .pth)",
            path.display()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("weights file {} is missing (no such file)", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot access {}", path.display())),
    }
}

/// Collects the tensors a network takes from a state_dict and everything that went wrong.
pub(crate) struct Taker<'a> {
    sd: &'a StateDict,
    used: BTreeSet<String>,
    missing: Vec<String>,
    misshaped: Vec<String>,
    bad_values: Vec<String>,
}

impl<'a> Taker<'a> {
    /// A taker of `sd`'s tensors.
    pub(crate) fn new(sd: &'a StateDict) -> Self {
        Taker {
            sd,
            used: BTreeSet::new(),
            missing: Vec::new(),
            misshaped: Vec::new(),
            bad_values: Vec::new(),
        }
    }

    /// Every problem found, and every tensor of the file that was not used, in one error
    /// naming `origin` and describing the network as `what`.
    pub(crate) fn finish(self, origin: &Path, what: &str) -> Result<()> {
        let unused: Vec<&str> = self
            .sd
            .keys()
            .filter(|k| !self.used.contains(*k))
            .map(String::as_str)
            .collect();
        let clean =
            self.missing.is_empty() && self.misshaped.is_empty() && self.bad_values.is_empty();
        if clean && unused.is_empty() {
            return Ok(());
        }
        let mut msg = format!(
            "{}: the weights do not fit the network ({what})",
            origin.display()
        );
        if !self.missing.is_empty() {
            msg += &format!("\n  missing: {}", self.missing.join(", "));
        }
        if !self.misshaped.is_empty() {
            msg += &format!("\n  mis-shaped: {}", self.misshaped.join("; "));
        }
        if !self.bad_values.is_empty() {
            msg += &format!("\n  bad values: {}", self.bad_values.join("; "));
        }
        if !unused.is_empty() {
            msg += &format!("\n  unused: {}", unused.join(", "));
        }
        bail!(msg)
    }

    /// The values of tensor `name`, which must have `shape`, finite floats; `None` (and a
    /// recorded problem) otherwise.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let Some(t) = self.sd.get(name) else {
            self.missing.push(name.to_string());
            return None;
        };
        self.used.insert(name.to_string());
        if t.shape != shape {
            self.misshaped.push(format!(
                "{name} has shape {:?}, expected {shape:?}",
                t.shape
            ));
            return None;
        }
        let Some(v) = &t.values else {
            self.bad_values.push(format!(
                "{name} has element type {}, expected floating point",
                t.dtype
            ));
            return None;
        };
        if let Some(what) = non_finite(v) {
            self.bad_values.push(format!("{name} holds {what}"));
            return None;
        }
        Some(v.clone())
    }

    /// Marks `name` as used without taking it (e.g. `num_batches_tracked`).
    pub(crate) fn ignore(&mut self, name: &str) {
        if self.sd.contains_key(name) {
            self.used.insert(name.to_string());
        }
    }
}

pub(crate) fn tensor<const D: usize>(
    values: Vec<f32>,
    shape: &[usize],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

/// Builds `arch` on `device` and fills it from a state_dict with torchvision naming (see the
/// module docs). `num_batches_tracked` is ignored. With `new_head = Some(seed)` the last linear
/// layer keeps a fresh seeded initialisation for `arch.num_classes` outputs and the file's last
/// `classifier.*` tensors are ignored. Missing, mis-shaped and unused tensors are all reported,
/// by name, in one error that names `origin`.
pub(crate) fn apply_state_dict(
    arch: &VggArch,
    sd: &StateDict,
    device: &Device,
    new_head: Option<u64>,
    origin: &Path,
) -> Result<Vgg> {
    let (indices, _) = torchvision_feature_indices(arch)
        .with_context(|| format!("{}: cannot map the architecture", origin.display()))?;
    let mut model = arch.init(device, new_head.unwrap_or(0))?;
    let mut tk = Taker::new(sd);
    for (block, idx) in model.blocks.iter_mut().zip(&indices) {
        let conv = format!("features.{}", idx.conv);
        let wshape = block.conv.weight.dims();
        if let Some(v) = tk.take(&format!("{conv}.weight"), &wshape) {
            block.conv.weight = Param::from_tensor(tensor(v, &wshape, device));
        }
        if block.conv.bias.is_some()
            && let Some(v) = tk.take(&format!("{conv}.bias"), &[wshape[0]])
        {
            block.conv.bias = Some(Param::from_tensor(tensor(v, &[wshape[0]], device)));
        }
        let bn = format!("features.{}", idx.bn);
        let c = [wshape[0]];
        if let Some(v) = tk.take(&format!("{bn}.weight"), &c) {
            block.bn.gamma = Param::from_tensor(tensor(v, &c, device));
        }
        if let Some(v) = tk.take(&format!("{bn}.bias"), &c) {
            block.bn.beta = Param::from_tensor(tensor(v, &c, device));
        }
        if let Some(v) = tk.take(&format!("{bn}.running_mean"), &c) {
            block.bn.running_mean = RunningState::new(tensor(v, &c, device));
        }
        if let Some(v) = tk.take(&format!("{bn}.running_var"), &c) {
            block.bn.running_var = RunningState::new(tensor(v, &c, device));
        }
        tk.ignore(&format!("{bn}.num_batches_tracked"));
    }
    let n_hidden = model.hidden.len();
    let linears = model
        .hidden
        .iter_mut()
        .chain(std::iter::once(&mut model.classifier));
    for (j, lin) in linears.enumerate() {
        let name = format!("classifier.{}", torchvision_classifier_index(j));
        if j == n_hidden && new_head.is_some() {
            tk.ignore(&format!("{name}.weight"));
            tk.ignore(&format!("{name}.bias"));
            continue;
        }
        // burn stores [in, out]; PyTorch [out, in]
        let [d_in, d_out] = lin.weight.dims();
        if let Some(v) = tk.take(&format!("{name}.weight"), &[d_out, d_in]) {
            // transposed on the host so that the tensor is contiguous in burn's layout, as a
            // freshly built layer's is (a transposed view would sum in another order)
            let t: Vec<f32> = (0..d_in * d_out)
                .map(|k| v[(k % d_out) * d_in + k / d_out])
                .collect();
            lin.weight = Param::from_tensor(tensor(t, &[d_in, d_out], device));
        }
        if let Some(v) = tk.take(&format!("{name}.bias"), &[d_out]) {
            lin.bias = Some(Param::from_tensor(tensor(v, &[d_out], device)));
        }
    }
    let what = format!(
        "layout '{}', {} conv layers, hidden {:?}, {} classes",
        arch.layout,
        indices.len(),
        arch.hidden,
        arch.num_classes
    );
    tk.finish(origin, &what)?;
    Ok(model)
}

/// Imports a torchvision VGG-BN state_dict (`.safetensors` or `.pth`, e.g. the file behind
/// `torchvision.models.vgg16_bn(weights=...)`) into a network of architecture `arch` (usually
/// from [`torchvision_vgg_arch`]). Every tensor of the network must be in the file with the
/// right shape, and every tensor of the file (except `num_batches_tracked`) must be used; the
/// error lists the offending names.
pub fn import_torchvision_vgg(arch: &VggArch, path: &Path, device: &Device) -> Result<Vgg> {
    let sd = read_state_dict(path)?;
    apply_state_dict(arch, &sd, device, None, path)
}

/// As [`import_torchvision_vgg`], but for fine-tuning on another label set: the final linear
/// layer (`classifier.6` for torchvision) is replaced by a fresh one with `arch.num_classes`
/// outputs, initialised with burn's initialiser seeded by `seed`; the file's final-layer
/// tensors are ignored whatever their number of classes (e.g. 1000 ImageNet classes imported
/// into a 20-class VOC network).
pub fn import_torchvision_vgg_new_head(
    arch: &VggArch,
    path: &Path,
    device: &Device,
    seed: u64,
) -> Result<Vgg> {
    let sd = read_state_dict(path)?;
    apply_state_dict(arch, &sd, device, Some(seed), path)
}

/// What importing torchvision weights needs of a family (`faithful import --arch NAME`, and
/// `teacher.pretrained` in a config). The defaults say the family has no torchvision models, so
/// a new family starts with `impl TorchvisionImport for MyArch {}` in its own file.
pub trait TorchvisionImport: FamilyArch {
    /// The torchvision model names this family builds (e.g. `vgg16_bn`).
    const TORCHVISION_NAMES: &'static [&'static str] = &[];

    /// The architecture of torchvision's model `name` (one of [`Self::TORCHVISION_NAMES`]).
    fn torchvision_arch(name: &str, num_classes: usize) -> Result<Self> {
        let _ = num_classes;
        bail!("this family has no torchvision model '{name}'")
    }

    /// A network of this architecture with the weights of a torchvision file (`.pth` or
    /// `.safetensors`); `new_head = Some(seed)` replaces the last layer by a fresh one seeded
    /// by `seed` (another label set).
    fn import_torchvision(
        &self,
        path: &Path,
        device: &Device,
        new_head: Option<u64>,
    ) -> Result<Self::Net> {
        let _ = (device, new_head);
        bail!(
            "{}: torchvision import is not implemented for this family",
            path.display()
        )
    }
}

impl TorchvisionImport for VggArch {
    const TORCHVISION_NAMES: &'static [&'static str] =
        &["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"];

    fn torchvision_arch(name: &str, num_classes: usize) -> Result<Self> {
        torchvision_vgg_arch(name, num_classes)
    }

    fn import_torchvision(
        &self,
        path: &Path,
        device: &Device,
        new_head: Option<u64>,
    ) -> Result<Vgg> {
        match new_head {
            Some(seed) => import_torchvision_vgg_new_head(self, path, device, seed),
            None => import_torchvision_vgg(self, path, device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_indices_match_torchvision_vgg16_bn() {
        // torchvision vgg16_bn: features.0 conv, .1 bn, .2 relu, .3 conv, ..., .6 pool,
        // .7 conv; pool5 is features.43; conv5_3 is features.40
        let arch = torchvision_vgg_arch("vgg16_bn", 1000).unwrap();
        let (blocks, pool5) = torchvision_feature_indices(&arch).unwrap();
        assert_eq!(blocks.len(), 13);
        assert_eq!(
            blocks[1],
            BlockIndices {
                conv: 3,
                bn: 4,
                relu: 5,
                pool: Some(6)
            }
        );
        assert_eq!(blocks[2].conv, 7);
        assert_eq!(blocks[12].conv, 40);
        assert_eq!(blocks[12].pool, None);
        assert_eq!(pool5, 43);
        // vgg11_bn has 8 convs and 5 pools: 8 * 3 + 5 = 29 entries
        let a11 = torchvision_vgg_arch("vgg11_bn", 10).unwrap();
        assert_eq!(torchvision_feature_indices(&a11).unwrap().1, 28);
        let a19 = torchvision_vgg_arch("vgg19_bn", 10).unwrap();
        assert_eq!(torchvision_feature_indices(&a19).unwrap().1, 16 * 3 + 5 - 1);
        let a13 = torchvision_vgg_arch("vgg13_bn", 10).unwrap();
        assert_eq!(a13.conv_channels().unwrap().len(), 10);
        assert_eq!(torchvision_classifier_index(2), 6);
    }

    #[test]
    fn torchvision_arch_has_a_25088_wide_first_linear() {
        let arch = torchvision_vgg_arch("vgg16_bn", 1000).unwrap();
        let (c, side) = arch.attribution_shape().unwrap();
        assert_eq!(c * (side / 2) * (side / 2), 25088);
        assert!(torchvision_vgg_arch("vgg16", 10).is_err());
        assert!(torchvision_vgg_arch("resnet18", 10).is_err());
    }

    #[test]
    fn half_precision_decodes() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn consecutive_pools_are_refused() {
        let arch = VggArch {
            layout: "4,M,M,8,M".into(),
            input_size: 16,
            ..VggArch::default()
        };
        assert!(torchvision_feature_indices(&arch).is_err());
    }
}
