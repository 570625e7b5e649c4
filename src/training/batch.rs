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
