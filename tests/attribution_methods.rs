//! Every registered attribution method on every network family, and each new method's defining
//! property: Integrated Gradients' completeness, Grad-CAM++'s weights on a hand-computed case.

use burn::prelude::*;
use burn::tensor::Distribution;
use faithful::attribution::{self, gradcam_pp, integrated_gradients};
use faithful::models::{Arch, Network};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn input(n: usize, side: usize, seed: u64, device: &Device) -> Tensor<4> {
    faithful::util::seeded_random(
        [n, 3, side, side],
        Distribution::Uniform(-1.0, 1.0),
        device,
        seed,
    )
}

/// A network with random BatchNorm statistics would be closer to a trained one; a freshly
/// initialised one suffices for shapes and signs.
fn network(arch: &Arch, device: &Device) -> Network {
    arch.init(device, 3).unwrap()
}

#[test]
fn every_method_gives_one_finite_non_negative_map_per_image_on_every_family() {
    let device = Device::flex();
    let side = 16;
    for arch in Arch::tiny_examples(3, side) {
        let net = network(&arch, &device);
        let x = input(2, side, 5, &device);
        for method in attribution::REGISTRY {
            let maps = method
                .maps(&net, x.clone(), &[0, 2])
                .unwrap_or_else(|e| panic!("{} on {}: {e:#}", method.name(), arch.describe()));
            let [n, h, w] = maps.dims();
            assert_eq!(n, 2, "{}", method.name());
            assert!(
                h >= 1 && w >= 1 && h <= side && w <= side,
                "{}: {h}x{w}",
                method.name()
            );
            let v = values(maps);
            assert!(
                v.iter().all(|m| m.is_finite() && *m >= 0.0),
                "{} on {}: a negative or non-finite value",
                method.name(),
                arch.describe()
            );
            assert!(
                method.maps(&net, x.clone(), &[0, 3]).is_err(),
                "{}",
                method.name()
            );
        }
    }
}

/// pytorch-grad-cam's formula by hand. Channel 0: A = [[1, 2], [3, 4]] (sum 10), g = [[1, 0],
/// [-1, 2]]: a = 1/(2 + 10) at g = 1 and 4/(8 + 80) at g = 2, g = 0 and g < 0 contribute
/// nothing, so w = 1/12 + 2/22 = 23/132. Channel 1: A = 1 (sum 4), g = 1/2 everywhere:
/// a = (1/4)/(1/2 + 4/8) = 1/4, w = 4 * (1/2)(1/4) = 1/2.
#[test]
fn gradcam_pp_weights_match_a_hand_computed_case() {
    let device = Device::flex();
    let a = Tensor::<4>::from_data(
        TensorData::new(vec![1f32, 2., 3., 4., 1., 1., 1., 1.], [1, 2, 2, 2]),
        &device,
    );
    let g = Tensor::<4>::from_data(
        TensorData::new(vec![1f32, 0., -1., 2., 0.5, 0.5, 0.5, 0.5], [1, 2, 2, 2]),
        &device,
    );
    let w = values(gradcam_pp::gradcam_pp_weights(a, g));
    assert!((w[0] - 23.0 / 132.0).abs() < 1e-5, "{w:?}");
    assert!((w[1] - 0.5).abs() < 1e-5, "{w:?}");
}

/// Completeness: the attributions of an input sum to the logit's change from the baseline, up
/// to the Riemann sum's error, which shrinks as the steps grow (the network is piecewise
/// linear, so the sum converges to the integral).
#[test]
fn integrated_gradients_are_complete_on_every_family() {
    let device = Device::flex();
    let side = 16;
    for arch in Arch::tiny_examples(3, side) {
        let net = network(&arch, &device);
        let x = input(2, side, 9, &device);
        let classes = [1usize, 2];
        let logits = values(net.forward(x.clone()));
        let base = values(net.forward(x.zeros_like()));
        let change: Vec<f32> = classes
            .iter()
            .enumerate()
            .map(|(n, &k)| logits[n * 3 + k] - base[n * 3 + k])
            .collect();
        let gap = |steps: usize| -> f32 {
            let ig = integrated_gradients::integrated_gradients(&net, x.clone(), &classes, steps)
                .unwrap();
            let sums = values(ig.sum_dims(&[1, 2, 3]).flatten::<1>(0, 3));
            sums.iter()
                .zip(&change)
                .map(|(s, c)| (s - c).abs())
                .fold(0.0, f32::max)
        };
        let scale = change.iter().fold(0f32, |m, c| m.max(c.abs())).max(1e-3);
        let (coarse, fine) = (gap(2), gap(128));
        eprintln!(
            "{}: completeness gap {coarse:.2e} (2 steps), {fine:.2e} (128 steps); logit change up to {scale:.3}",
            arch.describe()
        );
        assert!(
            fine <= 0.02 * scale,
            "{}: completeness gap {fine} with 128 steps for logit changes {change:?}",
            arch.describe()
        );
        assert!(
            fine <= coarse + 1e-6,
            "{}: {fine} (128 steps) > {coarse} (2)",
            arch.describe()
        );
    }
}
