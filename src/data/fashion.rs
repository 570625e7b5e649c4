//! `fashion-canvas`: multi-label scenes composed from Fashion-MNIST photos, with exact masks
//! and the same label-correlated context cues as the [`synthetic`](super::synthetic) set.
//!
//! Reads the four Fashion-MNIST IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or gzipped with a `.gz`
//! suffix) from a directory; Debian's `dataset-fashion-mnist` package installs them gzipped in
//! [`DEFAULT_FASHION_DIR`].
//!
//! Each canvas has the synthetic set's background (gradient, noise, clutter strokes), then
//! 1..=`max_items` items of distinct classes. An item is one Fashion-MNIST photo, scaled
//! (bilinear) by a random factor, tinted with a random colour and alpha-blended with its own
//! intensity as alpha. Its mask is the pixels whose intensity exceeds `mask_threshold` times
//! the photo's maximum; later items overwrite earlier ones, and items overlap little. Items
//! come from disjoint pools, so val and test items are photos never seen in training: train
//! from the IDX train set minus its last `val_holdout` photos, val from those, test from t10k.
//! Context cues (a present class's patch with probability `cue_prob`, an absent class's decoy
//! with probability `false_cue_prob`) are drawn in the background and are background in the
//! segmentation.
//!
//! Every canvas is generated from its own ChaCha8 stream seeded by (seed, split, index), so a
//! split is fixed by the seed and the data, independent of thread count and of split sizes.

use super::image_io::resize_bilinear;
use super::synthetic::{
    CueInfo, cue_side, draw_background, draw_clutter, draw_cue, gauss, hsv, place_cue,
};
use super::{Dataset, Splits};
use crate::util::derive_seed;
use anyhow::{Context, Result, bail, ensure};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files.
pub const DEFAULT_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten Fashion-MNIST classes in label order, in snake_case.
pub const FASHION_CLASSES: [&str; 10] = [
    "t_shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

/// Split names (they also select the random streams).
pub const FASHION_SPLITS: [&str; 3] = ["train", "val", "test"];

/// Configuration of the `fashion-canvas` generator.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FashionCanvasConfig {
    /// Directory with the four IDX files (plain or `.gz`).
    pub dir: PathBuf,
    /// Base seed; each canvas derives its own stream from (seed, split, index).
    pub seed: u64,
    /// Canvas side in pixels (32..=256).
    pub size: usize,
    /// Number of training canvases.
    pub n_train: usize,
    /// Number of validation canvases.
    pub n_val: usize,
    /// Number of test canvases.
    pub n_test: usize,
    /// Each canvas holds 1..=max_items items of distinct classes.
    pub max_items: usize,
    /// Range of the scale factor applied to the 28-pixel photos (side = 28 × scale).
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub min_scale: f32,
    /// Upper end of the scale range.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub max_scale: f32,
    /// Mask threshold, as a fraction of the photo's maximum intensity.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub mask_threshold: f32,
    /// Number of photos at the end of the IDX train set reserved for the val split.
    pub val_holdout: usize,
    /// Probability that a present class's context cue is drawn.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub cue_prob: f32,
    /// Probability per canvas that one cue of an absent class is drawn as a decoy.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub false_cue_prob: f32,
    /// Number of clutter strokes/dots in the background.
    pub clutter: usize,
    /// The teacher's training canvases: the dataset's (`dataset`) or the same canvases without
    /// cues and decoys (`none`).
    pub teacher_cues: super::synthetic::TeacherCues,
}

impl Default for FashionCanvasConfig {
    fn default() -> Self {
        FashionCanvasConfig {
            dir: PathBuf::from(DEFAULT_FASHION_DIR),
            seed: 0,
            size: 64,
            n_train: 3000,
            n_val: 500,
            n_test: 500,
            max_items: 3,
            min_scale: 0.75,
            max_scale: 1.1,
            mask_threshold: 0.15,
            val_holdout: 5000,
            cue_prob: 0.8,
            false_cue_prob: 0.15,
            clutter: 10,
            teacher_cues: super::synthetic::TeacherCues::Dataset,
        }
    }
}

