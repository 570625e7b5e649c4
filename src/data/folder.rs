//! Generic folder dataset for your own images.
//!
//! Layout under ROOT:
//! - `labels.csv` with a header row and columns `file,labels[,split]` (any order; fields may be
//!   quoted), where `labels` lists class names separated by `;`; or `labels.json`, an array of
//!   `{"file": ..., "labels": [...], "split": ...}` objects (`split` optional). Exactly one of
//!   the two must exist.
//! - optional `classes.txt`: one class name per line, fixing the class order; without it the
//!   classes are the sorted unique names of the label lists.
//! - the images, at paths relative to ROOT, of any size and format the `image` crate reads;
//!   they are resized to `size×size` (aspect ratio not kept, see
//!   [`image_io`](super::image_io)).
//! - optional masks `masks/<file stem>.png` (stem: the file name without directories and
//!   extension): 8-bit palette or grayscale PNGs of the image's size holding 0 = background,
//!   k+1 = class k (in class order), 255 = ignore. An image without a mask gets an all-ignore
//!   segmentation, unless `require_masks` makes that an error.
//!
//! Splits: an entry's `split` (`train`, `val` or `test`) when given; the entries without one
//! are shuffled deterministically by `seed` and cut by `val_fraction`/`test_fraction`. Each
//! split keeps the file order of the label list.

use super::image_io::{read_mask_of, read_rgb_resized, resize_nearest};
use super::{Dataset, SEG_BACKGROUND, SEG_IGNORE, Splits};
use crate::util::derive_seed;
use anyhow::{Context, Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Configuration of the folder loader.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FolderConfig {
    /// Folder holding `labels.csv` or `labels.json`.
    pub root: PathBuf,
    /// Side of the square images after resizing.
    pub size: usize,
    /// Seed of the shuffle that splits entries without an explicit split.
    pub seed: u64,
    /// Fractions of those entries going to val and test (the rest is train).
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub val_fraction: f32,
    /// Fraction of unsplit images that go to the test split.
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub test_fraction: f32,
    /// Make a missing mask an error instead of an all-ignore segmentation.
    pub require_masks: bool,
}

impl Default for FolderConfig {
    fn default() -> Self {
        FolderConfig {
            root: PathBuf::from("data/folder"),
            size: 64,
            seed: 0,
            val_fraction: 0.1,
            test_fraction: 0.1,
            require_masks: false,
        }
    }
}

impl FolderConfig {
    /// Checks the configuration, with an error that names the offending field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (8..=1024).contains(&self.size),
            "folder config: size {} is out of range (allowed 8..=1024)",
            self.size
        );
        for (name, f) in [
            ("val_fraction", self.val_fraction),
            ("test_fraction", self.test_fraction),
        ] {
            ensure!(
                f.is_finite() && (0.0..=1.0).contains(&f),
                "folder config: {name} {f} is not a fraction in [0,1]"
            );
        }
        ensure!(
            self.val_fraction + self.test_fraction <= 1.0,
            "folder config: val_fraction {} + test_fraction {} exceed 1",
            self.val_fraction,
            self.test_fraction
        );
        Ok(())
    }
}

/// Which split an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Train,
    Val,
    Test,
}

/// One row of the label list.
#[derive(Clone, Debug)]
struct Entry {
    file: String,
    labels: Vec<String>,
    split: Option<Split>,
    /// "labels.csv line 4" or "labels.json entry 3", for error messages.
    place: String,
}

fn parse_split(s: &str, place: &str) -> Result<Option<Split>> {
    Ok(match s.trim() {
        "" => None,
        "train" => Some(Split::Train),
        "val" => Some(Split::Val),
        "test" => Some(Split::Test),
        other => bail!("{place}: unknown split '{other}' (expected train, val, test or empty)"),
    })
}

fn read_csv(path: &Path) -> Result<Vec<Entry>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("cannot read the header row of {}", path.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(file_col), Some(labels_col)) = (col("file"), col("labels")) else {
        bail!(
            "{}: the header row must name the columns 'file' and 'labels' (and optionally \
             'split'); found {:?}",
            path.display(),
            headers.iter().collect::<Vec<_>>()
        );
    };
    let split_col = col("split");
    let mut entries = Vec::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| format!("malformed CSV in {}", path.display()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let place = format!("{} line {line}", path.display());
        let file = rec.get(file_col).unwrap_or("").to_string();
        ensure!(!file.is_empty(), "{place}: empty 'file' field");
        let labels = rec
            .get(labels_col)
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let split = parse_split(split_col.and_then(|c| rec.get(c)).unwrap_or(""), &place)?;
        entries.push(Entry {
            file,
            labels,
            split,
            place,
        });
    }
    Ok(entries)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry {
    file: String,
    labels: Vec<String>,
    #[serde(default)]
    split: Option<String>,
}

fn read_json(path: &Path) -> Result<Vec<Entry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rows: Vec<JsonEntry> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JSON array of {{file, labels, split?}} objects",
            path.display()
        )
    })?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let place = format!("{} entry {i}", path.display());
            ensure!(!r.file.is_empty(), "{place}: empty 'file' field");
            let split = parse_split(r.split.as_deref().unwrap_or(""), &place)?;
            Ok(Entry {
                file: r.file,
                labels: r.labels.into_iter().map(|l| l.trim().to_string()).collect(),
                split,
                place,
            })
        })
        .collect()
}

fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut names: Vec<String> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        ensure!(
            !names.iter().any(|n| n == l),
            "{} line {}: class '{l}' is listed twice",
            path.display(),
            i + 1
        );
        names.push(l.to_string());
    }
    ensure!(!names.is_empty(), "{} lists no classes", path.display());
    Ok(names)
}

