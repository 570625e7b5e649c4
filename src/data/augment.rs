//! Training-time image augmentation for CHW images.
//!
//! The padding value is 0 (black in [0,1] RGB space, before any normalisation). All the
//! synthetic shape classes are left-right symmetric, so a horizontal flip never changes a label.

use super::image_io::{resize_bilinear, resize_nearest};
use rand::Rng;

/// One sampled crop-and-flip transform, so the same geometry can be applied to an image and
/// to its segmentation mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    /// Zero padding added on every side before cropping.
    pub pad: usize,
    /// Crop offset into the padded image, each in `0..=2*pad`.
    pub dy: usize,
    /// Horizontal offset of the crop in the padded image.
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

/// A crop rectangle in pixel coordinates of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// First row of the crop.
    pub top: usize,
    /// First column of the crop.
    pub left: usize,
    /// Crop height.
    pub height: usize,
    /// Crop width.
    pub width: usize,
}

impl CropBox {
    /// Samples a crop as torchvision's `RandomResizedCrop.get_params`: an area fraction
    /// uniform in `scale` and an aspect ratio (width/height) log-uniform in `ratio`, up to 10
    /// attempts until the rounded box fits in `h×w`, then a uniform position; if no attempt
    /// fits, the largest central crop whose ratio is clamped into `ratio`.
    pub fn sample_resized(
        h: usize,
        w: usize,
        scale: (f32, f32),
        ratio: (f32, f32),
        rng: &mut impl Rng,
    ) -> CropBox {
        assert!(h > 0 && w > 0, "cannot crop an empty {h}x{w} image");
        assert!(
            scale.0 > 0.0 && scale.0 <= scale.1,
            "scale range {scale:?} must be positive and ordered"
        );
        assert!(
            ratio.0 > 0.0 && ratio.0 <= ratio.1,
            "ratio range {ratio:?} must be positive and ordered"
        );
        let area = (h * w) as f32;
        let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
        for _ in 0..10 {
            let target = area * sample_range(scale.0, scale.1, rng);
            let aspect = sample_range(lr0, lr1, rng).exp();
            let cw = (target * aspect).sqrt().round() as usize;
            let ch = (target / aspect).sqrt().round() as usize;
            if cw > 0 && cw <= w && ch > 0 && ch <= h {
                let top = rng.random_range(0..=h - ch);
                let left = rng.random_range(0..=w - cw);
                return CropBox {
                    top,
                    left,
                    height: ch,
                    width: cw,
                };
            }
        }
        let in_ratio = w as f32 / h as f32;
        let (ch, cw) = if in_ratio < ratio.0 {
            (((w as f32 / ratio.0).round() as usize).clamp(1, h), w)
        } else if in_ratio > ratio.1 {
            (h, ((h as f32 * ratio.1).round() as usize).clamp(1, w))
        } else {
            (h, w)
        };
        CropBox {
            top: (h - ch) / 2,
            left: (w - cw) / 2,
            height: ch,
            width: cw,
        }
    }

    /// The box cut out of a `channels`×h×w planar buffer.
    pub fn cut<T: Copy>(&self, data: &[T], channels: usize, h: usize, w: usize) -> Vec<T> {
        assert_eq!(
            data.len(),
            channels * h * w,
            "buffer of {} values is not {channels}x{h}x{w}",
            data.len()
        );
        assert!(
            self.top + self.height <= h && self.left + self.width <= w,
            "crop {self:?} does not fit in {h}x{w}"
        );
        let mut out = Vec::with_capacity(channels * self.height * self.width);
        for c in 0..channels {
            for y in self.top..self.top + self.height {
                let row = c * h * w + y * w;
                out.extend_from_slice(&data[row + self.left..row + self.left + self.width]);
            }
        }
        out
    }

    /// Cuts the box out of a CHW image and its optional h×w segmentation map and resizes both
    /// back to h×w (bilinear for the image, nearest for the map, so labels are never blended).
    pub fn apply_resized(
        &self,
        img: &[f32],
        seg: Option<&[u8]>,
        h: usize,
        w: usize,
    ) -> (Vec<f32>, Option<Vec<u8>>) {
        let channels = img.len() / (h * w).max(1);
        let cut = self.cut(img, channels, h, w);
        let out = resize_bilinear(&cut, self.height, self.width, h, w);
        let seg = seg.map(|s| {
            let cut = self.cut(s, 1, h, w);
            resize_nearest(&cut, self.height, self.width, h, w)
        });
        (out, seg)
    }
}