impl FashionCanvasConfig {
    /// The settings that draw the teacher's training canvases, when they differ from the
    /// students' (`teacher_cues = "none"`).
    pub fn teacher_view(&self) -> Option<FashionCanvasConfig> {
        (self.teacher_cues == super::synthetic::TeacherCues::None).then(|| FashionCanvasConfig {
            cue_prob: 0.0,
            false_cue_prob: 0.0,
            ..self.clone()
        })
    }

    /// Checks the configuration (without the data), with an error naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (32..=256).contains(&self.size),
            "fashion-canvas config: size {} is out of range (allowed 32..=256)",
            self.size
        );
        ensure!(
            (1..=FASHION_CLASSES.len()).contains(&self.max_items),
            "fashion-canvas config: max_items {} must be in 1..={} (items have distinct classes)",
            self.max_items,
            FASHION_CLASSES.len()
        );
        ensure!(
            self.min_scale.is_finite() && self.min_scale > 0.0 && self.min_scale <= self.max_scale,
            "fashion-canvas config: min_scale {} and max_scale {} must satisfy \
             0 < min_scale <= max_scale",
            self.min_scale,
            self.max_scale
        );
        for (name, p) in [
            ("cue_prob", self.cue_prob),
            ("false_cue_prob", self.false_cue_prob),
        ] {
            ensure!(
                p.is_finite() && (0.0..=1.0).contains(&p),
                "fashion-canvas config: {name} {p} is not a probability in [0,1]"
            );
        }
        ensure!(
            self.mask_threshold > 0.0 && self.mask_threshold < 1.0,
            "fashion-canvas config: mask_threshold {} must be in (0,1)",
            self.mask_threshold
        );
        Ok(())
    }
}

/// Images of an IDX file of unsigned bytes: `n` images of `rows×cols`, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Pixels, image after image, row-major.
    pub data: Vec<u8>,
}

impl IdxImages {
    /// Image `i` as rows*cols bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.rows * self.cols;
        &self.data[i * p..(i + 1) * p]
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes.
/// The largest decompressed IDX file accepted (Fashion-MNIST's largest is 47 MB).
const MAX_IDX_BYTES: u64 = 1 << 30;

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    read_maybe_gz_up_to(path, MAX_IDX_BYTES)
}

fn read_maybe_gz_up_to(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // At most one byte past the limit is read: a gzip bomb is refused, not inflated.
        flate2::read::MultiGzDecoder::new(&raw[..])
            .take(max_bytes + 1)
            .read_to_end(&mut out)
            .with_context(|| format!("{} is a corrupt gzip file", path.display()))?;
        ensure!(
            out.len() as u64 <= max_bytes,
            "{} inflates to more than {max_bytes} bytes: not a Fashion-MNIST IDX file",
            path.display()
        );
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX header of unsigned bytes with `ndim` dimensions; returns the dimensions and
/// checks that the payload has exactly their product of bytes.
fn parse_idx(path: &Path, bytes: &[u8], ndim: u8) -> Result<Vec<usize>> {
    let want = [0u8, 0, 0x08, ndim];
    ensure!(
        bytes.len() >= 4 && bytes[..4] == want,
        "{} is not an IDX file of {ndim}-dimensional unsigned bytes: magic number {:02x?}, \
         expected {want:02x?}",
        path.display(),
        &bytes[..bytes.len().min(4)]
    );
    let head = 4 + 4 * ndim as usize;
    ensure!(
        bytes.len() >= head,
        "IDX file {} is truncated inside its header",
        path.display()
    );
    let dims: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    // checked: three u32 extents can overflow usize (e.g. 2^31 * 2^31 * 4 wraps to 0)
    let len = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let Some(len) = len else {
        bail!(
            "IDX file {}: dimensions {dims:?} are too large",
            path.display()
        );
    };
    ensure!(
        bytes.len() - head == len,
        "IDX file {}: dimensions {dims:?} need {len} data bytes, found {}",
        path.display(),
        bytes.len() - head
    );
    Ok(dims)
}

/// Reads an IDX3 image file (magic `00 00 08 03`), plain or gzipped.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gz(path)?;
    let dims = parse_idx(path, &bytes, 3)?;
    ensure!(
        dims[1] > 0 && dims[2] > 0,
        "IDX file {}: empty image size {}x{}",
        path.display(),
        dims[1],
        dims[2]
    );
    Ok(IdxImages {
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
        data: bytes[16..].to_vec(),
    })
}

