//! Property (fuzz) tests of every parser of user-supplied files: each is fed seeded random
//! bytes and mutations of valid examples (see [`faithful::fuzz`]) and must return an error or
//! a valid result, never panic. Each call runs under `catch_unwind`; a panic (or a result that
//! breaks its own invariants) fails the test with the parser, the case seed and the input
//! length. The failing input is `faithful::fuzz::case(seed, example, tokens)` of the example
//! named in the message (the examples and tokens are built below).
//!
//! By default the suite runs 96,000 cases (about 20 s in release on two cores).
//! A longer run, shared between the parsers in the same proportions:
//!
//! ```text
//! FAITHFUL_FUZZ_CASES=1000000 cargo test --release --test fuzz_parsers -- --nocapture
//! ```
//!
//! and `FAITHFUL_FUZZ_SEED=<n>` draws another set of cases.

use burn::prelude::*;
use faithful::config::ExperimentConfig;
use faithful::data::fashion::{read_idx_images, read_idx_labels};
use faithful::data::folder::{FolderConfig, load_folder};
use faithful::data::image_io::{read_index_png, read_rgb};
use faithful::data::voc::{Difficult, parse_annotation, write_voc_fixture};
use faithful::explain::DatasetInfo;
use faithful::export::export_torch;
use faithful::fuzz::{base_seed, case, scaled_cases, seed_for};
use faithful::models::{VggArch, arch_path, import_torchvision_vgg, load_model, parse_arch};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Sum of the default case counts of the tests below (for [`scaled_cases`]).
const DEFAULT_TOTAL: usize = 96_000;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Runs `parse` on `default_cases` (scaled by `FAITHFUL_FUZZ_CASES`) generated inputs; fails
/// listing every case that panicked. Every example must parse; some mutated inputs must be
/// refused (else the generator is not reaching the parser's checks).
fn fuzz(
    parser: &str,
    examples: &[Vec<u8>],
    tokens: &[&str],
    default_cases: usize,
    parse: impl Fn(&[u8]) -> anyhow::Result<()>,
) {
    for (k, ex) in examples.iter().enumerate() {
        let r = catch_unwind(AssertUnwindSafe(|| parse(ex)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{parser}: valid example {k} refused: {e:#}"),
            Err(p) => panic!(
                "{parser}: valid example {k} panicked: {}",
                panic_message(&*p)
            ),
        }
    }
    let n = scaled_cases(default_cases, DEFAULT_TOTAL);
    let base = base_seed();
    let started = Instant::now();
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut panics = Vec::new();
    for i in 0..n as u64 {
        let seed = seed_for(base, parser, i);
        let k = (seed % examples.len() as u64) as usize;
        let input = case(seed, &examples[k], tokens);
        match catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(_)) => refused += 1,
            Err(p) => panics.push(format!(
                "seed {seed} (base {base}, case {i}, example {k}), input {} bytes: {}",
                input.len(),
                panic_message(&*p)
            )),
        }
    }
    eprintln!(
        "fuzz {parser}: {n} cases ({accepted} accepted, {refused} refused, {} panicked) in \
         {:.1} s",
        panics.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        panics.is_empty(),
        "{parser}: {} of {n} cases panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
    assert!(
        refused > 0 || n < 50,
        "{parser}: no mutated input was refused"
    );
}

/// Writes `bytes` to `path` (outside the parser under test: a failure here is the test's).
fn put(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ---------------------------------------------------------------- text formats

#[test]
fn fuzz_toml_experiment_config() {
    let mut examples = vec![
        ExperimentConfig::demo().to_toml().unwrap().into_bytes(),
        ExperimentConfig::quick().to_toml().unwrap().into_bytes(),
    ];
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    for entry in std::fs::read_dir(&configs).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "toml") {
            examples.push(std::fs::read(entry.path()).unwrap());
        }
    }
    let tokens = [
        "[teacher]",
        "[data]",
        "epochs = ",
        "seeds = [",
        "lr = nan",
        "= -1",
        "\"\"\"",
        "[[",
        "]]",
        "+inf",
        "size = 0",
        "layout = \"x\"",
    ];
    fuzz("toml", &examples, &tokens, 12000, |b| {
        let cfg = ExperimentConfig::from_toml(&String::from_utf8_lossy(b))?;
        cfg.validate()
    });
}

