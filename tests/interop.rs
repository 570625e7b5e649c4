//! Interoperability: torchvision import (.safetensors and .pth), PyTorch export (safetensors +
//! JSON) and ONNX export.
//!
//! Independent checks: a naive loop-based forward pass written here from the torchvision
//! naming (not faithful's code), a numpy re-implementation reading the PyTorch export
//! (`tests/fixtures/check_torch_export.py`), and onnxruntime running the ONNX file
//! (`tests/fixtures/check_onnx.py`). The Python checks need `python3` with numpy (and
//! onnxruntime for ONNX); `.pth` files are written by `tests/fixtures/make_pth.py` with the
//! standard library alone. Each Python check is skipped, with a `SKIPPED` line, when its
//! interpreter or modules are missing.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;
use faithful::compression::structured::{FilterPruning, prune_filters};
use faithful::export::onnx::{DimensionValue, ModelProto};
use faithful::export::{export_onnx, export_torch, import_torch_export};
use faithful::models::vgg::HeadPool;
use faithful::models::{Vgg, VggArch, import_torchvision_vgg, import_torchvision_vgg_new_head};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------- helpers

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-interop-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Whether `python3` runs and imports `modules` (comma-separated, may be empty).
fn python_with(modules: &str) -> bool {
    let code = if modules.is_empty() {
        "pass".to_string()
    } else {
        format!("import {modules}")
    };
    Command::new("python3")
        .args(["-c", &code])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a Python fixture script; panics with its output when it fails.
fn run_python(script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg(fixture(script))
        .args(args)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{script}: {text}");
    assert!(out.status.success(), "{script} failed: {text}");
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Writes a batch `x` and its expected logits as `<name>.x.f32` / `<name>.y.f32` in `dir`.
fn write_case(dir: &Path, name: &str, x: &[f32], logits: &[f32]) -> (PathBuf, PathBuf) {
    let (xi, lo) = (
        dir.join(format!("{name}.x.f32")),
        dir.join(format!("{name}.y.f32")),
    );
    write_f32(&xi, x);
    write_f32(&lo, logits);
    (xi, lo)
}

/// Recomputes a PyTorch export's logits for the `n` images in `xi` with numpy and, when torch
/// is installed, with `python/faithful_torch.py`, against the expected logits in `lo`.
fn check_torch_export_in_python(
    stem: &Path,
    xi: &Path,
    n: usize,
    lo: &Path,
    numpy: bool,
    torch: bool,
) {
    let n = n.to_string();
    let args = [
        stem.to_str().unwrap(),
        xi.to_str().unwrap(),
        n.as_str(),
        lo.to_str().unwrap(),
    ];
    if numpy {
        run_python("check_torch_export.py", &args);
    }
    if torch {
        run_python("check_faithful_torch.py", &args);
    }
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let s = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
    d / s.max(1e-12)
}

fn input(n: usize, size: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * 3 * size * size)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

fn tensor4(v: &[f32], n: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v.to_vec(), [n, 3, size, size]), device)
}

/// Random BatchNorm statistics and affine parameters (fresh networks have trivial ones).
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

fn arch(layout: &str, size: usize, hidden: Vec<usize>, head_pool: HeadPool) -> VggArch {
    VggArch {
        layout: layout.into(),
        num_classes: 5,
        input_size: size,
        hidden,
        head_pool,
        ..VggArch::default()
    }
}

// ------------------------------------------- a torchvision-named state_dict, by hand

/// name -> (shape, values)
type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The tiny torchvision-style network of these tests: cfg [4, M, 6, 6, M] with BatchNorm on
/// 8x8 inputs, classifier Linear(24, 5)-ReLU-Dropout-Linear(5, 3). torchvision numbering,
/// written out by hand: features.0 conv, .1 bn, .2 relu, .3 pool, .4 conv, .5 bn, .6 relu,
/// .7 conv, .8 bn, .9 relu, .10 pool5; classifier.0 and classifier.3.
const CONVS: [(usize, usize, usize, usize, bool); 3] = [
    // (conv index, bn index, in, out, pool after)
    (0, 1, 3, 4, true),
    (4, 5, 4, 6, false),
    (7, 8, 6, 6, false),
];
const LINEARS: [(usize, usize, usize); 2] = [(0, 24, 5), (3, 5, 3)];

