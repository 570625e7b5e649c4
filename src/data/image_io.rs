//! Image files for external data sources: RGB photos (JPEG, PNG, whatever the `image` crate
//! is built with) decoded to CHW `f32` in `[0,1]`, and class-index PNG masks (palette or 8-bit
//! grayscale) read as raw indices.
//!
//! [`Dataset`](super::Dataset) holds one fixed size for the whole set, so every image is
//! resized to `size×size` without keeping its aspect ratio: objects get stretched, but no
//! pixel is cropped away, so no annotated object is lost and the mask stays aligned.
//!
//! Resampling conventions (pixel centres at half-integer coordinates, as PyTorch's
//! `align_corners=False` and PIL):
//! - [`resize_bilinear`]: triangle filter; when enlarging this is exactly PyTorch's bilinear
//!   interpolation, when shrinking the filter widens with the scale (PIL's and torchvision's
//!   `antialias=True`) so that fine texture does not alias into the small image.
//! - [`resize_nearest`]: output pixel centre mapped back to the source pixel that contains it
//!   (PyTorch's `nearest-exact`), so labels are copied, never blended.

use anyhow::{Context, Result, bail, ensure};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// The largest side of an image faithful decodes, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory the decoder may allocate for one image (a 40-megapixel RGB photo).
pub const MAX_DECODE_BYTES: u64 = 120 << 20;

/// Decoder limits: a small file that claims a huge image (a decompression bomb) is refused
/// before its pixels are allocated.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Fails, saying what is wrong, unless `path` is an existing regular file: a folder, a FIFO
/// or a device is not reported as missing.
pub fn check_regular_file(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} {} does not exist or cannot be read", path.display()))?;
    ensure!(
        !meta.is_dir(),
        "{what} {} is a directory, expected a file",
        path.display()
    );
    ensure!(
        meta.is_file(),
        "{what} {} is not a regular file (a FIFO, socket or device?)",
        path.display()
    );
    Ok(())
}

/// Checks a JPEG in strict mode, failing on a corrupt scan. libjpeg (like PIL) renders
/// corrupt entropy-coded data as it can, with only a warning, so a damaged photo would
/// otherwise reach the network as garbage pixels; zune-jpeg's strict mode refuses it.
fn check_jpeg_strictly(bytes: &[u8], path: &Path) -> Result<()> {
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_IMAGE_SIDE as usize)
        .set_max_height(MAX_IMAGE_SIDE as usize);
    zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), options)
        .decode()
        .map_err(|e| anyhow::anyhow!("image file {} is a corrupt JPEG: {e:?}", path.display()))?;
    Ok(())
}

