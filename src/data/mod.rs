//! In-memory multi-label image datasets with per-pixel class masks.
//!
//! [`Dataset`] is the common currency between data sources (the built-in procedural
//! [`synthetic`] shapes set, or an external set such as VOC), training and the attribution
//! metrics: images are stored CHW in `[0,1]`, labels are multi-hot, and `seg` holds an exact
//! per-pixel class map so that attribution maps can be compared with the true object pixels.

pub mod augment;
pub mod fashion;
pub mod folder;
pub mod image_io;
pub mod source;
pub mod synthetic;
pub mod voc;

use anyhow::{Result, bail, ensure};

/// Segmentation value marking pixels to ignore (e.g. VOC object borders).
pub const SEG_IGNORE: u8 = 255;
/// Segmentation value for background pixels.
pub const SEG_BACKGROUND: u8 = 0;

/// An in-memory multi-label image dataset with per-pixel class masks.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Dataset name (shown in reports and errors).
    pub name: String,
    /// Class names, in label order.
    pub class_names: Vec<String>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// n*3*h*w floats, each image CHW, RGB in [0,1].
    pub images: Vec<f32>,
    /// n*num_classes multi-hot labels (0/1).
    pub labels: Vec<u8>,
    /// n*h*w segmentation: 0 background, k+1 = pixel of an object of class k,
    /// 255 = ignore (VOC border; unused by synthetic).
    pub seg: Vec<u8>,
}

impl Dataset {
    /// A hash of the split's content (geometry, classes, images, labels, masks): stages trained
    /// on it are reused only while it is unchanged, whatever produced it.
    pub fn fingerprint(&self) -> String {
        let mut h = crate::util::Fnv1a::default();
        h.write(self.name.as_bytes());
        h.write(self.class_names.join("\n").as_bytes());
        h.write(&(self.height as u64).to_le_bytes());
        h.write(&(self.width as u64).to_le_bytes());
        for v in &self.images {
            h.write(&v.to_le_bytes());
        }
        h.write(&self.labels);
        h.write(&self.seg);
        format!("{:016x}", h.finish())
    }

    /// An empty dataset with the given geometry and classes.
    pub fn empty(name: &str, class_names: Vec<String>, height: usize, width: usize) -> Dataset {
        Dataset {
            name: name.to_string(),
            class_names,
            height,
            width,
            images: Vec::new(),
            labels: Vec::new(),
            seg: Vec::new(),
        }
    }

    /// Appends one image (CHW, 3×h×w), its multi-hot labels and its h×w segmentation.
    /// Panics on a wrong length, which would silently shift every later image.
    pub fn push(&mut self, image: &[f32], labels: &[u8], seg: &[u8]) {
        assert_eq!(image.len(), self.image_len(), "image length");
        assert_eq!(labels.len(), self.num_classes(), "label length");
        assert_eq!(seg.len(), self.pixels(), "segmentation length");
        self.images.extend_from_slice(image);
        self.labels.extend_from_slice(labels);
        self.seg.extend_from_slice(seg);
    }

    /// Number of pixels of one image (h*w).
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Number of floats of one image (3*h*w).
    pub fn image_len(&self) -> usize {
        3 * self.pixels()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        let per = self.image_len();
        if per == 0 {
            // Degenerate geometry: fall back on the labels.
            return self
                .labels
                .len()
                .checked_div(self.num_classes())
                .unwrap_or(0);
        }
        self.images.len() / per
    }