fn sample_range(lo: f32, hi: f32, rng: &mut impl Rng) -> f32 {
    if lo < hi {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// torchvision's `RandomResizedCrop` on a CHW image `img` of `h×w` and its optional
/// segmentation map: a crop sampled by [`CropBox::sample_resized`] is resized back to `h×w`
/// (bilinear for the image, nearest for the map). Returns the new image and map.
pub fn random_resized_crop(
    img: &[f32],
    seg: Option<&[u8]>,
    h: usize,
    w: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> (Vec<f32>, Option<Vec<u8>>) {
    CropBox::sample_resized(h, w, scale, ratio, rng).apply_resized(img, seg, h, w)
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

    #[test]
    fn resized_crop_of_whole_square_image_is_identity() {
        let (h, w) = (6, 6);
        let img = ramp(h, w);
        let seg: Vec<u8> = (0..36).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Area fraction 1 and ratio 1 on a square image can only give the whole image.
        let (out, s) =
            random_resized_crop(&img, Some(&seg[..]), h, w, (1.0, 1.0), (1.0, 1.0), &mut rng);
        assert_eq!(out, img);
        assert_eq!(s.unwrap(), seg);
    }

    #[test]
    fn resized_crop_falls_back_to_central_crop() {
        // 4x8 image, whole-area crops of ratio 1 need a 6x6 box (sqrt(32) rounded), which
        // never fits: the fallback is the central 4x4 square at left (8-4)/2 = 2.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let b = CropBox::sample_resized(4, 8, (1.0, 1.0), (1.0, 1.0), &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 0,
                left: 2,
                height: 4,
                width: 4
            }
        );
        // Tall image, ratio range above its ratio 0.5: full width, height 4/0.75 = 5.33 -> 5.
        let b = CropBox::sample_resized(8, 4, (1.0, 1.0), (0.75, 1.5), &mut rng);
        assert_eq!((b.top, b.left, b.height, b.width), (1, 0, 5, 4));
    }

    #[test]
    fn resized_crop_samples_stay_inside_and_follow_scale() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (h, w) = (40, 60);
        let mut fracs = Vec::new();
        for _ in 0..500 {
            let b = CropBox::sample_resized(h, w, (0.2, 0.6), (0.75, 4.0 / 3.0), &mut rng);
            assert!(b.top + b.height <= h && b.left + b.width <= w, "{b:?}");
            assert!(b.height > 0 && b.width > 0);
            let r = b.width as f32 / b.height as f32;
            // Rounding each side to integers moves the ratio a little outside the range.
            assert!((0.6..1.6).contains(&r), "ratio {r} of {b:?}");
            fracs.push((b.height * b.width) as f32 / (h * w) as f32);
        }
        let mean = fracs.iter().sum::<f32>() / fracs.len() as f32;
        assert!((mean - 0.4).abs() < 0.03, "mean area fraction {mean}");
        assert!(fracs.iter().all(|&f| (0.17..0.65).contains(&f)));
    }

    #[test]
    fn resized_crop_keeps_constants_and_label_values() {
        let (h, w) = (9, 7);
        let img = vec![0.625f32; 3 * h * w];
        let seg: Vec<u8> = (0..h * w)
            .map(|p| if p % 3 == 0 { 255 } else { 2 })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..20 {
            let (out, s) =
                random_resized_crop(&img, Some(&seg[..]), h, w, (0.1, 1.0), (0.5, 2.0), &mut rng);
            assert_eq!(out.len(), img.len());
            assert!(out.iter().all(|v| (v - 0.625).abs() < 1e-6));
            assert!(s.unwrap().iter().all(|&v| v == 255 || v == 2));
        }
        // An explicit 2x2 box upsampled to 4x4 gives the hand-computed bilinear values.
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let b = CropBox {
            top: 1,
            left: 1,
            height: 2,
            width: 2,
        };
        // Box values [[5,6],[9,10]]; row 1 of the output blends rows 0.75/0.25 and columns
        // at source x = 0.25: (5 + 0.25) * 0.75 + (9 + 0.25) * 0.25 = 6.25.
        let (out, _) = b.apply_resized(&src, None, 4, 4);
        assert!((out[5] - 6.25).abs() < 1e-6, "{out:?}");
        assert_eq!(out[0], 5.0);
        assert_eq!(out[15], 10.0);
    }
}