/// Loads train/val/test splits from a folder as described in the module doc.
pub fn load_folder(cfg: &FolderConfig) -> Result<Splits> {
    cfg.validate()?;
    let root = &cfg.root;
    let (csv_path, json_path) = (root.join("labels.csv"), root.join("labels.json"));
    let entries = match (csv_path.is_file(), json_path.is_file()) {
        (true, false) => read_csv(&csv_path)?,
        (false, true) => read_json(&json_path)?,
        (true, true) => bail!(
            "both {} and {} exist; keep one label list",
            csv_path.display(),
            json_path.display()
        ),
        (false, false) => bail!(
            "no label list in {}: expected labels.csv or labels.json",
            root.display()
        ),
    };
    ensure!(
        !entries.is_empty(),
        "the label list in {} has no entries",
        root.display()
    );
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for e in &entries {
        if let Some(first) = seen.insert(&e.file, &e.place) {
            bail!(
                "{}: file '{}' is already listed at {first}",
                e.place,
                e.file
            );
        }
    }

    let classes_path = root.join("classes.txt");
    let class_names = if classes_path.is_file() {
        let names = read_classes(&classes_path)?;
        for e in &entries {
            for l in &e.labels {
                ensure!(
                    names.contains(l),
                    "{}: unknown class '{l}' (not in {})",
                    e.place,
                    classes_path.display()
                );
            }
        }
        names
    } else {
        let set: BTreeSet<&String> = entries.iter().flat_map(|e| &e.labels).collect();
        ensure!(
            !set.is_empty(),
            "the label list in {} names no classes",
            root.display()
        );
        set.into_iter().cloned().collect()
    };
    ensure!(
        class_names.len() < SEG_IGNORE as usize,
        "{} classes in {}; the u8 segmentation format allows at most 254",
        class_names.len(),
        root.display()
    );

    let assign = assign_splits(&entries, cfg);
    let load = |which: Split, name: &str| -> Result<Dataset> {
        let chosen: Vec<&Entry> = entries
            .iter()
            .zip(&assign)
            .filter(|&(_, &s)| s == which)
            .map(|(e, _)| e)
            .collect();
        let items: Vec<(Vec<f32>, Vec<u8>, Vec<u8>)> = chosen
            .par_iter()
            .map(|e| load_entry(e, cfg, &class_names))
            .collect::<Result<_>>()?;
        let s = cfg.size;
        let mut ds = Dataset::empty(&format!("folder-{name}"), class_names.clone(), s, s);
        for (img, lab, seg) in &items {
            ds.push(img, lab, seg);
        }
        Ok(ds)
    };
    let splits = Splits {
        train: load(Split::Train, "train")?,
        val: load(Split::Val, "val")?,
        test: load(Split::Test, "test")?,
    };
    splits.validate()?;
    Ok(splits)
}

/// The split of every entry: its own, or from a seeded shuffle of the entries without one.
fn assign_splits(entries: &[Entry], cfg: &FolderConfig) -> Vec<Split> {
    let mut out: Vec<Split> = entries
        .iter()
        .map(|e| e.split.unwrap_or(Split::Train))
        .collect();
    let mut free: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].split.is_none())
        .collect();
    let n = free.len();
    let n_test = (n as f64 * cfg.test_fraction as f64).round() as usize;
    let n_val = ((n as f64 * cfg.val_fraction as f64).round() as usize).min(n - n_test.min(n));
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, "folder/split"));
    free.shuffle(&mut rng);
    for (j, &i) in free.iter().enumerate() {
        out[i] = if j < n_test {
            Split::Test
        } else if j < n_test + n_val {
            Split::Val
        } else {
            Split::Train
        };
    }
    out
}

fn load_entry(
    e: &Entry,
    cfg: &FolderConfig,
    class_names: &[String],
) -> Result<(Vec<f32>, Vec<u8>, Vec<u8>)> {
    let s = cfg.size;
    let path = cfg.root.join(&e.file);
    let (image, (h, w)) =
        read_rgb_resized(&path, s).with_context(|| format!("image of {}", e.place))?;
    let mut labels = vec![0u8; class_names.len()];
    for l in &e.labels {
        let k = class_names
            .iter()
            .position(|c| c == l)
            .expect("classes checked when loading the list");
        labels[k] = 1;
    }
    let mask_path = mask_path(&cfg.root, &e.file);
    let seg = if mask_path.is_file() {
        let m = read_mask_of(&mask_path, &path, (h, w))?;
        for &v in &m.data {
            if v == SEG_BACKGROUND || v == SEG_IGNORE {
                continue;
            }
            let k = v as usize - 1;
            ensure!(
                k < class_names.len(),
                "mask file {}: value {v} is not a class (expected 0, 1..={} or 255)",
                mask_path.display(),
                class_names.len()
            );
            ensure!(
                labels[k] == 1,
                "mask file {} has pixels of class '{}' but {} does not list it",
                mask_path.display(),
                class_names[k],
                e.place
            );
        }
        resize_nearest(&m.data, h, w, s, s)
    } else {
        ensure!(
            !cfg.require_masks,
            "mask file {} for {} does not exist (require_masks is set)",
            mask_path.display(),
            e.place
        );
        vec![SEG_IGNORE; s * s]
    };
    Ok((image, labels, seg))
}

/// Path of the mask that belongs to image `file` under `root`.
pub fn mask_path(root: &Path, file: &str) -> PathBuf {
    let stem = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    root.join("masks").join(format!("{stem}.png"))
}
