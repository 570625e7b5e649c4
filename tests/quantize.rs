//! Quantization-aware fine-tuning in the grid (alone and after KD or pruning, with every
//! regularizer), and the int8 ONNX export run by onnxruntime against faithful's fake-quantized
//! forward (when python3 with onnxruntime and numpy is installed).

use burn::module::Module;
use burn::prelude::*;
use faithful::config::ExperimentConfig;
use faithful::models::network::FamilyNet;
use faithful::models::quant::{QuantNet, QuantSpec};
use faithful::models::{Arch, Network};
use faithful::report::ResultRow;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-quantize-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn quantize_alone_and_after_kd_or_pruning_runs_with_every_regularizer() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ci.toml");
    let mut cfg = ExperimentConfig::load(&path).unwrap();
    cfg.compressions = vec![
        "quantize".into(),
        "kd+quantize".into(),
        "unstructured+quantize".into(),
    ];
    cfg.quantize.weight_bits = 4;
    cfg.quantize.epochs = 1;
    cfg.quantize.observer_steps = 3;
    cfg.validate().unwrap();
    let dir = tmp("grid");
    let outcome = faithful::experiment::run(&cfg, &dir, &Device::flex()).unwrap();
    let rows: &[ResultRow] = &outcome.rows;
    for c in &cfg.compressions {
        for r in &cfg.regularizers {
            let last = rows
                .iter()
                .filter(|row| &row.compression == c && &row.regularizer == r)
                .max_by_key(|row| row.round)
                .unwrap_or_else(|| panic!("no row for {c} {r}"));
            assert!(last.network.contains("W4A8"), "{c} {r}: {}", last.network);
            assert!(last.map.is_finite(), "{c} {r}");
            // matching ran through the quantized network
            if r != "none" {
                assert!(
                    last.history
                        .iter()
                        .all(|e| e.match_loss.is_some_and(f64::is_finite)),
                    "{c} {r}"
                );
            }
        }
    }
    // the pruned network keeps its zeros through quantization-aware fine-tuning
    let sparsity = |c: &str, round: usize| {
        rows.iter()
            .find(|r| r.compression == c && r.regularizer == "none" && r.round == round)
            .unwrap()
            .sparsity
    };
    // the chain's rounds 1..=R are the pruning rounds, round R + 1 the quantized network
    let rounds = cfg.unstructured.rounds;
    let pruned = sparsity("unstructured+quantize", rounds);
    assert!(pruned > 0.3, "{pruned}");
    assert!(
        (sparsity("unstructured+quantize", rounds + 1) - pruned).abs() < 1e-9,
        "{} vs {pruned}",
        sparsity("unstructured+quantize", rounds + 1)
    );
    // a KD student quantized: the chain's first stage is the KD student, round 1
    let kd = rows
        .iter()
        .find(|r| r.compression == "kd+quantize" && r.round == 1)
        .unwrap();
    assert!(!kd.network.contains("W4A8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_quantized_network_saves_loads_and_is_refused_for_a_second_quantization() {
    let arch = Arch::tiny_examples(3, 16).remove(0);
    let net = arch.init(&Device::flex(), 1).unwrap();
    let q = QuantNet::from_network(&net, &QuantSpec::default()).unwrap();
    let e = QuantNet::from_network(&Network::from(q), &QuantSpec::default()).unwrap_err();
    assert!(e.to_string().contains("quantized already"), "{e}");
    let bad = QuantSpec {
        weight_bits: 1,
        ..QuantSpec::default()
    };
    assert!(QuantNet::from_network(&net, &bad).is_err());
}

fn python_with(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The demo teacher's layout, quantized: observers fed with a few training batches, then the
/// int8 export against onnxruntime and its size against the float export.
#[test]
fn the_int8_onnx_export_runs_in_onnxruntime_with_integer_kernels_and_agrees_with_faithful() {
    let cfg = ExperimentConfig::demo();
    let arch = cfg.teacher_arch_for(10, 64);
    let ad = Device::flex().autodiff();
    let float = arch.init(&Device::flex(), 3).unwrap();
    let dir = tmp("onnx");
    for (w_bits, a_bits) in [(8, 8), (4, 8), (8, 4), (4, 4)] {
        let spec = QuantSpec {
            weight_bits: w_bits,
            act_bits: a_bits,
            ..QuantSpec::default()
        };
        let q = QuantNet::from_network(&float, &spec).unwrap().fork(&ad);
        // observers learn from training-mode forwards on an autodiff device
        for s in 0..4u64 {
            let x = faithful::util::seeded_random(
                [8, 3, 64, 64],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &ad,
                s,
            );
            let drop = faithful::models::HeadDropout::none(q.head().layers());
            let _ = q.head().forward(q.features(x), &drop);
        }
        let q = Network::from(q.valid());
        let x = faithful::util::seeded_random(
            [16, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &Device::flex(),
            9,
        );
        let logits = vals(q.forward(x.clone()));
        let onnx = dir.join(format!("w{w_bits}a{a_bits}.onnx"));
        faithful::export::export_onnx(&q, &onnx, None).unwrap();
        let fp32 = dir.join("fp32.onnx");
        faithful::export::export_onnx(&float, &fp32, None).unwrap();
        let (int8_size, fp32_size) = (
            std::fs::metadata(&onnx).unwrap().len(),
            std::fs::metadata(&fp32).unwrap().len(),
        );
        eprintln!(
            "W{w_bits}A{a_bits}: int8 ONNX {int8_size} bytes, fp32 ONNX {fp32_size} bytes ({:.1}%)",
            100.0 * int8_size as f64 / fp32_size as f64
        );
        assert!(
            int8_size * 10 <= fp32_size * 3,
            "{int8_size} vs {fp32_size}"
        );
        if !python_with("onnxruntime, numpy") {
            eprintln!(
                "SKIPPED: int8 ONNX in onnxruntime (python3 with onnxruntime and numpy not found)"
            );
            continue;
        }
        let (xi, yi) = (
            dir.join(format!("x{w_bits}{a_bits}.f32")),
            dir.join(format!("y{w_bits}{a_bits}.f32")),
        );
        write_f32(&xi, &vals(x));
        write_f32(&yi, &logits);
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check_onnx_int8.py");
        // Tolerance 5% of the largest logit. The graph computes what faithful computes (bias
        // rounding included), but not in the same arithmetic: onnxruntime sums int8 products
        // exactly in int32 (8-bit activations) or sums floats in another order (its float
        // kernels for 4-bit activations, whose Clip keeps it from fusing int8 kernels). Where
        // an activation lies within float rounding of a quantization boundary the two round
        // to neighbouring levels, and a one-level step travels to the logits; this untrained
        // network's logits are small (|logit| < 0.1), so one such step is a few percent.
        // Measured: W8A8 0.17%, W4A8 0.46%, W8A4 3.4%, W4A4 6e-7.
        let out = Command::new("python3")
            .arg(&script)
            .args([
                onnx.to_str().unwrap(),
                xi.to_str().unwrap(),
                "16,3,64,64",
                yi.to_str().unwrap(),
                "0.05",
                // integer kernels for 8-bit activations
                if a_bits == 8 { "1" } else { "0" },
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!("W{w_bits}A{a_bits}: {said}");
        assert!(out.status.success(), "W{w_bits}A{a_bits}: {said}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
