//! `faithful explain`: predictions and attribution heat-map overlays for arbitrary image files,
//! from a saved network.
//!
//! A network saved by an experiment sits in a run folder whose root holds `dataset.json` (class
//! names, input normalisation). [`find_dataset_info`] walks up from the model file to find it, so
//! any model of a run can be explained without further flags.

use crate::attribution::Attribution;
use crate::data::image_io::{read_rgb, resize_bilinear};
use crate::models::{Network, load_model};
use crate::report::overlay::{Panel, grid, is_constant, render_panel, save_png};
use crate::training::Normalization;
use crate::util::write_atomic;
use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the file that describes a run's dataset for later use of its networks.
pub const DATASET_INFO_FILE: &str = "dataset.json";

/// What a saved network needs to know about the data it was trained on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    /// Dataset name (e.g. `synthetic`, `voc2012`).
    pub name: String,
    /// Class names in logit order.
    pub class_names: Vec<String>,
    /// Input normalisation applied before the network.
    pub normalization: Normalization,
}

impl DatasetInfo {
    /// Writes the info atomically as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// Reads an info file, naming it in errors.
    pub fn load(path: &Path) -> Result<DatasetInfo> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let info: DatasetInfo = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid dataset description", path.display()))?;
        info.validate()
            .with_context(|| format!("{}: invalid dataset description", path.display()))?;
        Ok(info)
    }

    /// Class names must be present, non-empty and distinct (outputs and `--class` are by
    /// name); the normalisation must be finite with positive std.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.class_names.is_empty(), "class_names is empty");
        for (i, name) in self.class_names.iter().enumerate() {
            ensure!(!name.trim().is_empty(), "class {i} has an empty name");
            ensure!(
                !self.class_names[..i].contains(name),
                "class name '{name}' occurs twice"
            );
        }
        let n = &self.normalization;
        ensure!(
            n.mean.iter().all(|m| m.is_finite()) && n.std.iter().all(|s| s.is_finite() && *s > 0.0),
            "normalization must have finite means and positive stds"
        );
        Ok(())
    }
}

/// Looks for [`DATASET_INFO_FILE`] in the model's folder and its ancestors.
pub fn find_dataset_info(model: &Path) -> Option<PathBuf> {
    let start = std::fs::canonicalize(model).ok()?;
    start
        .ancestors()
        .skip(1)
        .map(|dir| dir.join(DATASET_INFO_FILE))
        .find(|p| p.is_file())
}

/// Which classes to explain.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassChoice {
    /// The `k` highest-scoring classes.
    Top(usize),
    /// One class, by name.
    Named(String),
}

/// Note for a class whose map is zero (or constant) everywhere.
pub const ZERO_MAP_NOTE: &str = "Grad-CAM is zero everywhere: no positive evidence for this class";

/// One class's score and the overlay written for it. In JSON, `peak` is `null` for a zero map.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(into = "ClassExplanationJson")]
pub struct ClassExplanation {
    /// Class name.
    pub class: String,
    /// Class index (logit position).
    pub index: usize,
    /// Sigmoid probability (multi-label).
    pub probability: f32,
    /// Overlay PNG written for this class.
    pub overlay: PathBuf,
    /// Location of the attribution map's maximum, as (x, y) in original-image pixels; (0, 0)
    /// and meaningless when `zero_map` (a constant map has no maximum).
    pub peak: (usize, usize),
    /// The map is zero (or constant) everywhere: no peak, nothing marked on the overlay.
    pub zero_map: bool,
    /// Why there is no peak ([`ZERO_MAP_NOTE`]), when `zero_map`.
    pub note: Option<String>,
}

impl ClassExplanation {
    /// One line for people: class, probability, peak (or the zero-map note) and overlay file.
    pub fn summary(&self) -> String {
        let peak = match &self.note {
            Some(note) => format!("no peak: {note}"),
            None => format!("peak at ({}, {})", self.peak.0, self.peak.1),
        };
        format!(
            "{:<16} p={:.3}  {peak}  -> {}",
            self.class,
            self.probability,
            self.overlay.display()
        )
    }
}

