//! The one network abstraction every stage works through. A family (VGG, ResNet, ...) is one
//! file implementing [`FamilyNet`] for its network and [`FamilyArch`] for its architecture,
//! plus one line in the [`families!`] list at the bottom of this file; [`Network`] and [`Arch`]
//! are generated from that list and dispatch to the family.
//!
//! What a stage may ask of a network: the attribution-layer activations ([`Network::features`]),
//! its piecewise-linear head ([`Network::head`], the contract the closed-form Grad-CAM needs),
//! parameter and MAC counts, and its architecture (for saving, rebuilding and deriving students).
//! Methods that walk layers generically (unstructured pruning, quantization) visit the module's
//! parameters with burn's visitors; methods that need a family's layer graph (structured
//! pruning, ONNX export) ask for it through [`Network::family`].

use super::head::{HeadDropout, PiecewiseLinearHead};
use super::quant::{QuantArch, QuantNet};
use super::resnet::{ResNet, ResNetArch};
use super::torchvision::TorchvisionImport;
use super::vgg::{Vgg, VggArch};
use anyhow::{Result, anyhow};
use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// A network of one family.
pub trait FamilyNet {
    /// The attribution-layer activation A (N, C, h, w).
    fn features(&self, x: Tensor<4>) -> Tensor<4>;
    /// The head after the attribution layer.
    fn head(&self) -> PiecewiseLinearHead<'_>;
    /// Number of trainable scalars (as PyTorch's `parameters()`).
    fn params(&self) -> usize;
    /// Multiply-accumulate operations of one forward pass on one image.
    fn macs(&self) -> usize;
}

/// The architecture description of one family (saved as `<model>.arch.json`).
pub trait FamilyArch: Clone + Serialize + for<'de> Deserialize<'de> {
    /// The family's network type.
    type Net;
    /// Builds a freshly initialised network, seeded.
    fn init(&self, device: &Device, seed: u64) -> Result<Self::Net>;
    /// Checks the architecture before anything is built.
    fn validate(&self) -> Result<()>;
    /// Number of output classes.
    fn num_classes(&self) -> usize;
    /// Input side length in pixels.
    fn input_size(&self) -> usize;
    /// The same architecture for another dataset.
    fn for_data(&self, num_classes: usize, input_size: usize) -> Self;
    /// The width divisor (1 for a full-width network).
    fn width_divisor(&self) -> usize;
    /// The same architecture with every width divided by `divisor` more.
    fn thinner(&self, divisor: usize) -> Self;
    /// (channels, side) of the attribution layer.
    fn attribution_shape(&self) -> Result<(usize, usize)>;
    /// Dropout probability before each head layer in training.
    fn dropout(&self) -> f64;
    /// The same architecture with head dropout `p`.
    fn with_dropout(&self, p: f64) -> Self;
    /// Every tensor the network holds, named as burn saves it, with its shape.
    fn expected_tensors(&self) -> Result<Vec<(String, Vec<usize>)>>;
    /// A short description for messages (layout, widths, classes).
    fn describe(&self) -> String;
    /// The layout's name in result tables (e.g. `small`, `resnet18`).
    fn layout_name(&self) -> String;
    /// Test-sized architectures of this family (milliseconds per step on a CPU), one per
    /// structural variant (e.g. block kind), so tests that loop over [`Arch::tiny_examples`]
    /// cover a new family or variant by its being listed.
    fn tiny(num_classes: usize, input_size: usize) -> Vec<Self>;
}

