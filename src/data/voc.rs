//! PASCAL VOC 2012 loader.
//!
//! Reads the standard layout `ROOT/VOCdevkit/VOC2012` (ROOT may also be the `VOC2012` folder
//! itself):
//! - `JPEGImages/<id>.jpg`: the photos, resized to `size×size` (aspect ratio not kept, see
//!   [`image_io`](super::image_io));
//! - `Annotations/<id>.xml`: the `<object><name>` entries give the multi-label target over
//!   the 20 classes of [`VOC_CLASSES`];
//! - `SegmentationClass/<id>.png`: palette PNGs whose indices (0 background, 1..=20 class,
//!   255 object border) are exactly our segmentation convention; resized nearest-neighbour;
//! - `ImageSets/Main/{train,val}.txt` and `ImageSets/Segmentation/val.txt`: the split lists.
//!
//! Splits: train = `Main/train`, test = `Segmentation/val` (the only images with masks, so the
//! attribution metrics run on the test split), val = the `Main/val` images that are not in
//! `Segmentation/val`. Train and val have no masks: their segmentation is all ignore (255).
//! Images of `Segmentation/val` are also dropped from train, so the test set stays unseen
//! even in a modified split list.

use super::image_io::{read_mask_of, read_rgb_resized, resize_nearest};
use super::{Dataset, SEG_BACKGROUND, SEG_IGNORE, Splits};
use anyhow::{Context, Result, bail, ensure};
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The 20 VOC classes in the standard order (class k has segmentation value k+1).
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// What to do with objects marked `<difficult>1</difficult>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Difficult {
    /// A difficult object makes its class present, like any other object.
    #[default]
    Include,
    /// A difficult object does not make its class present (the VOC classification
    /// benchmark's convention); its mask pixels become ignore (255).
    Exclude,
}

/// Configuration of the VOC 2012 loader.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VocConfig {
    /// Folder holding `VOCdevkit/VOC2012`, or the `VOC2012` folder itself.
    pub root: PathBuf,
    /// Side of the square images after resizing.
    pub size: usize,
    /// Whether objects marked difficult make their class present.
    pub difficult: Difficult,
    /// Keep only the first N images of each split, in list order (deterministic).
    pub max_train: Option<usize>,
    /// Keep at most this many validation images (list order).
    pub max_val: Option<usize>,
    /// Keep at most this many test images (list order).
    pub max_test: Option<usize>,
}

impl Default for VocConfig {
    fn default() -> Self {
        VocConfig {
            root: PathBuf::from("data"),
            size: 64,
            difficult: Difficult::Include,
            max_train: None,
            max_val: None,
            max_test: None,
        }
    }
}

impl VocConfig {
    /// Checks the configuration, with an error that names the offending field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (8..=1024).contains(&self.size),
            "voc config: size {} is out of range (allowed 8..=1024)",
            self.size
        );
        Ok(())
    }
}

