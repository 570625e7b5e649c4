//! A procedurally generated multi-label shapes dataset with exact segmentation masks and
//! label-correlated context cues ("shortcuts").
//!
//! Each image has a smooth two-colour gradient background with per-pixel noise and thin
//! clutter strokes/dots, then 1..=`max_objects` objects of distinct classes. A class is a
//! SHAPE (disk, ring, square, ...): colour, size and position are random and carry no class
//! information. Objects are rasterised analytically (2×2 supersampling), overlap little, and
//! always keep most of their pixels visible.
//!
//! Context cues: every class has a fixed small textured patch (a two-colour checker/stripe
//! pattern). With probability `cue_prob` the cue of each present class is drawn somewhere in
//! the background, away from all objects; with probability `false_cue_prob` per image one cue
//! of an absent class is drawn as a decoy. Cues are background in the segmentation. A network
//! that keys on the cues is right most of the time, but its attribution lies outside the
//! object mask — exactly the failure that attribution-preserving compression is about.
//!
//! Every image is generated from its own ChaCha8 stream seeded by (seed, split, index), so a
//! split is fixed by the seed, independent of thread count and of how many images are drawn.

use super::{Dataset, Splits};
use crate::util::derive_seed;
use anyhow::{Result, ensure};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::LazyLock;

/// All available shape classes, in class-index order. Every shape is left-right symmetric,
/// so horizontal-flip augmentation never changes the label.
pub const SHAPE_NAMES: [&str; 14] = [
    "disk",
    "ring",
    "square",
    "frame",
    "triangle",
    "plus",
    "x_cross",
    "diamond",
    "h_bars",
    "star",
    "half_disk",
    "hexagon",
    "tee",
    "v_bars",
];

/// Split names used by [`generate`] (they also select the random streams).
pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

/// Which images the teacher trains on, for datasets that draw context cues.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherCues {
    /// The students' training images, cues and decoys included.
    #[default]
    Dataset,
    /// The same training images drawn without cues and decoys (each image keeps its objects,
    /// clutter and noise): a teacher that cannot learn the shortcut, as one trained on curated
    /// data, while the students are distilled on the cue-rich images.
    None,
}

/// Configuration of the synthetic shapes dataset.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Base seed; each image derives its own stream from (seed, split, index).
    pub seed: u64,
    /// Image side in pixels (32..=256).
    pub size: usize,
    /// Number of shape classes used (the first `num_classes` of [`SHAPE_NAMES`]).
    pub num_classes: usize,
    /// Number of training images.
    pub n_train: usize,
    /// Number of validation images.
    pub n_val: usize,
    /// Number of test images.
    pub n_test: usize,
    /// Each image holds 1..=max_objects objects of distinct classes.
    pub max_objects: usize,
    /// Probability that a present class's context cue is drawn.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub cue_prob: f32,
    /// Probability per image that one cue of an absent class is drawn as a decoy.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub false_cue_prob: f32,
    /// Number of clutter strokes/dots in the background.
    pub clutter: usize,
    /// The teacher's training images: the dataset's (`dataset`) or the same images without
    /// cues and decoys (`none`).
    pub teacher_cues: TeacherCues,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            size: 64,
            num_classes: 10,
            n_train: 3000,
            n_val: 500,
            n_test: 500,
            max_objects: 3,
            cue_prob: 0.8,
            false_cue_prob: 0.15,
            clutter: 10,
            teacher_cues: TeacherCues::Dataset,
        }
    }
}

impl SyntheticConfig {
    /// The settings that draw the teacher's training images, when they differ from the
    /// students' (`teacher_cues = "none"`).
    pub fn teacher_view(&self) -> Option<SyntheticConfig> {
        (self.teacher_cues == TeacherCues::None).then(|| SyntheticConfig {
            cue_prob: 0.0,
            false_cue_prob: 0.0,
            ..self.clone()
        })
    }

    /// Checks the configuration, with an error that names the offending field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (32..=256).contains(&self.size),
            "synthetic config: size {} is out of range (allowed 32..=256)",
            self.size
        );
        ensure!(
            self.num_classes >= 2,
            "synthetic config: num_classes {} is too small (need at least 2)",
            self.num_classes
        );
        ensure!(
            self.num_classes <= SHAPE_NAMES.len(),
            "synthetic config: num_classes {} is more than the {} available shape classes ({})",
            self.num_classes,
            SHAPE_NAMES.len(),
            SHAPE_NAMES.join(", ")
        );
        ensure!(
            self.max_objects >= 1,
            "synthetic config: max_objects must be at least 1"
        );
        ensure!(
            self.max_objects <= self.num_classes,
            "synthetic config: max_objects {} exceeds num_classes {} (objects in an image have \
             distinct classes)",
            self.max_objects,
            self.num_classes
        );
        for (name, p) in [
            ("cue_prob", self.cue_prob),
            ("false_cue_prob", self.false_cue_prob),
        ] {
            ensure!(
                p.is_finite() && (0.0..=1.0).contains(&p),
                "synthetic config: {name} {p} is not a probability in [0,1]"
            );
        }
        Ok(())
    }

    /// Class names of this configuration.
    pub fn class_names(&self) -> Vec<String> {
        SHAPE_NAMES[..self.num_classes.min(SHAPE_NAMES.len())]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// One placed object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    /// Class index of the object.
    pub class: usize,
    /// Centre in pixel coordinates (pixel (x, y) has its centre at (x+0.5, y+0.5)).
    pub cx: f32,
    /// Centre row of the object.
    pub cy: f32,
    /// Half-size: the shape lies within [cx-half, cx+half]×[cy-half, cy+half].
    pub half: f32,
    /// RGB colour of the object.
    pub color: [f32; 3],
    /// Pixels of the full shape and pixels still visible after later objects are drawn.
    pub area: usize,
    /// Mask pixels still visible after later objects were drawn.
    pub visible: usize,
}

