//! VGG family with BatchNorm, a width divisor, and the authors' head
//! (max-pool -> dropout -> linear), plus an optional hidden MLP so that any
//! piecewise-linear head (such as the reference fixture's) fits the same code.

use super::head::{HeadDropout, HeadPooling, PiecewiseLinearHead};
use super::network::{FamilyArch, FamilyNet};
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use serde::{Deserialize, Serialize};

/// Named VGG layouts; `M` is a 2x2 max-pool. The trailing `M` is the head's pool (pool5).
pub fn preset_layout(name: &str) -> Option<&'static str> {
    Some(match name {
        // torchvision cfg "D"
        "vgg16" => "64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512,M",
        "vgg11" => "64,M,128,M,256,256,M,512,512,M,512,512,M",
        // torchvision cfg "B"
        "vgg13" => "64,64,M,128,128,M,256,256,M,512,512,M,512,512,M",
        // torchvision cfg "E"
        "vgg19" => "64,64,M,128,128,M,256,256,256,256,M,512,512,512,512,M,512,512,512,512,M",
        // sized for 64x64 inputs on a 2-core CPU: last conv at 8x8, pool5 at 4x4
        "small" => "16,M,32,M,64,M,128,128,M",
        "tiny" => "16,M,32,M,64,M,64,M",
        _ => return None,
    })
}

/// Architecture of a [`Vgg`] network; saved next to every model so it can be rebuilt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VggArch {
    /// A preset name (`vgg11`, `vgg13`, `vgg16`, `vgg19`, `small`, `tiny`) or a list like `32,M,64,M`.
    pub layout: String,
    /// Every conv layer's channel count is divided by this (paper's students: 2, 4, 8).
    pub width_divisor: usize,
    /// Number of output classes.
    pub num_classes: usize,
    /// Input side length in pixels (square inputs).
    pub input_size: usize,
    /// Dropout probability before each linear layer of the head.
    pub dropout: f64,
    /// Hidden widths of an optional MLP in the head (empty: the authors' single linear layer).
    pub hidden: Vec<usize>,
    /// Whether conv layers have a bias (torchvision's vgg*_bn do).
    pub conv_bias: bool,
    /// The head's pool (pool5).
    pub head_pool: HeadPool,
}

/// The pool between the attribution layer and the head's linear layers. Both are max-pools, so
/// the head stays piecewise linear and the closed-form Grad-CAM applies.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HeadPool {
    /// 2x2 max-pool, then flatten (VGG's pool5; the authors' head).
    Max2,
    /// Global max-pool over the whole map: a translation-invariant head that learns from far
    /// fewer images (useful on small CPU-sized datasets).
    GlobalMax,
}

impl Default for VggArch {
    fn default() -> Self {
        VggArch {
            layout: "small".into(),
            width_divisor: 1,
            num_classes: 10,
            input_size: 64,
            dropout: 0.5,
            hidden: vec![],
            conv_bias: true,
            head_pool: HeadPool::Max2,
        }
    }
}

/// One element of a parsed layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutItem {
    /// A 3x3 conv-BN-ReLU with this many output channels (before the divisor).
    Conv(usize),
    /// A 2x2 max-pool.
    Pool,
}

impl VggArch {
    /// The network of `../shared/reference/gradcam-loss-fixture` (PyTorch `Net` there): conv
    /// 32-64-128-256 without bias, 2x2 pools, a 256-unit hidden layer, 20 classes, 64x64 input.
    pub fn reference_fixture() -> Self {
        VggArch {
            layout: "32,M,64,M,128,M,256,M".into(),
            width_divisor: 1,
            num_classes: 20,
            input_size: 64,
            dropout: 0.0,
            hidden: vec![256],
            conv_bias: false,
            head_pool: HeadPool::Max2,
        }
    }

