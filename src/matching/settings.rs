//! Attribution-matching settings shared by every regularizer (strengths of the paper's
//! regularizers, SSWA's drop, the matched layer and classes, the loss form) and the option
//! tables of the others.

use super::{BetaScale, MapDistance, SswaMode};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which layer's maps are matched.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MatchLayer {
    /// The last conv block's output (the paper: "the last convolutional layer"); the same
    /// layer the evaluation's Grad-CAM uses.
    LastConv,
    /// The output of the head's pool (pool5: the authors' code), half the resolution for VGG's
    /// 2x2 max-pool; a head that pools globally (ResNet) has no map there, so its last conv
    /// layer is matched instead. The default: on the demo's 3 seeds the matched students kept
    /// (or raised) naive KD's mAP where at `last-conv` SWA lost 5 to 6 points on two seeds
    /// (README, "Method and options").
    Pool5,
}

/// For which classes maps are matched.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MatchTarget {
    /// The teacher's top-1 class (paper and code).
    Top1,
    /// Every class the teacher predicts present (logit > 0); top-1 where it predicts none.
    Predicted,
}

/// Whether the matching loss reaches the student's head through its Grad-CAM weights.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsGradient {
    /// The student's map `ReLU(sum_c U_c A_c)` is differentiated in `U` too, so the loss also
    /// moves the classifier rows `U` is made of (paper and code: double backprop).
    #[default]
    Through,
    /// `U` is a constant in the loss (stop-gradient): matching shapes the features `A` only and
    /// the classifier learns from the task loss alone.
    Stopped,
}

/// Attribution-matching settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Regularizer strength for EWA (paper: 100).
    pub beta_ewa: f64,
    /// Regularizer strength for SWA and SSWA (paper: 50).
    pub beta_swa: f64,
    /// SSWA drop mode; default the authors' fixed count, the variant that produced the paper's
    /// published numbers.
    pub sswa_mode: SswaMode,
    /// SSWA drop rate (authors' default 0.1; their README recommends 0.3).
    pub drop: f64,
    /// Matched layer.
    pub layer: MatchLayer,
    /// Matched classes.
    pub target: MatchTarget,
    /// Loss form.
    pub distance: MapDistance,
    /// How the loss is scaled before beta: `paper-map` (default) keeps the paper's betas
    /// meaningful at any map size; `per-position` is the authors' raw mean.
    pub beta_scale: BetaScale,
    /// Epochs over which beta ramps linearly from 0 to its value (0: full beta from the first
    /// step, as the paper). A ramp lets a tiny student first learn from the task loss: at full
    /// beta from step one, /8 students sometimes collapse to predicting nothing, a fixed point of
    /// the scale-invariant matching loss.
    pub warmup_epochs: f64,
    /// Whether the loss reaches the student's head through its Grad-CAM weights (SWA, SSWA,
    /// e2KD; EWA has none).
    pub weights_gradient: WeightsGradient,
    /// Settings of regularizers beyond the paper's, one table per regularizer name
    /// (`[matching.options.e2kd]`), read and checked by that regularizer when it is built.
    pub options: BTreeMap<String, toml::Table>,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            beta_ewa: 100.0,
            beta_swa: 50.0,
            sswa_mode: SswaMode::FixedCount,
            drop: 0.1,
            layer: MatchLayer::Pool5,
            target: MatchTarget::Top1,
            distance: MapDistance::MeanSquared,
            beta_scale: BetaScale::PaperMap,
            warmup_epochs: 0.0,
            weights_gradient: WeightsGradient::Through,
            options: BTreeMap::new(),
        }
    }
}

impl MatchConfig {
    /// Checks the shared settings and builds every regularizer in `regularizers` (each checks
    /// its own strength and options), so that a bad value stops the run before any work: a
    /// matching regularizer with a beta that is not a positive number would silently train
    /// without matching.
    pub fn validate(&self, regularizers: &[String]) -> Result<()> {
        if !(0.0..1.0).contains(&self.drop) {
            bail!("matching.drop must be in [0, 1), got {}", self.drop);
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            bail!(
                "matching.warmup_epochs must be >= 0, got {}",
                self.warmup_epochs
            );
        }
        for name in self.options.keys() {
            if !super::names().contains(&name.as_str()) {
                bail!(
                    "matching.options.{name}: unknown regularizer (known: {})",
                    super::names().join(", ")
                );
            }
        }
        for r in regularizers {
            super::by_name(r, self)?;
        }
        Ok(())
    }

    /// The option table of regularizer `name` as its settings type (its defaults where the
    /// table or a key is absent); errors name `matching.options.<name>`.
    pub fn options_for<T: serde::de::DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        match self.options.get(name) {
            None => Ok(T::default()),
            Some(table) => T::deserialize(toml::Value::Table(table.clone()))
                .with_context(|| format!("matching.options.{name}")),
        }
    }
}
