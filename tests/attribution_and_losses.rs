//! Grad-CAM's two forms agree; KD, BCE and matching losses against hand-computed values and
//! properties.

use burn::prelude::*;
use faithful::attribution::closed_form;
use faithful::attribution::gradcam::{GradCam, GradCamClosedForm, Pooling};
use faithful::attribution::{Attribution, one_hot};
use faithful::compression::kd::binary_kl;
use faithful::compression::{bce_with_logits, log_sigmoid};
use faithful::matching::sswa::Sswa;
use faithful::matching::{MapDistance, SswaMode, ewa::activation_map};
use faithful::models::quant::{QuantArch, QuantSpec};
use faithful::models::vgg::HeadPool;
use faithful::models::{Arch, HeadDropout, Network, ResNetArch, VggArch};
use faithful::training::draw_dropout;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn small_arch(hidden: Vec<usize>, dropout: f64) -> VggArch {
    pooled_arch(hidden, dropout, HeadPool::Max2)
}

fn pooled_arch(hidden: Vec<usize>, dropout: f64, head_pool: HeadPool) -> VggArch {
    VggArch {
        head_pool,
        layout: "8,M,16,M,16,M".into(),
        num_classes: 5,
        input_size: 32,
        dropout,
        hidden,
        ..VggArch::default()
    }
}

/// Heads of every family: VGG with and without hidden layers, 2x2 and global max pools; ResNet
/// (global average pool), small and with the ImageNet stem; all with dropout 0.5.
fn every_head() -> Vec<Arch> {
    let mut archs: Vec<Arch> = [
        (vec![], HeadPool::Max2),
        (vec![12], HeadPool::Max2),
        (vec![], HeadPool::GlobalMax),
        (vec![7], HeadPool::GlobalMax),
    ]
    .into_iter()
    .map(|(hidden, pool)| pooled_arch(hidden, 0.5, pool).into())
    .collect();
    for (layout, stem) in [
        ("small", faithful::models::resnet::Stem::Small),
        ("1,2", faithful::models::resnet::Stem::Imagenet),
    ] {
        archs.push(
            ResNetArch {
                layout: layout.into(),
                stem,
                base_width: 8,
                num_classes: 5,
                input_size: 32,
                dropout: 0.5,
                ..ResNetArch::default()
            }
            .into(),
        );
    }
    // the quantized family: a quantized head (weights and inputs, 4 bits) with and without a
    // hidden layer, and a quantized ResNet
    let quantized: Vec<Arch> = [archs[1].clone(), archs[3].clone(), archs[4].clone()]
        .into_iter()
        .map(|base| {
            QuantArch {
                base: Box::new(base),
                spec: QuantSpec {
                    weight_bits: 4,
                    act_bits: 4,
                    ..QuantSpec::default()
                },
            }
            .into()
        })
        .collect();
    archs.extend(quantized);
    assert_eq!(
        faithful::models::FAMILIES.len(),
        3,
        "a new family: add its heads here"
    );
    archs
}