/// Decodes a JPEG file to interleaved 8-bit RGB exactly as PIL does
/// (`Image.open(p).convert("RGB")`), so that a model imported from PyTorch sees the pixels it
/// was trained and tested on. Returns `(rgb, height, width)`.
///
/// PIL decodes with libjpeg-turbo at its defaults: the accurate integer IDCT (ISLOW),
/// "fancy" (triangle-filter) chroma upsampling and libjpeg's fixed-point YCbCr->RGB tables.
/// Other decoders (zune-jpeg, jpeg-decoder) use other IDCTs and upsamplers and differ by up
/// to 5 levels, so faithful decodes with libjpeg itself (mozjpeg's build of libjpeg-turbo,
/// same decoder). Grayscale is replicated to the three channels, and CMYK/YCCK files are
/// converted with PIL's formula; other colour spaces are refused.
fn decode_jpeg_like_pil(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    // libjpeg reports a fatal error by unwinding out of the C code (the mozjpeg crate's error
    // handler, which starts with this prefix); turn that into an error, and let any other
    // panic (a bug) propagate as usual.
    const LIBJPEG_PREFIX: &str = "libjpeg fatal error: ";
    match std::panic::catch_unwind(|| decode_jpeg_unwinding(bytes, path)) {
        Ok(decoded) => decoded,
        Err(payload) => match payload.downcast::<String>() {
            Ok(msg) if msg.starts_with(LIBJPEG_PREFIX) => bail!(
                "image file {} is not a readable JPEG: {}",
                path.display(),
                &msg[LIBJPEG_PREFIX.len()..]
            ),
            Ok(msg) => std::panic::resume_unwind(msg),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

/// [`decode_jpeg_like_pil`] without the unwinding guard: libjpeg's fatal errors unwind.
fn decode_jpeg_unwinding(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    use mozjpeg::ColorSpace;
    let name = path.display();
    // reads the headers only: the size is checked before any pixel buffer is allocated
    let jpeg = mozjpeg::Decompress::new_mem(bytes)
        .with_context(|| format!("image file {name} is not a readable JPEG"))?;
    let (w, h) = jpeg.size();
    ensure!(w > 0 && h > 0, "image file {name} is empty");
    let side = MAX_IMAGE_SIDE as usize;
    ensure!(
        w <= side && h <= side,
        "image file {name} is {w}x{h}, over the decoder limit of {side} pixels a side"
    );
    // the decoded samples (4 a pixel for CMYK); a progressive file also holds its DCT
    // coefficients too, about twice as many bytes
    let samples = (w * h) as u64 * jpeg.components().len().max(3) as u64;
    ensure!(
        samples <= MAX_DECODE_BYTES,
        "image file {name} is {w}x{h}: decoding it needs {} MiB, over the decoder limit of {} \
         MiB",
        samples >> 20,
        MAX_DECODE_BYTES >> 20
    );
    ensure!(
        jpeg_reaches_its_end(bytes),
        "image file {name} is a truncated JPEG (its data ends before the end-of-image marker)"
    );
    check_jpeg_strictly(bytes, path)?;
    let unreadable = || format!("cannot decode image file {name}");
    let rgb = match jpeg.color_space() {
        // 3-component JPEGs (YCbCr, or RGB stored as is) become RGB in libjpeg, as in PIL
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => {
            let mut started = jpeg.rgb().with_context(unreadable)?;
            let rgb: Vec<u8> = started.read_scanlines().with_context(unreadable)?;
            started.finish().with_context(unreadable)?;
            rgb
        }
        ColorSpace::JCS_GRAYSCALE => {
            let mut started = jpeg.grayscale().with_context(unreadable)?;
            let grey: Vec<u8> = started.read_scanlines().with_context(unreadable)?;
            started.finish().with_context(unreadable)?;
            grey.iter().flat_map(|&v| [v; 3]).collect()
        }
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut started = jpeg
                .to_colorspace(ColorSpace::JCS_CMYK)
                .with_context(unreadable)?;
            let cmyk: Vec<u8> = started.read_scanlines().with_context(unreadable)?;
            started.finish().with_context(unreadable)?;
            cmyk.chunks_exact(4)
                .flat_map(inverted_cmyk_to_rgb)
                .collect()
        }
        other => bail!("image file {name}: unsupported JPEG colour space {other:?}"),
    };
    ensure!(
        rgb.len() == 3 * w * h,
        "image file {name}: decoded {} values, expected {w}x{h}x3",
        rgb.len()
    );
    Ok((rgb, h, w))
}

/// Whether libjpeg, reading `bytes` from the start-of-image marker, reaches the end-of-image
/// marker before the data ends. A truncated file is refused, as PIL refuses it ("image file is
/// truncated"): libjpeg alone only warns and fills the missing part with grey.
///
/// Walks the markers as libjpeg's `read_markers` does: stray bytes between segments are
/// skipped, a segment is skipped by its length, and a scan's entropy-coded data runs to the
/// next marker that is not a restart marker (`FF D0`..`FF D7`) or a stuffed zero (`FF 00`).
/// A marker libjpeg refuses (an unknown or unsupported one, a second start-of-image, a bad
/// length) counts as an end here, so that the caller reports libjpeg's own error.
fn jpeg_reaches_its_end(bytes: &[u8]) -> bool {
    // index of the marker code after the `FF`s that start at or after `from`, if any
    let next_marker = |from: usize| -> Option<usize> {
        let ff = from + bytes.get(from..)?.iter().position(|&b| b == 0xFF)?;
        let code = ff + bytes[ff..].iter().position(|&b| b != 0xFF)?;
        Some(code)
    };
    let mut at = 2; // after the start-of-image marker (libjpeg checks that one)
    loop {
        let Some(m) = next_marker(at) else {
            return false;
        };
        at = m + 1;
        match bytes[m] {
            // a stuffed zero outside a scan (skipped as stray data), TEM and restart markers
            // carry no length
            0x00 | 0x01 | 0xD0..=0xD7 => {}
            marker if libjpeg_reads_segment(marker) => {
                let Some(len) = bytes.get(at..at + 2) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return true;
                }
                at += len;
                if at > bytes.len() {
                    return false;
                }
                if marker == 0xDA {
                    // skip the entropy-coded data of the scan
                    loop {
                        let Some(m) = next_marker(at) else {
                            return false;
                        };
                        if matches!(bytes[m], 0x00 | 0xD0..=0xD7) {
                            at = m + 1;
                        } else {
                            at = m - 1; // the `FF` before the marker
                            break;
                        }
                    }
                }
            }
            // end-of-image, or a marker libjpeg stops on with an error of its own
            _ => return true,
        }
    }
}

/// Whether libjpeg reads a segment with a length after `marker`: the frame headers it decodes
/// (SOF0/1/2/9/10), Huffman and arithmetic tables, DNL, quantization tables, the restart
/// interval, APPn, COM, and start-of-scan. It stops on the other markers with an error.
fn libjpeg_reads_segment(marker: u8) -> bool {
    matches!(
        marker,
        0xC0..=0xC2 | 0xC4 | 0xC9 | 0xCA | 0xCC | 0xDA..=0xDD | 0xE0..=0xEF | 0xFE
    )
}

/// PIL's conversion of a CMYK JPEG pixel to RGB. PIL assumes Adobe's convention (the samples
/// are stored inverted, as Photoshop writes them) and undoes it, then converts with
/// `Convert.c`'s `cmyk2rgb`: `nk = 255 - k`, channel = `nk - c * nk / 255` with PIL's rounded
/// integer division by 255.
fn inverted_cmyk_to_rgb(stored: &[u8]) -> [u8; 3] {
    let [c, m, y, k] = [stored[0], stored[1], stored[2], stored[3]].map(|v| 255 - u32::from(v));
    let nk = 255 - k;
    let muldiv255 = |a: u32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (nk - muldiv255(v)) as u8)
}

