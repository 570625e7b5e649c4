//! Turning dataset images into normalised, optionally augmented batch tensors.

use crate::data::Dataset;
use crate::data::augment::{hflip, random_crop_flip, random_resized_crop};
use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Per-channel input normalisation `(x - mean) / std`, saved with every run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Normalization {
    /// Channel means (RGB).
    pub mean: [f32; 3],
    /// Channel standard deviations (RGB).
    pub std: [f32; 3],
}

impl Normalization {
    /// Statistics of a (training) dataset.
    pub fn of(data: &Dataset) -> Self {
        let (mean, std) = data.channel_mean_std();
        Normalization {
            mean,
            std: std.map(|s| s.max(1e-3)),
        }
    }

    /// Normalises one CHW image in place.
    pub fn apply(&self, img: &mut [f32]) {
        let plane = img.len() / 3;
        for (c, chunk) in img.chunks_mut(plane).enumerate() {
            for v in chunk {
                *v = (*v - self.mean[c]) / self.std[c];
            }
        }
    }
}

/// A training-time augmentation of one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Augment {
    /// Random crop of the image zero-padded by `pad` pixels, and a random horizontal flip.
    CropFlip {
        /// Padding in pixels.
        pad: usize,
    },
    /// torchvision's RandomResizedCrop back to the image size (area fraction in `scale`,
    /// aspect ratio 3/4..4/3), and a random horizontal flip.
    ResizedCrop {
        /// Area fraction range.
        scale: (f32, f32),
    },
}

impl Augment {
    /// Applies the augmentation to one CHW image of `h`×`w`.
    pub fn apply(&self, img: &[f32], h: usize, w: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        match *self {
            Augment::CropFlip { pad } => random_crop_flip(img, h, w, pad, rng),
            Augment::ResizedCrop { scale } => {
                let (cropped, _) =
                    random_resized_crop(img, None, h, w, scale, (0.75, 4.0 / 3.0), rng);
                if rng.random_bool(0.5) {
                    hflip(&cropped, h, w)
                } else {
                    cropped
                }
            }
        }
    }
}

/// Builds (x: N×3×H×W normalised, y: N×K multi-hot) for the given image indices, each image
/// augmented by `augment` when given.
pub fn make_batch(
    data: &Dataset,
    idx: &[usize],
    norm: &Normalization,
    augment: Option<Augment>,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> (Tensor<4>, Tensor<2>) {
    let (h, w, k) = (data.height, data.width, data.num_classes());
    let mut xs = Vec::with_capacity(idx.len() * 3 * h * w);
    let mut ys = Vec::with_capacity(idx.len() * k);
    for &i in idx {
        let mut img = match augment {
            Some(a) => a.apply(data.image(i), h, w, rng),
            None => data.image(i).to_vec(),
        };
        norm.apply(&mut img);
        xs.extend_from_slice(&img);
        ys.extend(data.labels_of(i).iter().map(|&l| l as f32));
    }
    let x = Tensor::from_data(TensorData::new(xs, [idx.len(), 3, h, w]), device);
    let y = Tensor::from_data(TensorData::new(ys, [idx.len(), k]), device);
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(h: usize, w: usize) -> Vec<f32> {
        (0..3 * h * w)
            .map(|v| v as f32 / (3 * h * w) as f32)
            .collect()
    }

    #[test]
    fn a_full_area_resized_crop_is_the_image_or_its_mirror() {
        // Area fraction 1 on a square image leaves only the whole image (torchvision falls back
        // to it when no sampled aspect ratio fits), so only the flip remains random.
        let (h, w) = (6, 6);
        let img = ramp(h, w);
        let mirror = hflip(&img, h, w);
        let aug = Augment::ResizedCrop { scale: (1.0, 1.0) };
        let mut seen = (0, 0);
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let out = aug.apply(&img, h, w, &mut rng);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
            if close(&out, &img) {
                seen.0 += 1;
            } else if close(&out, &mirror) {
                seen.1 += 1;
            } else {
                panic!("seed {seed}: neither the image nor its mirror");
            }
        }
        assert!(seen.0 > 5 && seen.1 > 5, "{seen:?}");
    }

    #[test]
    fn small_resized_crops_magnify_a_part_of_the_image() {
        // A left half black, right half white image: a crop of at most 10% of the area lies
        // (almost) within one half, so most pixels of the output are near 0 or near 1.
        let (h, w) = (20, 20);
        let mut img = vec![0f32; 3 * h * w];
        for c in 0..3 {
            for y in 0..h {
                for x in w / 2..w {
                    img[c * h * w + y * w + x] = 1.0;
                }
            }
        }
        let aug = Augment::ResizedCrop { scale: (0.05, 0.1) };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let out = aug.apply(&img, h, w, &mut rng);
        let mid = out.iter().filter(|&&v| v > 0.1 && v < 0.9).count();
        // the crop's columns are at least ~3 source pixels wide, so the edge, if inside,
        // blurs into at most a few output columns out of 20
        assert!(mid <= 3 * h * 8, "{mid} intermediate values");
        assert_ne!(out, img);
    }
}