/// One drawn context cue patch.
#[derive(Clone, Debug, PartialEq)]
pub struct CueInfo {
    /// Class whose cue this is.
    pub class: usize,
    /// Top-left corner and side of the square patch, in pixels.
    pub x0: usize,
    /// Top row of the cue patch.
    pub y0: usize,
    /// Side of the square cue patch.
    pub side: usize,
    /// True when the class is absent from the image (a decoy).
    pub decoy: bool,
}

/// What the generator did for one image.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ImageInfo {
    /// Objects in drawing order (later ones occlude earlier ones).
    pub objects: Vec<ObjectInfo>,
    /// Cue patches actually drawn.
    pub cues: Vec<CueInfo>,
    /// Present classes whose cue the coin flip asked for (drawn unless no room was found).
    pub cues_requested: Vec<usize>,
    /// The absent class chosen as decoy, if the decoy coin flip came up.
    pub decoy_requested: Option<usize>,
}

impl ImageInfo {
    /// Mask (h*w, row-major) of the pixels covered by cue patches.
    pub fn cue_mask(&self, size: usize) -> Vec<bool> {
        let mut m = vec![false; size * size];
        for c in &self.cues {
            for y in c.y0..(c.y0 + c.side).min(size) {
                for x in c.x0..(c.x0 + c.side).min(size) {
                    m[y * size + x] = true;
                }
            }
        }
        m
    }

    /// Classes present in the image (in drawing order).
    pub fn classes(&self) -> Vec<usize> {
        self.objects.iter().map(|o| o.class).collect()
    }
}

/// One rendered image with its annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticImage {
    /// 3*size*size, CHW, RGB in [0,1].
    pub image: Vec<f32>,
    /// size*size segmentation (0 background, k+1 class k).
    pub seg: Vec<u8>,
    /// num_classes multi-hot labels.
    pub labels: Vec<u8>,
    /// How the image was composed.
    pub info: ImageInfo,
}

/// Generates the three splits deterministically from `cfg.seed`.
pub fn generate(cfg: &SyntheticConfig) -> Result<Splits> {
    cfg.validate()?;
    let splits = Splits {
        train: generate_split(cfg, SPLIT_NAMES[0], cfg.n_train)?,
        val: generate_split(cfg, SPLIT_NAMES[1], cfg.n_val)?,
        test: generate_split(cfg, SPLIT_NAMES[2], cfg.n_test)?,
    };
    splits.validate()?;
    Ok(splits)
}

/// Generates the first `n` images of one split (any split name selects its own streams).
pub fn generate_split(cfg: &SyntheticConfig, split: &str, n: usize) -> Result<Dataset> {
    cfg.validate()?;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, 2);
    Ok(generate_split_threads(cfg, split, n, threads).0)
}

/// The generator's record of the first `n` images of a split (cue positions etc.), e.g. to
/// measure how much attribution falls on cues. Regenerates the images.
pub fn split_infos(cfg: &SyntheticConfig, split: &str, n: usize) -> Result<Vec<ImageInfo>> {
    cfg.validate()?;
    Ok((0..n).map(|i| render(cfg, split, i).info).collect())
}

/// Renders image `index` of `split`. `cfg` must be valid.
pub fn render(cfg: &SyntheticConfig, split: &str, index: usize) -> SyntheticImage {
    let s = cfg.size;
    let mut img = SyntheticImage {
        image: vec![0.0; 3 * s * s],
        seg: vec![0; s * s],
        labels: vec![0; cfg.num_classes],
        info: ImageInfo::default(),
    };
    img.info = render_into(
        cfg,
        split,
        index,
        &mut img.image,
        &mut img.seg,
        &mut img.labels,
    );
    img
}