/// Reads an IDX1 label file (magic `00 00 08 01`), plain or gzipped.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(path, &bytes, 1)?;
    Ok(bytes[8..].to_vec())
}

/// The Fashion-MNIST photos and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct FashionMnist {
    /// The 60,000 training photographs.
    pub train_images: IdxImages,
    /// Their labels (0..=9).
    pub train_labels: Vec<u8>,
    /// The 10,000 test photographs.
    pub test_images: IdxImages,
    /// Their labels (0..=9).
    pub test_labels: Vec<u8>,
}

/// `dir/name`, else `dir/name.gz`, else an error naming both and the Debian package.
fn find_idx(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    bail!(
        "Fashion-MNIST file {} (or {}) not found; install the Debian package \
         dataset-fashion-mnist or set the fashion-canvas `dir`",
        plain.display(),
        gz.display()
    )
}

/// Loads and checks the four IDX files from `dir`: image and label counts agree, labels are
/// below 10, train and test photos have the same size.
pub fn load_fashion_mnist(dir: &Path) -> Result<FashionMnist> {
    let load = |img: &str, lab: &str| -> Result<(IdxImages, Vec<u8>)> {
        let (ip, lp) = (find_idx(dir, img)?, find_idx(dir, lab)?);
        let images = read_idx_images(&ip)?;
        let labels = read_idx_labels(&lp)?;
        ensure!(
            images.n == labels.len(),
            "{} holds {} images but {} holds {} labels",
            ip.display(),
            images.n,
            lp.display(),
            labels.len()
        );
        if let Some(pos) = labels
            .iter()
            .position(|&l| l as usize >= FASHION_CLASSES.len())
        {
            bail!(
                "{}: label {} of item {pos} is not a Fashion-MNIST class (0..=9)",
                lp.display(),
                labels[pos]
            );
        }
        Ok((images, labels))
    };
    let (train_images, train_labels) = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let (test_images, test_labels) = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    ensure!(
        (train_images.rows, train_images.cols) == (test_images.rows, test_images.cols),
        "Fashion-MNIST in {}: train photos are {}x{} but test photos {}x{}",
        dir.display(),
        train_images.rows,
        train_images.cols,
        test_images.rows,
        test_images.cols
    );
    Ok(FashionMnist {
        train_images,
        train_labels,
        test_images,
        test_labels,
    })
}

/// One pasted item.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedItem {
    /// Class index of the item.
    pub class: usize,
    /// Index of the photo in its IDX file (train file for train/val, t10k for test).
    pub photo: usize,
    /// Top-left corner and size of the scaled photo on the canvas.
    pub x0: usize,
    /// Top row of the item on the canvas.
    pub y0: usize,
    /// Item height in pixels.
    pub height: usize,
    /// Item width in pixels.
    pub width: usize,
    /// RGB tint of the item.
    pub color: [f32; 3],
    /// Mask pixels of the item, and those still visible after later items.
    pub area: usize,
    /// Mask pixels still visible after later items were pasted.
    pub visible: usize,
}

/// What the generator did for one canvas.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CanvasInfo {
    /// Items in drawing order (later ones occlude earlier ones).
    pub items: Vec<PlacedItem>,
    /// Cue patches actually drawn.
    pub cues: Vec<CueInfo>,
}

/// One rendered canvas with its annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct CanvasImage {
    /// 3*size*size, CHW, RGB in [0,1].
    pub image: Vec<f32>,
    /// size*size segmentation (0 background, k+1 class k).
    pub seg: Vec<u8>,
    /// Multi-hot labels over [`FASHION_CLASSES`].
    pub labels: Vec<u8>,
    /// How the canvas was composed.
    pub info: CanvasInfo,
}

/// The photos a split draws from, grouped by class.
struct Pool<'a> {
    images: &'a IdxImages,
    by_class: Vec<Vec<usize>>,
}

