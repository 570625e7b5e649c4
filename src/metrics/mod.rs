//! Pure-Rust evaluation metrics (no tensors, no external crates).
//!
//! * [`classification`]: VOC-style and sklearn-style average precision, the two mAP
//!   variants (per class and per sample) and sample-averaged F1.
//! * [`localization`]: how well an attribution map finds the object: pixel ROC-AUC
//!   against a segmentation mask and the pointing game.
//! * [`similarity`]: how close two attribution maps are (cosine, normalised L2).
//! * [`resample`]: bilinear resizing with PyTorch semantics and min-max normalisation.
//! * [`aggregate`]: mean and standard deviation over seeds.
//!
//! Every function that takes several slices checks their lengths, and NaN inputs are
//! rejected with a [`MetricError`] instead of producing a meaningless number. Where a
//! metric is legitimately undefined (e.g. AP of a class with no positives) the result
//! is `None`.

pub mod aggregate;
mod check;
pub mod classification;
mod error;
pub mod localization;
pub mod resample;
pub mod similarity;

pub use aggregate::mean_std;
pub use classification::{
    average_precision_step, average_precision_voc, f1_samples, map_per_class, map_per_sample,
};
pub use error::{MetricError, MetricResult};
pub use localization::{argmax_2d, argmax_2d_masked, pointing_hit, roc_auc};
pub use resample::{min_max_normalize, upsample_bilinear};
pub use similarity::{cosine_similarity, normalized_l2};