#[test]
fn closed_form_gradient_equals_autodiff_with_dropout_and_hidden_layers() {
    for arch in every_head() {
        let device = Device::flex().autodiff();
        let net = arch.init(&device, 3).unwrap();
        let x = faithful::util::seeded_random(
            [6, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
            9,
        );
        if matches!(arch, Arch::Quant(_)) {
            // a first, smaller batch sets the observers' ranges, so that the tested batch has
            // inputs outside them: the clipped ones must get no gradient in both forms
            let warm = net.features(x.clone().mul_scalar(0.3));
            let none = HeadDropout::none(net.head().layers());
            let _ = net.head().forward(warm, &none);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let drop = draw_dropout(&net, 6, &mut rng, &device);
        assert!(drop.masks.iter().all(Option::is_some), "dropout is on");
        let classes = [0, 1, 2, 3, 4, 2];
        let a = net.features(x).detach().require_grad();
        if matches!(arch, Arch::Quant(_)) {
            let head = net.head();
            let z: Tensor<2> = head.pool(a.clone().detach()).flatten(1, 3);
            let z = faithful::models::head::apply_mask(z, &drop.masks[0]);
            let inside = head.input_clip_mask(0, z).unwrap();
            let clipped = inside.neg().add_scalar(1.0).sum().into_scalar::<f32>();
            assert!(clipped > 0.0, "{}: no input clipped", arch.describe());
        }
        let target = one_hot(&classes, 5, &device);
        let logits = net.head().forward(a.clone(), &drop);
        let auto = a.grad(&(logits * target.clone()).sum().backward()).unwrap();
        let closed =
            closed_form::head_grad(&net.head(), a.clone().detach(), target.clone(), &drop).inner();
        let diff: f32 = (closed - auto.clone()).abs().max().into_scalar::<f32>();
        let scale: f32 = auto.clone().abs().max().into_scalar::<f32>();
        assert!(
            scale > 0.0 && diff <= 1e-5 * scale,
            "{}: diff {diff} scale {scale}",
            arch.describe()
        );
        // channel weights = spatial sum of the full gradient
        let w = closed_form::gradcam_weights(&net.head(), a.detach(), target, &drop).inner();
        let w_auto: Tensor<2> = auto.sum_dims(&[2, 3]).flatten(1, 3);
        let diff: f32 = (w - w_auto).abs().max().into_scalar::<f32>();
        assert!(diff <= 1e-5 * scale * 16.0, "weights diff {diff}");
    }
}

#[test]
fn autodiff_and_closed_form_gradcam_maps_agree_up_to_the_mean_scale() {
    let device = Device::flex();
    let net: Network = small_arch(vec![], 0.5).init(&device, 5).unwrap().into();
    let x = faithful::util::seeded_random(
        [4, 3, 32, 32],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
        9,
    );
    let classes = [4, 3, 0, 1];
    let auto = values(GradCam.maps(&net, x.clone(), &classes).unwrap());
    let closed = values(GradCamClosedForm.maps(&net, x.clone(), &classes).unwrap());
    // mean pooling = sum / (h*w); attribution layer here is 8x8 -> factor 64
    let max = closed.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max > 0.0, "maps are all zero: the test would prove nothing");
    for (a, c) in auto.iter().zip(&closed) {
        assert!((a * 64.0 - c).abs() <= 1e-4 * max, "{a} * 64 vs {c}");
    }
    let feats = net.features(x);
    let sum = values(GradCam::maps_from_features(&net, feats, &classes, Pooling::Sum).unwrap());
    for (s, c) in sum.iter().zip(&closed) {
        assert!((s - c).abs() <= 1e-4 * max);
    }
    assert!(
        GradCam
            .maps(&net, Tensor::zeros([1, 3, 32, 32], &device), &[7])
            .is_err()
    );
}

#[test]
fn binary_kl_matches_a_hand_computed_value_and_its_gradient() {
    let device = Device::flex().autodiff();
    // teacher p = sigmoid(ln 3) = 0.75, student q = 0.5:
    // KL = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.130812
    let t = Tensor::<2>::from_floats([[3f32.ln()]], &device);
    let s = Tensor::<2>::from_floats([[0.0]], &device).require_grad();
    let kl = binary_kl(s.clone(), t.clone(), 1.0);
    assert!((scalar(kl.clone()) - 0.130812).abs() < 1e-5);
    // d KL / ds = (sigmoid(s/T) - sigmoid(t/T)) / T = 0.5 - 0.75
    let g = values(s.grad(&kl.backward()).unwrap());
    assert!((g[0] + 0.25).abs() < 1e-5, "{g:?}");
    // identical logits -> 0 at any temperature, and large logits stay finite
    let z = Tensor::<2>::from_floats([[80.0, -80.0, 0.3]], &device);
    assert!(scalar(binary_kl(z.clone(), z.clone(), 4.0)).abs() < 1e-7);
    assert!(scalar(binary_kl(z.clone(), z.neg(), 1.0)).is_finite());
}

#[test]
fn bce_with_logits_is_stable_and_matches_the_definition() {
    let device = Device::flex();
    let z = Tensor::<2>::from_floats([[0.0, 2.0], [-3.0, 100.0]], &device);
    let y = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &device);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let want = (-(sig(0.0)).ln() - (1.0 - sig(2.0)).ln() - (1.0 - sig(-3.0)).ln() + 0.0) / 4.0;
    assert!((scalar(bce_with_logits(z, y)) - want).abs() < 1e-5);
    let ls = values(log_sigmoid(Tensor::<1>::from_floats(
        [-200.0, 0.0],
        &device,
    )));
    assert!((ls[0] + 200.0).abs() < 1e-3 && (ls[1] + 2f32.ln()).abs() < 1e-6);
}