/// Decodes an image file into RGB CHW `f32` in `[0,1]` at its own size.
/// Returns `(pixels, height, width)`. Grayscale and alpha images are converted to RGB (alpha
/// is dropped). JPEGs are decoded pixel for pixel as PIL (and so torchvision's usual
/// pipeline) decodes them; see [`decode_jpeg_like_pil`].
pub fn read_rgb(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    check_regular_file(path, "image file")?;
    let mut reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image file {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image file {}", path.display()))?;
    reader.limits(decode_limits());
    let (rgb, h, w) = match reader.format() {
        None => bail!(
            "image file {}: unsupported or unrecognised image format",
            path.display()
        ),
        Some(image::ImageFormat::Jpeg) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read image file {}", path.display()))?;
            decode_jpeg_like_pil(&bytes, path)?
        }
        Some(_) => {
            let img = reader
                .decode()
                .with_context(|| format!("cannot decode image file {}", path.display()))?
                .to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            (img.into_raw(), h, w)
        }
    };
    ensure!(w > 0 && h > 0, "image file {} is empty", path.display());
    let p = w * h;
    let mut out = vec![0f32; 3 * p];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * p + i] = px[c] as f32 / 255.0;
        }
    }
    Ok((out, h, w))
}

/// Decodes an image file into RGB CHW `f32` in `[0,1]`, resized to `size×size` with
/// [`resize_bilinear`] (aspect ratio not kept). Returns the pixels and the original
/// `(height, width)`.
pub fn read_rgb_resized(path: &Path, size: usize) -> Result<(Vec<f32>, (usize, usize))> {
    ensure!(size > 0, "image size must be positive");
    let (img, h, w) = read_rgb(path)?;
    Ok((resize_bilinear(&img, h, w, size, size), (h, w)))
}

