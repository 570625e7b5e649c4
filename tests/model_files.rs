//! Saved-model files from a hostile user: other float precisions, non-float and non-finite
//! tensors, architecture files that contradict their weights, directories and missing files
//! given as models, failed writes, and dataset descriptions that do not fit the network.
//!
//! Weight files are written here with the `safetensors` crate from values the tests choose
//! (a fixed pattern of multiples of 1/64, exactly representable in f16, bf16, f32 and f64), so
//! expected values never come from faithful's own output.

use burn::module::Param;
use burn::prelude::*;
use faithful::export::{export_onnx, export_torch};
use faithful::models::{VggArch, arch_path, import_torchvision_vgg, load_model, save_model};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------- helpers

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-modelfiles-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// conv 3->4, pool, conv 4->6, pool5 on 8x8 inputs: head input 6 * 2 * 2 = 24, hidden 5, 3
/// classes.
fn arch() -> VggArch {
    VggArch {
        layout: "4,M,6,M".into(),
        input_size: 8,
        num_classes: 3,
        hidden: vec![5],
        ..VggArch::default()
    }
}

/// name -> (shape, values): the tensors of [`arch`] as burn names them, with pattern values.
type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Multiples of 1/64 between -0.75 and 0.75 (variances: between 0.125 and 0.875), varying with
/// the tensor and the element.
fn pattern(name: &str, n: usize) -> Vec<f32> {
    let salt = name.bytes().map(|b| b as usize).sum::<usize>();
    (0..n)
        .map(|i| {
            if name.ends_with("running_var") {
                (8 + (i * 5 + salt) % 49) as f32 / 64.0
            } else {
                ((i * 37 + salt) % 97) as f32 / 64.0 - 0.75
            }
        })
        .collect()
}

fn pattern_tensors() -> Named {
    let c = |n: &str, s: Vec<usize>| {
        let v = pattern(n, s.iter().product());
        (n.to_string(), (s, v))
    };
    let mut out = Named::new();
    for (i, (cin, cout)) in [(3, 4), (4, 6)].into_iter().enumerate() {
        let (k, v) = c(&format!("blocks.{i}.conv.weight"), vec![cout, cin, 3, 3]);
        out.insert(k, v);
        for t in [
            "conv.bias",
            "bn.gamma",
            "bn.beta",
            "bn.running_mean",
            "bn.running_var",
        ] {
            let (k, v) = c(&format!("blocks.{i}.{t}"), vec![cout]);
            out.insert(k, v);
        }
    }
    for (name, shape) in [
        ("hidden.0.weight", vec![24, 5]),
        ("hidden.0.bias", vec![5]),
        ("classifier.weight", vec![5, 3]),
        ("classifier.bias", vec![3]),
    ] {
        let (k, v) = c(name, shape);
        out.insert(k, v);
    }
    out
}

/// f16 bits of `x`, which must be exactly representable as a normal f16 (or zero).
fn f16_bits(x: f32) -> u16 {
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = b & 0x7f_ffff;
    assert!(
        exp > 0 && exp < 31 && mant & 0x1fff == 0,
        "{x} is not an f16"
    );
    sign | ((exp as u16) << 10) | ((mant >> 13) as u16)
}

/// bf16 bits of `x`, which must be exactly representable.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    assert_eq!(b & 0xffff, 0, "{x} is not a bf16");
    (b >> 16) as u16
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F64 => v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect(),
        Dtype::F16 => v.iter().flat_map(|x| f16_bits(*x).to_le_bytes()).collect(),
        Dtype::BF16 => v.iter().flat_map(|x| bf16_bits(*x).to_le_bytes()).collect(),
        Dtype::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        other => panic!("no encoder for {other:?}"),
    }
}

/// Chooses the element type of a tensor by its name.
type DtypeOf = fn(&str) -> Dtype;