    /// Whether the dataset has no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image `i`, CHW, RGB in [0,1].
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.image_len();
        &self.images[i * per..(i + 1) * per]
    }

    /// Multi-hot labels of image `i` (length `num_classes`).
    pub fn labels_of(&self, i: usize) -> &[u8] {
        let c = self.num_classes();
        &self.labels[i * c..(i + 1) * c]
    }

    /// Indices of the classes labelled present in image `i`.
    pub fn classes_of(&self, i: usize) -> Vec<usize> {
        self.labels_of(i)
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l != 0)
            .map(|(k, _)| k)
            .collect()
    }

    /// Segmentation map of image `i` (length h*w, row-major).
    pub fn seg_of(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.seg[i * p..(i + 1) * p]
    }

    /// Binary mask of class k's pixels in image i.
    pub fn class_mask(&self, i: usize, k: usize) -> Vec<bool> {
        let v = (k + 1) as u8;
        self.seg_of(i).iter().map(|&s| s == v).collect()
    }

    /// Binary mask of the pixels of any object (any class) in image i.
    pub fn object_mask(&self, i: usize) -> Vec<bool> {
        self.seg_of(i)
            .iter()
            .map(|&s| s != SEG_BACKGROUND && s != SEG_IGNORE)
            .collect()
    }

    /// Pixels marked 255.
    pub fn ignore_mask(&self, i: usize) -> Vec<bool> {
        self.seg_of(i).iter().map(|&s| s == SEG_IGNORE).collect()
    }

    /// A new dataset holding the images `idx` in that order (indices may repeat).
    /// Panics if an index is out of range.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let n = self.len();
        let mut out = Dataset::empty(
            &self.name,
            self.class_names.clone(),
            self.height,
            self.width,
        );
        out.images.reserve(idx.len() * self.image_len());
        out.labels.reserve(idx.len() * self.num_classes());
        out.seg.reserve(idx.len() * self.pixels());
        for &i in idx {
            assert!(
                i < n,
                "subset index {i} out of range for dataset '{}' of {n} images",
                self.name
            );
            out.images.extend_from_slice(self.image(i));
            out.labels.extend_from_slice(self.labels_of(i));
            out.seg.extend_from_slice(self.seg_of(i));
        }
        out
    }

    /// Number of images in which each class is labelled present.
    pub fn class_counts(&self) -> Vec<usize> {
        let c = self.num_classes();
        let mut counts = vec![0usize; c];
        for row in self.labels.chunks_exact(c.max(1)) {
            for (k, &l) in row.iter().enumerate() {
                if l != 0 {
                    counts[k] += 1;
                }
            }
        }
        counts
    }

    /// Per-channel mean and (population) std over all pixels (for input normalisation).
    /// An empty dataset gives mean 0 and std 1.
    pub fn channel_mean_std(&self) -> ([f32; 3], [f32; 3]) {
        let p = self.pixels();
        let n = self.len();
        if n == 0 || p == 0 {
            return ([0.0; 3], [1.0; 3]);
        }
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        for img in self.images.chunks_exact(3 * p) {
            for c in 0..3 {
                // Accumulate per image in f64 to keep precision on large sets.
                let (mut s, mut s2) = (0f64, 0f64);
                for &v in &img[c * p..(c + 1) * p] {
                    let v = v as f64;
                    s += v;
                    s2 += v * v;
                }
                sum[c] += s;
                sq[c] += s2;
            }
        }
        let count = (n * p) as f64;
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for c in 0..3 {
            let m = sum[c] / count;
            let var = (sq[c] / count - m * m).max(0.0);
            mean[c] = m as f32;
            std[c] = var.sqrt() as f32;
        }
        (mean, std)
    }

    /// Checks internal consistency: buffer lengths, pixel range, label values, seg values,
    /// and that every class with pixels in `seg` is labelled present.
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        let c = self.num_classes();
        ensure!(c > 0, "dataset '{name}' has no classes");
        ensure!(
            c < SEG_IGNORE as usize,
            "dataset '{name}' has {c} classes; the u8 segmentation format allows at most 254"
        );
        ensure!(
            self.height > 0 && self.width > 0,
            "dataset '{name}' has an empty image size {}x{}",
            self.height,
            self.width
        );
        let per = self.image_len();
        ensure!(
            self.images.len().is_multiple_of(per),
            "dataset '{name}': images buffer has {} floats, not a multiple of 3*{}*{} = {per}",
            self.images.len(),
            self.height,
            self.width
        );
        let n = self.len();
        ensure!(
            self.labels.len() == n * c,
            "dataset '{name}': {n} images need {} label entries ({c} classes each), found {}",
            n * c,
            self.labels.len()
        );
        ensure!(
            self.seg.len() == n * self.pixels(),
            "dataset '{name}': {n} images need {} segmentation entries, found {}",
            n * self.pixels(),
            self.seg.len()
        );
        for i in 0..n {
            let img = self.image(i);
            if let Some(pos) = img
                .iter()
                .position(|v| !v.is_finite() || *v < -1e-6 || *v > 1.0 + 1e-6)
            {
                bail!(
                    "dataset '{name}', image {i}: pixel value {} at offset {pos} is outside [0,1]",
                    img[pos]
                );
            }
            let labels = self.labels_of(i);
            if let Some(k) = labels.iter().position(|&l| l > 1) {
                bail!(
                    "dataset '{name}', image {i}: label of class {k} is {}, expected 0 or 1",
                    labels[k]
                );
            }
            for &s in self.seg_of(i) {
                if s == SEG_BACKGROUND || s == SEG_IGNORE {
                    continue;
                }
                let k = s as usize - 1;
                if k >= c {
                    bail!(
                        "dataset '{name}', image {i}: segmentation value {s} is not a class \
                         (expected 0, 1..={c} or 255)"
                    );
                }
                if labels[k] == 0 {
                    bail!(
                        "dataset '{name}', image {i}: class {k} ('{}') has pixels in the \
                         segmentation but is not labelled present",
                        self.class_names[k]
                    );
                }
            }
        }
        Ok(())
    }
}

