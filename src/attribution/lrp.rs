//! Layer-wise Relevance Propagation (Bach et al. 2015) with the rules users know from zennit,
//! chosen per layer by a [`Composite`]. Every rule ignores biases in its denominators except
//! ε, which keeps the bias as the layer computes it. Maps are the positive part of the input
//! relevance summed over colour channels, at input resolution.
//!
//! Propagation starts from relevance 1 at the explained logit rather than the logit's value:
//! every rule here is linear in the relevance, so this only rescales the map, and it keeps a
//! negative logit (a class the network does not predict) from flipping the map's sign.
//!
//! Two composites are registered:
//! - `lrp` (the paper's "LRP α=1, β=0", as the authors' code runs it): α1β0 on every hidden
//!   and output layer, the z^B (box) rule on the input layer with each image's own minimum and
//!   maximum as bounds;
//! - `lrp-epsilon-plus-flat` (zennit's `EpsilonPlusFlat`): flat on the input layer, z+ on
//!   convolutions, ε = 1e-6 on linear layers.

use super::Attribution;
use super::propagation::{
    Position, Walk, WeightedStep, input_map, positive_split, proportional_split, safe_div,
    transpose,
};
use crate::models::Network;
use crate::models::layers::{WeightKind, WeightLayer};
use anyhow::Result;
use burn::prelude::*;

/// How relevance crosses one weighted layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// `R_i = a_i Σ_j w_ij R_j / (z_j + ε sign(z_j))`, z with the bias.
    Epsilon(f64),
    /// `R_i = a_i Σ_j w⁺_ij R_j / Σ_i' a_i' w⁺_i'j` (non-negative inputs).
    ZPlus,
    /// `α` times the positive contributions' share minus `β` times the negative ones', with
    /// inputs of either sign (`a⁺w⁺ + a⁻w⁻` is a positive contribution).
    AlphaBeta {
        /// Weight of the positive part.
        alpha: f64,
        /// Weight of the negative part.
        beta: f64,
    },
    /// Every input of a unit gets an equal share (weights and inputs taken as 1).
    Flat,
    /// z^B: inputs bounded by each image's own minimum `l` and maximum `h` over all channels
    /// and pixels (as the authors' code), `z = w·a − w⁺·l − w⁻·h ≥ 0`.
    ZBox,
}

/// Which rule each weighted layer gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Composite {
    /// The layer reading the image.
    pub input: Rule,
    /// Other convolutions.
    pub conv: Rule,
    /// Linear layers (including the one producing the logits).
    pub dense: Rule,
}

impl Composite {
    /// The paper's LRP α1β0, with the authors' z^B input layer.
    pub const ALPHA1_BETA0: Composite = Composite {
        input: Rule::ZBox,
        conv: Rule::AlphaBeta {
            alpha: 1.0,
            beta: 0.0,
        },
        dense: Rule::AlphaBeta {
            alpha: 1.0,
            beta: 0.0,
        },
    };

    /// zennit's `EpsilonPlusFlat`.
    pub const EPSILON_PLUS_FLAT: Composite = Composite {
        input: Rule::Flat,
        conv: Rule::ZPlus,
        dense: Rule::Epsilon(1e-6),
    };

    /// The rule of a layer at `position`.
    pub fn rule(&self, layer: &WeightLayer, position: Position) -> Rule {
        match (position, layer.kind) {
            (Position::Input, _) => self.input,
            (_, WeightKind::Conv) => self.conv,
            (_, WeightKind::Dense) => self.dense,
        }
    }
}

impl WeightedStep for Composite {
    fn step(
        &self,
        layer: &WeightLayer,
        a: &Tensor<4>,
        r: Tensor<4>,
        position: Position,
    ) -> Result<Tensor<4>> {
        Ok(apply_rule(self.rule(layer, position), layer, a, r))
    }

    /// The addition takes the hidden convolutions' rule: positive shares under z+ and α1β0
    /// (relevance stays non-negative), proportional shares otherwise.
    fn residual_split(&self, zb: Tensor<4>, zs: Tensor<4>, r: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match self.conv {
            Rule::ZPlus | Rule::AlphaBeta { beta: 0.0, .. } => positive_split(zb, zs, r),
            _ => proportional_split(zb, zs, r),
        }
    }
}