    /// Parses the layout (resolving presets) into items.
    pub fn items(&self) -> Result<Vec<LayoutItem>> {
        let text = preset_layout(&self.layout).unwrap_or(&self.layout);
        let mut items = Vec::new();
        for tok in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tok.eq_ignore_ascii_case("m") {
                items.push(LayoutItem::Pool);
            } else {
                let c: usize = tok.parse().with_context(|| {
                    format!(
                        "layout '{}': '{tok}' is neither a channel count nor M",
                        self.layout
                    )
                })?;
                items.push(LayoutItem::Conv(c));
            }
        }
        Ok(items)
    }

    /// Checks that the architecture can be built and fed `input_size` images.
    pub fn validate(&self) -> Result<()> {
        let items = self.items()?;
        if self.width_divisor == 0 {
            bail!("width_divisor must be at least 1");
        }
        if self.num_classes == 0 {
            bail!("num_classes must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout must be in [0, 1), got {}", self.dropout);
        }
        if self.hidden.contains(&0) {
            bail!(
                "hidden layer widths must be at least 1, got {:?}",
                self.hidden
            );
        }
        if !matches!(items.first(), Some(LayoutItem::Conv(_))) {
            bail!("layout '{}' must start with a conv layer", self.layout);
        }
        if items.last() != Some(&LayoutItem::Pool) {
            bail!(
                "layout '{}' must end with M (the head's pool5)",
                self.layout
            );
        }
        let pools = items.iter().filter(|i| **i == LayoutItem::Pool).count();
        // checked: 64 or more pools would overflow the shift
        let divisor = u32::try_from(pools)
            .ok()
            .and_then(|p| 1usize.checked_shl(p))
            .filter(|&d| d <= self.input_size);
        if !divisor.is_some_and(|d| self.input_size.is_multiple_of(d)) {
            bail!(
                "input size {} is not divisible by 2^{pools} (layout '{}' has {pools} pools)",
                self.input_size,
                self.layout
            );
        }
        for item in &items {
            if let LayoutItem::Conv(c) = item
                && c / self.width_divisor == 0
            {
                bail!(
                    "width divisor {} leaves a conv layer with no channels",
                    self.width_divisor
                );
            }
        }
        Ok(())
    }

    /// Channel count of each conv layer after the width divisor.
    pub fn conv_channels(&self) -> Result<Vec<usize>> {
        Ok(self
            .items()?
            .iter()
            .filter_map(|i| match i {
                LayoutItem::Conv(c) => Some(c / self.width_divisor),
                LayoutItem::Pool => None,
            })
            .collect())
    }

    /// (channels, side) of the attribution layer: the last conv block's output, before pool5.
    pub fn attribution_shape(&self) -> Result<(usize, usize)> {
        let items = self.items()?;
        let pools_before_last = items.iter().filter(|i| **i == LayoutItem::Pool).count() - 1;
        let c = *self.conv_channels()?.last().context("no conv layer")?;
        Ok((c, self.input_size >> pools_before_last))
    }

    /// Kernel (= stride) of the head's max-pool for an attribution map of side `side`.
    pub fn head_pool_kernel(&self, side: usize) -> usize {
        match self.head_pool {
            HeadPool::Max2 => 2,
            HeadPool::GlobalMax => side,
        }
    }

    /// Builds a freshly initialised network on `device` with burn's initialisers, seeded.
    /// burn's random generator is process-wide and its parameters are initialised lazily (on
    /// first use), so seeding and every draw happen inside [`crate::util::with_burn_rng`]: all
    /// parameters are materialised there, and concurrent initialisations (threads, parallel
    /// tests) cannot interleave their draws.
    pub fn init(&self, device: &Device, seed: u64) -> Result<Vgg> {
        crate::util::with_burn_rng(device, seed, || {
            let model = self.init_unlocked(device)?;
            crate::util::materialize_params(&model);
            Ok(model)
        })
    }

    fn init_unlocked(&self, device: &Device) -> Result<Vgg> {
        self.validate()?;
        let items = self.items()?;
        let mut blocks = Vec::new();
        let mut in_ch = 3;
        for (i, item) in items.iter().enumerate() {
            if let LayoutItem::Conv(c) = item {
                let out = c / self.width_divisor;
                // The final pool belongs to the head; other pools follow their block.
                let pool_after = items.get(i + 1) == Some(&LayoutItem::Pool) && i + 2 < items.len();
                blocks.push(ConvBlock {
                    conv: Conv2dConfig::new([in_ch, out], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_bias(self.conv_bias)
                        .init(device),
                    bn: BatchNormConfig::new(out).init(device),
                    pool_after,
                });
                in_ch = out;
            }
        }
        let (c, side) = self.attribution_shape()?;
        let pooled = side / self.head_pool_kernel(side);
        let mut d_in = c * pooled * pooled;
        let mut hidden = Vec::new();
        for &h in &self.hidden {
            hidden.push(LinearConfig::new(d_in, h).init(device));
            d_in = h;
        }
        let classifier = LinearConfig::new(d_in, self.num_classes).init(device);
        Ok(Vgg {
            blocks,
            hidden,
            classifier,
            arch: self.clone(),
        })
    }
}

