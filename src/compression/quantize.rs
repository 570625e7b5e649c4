//! Quantization-aware fine-tuning (`[quantize]`, compression `quantize`): the network is
//! converted to the `quantized` family (BatchNorm folded, weights per output channel and
//! activations per tensor fake-quantized, straight-through gradients; see
//! [`crate::models::quant`]) and fine-tuned with the pruning budget (`prune_train`), with or
//! without attribution matching. The matching sees the quantized student's own Grad-CAM: its
//! features and its head, both quantized.
//!
//! Alone it quantizes the teacher; after another method in a chain (`kd+quantize`,
//! `structured+quantize`, `unstructured+quantize`) it quantizes that method's networks. A
//! pruned network keeps its zeros: the step hook re-zeroes weights that were zero when it was
//! quantized.

use super::unstructured::ConvMasks;
use super::{Budget, Compression, Method, PlannedStage, StepHook, bce_with_logits};
use crate::models::Network;
use crate::models::quant::{QuantNet, QuantSpec};
use anyhow::{Context, Result};
use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Quantization settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Quantization {
    /// Weight bits (8 down to 2), symmetric per output channel.
    pub weight_bits: u32,
    /// Activation bits (8 or 4; 2 to 8 accepted), affine per tensor.
    pub act_bits: u32,
    /// Training batches during which the activation observers learn their ranges (moving
    /// averages of each batch's min and max); frozen afterwards. Counted in batches rather than
    /// epochs because the network is made before the data is seen; with the demo's 3000 images
    /// in batches of 32, 300 batches are about 3 epochs.
    pub observer_steps: usize,
    /// Weight of each batch in the observers' moving average (PyTorch's default, 0.01).
    pub observer_momentum: f64,
    /// Fine-tuning epochs (other settings from `prune_train`).
    pub epochs: usize,
}

impl Default for Quantization {
    fn default() -> Self {
        let spec = QuantSpec::default();
        Quantization {
            weight_bits: spec.weight_bits,
            act_bits: spec.act_bits,
            observer_steps: spec.observer_steps,
            observer_momentum: spec.observer_momentum,
            epochs: 5,
        }
    }
}

impl Quantization {
    /// The network-level settings.
    pub fn spec(&self) -> QuantSpec {
        QuantSpec {
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            observer_steps: self.observer_steps,
            observer_momentum: self.observer_momentum,
        }
    }
}

impl Method for Quantization {
    fn name(&self) -> &'static str {
        "quantize"
    }
    fn validate(&self) -> Result<()> {
        self.spec().validate().context("[quantize]")?;
        anyhow::ensure!(self.epochs >= 1, "quantize.epochs must be at least 1");
        Ok(())
    }
    /// One stage: the network converted and fine-tuned for `epochs` with the pruning budget.
    fn stages(&self) -> Result<Vec<PlannedStage>> {
        Ok(vec![PlannedStage {
            compression: Box::new(self.clone()),
            budget: Budget::Prune,
            epochs: Some(self.epochs),
            round: 0,
            settings_key: serde_json::to_string(self)?,
        }])
    }
}

impl Compression for Quantization {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn make_student(&self, base: &Network, device: &Device, _seed: u64) -> Result<Network> {
        let quantized = QuantNet::from_network(base, &self.spec())?;
        Ok(Network::from(quantized).fork(device).train())
    }

    /// The ground truth alone, as the pruning methods' fine-tuning.
    fn task_loss(&self, student: Tensor<2>, _teacher: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        bce_with_logits(student, targets)
    }

    /// A pruned network's zeros stay zeros (momentum and weight decay would move them).
    fn step_hook(&self, student: &Network) -> Option<StepHook> {
        let masks = ConvMasks::from_zeros(student);
        masks
            .prunes_any()
            .then(|| Box::new(move |model| masks.apply(model)) as StepHook)
    }
}
