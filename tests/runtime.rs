//! faithful's sparse CPU runtime against flex (an independent implementation of every op) for
//! every registered family, dense and pruned; sparse ONNX storage round trip; onnxruntime on
//! the sparse file (when python3 with onnxruntime and numpy is installed); refusals.

use burn::prelude::*;
use burn::tensor::Distribution;
use faithful::compression::unstructured::{PruneScope, prune_to};
use faithful::export::onnx::network_onnx_model;
use faithful::export::onnx_sparse::sparsify;
use faithful::models::Arch;
use faithful::runtime::Runtime;
use faithful::util::seeded_random;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

const NORM: ([f32; 3], [f32; 3]) = ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]);

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The flex forward of raw RGB `x` through the normalisation the graph applies.
fn flex_logits(net: &faithful::models::Network, x: &Tensor<4>) -> Vec<f32> {
    let dev = x.device();
    let (m, s) = NORM;
    let mean = Tensor::<1>::from_floats(m, &dev).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(s, &dev).reshape([1, 3, 1, 1]);
    values(net.forward((x.clone() - mean) / std))
}

#[test]
fn runtime_equals_flex_for_every_family_dense_and_pruned_and_sparse_storage_round_trips() {
    let dev = Device::flex();
    let side = 32;
    let mut ran = 0;
    for (i, arch) in Arch::tiny_examples(5, side).into_iter().enumerate() {
        let net = arch.init(&dev, 7 + i as u64).unwrap();
        let x = seeded_random([3, 3, side, side], Distribution::Uniform(0.0, 1.0), &dev, 3);
        let xs = values(x.clone());
        for fraction in [0.0, 0.9] {
            let pruned = prune_to(net.clone(), fraction, PruneScope::Global).unwrap();
            let mut model = network_onnx_model(&pruned, Some(NORM)).unwrap();
            let runtime = match Runtime::from_model(&model) {
                Ok(r) => r,
                Err(e) => {
                    // the quantized family exports QDQ graphs, which the float runtime refuses
                    let msg = format!("{e:#}");
                    assert!(msg.contains("uantizeLinear"), "{msg}");
                    assert_eq!(arch.family(), "quantized", "{msg}");
                    continue;
                }
            };
            let got = runtime.run(&xs, 3).unwrap();
            let want = flex_logits(&pruned, &x);
            assert_eq!(got.len(), want.len());
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-4 * max_abs(&want).max(1e-3),
                "{} pruned {fraction}: max diff {diff} (logits up to {})",
                arch.family(),
                max_abs(&want)
            );
            if fraction > 0.0 {
                assert!(runtime.density() < 1.0, "density {}", runtime.density());
                let dense_bytes = model.encode_to_vec().len();
                let summary = sparsify(&mut model, 1.0 / 3.0).unwrap();
                assert!(summary.tensors > 0);
                assert!(summary.nonzero * 5 < summary.elements, "{summary:?}");
                let sparse_bytes = model.encode_to_vec().len();
                // every sparse entry is 12 bytes instead of 4 dense: the file shrinks by at
                // least the dense bytes of the moved tensors minus 12 per non-zero
                let saved = 4 * summary.elements - 12 * summary.nonzero;
                assert!(
                    sparse_bytes + saved <= dense_bytes + 64 * summary.tensors,
                    "sparse file {sparse_bytes} bytes vs dense {dense_bytes}, {summary:?}"
                );
                // the same rows in the same order: the same sums, bit for bit
                let decoded =
                    faithful::export::onnx::ModelProto::decode(model.encode_to_vec().as_slice())
                        .unwrap();
                let again = Runtime::from_model(&decoded).unwrap().run(&xs, 3).unwrap();
                assert_eq!(again, got, "{}", arch.family());
            }
            ran += 1;
        }
    }
    assert!(ran >= 4, "only {ran} family/pruning cases ran");
}