/// Relevance at the input `a` of `layer` under `rule`.
pub fn apply_rule(rule: Rule, layer: &WeightLayer, a: &Tensor<4>, r: Tensor<4>) -> Tensor<4> {
    let w = layer.weight.clone();
    let conv = |x: Tensor<4>, w: Tensor<4>| layer.apply(x, w, None);
    let back = |w: Tensor<4>, s: Tensor<4>| transpose(layer, w, s, a);
    match rule {
        Rule::Epsilon(eps) => {
            let z = layer.forward(a.clone());
            let sign = z
                .clone()
                .greater_equal_elem(0.0)
                .float()
                .mul_scalar(2.0)
                .sub_scalar(1.0);
            let s = safe_div(r, z + sign.mul_scalar(eps));
            a.clone() * back(w, s)
        }
        Rule::ZPlus => {
            let wp = w.clamp_min(0.0);
            let s = safe_div(r, conv(a.clone(), wp.clone()));
            a.clone() * back(wp, s)
        }
        Rule::AlphaBeta { alpha, beta } => {
            let (ap, an) = (a.clone().clamp_min(0.0), a.clone().clamp_max(0.0));
            let (wp, wn) = (w.clone().clamp_min(0.0), w.clamp_max(0.0));
            let share = |x1: &Tensor<4>, w1: &Tensor<4>, x2: &Tensor<4>, w2: &Tensor<4>| {
                let z = conv(x1.clone(), w1.clone()) + conv(x2.clone(), w2.clone());
                let s = safe_div(r.clone(), z);
                x1.clone() * back(w1.clone(), s.clone()) + x2.clone() * back(w2.clone(), s)
            };
            let positive = share(&ap, &wp, &an, &wn);
            if beta == 0.0 {
                return positive.mul_scalar(alpha);
            }
            let negative = share(&ap, &wn, &an, &wp);
            positive.mul_scalar(alpha) - negative.mul_scalar(beta)
        }
        Rule::Flat => {
            let ones = w.ones_like();
            let s = safe_div(r, conv(a.ones_like(), ones.clone()));
            back(ones, s)
        }
        Rule::ZBox => {
            let [n, _, _, _] = a.dims();
            let flat = a.clone().reshape([n as i32, -1]);
            let low = a.zeros_like() + flat.clone().min_dim(1).reshape([n, 1, 1, 1]);
            let high = a.zeros_like() + flat.max_dim(1).reshape([n, 1, 1, 1]);
            let (wp, wn) = (w.clone().clamp_min(0.0), w.clone().clamp_max(0.0));
            let z = conv(a.clone(), w.clone())
                - conv(low.clone(), wp.clone())
                - conv(high.clone(), wn.clone());
            let s = safe_div(r, z);
            a.clone() * back(w, s.clone()) - low * back(wp, s.clone()) - high * back(wn, s)
        }
    }
}

/// Relevance at the input image (N, 3, H, W) under `composite`, starting from 1 at the logit
/// of `classes[n]`.
pub fn input_relevance(
    model: &Network,
    x: Tensor<4>,
    classes: &[usize],
    composite: &Composite,
) -> Result<Tensor<4>> {
    Walk::new(model, x, classes)?.to_input(composite)
}

/// A registered LRP composite.
pub struct Lrp {
    /// Registry name.
    pub name: &'static str,
    /// The rules.
    pub composite: Composite,
}

/// The paper's LRP α1β0 (z^B on the input layer).
pub static LRP_ALPHA1_BETA0: Lrp = Lrp {
    name: "lrp",
    composite: Composite::ALPHA1_BETA0,
};

/// zennit's EpsilonPlusFlat composite.
pub static LRP_EPSILON_PLUS_FLAT: Lrp = Lrp {
    name: "lrp-epsilon-plus-flat",
    composite: Composite::EPSILON_PLUS_FLAT,
};

impl Attribution for Lrp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn maps(&self, model: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
        Ok(input_map(input_relevance(
            model,
            x,
            classes,
            &self.composite,
        )?))
    }
}