/// A conv3x3 -> BatchNorm -> ReLU block, optionally followed by a 2x2 max-pool.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The 3x3 convolution.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: BatchNorm,
    /// Whether a 2x2 max-pool follows (false for the last block: pool5 is the head's).
    pub pool_after: bool,
}

impl ConvBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.bn.forward(self.conv.forward(x)));
        if self.pool_after { pool2(y) } else { y }
    }
}

/// 2x2, stride 2 max-pool.
pub fn pool2(x: Tensor<4>) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([2, 2]))
}

/// A VGG network: conv blocks (features) and a piecewise-linear head.
#[derive(Module, Debug)]
pub struct Vgg {
    /// Conv blocks in order; the last one's output is the attribution layer.
    pub blocks: Vec<ConvBlock>,
    /// Optional hidden linear layers of the head (each followed by ReLU).
    pub hidden: Vec<Linear>,
    /// The final linear layer producing logits.
    pub classifier: Linear,
    /// The architecture this network was built from.
    #[module(skip)]
    pub arch: VggArch,
}

impl Vgg {
    /// The attribution-layer activation A (N, C, h, w): last conv block output before pool5.
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        self.blocks.iter().fold(x, |x, b| b.forward(x))
    }

    /// The head as a [`PiecewiseLinearHead`] view: pool5 (see [`HeadPool`]), flatten, hidden
    /// linear layers with ReLU, classifier.
    pub fn head_view(&self) -> PiecewiseLinearHead<'_> {
        let side = self.arch.attribution_shape().map_or(1, |(_, side)| side);
        PiecewiseLinearHead {
            pool: HeadPooling::Max {
                kernel: self.arch.head_pool_kernel(side),
            },
            hidden: &self.hidden,
            classifier: &self.classifier,
            dropout: self.arch.dropout,
            quant: None,
        }
    }

    /// Logits without dropout.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let head = self.head_view();
        head.forward(self.features(x), &HeadDropout::none(head.layers()))
    }

    /// Number of trainable scalars (as PyTorch's `parameters()`: BatchNorm running statistics
    /// are buffers and not counted).
    pub fn params(&self) -> usize {
        let linear = |l: &Linear| {
            l.weight.val().shape().num_elements() + l.bias.as_ref().map_or(0, |b| b.val().dims()[0])
        };
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.conv.weight.val().shape().num_elements()
                    + b.conv.bias.as_ref().map_or(0, |x| x.val().dims()[0])
                    + 2 * b.bn.gamma.val().dims()[0]
            })
            .sum();
        blocks + self.hidden.iter().map(linear).sum::<usize>() + linear(&self.classifier)
    }

    /// Multiply-accumulate operations of one forward pass on one image.
    pub fn macs(&self) -> usize {
        let mut side = self.arch.input_size;
        let mut total = 0;
        for b in &self.blocks {
            let [o, i, kh, kw] = b.conv.weight.dims();
            total += o * i * kh * kw * side * side;
            if b.pool_after {
                side /= 2;
            }
        }
        total += self
            .hidden
            .iter()
            .map(|l| l.weight.dims()[0] * l.weight.dims()[1])
            .sum::<usize>();
        let [i, o] = self.classifier.weight.dims();
        total + i * o
    }
}

// ---- the family contract (models/network.rs) ----

impl FamilyNet for Vgg {
    fn features(&self, x: Tensor<4>) -> Tensor<4> {
        Vgg::features(self, x)
    }
    fn head(&self) -> PiecewiseLinearHead<'_> {
        self.head_view()
    }
    fn params(&self) -> usize {
        Vgg::params(self)
    }
    fn macs(&self) -> usize {
        Vgg::macs(self)
    }
}

