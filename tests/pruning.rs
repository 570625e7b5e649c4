//! Unstructured and structured pruning: invariants, hand counts, and equivalence with masks.

use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;
use faithful::compression::structured::{FilterPruning, kept_filters, prune_filters};
use faithful::compression::unstructured::{
    PruneScope, PruningRound, cumulative_rate, prune_to, sparsity,
};
use faithful::data::synthetic::{SyntheticConfig, generate};
use faithful::matching;
use faithful::models::{Network, Vgg, VggArch};
use faithful::training::{FineTuneSpec, MatchConfig, Normalization, TrainConfig, fine_tune};

fn arch(layout: &str, size: usize) -> VggArch {
    VggArch {
        layout: layout.into(),
        num_classes: 8,
        input_size: size,
        ..VggArch::default()
    }
}

fn conv_weights(m: &Network) -> Vec<Vec<f32>> {
    m.as_vgg("test")
        .unwrap()
        .blocks
        .iter()
        .map(|b| b.conv.weight.val().into_data().try_to_vec::<f32>().unwrap())
        .collect()
}

/// Random BatchNorm statistics and affine parameters, so that slicing them is really tested.
fn randomize_bn(m: Vgg) -> Vgg {
    let mut m = m;
    for b in m.blocks.iter_mut() {
        let c = b.bn.gamma.dims()[0];
        let dev = b.bn.gamma.val().device();
        let mut draw = 0u64;
        let mut r = |lo: f64, hi: f64| {
            draw += 1;
            faithful::util::seeded_random([c], Distribution::Uniform(lo, hi), &dev, draw)
        };
        b.bn.gamma = Param::from_tensor(r(0.5, 1.5));
        b.bn.beta = Param::from_tensor(r(-0.3, 0.3));
        b.bn.running_mean = RunningState::new(r(-0.2, 0.2));
        b.bn.running_var = RunningState::new(r(0.5, 1.5));
    }
    m
}

#[test]
fn cumulative_rate_matches_the_paper() {
    assert!((cumulative_rate(0.2, 1) - 0.2).abs() < 1e-12);
    assert!((cumulative_rate(0.2, 2) - 0.36).abs() < 1e-12);
    assert!((cumulative_rate(0.2, 16) - 0.971_852_4).abs() < 1e-6);
}

#[test]
fn global_threshold_prunes_the_smallest_magnitudes_across_layers() {
    let device = Device::flex();
    let m: Network = arch("8,M,16,M,16,M", 32).init(&device, 1).unwrap().into();
    let pruned = prune_to(m.clone(), 0.6, PruneScope::Global).unwrap();
    let s = sparsity(&pruned);
    assert!((s - 0.6).abs() < 1e-3, "sparsity {s}");
    let (before, after) = (conv_weights(&m), conv_weights(&pruned));
    let mut max_pruned = 0f32;
    let mut min_kept = f32::MAX;
    for (b, a) in before.iter().flatten().zip(after.iter().flatten()) {
        if *a == 0.0 {
            max_pruned = max_pruned.max(b.abs());
        } else {
            assert_eq!(a, b, "kept weights are unchanged");
            min_kept = min_kept.min(b.abs());
        }
    }
    assert!(max_pruned <= min_kept);
    // layers differ in their weight scale, so a global threshold gives unequal layer rates
    let per_layer: Vec<f64> = after
        .iter()
        .map(|w| w.iter().filter(|v| **v == 0.0).count() as f64 / w.len() as f64)
        .collect();
    assert!(
        per_layer.iter().any(|r| (r - 0.6).abs() > 0.02),
        "{per_layer:?}"
    );
    let local = prune_to(m, 0.6, PruneScope::PerLayer).unwrap();
    for w in conv_weights(&local) {
        let r = w.iter().filter(|v| **v == 0.0).count() as f64 / w.len() as f64;
        assert!((r - 0.6).abs() < 0.01, "per-layer rate {r}");
    }
}

