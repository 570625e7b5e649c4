//! e2KD (Parchami-Araghi et al., "Good Teachers Explain: Explanation-Enhanced Knowledge
//! Distillation", ECCV 2024): one minus the cosine similarity of the positive parts of the
//! teacher's and the student's Grad-CAM maps, both upsampled (bilinearly) to the input
//! resolution. Settings in `[matching.options.e2kd]`: `beta` (its weight; default 1.0, our
//! choice, to be tuned per task: on the paper-map scale SWA's beta of 50 corresponds to
//! about 0.5 here, since the mean-squared loss of normalised maps is 2 (1 - cos) / 196).

use super::{Entry, MatchConfig, MatchInputs, Regularizer, l2_normalize, positive_beta};
use crate::attribution::gradcam::cam_from_weights;
use anyhow::Result;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// e2KD's explanation loss.
pub struct E2kd {
    /// Its weight in the fine-tuning loss.
    pub beta: f64,
}

/// `[matching.options.e2kd]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct E2kdOptions {
    /// Weight of the explanation loss.
    pub beta: f64,
}

impl Default for E2kdOptions {
    fn default() -> Self {
        E2kdOptions { beta: 1.0 }
    }
}

/// Bilinear upsampling of maps (P, h, w) to (P, side, side), differentiable.
fn upsample(maps: Tensor<3>, side: usize) -> Tensor<3> {
    let [p, h, w] = maps.dims();
    if (h, w) == (side, side) {
        return maps;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([side, side]);
    interpolate(maps.reshape([p, 1, h, w]), options).reshape([p, side, side])
}

impl Regularizer for E2kd {
    fn name(&self) -> &'static str {
        "e2kd"
    }
    fn needs_weights(&self) -> bool {
        true
    }
    fn maps(&self, inp: &MatchInputs, _: &mut ChaCha8Rng) -> Option<(Tensor<3>, Tensor<3>)> {
        let student = cam_from_weights(inp.student_features.clone(), inp.student_weights.clone());
        let teacher = cam_from_weights(inp.teacher_features.clone(), inp.teacher_weights.clone());
        Some((
            upsample(student, inp.input_side),
            upsample(teacher, inp.input_side),
        ))
    }
    fn beta(&self) -> f64 {
        self.beta
    }
    /// `mean over pairs of 1 - cos(ReLU(student), ReLU(teacher))`; the configured distance and
    /// scale do not apply (the loss is e2KD's own).
    fn loss(&self, student: Tensor<3>, teacher: Tensor<3>, _: &MatchConfig) -> Tensor<1> {
        let cos = (l2_normalize(relu(student)) * l2_normalize(relu(teacher).detach())).sum_dim(1);
        cos.neg().add_scalar(1.0).mean()
    }
}

/// Registry line.
pub const ENTRY: Entry = Entry {
    name: "e2kd",
    build,
};

fn build(cfg: &MatchConfig) -> Result<Box<dyn Regularizer>> {
    let options: E2kdOptions = cfg.options_for("e2kd")?;
    let beta = positive_beta(options.beta, "matching.options.e2kd.beta", "e2kd")?;
    Ok(Box::new(E2kd { beta }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(values: Vec<f32>, side: usize) -> Tensor<3> {
        let p = values.len() / (side * side);
        Tensor::from_data(TensorData::new(values, [p, side, side]), &Device::flex())
    }

    #[test]
    fn the_loss_is_one_minus_the_cosine_of_the_positive_parts() {
        let e = E2kd { beta: 1.0 };
        let cfg = MatchConfig::default();
        // by hand: s = (1, 0, 2, -5) -> positive part (1, 0, 2, 0); t = (2, 1, 0, 0).
        // cos = (1*2 + 0 + 0 + 0) / (sqrt(5) * sqrt(5)) = 0.4 -> loss 0.6
        let s = maps(vec![1.0, 0.0, 2.0, -5.0], 2);
        let t = maps(vec![2.0, 1.0, 0.0, 0.0], 2);
        let loss = e.loss(s, t, &cfg).into_scalar::<f32>();
        assert!((loss - 0.6).abs() < 1e-6, "{loss}");
        // identical maps (up to scale) lose nothing; orthogonal ones lose 1
        let same = e
            .loss(
                maps(vec![1.0, 2.0, 3.0, 4.0], 2),
                maps(vec![2.0, 4.0, 6.0, 8.0], 2),
                &cfg,
            )
            .into_scalar::<f32>();
        assert!(same.abs() < 1e-6, "{same}");
        let orthogonal = e
            .loss(
                maps(vec![1.0, 0.0, 0.0, 0.0], 2),
                maps(vec![0.0, 0.0, 0.0, 3.0], 2),
                &cfg,
            )
            .into_scalar::<f32>();
        assert!((orthogonal - 1.0).abs() < 1e-6, "{orthogonal}");
    }

    #[test]
    fn maps_are_compared_at_the_input_resolution() {
        // a constant map stays constant when upsampled, and the size is the input's
        let up = upsample(maps(vec![3.0; 2 * 4 * 4], 4), 16);
        assert_eq!(up.dims(), [2, 16, 16]);
        let v: Vec<f32> = up.into_data().try_to_vec().unwrap();
        assert!(v.iter().all(|x| (x - 3.0).abs() < 1e-6));
    }

    #[test]
    fn its_options_are_read_and_checked() {
        let mut cfg = MatchConfig::default();
        assert_eq!(by_beta(&cfg).unwrap(), 1.0);
        let table: toml::Table = toml::from_str("beta = 2.5").unwrap();
        cfg.options.insert("e2kd".into(), table);
        assert_eq!(by_beta(&cfg).unwrap(), 2.5);
        for bad in ["beta = -1.0", "beta = nan", "weight = 3.0"] {
            cfg.options
                .insert("e2kd".into(), toml::from_str(bad).unwrap());
            let e = format!("{:#}", build(&cfg).err().unwrap());
            assert!(e.contains("e2kd"), "{bad}: {e}");
        }
    }

    fn by_beta(cfg: &MatchConfig) -> Result<f64> {
        Ok(build(cfg)?.beta())
    }
}