fn arch_examples() -> Vec<Vec<u8>> {
    let custom = VggArch {
        layout: "8,M,16,16,M".into(),
        input_size: 16,
        hidden: vec![7, 5],
        conv_bias: false,
        head_pool: faithful::models::vgg::HeadPool::GlobalMax,
        ..VggArch::default()
    };
    [
        VggArch::default(),
        VggArch::reference_fixture(),
        faithful::models::torchvision_vgg_arch("vgg16_bn", 1000).unwrap(),
        custom,
    ]
    .iter()
    .map(|a| serde_json::to_vec_pretty(a).unwrap())
    .collect()
}

const ARCH_TOKENS: [&str; 8] = [
    "\"layout\": ",
    "M,",
    ",M",
    "\"global-max\"",
    "\"max2\"",
    "64",
    "\"vgg19\"",
    "[0]",
];

#[test]
fn fuzz_arch_json() {
    let file = Path::new("fuzz/model.arch.json");
    fuzz("arch.json", &arch_examples(), &ARCH_TOKENS, 12000, |b| {
        // the raw route (serde + validate) and faithful's checked one must agree on success
        let raw = serde_json::from_slice::<faithful::models::Arch>(b)
            .map_err(anyhow::Error::from)
            .and_then(|a| a.validate().map(|()| a));
        let checked = parse_arch(&String::from_utf8_lossy(b), file);
        if let Ok(a) = &checked {
            assert!(raw.is_ok(), "parse_arch accepted what validate refuses");
            let vgg = a.as_vgg("test").unwrap();
            assert!(a.attribution_shape().is_ok() && vgg.conv_channels().is_ok());
        }
        checked.map(|_| ())
    });
}