/// Train/validation/test splits.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training images.
    pub train: Dataset,
    /// Validation images.
    pub val: Dataset,
    /// Test images (attribution evaluation).
    pub test: Dataset,
}

impl Splits {
    /// Validates all three splits.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.val.validate()?;
        self.test.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // 2 images, 2x2, 2 classes.
        let mut d = Dataset::empty("tiny", vec!["a".into(), "b".into()], 2, 2);
        d.images = (0..24).map(|v| v as f32 / 24.0).collect();
        d.labels = vec![1, 0, 1, 1];
        d.seg = vec![0, 1, 1, 255, 2, 0, 1, 0];
        d
    }

    #[test]
    fn accessors_and_masks() {
        let d = tiny();
        d.validate().unwrap();
        assert_eq!(d.len(), 2);
        assert!(!d.is_empty());
        assert_eq!(d.num_classes(), 2);
        assert_eq!(d.image(1)[0], 12.0 / 24.0);
        assert_eq!(d.labels_of(1), &[1, 1]);
        assert_eq!(d.classes_of(0), vec![0]);
        assert_eq!(d.class_mask(0, 0), vec![false, true, true, false]);
        assert_eq!(d.class_mask(1, 1), vec![true, false, false, false]);
        assert_eq!(d.ignore_mask(0), vec![false, false, false, true]);
        assert_eq!(d.object_mask(1), vec![true, false, true, false]);
        assert_eq!(d.class_counts(), vec![2, 1]);
    }

    #[test]
    fn subset_reorders_and_repeats() {
        let d = tiny();
        let s = d.subset(&[1, 0, 1]);
        s.validate().unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.image(0), d.image(1));
        assert_eq!(s.image(1), d.image(0));
        assert_eq!(s.seg_of(2), d.seg_of(1));
        assert_eq!(s.labels_of(1), d.labels_of(0));
        assert!(d.subset(&[]).is_empty());
    }

    #[test]
    fn mean_std_matches_direct_computation() {
        let d = tiny();
        let (m, s) = d.channel_mean_std();
        for c in 0..3 {
            let vals: Vec<f64> = (0..2)
                .flat_map(|i| d.image(i)[c * 4..(c + 1) * 4].to_vec())
                .map(|v| v as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / 8.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0;
            assert!((m[c] as f64 - mean).abs() < 1e-6);
            assert!((s[c] as f64 - var.sqrt()).abs() < 1e-6);
        }
    }

    #[test]
    fn validate_catches_problems() {
        let mut d = tiny();
        d.labels[2] = 0; // image 1 has class-0 pixels but no class-0 label
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("tiny") && e.contains("not labelled"), "{e}");

        let mut d = tiny();
        d.seg[0] = 7;
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("segmentation value 7"), "{e}");

        let mut d = tiny();
        d.labels.pop();
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("label entries")
        );

        let mut d = tiny();
        d.seg.push(0);
        assert!(d.validate().is_err());

        let mut d = tiny();
        d.images.push(0.0);
        assert!(d.validate().unwrap_err().to_string().contains("multiple"));

        let mut d = tiny();
        d.images[5] = 1.5;
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("outside [0,1]")
        );

        let mut d = tiny();
        d.labels[0] = 2;
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("expected 0 or 1")
        );
    }
}