#[test]
fn pruned_weights_stay_exactly_zero_through_sgd_momentum_and_weight_decay() {
    let data_cfg = SyntheticConfig {
        size: 32,
        num_classes: 8,
        n_train: 32,
        n_val: 1,
        n_test: 1,
        ..SyntheticConfig::default()
    };
    let data = generate(&data_cfg).unwrap().train;
    let norm = Normalization::of(&data);
    let ad = Device::flex().autodiff();
    let teacher: Network = arch("8,M,16,M,16,M", 32).init(&ad, 2).unwrap().into();
    let round = PruningRound {
        target: 0.5,
        scope: PruneScope::Global,
    };
    use faithful::compression::Compression;
    let student = round.make_student(&teacher.valid(), &ad, 0).unwrap();
    let before = conv_weights(&student);
    let train = TrainConfig {
        epochs: 2,
        batch_size: 16,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-2,
        ..TrainConfig::default()
    };
    for reg_name in ["none", "swa"] {
        let reg = matching::by_name(reg_name, &MatchConfig::default()).unwrap();
        let spec = FineTuneSpec {
            compression: &round,
            regularizer: reg.as_ref(),
            matching: &MatchConfig::default(),
            train: &train,
            seed: 0,
            label: reg_name,
        };
        let dir =
            std::env::temp_dir().join(format!("faithful-prune-{reg_name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tuned =
            fine_tune(student.clone(), &teacher.valid(), &data, &norm, &spec, &dir).unwrap();
        let after = conv_weights(&tuned);
        let mut changed = 0;
        for (b, a) in before.iter().flatten().zip(after.iter().flatten()) {
            if *b == 0.0 {
                assert_eq!(*a, 0.0, "a pruned weight came back to life");
            } else if a != b {
                changed += 1;
            }
        }
        assert!(changed > 0, "training did not move the surviving weights");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn kept_filters_are_the_largest_l1_norms() {
    let device = Device::flex();
    // filter norms: 3, 1, 4, 1(tie), 5 -> keep ceil(0.4 * 5) = 2 largest: filters 2 and 4
    let w = Tensor::<1>::from_floats([3.0, -1.0, 4.0, 1.0, -5.0], &device).reshape([5, 1, 1, 1]);
    assert_eq!(kept_filters(&w, 0.6), vec![2, 4]);
    assert_eq!(kept_filters(&w, 0.0), vec![0, 1, 2, 3, 4]);
    assert_eq!(kept_filters(&w, 0.99), vec![4], "at least one filter stays");
}

#[test]
fn structured_pruning_counts_params_and_macs_by_hand() {
    let device = Device::flex();
    let m = VggArch {
        num_classes: 3,
        ..arch("4,M,8,M", 8)
    }
    .init(&device, 3)
    .unwrap();
    let p = prune_filters(
        &m,
        &FilterPruning {
            rate: 0.5,
            layers: vec![0, 1],
            epochs: 1,
        },
    )
    .unwrap();
    assert_eq!(p.arch.layout, "2,M,4,M");
    // conv1 2x3x3x3 + bias 2 + BN 4; conv2 4x2x3x3 + bias 4 + BN 8; linear (4*2*2)x3 + 3
    assert_eq!(p.params(), (54 + 2 + 4) + (72 + 4 + 8) + (48 + 3));
    assert_eq!(p.macs(), 2 * 3 * 9 * 64 + 4 * 2 * 9 * 16 + 16 * 3);
}

#[test]
fn structured_pruning_equals_the_masked_network_before_fine_tuning() {
    for hidden in [vec![], vec![6]] {
        let device = Device::flex();
        device.seed(4);
        let m = randomize_bn(
            VggArch {
                hidden: hidden.clone(),
                ..arch("6,M,8,M,10,M", 32)
            }
            .init(&device, 3)
            .unwrap(),
        );
        let cfg = FilterPruning {
            rate: 0.5,
            layers: vec![0, 2],
            epochs: 1,
        };
        let pruned = prune_filters(&m, &cfg).unwrap();
        assert_eq!(pruned.arch.layout, "3,M,8,M,5,M");
        // masked equivalent: the pruned channels output exactly zero after BN (gamma = beta = 0)
        let mut masked = m.clone();
        for (i, b) in masked.blocks.iter_mut().enumerate() {
            let rate = if cfg.layers.contains(&i) {
                cfg.rate
            } else {
                0.0
            };
            let keep = kept_filters(&b.conv.weight.val(), rate);
            let c = b.bn.gamma.dims()[0];
            let v: Vec<f32> = (0..c)
                .map(|j| if keep.contains(&j) { 1.0 } else { 0.0 })
                .collect();
            let mask = Tensor::<1>::from_data(TensorData::new(v, [c]), &device);
            b.bn.gamma = Param::from_tensor(b.bn.gamma.val() * mask.clone());
            b.bn.beta = Param::from_tensor(b.bn.beta.val() * mask);
        }
        let x = faithful::util::seeded_random(
            [3, 3, 32, 32],
            Distribution::Normal(0.0, 1.0),
            &device,
            11,
        );
        let a: Vec<f32> = pruned.forward(x.clone()).into_data().try_to_vec().unwrap();
        let b: Vec<f32> = masked.forward(x).into_data().try_to_vec().unwrap();
        let scale = b.iter().fold(0f32, |s, v| s.max(v.abs()));
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 1e-5 * scale.max(1.0),
                "hidden {hidden:?}: {p} vs {q}"
            );
        }
        assert!(pruned.params() < m.params() && pruned.macs() < m.macs());
    }
}
