//! `faithful explain` on image files: predictions and maps agree with the evaluation code on the
//! same pixels, overlays are written, bad input gives clear errors.

use burn::prelude::*;
use faithful::attribution;
use faithful::data::Dataset;
use faithful::evaluation;
use faithful::explain::{ClassChoice, DATASET_INFO_FILE, DatasetInfo, explain_files};
use faithful::models::{VggArch, save_model};
use faithful::training::Normalization;
use std::path::{Path, PathBuf};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faithful-explain-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A deterministic colourful test picture.
fn picture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + y * 3) % 256) as u8,
            ((x * x + 5 * y) % 256) as u8,
            if (x / 4 + y / 4) % 2 == 0 { 220 } else { 30 },
        ])
    })
}

/// The same pixels as a one-image dataset, built directly from the u8 values.
fn as_dataset(img: &image::RgbImage, classes: &[String]) -> Dataset {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut d = Dataset::empty("one", classes.to_vec(), h, w);
    d.images = vec![0.0; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            d.images[c * h * w + y as usize * w + x as usize] = p[c] as f32 / 255.0;
        }
    }
    d.labels = vec![0; classes.len()];
    d.seg = vec![0; h * w];
    d
}

fn setup(dir: &Path) -> (PathBuf, DatasetInfo) {
    let arch = VggArch {
        layout: "tiny".into(),
        num_classes: 4,
        input_size: 32,
        ..VggArch::default()
    };
    let model = arch.init(&Device::flex(), 3).unwrap().into();
    let run = dir.join("run");
    let model_path = run.join("seed-0/teacher/model.safetensors");
    save_model(&model, &model_path).unwrap();
    let info = DatasetInfo {
        name: "test".into(),
        class_names: ["cat", "dog", "ankle boot", "bus"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        normalization: Normalization {
            mean: [0.5, 0.4, 0.3],
            std: [0.25, 0.2, 0.3],
        },
    };
    info.save(&run.join(DATASET_INFO_FILE)).unwrap();
    (model_path, info)
}

#[test]
fn explanations_match_the_evaluation_code_on_the_same_pixels() {
    let dir = temp_dir("match");
    let (model_path, info) = setup(&dir);
    let img = picture(32, 32);
    let img_path = dir.join("pic.png");
    img.save(&img_path).unwrap();
    let device = Device::flex();
    let method = attribution::by_name("gradcam").unwrap();
    let out = dir.join("out");
    let got = explain_files(
        &model_path,
        None,
        std::slice::from_ref(&img_path),
        method,
        &ClassChoice::Top(2),
        &out,
        &device,
    )
    .unwrap();
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert_eq!(e.size, (32, 32));

    let model = faithful::models::load_model(&model_path, &device).unwrap();
    let data = as_dataset(&img, &info.class_names);
    let logits = evaluation::predict(&model, &data, &info.normalization, 1).unwrap();
    for (p, l) in e.probabilities.iter().zip(&logits) {
        assert!(
            (p - 1.0 / (1.0 + (-l).exp())).abs() < 1e-5,
            "{p} vs logit {l}"
        );
    }
    // top-2 in descending order of probability
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    assert_eq!(e.classes.len(), 2);
    assert_eq!(e.classes[0].index, order[0]);
    assert_eq!(e.classes[1].index, order[1]);
    for c in &e.classes {
        let maps = evaluation::attribution_maps(
            &model,
            method,
            &data,
            &info.normalization,
            &[(0, c.index)],
            1,
        )
        .unwrap();
        let m = &maps[0];
        let best = m.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let at_peak = m[c.peak.1 * 32 + c.peak.0];
        assert!(
            at_peak >= best - 1e-5 * best.abs().max(1.0),
            "peak {:?} holds {at_peak}, map max {best}",
            c.peak
        );
        let png = image::open(&c.overlay).unwrap();
        // original | overlay with a 4 px gap around and between
        assert_eq!(
            (png.width(), png.height()),
            (4 + 32 + 4 + 32 + 4, 4 + 32 + 4)
        );
    }
    assert!(out.join("explanations.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn any_size_named_class_and_bad_input() {
    let dir = temp_dir("bad");
    let (model_path, _) = setup(&dir);
    let device = Device::flex();
    let method = attribution::by_name("gradcam-closed").unwrap();
    let big = dir.join("big.jpg");
    picture(90, 60).save(&big).unwrap();
    let out = dir.join("out");
    let named = ClassChoice::Named("ankle boot".into());
    let got = explain_files(
        &model_path,
        None,
        std::slice::from_ref(&big),
        method,
        &named,
        &out,
        &device,
    )
    .unwrap();
    assert_eq!(got[0].size, (90, 60));
    assert_eq!(got[0].classes.len(), 1);
    assert_eq!(got[0].classes[0].class, "ankle boot");
    assert!(got[0].classes[0].peak.0 < 90 && got[0].classes[0].peak.1 < 60);
    assert!(out.join("big-ankle_boot.png").is_file());

    let run = |images: &[PathBuf], choice: &ClassChoice, info: Option<&Path>| {
        format!(
            "{:#}",
            explain_files(&model_path, info, images, method, choice, &out, &device).unwrap_err()
        )
    };
    let corrupt = dir.join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
    let e = run(std::slice::from_ref(&corrupt), &ClassChoice::Top(1), None);
    assert!(e.contains("corrupt.jpg"), "{e}");
    // one bad image in a batch: the good one is still explained and listed
    let batch_out = dir.join("batch");
    let e = format!(
        "{:#}",
        explain_files(
            &model_path,
            None,
            &[big.clone(), corrupt.clone()],
            method,
            &ClassChoice::Top(1),
            &batch_out,
            &device
        )
        .unwrap_err()
    );
    assert!(e.contains("1 of 2") && e.contains("corrupt.jpg"), "{e}");
    let listed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(batch_out.join("explanations.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(listed["images"].as_array().unwrap().len(), 1);
    assert_eq!(listed["failed"].as_array().unwrap().len(), 1);
    let pngs = std::fs::read_dir(&batch_out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 1, "the good image's overlay is written");
    // a folder or a FIFO given as an image is named for what it is
    let folder = dir.join("a-folder.png");
    std::fs::create_dir_all(&folder).unwrap();
    let e = run(std::slice::from_ref(&folder), &ClassChoice::Top(1), None);
    assert!(e.contains("a-folder.png is a directory"), "{e}");
    let fifo = dir.join("pipe.png");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let e = run(std::slice::from_ref(&fifo), &ClassChoice::Top(1), None);
        assert!(e.contains("pipe.png is not a regular file"), "{e}");
    }
    // a missing model is reported as a missing model, not as a missing dataset.json
    let e = format!(
        "{:#}",
        explain_files(
            &dir.join("no-such-model.safetensors"),
            None,
            std::slice::from_ref(&big),
            method,
            &ClassChoice::Top(1),
            &out,
            &device
        )
        .unwrap_err()
    );
    assert!(
        e.contains("model file") && e.contains("no-such-model.safetensors"),
        "{e}"
    );
    let missing = dir.join("missing.png");
    let e = run(std::slice::from_ref(&missing), &ClassChoice::Top(1), None);
    assert!(e.contains("missing.png"), "{e}");
    let e = run(
        std::slice::from_ref(&big),
        &ClassChoice::Named("zebra".into()),
        None,
    );
    assert!(e.contains("zebra") && e.contains("ankle boot"), "{e}");
    let no_info = dir.join("nothing-here.json");
    let e = run(
        std::slice::from_ref(&big),
        &ClassChoice::Top(1),
        Some(&no_info),
    );
    assert!(e.contains("nothing-here.json"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn faithful(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_faithful"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_cli_explains_exports_and_reports_bad_input() {
    let dir = temp_dir("cli");
    let (model_path, _) = setup(&dir);
    let model = model_path.to_str().unwrap();
    let img = dir.join("pic.png");
    picture(40, 30).save(&img).unwrap();
    let out = dir.join("explained");
    let run = faithful(&[
        "explain",
        "--model",
        model,
        "--top",
        "1",
        "--out",
        out.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("pic.png (40x30)"), "{stdout}");
    assert!(out.join("explanations.json").is_file());

    let onnx = dir.join("net");
    let run = faithful(&["export", "--model", model, "--out", onnx.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(dir.join("net.onnx").is_file());
    let torch = dir.join("torchnet");
    let run = faithful(&[
        "export",
        "--model",
        model,
        "--format",
        "torch",
        "--out",
        torch.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = std::fs::read_to_string(dir.join("torchnet.json")).unwrap();
    // the run's dataset.json was found: class names travel with the export
    assert!(json.contains("ankle boot"), "{json}");

    let run = faithful(&[
        "import",
        "--weights",
        "/nonexistent/vgg16_bn.pth",
        "--out",
        dir.join("x.safetensors").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("/nonexistent/vgg16_bn.pth"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
