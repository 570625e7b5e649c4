//! Import of torchvision's ResNets (`resnet18` ... `resnet152`) from a state_dict saved as `.safetensors` or
//! as a PyTorch `.pth` file (no Python needed).
//!
//! torchvision's names map one to one onto [`ResNet`]'s: `conv1`, `bn1`, `layer{s+1}.{b}` ->
//! `layers.{s}.{b}` with `conv1`, `bn1`, `conv2`, `bn2` and the projection shortcut
//! `downsample.0` (conv) / `downsample.1` (BN) -> `downsample_conv` / `downsample_bn`, and `fc`.
//! BatchNorm `weight`/`bias` are burn's `gamma`/`beta`; linear weights are transposed.

use super::resnet::{Block, ResNet, ResNetArch};
use super::torchvision::{StateDict, Taker, TorchvisionImport, read_state_dict_anchored, tensor};
use anyhow::{Context, Result};
use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use std::path::Path;

/// Imports a torchvision ResNet state_dict into a network of architecture `arch` (usually from
/// [`ResNetArch::torchvision`]). With `new_head = Some(seed)` the final `fc` layer keeps a fresh
/// seeded initialisation for `arch.num_classes` outputs and the file's `fc.*` are ignored
/// (fine-tuning on another label set). Every other tensor of the network must be in the file
/// with its shape and finite values, and every tensor of the file must be used; one error lists
/// all problems by name.
pub fn import_torchvision_resnet(
    arch: &ResNetArch,
    path: &Path,
    device: &Device,
    new_head: Option<u64>,
) -> Result<ResNet> {
    let sd = read_state_dict_anchored(path, "conv1.weight")?;
    apply_resnet_state_dict(arch, &sd, device, new_head, path)
}

impl TorchvisionImport for ResNetArch {
    const TORCHVISION_NAMES: &'static [&'static str] = super::resnet::TORCHVISION_RESNETS;

    fn torchvision_arch(name: &str, num_classes: usize) -> Result<Self> {
        ResNetArch::torchvision(name, num_classes)
    }

    fn import_torchvision(
        &self,
        path: &Path,
        device: &Device,
        new_head: Option<u64>,
    ) -> Result<ResNet> {
        import_torchvision_resnet(self, path, device, new_head)
    }
}

fn apply_resnet_state_dict(
    arch: &ResNetArch,
    sd: &StateDict,
    device: &Device,
    new_head: Option<u64>,
    origin: &Path,
) -> Result<ResNet> {
    let mut model = arch
        .init(device, new_head.unwrap_or(0))
        .with_context(|| format!("{}: cannot build the network", origin.display()))?;
    let mut tk = Taker::new(sd);
    take_conv(&mut tk, &mut model.conv1, "conv1", device);
    take_bn(&mut tk, &mut model.bn1, "bn1", device);
    for (s, stage) in model.layers.iter_mut().enumerate() {
        for (b, block) in stage.iter_mut().enumerate() {
            take_block(&mut tk, block, &format!("layer{}.{b}", s + 1), device);
        }
    }
    if new_head.is_some() {
        tk.ignore("fc.weight");
        tk.ignore("fc.bias");
    } else {
        let [d_in, d_out] = model.fc.weight.dims();
        if let Some(v) = tk.take("fc.weight", &[d_out, d_in]) {
            // transposed on the host: burn stores [in, out], PyTorch [out, in]
            let t: Vec<f32> = (0..d_in * d_out)
                .map(|k| v[(k % d_out) * d_in + k / d_out])
                .collect();
            model.fc.weight = Param::from_tensor(tensor(t, &[d_in, d_out], device));
        }
        if let Some(v) = tk.take("fc.bias", &[d_out]) {
            model.fc.bias = Some(Param::from_tensor(tensor(v, &[d_out], device)));
        }
    }
    let what = format!(
        "resnet layout '{}', base width {}, {} classes",
        arch.layout, arch.base_width, arch.num_classes
    );
    tk.finish(origin, &what)?;
    Ok(model)
}

fn take_block(tk: &mut Taker, block: &mut Block, prefix: &str, device: &Device) {
    for (k, (conv, bn)) in block.chain_mut().into_iter().enumerate() {
        take_conv(tk, conv, &format!("{prefix}.conv{}", k + 1), device);
        take_bn(tk, bn, &format!("{prefix}.bn{}", k + 1), device);
    }
    if let Some(conv) = block.downsample_conv.as_mut() {
        take_conv(tk, conv, &format!("{prefix}.downsample.0"), device);
    }
    if let Some(bn) = block.downsample_bn.as_mut() {
        take_bn(tk, bn, &format!("{prefix}.downsample.1"), device);
    }
}

fn take_conv(tk: &mut Taker, conv: &mut Conv2d, name: &str, device: &Device) {
    let shape = conv.weight.dims();
    if let Some(v) = tk.take(&format!("{name}.weight"), &shape) {
        conv.weight = Param::from_tensor(tensor(v, &shape, device));
    }
}

