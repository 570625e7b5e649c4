//! JPEG pixels as PyTorch pipelines see them: faithful's `read_rgb` must give exactly the
//! pixels of PIL (`np.asarray(Image.open(p).convert("RGB"))`, libjpeg-turbo underneath), so a
//! torchvision model imported into faithful sees the same input as in PyTorch.
//!
//! PIL writes the JPEGs (4:4:4, 4:2:2 and 4:2:0 chroma, quality 50 and 95, baseline and
//! progressive, odd sizes, grayscale, CMYK, RGB without the YCbCr transform) and decodes them;
//! faithful decodes the same files. Needs `python3` with Pillow and numpy; otherwise the test
//! prints a `SKIPPED` line and passes. A second test needs no Python: a tiny JPEG kept here as
//! bytes, with the pixels PIL decoded from it.

use faithful::data::image_io::read_rgb;
use std::path::PathBuf;
use std::process::Command;

/// Writes the JPEGs and PIL's decoding of each (`NAME.jpg`, `NAME.rgb`: raw `h×w×3` bytes) into
/// the folder `sys.argv[1]`; prints one `NAME H W` line per file.
const MAKE_AND_DECODE: &str = r#"
import os, sys
import numpy as np
from PIL import Image

out = sys.argv[1]
rng = np.random.default_rng(7)