/// Class names in class-index order.
pub fn voc_class_names() -> Vec<String> {
    VOC_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// The `VOC2012` folder under `root` (either `root/VOCdevkit/VOC2012` or `root` itself).
pub fn voc_dir(root: &Path) -> Result<PathBuf> {
    let nested = root.join("VOCdevkit").join("VOC2012");
    if nested.is_dir() {
        return Ok(nested);
    }
    if root.join("JPEGImages").is_dir() || root.join("ImageSets").is_dir() {
        return Ok(root.to_path_buf());
    }
    bail!(
        "no PASCAL VOC 2012 data at {}: expected {} or JPEGImages/ and ImageSets/ directly in it",
        root.display(),
        nested.display()
    )
}

/// Loads train/val/test splits as described in the module doc.
pub fn load_voc(cfg: &VocConfig) -> Result<Splits> {
    cfg.validate()?;
    let dir = voc_dir(&cfg.root)?;
    let seg_val = read_id_list(&dir.join("ImageSets/Segmentation/val.txt"))?;
    let seg_set: HashSet<&str> = seg_val.iter().map(String::as_str).collect();
    let keep = |ids: Vec<String>, max: Option<usize>| -> Vec<String> {
        ids.into_iter()
            .filter(|id| !seg_set.contains(id.as_str()))
            .take(max.unwrap_or(usize::MAX))
            .collect()
    };
    let train_ids = keep(
        read_id_list(&dir.join("ImageSets/Main/train.txt"))?,
        cfg.max_train,
    );
    let val_ids = keep(
        read_id_list(&dir.join("ImageSets/Main/val.txt"))?,
        cfg.max_val,
    );
    let test_ids: Vec<String> = seg_val
        .iter()
        .take(cfg.max_test.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let splits = Splits {
        train: load_split(&dir, cfg, "train", &train_ids, false)?,
        val: load_split(&dir, cfg, "val", &val_ids, false)?,
        test: load_split(&dir, cfg, "test", &test_ids, true)?,
    };
    splits.validate()?;
    Ok(splits)
}

/// Reads an `ImageSets` list: one image id per line (the first whitespace-separated token,
/// so per-class lists such as `2008_000008  1` also work), blank lines skipped.
fn read_id_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read VOC split list {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

struct Item {
    image: Vec<f32>,
    labels: Vec<u8>,
    seg: Vec<u8>,
}

fn load_split(
    dir: &Path,
    cfg: &VocConfig,
    split: &str,
    ids: &[String],
    with_masks: bool,
) -> Result<Dataset> {
    let items: Vec<Item> = ids
        .par_iter()
        .map(|id| load_item(dir, cfg, id, with_masks))
        .collect::<Result<_>>()?;
    let s = cfg.size;
    let mut ds = Dataset::empty(&format!("voc-{split}"), voc_class_names(), s, s);
    ds.images.reserve(items.len() * ds.image_len());
    for it in &items {
        ds.push(&it.image, &it.labels, &it.seg);
    }
    Ok(ds)
}

fn load_item(dir: &Path, cfg: &VocConfig, id: &str, with_mask: bool) -> Result<Item> {
    let s = cfg.size;
    let img_path = dir.join("JPEGImages").join(format!("{id}.jpg"));
    let (image, (h, w)) = read_rgb_resized(&img_path, s)?;
    let xml_path = dir.join("Annotations").join(format!("{id}.xml"));
    let labels = parse_annotation(&xml_path, cfg.difficult)?;
    let seg = if with_mask {
        let mask_path = dir.join("SegmentationClass").join(format!("{id}.png"));
        let m = read_mask_of(&mask_path, &img_path, (h, w))?;
        let mut seg = resize_nearest(&m.data, h, w, s, s);
        for v in &mut seg {
            if *v == SEG_BACKGROUND || *v == SEG_IGNORE {
                continue;
            }
            let k = *v as usize - 1;
            ensure!(
                k < VOC_CLASSES.len(),
                "mask file {}: value {v} is not a VOC class index (expected 0, 1..=20 or 255)",
                mask_path.display()
            );
            // A class with pixels but no label (e.g. only difficult objects under
            // `Difficult::Exclude`) is neither a target nor background: ignore its pixels
            // rather than inventing a label the annotation withholds.
            if labels[k] == 0 {
                *v = SEG_IGNORE;
            }
        }
        seg
    } else {
        vec![SEG_IGNORE; s * s]
    };
    Ok(Item { image, labels, seg })
}

/// Multi-hot labels over [`VOC_CLASSES`] from one annotation file. Only the direct `<name>`
/// of each top-level `<object>` counts (person `<part>`s have names such as `head` too).
pub fn parse_annotation(path: &Path, difficult: Difficult) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read VOC annotation {}", path.display()))?;
    let doc = roxmltree::Document::parse(&text)
        .with_context(|| format!("VOC annotation {} is not valid XML", path.display()))?;
    let mut labels = vec![0u8; VOC_CLASSES.len()];
    for obj in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("object"))
    {
        let child_text = |tag: &str| {
            obj.children()
                .find(|n| n.has_tag_name(tag))
                .map(|n| n.text().unwrap_or("").trim().to_string())
        };
        let Some(name) = child_text("name") else {
            bail!(
                "VOC annotation {}: an <object> has no <name>",
                path.display()
            );
        };
        let Some(k) = VOC_CLASSES.iter().position(|&c| c == name) else {
            bail!(
                "VOC annotation {}: unknown object name '{name}' (expected one of the 20 VOC \
                 classes: {})",
                path.display(),
                VOC_CLASSES.join(", ")
            );
        };
        let is_difficult = child_text("difficult").is_some_and(|d| d == "1");
        if !(is_difficult && difficult == Difficult::Exclude) {
            labels[k] = 1;
        }
    }
    Ok(labels)
}

// ---------------------------------------------------------------------------------------------
// Fixture

/// The standard VOC colour palette: index i's colour from the bits of i (as VOC's devkit).
fn voc_palette() -> Vec<u8> {
    let mut pal = vec![0u8; 256 * 3];
    for i in 0..256usize {
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        let mut c = i;
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        pal[3 * i..3 * i + 3].copy_from_slice(&[r, g, b]);
    }
    pal
}

/// One object of the fixture: class name, box `[x0, x1) × [y0, y1)`, difficult flag.
type FixtureObject = (&'static str, usize, usize, usize, usize, bool);

/// Fixture image side (VOC photos are landscape, so wider than high).
pub const FIXTURE_WIDTH: usize = 48;
/// Fixture image height.
pub const FIXTURE_HEIGHT: usize = 40;

/// The fixture's images: (id, objects). Train ids end in 1xx, val-only in 2xx, seg-val in 3xx.
const FIXTURE: [(&str, &[FixtureObject]); 18] = [
    ("2012_000101", &[("cat", 4, 20, 4, 20, false)]),
    ("2012_000102", &[("dog", 10, 40, 6, 30, false)]),
    (
        "2012_000103",
        &[("cat", 2, 14, 2, 14, false), ("dog", 20, 44, 10, 36, false)],
    ),
    ("2012_000104", &[("person", 16, 32, 4, 36, false)]),
    (
        "2012_000105",
        &[
            ("aeroplane", 4, 44, 4, 16, false),
            ("person", 30, 40, 20, 36, true),
        ],
    ),
    ("2012_000106", &[("dog", 0, 24, 16, 40, false)]),
    ("2012_000107", &[("cat", 24, 48, 0, 20, false)]),
    (
        "2012_000108",
        &[
            ("person", 2, 12, 2, 38, false),
            ("cat", 20, 40, 20, 38, false),
        ],
    ),
    ("2012_000201", &[("aeroplane", 8, 40, 8, 24, false)]),
    ("2012_000202", &[("dog", 6, 26, 6, 34, false)]),
    (
        "2012_000203",
        &[
            ("cat", 4, 16, 4, 16, false),
            ("person", 28, 44, 4, 36, false),
        ],
    ),
    ("2012_000204", &[("person", 10, 20, 5, 35, true)]),
    (
        "2012_000301",
        &[("cat", 8, 24, 8, 28, false), ("dog", 30, 44, 20, 36, false)],
    ),
    (
        "2012_000302",
        &[
            ("person", 4, 20, 4, 36, false),
            ("dog", 26, 44, 8, 30, true),
        ],
    ),
    ("2012_000303", &[("aeroplane", 6, 42, 10, 26, false)]),
    (
        "2012_000304",
        &[
            ("cat", 2, 18, 20, 38, false),
            ("person", 24, 40, 2, 38, false),
        ],
    ),
    ("2012_000305", &[("dog", 12, 36, 12, 32, false)]),
    (
        "2012_000306",
        &[
            ("aeroplane", 2, 30, 2, 14, false),
            ("cat", 32, 46, 24, 38, false),
        ],
    ),
];

/// Writes a tiny PASCAL VOC 2012 tree under `dir/VOCdevkit/VOC2012`, for tests and demos of
/// the loader: 8 train, 4 val-only and 6 segmentation-val images of 48×40 pixels with the
/// classes aeroplane, cat, dog and person.
///
/// Every object is an axis-aligned box `[x0, x1) × [y0, y1)`, filled with a flat colour in the
/// JPEG and with its class index in the palette mask, and surrounded in the mask by a
/// one-pixel ring of 255 (VOC's border) where that ring is not covered by a later object.
/// Objects are drawn in list order. Layout, as `class x0..x1 × y0..y1` (`*` = difficult):
/// - train `2012_000101`..`108`: cat 4..20×4..20 | dog 10..40×6..30 |
///   cat 2..14×2..14, dog 20..44×10..36 | person 16..32×4..36 |
///   aeroplane 4..44×4..16, person* 30..40×20..36 | dog 0..24×16..40 |
///   cat 24..48×0..20 | person 2..12×2..38, cat 20..40×20..38;
/// - val `2012_000201`..`204`: aeroplane 8..40×8..24 | dog 6..26×6..34 |
///   cat 4..16×4..16, person 28..44×4..36 | person* 10..20×5..35;
/// - segmentation val `2012_000301`..`306`: cat 8..24×8..28, dog 30..44×20..36 |
///   person 4..20×4..36, dog* 26..44×8..30 | aeroplane 6..42×10..26 |
///   cat 2..18×20..38, person 24..40×2..38 | dog 12..36×12..32 |
///   aeroplane 2..30×2..14, cat 32..46×24..38.
///
/// `Main/val.txt` lists the val-only and the segmentation-val images, as in VOC 2012. The
/// first person of `2012_000104`'s annotation also has a `<part>` named `head`.
pub fn write_voc_fixture(dir: &Path) -> Result<()> {
    let voc = dir.join("VOCdevkit").join("VOC2012");
    for sub in [
        "JPEGImages",
        "Annotations",
        "SegmentationClass",
        "ImageSets/Main",
        "ImageSets/Segmentation",
    ] {
        std::fs::create_dir_all(voc.join(sub))
            .with_context(|| format!("cannot create {}", voc.join(sub).display()))?;
    }
    let (w, h) = (FIXTURE_WIDTH, FIXTURE_HEIGHT);
    let palette = voc_palette();
    let (mut train, mut val, mut seg_val) = (Vec::new(), Vec::new(), Vec::new());
    for (n, (id, objects)) in FIXTURE.iter().enumerate() {
        match &id[8..9] {
            "1" => train.push(*id),
            "2" => val.push(*id),
            _ => seg_val.push(*id),
        }
        // Photo: a flat background with flat-coloured boxes.
        let bg = [(40 + 13 * n) as u8, 90, (200 - 7 * n) as u8];
        let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb(bg));
        let mut mask = vec![SEG_BACKGROUND; w * h];
        for &(name, x0, x1, y0, y1, _) in objects.iter() {
            let k = VOC_CLASSES
                .iter()
                .position(|&c| c == name)
                .expect("fixture class");
            let col = &palette[3 * (k + 1)..3 * (k + 2)];
            // Border ring first, then the box, so a later object overwrites earlier borders.
            for y in y0.saturating_sub(1)..(y1 + 1).min(h) {
                for x in x0.saturating_sub(1)..(x1 + 1).min(w) {
                    mask[y * w + x] = if (y0..y1).contains(&y) && (x0..x1).contains(&x) {
                        (k + 1) as u8
                    } else {
                        SEG_IGNORE
                    };
                }
            }
            for y in y0..y1 {
                for x in x0..x1 {
                    img.put_pixel(x as u32, y as u32, image::Rgb([col[0], col[1], col[2]]));
                }
            }
        }
        let jpg = voc.join("JPEGImages").join(format!("{id}.jpg"));
        img.save(&jpg)
            .with_context(|| format!("cannot write {}", jpg.display()))?;
        let xml = voc.join("Annotations").join(format!("{id}.xml"));
        std::fs::write(&xml, fixture_xml(id, objects, w, h))
            .with_context(|| format!("cannot write {}", xml.display()))?;
        if !id.starts_with("2012_0001") && !id.starts_with("2012_0002") {
            let png_path = voc.join("SegmentationClass").join(format!("{id}.png"));
            write_palette_png(&png_path, &mask, w, h, &palette)?;
        }
    }
    let write_list = |rel: &str, ids: &[&str]| -> Result<()> {
        let p = voc.join(rel);
        std::fs::write(&p, ids.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", p.display()))
    };
    write_list("ImageSets/Main/train.txt", &train)?;
    let main_val: Vec<&str> = val.iter().chain(&seg_val).copied().collect();
    write_list("ImageSets/Main/val.txt", &main_val)?;
    write_list("ImageSets/Segmentation/val.txt", &seg_val)?;
    Ok(())
}

fn fixture_xml(id: &str, objects: &[FixtureObject], w: usize, h: usize) -> String {
    let mut s = format!(
        "<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{id}.jpg</filename>\n\
         \t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\
         \t</size>\n\t<segmented>1</segmented>\n"
    );
    for (i, &(name, x0, x1, y0, y1, difficult)) in objects.iter().enumerate() {
        let part = if id == "2012_000104" && i == 0 {
            "\t\t<part>\n\t\t\t<name>head</name>\n\t\t</part>\n"
        } else {
            ""
        };
        s += &format!(
            "\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\
             \t\t<truncated>0</truncated>\n\t\t<difficult>{}</difficult>\n\
             \t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\
             \t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n{part}\t</object>\n",
            difficult as u8,
            x0 + 1,
            y0 + 1
        );
    }
    s + "</annotation>\n"
}

fn write_palette_png(path: &Path, idx: &[u8], w: usize, h: usize, palette: &[u8]) -> Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w as u32, h as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette.to_vec());
    let mut wr = enc
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    wr.write_image_data(idx)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_matches_known_voc_colours() {
        let p = voc_palette();
        // Background black, aeroplane (1) dark red, cat (8) (64,0,0), person (15)
        // (192,128,128), border (255) (224,224,192): the colours of VOC's colour map.
        assert_eq!(&p[0..3], &[0, 0, 0]);
        assert_eq!(&p[3..6], &[128, 0, 0]);
        assert_eq!(&p[24..27], &[64, 0, 0]);
        assert_eq!(&p[45..48], &[192, 128, 128]);
        assert_eq!(&p[765..768], &[224, 224, 192]);
    }

    #[test]
    fn config_serde_defaults_and_kebab_case() {
        let c: VocConfig =
            serde_json::from_str(r#"{"root": "/x", "difficult": "exclude", "max_test": 3}"#)
                .unwrap();
        assert_eq!(c.root, PathBuf::from("/x"));
        assert_eq!(c.difficult, Difficult::Exclude);
        assert_eq!(c.max_test, Some(3));
        assert_eq!(c.size, 64);
        assert_eq!(c.max_train, None);
        assert!(serde_json::from_str::<VocConfig>(r#"{"sise": 3}"#).is_err());
        assert!(serde_json::from_str::<VocConfig>(r#"{"difficult": "Exclude"}"#).is_err());
        let e = load_voc(&VocConfig {
            size: 2,
            ..VocConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("size 2"), "{e}");
    }

    #[test]
    fn annotation_parsing_ignores_parts_and_handles_difficult() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.xml");
        std::fs::write(
            &p,
            "<annotation><object><name> person </name><difficult>1</difficult>\
             <part><name>head</name></part></object>\
             <object><name>bottle</name></object></annotation>",
        )
        .unwrap();
        let inc = parse_annotation(&p, Difficult::Include).unwrap();
        let exc = parse_annotation(&p, Difficult::Exclude).unwrap();
        // person = 14, bottle = 4.
        let ones = |v: &[u8]| -> Vec<usize> { (0..20).filter(|&k| v[k] == 1).collect() };
        assert_eq!(ones(&inc), vec![4, 14]);
        assert_eq!(ones(&exc), vec![4]);
    }
}
