//! Training-time image augmentation for CHW images.
//!
//! The padding value is 0 (black in [0,1] RGB space, before any normalisation). All the
//! synthetic shape classes are left-right symmetric, so a horizontal flip never changes a label.

use rand::Rng;

/// One sampled crop-and-flip transform, so the same geometry can be applied to an image and
/// to its segmentation mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    /// Zero padding added on every side before cropping.
    pub pad: usize,
    /// Crop offset into the padded image, each in `0..=2*pad`.
    pub dy: usize,
    pub dx: usize,
    /// Whether the crop is then flipped left-right.
    pub flip: bool,
}

impl CropFlip {
    /// Samples offsets uniformly in `0..=2*pad` and a flip with probability 1/2.
    pub fn sample(pad: usize, rng: &mut impl Rng) -> CropFlip {
        let dy = rng.random_range(0..=2 * pad);
        let dx = rng.random_range(0..=2 * pad);
        let flip = rng.random_bool(0.5);
        CropFlip { pad, dy, dx, flip }
    }

    /// The identity transform.
    pub fn identity() -> CropFlip {
        CropFlip {
            pad: 0,
            dy: 0,
            dx: 0,
            flip: false,
        }
    }

    /// Source coordinate of output pixel (y, x), or None where it falls in the padding.
    #[inline]
    fn source(&self, y: usize, x: usize, h: usize, w: usize) -> Option<(usize, usize)> {
        let x = if self.flip { w - 1 - x } else { x };
        let sy = (y + self.dy).checked_sub(self.pad)?;
        let sx = (x + self.dx).checked_sub(self.pad)?;
        (sy < h && sx < w).then_some((sy, sx))
    }

    /// Applies the transform to a `channels`×h×w planar buffer; padding becomes `fill`.
    pub fn apply<T: Copy>(
        &self,
        data: &[T],
        channels: usize,
        h: usize,
        w: usize,
        fill: T,
    ) -> Vec<T> {
        assert_eq!(
            data.len(),
            channels * h * w,
            "buffer of {} values is not {channels}x{h}x{w}",
            data.len()
        );
        let mut out = vec![fill; data.len()];
        for c in 0..channels {
            let src = &data[c * h * w..(c + 1) * h * w];
            let dst = &mut out[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    if let Some((sy, sx)) = self.source(y, x, h, w) {
                        dst[y * w + x] = src[sy * w + sx];
                    }
                }
            }
        }
        out
    }

    /// Applies the transform to a CHW RGB image, padding with 0.
    pub fn apply_image(&self, img: &[f32], h: usize, w: usize) -> Vec<f32> {
        self.apply(img, 3, h, w, 0.0)
    }

    /// Applies the transform to an h×w segmentation map, padding with `fill`
    /// (use 0 for background or 255 to ignore the padded border).
    pub fn apply_seg(&self, seg: &[u8], h: usize, w: usize, fill: u8) -> Vec<u8> {
        self.apply(seg, 1, h, w, fill)
    }
}

/// Random crop after zero padding by `pad` pixels, then random horizontal flip, of one CHW
/// (3 channel) image; returns a new Vec of the same shape. The padding value is 0.
pub fn random_crop_flip(
    img: &[f32],
    h: usize,
    w: usize,
    pad: usize,
    rng: &mut impl Rng,
) -> Vec<f32> {
    CropFlip::sample(pad, rng).apply_image(img, h, w)
}

/// Horizontal flip of a CHW image (any number of channels).
pub fn hflip(img: &[f32], h: usize, w: usize) -> Vec<f32> {
    assert!(
        h * w > 0 && img.len().is_multiple_of(h * w),
        "buffer of {} values is not a CHW image of {h}x{w}",
        img.len()
    );
    let mut out = Vec::with_capacity(img.len());
    for row in img.chunks_exact(w) {
        out.extend(row.iter().rev());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn ramp(h: usize, w: usize) -> Vec<f32> {
        (0..3 * h * w)
            .map(|v| (v as f32 + 1.0) / (3 * h * w) as f32)
            .collect()
    }

    #[test]
    fn hflip_twice_is_identity_and_flips_rows() {
        let (h, w) = (4, 5);
        let img = ramp(h, w);
        let f = hflip(&img, h, w);
        assert_ne!(f, img);
        assert_eq!(f[0], img[w - 1]);
        assert_eq!(f[2 * h * w + w + 1], img[2 * h * w + w + w - 2]);
        assert_eq!(hflip(&f, h, w), img);
    }

    #[test]
    fn crop_with_zero_pad_is_identity_or_flip() {
        let (h, w) = (6, 7);
        let img = ramp(h, w);
        let flipped = hflip(&img, h, w);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut n_id, mut n_flip) = (0, 0);
        for _ in 0..64 {
            let out = random_crop_flip(&img, h, w, 0, &mut rng);
            if out == img {
                n_id += 1;
            } else if out == flipped {
                n_flip += 1;
            } else {
                panic!("pad-0 crop is neither identity nor flip");
            }
        }
        assert!(
            n_id > 10 && n_flip > 10,
            "flip rate off: {n_id} vs {n_flip}"
        );
    }

    #[test]
    fn crop_keeps_shape_and_content_shifts() {
        let (h, w, pad) = (8, 8, 2);
        let img = ramp(h, w);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut saw_padding = false;
        for _ in 0..50 {
            let out = random_crop_flip(&img, h, w, pad, &mut rng);
            assert_eq!(out.len(), img.len());
            saw_padding |= out.contains(&0.0);
            // Every non-padding value is a value of the same channel of the input.
            for c in 0..3 {
                let src = &img[c * h * w..(c + 1) * h * w];
                for &v in &out[c * h * w..(c + 1) * h * w] {
                    assert!(v == 0.0 || src.contains(&v));
                }
            }
        }
        assert!(saw_padding, "pad 2 never showed padding");
    }

    #[test]
    fn explicit_shift_moves_pixels() {
        let (h, w) = (3, 3);
        let img = ramp(h, w);
        // Offset (0,0) into a 1-padded image shifts content down-right by one pixel.
        let t = CropFlip {
            pad: 1,
            dy: 0,
            dx: 0,
            flip: false,
        };
        let out = t.apply_image(&img, h, w);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[w + 1], img[0]);
        assert_eq!(out[2 * w + 2], img[w + 1]);
        let seg: Vec<u8> = (1..=9).collect();
        let s = t.apply_seg(&seg, h, w, 255);
        assert_eq!(s, vec![255, 255, 255, 255, 1, 2, 255, 4, 5]);
        assert_eq!(CropFlip::identity().apply_image(&img, h, w), img);
    }
}