#[test]
fn one_weight_shifts_the_input_plane_by_hand() {
    // a 1-channel 3x3 conv whose only non-zero weight, 2.0, sits at (dy, dx) = (0, 2), pad 1:
    // out[y][x] = 2 * in[y - 1][x + 1] (zero outside). Input 3x3 = 1..9.
    use faithful::export::onnx::*;
    let mut w = vec![0f32; 9];
    w[2] = 2.0;
    let fixed = |dims: &[i64]| -> Vec<DimensionValue> {
        dims.iter().map(|&d| DimensionValue::DimValue(d)).collect()
    };
    let conv = NodeProto {
        input: vec!["input".into(), "w".into()],
        output: vec!["y".into()],
        name: "conv".into(),
        op_type: "Conv".into(),
        attribute: vec![attr_ints("pads", &[1, 1, 1, 1])],
        domain: String::new(),
    };
    let flat = NodeProto {
        input: vec!["y".into()],
        output: vec!["logits".into()],
        name: "flat".into(),
        op_type: "Flatten".into(),
        attribute: vec![],
        domain: String::new(),
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        graph: Some(GraphProto {
            node: vec![conv, flat],
            name: "g".into(),
            initializer: vec![float_tensor("w", &[1, 1, 3, 3], &w)],
            input: vec![value_info("input", &fixed(&[1, 1, 3, 3]))],
            output: vec![value_info("logits", &fixed(&[1, 9]))],
            ..Default::default()
        }),
        ..Default::default()
    };
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let got = Runtime::from_model(&model).unwrap().run(&x, 1).unwrap();
    // row 0: nothing above; row 1: 2 * row 0 shifted left (2, 3, _); row 2: 2 * (5, 6, _)
    assert_eq!(got, vec![0., 0., 0., 4., 6., 0., 10., 12., 0.]);
}

#[test]
fn unsupported_operators_and_bad_inputs_are_refused_by_name() {
    let dev = Device::flex();
    let arch = Arch::tiny_examples(3, 16).remove(0);
    let net = arch.init(&dev, 1).unwrap();
    let mut model = network_onnx_model(&net, None).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.node[1].op_type = "Softsign".into();
    let name = graph.node[1].name.clone();
    let err = format!("{:#}", Runtime::from_model(&model).unwrap_err());
    assert!(err.contains("Softsign") && err.contains(&name), "{err}");
    let ok = Runtime::from_model(&network_onnx_model(&net, None).unwrap()).unwrap();
    let err = format!("{:#}", ok.run(&[0.0; 10], 1).unwrap_err());
    assert!(err.contains("input values"), "{err}");
}

#[test]
fn onnxruntime_reads_the_sparse_file_as_the_dense_network() {
    let ok = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: sparse ONNX in onnxruntime (python3 with onnxruntime and numpy not found)"
        );
        return;
    }
    let dev = Device::flex();
    let dir = std::env::temp_dir().join(format!("faithful-sparse-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, arch) in Arch::tiny_examples(4, 32)
        .into_iter()
        .filter(|a| a.family() != "quantized")
        .enumerate()
    {
        let net = prune_to(arch.init(&dev, 11).unwrap(), 0.95, PruneScope::Global).unwrap();
        let mut model = network_onnx_model(&net, Some(NORM)).unwrap();
        sparsify(&mut model, 1.0 / 3.0).unwrap();
        let onnx = dir.join(format!("m{i}.onnx"));
        std::fs::write(&onnx, model.encode_to_vec()).unwrap();
        let x = seeded_random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &dev, 5);
        let want = flex_logits(&net, &x);
        let (xi, yi) = (dir.join(format!("x{i}.f32")), dir.join(format!("y{i}.f32")));
        write_f32(&xi, &values(x));
        write_f32(&yi, &want);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check_onnx.py");
        let out = Command::new("python3")
            .arg(script)
            .args([
                onnx.to_str().unwrap(),
                xi.to_str().unwrap(),
                "2,3,32,32",
                yi.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {said}", arch.family());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sparse_export_writes_a_smaller_file_the_runtime_reads_as_the_network() {
    let dev = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch::tiny_examples(4, 32).remove(0);
    let net = prune_to(arch.init(&dev, 2).unwrap(), 0.97, PruneScope::PerLayer).unwrap();
    let path = dir.path().join("pruned.onnx");
    let (summary, dense, written) =
        faithful::export::onnx_sparse::export_onnx_sparse(&net, &path, Some(NORM)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, written);
    assert!(written < dense, "{written} vs {dense}");
    assert!(
        summary.tensors > 0 && summary.nonzero * 10 < summary.elements,
        "{summary:?}"
    );
    let x = seeded_random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &dev, 9);
    let got = Runtime::load(&path)
        .unwrap()
        .run(&values(x.clone()), 2)
        .unwrap();
    let want = flex_logits(&net, &x);
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4 * max_abs(&want).max(1e-3), "{diff}");
    // a truncated file is an error naming it
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", Runtime::load(&path).unwrap_err());
    assert!(err.contains("pruned.onnx"), "{err}");
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}