def scene(w, h):
    # smooth shading, a colour ramp, hard colour edges (chroma upsampling shows there) and noise
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 255 * x / max(w - 1, 1)
    b = np.where((x // 6 + y // 4) % 2 == 0, 30.0, 220.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

cases = []
for w, h in [(37, 23), (64, 48), (97, 61)]:
    im = scene(w, h)
    for sub, name in [(0, "444"), (1, "422"), (2, "420")]:
        for q in (50, 95):
            for prog in (False, True):
                tag = f"rgb{name}_{w}x{h}_q{q}" + ("_prog" if prog else "")
                cases.append((tag, im, dict(quality=q, subsampling=sub, progressive=prog)))
    cases.append((f"gray_{w}x{h}", im.convert("L"), dict(quality=75)))
    cases.append((f"gray_{w}x{h}_prog", im.convert("L"), dict(quality=75, progressive=True)))
    cases.append((f"cmyk_{w}x{h}", im.convert("CMYK"), dict(quality=90)))
    # RGB stored without the YCbCr transform (Adobe marker); older Pillows ignore keep_rgb
    cases.append((f"keeprgb_{w}x{h}", im, dict(quality=90, keep_rgb=True)))

for name, im, kw in cases:
    p = os.path.join(out, name + ".jpg")
    im.save(p, **kw)
    ref = np.asarray(Image.open(p).convert("RGB"))
    ref.astype(np.uint8).tofile(os.path.join(out, name + ".rgb"))
    print(name, ref.shape[0], ref.shape[1])
"#;

fn python_with(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn jpeg_pixels_equal_pil() {
    if !python_with("PIL, numpy") {
        eprintln!("SKIPPED: JPEG pixels against PIL (python3 with Pillow and numpy not found)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = Command::new("python3")
        .args(["-c", MAKE_AND_DECODE])
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PIL script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = String::from_utf8(out.stdout).unwrap();
    let (mut values, mut differing, mut worst) = (0usize, 0usize, 0u8);
    let mut failures = Vec::new();
    for line in manifest.lines() {
        let mut it = line.split_whitespace();
        let name = it.next().unwrap();
        let h: usize = it.next().unwrap().parse().unwrap();
        let w: usize = it.next().unwrap().parse().unwrap();
        let jpg: PathBuf = dir.join(format!("{name}.jpg"));
        let want = std::fs::read(dir.join(format!("{name}.rgb"))).unwrap();
        let (px, gh, gw) = read_rgb(&jpg).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!((gh, gw), (h, w), "{name}: size");
        let p = h * w;
        // back from [0,1] floats to the decoder's 8-bit values (v / 255 round-trips exactly)
        let (mut n_diff, mut max) = (0usize, 0u8);
        for i in 0..p {
            for c in 0..3 {
                let got = (px[c * p + i] * 255.0).round() as u8;
                let d = got.abs_diff(want[i * 3 + c]);
                n_diff += usize::from(d > 0);
                max = max.max(d);
            }
        }
        eprintln!(
            "{name:24} {h:3}x{w:<3} differing {:6.2}%  max {max}",
            100.0 * n_diff as f64 / (3 * p) as f64
        );
        values += 3 * p;
        differing += n_diff;
        worst = worst.max(max);
        if max > 0 {
            failures.push(format!("{name} (max {max})"));
        }
    }
    eprintln!(
        "all: {} files, {:.2}% of values differ from PIL, max difference {worst}",
        manifest.lines().count(),
        100.0 * differing as f64 / values as f64
    );
    assert!(
        failures.is_empty(),
        "decoded pixels differ from PIL in: {}",
        failures.join(", ")
    );
}

// An 11x7 4:2:0 JPEG (quality 90, optimized Huffman tables), written by Pillow 13.0 from a noisy
// colour pattern, and the pixels that Pillow 13.0 (libjpeg-turbo) decodes from it, row-major
// RGB, computed by hand once with
//   np.asarray(Image.open("tiny.jpg").convert("RGB")).reshape(-1).tolist()
// zune-jpeg, faithful's earlier decoder, gives 14% of these values off by up to 2 levels.
const TINY_JPEG_HEX: &str = concat!(
    "ffd8ffe000104a46494600010100000100010000ffdb004300030202030202030303030403030405080505040405",
    "0a070706080c0a0c0c0b0a0b0b0d0e12100d0e110e0b0b1016101113141515150c0f171816141812141514ffdb00",
    "430103040405040509050509140d0b0d141414141414141414141414141414141414141414141414141414141414",
    "1414141414141414141414141414141414141414ffc00011080007000b03012200021101031101ffc40016000101",
    "0100000000000000000000000000000607ffc4002110000201030403010000000000000000000102030411210008",
    "123105063241ffc4001501010100000000000000000000000000000507ffc4002111000103030403000000000000",
    "000000000102114103050600122131076171ffda000c03010002110311003f008cf49da7d1d244cf22c30cc44cd2",
    "2339601c042c39017040e45d86585957ac6db45b46f006963353451bcd6cb4f5327239c7c10a05ad600756fdd34d",
    "43b32cbae76f42ea8505b54096502436cdcec08e4742027869d0de37cdaf82de828ac4383d3c11ee67e0d7ffd9",
);

#[rustfmt::skip]
const TINY_JPEG_PIL_RGB: [u8; 7 * 11 * 3] = [
    26, 39, 81, 0, 0, 60, 6, 0, 84, 84, 42, 140, 68, 5, 62, 99, 3, 51,
    168, 24, 96, 167, 4, 93, 161, 7, 105, 200, 30, 116, 215, 1, 53,
    9, 38, 78, 5, 25, 75, 52, 49, 120, 39, 14, 80, 93, 47, 86, 147, 70, 106,
    145, 31, 83, 148, 14, 77, 182, 48, 117, 175, 23, 84, 197, 8, 48,
    7, 71, 106, 40, 94, 122, 28, 62, 74, 69, 80, 84, 91, 74, 82, 121, 81, 90,
    121, 63, 75, 174, 101, 112, 158, 66, 77, 168, 57, 66, 249, 113, 125,
    29, 123, 131, 21, 106, 99, 39, 104, 70, 126, 167, 127, 70, 82, 62, 107, 100, 84,
    159, 147, 121, 126, 97, 65, 191, 135, 100, 224, 144, 117, 230, 137, 129,
    0, 118, 74, 20, 134, 82, 62, 155, 85, 98, 165, 98, 82, 115, 72, 158, 176, 134,
    126, 148, 84, 122, 128, 58, 183, 154, 88, 202, 150, 102, 207, 145, 124,
    1, 160, 80, 53, 201, 117, 72, 199, 110, 69, 169, 79, 127, 196, 113, 151, 203, 120,
    123, 172, 83, 176, 209, 120, 180, 183, 102, 175, 159, 82, 229, 205, 133,
    34, 228, 131, 30, 214, 118, 34, 199, 105, 101, 243, 133, 75, 192, 49, 112, 204, 61,
    161, 230, 124, 125, 177, 92, 180, 222, 138, 192, 221, 113, 211, 227, 66,
];

#[test]
fn a_tiny_jpeg_decodes_to_the_pixels_pil_gives() {
    let bytes: Vec<u8> = (0..TINY_JPEG_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&TINY_JPEG_HEX[i..i + 2], 16).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let (px, h, w) = read_rgb(&path).unwrap();
    assert_eq!((h, w), (7, 11));
    let p = h * w;
    for i in 0..p {
        let got: [u8; 3] = std::array::from_fn(|c| (px[c * p + i] * 255.0).round() as u8);
        let want = &TINY_JPEG_PIL_RGB[3 * i..3 * i + 3];
        assert_eq!(got, want, "pixel (row {}, column {})", i / w, i % w);
    }
}