/// Defines [`Network`], [`Arch`] and their dispatch from one list of families.
macro_rules! families {
    ($d:tt $($variant:ident($net:ty, $arch:ty) = $name:literal),+ $(,)?) => {
        /// A network of any family.
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Network {
            $(
                #[doc = concat!("The `", $name, "` family.")]
                $variant($net),
            )+
        }

        /// The architecture of a network of any family. In config files and `arch.json` it is a
        /// table with a `family` key (`vgg` when absent, for files written before there were
        /// families) and the family's own fields.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "family", rename_all = "kebab-case")]
        pub enum Arch {
            $(
                #[doc = concat!("The `", $name, "` family.")]
                #[serde(rename = $name)]
                $variant($arch),
            )+
        }

        $(
            impl From<$arch> for Arch {
                fn from(a: $arch) -> Self {
                    Arch::$variant(a)
                }
            }
        )+

        /// Names of all families, in registry order.
        pub const FAMILIES: &[&str] = &[$($name),+];

        /// `match` over every family's architecture, binding it to `$a`.
        macro_rules! on_arch {
            ($d s:expr, $d a:ident => $d body:expr) => {
                match $d s { $(Arch::$variant($d a) => $d body,)+ }
            };
        }

        /// `match` over every family's network, binding it to `$n`.
        macro_rules! on_net {
            ($d s:expr, $d n:ident => $d body:expr) => {
                match $d s { $($crate::models::Network::$variant($d n) => $d body,)+ }
            };
        }

        /// `match` over every family's architecture from outside this module (capability
        /// modules dispatch through it, so they need no per-family arm).
        macro_rules! on_any_arch {
            ($d s:expr, $d a:ident => $d body:expr) => {
                match $d s { $($crate::models::Arch::$variant($d a) => $d body,)+ }
            };
        }
        pub(crate) use on_any_arch;
        pub(crate) use on_net;

        impl Arch {
            /// One test-sized architecture per family, in registry order.
            pub fn tiny_examples(num_classes: usize, input_size: usize) -> Vec<Arch> {
                let mut all = Vec::new();
                $(
                    all.extend(
                        <$arch as FamilyArch>::tiny(num_classes, input_size)
                            .into_iter()
                            .map(Arch::$variant),
                    );
                )+
                all
            }

            /// torchvision's model `name` (e.g. `vgg16_bn`, `resnet18`) with `num_classes`
            /// outputs, from the family that builds it.
            pub fn torchvision(name: &str, num_classes: usize) -> Result<Arch> {
                $(
                    if <$arch as TorchvisionImport>::TORCHVISION_NAMES.contains(&name) {
                        let arch = <$arch as TorchvisionImport>::torchvision_arch(name, num_classes)?;
                        return Ok(Arch::$variant(arch));
                    }
                )+
                Err(anyhow!(
                    "unknown torchvision model '{name}' (known: {})",
                    Self::torchvision_names().join(", ")
                ))
            }

            /// Every torchvision model name some family imports.
            pub fn torchvision_names() -> Vec<&'static str> {
                [$(<$arch as TorchvisionImport>::TORCHVISION_NAMES),+].concat()
            }

            /// The family's name (`vgg`, `resnet`).
            pub fn family(&self) -> &'static str {
                match self { $(Arch::$variant(_) => $name,)+ }
            }

            /// Builds a freshly initialised network, seeded.
            pub fn init(&self, device: &Device, seed: u64) -> Result<Network> {
                Ok(match self { $(Arch::$variant(a) => Network::$variant(a.init(device, seed)?),)+ })
            }

            /// Parses the family's fields of a table whose `family` key said `family`.
            fn from_family(family: &str, fields: serde_json::Value) -> Result<Self> {
                match family {
                    $($name => Ok(Arch::$variant(serde_json::from_value(fields)?)),)+
                    other => Err(anyhow!(
                        "unknown network family '{other}' (known: {})",
                        FAMILIES.join(", ")
                    )),
                }
            }
        }

        $(
            impl From<$net> for Network {
                fn from(n: $net) -> Self {
                    Network::$variant(n)
                }
            }
        )+

        impl Network {
            /// The architecture this network was built from.
            pub fn arch(&self) -> Arch {
                match self { $(Network::$variant(n) => Arch::$variant(n.arch.clone()),)+ }
            }
        }
    };
}

families! {
    $
    Vgg(Vgg, VggArch) = "vgg",
    ResNet(ResNet, ResNetArch) = "resnet",
    Quant(QuantNet, QuantArch) = "quantized",
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let Entries(entries) = Entries::deserialize(d)?;
        let mut family = "vgg".to_string();
        let mut fields = serde_json::Map::new();
        for (key, value) in entries {
            if key == "family" {
                family = match value {
                    serde_json::Value::String(s) => s,
                    other => {
                        return Err(D::Error::custom(format!(
                            "family must be a string (one of {}), got {other}",
                            FAMILIES.join(", ")
                        )));
                    }
                };
            } else {
                fields.insert(key, value);
            }
        }
        Arch::from_family(&family, serde_json::Value::Object(fields))
            .map_err(|e| D::Error::custom(format!("{e:#}")))
    }
}

/// The entries of a table in file order; a key given twice is an error (as it is for a plain
/// struct), not silently the last value.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of architecture settings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries: Vec<(String, serde_json::Value)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Default for Arch {
    fn default() -> Self {
        Arch::Vgg(VggArch::default())
    }
}