impl FamilyArch for VggArch {
    type Net = Vgg;
    fn init(&self, device: &Device, seed: u64) -> Result<Vgg> {
        VggArch::init(self, device, seed)
    }
    fn validate(&self) -> Result<()> {
        super::check_vgg_arch(self)
    }
    super::network::common_arch_fields!();
    fn attribution_shape(&self) -> Result<(usize, usize)> {
        VggArch::attribution_shape(self)
    }
    fn expected_tensors(&self) -> Result<Vec<(String, Vec<usize>)>> {
        super::expected_vgg_tensors(self)
    }
    fn describe(&self) -> String {
        format!(
            "layout '{}', width divisor {}, conv_bias {}, hidden {:?}, {} classes",
            self.layout, self.width_divisor, self.conv_bias, self.hidden, self.num_classes
        )
    }
    fn layout_name(&self) -> String {
        self.layout.clone()
    }
    fn tiny(num_classes: usize, input_size: usize) -> Vec<Self> {
        vec![VggArch {
            layout: "4,M,8,M".into(),
            num_classes,
            input_size,
            ..VggArch::default()
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_conv_weights(net: &Vgg) -> Vec<f32> {
        net.blocks[0]
            .conv
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    /// burn initialises parameters lazily; the network must hold its seed's values even when
    /// another network is seeded before its first use (as happens under parallel tests).
    #[test]
    fn a_network_keeps_its_seeds_weights_when_another_is_seeded_before_first_use() {
        let device = Device::flex();
        let spec = arch("4,M", 1);
        let a = spec.init(&device, 3).unwrap();
        let b = spec.init(&device, 4).unwrap();
        let a_again = spec.init(&device, 3).unwrap();
        let wa = first_conv_weights(&a);
        assert_eq!(wa, first_conv_weights(&a_again));
        assert_ne!(wa, first_conv_weights(&b), "different seeds must differ");
    }

    fn arch(layout: &str, divisor: usize) -> VggArch {
        VggArch {
            layout: layout.into(),
            width_divisor: divisor,
            num_classes: 3,
            input_size: 8,
            ..VggArch::default()
        }
    }

    #[test]
    fn params_and_macs_match_hand_counts() {
        // conv 3->4 (3x3, bias) at 8x8, pool -> 4x4, conv 4->8 at 4x4, pool5 -> 2x2, linear 32->3
        let net = arch("4,M,8,M", 1).init(&Device::flex(), 0).unwrap();
        let conv1 = 4 * 3 * 9 + 4 + 2 * 4; // weights, bias, BN gamma+beta
        let conv2 = 8 * 4 * 9 + 8 + 2 * 8;
        let head = 8 * 2 * 2 * 3 + 3;
        assert_eq!(net.params(), conv1 + conv2 + head);
        let macs = 4 * 3 * 9 * 64 + 8 * 4 * 9 * 16 + 32 * 3;
        assert_eq!(net.macs(), macs);
        assert_eq!(arch("4,M,8,M", 1).attribution_shape().unwrap(), (8, 4));
    }

    #[test]
    fn width_divisor_divides_every_conv_layer() {
        assert_eq!(arch("vgg16", 8).conv_channels().unwrap()[..3], [8, 8, 16]);
        assert_eq!(
            arch("small", 4).conv_channels().unwrap(),
            vec![4, 8, 16, 32, 32]
        );
    }

    #[test]
    fn bad_layouts_are_rejected_with_a_reason() {
        let e = |a: VggArch| format!("{:#}", a.validate().unwrap_err());
        assert!(e(arch("4,M,x,M", 1)).contains("'x'"));
        assert!(e(arch("4,M,8", 1)).contains("must end with M"));
        assert!(e(arch("4,M,8,M", 8)).contains("no channels"));
        let mut a = arch("4,M,8,M,8,M,8,M", 1);
        a.input_size = 12;
        assert!(e(a).contains("not divisible"));
        // 70 pools: 2^70 does not fit a usize; refused, not wrapped or panicking
        let many = ["4"].into_iter().chain(std::iter::repeat_n("M", 70));
        let mut a = arch(&many.collect::<Vec<_>>().join(","), 1);
        a.input_size = 64;
        assert!(e(a).contains("not divisible"));
        let mut a = arch("4,M,8,M", 1);
        a.hidden = vec![16, 0];
        assert!(e(a).contains("at least 1"));
    }
}
