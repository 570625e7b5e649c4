//! Learning-rate schedules, evaluated per optimisation step.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// Half-cosine decay from the initial rate to zero over all steps.
    Cosine,
    /// Multiply by `gamma` at each milestone, given as fractions of training (the authors'
    /// 150/200/250 of 350 epochs are about 0.43, 0.57, 0.71).
    Step {
        /// Fractions of the total steps in (0, 1).
        milestones: Vec<f64>,
        /// Factor applied at each milestone.
        gamma: f64,
    },
}

impl Schedule {
    /// The learning rate at `step` of `total` steps.
    pub fn lr(&self, base: f64, step: usize, total: usize) -> f64 {
        let progress = step as f64 / total.max(1) as f64;
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Schedule::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| progress >= m).count();
                base * gamma.powi(passed as i32)
            }
        }
    }

    /// Checks milestones and factor.
    pub fn validate(&self, stage: &str) -> Result<()> {
        if let Schedule::Step { milestones, gamma } = self {
            if milestones.iter().any(|m| !(0.0..1.0).contains(m)) {
                bail!("{stage}: step milestones must be fractions in [0, 1)");
            }
            if gamma.is_nan() || *gamma <= 0.0 {
                bail!("{stage}: step gamma must be positive");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_base_halves_midway_and_ends_near_zero() {
        let s = Schedule::Cosine;
        assert!((s.lr(0.1, 0, 100) - 0.1).abs() < 1e-12);
        assert!((s.lr(0.1, 50, 100) - 0.05).abs() < 1e-12);
        assert!(s.lr(0.1, 99, 100) < 0.001);
    }

    #[test]
    fn step_multiplies_at_each_milestone() {
        let s = Schedule::Step {
            milestones: vec![0.5, 0.75],
            gamma: 0.1,
        };
        assert!((s.lr(1.0, 49, 100) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 50, 100) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 80, 100) - 0.01).abs() < 1e-12);
        assert!(
            Schedule::Step {
                milestones: vec![1.5],
                gamma: 0.1
            }
            .validate("t")
            .is_err()
        );
    }
}