#[test]
fn map_distance_hand_cases_and_scale_invariance() {
    let device = Device::flex();
    let s = Tensor::<3>::from_floats([[[1.0, 0.0]]], &device);
    let t = Tensor::<3>::from_floats([[[0.0, 1.0]]], &device);
    // normalised difference [1, -1]: mean square 1, l2 norm sqrt 2
    assert!((scalar(MapDistance::MeanSquared.loss(s.clone(), t.clone())) - 1.0).abs() < 1e-6);
    assert!((scalar(MapDistance::L2.loss(s.clone(), t.clone())) - 2f64.sqrt()).abs() < 1e-6);
    let a = Tensor::<3>::from_floats([[[1.0, 2.0], [3.0, 4.0]]], &device);
    assert!(scalar(MapDistance::MeanSquared.loss(a.clone(), a.clone().mul_scalar(7.0))) < 1e-10);
    let b = Tensor::<3>::from_floats([[[4.0, 1.0], [0.0, 2.0]]], &device);
    let d1 = scalar(MapDistance::L2.loss(a.clone(), b.clone()));
    let d2 = scalar(MapDistance::L2.loss(a.mul_scalar(0.1), b.mul_scalar(30.0)));
    assert!(d1 > 0.1 && (d1 - d2).abs() < 1e-5);
}

#[test]
fn ewa_map_is_the_channel_mean_of_squares() {
    let device = Device::flex();
    // two channels at one 1x2 position set: (1, 3) and (2, -4) -> (1+4)/2, (9+16)/2
    let a = Tensor::<4>::from_floats([[[[1.0, 3.0]], [[2.0, -4.0]]]], &device);
    assert_eq!(values(activation_map(a)), vec![2.5, 12.5]);
}

#[test]
fn sswa_masks_drop_the_right_number_of_teacher_channels() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let fixed = Sswa {
        mode: SswaMode::FixedCount,
        drop: 0.3,
        beta: 50.0,
    };
    let m = fixed.keep_mask(5, 20, &mut rng);
    for row in m.chunks(20) {
        assert_eq!(row.iter().filter(|v| **v == 0.0).count(), 6);
        assert_eq!(
            row,
            &m[..20],
            "the authors' mask is shared across the batch"
        );
    }
    let bern = Sswa {
        mode: SswaMode::Bernoulli,
        drop: 0.3,
        beta: 50.0,
    };
    let m = bern.keep_mask(200, 50, &mut rng);
    let dropped = m.iter().filter(|v| **v == 0.0).count() as f64 / m.len() as f64;
    assert!((dropped - 0.3).abs() < 0.02, "{dropped}");
    assert!(
        m.chunks(50).any(|r| r != &m[..50]),
        "Bernoulli masks differ per pair"
    );
    let none = Sswa {
        mode: SswaMode::FixedCount,
        drop: 0.0,
        beta: 50.0,
    }
    .keep_mask(2, 8, &mut rng);
    assert!(none.iter().all(|v| *v == 1.0));
}

#[test]
fn head_dropout_none_changes_nothing() {
    let device = Device::flex();
    let net: Network = small_arch(vec![6], 0.0).init(&device, 0).unwrap().into();
    let x = Tensor::<4>::ones([2, 3, 32, 32], &device);
    let a = net.forward(x.clone());
    let b = net.head().forward(net.features(x), &HeadDropout::none(2));
    assert_eq!(values(a), values(b));
}