fn take_bn(tk: &mut Taker, bn: &mut BatchNorm, name: &str, device: &Device) {
    let c = [bn.gamma.dims()[0]];
    if let Some(v) = tk.take(&format!("{name}.weight"), &c) {
        bn.gamma = Param::from_tensor(tensor(v, &c, device));
    }
    if let Some(v) = tk.take(&format!("{name}.bias"), &c) {
        bn.beta = Param::from_tensor(tensor(v, &c, device));
    }
    if let Some(v) = tk.take(&format!("{name}.running_mean"), &c) {
        bn.running_mean = RunningState::new(tensor(v, &c, device));
    }
    if let Some(v) = tk.take(&format!("{name}.running_var"), &c) {
        bn.running_var = RunningState::new(tensor(v, &c, device));
    }
    tk.ignore(&format!("{name}.num_batches_tracked"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::resnet::Stem;
    use burn::store::ModuleSnapshot;

    /// A small ResNet with torchvision's stem and a projection shortcut.
    fn arch() -> ResNetArch {
        ResNetArch {
            layout: "1,1".into(),
            stem: Stem::Imagenet,
            base_width: 4,
            num_classes: 3,
            input_size: 32,
            ..ResNetArch::default()
        }
    }

    /// The network's tensors under torchvision's names and layout (fc transposed to
    /// [out, in], BN weight/bias), plus the `num_batches_tracked` counters torchvision saves.
    fn torchvision_state_dict(net: &ResNet) -> StateDict {
        let mut sd = StateDict::new();
        for snap in net.collect(None, None, false) {
            let burn = snap.name.clone();
            let shape = snap.shape.to_vec();
            let bytes = snap.to_bytes().unwrap();
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let torch = burn
                .replace("layers.0.", "layer1.")
                .replace("layers.1.", "layer2.")
                .replace("downsample_conv", "downsample.0")
                .replace("downsample_bn", "downsample.1")
                .replace(".gamma", ".weight")
                .replace(".beta", ".bias");
            let (shape, values) = if torch == "fc.weight" {
                let (d_in, d_out) = (shape[0], shape[1]);
                let t = (0..d_in * d_out)
                    .map(|k| values[(k % d_in) * d_out + k / d_in])
                    .collect();
                (vec![d_out, d_in], t)
            } else {
                (shape, values)
            };
            sd.insert(
                torch,
                crate::models::torchvision::RawTensor {
                    dtype: "F32".into(),
                    shape,
                    values: Some(values),
                },
            );
        }
        for bn in ["bn1", "layer1.0.bn1", "layer2.0.downsample.1"] {
            sd.insert(
                format!("{bn}.num_batches_tracked"),
                crate::models::torchvision::RawTensor {
                    dtype: "I64".into(),
                    shape: vec![],
                    values: None,
                },
            );
        }
        sd
    }

    fn logits(net: &ResNet) -> Vec<f32> {
        let x: Vec<f32> = (0..2 * 3 * 32 * 32)
            .map(|i| ((i * 7) % 31) as f32 / 31.0 - 0.5)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(x, [2, 3, 32, 32]), &Device::flex());
        crate::models::Network::from(net.clone())
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn torchvision_names_import_to_the_same_network() {
        let device = Device::flex();
        let original = arch().init(&device, 11).unwrap();
        let sd = torchvision_state_dict(&original);
        assert!(sd.contains_key("layer2.0.downsample.0.weight"));
        let imported =
            apply_resnet_state_dict(&arch(), &sd, &device, None, Path::new("r.pth")).unwrap();
        assert_eq!(logits(&imported), logits(&original));
        // bottleneck blocks: torchvision's conv3/bn3 and a projection in every stage
        let bottleneck = ResNetArch {
            block: Some(crate::models::resnet::BlockKind::Bottleneck),
            ..arch()
        };
        let original_b = bottleneck.init(&device, 12).unwrap();
        let sd_b = torchvision_state_dict(&original_b);
        for name in [
            "layer1.0.conv3.weight",
            "layer1.0.bn3.running_var",
            "layer1.0.downsample.0.weight",
        ] {
            assert!(sd_b.contains_key(name), "{name}");
        }
        let imported =
            apply_resnet_state_dict(&bottleneck, &sd_b, &device, None, Path::new("r.pth")).unwrap();
        assert_eq!(logits(&imported), logits(&original_b));
        // a fresh head for another label set ignores the file's fc
        let mut five = arch();
        five.num_classes = 5;
        let fresh = apply_resnet_state_dict(&five, &sd, &device, Some(3), Path::new("r.pth"));
        assert_eq!(fresh.unwrap().fc.weight.dims(), [8, 5]);
    }

    #[test]
    fn a_state_dict_that_does_not_fit_names_every_problem() {
        let device = Device::flex();
        let mut sd = torchvision_state_dict(&arch().init(&device, 1).unwrap());
        sd.remove("layer1.0.conv2.weight");
        sd.get_mut("fc.bias").unwrap().shape = vec![7];
        sd.insert("extra.weight".into(), sd["bn1.weight"].clone());
        let e = format!(
            "{:#}",
            apply_resnet_state_dict(&arch(), &sd, &device, None, Path::new("r.pth")).unwrap_err()
        );
        for needle in ["r.pth", "layer1.0.conv2.weight", "fc.bias", "extra.weight"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