/// Writes `tensors` as safetensors, each in the element type `dtype_of(name)` chooses.
fn write_weights(path: &Path, tensors: &Named, dtype_of: impl Fn(&str) -> Dtype) {
    let raw: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (s, v))| {
            let d = dtype_of(k);
            (k.clone(), s.clone(), d, encode(v, d))
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(k, s, d, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (k.clone(), v)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Writes `<dir>/<name>.safetensors` (all f32 unless `dtype_of` says otherwise) and its
/// `.arch.json` for `arch`; returns the weights path.
fn write_model(
    dir: &Path,
    name: &str,
    arch: &VggArch,
    tensors: &Named,
    dtype_of: impl Fn(&str) -> Dtype,
) -> PathBuf {
    let p = dir.join(format!("{name}.safetensors"));
    write_weights(&p, tensors, dtype_of);
    std::fs::write(arch_path(&p), serde_json::to_string(arch).unwrap()).unwrap();
    p
}

fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn logits(net: &faithful::models::Network) -> Vec<f32> {
    let device = Device::flex();
    let x: Vec<f32> = (0..2 * 3 * 8 * 8)
        .map(|i| ((i * 13) % 29) as f32 / 29.0)
        .collect();
    f32s(net.forward(Tensor::from_data(TensorData::new(x, [2, 3, 8, 8]), &device)))
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn faithful_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faithful"))
        .args(args)
        .output()
        .expect("the faithful binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------- 1. precisions and types

#[test]
fn f16_bf16_and_f64_weights_load_as_the_f32_network() {
    let device = Device::flex();
    let dir = tmp("precision");
    let t = pattern_tensors();
    let a = arch();
    let reference = load_model(&write_model(&dir, "f32", &a, &t, |_| Dtype::F32), &device).unwrap();
    // the values arrive unchanged (checked against the pattern, not against faithful)
    assert_eq!(
        f32s(
            reference.as_vgg("test").unwrap().blocks[1]
                .conv
                .bias
                .as_ref()
                .unwrap()
                .val()
        ),
        t["blocks.1.conv.bias"].1
    );
    let expected = logits(&reference);
    let cases: [(&str, DtypeOf); 4] = [
        ("f16", |_| Dtype::F16),
        ("bf16", |_| Dtype::BF16),
        ("f64", |_| Dtype::F64),
        ("one-f16-bias", |n| {
            if n == "classifier.bias" {
                Dtype::F16
            } else {
                Dtype::F32
            }
        }),
    ];
    for (name, dtype_of) in cases {
        let p = write_model(&dir, name, &a, &t, dtype_of);
        let net = load_model(&p, &device).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            f32s(net.as_vgg("test").unwrap().hidden[0].weight.val()),
            t["hidden.0.weight"].1,
            "{name}"
        );
        assert_eq!(logits(&net), expected, "{name}");
        // and the exporter takes the converted network
        export_onnx(&net, &dir.join(format!("{name}.onnx")), None).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_float_tensors_are_refused_naming_file_and_tensor() {
    let dir = tmp("int");
    let mut t = pattern_tensors();
    t.get_mut("blocks.0.bn.gamma").unwrap().1 = vec![1.0; 4];
    let p = write_model(&dir, "ints", &arch(), &t, |n| {
        if n == "blocks.0.bn.gamma" {
            Dtype::I32
        } else {
            Dtype::F32
        }
    });
    let e = err_text(load_model(&p, &Device::flex()));
    assert!(e.contains("ints.safetensors"), "{e}");
    assert!(e.contains("blocks.0.bn.gamma has element type I32"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- 2. non-finite values

#[test]
fn non_finite_weights_are_refused_on_load_naming_file_and_tensor() {
    let device = Device::flex();
    let dir = tmp("nan-load");
    let mut t = pattern_tensors();
    t.get_mut("blocks.1.conv.bias").unwrap().1[2] = f32::NAN;
    let p = write_model(&dir, "nan", &arch(), &t, |_| Dtype::F32);
    let e = err_text(load_model(&p, &device));
    assert!(e.contains("nan.safetensors"), "{e}");
    assert!(
        e.contains("blocks.1.conv.bias holds NaN at element 2"),
        "{e}"
    );

    // an infinity stored as f64
    let mut t = pattern_tensors();
    t.get_mut("classifier.weight").unwrap().1[0] = f32::INFINITY;
    let p = write_model(&dir, "inf", &arch(), &t, |_| Dtype::F64);
    let e = err_text(load_model(&p, &device));
    assert!(e.contains("inf.safetensors"), "{e}");
    assert!(
        e.contains("classifier.weight holds inf at element 0"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_finite_weights_are_refused_on_onnx_and_torch_export() {
    let device = Device::flex();
    let dir = tmp("nan-export");
    let mut net = arch().init(&device, 1).unwrap();
    let mut bias = f32s(net.classifier.bias.as_ref().unwrap().val());
    bias[1] = f32::NEG_INFINITY;
    net.classifier.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(bias, [3]),
        &device,
    )));
    let onnx = dir.join("bad.onnx");
    let e = err_text(export_onnx(&net.clone().into(), &onnx, None));
    assert!(e.contains("bad.onnx"), "{e}");
    assert!(e.contains("classifier.bias holds -inf at element 1"), "{e}");
    assert!(!onnx.exists());
    let e = err_text(export_torch(&net, &dir.join("bad"), None));
    assert!(e.contains("bad.safetensors"), "{e}");
    assert!(e.contains("classifier.bias"), "{e}");
    assert!(!dir.join("bad.safetensors").exists() && !dir.join("bad.json").exists());

    // finite weights whose BatchNorm does not fold: sqrt(running_var + eps) of a negative
    let mut net = arch().init(&device, 1).unwrap();
    net.blocks[0].bn.running_var = burn::module::RunningState::new(Tensor::from_data(
        TensorData::new(vec![-1.0f32; 4], [4]),
        &device,
    ));
    let e = err_text(export_onnx(&net.into(), &onnx, None));
    assert!(e.contains("bad.onnx") && e.contains("blocks.0.bn"), "{e}");
    assert!(!onnx.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_finite_weights_are_refused_on_torchvision_import() {
    let device = Device::flex();
    let dir = tmp("nan-import");
    let a = arch();
    // a torchvision-named state_dict: the PyTorch export of a fresh network
    export_torch(&a.init(&device, 2).unwrap(), &dir.join("tv"), None).unwrap();
    let path = dir.join("tv.safetensors");
    assert!(import_torchvision_vgg(&a, &path, &device).is_ok());
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut named = Named::new();
    let mut ints = Vec::new();
    for (k, v) in st.tensors() {
        if v.dtype() == Dtype::F32 {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            named.insert(k, (v.shape().to_vec(), vals));
        } else {
            ints.push(k);
        }
    }
    assert_eq!(ints.len(), 2, "one num_batches_tracked per BatchNorm");
    named.get_mut("features.4.bias").unwrap().1[3] = f32::NAN;
    let bad = dir.join("nan.safetensors");
    write_weights(&bad, &named, |_| Dtype::F32);
    let e = err_text(import_torchvision_vgg(&a, &bad, &device));
    assert!(e.contains("nan.safetensors"), "{e}");
    assert!(e.contains("features.4.bias holds NaN at element 3"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- 3. arch vs weights

#[test]
fn an_architecture_contradicting_its_weights_is_refused_naming_each_tensor() {
    let device = Device::flex();
    let dir = tmp("contradict");
    let t = pattern_tensors();
    let f32_only = |_: &str| Dtype::F32;

    let no_bias = VggArch {
        conv_bias: false,
        ..arch()
    };
    let e = err_text(load_model(
        &write_model(&dir, "a", &no_bias, &t, f32_only),
        &device,
    ));
    assert!(
        e.contains("a.safetensors") && e.contains("a.arch.json"),
        "{e}"
    );
    assert!(
        e.contains("unexpected: blocks.0.conv.bias, blocks.1.conv.bias"),
        "{e}"
    );

    let mut missing = t.clone();
    missing.remove("blocks.1.bn.running_mean");
    let e = err_text(load_model(
        &write_model(&dir, "b", &arch(), &missing, f32_only),
        &device,
    ));
    assert!(e.contains("b.safetensors"), "{e}");
    assert!(e.contains("missing: blocks.1.bn.running_mean"), "{e}");

    let mut extra = t.clone();
    extra.insert("extra.weight".into(), (vec![2], vec![0.5, 0.25]));
    let e = err_text(load_model(
        &write_model(&dir, "c", &arch(), &extra, f32_only),
        &device,
    ));
    assert!(e.contains("c.safetensors"), "{e}");
    assert!(e.contains("unexpected: extra.weight"), "{e}");

    let wider = VggArch {
        hidden: vec![7],
        ..arch()
    };
    let e = err_text(load_model(
        &write_model(&dir, "d", &wider, &t, f32_only),
        &device,
    ));
    assert!(e.contains("d.safetensors"), "{e}");
    assert!(
        e.contains("hidden.0.weight has shape [24, 5], expected [24, 7]"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- 4. arch.json, paths

#[test]
fn every_architecture_file_error_names_the_file() {
    let device = Device::flex();
    let dir = tmp("archjson");
    let p = write_model(&dir, "m", &arch(), &pattern_tensors(), |_| Dtype::F32);
    assert!(load_model(&p, &device).is_ok());
    let good = serde_json::to_value(arch()).unwrap();
    for (key, value) in [
        ("dropout", serde_json::json!(1.5)),
        ("num_classes", serde_json::json!(0)),
        ("width_divisor", serde_json::json!(0)),
        ("input_size", serde_json::json!(12)),
        ("layout", serde_json::json!("4,M,x,M")),
        ("hidden", serde_json::json!([0])),
        ("num_classes", serde_json::json!(-1)),
        ("unknown_field", serde_json::json!(1)),
    ] {
        let mut v = good.clone();
        v[key] = value.clone();
        std::fs::write(arch_path(&p), v.to_string()).unwrap();
        let e = err_text(load_model(&p, &device));
        assert!(e.contains("m.arch.json"), "{key} = {value}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_directory_or_a_missing_file_given_as_model_is_named_as_such() {
    let device = Device::flex();
    let dir = tmp("paths");
    let teacher = dir.join("teacher");
    std::fs::create_dir_all(&teacher).unwrap();
    let e = err_text(load_model(&teacher, &device));
    assert!(
        e.contains("is a directory, expected a model.safetensors file"),
        "{e}"
    );
    assert!(!e.contains("teacher.arch.json"), "{e}");
    let e = err_text(load_model(&dir.join("gone.safetensors"), &device));
    assert!(
        e.contains("gone.safetensors") && e.contains("missing"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn export_cli_reports_a_missing_model_before_anything_else() {
    let dir = tmp("cli-missing");
    let model = dir.join("none.safetensors");
    let (ok, text) = faithful_cli(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("model file") && text.contains("none.safetensors is missing"),
        "{text}"
    );
    assert!(!text.contains("dataset.json"), "{text}");
    let (ok, text) = faithful_cli(&[
        "export",
        "--model",
        dir.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("is a directory"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- 5. writes, dataset.json

#[test]
fn save_model_never_leaves_half_a_pair() {
    let device = Device::flex();
    let dir = tmp("half");
    let net = arch().init(&device, 0).unwrap().into();
    // the weights cannot be written (a non-empty folder is in the way): no arch.json appears
    let w = dir.join("w.safetensors");
    std::fs::create_dir_all(w.join("blocker")).unwrap();
    assert!(save_model(&net, &w).is_err());
    assert!(!arch_path(&w).exists(), "arch.json written without weights");
    // the architecture cannot be written: the weights just written are removed again
    let v = dir.join("v.safetensors");
    std::fs::create_dir_all(arch_path(&v).join("blocker")).unwrap();
    let e = err_text(save_model(&net, &v));
    assert!(e.contains("v.arch.json"), "{e}");
    assert!(!v.exists(), "weights left without their architecture");
    // and a good save still loads
    let u = dir.join("u.safetensors");
    save_model(&net, &u).unwrap();
    assert_eq!(logits(&load_model(&u, &device).unwrap()), logits(&net));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn export_cli_blames_the_dataset_json_it_read() {
    let device = Device::flex();
    let dir = tmp("cli-info");
    let model = dir.join("run/seed-0/model.safetensors");
    save_model(&arch().init(&device, 0).unwrap().into(), &model).unwrap();
    let info = dir.join("run/dataset.json");
    // two class names for a three-class network
    std::fs::write(
        &info,
        r#"{"name": "t", "class_names": ["a", "b"],
            "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}}"#,
    )
    .unwrap();
    let out = dir.join("exp");
    let (ok, text) = faithful_cli(&[
        "export",
        "--format",
        "torch",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("dataset.json"), "{text}");
    assert!(text.contains("2 class names"), "{text}");
    assert!(!text.contains("exp.json"), "{text}");
    assert!(!dir.join("exp.safetensors").exists());
    // a zero standard deviation, ONNX
    std::fs::write(
        &info,
        r#"{"name": "t", "class_names": ["a", "b", "c"],
            "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.0, 0.2]}}"#,
    )
    .unwrap();
    let (ok, text) = faithful_cli(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("dataset.json"), "{text}");
    assert!(!dir.join("exp.onnx").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn import_cli_refuses_a_directory_as_output_and_names_missing_weights() {
    let dir = tmp("cli-import");
    let (ok, text) = faithful_cli(&[
        "import",
        "--weights",
        dir.join("w.pth").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("is a directory"), "{text}");
    let (ok, text) = faithful_cli(&[
        "import",
        "--weights",
        dir.join("w.pth").to_str().unwrap(),
        "--out",
        dir.join("m.safetensors").to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("w.pth is missing"), "{text}");
    assert!(!dir.join("m.arch.json").exists());
    // the read_state_dict check is shared by the library import
    let e = err_text(import_torchvision_vgg(&arch(), &dir, &Device::flex()));
    assert!(e.contains("is a directory"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