fn pool<'a>(cfg: &FashionCanvasConfig, data: &'a FashionMnist, split: &str) -> Result<Pool<'a>> {
    let n = data.train_images.n;
    let (images, labels, range) = match split {
        "train" | "val" => {
            ensure!(
                cfg.val_holdout < n,
                "fashion-canvas config: val_holdout {} leaves no training photos out of {n}",
                cfg.val_holdout
            );
            let cut = n - cfg.val_holdout;
            let range = if split == "train" { 0..cut } else { cut..n };
            (&data.train_images, &data.train_labels, range)
        }
        _ => (&data.test_images, &data.test_labels, 0..data.test_images.n),
    };
    let mut by_class = vec![Vec::new(); FASHION_CLASSES.len()];
    for i in range {
        by_class[labels[i] as usize].push(i);
    }
    let (r, c) = (images.rows as f32, images.cols as f32);
    let big = ((r.max(c) * cfg.max_scale).round()) as usize;
    ensure!(
        big <= cfg.size,
        "fashion-canvas config: photos of {}x{} scaled by max_scale {} do not fit a canvas of {}",
        images.rows,
        images.cols,
        cfg.max_scale,
        cfg.size
    );
    Ok(Pool { images, by_class })
}

/// Loads Fashion-MNIST from `cfg.dir` and generates the three splits.
pub fn generate_fashion_canvas(cfg: &FashionCanvasConfig) -> Result<Splits> {
    cfg.validate()?;
    let data = load_fashion_mnist(&cfg.dir)?;
    generate_fashion_canvas_from(cfg, &data)
}

/// Generates the three splits from already loaded photos (`cfg.dir` is not read).
pub fn generate_fashion_canvas_from(
    cfg: &FashionCanvasConfig,
    data: &FashionMnist,
) -> Result<Splits> {
    cfg.validate()?;
    let splits = Splits {
        train: generate_canvas_split(cfg, data, FASHION_SPLITS[0], cfg.n_train)?,
        val: generate_canvas_split(cfg, data, FASHION_SPLITS[1], cfg.n_val)?,
        test: generate_canvas_split(cfg, data, FASHION_SPLITS[2], cfg.n_test)?,
    };
    splits.validate()?;
    Ok(splits)
}

/// Generates the first `n` canvases of split `split` ("train", "val" or "test").
pub fn generate_canvas_split(
    cfg: &FashionCanvasConfig,
    data: &FashionMnist,
    split: &str,
    n: usize,
) -> Result<Dataset> {
    let s = cfg.size;
    let class_names = FASHION_CLASSES.iter().map(|c| c.to_string()).collect();
    let mut ds = Dataset::empty(&format!("fashion-canvas-{split}"), class_names, s, s);
    if n == 0 {
        return Ok(ds);
    }
    cfg.validate()?;
    ensure!(
        FASHION_SPLITS.contains(&split),
        "fashion-canvas: unknown split '{split}' (expected train, val or test)"
    );
    let pool = pool(cfg, data, split)?;
    let canvases: Vec<CanvasImage> = (0..n)
        .into_par_iter()
        .map(|i| render_with_pool(cfg, &pool, split, i))
        .collect::<Result<_>>()?;
    ds.images.reserve(n * ds.image_len());
    for c in &canvases {
        ds.push(&c.image, &c.labels, &c.seg);
    }
    Ok(ds)
}

const NO_OWNER: u8 = u8::MAX;
/// Maximum fraction of a new item's mask pixels that may lie on earlier items.
const MAX_OVERLAP: f32 = 0.15;
/// Minimum fraction of every item's mask pixels that must stay visible.
const MIN_VISIBLE: f32 = 0.6;
const PLACE_TRIES: usize = 60;

/// Renders canvas `index` of `split`.
pub fn render_canvas(
    cfg: &FashionCanvasConfig,
    data: &FashionMnist,
    split: &str,
    index: usize,
) -> Result<CanvasImage> {
    ensure!(
        FASHION_SPLITS.contains(&split),
        "fashion-canvas: unknown split '{split}' (expected train, val or test)"
    );
    cfg.validate()?;
    let pool = pool(cfg, data, split)?;
    render_with_pool(cfg, &pool, split, index)
}