/// The JSON form of [`ClassExplanation`]: `peak` is `null` when there is none.
#[derive(Serialize)]
struct ClassExplanationJson {
    class: String,
    index: usize,
    probability: f32,
    overlay: PathBuf,
    peak: Option<(usize, usize)>,
    zero_map: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl From<ClassExplanation> for ClassExplanationJson {
    fn from(c: ClassExplanation) -> Self {
        ClassExplanationJson {
            peak: (!c.zero_map).then_some(c.peak),
            class: c.class,
            index: c.index,
            probability: c.probability,
            overlay: c.overlay,
            zero_map: c.zero_map,
            note: c.note,
        }
    }
}

/// Everything explained for one image.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ImageExplanation {
    /// The input file.
    pub image: PathBuf,
    /// Its original size (width, height).
    pub size: (u32, u32),
    /// Probabilities of all classes, in logit order.
    pub probabilities: Vec<f32>,
    /// The explained classes.
    pub classes: Vec<ClassExplanation>,
}

/// Overlays are drawn on the original image, but very large photos are shrunk to this longest
/// side first so that the PNGs stay a sensible size.
const MAX_OVERLAY_SIDE: usize = 512;

fn class_indices(choice: &ClassChoice, probs: &[f32], names: &[String]) -> Result<Vec<usize>> {
    match choice {
        ClassChoice::Top(k) => {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            order.truncate((*k).max(1));
            Ok(order)
        }
        ClassChoice::Named(name) => match names.iter().position(|n| n == name) {
            Some(k) => Ok(vec![k]),
            None => bail!(
                "unknown class '{name}' (the network's classes: {})",
                names.join(", ")
            ),
        },
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Output file stems for a batch of images, distinct even when two inputs share a stem
/// (`a/photo.png b/photo.png`, or `x.png x.jpg`): the extension is added where stems clash,
/// then a counter where whole names clash.
pub fn output_stems(images: &[PathBuf]) -> Vec<String> {
    let stem_of = |p: &PathBuf| {
        p.file_stem()
            .map(|s| file_safe(&s.to_string_lossy()))
            .unwrap_or_else(|| "image".into())
    };
    let stems: Vec<String> = images.iter().map(stem_of).collect();
    let mut chosen: Vec<String> = Vec::with_capacity(images.len());
    for (p, stem) in images.iter().zip(&stems) {
        let base = if stems.iter().filter(|s| *s == stem).count() > 1 {
            p.file_name()
                .map(|s| file_safe(&s.to_string_lossy()))
                .unwrap_or_else(|| stem.clone())
        } else {
            stem.clone()
        };
        let mut name = base.clone();
        let mut n = 2;
        while chosen.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        chosen.push(name);
    }
    chosen
}

/// File-name parts for class names, distinct even when two names sanitise alike
/// (`a/b` and `a_b`): the class index is appended where they clash.
fn class_file_names(names: &[String]) -> Vec<String> {
    let safe: Vec<String> = names.iter().map(|n| file_safe(n)).collect();
    safe.iter()
        .enumerate()
        .map(|(k, s)| {
            if safe.iter().filter(|o| *o == s).count() > 1 {
                format!("{s}-{k}")
            } else {
                s.clone()
            }
        })
        .collect()
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Explains one image: predicts, computes `method`'s map for each chosen class, and writes one
/// overlay PNG per class into `out_dir` (original image | overlay, side by side). A map that
/// is zero (or constant) everywhere has no peak: the overlay is hatched and labelled instead
/// of marked, the explanation says `zero_map`, and a line on stderr says so.
/// The overlays are named `<stem>-<class>.png`; `stem` must be unique within `out_dir` (see
/// [`output_stems`]).
pub fn explain_image(
    model: &Network,
    info: &DatasetInfo,
    method: &dyn Attribution,
    image_path: &Path,
    stem: &str,
    choice: &ClassChoice,
    out_dir: &Path,
) -> Result<ImageExplanation> {
    let side = model.arch().input_size();
    ensure!(
        info.class_names.len() == model.num_classes(),
        "the dataset description lists {} classes but the network has {} outputs",
        info.class_names.len(),
        model.num_classes()
    );
    // The same decoding and resizing as the datasets', so the network sees what it trained on.
    let (original, orig_h, orig_w) = read_rgb(image_path)?;
    let mut input = resize_bilinear(&original, orig_h, orig_w, side, side);
    info.normalization.apply(&mut input);
    let device = model.devices()[0].clone();
    let x = Tensor::<4>::from_data(TensorData::new(input, [1, 3, side, side]), &device);
    let logits = tensor_vec(model.forward(x.clone()).into_data())?;
    let probabilities: Vec<f32> = logits.iter().map(|&v| sigmoid(v)).collect();
    let chosen = class_indices(choice, &probabilities, &info.class_names)?;

    let scale = (MAX_OVERLAY_SIDE as f32 / orig_w.max(orig_h) as f32).min(1.0);
    let shown_w = ((orig_w as f32 * scale).round() as usize).max(1);
    let shown_h = ((orig_h as f32 * scale).round() as usize).max(1);
    let shown = resize_bilinear(&original, orig_h, orig_w, shown_h, shown_w);
    let class_files = class_file_names(&info.class_names);

    let mut classes = Vec::with_capacity(chosen.len());
    for k in chosen {
        let maps = method.maps(model, x.clone(), &[k])?;
        let [_, h, w] = maps.dims();
        let map = tensor_vec(maps.into_data())?;
        let zero_map = is_constant(&map);
        if zero_map {
            eprintln!(
                "{}: class {}: {ZERO_MAP_NOTE} (no peak marked)",
                image_path.display(),
                info.class_names[k]
            );
        }
        let upsampled = crate::metrics::upsample_bilinear(&map, h, w, shown_h, shown_w)?;
        let peak = if zero_map {
            (0, 0)
        } else {
            let peak_idx = argmax(&upsampled);
            let peak_shown = (peak_idx % shown_w, peak_idx / shown_w);
            (
                ((peak_shown.0 as f32 + 0.5) / scale) as usize,
                ((peak_shown.1 as f32 + 0.5) / scale) as usize,
            )
        };
        let plain = Panel {
            image: &shown,
            map: None,
            mask: None,
            mark_max: false,
        };
        let overlay = Panel {
            map: Some(&upsampled),
            mark_max: true,
            ..plain
        };
        let figure = grid(
            &[vec![
                render_panel(&plain, shown_h, shown_w, 1)?,
                render_panel(&overlay, shown_h, shown_w, 1)?,
            ]],
            4,
        );
        let path = out_dir.join(format!("{stem}-{}.png", class_files[k]));
        save_png(&figure, &path)?;
        classes.push(ClassExplanation {
            class: info.class_names[k].clone(),
            index: k,
            probability: probabilities[k],
            overlay: path,
            peak,
            zero_map,
            note: zero_map.then(|| ZERO_MAP_NOTE.to_string()),
        });
    }
    Ok(ImageExplanation {
        image: image_path.to_path_buf(),
        size: (orig_w as u32, orig_h as u32),
        probabilities,
        classes,
    })
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0
}

fn tensor_vec(data: TensorData) -> Result<Vec<f32>> {
    data.try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read tensor data: {e:?}"))
}

/// Loads the network at `model_path` (and its run's `dataset.json`, or `info_path`), explains
/// every image, and writes `explanations.json` next to the overlays in `out_dir`.
pub fn explain_files(
    model_path: &Path,
    info_path: Option<&Path>,
    images: &[PathBuf],
    method: &dyn Attribution,
    choice: &ClassChoice,
    out_dir: &Path,
    device: &Device,
) -> Result<Vec<ImageExplanation>> {
    ensure!(!images.is_empty(), "no image files given");
    // The model first: a missing model must not be reported as a missing dataset.json.
    crate::data::image_io::check_regular_file(model_path, "model file")?;
    let info_path = match info_path {
        Some(p) => p.to_path_buf(),
        None => find_dataset_info(model_path).with_context(|| {
            format!(
                "no {DATASET_INFO_FILE} found next to {} or in its parent folders; pass --info FILE \
                 (it holds the class names and input normalisation)",
                model_path.display()
            )
        })?,
    };
    let info = DatasetInfo::load(&info_path)?;
    let model = load_model(model_path, device)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    if let ClassChoice::Named(name) = choice {
        // Checked once, before any image is read.
        class_indices(
            choice,
            &vec![0.0; info.class_names.len()],
            &info.class_names,
        )
        .with_context(|| format!("--class {name}"))?;
    }
    let stems = output_stems(images);
    let mut all = Vec::with_capacity(images.len());
    let mut failed = Vec::new();
    for (image, stem) in images.iter().zip(&stems) {
        // One bad image must not lose the others: it is recorded and the batch goes on.
        match explain_image(&model, &info, method, image, stem, choice, out_dir) {
            Ok(e) => all.push(e),
            Err(e) => failed.push(FailedImage {
                image: image.clone(),
                error: format!("{e:#}"),
            }),
        }
    }
    let report = Explanations {
        images: &all,
        failed: &failed,
    };
    write_atomic(
        &out_dir.join("explanations.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|f| f.error.clone()).collect();
        bail!(
            "{} of {} images could not be explained ({}); explanations.json in {} lists the \
             others",
            failed.len(),
            images.len(),
            list.join("; "),
            out_dir.display()
        );
    }
    Ok(all)
}

/// An image of a batch that could not be explained.
#[derive(Clone, Debug, Serialize)]
pub struct FailedImage {
    /// The input file.
    pub image: PathBuf,
    /// Why, naming the file.
    pub error: String,
}

/// The contents of `explanations.json`.
#[derive(Serialize)]
struct Explanations<'a> {
    images: &'a [ImageExplanation],
    failed: &'a [FailedImage],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_are_ordered_and_named_classes_checked() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let probs = [0.2, 0.9, 0.5];
        assert_eq!(
            class_indices(&ClassChoice::Top(2), &probs, &names).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            class_indices(&ClassChoice::Named("c".into()), &probs, &names).unwrap(),
            vec![2]
        );
        let e = class_indices(&ClassChoice::Named("zebra".into()), &probs, &names)
            .unwrap_err()
            .to_string();
        assert!(e.contains("zebra") && e.contains("a, b, c"), "{e}");
    }

    #[test]
    fn outputs_of_inputs_with_one_stem_or_alike_class_names_do_not_collide() {
        let images: Vec<PathBuf> = ["a/photo.png", "b/photo.png", "x.png", "x.jpg", "solo.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let stems = output_stems(&images);
        assert_eq!(
            stems,
            ["photo_png", "photo_png-2", "x_png", "x_jpg", "solo"]
        );
        let names: Vec<String> = ["a/b", "a_b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(class_file_names(&names), ["a_b-0", "a_b-1", "c"]);
    }

    #[test]
    fn dataset_descriptions_with_repeated_or_empty_class_names_are_refused() {
        let mut info = DatasetInfo {
            name: "t".into(),
            class_names: vec!["dog".into(), "cat".into(), "dog".into()],
            normalization: Normalization {
                mean: [0.5; 3],
                std: [0.25; 3],
            },
        };
        assert!(
            info.validate()
                .unwrap_err()
                .to_string()
                .contains("'dog' occurs twice")
        );
        info.class_names = vec!["dog".into(), " ".into()];
        assert!(
            info.validate()
                .unwrap_err()
                .to_string()
                .contains("empty name")
        );
        info.class_names = vec!["dog".into()];
        info.validate().unwrap();
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(file_safe("T-shirt/top"), "T-shirt_top");
        assert_eq!(file_safe("ankle boot"), "ankle_boot");
    }

    /// A stand-in attribution method: 4x4 maps that are all zero, or 1 in one cell (x=3, y=1)
    /// and 0 elsewhere. It lets the tests choose the map without training a network.
    struct FixedMaps {
        zero: bool,
    }

    impl Attribution for FixedMaps {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn maps(&self, model: &Network, _x: Tensor<4>, classes: &[usize]) -> Result<Tensor<3>> {
            let mut one = vec![0.0f32; 16];
            if !self.zero {
                one[4 + 3] = 1.0;
            }
            let values: Vec<f32> = classes.iter().flat_map(|_| one.clone()).collect();
            let data = TensorData::new(values, [classes.len(), 4, 4]);
            Ok(Tensor::from_data(data, &model.devices()[0]))
        }
    }

    /// A tiny random network, its dataset description and a 32x32 test picture in `dir`.
    fn setup(dir: &Path) -> (Network, DatasetInfo, PathBuf) {
        let arch = crate::models::VggArch {
            layout: "tiny".into(),
            num_classes: 3,
            input_size: 32,
            ..crate::models::VggArch::default()
        };
        let model: Network = arch.init(&Device::flex(), 1).unwrap().into();
        let info = DatasetInfo {
            name: "test".into(),
            class_names: ["a", "b", "c"].map(String::from).to_vec(),
            normalization: Normalization {
                mean: [0.5; 3],
                std: [0.25; 3],
            },
        };
        let img = dir.join("pic.png");
        image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, 90])
        })
        .save(&img)
        .unwrap();
        (model, info, img)
    }

    fn marker_pixels(path: &Path) -> usize {
        let png = image::open(path).unwrap().to_rgb8();
        let marker = crate::report::overlay::MARKER_COLOR;
        png.pixels().filter(|p| p.0 == marker).count()
    }

    #[test]
    fn zero_maps_have_no_peak_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let (model, info, img) = setup(dir.path());
        let choice = ClassChoice::Top(2);
        let zero = FixedMaps { zero: true };
        let e = explain_image(&model, &info, &zero, &img, "img", &choice, dir.path()).unwrap();
        assert_eq!(e.classes.len(), 2);
        for c in &e.classes {
            assert!(c.zero_map, "{c:?}");
            assert_eq!(c.note.as_deref(), Some(ZERO_MAP_NOTE));
            assert_eq!(marker_pixels(&c.overlay), 0, "a zero map was marked");
            assert!(c.summary().contains("no peak") && !c.summary().contains("peak at"));
        }
        let json: serde_json::Value = serde_json::to_value(&e).unwrap();
        let first = &json["classes"][0];
        assert_eq!(first["zero_map"], serde_json::Value::Bool(true));
        assert!(first["peak"].is_null(), "{first}");
        assert!(first["note"].as_str().unwrap().contains("zero everywhere"));

        // the same network with a one-cell map: a peak in that cell (x 24..32, y 8..16 of the
        // 32-px image), marked on the overlay
        let one = FixedMaps { zero: false };
        let e = explain_image(&model, &info, &one, &img, "img", &choice, dir.path()).unwrap();
        for c in &e.classes {
            assert!(!c.zero_map && c.note.is_none(), "{c:?}");
            assert!(
                (24..32).contains(&c.peak.0) && (8..16).contains(&c.peak.1),
                "{:?}",
                c.peak
            );
            assert!(marker_pixels(&c.overlay) > 0);
            assert!(
                c.summary()
                    .contains(&format!("peak at ({}, {})", c.peak.0, c.peak.1))
            );
        }
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json["classes"][0]["zero_map"],
            serde_json::Value::Bool(false)
        );
        assert_eq!(json["classes"][0]["peak"][0], e.classes[0].peak.0);
        assert!(json["classes"][0].get("note").is_none());
    }
}