impl Arch {
    /// Checks the architecture before anything is built.
    pub fn validate(&self) -> Result<()> {
        on_arch!(self, a => a.validate())
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        on_arch!(self, a => a.num_classes())
    }

    /// Input side length in pixels.
    pub fn input_size(&self) -> usize {
        on_arch!(self, a => a.input_size())
    }

    /// The same architecture for another dataset.
    pub fn for_data(&self, num_classes: usize, input_size: usize) -> Self {
        on_arch!(self, a => a.for_data(num_classes, input_size).into())
    }

    /// The width divisor.
    pub fn width_divisor(&self) -> usize {
        on_arch!(self, a => a.width_divisor())
    }

    /// The same architecture with every width divided by `divisor` more.
    pub fn thinner(&self, divisor: usize) -> Self {
        on_arch!(self, a => a.thinner(divisor).into())
    }

    /// (channels, side) of the attribution layer.
    pub fn attribution_shape(&self) -> Result<(usize, usize)> {
        on_arch!(self, a => a.attribution_shape())
    }

    /// Dropout probability before each head layer in training.
    pub fn dropout(&self) -> f64 {
        on_arch!(self, a => a.dropout())
    }

    /// The same architecture with head dropout `p`.
    pub fn with_dropout(&self, p: f64) -> Self {
        on_arch!(self, a => a.with_dropout(p).into())
    }

    /// Every tensor the network holds, as burn names it in a saved file, with its shape.
    pub fn expected_tensors(&self) -> Result<Vec<(String, Vec<usize>)>> {
        on_arch!(self, a => a.expected_tensors())
    }

    /// The layout's name in result tables.
    pub fn layout_name(&self) -> String {
        on_arch!(self, a => a.layout_name())
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.family(), on_arch!(self, a => a.describe()))
    }
}

impl Arch {
    /// The VGG architecture inside, or an error naming what needed it.
    pub fn as_vgg(&self, what: &str) -> Result<&VggArch> {
        match self {
            Arch::Vgg(a) => Ok(a),
            other => Err(anyhow!(
                "{what} is implemented for the vgg family only, not for {}",
                other.family()
            )),
        }
    }
}

impl Network {
    /// The attribution-layer activation A (N, C, h, w).
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        on_net!(self, n => n.features(x))
    }

    /// The head after the attribution layer.
    pub fn head(&self) -> PiecewiseLinearHead<'_> {
        on_net!(self, n => FamilyNet::head(n))
    }

    /// Logits of the head on attribution-layer activations, without dropout.
    pub fn head_logits(&self, a: Tensor<4>) -> Tensor<2> {
        let head = self.head();
        head.forward(a, &HeadDropout::none(head.layers()))
    }

    /// Logits without dropout.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head_logits(self.features(x))
    }

    /// Number of trainable scalars.
    pub fn params(&self) -> usize {
        on_net!(self, n => FamilyNet::params(n))
    }

    /// Multiply-accumulate operations of one forward pass on one image.
    pub fn macs(&self) -> usize {
        on_net!(self, n => FamilyNet::macs(n))
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.head().num_classes()
    }

    /// The VGG network inside, or an error naming what needed it.
    pub fn as_vgg(&self, what: &str) -> Result<&Vgg> {
        match self {
            Network::Vgg(v) => Ok(v),
            other => Err(anyhow!(
                "{what} is implemented for the vgg family only, not for {}",
                other.arch().family()
            )),
        }
    }
}

/// The [`FamilyArch`] methods of an architecture struct with the usual fields (`num_classes`,
/// `input_size`, `width_divisor`, `dropout`).
macro_rules! common_arch_fields {
    () => {
        fn num_classes(&self) -> usize {
            self.num_classes
        }
        fn input_size(&self) -> usize {
            self.input_size
        }
        fn for_data(&self, num_classes: usize, input_size: usize) -> Self {
            Self {
                num_classes,
                input_size,
                ..self.clone()
            }
        }
        fn width_divisor(&self) -> usize {
            self.width_divisor
        }
        /// Multiplies the divisor (which also divides a pruned ResNet's explicit widths).
        fn thinner(&self, divisor: usize) -> Self {
            Self {
                width_divisor: self.width_divisor * divisor,
                ..self.clone()
            }
        }
        fn dropout(&self) -> f64 {
            self.dropout
        }
        fn with_dropout(&self, p: f64) -> Self {
            Self {
                dropout: p,
                ..self.clone()
            }
        }
    };
}
pub(crate) use common_arch_fields;