fn generate_split_threads(
    cfg: &SyntheticConfig,
    split: &str,
    n: usize,
    threads: usize,
) -> (Dataset, Vec<ImageInfo>) {
    let s = cfg.size;
    let (ip, sp, lp) = (3 * s * s, s * s, cfg.num_classes);
    let mut ds = Dataset::empty(&format!("synthetic-{split}"), cfg.class_names(), s, s);
    ds.images = vec![0.0; n * ip];
    ds.seg = vec![0; n * sp];
    ds.labels = vec![0; n * lp];
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let mut infos: Vec<Vec<ImageInfo>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ds
            .images
            .chunks_mut(chunk * ip)
            .zip(ds.seg.chunks_mut(chunk * sp))
            .zip(ds.labels.chunks_mut(chunk * lp))
            .enumerate()
            .map(|(t, ((imgs, segs), labs))| {
                scope.spawn(move || {
                    let start = t * chunk;
                    let count = imgs.len() / ip;
                    (0..count)
                        .map(|j| {
                            render_into(
                                cfg,
                                split,
                                start + j,
                                &mut imgs[j * ip..(j + 1) * ip],
                                &mut segs[j * sp..(j + 1) * sp],
                                &mut labs[j * lp..(j + 1) * lp],
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        infos = handles
            .into_iter()
            .map(|h| h.join().expect("synthetic generator thread panicked"))
            .collect();
    });
    (ds, infos.into_iter().flatten().collect())
}

// ---------------------------------------------------------------------------------------------
// Rendering

const NO_OWNER: u8 = u8::MAX;
/// Maximum fraction of a new object's pixels that may lie on earlier objects.
const MAX_OVERLAP: f32 = 0.15;
/// Minimum fraction of every object's pixels that must stay visible.
const MIN_VISIBLE: f32 = 0.6;
const PLACE_TRIES: usize = 60;
const CUE_TRIES: usize = 50;
/// Free margin around cue patches (no object pixel, no anti-aliased edge within it).
const CUE_MARGIN: usize = 2;

/// Side of the cue patches for an image side.
pub fn cue_side(size: usize) -> usize {
    ((size as f32 / 10.0).round() as usize).max(4)
}

fn render_into(
    cfg: &SyntheticConfig,
    split: &str,
    index: usize,
    image: &mut [f32],
    seg: &mut [u8],
    labels: &mut [u8],
) -> ImageInfo {
    let s = cfg.size;
    let mut rng =
        ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, &format!("synthetic/{split}/{index}")));
    let mut px = vec![[0f32; 3]; s * s];
    let mut info = ImageInfo::default();

    draw_background(&mut px, s, &mut rng);
    for _ in 0..cfg.clutter {
        draw_clutter(&mut px, s, &mut rng);
    }

    // Objects: distinct classes, placed with little overlap, then drawn in order.
    let n_obj = rng.random_range(1..=cfg.max_objects);
    let mut classes: Vec<usize> = (0..cfg.num_classes).collect();
    for i in 0..n_obj {
        let j = rng.random_range(i..classes.len());
        classes.swap(i, j);
    }
    let mut owner = vec![NO_OWNER; s * s];
    // Any anti-aliased object coverage at all (for keeping cues off objects).
    let mut touched = vec![false; s * s];
    let mut placed: Vec<(ObjectInfo, Coverage)> = Vec::new();
    for &class in &classes[..n_obj] {
        if let Some((obj, cov)) = place_object(class, s, &owner, &placed, &mut rng) {
            let id = placed.len() as u8;
            for (y, x, c) in cov.iter() {
                let p = y * s + x;
                if c > 0.0 {
                    touched[p] = true;
                }
                if c >= 0.5 {
                    if owner[p] != NO_OWNER {
                        placed[owner[p] as usize].0.visible -= 1;
                    }
                    owner[p] = id;
                }
            }
            placed.push((obj, cov));
        }
    }
    for (obj, cov) in &placed {
        draw_object(&mut px, s, obj, cov, &mut rng);
    }
    for (p, &o) in owner.iter().enumerate() {
        seg[p] = if o == NO_OWNER {
            0
        } else {
            placed[o as usize].0.class as u8 + 1
        };
    }
    labels.fill(0);
    for (obj, _) in &placed {
        labels[obj.class] = 1;
    }
    info.objects = placed.into_iter().map(|(o, _)| o).collect();

    // Context cues.
    let side = cue_side(s);
    let mut cue_requests: Vec<(usize, bool)> = Vec::new();
    for obj in &info.objects {
        if rng.random_bool(cfg.cue_prob as f64) {
            info.cues_requested.push(obj.class);
            cue_requests.push((obj.class, false));
        }
    }
    if rng.random_bool(cfg.false_cue_prob as f64) {
        let absent: Vec<usize> = (0..cfg.num_classes).filter(|&k| labels[k] == 0).collect();
        if !absent.is_empty() {
            let k = absent[rng.random_range(0..absent.len())];
            info.decoy_requested = Some(k);
            cue_requests.push((k, true));
        }
    }
    for (class, decoy) in cue_requests {
        if let Some((x0, y0)) = place_cue(s, side, &touched, &info.cues, &mut rng) {
            draw_cue(&mut px, s, class, x0, y0, side, &mut rng);
            info.cues.push(CueInfo {
                class,
                x0,
                y0,
                side,
                decoy,
            });
        }
    }

    // Planar CHW output, clamped to [0,1].
    for (p, v) in px.iter().enumerate() {
        for c in 0..3 {
            image[c * s * s + p] = v[c].clamp(0.0, 1.0);
        }
    }
    info
}

/// Approximately standard normal noise: sum of four 16-bit uniforms from one draw.
#[inline]
pub(crate) fn gauss(rng: &mut impl RngCore) -> f32 {
    let r = rng.next_u64();
    let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
    // Mean 2, variance 4/12 for four U(0,1).
    (sum as f32 / 65536.0 - 2.0) * 1.732_050_8
}

pub(crate) fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor() as i32;
    let f = h6 - i as f32;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i.rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

pub(crate) fn draw_background(px: &mut [[f32; 3]], s: usize, rng: &mut ChaCha8Rng) {
    let c1 = hsv(
        rng.random::<f32>(),
        rng.random_range(0.0..0.5),
        rng.random_range(0.25..0.85),
    );
    let c2 = hsv(
        rng.random::<f32>(),
        rng.random_range(0.0..0.5),
        rng.random_range(0.25..0.85),
    );
    let ang = rng.random_range(0.0..std::f32::consts::TAU);
    let (dx, dy) = (ang.cos(), ang.sin());
    let half = s as f32 / 2.0;
    let span = s as f32 * 0.75;
    for y in 0..s {
        for x in 0..s {
            let t = (((x as f32 + 0.5 - half) * dx + (y as f32 + 0.5 - half) * dy) / span + 0.5)
                .clamp(0.0, 1.0);
            let p = &mut px[y * s + x];
            for c in 0..3 {
                p[c] = c1[c] + (c2[c] - c1[c]) * t + 0.05 * gauss(rng);
            }
        }
    }
}

/// Distance from point p to segment a-b.
fn seg_dist(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let (wx, wy) = (p.0 - a.0, p.1 - a.1);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        ((wx * vx + wy * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (wx - t * vx, wy - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// One clutter item: a thin line segment (1-2 px) or a small dot, in a random colour.
pub(crate) fn draw_clutter(px: &mut [[f32; 3]], s: usize, rng: &mut ChaCha8Rng) {
    let color = hsv(
        rng.random::<f32>(),
        rng.random_range(0.2..1.0),
        rng.random_range(0.2..1.0),
    );
    let sf = s as f32;
    let a = (rng.random_range(0.0..sf), rng.random_range(0.0..sf));
    let (b, hw) = if rng.random_bool(0.6) {
        let len = rng.random_range(3.0..(sf / 4.0).max(4.0));
        let ang = rng.random_range(0.0..std::f32::consts::TAU);
        let hw = if rng.random_bool(0.5) { 0.5 } else { 0.9 };
        ((a.0 + len * ang.cos(), a.1 + len * ang.sin()), hw)
    } else {
        (a, rng.random_range(0.8..1.7))
    };
    let x_lo = (a.0.min(b.0) - hw - 1.0).floor().max(0.0) as usize;
    let x_hi = ((a.0.max(b.0) + hw + 1.0).ceil().max(0.0) as usize).min(s);
    let y_lo = (a.1.min(b.1) - hw - 1.0).floor().max(0.0) as usize;
    let y_hi = ((a.1.max(b.1) + hw + 1.0).ceil().max(0.0) as usize).min(s);
    for y in y_lo..y_hi {
        for x in x_lo..x_hi {
            let d = seg_dist((x as f32 + 0.5, y as f32 + 0.5), a, b);
            let alpha = (hw + 0.5 - d).clamp(0.0, 1.0);
            if alpha > 0.0 {
                let p = &mut px[y * s + x];
                for c in 0..3 {
                    p[c] += (color[c] - p[c]) * alpha;
                }
            }
        }
    }
}

// --- Shapes ---------------------------------------------------------------------------------

fn point_in_polygon(u: f32, v: f32, poly: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

static STAR: LazyLock<Vec<(f32, f32)>> = LazyLock::new(|| {
    (0..10)
        .map(|i| {
            let a = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
            let r = if i % 2 == 0 { 1.0 } else { 0.45 };
            (r * a.cos(), r * a.sin() + 0.09)
        })
        .collect()
});

const TRIANGLE: [(f32, f32); 3] = [(0.0, -0.95), (0.95, 0.8), (-0.95, 0.8)];

/// Point-in-shape test in normalised object coordinates (u right, v down, both in [-1,1]).
fn inside(shape: usize, u: f32, v: f32) -> bool {
    let (au, av) = (u.abs(), v.abs());
    let r2 = u * u + v * v;
    match shape {
        0 => r2 <= 1.0,                                              // disk
        1 => (0.3025..=1.0).contains(&r2),                           // ring: 0.55 <= r <= 1
        2 => au <= 0.85 && av <= 0.85,                               // square
        3 => au.max(av) <= 0.9 && au.max(av) >= 0.52,                // frame
        4 => point_in_polygon(u, v, &TRIANGLE),                      // triangle
        5 => (au <= 0.3 && av <= 0.95) || (av <= 0.3 && au <= 0.95), // plus
        6 => au <= 0.9 && av <= 0.9 && ((u - v).abs() <= 0.42 || (u + v).abs() <= 0.42), // x
        7 => au + av <= 1.0,                                         // diamond
        8 => au <= 0.95 && (0.28..=0.8).contains(&av),               // horizontal bars
        9 => point_in_polygon(u, v, &STAR),                          // star
        10 => u * u + (v - 0.5) * (v - 0.5) <= 1.0 && v <= 0.5,      // half disk (dome)
        11 => av <= 0.866 && 1.732 * au + av <= 1.732,               // hexagon (flat top)
        12 => {
            (au <= 0.95 && (-0.95..=-0.45).contains(&v))
                || (au <= 0.27 && (-0.95..=0.95).contains(&v))
        } // tee
        13 => av <= 0.95 && (0.28..=0.8).contains(&au),              // vertical bars
        _ => false,
    }
}

/// Anti-aliased coverage of one object over its bounding box.
struct Coverage {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    cov: Vec<f32>,
    size: usize,
}

impl Coverage {
    fn compute(shape: usize, cx: f32, cy: f32, half: f32, s: usize) -> Coverage {
        let x0 = (cx - half - 1.0).floor().max(0.0) as usize;
        let y0 = (cy - half - 1.0).floor().max(0.0) as usize;
        let x1 = ((cx + half + 1.0).ceil() as usize).min(s);
        let y1 = ((cy + half + 1.0).ceil() as usize).min(s);
        let (w, h) = (x1 - x0, y1 - y0);
        let mut cov = vec![0f32; w * h];
        const OFF: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
        let inv = 1.0 / half;
        for j in 0..h {
            for i in 0..w {
                let mut n = 0;
                for (ox, oy) in OFF {
                    let u = ((x0 + i) as f32 + ox - cx) * inv;
                    let v = ((y0 + j) as f32 + oy - cy) * inv;
                    if inside(shape, u, v) {
                        n += 1;
                    }
                }
                cov[j * w + i] = n as f32 * 0.25;
            }
        }
        Coverage {
            x0,
            y0,
            w,
            h,
            cov,
            size: s,
        }
    }

    /// (y, x, coverage) over the bounding box.
    fn iter(&self) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        debug_assert!(self.x0 + self.w <= self.size && self.y0 + self.h <= self.size);
        (0..self.h).flat_map(move |j| {
            (0..self.w).map(move |i| (self.y0 + j, self.x0 + i, self.cov[j * self.w + i]))
        })
    }
}

fn place_object(
    class: usize,
    s: usize,
    owner: &[u8],
    placed: &[(ObjectInfo, Coverage)],
    rng: &mut ChaCha8Rng,
) -> Option<(ObjectInfo, Coverage)> {
    let sf = s as f32;
    let mut stolen = vec![0usize; placed.len()];
    for _ in 0..PLACE_TRIES {
        let half = rng.random_range(0.11 * sf..0.2 * sf);
        let cx = rng.random_range(half + 1.0..sf - half - 1.0);
        let cy = rng.random_range(half + 1.0..sf - half - 1.0);
        let cov = Coverage::compute(class, cx, cy, half, s);
        let mut area = 0usize;
        let mut overlap = 0usize;
        stolen.iter_mut().for_each(|v| *v = 0);
        for (y, x, c) in cov.iter() {
            if c >= 0.5 {
                area += 1;
                let o = owner[y * s + x];
                if o != NO_OWNER {
                    overlap += 1;
                    stolen[o as usize] += 1;
                }
            }
        }
        if area == 0 || overlap as f32 > MAX_OVERLAP * area as f32 {
            continue;
        }
        let ok = placed
            .iter()
            .zip(&stolen)
            .all(|((o, _), &st)| (o.visible - st) as f32 >= MIN_VISIBLE * o.area as f32);
        if !ok {
            continue;
        }
        let color = hsv(
            rng.random::<f32>(),
            rng.random_range(0.65..1.0),
            rng.random_range(0.65..1.0),
        );
        let obj = ObjectInfo {
            class,
            cx,
            cy,
            half,
            color,
            area,
            visible: area,
        };
        return Some((obj, cov));
    }
    None
}

fn draw_object(
    px: &mut [[f32; 3]],
    s: usize,
    obj: &ObjectInfo,
    cov: &Coverage,
    rng: &mut ChaCha8Rng,
) {
    // Directional shading across the object plus fine per-pixel noise.
    let ang = rng.random_range(0.0..std::f32::consts::TAU);
    let strength = rng.random_range(0.08..0.22);
    let (lx, ly) = (ang.cos() * strength, ang.sin() * strength);
    for (y, x, c) in cov.iter() {
        if c <= 0.0 {
            continue;
        }
        let u = (x as f32 + 0.5 - obj.cx) / obj.half;
        let v = (y as f32 + 0.5 - obj.cy) / obj.half;
        let shade = 1.0 + lx * u + ly * v;
        let n = 0.03 * gauss(rng);
        let p = &mut px[y * s + x];
        for (pk, &ck) in p.iter_mut().zip(&obj.color) {
            let col = ck * shade + n;
            *pk += (col - *pk) * c;
        }
    }
}

// --- Context cues ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Pattern {
    Checker,
    FineChecker,
    HStripes,
    VStripes,
    Diagonal,
    Border,
}

const RED: [f32; 3] = [0.95, 0.1, 0.1];
const GREEN: [f32; 3] = [0.1, 0.8, 0.1];
const BLUE: [f32; 3] = [0.1, 0.2, 0.95];
const YELLOW: [f32; 3] = [0.95, 0.9, 0.1];
const CYAN: [f32; 3] = [0.1, 0.9, 0.9];
const MAGENTA: [f32; 3] = [0.9, 0.1, 0.9];
const WHITE: [f32; 3] = [0.97, 0.97, 0.97];
const BLACK: [f32; 3] = [0.03, 0.03, 0.03];
const ORANGE: [f32; 3] = [1.0, 0.55, 0.0];

/// Fixed cue of each class: (pattern, colour A, colour B).
const CUES: [(Pattern, [f32; 3], [f32; 3]); 14] = [
    (Pattern::Checker, RED, WHITE),
    (Pattern::HStripes, BLUE, YELLOW),
    (Pattern::VStripes, GREEN, MAGENTA),
    (Pattern::Diagonal, BLACK, CYAN),
    (Pattern::Border, ORANGE, BLUE),
    (Pattern::FineChecker, MAGENTA, WHITE),
    (Pattern::Checker, BLUE, ORANGE),
    (Pattern::HStripes, BLACK, WHITE),
    (Pattern::VStripes, RED, CYAN),
    (Pattern::Diagonal, YELLOW, MAGENTA),
    (Pattern::Border, WHITE, GREEN),
    (Pattern::FineChecker, GREEN, BLACK),
    (Pattern::Checker, YELLOW, BLACK),
    (Pattern::HStripes, MAGENTA, GREEN),
];

/// Noise-free colour of pixel (x, y) of class `class`'s cue patch of side `side`.
pub fn cue_pixel(class: usize, side: usize, x: usize, y: usize) -> [f32; 3] {
    let (pat, a, b) = CUES[class % CUES.len()];
    let u = (side / 3).max(1);
    let first = match pat {
        Pattern::Checker => (x / u + y / u).is_multiple_of(2),
        Pattern::FineChecker => (x + y).is_multiple_of(2),
        Pattern::HStripes => (y / u).is_multiple_of(2),
        Pattern::VStripes => (x / u).is_multiple_of(2),
        Pattern::Diagonal => ((x + y) / u).is_multiple_of(2),
        Pattern::Border => x < u || y < u || x + u >= side || y + u >= side,
    };
    if first { a } else { b }
}

pub(crate) fn place_cue(
    s: usize,
    side: usize,
    touched: &[bool],
    cues: &[CueInfo],
    rng: &mut ChaCha8Rng,
) -> Option<(usize, usize)> {
    let hi = s - side - 1;
    'tries: for _ in 0..CUE_TRIES {
        let x0 = rng.random_range(1..=hi);
        let y0 = rng.random_range(1..=hi);
        // No cue overlapping or touching another cue.
        for c in cues {
            if x0 < c.x0 + c.side + 1
                && c.x0 < x0 + side + 1
                && y0 < c.y0 + c.side + 1
                && c.y0 < y0 + side + 1
            {
                continue 'tries;
            }
        }
        let (xa, ya) = (x0.saturating_sub(CUE_MARGIN), y0.saturating_sub(CUE_MARGIN));
        let (xb, yb) = (
            (x0 + side + CUE_MARGIN).min(s),
            (y0 + side + CUE_MARGIN).min(s),
        );
        for y in ya..yb {
            if touched[y * s + xa..y * s + xb].iter().any(|&t| t) {
                continue 'tries;
            }
        }
        return Some((x0, y0));
    }
    None
}

pub(crate) fn draw_cue(
    px: &mut [[f32; 3]],
    s: usize,
    class: usize,
    x0: usize,
    y0: usize,
    side: usize,
    rng: &mut ChaCha8Rng,
) {
    for y in 0..side {
        for x in 0..side {
            let col = cue_pixel(class, side, x, y);
            let n = 0.02 * gauss(rng);
            let p = &mut px[(y0 + y) * s + x0 + x];
            for c in 0..3 {
                p[c] = col[c] + n;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops read more clearly in these checks
mod tests {
    use super::*;

    fn small_cfg() -> SyntheticConfig {
        SyntheticConfig {
            n_train: 40,
            n_val: 10,
            n_test: 10,
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn same_seed_same_bytes_different_seed_differs() {
        let cfg = small_cfg();
        let a = generate(&cfg).unwrap();
        let b = generate(&cfg).unwrap();
        assert_eq!(a, b);
        let c = generate(&SyntheticConfig {
            seed: 1,
            ..cfg.clone()
        })
        .unwrap();
        assert_ne!(a.train.images, c.train.images);
        assert_ne!(a.test.seg, c.test.seg);
        // Splits use different streams.
        assert_ne!(a.val.image(0), a.test.image(0));
        assert_ne!(a.train.image(0), a.val.image(0));
        assert_eq!(a.train.name, "synthetic-train");
        assert_eq!(a.train.len(), 40);
        assert_eq!(a.val.len(), 10);
    }

    #[test]
    fn independent_of_count_and_threads() {
        let cfg = small_cfg();
        let (small, _) = generate_split_threads(&cfg, "train", 7, 1);
        let (big, _) = generate_split_threads(&cfg, "train", 23, 3);
        let (big2, _) = generate_split_threads(&cfg, "train", 23, 2);
        assert_eq!(big, big2);
        assert_eq!(small.images[..], big.images[..small.images.len()]);
        assert_eq!(small.seg[..], big.seg[..small.seg.len()]);
        assert_eq!(small.labels[..], big.labels[..small.labels.len()]);
        // A single render equals the batch one.
        let one = render(&cfg, "train", 11);
        assert_eq!(one.image, big.image(11));
        assert_eq!(one.seg, big.seg_of(11));
        // And the public generator agrees with the threaded one.
        assert_eq!(
            generate(&cfg).unwrap().train.subset(&[0, 1, 2, 3, 4, 5, 6]),
            small
        );
    }

    #[test]
    fn labels_masks_and_seg_agree() {
        let cfg = SyntheticConfig {
            max_objects: 4,
            ..small_cfg()
        };
        let (ds, infos) = generate_split_threads(&cfg, "train", 300, 2);
        ds.validate().unwrap();
        let c = cfg.num_classes;
        let mut counts = vec![0usize; cfg.max_objects + 1];
        for (i, info) in infos.iter().enumerate() {
            let labelled = ds.classes_of(i);
            assert!(
                (1..=cfg.max_objects).contains(&labelled.len()),
                "image {i} has {} labels",
                labelled.len()
            );
            counts[labelled.len()] += 1;
            let mut in_seg = vec![false; c];
            for &v in ds.seg_of(i) {
                assert!(v as usize <= c, "seg value {v}");
                if v > 0 {
                    in_seg[v as usize - 1] = true;
                }
            }
            for k in 0..c {
                assert_eq!(in_seg[k], labelled.contains(&k), "image {i} class {k}");
                if labelled.contains(&k) {
                    assert!(ds.class_mask(i, k).iter().any(|&m| m));
                }
            }
            let mut info_classes = info.classes();
            info_classes.sort();
            assert_eq!(info_classes, labelled);
            // Every object keeps most of its pixels, and the counts match the seg.
            for o in &info.objects {
                let n = ds.class_mask(i, o.class).iter().filter(|&&m| m).count();
                assert_eq!(n, o.visible);
                assert!(o.visible as f32 >= MIN_VISIBLE * o.area as f32);
                assert!(o.area >= 20, "object too small: {}", o.area);
                // Fully inside the image.
                let sf = cfg.size as f32;
                assert!(o.cx - o.half >= 0.0 && o.cx + o.half <= sf);
                assert!(o.cy - o.half >= 0.0 && o.cy + o.half <= sf);
            }
            assert!(ds.image(i).iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // The number of objects varies over the whole range.
        assert!(counts[1..].iter().all(|&n| n > 30), "{counts:?}");
    }

    #[test]
    fn cue_statistics_follow_probabilities() {
        let cfg = SyntheticConfig {
            cue_prob: 0.7,
            false_cue_prob: 0.3,
            ..small_cfg()
        };
        let (ds, infos) = generate_split_threads(&cfg, "val", 400, 2);
        let side = cue_side(cfg.size);
        let (mut present, mut drawn, mut requested, mut decoys) = (0usize, 0usize, 0usize, 0);
        for (i, info) in infos.iter().enumerate() {
            present += info.objects.len();
            requested += info.cues_requested.len();
            let labels = ds.labels_of(i);
            for cue in &info.cues {
                assert_eq!(cue.side, side);
                assert_eq!(cue.decoy, labels[cue.class] == 0);
                if cue.decoy {
                    decoys += 1;
                    assert_eq!(info.decoy_requested, Some(cue.class));
                } else {
                    drawn += 1;
                    assert!(info.cues_requested.contains(&cue.class));
                }
                // The cue is background in seg, with a free margin, and really drawn.
                let s = cfg.size;
                let seg = ds.seg_of(i);
                let img = ds.image(i);
                let (xa, ya) = (cue.x0.saturating_sub(2), cue.y0.saturating_sub(2));
                for y in ya..(cue.y0 + side + 2).min(s) {
                    for x in xa..(cue.x0 + side + 2).min(s) {
                        assert_eq!(seg[y * s + x], 0, "cue overlaps an object");
                    }
                }
                let mut err = 0f32;
                for y in 0..side {
                    for x in 0..side {
                        let want = cue_pixel(cue.class, side, x, y);
                        for c in 0..3 {
                            let got = img[c * s * s + (cue.y0 + y) * s + cue.x0 + x];
                            err += (got - want[c]).abs();
                        }
                    }
                }
                assert!(
                    err / (3 * side * side) as f32 <= 0.03,
                    "cue not drawn: {err}"
                );
            }
            assert!(
                info.cue_mask(cfg.size).iter().filter(|&&m| m).count()
                    == info.cues.len() * side * side
            );
        }
        let frac = drawn as f32 / present as f32;
        assert!((frac - 0.7).abs() < 0.06, "cue fraction {frac}");
        assert!(
            drawn as f32 >= 0.97 * requested as f32,
            "cue placement failed too often"
        );
        let dfrac = decoys as f32 / infos.len() as f32;
        assert!((dfrac - 0.3).abs() < 0.07, "decoy fraction {dfrac}");

        // Extremes.
        let none = SyntheticConfig {
            cue_prob: 0.0,
            false_cue_prob: 0.0,
            ..small_cfg()
        };
        let (_, infos) = generate_split_threads(&none, "val", 100, 2);
        assert!(infos.iter().all(|i| i.cues.is_empty()));
        let all = SyntheticConfig {
            cue_prob: 1.0,
            ..small_cfg()
        };
        let (_, infos) = generate_split_threads(&all, "val", 100, 2);
        let req: usize = infos.iter().map(|i| i.cues_requested.len()).sum();
        let objs: usize = infos.iter().map(|i| i.objects.len()).sum();
        assert_eq!(req, objs);
    }

    #[test]
    fn the_teachers_view_is_the_same_images_without_their_cues() {
        let cfg = SyntheticConfig {
            teacher_cues: TeacherCues::None,
            ..small_cfg()
        };
        assert!(small_cfg().teacher_view().is_none());
        let view = cfg.teacher_view().unwrap();
        let (students, infos) = generate_split_threads(&cfg, "train", 60, 2);
        let (teachers, teacher_infos) = generate_split_threads(&view, "train", 60, 2);
        assert!(teacher_infos.iter().all(|i| i.cues.is_empty()));
        let s = cfg.size;
        let mut cue_pixels = 0;
        for (i, info) in infos.iter().enumerate() {
            assert_eq!(students.labels_of(i), teachers.labels_of(i), "image {i}");
            assert_eq!(students.seg_of(i), teachers.seg_of(i), "image {i}");
            let on_cue = info.cue_mask(s);
            let (a, b) = (students.image(i), teachers.image(i));
            for p in 0..s * s {
                let same = (0..3).all(|c| a[c * s * s + p] == b[c * s * s + p]);
                if on_cue[p] {
                    cue_pixels += usize::from(!same);
                } else {
                    assert!(same, "image {i} differs off the cues at pixel {p}");
                }
            }
        }
        // the students' images do hold cues, and the teacher's lack them
        assert!(cue_pixels > 60 * 4, "only {cue_pixels} cue pixels differ");
    }

    #[test]
    fn classes_are_balanced_and_not_colour_coded() {
        let cfg = small_cfg();
        let (ds, infos) = generate_split_threads(&cfg, "train", 800, 2);
        let counts = ds.class_counts();
        let total: usize = counts.iter().sum();
        let expect = total as f32 / cfg.num_classes as f32;
        for (k, &n) in counts.iter().enumerate() {
            assert!(
                (n as f32 - expect).abs() < 0.25 * expect,
                "class {k} appears {n} times, expected about {expect}"
            );
        }
        // Mean object colour per class stays near the global mean (colour is not the class).
        let mut sum = vec![[0f32; 3]; cfg.num_classes];
        let mut cnt = vec![0f32; cfg.num_classes];
        for o in infos.iter().flat_map(|i| &i.objects) {
            for c in 0..3 {
                sum[o.class][c] += o.color[c];
            }
            cnt[o.class] += 1.0;
        }
        for k in 0..cfg.num_classes {
            for c in 0..3 {
                let m = sum[k][c] / cnt[k];
                assert!((0.38..0.6).contains(&m), "class {k} channel {c} mean {m}");
            }
        }
    }

    #[test]
    fn shapes_are_distinct_and_symmetric() {
        // Rasterise each shape on a grid and compare masks: every pair must differ clearly,
        // and every shape must be left-right symmetric (flip augmentation keeps labels).
        let n = 41;
        let masks: Vec<Vec<bool>> = (0..SHAPE_NAMES.len())
            .map(|k| {
                (0..n * n)
                    .map(|p| {
                        let u = ((p % n) as f32 - 20.0) / 20.0;
                        let v = ((p / n) as f32 - 20.0) / 20.0;
                        inside(k, u, v)
                    })
                    .collect()
            })
            .collect();
        for (a, ma) in masks.iter().enumerate() {
            let area = ma.iter().filter(|&&m| m).count();
            assert!(area > n * n / 6, "{} too small: {area}", SHAPE_NAMES[a]);
            for y in 0..n {
                for x in 0..n {
                    assert_eq!(
                        ma[y * n + x],
                        ma[y * n + n - 1 - x],
                        "{} not symmetric",
                        SHAPE_NAMES[a]
                    );
                }
            }
            for (b, mb) in masks.iter().enumerate().skip(a + 1) {
                let diff = ma.iter().zip(mb).filter(|(x, y)| x != y).count();
                assert!(
                    diff > n * n / 10,
                    "{} and {} too similar ({diff})",
                    SHAPE_NAMES[a],
                    SHAPE_NAMES[b]
                );
            }
        }
        // Cues differ between every pair of classes.
        let side = cue_side(64);
        for a in 0..SHAPE_NAMES.len() {
            for b in a + 1..SHAPE_NAMES.len() {
                let same = (0..side * side).all(|p| {
                    cue_pixel(a, side, p % side, p / side) == cue_pixel(b, side, p % side, p / side)
                });
                assert!(!same, "cues of {a} and {b} are equal");
            }
        }
    }

    #[test]
    fn config_validation_errors() {
        let ok = SyntheticConfig::default();
        ok.validate().unwrap();
        let bad = |f: fn(&mut SyntheticConfig), needle: &str| {
            let mut c = SyntheticConfig::default();
            f(&mut c);
            let e = generate(&c).expect_err("expected an error").to_string();
            assert!(e.contains(needle), "error '{e}' lacks '{needle}'");
        };
        bad(|c| c.num_classes = 99, "num_classes 99 is more than");
        bad(|c| c.num_classes = 1, "num_classes 1 is too small");
        bad(|c| c.size = 16, "size 16");
        bad(|c| c.size = 300, "size 300");
        bad(|c| c.max_objects = 0, "max_objects");
        bad(|c| c.max_objects = 11, "max_objects 11");
        bad(|c| c.cue_prob = 1.5, "cue_prob");
        bad(|c| c.false_cue_prob = -0.1, "false_cue_prob");
        bad(|c| c.cue_prob = f32::NAN, "cue_prob");
        assert!(SHAPE_NAMES.len() >= 10);
        assert_eq!(ok.class_names()[..3], ["disk", "ring", "square"]);
    }

    #[test]
    fn config_serde_defaults_and_unknown_fields() {
        let c: SyntheticConfig = serde_json::from_str(r#"{"seed": 5, "size": 32}"#).unwrap();
        assert_eq!(c.seed, 5);
        assert_eq!(c.size, 32);
        assert_eq!(c.n_train, 3000);
        assert!(serde_json::from_str::<SyntheticConfig>(r#"{"sede": 5}"#).is_err());
        let back: SyntheticConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn other_sizes_work() {
        for size in [32, 100, 256] {
            let cfg = SyntheticConfig {
                size,
                num_classes: 14,
                max_objects: 4,
                n_train: 12,
                n_val: 2,
                n_test: 2,
                ..SyntheticConfig::default()
            };
            let s = generate(&cfg).unwrap();
            assert_eq!(s.train.height, size);
            assert_eq!(s.train.image(3).len(), 3 * size * size);
        }
    }

    #[test]
    fn timing_sanity() {
        // Not an assertion on speed: prints how long the default training split takes.
        let cfg = SyntheticConfig::default();
        let t = std::time::Instant::now();
        let ds = generate_split(&cfg, "train", cfg.n_train).unwrap();
        let dt = t.elapsed().as_secs_f64();
        println!(
            "generated {} {}x{} images in {dt:.3}s ({:.0} images/s)",
            ds.len(),
            cfg.size,
            cfg.size,
            ds.len() as f64 / dt
        );
        assert_eq!(ds.len(), cfg.n_train);
    }
}