fn tiny_arch(num_classes: usize) -> VggArch {
    VggArch {
        layout: "4,M,6,6,M".into(),
        num_classes,
        input_size: 8,
        hidden: vec![5],
        conv_bias: true,
        head_pool: HeadPool::Max2,
        dropout: 0.5,
        width_divisor: 1,
    }
}

fn tiny_state_dict(seed: u64) -> Named {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mut sd = Named::new();
    for (ci, bi, cin, cout, _) in CONVS {
        sd.insert(
            format!("features.{ci}.weight"),
            (vec![cout, cin, 3, 3], r(cout * cin * 9, -0.5, 0.5)),
        );
        sd.insert(
            format!("features.{ci}.bias"),
            (vec![cout], r(cout, -0.2, 0.2)),
        );
        sd.insert(
            format!("features.{bi}.weight"),
            (vec![cout], r(cout, 0.5, 1.5)),
        );
        sd.insert(
            format!("features.{bi}.bias"),
            (vec![cout], r(cout, -0.3, 0.3)),
        );
        sd.insert(
            format!("features.{bi}.running_mean"),
            (vec![cout], r(cout, -0.2, 0.2)),
        );
        sd.insert(
            format!("features.{bi}.running_var"),
            (vec![cout], r(cout, 0.5, 1.5)),
        );
    }
    for (li, d_in, d_out) in LINEARS {
        sd.insert(
            format!("classifier.{li}.weight"),
            (vec![d_out, d_in], r(d_out * d_in, -0.4, 0.4)),
        );
        sd.insert(
            format!("classifier.{li}.bias"),
            (vec![d_out], r(d_out, -0.1, 0.1)),
        );
    }
    sd
}

