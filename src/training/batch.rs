//! Turning dataset images into normalised, optionally augmented batch tensors.

use crate::data::Dataset;
use crate::data::augment::random_crop_flip;
use burn::prelude::*;
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

/// Builds (x: N×3×H×W normalised, y: N×K multi-hot) for the given image indices; with
/// `augment = Some(pad)` each image gets a random padded crop and horizontal flip.
pub fn make_batch(
    data: &Dataset,
    idx: &[usize],
    norm: &Normalization,
    augment: Option<usize>,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> (Tensor<4>, Tensor<2>) {
    let (h, w, k) = (data.height, data.width, data.num_classes());
    let mut xs = Vec::with_capacity(idx.len() * 3 * h * w);
    let mut ys = Vec::with_capacity(idx.len() * k);
    for &i in idx {
        let mut img = match augment {
            Some(pad) => random_crop_flip(data.image(i), h, w, pad, rng),
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