/// A raw class-index map read from a PNG mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// height*width indices, row-major.
    pub data: Vec<u8>,
}

/// Reads a class-index PNG mask WITHOUT palette expansion: a palette PNG gives the palette
/// index of every pixel (VOC's `SegmentationClass` format), an 8-bit grayscale PNG gives its
/// grey values. Other colour types and bit depths are rejected, because their values are not
/// class indices.
pub fn read_index_png(path: &Path) -> Result<IndexMap> {
    ensure!(
        path.is_file(),
        "mask file {} does not exist",
        path.display()
    );
    let file =
        File::open(path).with_context(|| format!("cannot open mask file {}", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("mask file {} is not a readable PNG", path.display()))?;
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("mask file {} is too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("cannot decode mask file {}", path.display()))?;
    match (info.color_type, info.bit_depth) {
        (png::ColorType::Indexed | png::ColorType::Grayscale, png::BitDepth::Eight) => {}
        (ct, bd) => bail!(
            "mask file {}: unsupported PNG format {ct:?} with bit depth {bd:?} (class masks must \
             be 8-bit palette or 8-bit grayscale PNGs holding class indices)",
            path.display()
        ),
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let mut data = Vec::with_capacity(w * h);
    for row in buf.chunks_exact(info.line_size).take(h) {
        data.extend_from_slice(&row[..w]);
    }
    ensure!(
        data.len() == w * h,
        "mask file {}: decoded {} pixels, expected {w}x{h}",
        path.display(),
        data.len()
    );
    Ok(IndexMap {
        height: h,
        width: w,
        data,
    })
}

/// Reads the index mask of `image` (whose size was `(h, w)`), checking that the two sizes agree.
pub fn read_mask_of(mask: &Path, image: &Path, (h, w): (usize, usize)) -> Result<IndexMap> {
    let m = read_index_png(mask)?;
    ensure!(
        (m.height, m.width) == (h, w),
        "mask file {} is {}x{} but its image {} is {h}x{w}",
        mask.display(),
        m.height,
        m.width,
        image.display()
    );
    Ok(m)
}

/// Nearest-neighbour resize of a single-channel `h×w` map to `out_h×out_w`: output pixel
/// `(y, x)` takes the source pixel containing its centre, `floor((y + 0.5) * h / out_h)`,
/// computed in integers so the choice is exact.
pub fn resize_nearest<T: Copy>(
    src: &[T],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<T> {
    assert_eq!(
        src.len(),
        h * w,
        "buffer of {} values is not {h}x{w}",
        src.len()
    );
    assert!(h > 0 && w > 0, "cannot resize an empty {h}x{w} map");
    let xs: Vec<usize> = (0..out_w).map(|x| nearest_index(x, w, out_w)).collect();
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let row = &src[nearest_index(y, h, out_h) * w..][..w];
        out.extend(xs.iter().map(|&sx| row[sx]));
    }
    out
}

#[inline]
fn nearest_index(dst: usize, n_in: usize, n_out: usize) -> usize {
    ((2 * dst + 1) * n_in / (2 * n_out)).min(n_in - 1)
}

/// Bilinear (triangle filter) resize of a planar image (any number of channels, inferred
/// from the length) from `h×w` to `out_h×out_w`. See the module doc for the convention.
pub fn resize_bilinear(img: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    assert!(h > 0 && w > 0, "cannot resize an empty {h}x{w} image");
    assert!(
        img.len().is_multiple_of(h * w),
        "buffer of {} values is not a planar image of {h}x{w}",
        img.len()
    );
    if (h, w) == (out_h, out_w) {
        return img.to_vec();
    }
    let channels = img.len() / (h * w);
    let wx = filter_weights(w, out_w);
    let wy = filter_weights(h, out_h);
    let mut out = vec![0f32; channels * out_h * out_w];
    let mut tmp = vec![0f32; h * out_w];
    for c in 0..channels {
        let src = &img[c * h * w..(c + 1) * h * w];
        // Horizontal pass into h×out_w, then vertical pass into out_h×out_w.
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (x, taps) in wx.iter().enumerate() {
                tmp[y * out_w + x] = taps.iter().map(|&(i, k)| row[i] * k).sum();
            }
        }
        let dst = &mut out[c * out_h * out_w..(c + 1) * out_h * out_w];
        for (y, taps) in wy.iter().enumerate() {
            for x in 0..out_w {
                dst[y * out_w + x] = taps.iter().map(|&(i, k)| tmp[i * out_w + x] * k).sum();
            }
        }
    }
    out
}

/// Normalised triangle-filter taps `(source index, weight)` of each output coordinate.
fn filter_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    // Widen the filter when shrinking (antialiasing); never narrower than one pixel.
    let fscale = scale.max(1.0);
    (0..n_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = (center - fscale).floor().max(0.0) as usize;
            let hi = ((center + fscale).ceil() as usize).min(n_in);
            let mut taps: Vec<(usize, f64)> = (lo..hi)
                .map(|i| {
                    let d = ((i as f64 + 0.5 - center) / fscale).abs();
                    (i, (1.0 - d).max(0.0))
                })
                .filter(|&(_, k)| k > 0.0)
                .collect();
            let sum: f64 = taps.iter().map(|t| t.1).sum();
            if sum <= 0.0 {
                // Only possible on an exact pixel centre at the border: take that pixel.
                taps = vec![(center.floor().clamp(0.0, (n_in - 1) as f64) as usize, 1.0)];
            } else {
                taps.iter_mut().for_each(|t| t.1 /= sum);
            }
            taps.into_iter().map(|(i, k)| (i, k as f32)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_larger_than_the_decode_limits_are_refused_before_decoding() {
        let dir = std::env::temp_dir().join(format!("faithful-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // tall: one side over MAX_IMAGE_SIDE, a few kB on disk
        let tall = dir.join("tall.png");
        image::GrayImage::new(1, MAX_IMAGE_SIDE + 1)
            .save(&tall)
            .unwrap();
        let err = format!("{:#}", read_rgb(&tall).unwrap_err());
        assert!(err.contains("tall.png"), "{err}");
        // both sides allowed, but 8000 x 8000 RGB needs 192 MB > MAX_DECODE_BYTES: a 1x1 PNG
        // whose header claims that size (IHDR patched, its CRC recomputed)
        let mut bytes = Vec::new();
        image::RgbImage::new(1, 1)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes[16..20].copy_from_slice(&8000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&8000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let big = dir.join("big.png");
        std::fs::write(&big, &bytes).unwrap();
        let err = format!("{:#}", read_rgb(&big).unwrap_err());
        assert!(err.contains("big.png") && err.contains("limit"), "{err}");
        // an ordinary photo still decodes
        let ok = dir.join("ok.png");
        image::RgbImage::new(64, 48).save(&ok).unwrap();
        assert_eq!(read_rgb(&ok).unwrap().1, 48);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_jpeg_whose_scan_data_was_overwritten_is_refused() {
        let dir = std::env::temp_dir().join(format!("faithful-jpeg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // a textured 64x64 photo, so the scan is long
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x * y) % 251) as u8])
        });
        let good = dir.join("good.jpg");
        img.save(&good).unwrap();
        assert_eq!(read_rgb(&good).unwrap().1, 64);
        let mut bytes = std::fs::read(&good).unwrap();
        // the scan starts after the SOS marker (FF DA) and its header
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let len = u16::from_be_bytes([bytes[sos + 2], bytes[sos + 3]]) as usize;
        let scan = sos + 2 + len;
        let end = bytes.len() - 2; // keep the EOI marker
        let mid = scan + (end - scan) / 4;
        for b in &mut bytes[mid..end - 8] {
            *b = 0xFF; // runs of 0xFF: not valid entropy-coded data
        }
        let bad = dir.join("bad.jpg");
        std::fs::write(&bad, &bytes).unwrap();
        let err = format!("{:#}", read_rgb(&bad).unwrap_err());
        assert!(err.contains("bad.jpg") && err.contains("corrupt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A small textured JPEG written by `image`'s encoder (4:2:0 YCbCr).
    fn small_jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 9) as u8, (y * 13) as u8, ((x * y) % 251) as u8])
        });
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        bytes
    }

    #[test]
    fn jpegs_larger_than_the_decode_limits_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = small_jpeg(16, 16);
        // the frame header (SOF0: FF C0, length, precision) holds height then width
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let claim = |h: u16, w: u16| {
            let mut b = bytes.clone();
            b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
            b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
            b
        };
        let tall = dir.path().join("tall.jpg");
        std::fs::write(&tall, claim(20_000, 16)).unwrap();
        let err = format!("{:#}", read_rgb(&tall).unwrap_err());
        assert!(err.contains("tall.jpg") && err.contains("limit"), "{err}");
        // both sides allowed, but 8000x8000 RGB needs 183 MiB > MAX_DECODE_BYTES
        let big = dir.path().join("big.jpg");
        std::fs::write(&big, claim(8000, 8000)).unwrap();
        let err = format!("{:#}", read_rgb(&big).unwrap_err());
        assert!(err.contains("big.jpg") && err.contains("limit"), "{err}");
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        // PIL refuses it too ("image file is truncated"); libjpeg alone would pad it with grey
        let dir = tempfile::tempdir().unwrap();
        let bytes = small_jpeg(64, 64);
        for keep in [bytes.len() / 2, bytes.len() - 40, bytes.len() - 2] {
            let cut = dir.path().join(format!("cut{keep}.jpg"));
            std::fs::write(&cut, &bytes[..keep]).unwrap();
            let err = format!("{:#}", read_rgb(&cut).unwrap_err());
            assert!(
                err.contains(&format!("cut{keep}.jpg")) && err.contains("truncated"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_marker_walk_finds_the_end_of_image_as_libjpeg_does() {
        const SOI: [u8; 2] = [0xFF, 0xD8];
        const EOI: [u8; 2] = [0xFF, 0xD9];
        // an APP1 segment holding an end-of-image marker (an EXIF thumbnail does)
        let app1 = [0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        // a scan header (length 3, contents not read) and entropy-coded data with a stuffed
        // zero, a restart marker and fill bytes
        let scan = [
            0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF,
        ];
        let file = |parts: &[&[u8]]| parts.concat();
        assert!(jpeg_reaches_its_end(&file(&[&SOI, &app1, &scan, &EOI])));
        // stray bytes before the end-of-image marker: libjpeg skips them with a warning
        assert!(jpeg_reaches_its_end(&file(&[
            &SOI,
            &scan,
            &[1, 2, 3],
            &EOI
        ])));
        // cut inside the scan, in the APP1 segment (its FF D9 does not count), or just
        // before the end-of-image marker
        assert!(!jpeg_reaches_its_end(&file(&[&SOI, &app1, &scan])));
        assert!(!jpeg_reaches_its_end(&file(&[&SOI, &app1[..5]])));
        assert!(!jpeg_reaches_its_end(&file(&[&SOI, &app1, &scan, &[0xFF]])));
        // markers libjpeg stops on with its own error end the walk
        assert!(jpeg_reaches_its_end(&file(&[&SOI, &[0xFF, 0xF0], &scan])));
        assert!(jpeg_reaches_its_end(&file(&[
            &SOI,
            &[0xFF, 0xE0, 0x00, 0x01]
        ])));
    }

    #[test]
    fn bytes_that_only_start_like_a_jpeg_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.jpg");
        // no frame header before the end-of-image marker
        std::fs::write(&path, [0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
        let err = format!("{:#}", read_rgb(&path).unwrap_err());
        assert!(err.contains("fake.jpg"), "{err}");
        // a frame header too short to hold its fields: one of libjpeg's fatal errors, which
        // unwinds out of the C code and must come back as an error, not a panic
        std::fs::write(
            &path,
            [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x03, 0x99, 0xFF, 0xD9],
        )
        .unwrap();
        let err = format!("{:#}", read_rgb(&path).unwrap_err());
        assert!(
            err.contains("fake.jpg") && err.contains("not a readable JPEG: Bogus marker length"),
            "{err}"
        );
    }

    #[test]
    fn cmyk_pixels_convert_as_pil_does() {
        // stored inverted (Adobe); PIL: nk = 255 - k, channel = nk - c*nk/255 (rounded)
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(inverted_cmyk_to_rgb(&[0, 255, 255, 255]), [0, 255, 255]);
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        // c = k = 100: nk = 155, 100*155/255 = 60.8 -> 61, 155 - 61 = 94
        assert_eq!(inverted_cmyk_to_rgb(&[155, 255, 255, 155]), [94, 155, 155]);
    }

    #[test]
    fn bilinear_upsample_matches_pytorch_half_pixel() {
        // 2x2 -> 4x4, values worked out by hand with source coordinate (dst+0.5)/2-0.5,
        // clamped at the border (PyTorch bilinear, align_corners=False).
        let src = [0.0, 1.0, 2.0, 3.0];
        let out = resize_bilinear(&src, 2, 2, 4, 4);
        let want = [
            0.0, 0.25, 0.75, 1.0, //
            0.5, 0.75, 1.25, 1.5, //
            1.5, 1.75, 2.25, 2.5, //
            2.0, 2.25, 2.75, 3.0,
        ];
        for (i, (a, b)) in out.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-6, "pixel {i}: {a} vs {b}");
        }
    }

    #[test]
    fn bilinear_downsample_is_antialiased() {
        // 4 -> 2 in one row: output 0 has centre 1.0 in source coordinates and a triangle of
        // half-width 2: weights 0.75, 0.75, 0.25 on pixels 0,1,2 (pixel 3 lies at distance 2.5).
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 1, 4, 1, 2);
        assert!((out[0] - 1.25 / 1.75).abs() < 1e-6, "{out:?}");
        // Mirror image for output 1: 0.25*1 + 0.75*2 + 0.75*3 over 1.75.
        assert!((out[1] - 4.0 / 1.75).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn bilinear_keeps_constants_and_channels() {
        let mut img = vec![0.3f32; 5 * 7];
        img.extend(vec![0.9f32; 5 * 7]);
        let out = resize_bilinear(&img, 5, 7, 11, 3);
        assert_eq!(out.len(), 2 * 11 * 3);
        assert!(out[..33].iter().all(|v| (v - 0.3).abs() < 1e-6));
        assert!(out[33..].iter().all(|v| (v - 0.9).abs() < 1e-6));
        assert_eq!(resize_bilinear(&img, 5, 7, 5, 7), img);
    }

    #[test]
    fn nearest_uses_pixel_centres() {
        // 4 -> 3: centres 0.5, 1.5, 2.5 of the output map to 0.667, 2.0, 3.333 -> 0, 2, 3.
        let src: Vec<u8> = (0..4).collect();
        assert_eq!(resize_nearest(&src, 1, 4, 1, 3), vec![0, 2, 3]);
        // 2 -> 5: 0.2, 0.6, 1.0, 1.4, 1.8 -> 0, 0, 1, 1, 1.
        assert_eq!(resize_nearest(&[7u8, 9], 2, 1, 5, 1), vec![7, 7, 9, 9, 9]);
        let same: Vec<u8> = (0..12).collect();
        assert_eq!(resize_nearest(&same, 3, 4, 3, 4), same);
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.jpg");
        let e = format!("{:#}", read_rgb(&missing).unwrap_err());
        assert!(
            e.contains("nope.jpg") && e.contains("does not exist"),
            "{e}"
        );
        let junk = dir.path().join("junk.jpg");
        std::fs::write(&junk, b"this is not an image at all").unwrap();
        let e = format!("{:#}", read_rgb(&junk).unwrap_err());
        assert!(e.contains("junk.jpg"), "{e}");
        let e = format!("{:#}", read_index_png(&junk).unwrap_err());
        assert!(
            e.contains("junk.jpg") && e.contains("not a readable PNG"),
            "{e}"
        );
    }

    #[test]
    fn index_png_keeps_palette_indices_and_rejects_rgb() {
        let dir = tempfile::tempdir().unwrap();
        // A 3x2 palette PNG whose palette colours are unrelated to the indices.
        let pal_path = dir.path().join("pal.png");
        let idx = [0u8, 1, 2, 2, 255, 0];
        {
            let f = File::create(&pal_path).unwrap();
            let mut enc = png::Encoder::new(std::io::BufWriter::new(f), 3, 2);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            let mut palette = vec![0u8; 256 * 3];
            palette[3..6].copy_from_slice(&[128, 0, 0]);
            palette[6..9].copy_from_slice(&[0, 128, 0]);
            palette[765..768].copy_from_slice(&[224, 224, 192]);
            enc.set_palette(palette);
            let mut wr = enc.write_header().unwrap();
            wr.write_image_data(&idx).unwrap();
        }
        let m = read_index_png(&pal_path).unwrap();
        assert_eq!((m.height, m.width), (2, 3));
        assert_eq!(m.data, idx);

        let grey_path = dir.path().join("grey.png");
        image::GrayImage::from_raw(2, 2, vec![0, 3, 255, 1])
            .unwrap()
            .save(&grey_path)
            .unwrap();
        assert_eq!(read_index_png(&grey_path).unwrap().data, vec![0, 3, 255, 1]);

        let rgb_path = dir.path().join("rgb.png");
        image::RgbImage::new(2, 2).save(&rgb_path).unwrap();
        let e = format!("{:#}", read_index_png(&rgb_path).unwrap_err());
        assert!(
            e.contains("rgb.png") && e.contains("unsupported PNG format"),
            "{e}"
        );
    }

    #[test]
    fn read_rgb_converts_to_chw() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let mut im = image::RgbImage::new(2, 1);
        im.put_pixel(0, 0, image::Rgb([255, 0, 51]));
        im.put_pixel(1, 0, image::Rgb([0, 102, 255]));
        im.save(&p).unwrap();
        let (px, h, w) = read_rgb(&p).unwrap();
        assert_eq!((h, w), (1, 2));
        // Planes R, G, B, each of 2 pixels.
        let want = [1.0, 0.0, 0.0, 0.4, 0.2, 1.0];
        for (a, b) in px.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{px:?}");
        }
        let (big, orig) = read_rgb_resized(&p, 4).unwrap();
        assert_eq!(orig, (1, 2));
        assert_eq!(big.len(), 3 * 16);
    }
}
