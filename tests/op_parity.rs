//! The op-by-op parity suite (`faithful doctor`). On flex against flex every output must agree
//! exactly (the suite's inputs are reproducible); with `FAITHFUL_TEST_BACKEND=wgpu` in a build
//! with `--features wgpu` (CI runs it on lavapipe, Mesa's Vulkan on the CPU, through
//! `tests/wgpu_lavapipe.rs`) every op must agree with flex within 1e-4 relative.

use burn::prelude::*;
use faithful::config::ExperimentConfig;

fn test_device() -> (Device, bool) {
    let wgpu = std::env::var("FAITHFUL_TEST_BACKEND").is_ok_and(|b| b == "wgpu");
    #[cfg(feature = "wgpu")]
    if wgpu {
        return (Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), true);
    }
    assert!(
        !wgpu,
        "FAITHFUL_TEST_BACKEND=wgpu needs a build with --features wgpu"
    );
    (Device::flex(), false)
}

#[test]
fn every_training_op_agrees_with_flex() {
    let (device, other) = test_device();
    let mut cfg = ExperimentConfig::demo();
    // the demo teacher's shapes, at a smaller batch to keep the suite quick on a CPU device
    cfg.teacher.train.batch_size = 8;
    let rows = faithful::doctor::op_parity(&cfg, &device, 0).unwrap();
    println!("{}", faithful::doctor::markdown(&rows, 1e-4));
    let ops: Vec<&str> = rows.iter().map(|r| r.op.as_str()).collect();
    for needed in [
        "conv2d forward",
        "conv2d weight grad",
        "conv2d input grad",
        "batch-norm batch variance",
        "batch-norm input grad",
        "max-pool input grad",
        "linear weight grad",
        "reductions max_dim(3)",
    ] {
        assert!(ops.contains(&needed), "{needed} missing from {ops:?}");
    }
    // burn's fused BatchNorm against the same built from plain ops, on the tested device: an
    // independent reference for the fused kernel
    let (within, across): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.op.contains("fused vs"));
    assert!(!within.is_empty());
    for r in &within {
        assert!(r.relative <= 1e-5, "{r:?}");
    }
    let worst = across
        .iter()
        .max_by(|a, b| a.relative.total_cmp(&b.relative))
        .unwrap();
    if other {
        assert!(
            worst.relative <= 1e-4,
            "{} ({}) differs from flex by {:.2e} relative",
            worst.op,
            worst.shape,
            worst.relative
        );
    } else {
        assert_eq!(worst.max_abs, 0.0, "flex against itself: {worst:?}");
    }
}

#[test]
fn training_on_an_unverified_backend_is_refused_unless_allowed() {
    // flex is always allowed
    faithful::training::ensure_verified_training_backend(&Device::flex().autodiff()).unwrap();
    #[cfg(feature = "wgpu")]
    {
        let wgpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        if std::env::var("FAITHFUL_ALLOW_UNVERIFIED_TRAINING").is_err() {
            let e = faithful::training::ensure_verified_training_backend(&wgpu).unwrap_err();
            assert!(e.to_string().contains("--allow-unverified-training"), "{e}");
        }
        faithful::training::allow_unverified_training(true);
        faithful::training::ensure_verified_training_backend(&wgpu).unwrap();
        faithful::training::allow_unverified_training(false);
    }
}