fn render_with_pool(
    cfg: &FashionCanvasConfig,
    pool: &Pool,
    split: &str,
    index: usize,
) -> Result<CanvasImage> {
    let s = cfg.size;
    let nc = FASHION_CLASSES.len();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
        cfg.seed,
        &format!("fashion-canvas/{split}/{index}"),
    ));
    let mut px = vec![[0f32; 3]; s * s];
    draw_background(&mut px, s, &mut rng);
    for _ in 0..cfg.clutter {
        draw_clutter(&mut px, s, &mut rng);
    }

    // Distinct classes among those the pool has photos of.
    let mut classes: Vec<usize> = (0..nc).filter(|&k| !pool.by_class[k].is_empty()).collect();
    ensure!(
        !classes.is_empty(),
        "fashion-canvas: the {split} pool has no photos"
    );
    let n_items = rng.random_range(1..=cfg.max_items).min(classes.len());
    for i in 0..n_items {
        let j = rng.random_range(i..classes.len());
        classes.swap(i, j);
    }

    let mut owner = vec![NO_OWNER; s * s];
    let mut touched = vec![false; s * s];
    let mut items: Vec<PlacedItem> = Vec::new();
    let mut alphas: Vec<Vec<f32>> = Vec::new();
    let (rows, cols) = (pool.images.rows, pool.images.cols);
    for &class in &classes[..n_items] {
        let list = &pool.by_class[class];
        let photo = list[rng.random_range(0..list.len())];
        let scale = if cfg.min_scale < cfg.max_scale {
            rng.random_range(cfg.min_scale..=cfg.max_scale)
        } else {
            cfg.min_scale
        };
        let h = ((rows as f32 * scale).round() as usize).clamp(1, s);
        let w = ((cols as f32 * scale).round() as usize).clamp(1, s);
        let src: Vec<f32> = pool
            .images
            .image(photo)
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        let mut alpha = resize_bilinear(&src, rows, cols, h, w);
        let max = alpha.iter().fold(0f32, |a, &b| a.max(b));
        if max <= 0.0 {
            continue; // a blank photo has no pixels to show or label
        }
        // Full opacity at the brightest pixel, whatever the photo's exposure.
        alpha.iter_mut().for_each(|a| *a = (*a / max).min(1.0));
        let inside: Vec<bool> = alpha.iter().map(|&a| a > cfg.mask_threshold).collect();
        let area = inside.iter().filter(|&&m| m).count();
        if area == 0 {
            continue;
        }
        if let Some((x0, y0)) = place_item(s, h, w, &inside, area, &owner, &items, &mut rng) {
            let id = items.len() as u8;
            for y in 0..h {
                for x in 0..w {
                    let p = (y0 + y) * s + x0 + x;
                    if alpha[y * w + x] > 0.0 {
                        touched[p] = true;
                    }
                    if inside[y * w + x] {
                        if owner[p] != NO_OWNER {
                            items[owner[p] as usize].visible -= 1;
                        }
                        owner[p] = id;
                    }
                }
            }
            let color = hsv(
                rng.random::<f32>(),
                rng.random_range(0.45..1.0),
                rng.random_range(0.6..1.0),
            );
            items.push(PlacedItem {
                class,
                photo,
                x0,
                y0,
                height: h,
                width: w,
                color,
                area,
                visible: area,
            });
            alphas.push(alpha);
        }
    }
    for (item, alpha) in items.iter().zip(&alphas) {
        for y in 0..item.height {
            for x in 0..item.width {
                let a = alpha[y * item.width + x];
                if a <= 0.0 {
                    continue;
                }
                let n = 0.03 * gauss(&mut rng);
                let p = &mut px[(item.y0 + y) * s + item.x0 + x];
                for (pk, &ck) in p.iter_mut().zip(&item.color) {
                    *pk += (ck + n - *pk) * a;
                }
            }
        }
    }
    let mut seg = vec![0u8; s * s];
    for (p, &o) in owner.iter().enumerate() {
        if o != NO_OWNER {
            seg[p] = items[o as usize].class as u8 + 1;
        }
    }
    let mut labels = vec![0u8; nc];
    for it in &items {
        labels[it.class] = 1;
    }

    // Context cues, as in the synthetic set.
    let side = cue_side(s);
    let mut requests: Vec<usize> = Vec::new();
    for it in &items {
        if rng.random_bool(cfg.cue_prob as f64) {
            requests.push(it.class);
        }
    }
    if rng.random_bool(cfg.false_cue_prob as f64) {
        let absent: Vec<usize> = (0..nc).filter(|&k| labels[k] == 0).collect();
        if !absent.is_empty() {
            requests.push(absent[rng.random_range(0..absent.len())]);
        }
    }
    let mut cues: Vec<CueInfo> = Vec::new();
    for class in requests {
        if let Some((x0, y0)) = place_cue(s, side, &touched, &cues, &mut rng) {
            draw_cue(&mut px, s, class, x0, y0, side, &mut rng);
            cues.push(CueInfo {
                class,
                x0,
                y0,
                side,
                decoy: labels[class] == 0,
            });
        }
    }

    let mut image = vec![0f32; 3 * s * s];
    for (p, v) in px.iter().enumerate() {
        for c in 0..3 {
            image[c * s * s + p] = v[c].clamp(0.0, 1.0);
        }
    }
    Ok(CanvasImage {
        image,
        seg,
        labels,
        info: CanvasInfo { items, cues },
    })
}