/// Writes `sd` as safetensors, plus an int64 `num_batches_tracked` per BatchNorm as PyTorch has.
fn write_safetensors(sd: &Named, path: &Path) {
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = sd
        .iter()
        .map(|(k, (s, v))| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), s.clone(), b, safetensors::Dtype::F32)
        })
        .collect();
    for (_, bi, ..) in CONVS {
        bytes.push((
            format!("features.{bi}.num_batches_tracked"),
            vec![],
            123i64.to_le_bytes().to_vec(),
            safetensors::Dtype::I64,
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, s, b, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Naive forward pass of the tiny network from the named tensors: plain loops, eval-mode
/// BatchNorm (eps 1e-5), 2x2 max-pools, channel-major flatten.
fn reference_forward(sd: &Named, x: &[f32], n: usize, size: usize) -> Vec<f32> {
    let get = |k: &str| &sd[k].1;
    let mut act = x.to_vec();
    let (mut c, mut s) = (3, size);
    let pool = |a: &[f32], c: usize, s: usize| -> Vec<f32> {
        let h = s / 2;
        let mut out = vec![0.0; n * c * h * h];
        for i in 0..n * c {
            for y in 0..h {
                for xx in 0..h {
                    let at = |dy: usize, dx: usize| a[i * s * s + (2 * y + dy) * s + 2 * xx + dx];
                    out[i * h * h + y * h + xx] =
                        at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                }
            }
        }
        out
    };
    for (ci, bi, cin, cout, pool_after) in CONVS {
        assert_eq!(cin, c);
        let w = get(&format!("features.{ci}.weight"));
        let b = get(&format!("features.{ci}.bias"));
        let bn = |p: &str| get(&format!("features.{bi}.{p}")).clone();
        let (g, be, m, v) = (
            bn("weight"),
            bn("bias"),
            bn("running_mean"),
            bn("running_var"),
        );
        let mut out = vec![0.0f32; n * cout * s * s];
        for img in 0..n {
            for o in 0..cout {
                for y in 0..s {
                    for xx in 0..s {
                        let mut acc = b[o] as f64;
                        for ch in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y + ky, xx + kx);
                                    if iy < 1 || ix < 1 || iy > s || ix > s {
                                        continue;
                                    }
                                    let a = act[((img * cin + ch) * s + iy - 1) * s + ix - 1];
                                    acc += a as f64 * w[((o * cin + ch) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                        let z = (acc - m[o] as f64) / (v[o] as f64 + 1e-5).sqrt() * g[o] as f64
                            + be[o] as f64;
                        out[((img * cout + o) * s + y) * s + xx] = z.max(0.0) as f32;
                    }
                }
            }
        }
        act = out;
        c = cout;
        if pool_after {
            act = pool(&act, c, s);
            s /= 2;
        }
    }
    act = pool(&act, c, s); // pool5
    let mut d = act.len() / n;
    for (k, (li, d_in, d_out)) in LINEARS.iter().enumerate() {
        assert_eq!(*d_in, d);
        let w = get(&format!("classifier.{li}.weight"));
        let b = get(&format!("classifier.{li}.bias"));
        let mut out = vec![0.0f32; n * d_out];
        for img in 0..n {
            for o in 0..*d_out {
                let mut acc = b[o] as f64;
                for i in 0..d {
                    acc += act[img * d + i] as f64 * w[o * d + i] as f64;
                }
                let last = k + 1 == LINEARS.len();
                out[img * d_out + o] = if last {
                    acc as f32
                } else {
                    acc.max(0.0) as f32
                };
            }
        }
        act = out;
        d = *d_out;
    }
    act
}

// ---------------------------------------------------------------- torchvision import

#[test]
fn torchvision_import_matches_an_independent_forward_from_safetensors_and_pth() {
    let device = Device::flex();
    let dir = tmp("tv");
    let sd = tiny_state_dict(1);
    let st = dir.join("tiny.safetensors");
    write_safetensors(&sd, &st);
    let x = input(2, 8, 2);
    let expected = reference_forward(&sd, &x, 2, 8);
    let net = import_torchvision_vgg(&tiny_arch(3), &st, &device).unwrap();
    let got = floats(net.forward(tensor4(&x, 2, 8, &device)));
    let err = max_rel_diff(&got, &expected);
    assert!(err < 1e-5, "safetensors import vs reference: {err}");

    if !python_with("") {
        eprintln!("SKIPPED: .pth import test (python3 not found)");
        return;
    }
    let pth = dir.join("tiny.pth");
    run_python(
        "make_pth.py",
        &[st.to_str().unwrap(), pth.to_str().unwrap()],
    );
    let net = import_torchvision_vgg(&tiny_arch(3), &pth, &device).unwrap();
    let from_pth = floats(net.forward(tensor4(&x, 2, 8, &device)));
    assert_eq!(from_pth, got, ".pth and .safetensors imports differ");
    std::fs::remove_dir_all(&dir).ok();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The real thing where torch and torchvision are installed: a `torch.save`d torchvision
/// `vgg11_bn` (random weights, randomised BatchNorm statistics) imports with torchvision's own
/// eval-mode logits.
#[test]
fn real_torchvision_checkpoint_imports_with_torchvisions_logits() {
    if !python_with("torch,torchvision") {
        eprintln!(
            "SKIPPED: real torchvision checkpoint (python3 with torch and torchvision not found)"
        );
        return;
    }
    let device = Device::flex();
    let dir = tmp("tv-real");
    let (name, classes, n) = ("vgg11_bn", 5, 2);
    run_python(
        "make_torchvision.py",
        &[name, "5", "2", dir.to_str().unwrap()],
    );
    let arch = faithful::models::torchvision_vgg_arch(name, classes).unwrap();
    let net = import_torchvision_vgg(&arch, &dir.join(format!("{name}.pth")), &device).unwrap();
    let x = read_f32(&dir.join("x.f32"));
    let expected = read_f32(&dir.join("y.f32"));
    let got = floats(net.forward(tensor4(&x, n, 224, &device)));
    let err = max_rel_diff(&got, &expected);
    eprintln!("torchvision {name}: max relative logit difference {err:.3e}");
    assert!(
        err < 1e-4,
        "torchvision {name} import vs torchvision: {err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn torchvision_import_names_missing_misshaped_and_unused_tensors() {
    let device = Device::flex();
    let dir = tmp("tv-bad");
    let mut sd = tiny_state_dict(3);
    sd.remove("features.4.weight");
    sd.insert("classifier.3.bias".into(), (vec![4], vec![0.0; 4]));
    sd.insert("extra.weight".into(), (vec![2], vec![0.0; 2]));
    let st = dir.join("bad.safetensors");
    write_safetensors(&sd, &st);
    let err = format!(
        "{:#}",
        import_torchvision_vgg(&tiny_arch(3), &st, &device).unwrap_err()
    );
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(err.contains("missing: features.4.weight"), "{err}");
    assert!(
        err.contains("classifier.3.bias has shape [4], expected [3]"),
        "{err}"
    );
    assert!(err.contains("unused: extra.weight"), "{err}");
    assert!(!err.contains("num_batches_tracked"), "{err}");

    // not a weights file at all, and no file: errors, not panics
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"PK\x03\x04 definitely not a zip").unwrap();
    let e = format!(
        "{:#}",
        import_torchvision_vgg(&tiny_arch(3), &junk, &device).unwrap_err()
    );
    assert!(e.contains("junk.pth"), "{e}");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, [7u8; 40]).unwrap();
    assert!(import_torchvision_vgg(&tiny_arch(3), &junk, &device).is_err());
    assert!(import_torchvision_vgg(&tiny_arch(3), &dir.join("none.pth"), &device).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn new_head_import_keeps_the_body_and_replaces_the_classifier() {
    let device = Device::flex();
    let dir = tmp("tv-head");
    let sd = tiny_state_dict(4);
    let st = dir.join("tiny.safetensors");
    write_safetensors(&sd, &st);
    // a 3-class file into a 7-class network: the strict import refuses it...
    let err = format!(
        "{:#}",
        import_torchvision_vgg(&tiny_arch(7), &st, &device).unwrap_err()
    );
    assert!(
        err.contains("classifier.3.weight has shape [3, 5], expected [7, 5]"),
        "{err}"
    );
    // ...the new-head import takes every other tensor and a fresh 5 -> 7 layer
    let net = import_torchvision_vgg_new_head(&tiny_arch(7), &st, &device, 9).unwrap();
    assert_eq!(net.classifier.weight.dims(), [5, 7]);
    let hidden = floats(net.hidden[0].weight.val().transpose());
    assert_eq!(hidden, sd["classifier.0.weight"].1);
    let conv = floats(net.blocks[2].conv.weight.val());
    assert_eq!(conv, sd["features.7.weight"].1);
    let again = import_torchvision_vgg_new_head(&tiny_arch(7), &st, &device, 9).unwrap();
    assert_eq!(
        floats(again.classifier.weight.val()),
        floats(net.classifier.weight.val()),
        "the fresh head is not reproducible from its seed"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- PyTorch export

/// The networks exported in these tests: hidden layers, a structured-pruned one, a global-max
/// head without conv bias.
fn export_cases(device: &Device) -> Vec<(&'static str, Vgg)> {
    let plain = randomize_bn(
        arch("4,M,8,M", 8, vec![6], HeadPool::Max2)
            .init(device, 1)
            .unwrap(),
    );
    let big = randomize_bn(
        arch("8,M,8,8,M", 8, vec![], HeadPool::Max2)
            .init(device, 2)
            .unwrap(),
    );
    let cfg = FilterPruning {
        rate: 0.5,
        layers: vec![],
        epochs: 0,
    };
    let pruned = prune_filters(&big, &cfg).unwrap();
    assert_eq!(pruned.arch.layout, "4,M,4,4,M");
    let mut gm = arch("6,M,6,M", 8, vec![7, 4], HeadPool::GlobalMax);
    gm.conv_bias = false;
    let global = randomize_bn(gm.init(device, 3).unwrap());
    vec![("plain", plain), ("pruned", pruned), ("global", global)]
}

#[test]
fn torch_export_round_trips_and_matches_numpy() {
    let device = Device::flex();
    let dir = tmp("torch");
    let numpy = python_with("numpy");
    if !numpy {
        eprintln!("SKIPPED: numpy check of the PyTorch export (python3 with numpy not found)");
    }
    let torch = python_with("torch,numpy,safetensors");
    if !torch {
        eprintln!("SKIPPED: python/faithful_torch.py check (python3 with torch not found)");
    }
    for (name, net) in export_cases(&device) {
        let stem = dir.join(name);
        let classes: Vec<String> = (0..5).map(|i| format!("class{i}")).collect();
        export_torch(&net, &stem, Some(&classes)).unwrap();
        let back = import_torch_export(&stem, &device).unwrap();
        assert_eq!(back.arch.layout, net.arch.layout, "{name}");
        let x = input(3, 8, 5);
        let a = floats(net.forward(tensor4(&x, 3, 8, &device)));
        let b = floats(back.forward(tensor4(&x, 3, 8, &device)));
        assert_eq!(a, b, "{name}: round trip changed the logits");

        let desc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(desc["class_names"][4], "class4");
        assert!(desc["input"]["normalization"].is_null());
        let convs: Vec<u64> = desc["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "conv")
            .map(|l| l["out"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = net
            .blocks
            .iter()
            .map(|b| b.conv.weight.dims()[0] as u64)
            .collect();
        assert_eq!(convs, expected, "{name}");

        let (xi, lo) = write_case(&dir, name, &x, &a);
        check_torch_export_in_python(&stem, &xi, 3, &lo, numpy, torch);
    }
    // torchvision naming of the pruned export: features.4 is the second conv (after a pool)
    let st = safetensors::SafeTensors::deserialize(
        &std::fs::read(dir.join("pruned.safetensors")).unwrap(),
    )
    .unwrap()
    .tensors()
    .into_iter()
    .map(|(k, v)| (k, v.shape().to_vec()))
    .collect::<BTreeMap<_, _>>();
    assert_eq!(st["features.4.weight"], vec![4, 4, 3, 3]);
    assert_eq!(st["features.8.running_var"], vec![4]);
    assert_eq!(st["classifier.0.weight"], vec![5, 16]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn torch_export_import_reports_bad_files() {
    let device = Device::flex();
    let dir = tmp("torch-bad");
    let net = export_cases(&device).remove(0).1;
    let stem = dir.join("m");
    export_torch(&net, &stem, None).unwrap();
    let wrong: Vec<String> = vec!["a".into()];
    assert!(export_torch(&net, &dir.join("n"), Some(&wrong)).is_err());
    // weights of another network next to this description
    let other = arch("4,M,6,M", 8, vec![6], HeadPool::Max2)
        .init(&device, 0)
        .unwrap();
    export_torch(&other, &dir.join("o"), None).unwrap();
    std::fs::copy(dir.join("o.safetensors"), dir.join("m.safetensors")).unwrap();
    let e = format!("{:#}", import_torch_export(&stem, &device).unwrap_err());
    assert!(
        e.contains("features.4.weight has shape [6, 4, 3, 3]"),
        "{e}"
    );
    std::fs::write(dir.join("m.json"), "{not json").unwrap();
    let e = format!("{:#}", import_torch_export(&stem, &device).unwrap_err());
    assert!(e.contains("m.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- ONNX export

fn decode(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

#[test]
fn onnx_graph_structure_and_folded_batch_norm() {
    let device = Device::flex();
    let dir = tmp("onnx-structure");
    let net = export_cases(&device).remove(0).1; // 4,M,8,M with hidden [6], 5 classes
    let path = dir.join("m.onnx");
    export_onnx(
        &net.clone().into(),
        &path,
        Some(([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])),
    )
    .unwrap();
    let m = decode(&path);
    assert_eq!((m.ir_version, m.opset_import[0].version), (8, 13));
    let g = m.graph.unwrap();
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        [
            "Sub", "Div", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm",
            "Relu", "Gemm"
        ]
    );
    assert_eq!(g.node[0].input[0], "input");
    assert_eq!(g.node.last().unwrap().output[0], "logits");
    let shapes: BTreeMap<&str, Vec<i64>> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone()))
        .collect();
    assert_eq!(shapes["conv0.weight"], vec![4, 3, 3, 3]);
    assert_eq!(shapes["conv1.weight"], vec![8, 4, 3, 3]);
    assert_eq!(shapes["conv1.bias"], vec![8]);
    assert_eq!(shapes["fc0.weight"], vec![6, 32]);
    assert_eq!(shapes["fc1.weight"], vec![5, 6]);
    assert_eq!(shapes["norm_std"], vec![1, 3, 1, 1]);
    let dims: Vec<_> = g.input[0]
        .r#type
        .as_ref()
        .unwrap()
        .tensor_type
        .as_ref()
        .unwrap()
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.value.clone().unwrap())
        .collect();
    assert_eq!(
        dims,
        vec![
            DimensionValue::DimParam("N".into()),
            DimensionValue::DimValue(3),
            DimensionValue::DimValue(8),
            DimensionValue::DimValue(8)
        ]
    );
    let gemm = &g.node[9];
    let trans_b = gemm.attribute.iter().find(|a| a.name == "transB").unwrap();
    assert_eq!(trans_b.i, Some(1));

    // folding, 1 conv with 1 output channel, by hand
    let mut one = arch("1,M", 2, vec![], HeadPool::Max2)
        .init(&device, 0)
        .unwrap();
    let b = &mut one.blocks[0];
    let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [1]), &device);
    b.conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(
            (0..27).map(|i| i as f32 - 13.0).collect::<Vec<f32>>(),
            [1, 3, 3, 3],
        ),
        &device,
    ));
    b.conv.bias = Some(Param::from_tensor(t(vec![0.5])));
    b.bn.gamma = Param::from_tensor(t(vec![2.0]));
    b.bn.beta = Param::from_tensor(t(vec![0.25]));
    b.bn.running_mean = RunningState::new(t(vec![1.5]));
    b.bn.running_var = RunningState::new(t(vec![3.0]));
    let path = dir.join("one.onnx");
    export_onnx(&one.clone().into(), &path, None).unwrap();
    let g = decode(&path).graph.unwrap();
    let raw = |name: &str| -> Vec<f32> {
        g.initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    // s = 2 / sqrt(3 + 1e-5) = 1.1547 (burn's BatchNorm eps is 1e-5)
    let s = 2.0 / (3.0f64 + 1e-5).sqrt();
    let w = raw("conv0.weight");
    assert_eq!(w.len(), 27);
    for (i, v) in w.iter().enumerate() {
        assert!(
            ((i as f64 - 13.0) * s - *v as f64).abs() < 1e-5,
            "w[{i}] = {v}"
        );
    }
    let bias = raw("conv0.bias")[0] as f64;
    assert!(((0.5 - 1.5) * s + 0.25 - bias).abs() < 1e-6, "bias {bias}");
    assert_eq!(
        g.node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect::<Vec<_>>(),
        ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn onnx_export_matches_onnxruntime() {
    if !python_with("onnxruntime, numpy") {
        eprintln!(
            "SKIPPED: onnxruntime check (python3 with onnxruntime and numpy not found; \
             pip install onnxruntime numpy)"
        );
        return;
    }
    let device = Device::flex();
    let dir = tmp("onnx-ort");
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    for (name, net) in export_cases(&device) {
        let n = 3;
        let x = input(n, 8, 11);
        // faithful's forward on the normalised input
        let xn: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = (i / 64) % 3;
                (v - mean[c]) / std[c]
            })
            .collect();
        let logits = floats(net.forward(tensor4(&xn, n, 8, &device)));
        let path = dir.join(format!("{name}.onnx"));
        export_onnx(&net.clone().into(), &path, Some((mean, std))).unwrap();
        let (xi, lo) = write_case(&dir, name, &x, &logits);
        run_python(
            "check_onnx.py",
            &[
                path.to_str().unwrap(),
                xi.to_str().unwrap(),
                "3,3,8,8",
                lo.to_str().unwrap(),
            ],
        );
        // without normalisation the graph takes the normalised input directly
        let plain = dir.join(format!("{name}.plain.onnx"));
        export_onnx(&net.clone().into(), &plain, None).unwrap();
        write_f32(&xi, &xn);
        run_python(
            "check_onnx.py",
            &[
                plain.to_str().unwrap(),
                xi.to_str().unwrap(),
                "3,3,8,8",
                lo.to_str().unwrap(),
            ],
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Tiny ResNets of both stems (the ImageNet stem has the padded max-pool) and both block kinds,
/// with identity and projection shortcuts and random BatchNorm statistics.
fn resnet_cases(device: &Device) -> Vec<(&'static str, faithful::models::ResNet)> {
    use faithful::models::resnet::{BlockKind, ResNetArch, Stem};
    let mut cases = Vec::new();
    for (name, stem, layout, block) in [
        ("small", Stem::Small, "1,2", BlockKind::Basic),
        ("imagenet", Stem::Imagenet, "2,1", BlockKind::Basic),
        ("bottleneck", Stem::Imagenet, "2,1", BlockKind::Bottleneck),
    ] {
        let arch = ResNetArch {
            layout: layout.into(),
            block: Some(block),
            stem,
            base_width: 4,
            num_classes: 5,
            input_size: 32,
            ..ResNetArch::default()
        };
        let mut net = arch.init(device, 7).unwrap();
        let mut draw = 100u64;
        let mut randomize = |bn: &mut burn::nn::BatchNorm| {
            let c = bn.gamma.dims()[0];
            let mut r = |lo: f64, hi: f64| {
                draw += 1;
                faithful::util::seeded_random([c], Distribution::Uniform(lo, hi), device, draw)
            };
            bn.gamma = Param::from_tensor(r(0.5, 1.5));
            bn.beta = Param::from_tensor(r(-0.3, 0.3));
            bn.running_mean = RunningState::new(r(-0.2, 0.2));
            bn.running_var = RunningState::new(r(0.5, 1.5));
        };
        randomize(&mut net.bn1);
        for block in net.layers.iter_mut().flatten() {
            for (_, bn) in block.chain_mut() {
                randomize(bn);
            }
            if let Some(bn) = block.downsample_bn.as_mut() {
                randomize(bn);
            }
        }
        cases.push((name, net));
    }
    cases
}

/// Every [`resnet_cases`] network gives onnxruntime's logits.
#[test]
fn resnet_onnx_export_matches_onnxruntime() {
    if !python_with("onnxruntime, numpy") {
        eprintln!(
            "SKIPPED: onnxruntime check of the ResNet export (python3 with onnxruntime and numpy \
             not found; pip install onnxruntime numpy)"
        );
        return;
    }
    let device = Device::flex();
    let dir = tmp("onnx-resnet");
    for (name, net) in resnet_cases(&device) {
        let net: faithful::models::Network = net.into();
        let x = input(3, 32, 5);
        let logits = floats(net.forward(tensor4(&x, 3, 32, &device)));
        let path = dir.join(format!("{name}.onnx"));
        export_onnx(&net, &path, None).unwrap();
        let (xi, lo) = write_case(&dir, name, &x, &logits);
        run_python(
            "check_onnx.py",
            &[
                path.to_str().unwrap(),
                xi.to_str().unwrap(),
                "3,3,32,32",
                lo.to_str().unwrap(),
            ],
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The PyTorch export of every [`resnet_cases`] network: its safetensors carry torchvision's
/// names (read back by the torchvision importer to the same logits), and numpy recomputes the
/// logits from the JSON block list alone (and PyTorch, through `python/faithful_torch.py`,
/// when torch is installed).
#[test]
fn resnet_torch_export_has_torchvision_names_and_matches_numpy() {
    let numpy = python_with("numpy");
    if !numpy {
        eprintln!(
            "SKIPPED: numpy check of the ResNet PyTorch export (python3 with numpy not found)"
        );
    }
    let torch = python_with("torch,numpy,safetensors");
    if !torch {
        eprintln!(
            "SKIPPED: python/faithful_torch.py check of a ResNet (python3 with torch not found)"
        );
    }
    let device = Device::flex();
    let dir = tmp("torch-resnet");
    for (name, net) in resnet_cases(&device) {
        let arch = net.arch.clone();
        let net: faithful::models::Network = net.into();
        let stem = dir.join(name);
        faithful::export::export_torch_network(&net, &stem, None, None).unwrap();
        let x = input(3, 32, 5);
        let logits = floats(net.forward(tensor4(&x, 3, 32, &device)));
        let weights = dir.join(format!("{name}.safetensors"));
        let back =
            faithful::models::TorchvisionImport::import_torchvision(&arch, &weights, &device, None)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let back: faithful::models::Network = back.into();
        assert_eq!(
            floats(back.forward(tensor4(&x, 3, 32, &device))),
            logits,
            "{name}"
        );
        let (xi, lo) = write_case(&dir, name, &x, &logits);
        check_torch_export_in_python(&stem, &xi, 3, &lo, numpy, torch);
    }
    std::fs::remove_dir_all(&dir).ok();
}