#[test]
fn fuzz_dataset_json() {
    let dir = tmp("dataset");
    let examples = vec![
        br#"{"name": "synthetic", "class_names": ["circle", "square", "ankle boot"],
            "normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.22]}}"#
            .to_vec(),
        br#"{"name":"","class_names":["x"],"normalization":{"mean":[0,0,0],"std":[1,1,1]}}"#
            .to_vec(),
    ];
    let path = dir.join("dataset.json");
    fuzz(
        "dataset.json",
        &examples,
        &["\"class_names\"", "1e39", "[1,2]"],
        8000,
        |b| {
            put(&path, b);
            let info = DatasetInfo::load(&path)?;
            // what was accepted survives a round trip unchanged
            let again: DatasetInfo = serde_json::from_str(&serde_json::to_string(&info)?)?;
            assert_eq!(
                again, info,
                "dataset.json round trip changed the description"
            );
            Ok(())
        },
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- model files

/// The tiny network whose files are fuzzed: conv 3->4, pool, conv 4->6, pool5, hidden 5.
fn tiny_arch() -> VggArch {
    VggArch {
        layout: "4,M,6,M".into(),
        input_size: 8,
        num_classes: 3,
        hidden: vec![5],
        ..VggArch::default()
    }
}

/// Rewrites an f32 safetensors file with every tensor converted by `convert` to `dtype`.
fn retyped(bytes: &[u8], dtype: safetensors::Dtype, convert: fn(f32) -> Vec<u8>) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|b| convert(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect();
            (k, v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(k, s, d)| {
            let v = safetensors::tensor::TensorView::new(dtype, s.clone(), d).unwrap();
            (k.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A saved tiny model's weights (f32, and the same as f64 and bf16), in `dir`.
fn model_examples(dir: &Path) -> Vec<Vec<u8>> {
    let p = dir.join("example.safetensors");
    let net = tiny_arch().init(&Device::flex(), 5).unwrap().into();
    faithful::models::save_model(&net, &p).unwrap();
    // rewritten without burn's metadata, whose key order varies between processes, so that a
    // case seed names the same input in every run
    let f32s = retyped(&std::fs::read(&p).unwrap(), safetensors::Dtype::F32, |x| {
        x.to_le_bytes().to_vec()
    });
    let f64s = retyped(&f32s, safetensors::Dtype::F64, |x| {
        (x as f64).to_le_bytes().to_vec()
    });
    let bf16s = retyped(&f32s, safetensors::Dtype::BF16, |x| {
        ((x.to_bits() >> 16) as u16).to_le_bytes().to_vec()
    });
    vec![f32s, f64s, bf16s]
}

#[test]
fn fuzz_model_safetensors() {
    let dir = tmp("model");
    let examples = model_examples(&dir);
    let path = dir.join("m.safetensors");
    put(
        &arch_path(&path),
        &serde_json::to_vec(&tiny_arch()).unwrap(),
    );
    let tokens = [
        "\"dtype\":\"F16\"",
        "\"shape\":[",
        "blocks.0.",
        "\"F64\"",
        "\"I64\"",
    ];
    fuzz("model.safetensors", &examples, &tokens, 6000, |b| {
        put(&path, b);
        let device = Device::flex();
        let net = load_model(&path, &device)?;
        // a loaded network computes (f16/f64 files once loaded but then panicked here)
        let y = net.forward(Tensor::zeros([1, 3, 8, 8], &device));
        assert_eq!(y.dims(), [1, 3]);
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuzz_model_arch_json_against_its_weights() {
    let dir = tmp("model-arch");
    let path = dir.join("m.safetensors");
    put(&path, &model_examples(&dir)[0]);
    let examples = vec![serde_json::to_vec_pretty(&tiny_arch()).unwrap()];
    fuzz("model.arch.json", &examples, &ARCH_TOKENS, 4000, |b| {
        put(&arch_path(&path), b);
        load_model(&path, &Device::flex()).map(|_| ())
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// Torchvision-named state_dicts of the tiny network: safetensors, and a `.pth` written by
/// `tests/fixtures/make_pth.py` when `python3` runs.
fn state_dict_examples(dir: &Path) -> Vec<Vec<u8>> {
    let net = tiny_arch().init(&Device::flex(), 6).unwrap();
    export_torch(&net, &dir.join("tv"), None).unwrap();
    let st = dir.join("tv.safetensors");
    let mut out = vec![std::fs::read(&st).unwrap()];
    let pth = dir.join("tv.pth");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_pth.py");
    let made = std::process::Command::new("python3")
        .arg(&script)
        .args([&st, &pth])
        .output()
        .is_ok_and(|o| o.status.success());
    if made {
        out.push(std::fs::read(&pth).unwrap());
    } else {
        eprintln!("SKIPPED: .pth mutations (python3 cannot run make_pth.py); random bytes only");
    }
    out
}

#[test]
fn fuzz_torchvision_import() {
    let dir = tmp("pth");
    let examples = state_dict_examples(&dir);
    let path = dir.join("w.pth");
    let tokens = ["PK\u{3}\u{4}", "archive/", "FloatStorage", "features.0."];
    fuzz(
        "torchvision .pth/.safetensors",
        &examples,
        &tokens,
        6000,
        |b| {
            put(&path, b);
            import_torchvision_vgg(&tiny_arch(), &path, &Device::flex()).map(|_| ())
        },
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------- dataset files

#[test]
fn fuzz_voc_annotation_xml() {
    let dir = tmp("voc");
    write_voc_fixture(&dir).unwrap();
    let ann = dir.join("VOCdevkit/VOC2012/Annotations");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&ann)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let examples: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(examples.len() >= 3);
    let path = dir.join("a.xml");
    let tokens = [
        "<object>",
        "</object>",
        "<name>",
        "</name>",
        "<difficult>1</difficult>",
        "<?xml",
    ];
    fuzz("VOC annotation", &examples, &tokens, 12000, |b| {
        put(&path, b);
        let a = parse_annotation(&path, Difficult::Include)?;
        let b = parse_annotation(&path, Difficult::Exclude)?;
        assert!(a.len() == 20 && b.len() == 20);
        assert!(a.iter().zip(&b).all(|(x, y)| x >= y && *x <= 1));
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// A folder dataset root with three 8x8 images and one mask, for label-list fuzzing.
fn folder_root(dir: &Path) -> FolderConfig {
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        let img = image::RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 30) as u8, (i * 80) as u8])
        });
        img.save(dir.join(name)).unwrap();
    }
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let mask = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([(x / 4) as u8]));
    mask.save(dir.join("masks/a.png")).unwrap();
    FolderConfig {
        root: dir.to_path_buf(),
        size: 8,
        ..FolderConfig::default()
    }
}

#[test]
fn fuzz_folder_labels_csv() {
    let dir = tmp("folder-csv");
    let cfg = folder_root(&dir);
    let examples = vec![
        b"file,labels,split\na.png,cat,train\nb.png,dog;cat,val\nc.png,dog,test\n".to_vec(),
        b"labels,file\n\"cat; dog\",a.png\ndog,\"b.png\"\ncat,c.png\n".to_vec(),
    ];
    let path = dir.join("labels.csv");
    let tokens = ["a.png", ",", "\"", ";", "train", "../", "masks/a.png"];
    fuzz("folder labels.csv", &examples, &tokens, 4000, |b| {
        put(&path, b);
        let s = load_folder(&cfg)?;
        let n = s.train.len() + s.val.len() + s.test.len();
        assert!((1..=3).contains(&n), "{n} images from a list of at most 3");
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuzz_folder_labels_json() {
    let dir = tmp("folder-json");
    let cfg = folder_root(&dir);
    let examples = vec![
        br#"[{"file": "a.png", "labels": ["cat"], "split": "train"},
             {"file": "b.png", "labels": ["dog", "cat"]},
             {"file": "c.png", "labels": ["dog"], "split": "test"}]"#
            .to_vec(),
    ];
    let path = dir.join("labels.json");
    let tokens = [
        "\"a.png\"",
        "\"split\": ",
        "\"val\"",
        "null",
        "{\"file\": \"c.png\"}",
    ];
    fuzz("folder labels.json", &examples, &tokens, 4000, |b| {
        put(&path, b);
        let s = load_folder(&cfg)?;
        let n = s.train.len() + s.val.len() + s.test.len();
        assert!((1..=3).contains(&n), "{n} images from a list of at most 3");
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn fuzz_idx_images() {
    let dir = tmp("idx3");
    let idx = idx3_example();
    let examples = vec![idx.clone(), gz(&idx)];
    let path = dir.join("images.idx3-ubyte");
    fuzz("IDX images", &examples, &[], 6000, |b| {
        put(&path, b);
        let m = read_idx_images(&path)?;
        let len = m.n.checked_mul(m.rows).and_then(|x| x.checked_mul(m.cols));
        assert_eq!(Some(m.data.len()), len, "inconsistent IDX result");
        if m.n > 0 {
            assert_eq!(m.image(m.n - 1).len(), m.rows * m.cols);
        }
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// Three 4x5 images, IDX3.
fn idx3_example() -> Vec<u8> {
    let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    idx.extend((0..60).map(|i| (i * 7) as u8));
    idx
}

/// Dimensions whose product overflows usize: 2^31 * 2^31 * 4 wraps to 0, so a file with no
/// pixel data claimed 2^31 images of 2^31 x 4 and was accepted (then `image(i)` panicked).
/// The million-case run found such a header (`FAITHFUL_FUZZ_SEED=1`, case 53481 of the IDX
/// images test); both inputs are checked here.
#[test]
fn idx_dimensions_whose_product_overflows_are_refused() {
    let dir = tmp("idx-overflow");
    let path = dir.join("images.idx3-ubyte");
    let found = case(3904635739941033312, &idx3_example(), &[]);
    for bytes in [
        vec![0, 0, 8, 3, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 4],
        found,
    ] {
        put(&path, &bytes);
        let e = format!("{:#}", read_idx_images(&path).unwrap_err());
        assert!(e.contains("images.idx3-ubyte"), "{bytes:?}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuzz_idx_labels() {
    let dir = tmp("idx1");
    let mut idx = vec![0, 0, 8, 1, 0, 0, 0, 6];
    idx.extend([0, 9, 3, 3, 7, 1]);
    let examples = vec![idx.clone(), gz(&idx)];
    let path = dir.join("labels.idx1-ubyte");
    fuzz("IDX labels", &examples, &[], 6000, |b| {
        put(&path, b);
        read_idx_labels(&path).map(|_| ())
    });
    std::fs::remove_dir_all(&dir).ok();
}

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Checks a decoded RGB image: 3 planes of `h * w` values in [0, 1].
fn valid_rgb((px, h, w): (Vec<f32>, usize, usize)) {
    assert_eq!(px.len(), 3 * h * w, "decoded size disagrees with {h}x{w}");
    assert!(
        px.iter().all(|v| (0.0..=1.0).contains(v)),
        "pixel out of [0, 1]"
    );
}

#[test]
fn fuzz_png_decode() {
    let dir = tmp("png");
    let rgb = image::RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 9]));
    let la = image::GrayAlphaImage::from_fn(4, 6, |x, y| image::LumaA([(x + y) as u8 * 20, 200]));
    let examples = vec![
        encoded(rgb.into(), image::ImageFormat::Png),
        encoded(la.into(), image::ImageFormat::Png),
    ];
    let path = dir.join("x.png");
    fuzz(
        "PNG",
        &examples,
        &["IHDR", "IDAT", "PLTE", "IEND"],
        6000,
        |b| {
            put(&path, b);
            read_rgb(&path).map(valid_rgb)
        },
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuzz_jpeg_decode() {
    let dir = tmp("jpeg");
    let rgb = image::RgbImage::from_fn(16, 9, |x, y| {
        image::Rgb([x as u8 * 15, y as u8 * 25, (x * y) as u8])
    });
    let grey = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * y * 4) as u8]));
    let examples = vec![
        encoded(rgb.into(), image::ImageFormat::Jpeg),
        encoded(grey.into(), image::ImageFormat::Jpeg),
    ];
    let path = dir.join("x.jpg");
    fuzz("JPEG", &examples, &["JFIF", "Exif"], 6000, |b| {
        put(&path, b);
        read_rgb(&path).map(valid_rgb)
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuzz_index_png_mask() {
    let dir = tmp("mask");
    let grey = image::GrayImage::from_fn(6, 4, |x, y| image::Luma([((x + y) % 3) as u8]));
    let mut examples = vec![encoded(grey.into(), image::ImageFormat::Png)];
    let voc = tmp("mask-voc");
    write_voc_fixture(&voc).unwrap();
    let seg = voc.join("VOCdevkit/VOC2012/SegmentationClass");
    let first = std::fs::read_dir(&seg)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    examples.push(std::fs::read(first).unwrap());
    std::fs::remove_dir_all(&voc).ok();
    let path = dir.join("m.png");
    fuzz("PNG index mask", &examples, &["PLTE", "tRNS"], 4000, |b| {
        put(&path, b);
        let m = read_index_png(&path)?;
        assert_eq!(m.data.len(), m.height * m.width, "mask size disagrees");
        Ok(())
    });
    std::fs::remove_dir_all(&dir).ok();
}