/// Finds a position for an item's `h×w` mask with little overlap that keeps every earlier
/// item mostly visible.
#[allow(clippy::too_many_arguments)] // all are the placement state; a struct would only wrap it
fn place_item(
    s: usize,
    h: usize,
    w: usize,
    inside: &[bool],
    area: usize,
    owner: &[u8],
    items: &[PlacedItem],
    rng: &mut ChaCha8Rng,
) -> Option<(usize, usize)> {
    let mut stolen = vec![0usize; items.len()];
    for _ in 0..PLACE_TRIES {
        let x0 = rng.random_range(0..=s - w);
        let y0 = rng.random_range(0..=s - h);
        stolen.iter_mut().for_each(|v| *v = 0);
        let mut overlap = 0usize;
        for y in 0..h {
            for x in 0..w {
                if inside[y * w + x] {
                    let o = owner[(y0 + y) * s + x0 + x];
                    if o != NO_OWNER {
                        overlap += 1;
                        stolen[o as usize] += 1;
                    }
                }
            }
        }
        if overlap as f32 > MAX_OVERLAP * area as f32 {
            continue;
        }
        if items
            .iter()
            .zip(&stolen)
            .all(|(it, &st)| (it.visible - st) as f32 >= MIN_VISIBLE * it.area as f32)
        {
            return Some((x0, y0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzip_that_inflates_past_the_limit_is_refused() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("faithful-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bomb.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 100_000]).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        assert_eq!(read_maybe_gz_up_to(&path, 100_000).unwrap().len(), 100_000);
        let err = format!("{:#}", read_maybe_gz_up_to(&path, 99_999).unwrap_err());
        assert!(err.contains("bomb.gz") && err.contains("inflates"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn idx_bytes(magic_ndim: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, magic_ndim];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(payload);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn idx_parser_reads_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        // Two 2x3 images 0..12 and three labels, written by hand.
        let imgs = idx_bytes(3, &[2, 2, 3], &(0u8..12).collect::<Vec<_>>());
        assert_eq!(
            &imgs[..16],
            &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        let plain = dir.path().join("imgs");
        std::fs::write(&plain, &imgs).unwrap();
        let zipped = dir.path().join("imgs.gz");
        std::fs::write(&zipped, gz(&imgs)).unwrap();
        for p in [&plain, &zipped] {
            let r = read_idx_images(p).unwrap();
            assert_eq!((r.n, r.rows, r.cols), (2, 2, 3));
            assert_eq!(r.image(1), &[6, 7, 8, 9, 10, 11]);
        }
        let labs = dir.path().join("labs.gz");
        std::fs::write(&labs, gz(&idx_bytes(1, &[3], &[9, 0, 4]))).unwrap();
        assert_eq!(read_idx_labels(&labs).unwrap(), vec![9, 0, 4]);
    }

    #[test]
    fn idx_parser_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = |name: &str, bytes: Vec<u8>, images: bool| -> String {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = if images {
                read_idx_images(&p).map(|_| ()).unwrap_err()
            } else {
                read_idx_labels(&p).map(|_| ()).unwrap_err()
            };
            let e = format!("{e:#}");
            assert!(e.contains(name), "error does not name {name}: {e}");
            e
        };
        // A label file given as an image file: magic 00 00 08 01.
        let e = err("labels-as-images", idx_bytes(1, &[2], &[1, 2]), true);
        assert!(e.contains("magic number"), "{e}");
        let e = err("float-type", vec![0, 0, 0x0d, 1, 0, 0, 0, 0], false);
        assert!(e.contains("magic number"), "{e}");
        let e = err("short", idx_bytes(3, &[2, 2, 2], &[0; 7]), true);
        assert!(e.contains("need 8 data bytes, found 7"), "{e}");
        let e = err("long", idx_bytes(1, &[2], &[0; 3]), false);
        assert!(e.contains("need 2 data bytes, found 3"), "{e}");
        let e = err("header", vec![0, 0, 8, 3, 0, 0], true);
        assert!(e.contains("truncated"), "{e}");
        let mut bad_gz = gz(&idx_bytes(1, &[2], &[1, 2]));
        bad_gz.truncate(12);
        let e = err("cut.gz", bad_gz, false);
        assert!(e.contains("corrupt gzip"), "{e}");
    }

    /// Photos of 28x28 whose only bright pixels are a 10x10 square at rows/cols 9..19 (value
    /// 200) and one dim pixel (value 20, below the 0.15 threshold) at (2, 2); class i % 10.
    fn square_photos(n: usize) -> (IdxImages, Vec<u8>) {
        let mut data = vec![0u8; n * 784];
        for i in 0..n {
            let img = &mut data[i * 784..(i + 1) * 784];
            for y in 9..19 {
                for x in 9..19 {
                    img[y * 28 + x] = 200;
                }
            }
            img[2 * 28 + 2] = 20;
        }
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        (
            IdxImages {
                n,
                rows: 28,
                cols: 28,
                data,
            },
            labels,
        )
    }

    fn square_data() -> FashionMnist {
        let (train_images, train_labels) = square_photos(60);
        let (test_images, test_labels) = square_photos(20);
        FashionMnist {
            train_images,
            train_labels,
            test_images,
            test_labels,
        }
    }

    fn square_cfg() -> FashionCanvasConfig {
        FashionCanvasConfig {
            dir: PathBuf::from("/nonexistent"),
            min_scale: 1.0,
            max_scale: 1.0,
            val_holdout: 20,
            n_train: 30,
            n_val: 10,
            n_test: 10,
            ..FashionCanvasConfig::default()
        }
    }

    #[test]
    fn item_masks_are_the_bright_square() {
        let cfg = square_cfg();
        let data = square_data();
        for split in FASHION_SPLITS {
            for i in 0..40 {
                let c = render_canvas(&cfg, &data, split, i).unwrap();
                assert!(!c.info.items.is_empty());
                for it in &c.info.items {
                    // At scale 1 the mask is exactly the square 9..19 inside the 28x28 box
                    // (the dim pixel stays out), minus what later items cover.
                    assert_eq!((it.height, it.width), (28, 28));
                    assert_eq!(it.area, 100);
                    let mask: Vec<bool> =
                        c.seg.iter().map(|&v| v as usize == it.class + 1).collect();
                    assert_eq!(mask.iter().filter(|&&m| m).count(), it.visible);
                    assert!(it.visible >= 60);
                    for (p, &m) in mask.iter().enumerate() {
                        let (y, x) = (p / cfg.size, p % cfg.size);
                        let in_square = (it.y0 + 9..it.y0 + 19).contains(&y)
                            && (it.x0 + 9..it.x0 + 19).contains(&x);
                        assert!(!m || in_square, "mask pixel ({y},{x}) outside the square");
                    }
                    // The centre of the square is drawn in the item's tint (full alpha).
                    let (cy, cx) = (it.y0 + 14, it.x0 + 14);
                    if c.seg[cy * cfg.size + cx] as usize == it.class + 1 {
                        let s2 = cfg.size * cfg.size;
                        for ch in 0..3 {
                            let v = c.image[ch * s2 + cy * cfg.size + cx];
                            assert!(
                                (v - it.color[ch].min(1.0)).abs() < 0.25,
                                "{v} vs {:?}",
                                it.color
                            );
                        }
                    }
                    // Val photos come from the held-out tail (40..60), test from t10k.
                    match split {
                        "train" => assert!(it.photo < 40),
                        "val" => assert!((40..60).contains(&it.photo)),
                        _ => assert!(it.photo < 20),
                    }
                    assert_eq!(it.photo % 10, it.class);
                }
                let mut classes: Vec<usize> = c.info.items.iter().map(|it| it.class).collect();
                classes.sort();
                classes.dedup();
                assert_eq!(classes.len(), c.info.items.len(), "classes repeat");
                let labelled: Vec<usize> = (0..10).filter(|&k| c.labels[k] == 1).collect();
                assert_eq!(labelled, classes);
                for cue in &c.info.cues {
                    for y in cue.y0..cue.y0 + cue.side {
                        for x in cue.x0..cue.x0 + cue.side {
                            assert_eq!(c.seg[y * cfg.size + x], 0, "cue on an item");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn deterministic_by_seed_and_valid() {
        let cfg = square_cfg();
        let data = square_data();
        let a = generate_fashion_canvas_from(&cfg, &data).unwrap();
        let b = generate_fashion_canvas_from(&cfg, &data).unwrap();
        assert_eq!(a, b);
        let c = generate_fashion_canvas_from(
            &FashionCanvasConfig {
                seed: 9,
                ..cfg.clone()
            },
            &data,
        )
        .unwrap();
        assert_ne!(a.train.images, c.train.images);
        assert_ne!(a.test.seg, c.test.seg);
        assert_eq!(a.train.len(), 30);
        assert_eq!(a.val.len(), 10);
        assert_eq!(a.test.name, "fashion-canvas-test");
        // A split's first canvases do not depend on how many are drawn.
        let few = generate_canvas_split(&cfg, &data, "train", 7).unwrap();
        assert_eq!(few, a.train.subset(&[0, 1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn config_errors_and_serde() {
        let data = square_data();
        let bad = |f: fn(&mut FashionCanvasConfig), needle: &str| {
            let mut c = square_cfg();
            f(&mut c);
            let e = generate_fashion_canvas_from(&c, &data)
                .expect_err("expected an error")
                .to_string();
            assert!(e.contains(needle), "error '{e}' lacks '{needle}'");
        };
        bad(|c| c.size = 16, "size 16");
        bad(|c| c.max_items = 0, "max_items 0");
        bad(|c| c.max_items = 11, "max_items 11");
        bad(|c| c.min_scale = 2.0, "min_scale 2");
        bad(|c| c.max_scale = 3.0, "do not fit");
        bad(|c| c.cue_prob = 1.5, "cue_prob");
        bad(|c| c.val_holdout = 60, "val_holdout 60");
        bad(|c| c.mask_threshold = 0.0, "mask_threshold");
        let c: FashionCanvasConfig = serde_json::from_str(r#"{"seed": 3, "size": 96}"#).unwrap();
        assert_eq!((c.seed, c.size, c.max_items), (3, 96, 3));
        assert_eq!(c.dir, PathBuf::from("/usr/share/datasets/fashion-mnist"));
        assert!(serde_json::from_str::<FashionCanvasConfig>(r#"{"sed": 3}"#).is_err());
        let e = format!(
            "{:#}",
            load_fashion_mnist(Path::new("/nonexistent/fm")).unwrap_err()
        );
        assert!(
            e.contains("/nonexistent/fm/train-images-idx3-ubyte")
                && e.contains("dataset-fashion-mnist"),
            "{e}"
        );
    }
}
