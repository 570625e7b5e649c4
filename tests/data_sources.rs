//! External data sources: PASCAL VOC (on a fixture written by the test), the folder loader and
//! fashion-canvas on the real Fashion-MNIST files when they are installed.

use faithful::data::fashion::{
    DEFAULT_FASHION_DIR, FashionCanvasConfig, generate_fashion_canvas, load_fashion_mnist,
    render_canvas,
};
use faithful::data::folder::{FolderConfig, load_folder};
use faithful::data::voc::{Difficult, VocConfig, load_voc, write_voc_fixture};
use faithful::data::{Dataset, SEG_IGNORE};
use std::path::{Path, PathBuf};

// VOC class indices used by the fixture.
const AEROPLANE: usize = 0;
const CAT: usize = 7;
const DOG: usize = 11;
const PERSON: usize = 14;

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_voc_fixture(dir.path()).unwrap();
    dir
}

fn voc_cfg(root: &Path) -> VocConfig {
    VocConfig {
        root: root.to_path_buf(),
        size: 24,
        ..VocConfig::default()
    }
}

fn present(ds: &Dataset, i: usize) -> Vec<usize> {
    ds.classes_of(i)
}

fn voc_dir(root: &Path) -> PathBuf {
    root.join("VOCdevkit/VOC2012")
}

fn err_text(r: anyhow::Result<faithful::data::Splits>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn voc_fixture_splits_and_labels() {
    let dir = fixture();
    let s = load_voc(&voc_cfg(dir.path())).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (8, 4, 6));
    assert_eq!(s.train.num_classes(), 20);
    assert_eq!(s.train.class_names[CAT], "cat");
    assert_eq!(s.test.class_names[19], "tvmonitor");
    assert_eq!((s.test.height, s.test.width), (24, 24));
    assert_eq!(s.test.name, "voc-test");

    // Labels from the fixture's documented layout, difficult objects included.
    let train: [&[usize]; 8] = [
        &[CAT],
        &[DOG],
        &[CAT, DOG],
        &[PERSON], // its <part> named "head" is not a class
        &[AEROPLANE, PERSON],
        &[DOG],
        &[CAT],
        &[CAT, PERSON],
    ];
    for (i, want) in train.iter().enumerate() {
        assert_eq!(present(&s.train, i), *want, "train image {i}");
    }
    // Main/val.txt also lists the segmentation-val images; val keeps only the other four.
    let val: [&[usize]; 4] = [&[AEROPLANE], &[DOG], &[CAT, PERSON], &[PERSON]];
    for (i, want) in val.iter().enumerate() {
        assert_eq!(present(&s.val, i), *want, "val image {i}");
    }
    let test: [&[usize]; 6] = [
        &[CAT, DOG],
        &[DOG, PERSON],
        &[AEROPLANE],
        &[CAT, PERSON],
        &[DOG],
        &[AEROPLANE, CAT],
    ];
    for (i, want) in test.iter().enumerate() {
        assert_eq!(present(&s.test, i), *want, "test image {i}");
    }
    // Train and val have no masks: all ignore.
    assert!(s.train.seg.iter().all(|&v| v == SEG_IGNORE));
    assert!(s.val.seg.iter().all(|&v| v == SEG_IGNORE));
    assert!(s.train.images.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn voc_masks_resize_nearest_at_hand_computed_pixels() {
    let dir = fixture();
    let s = load_voc(&voc_cfg(dir.path())).unwrap();
    // Image 2012_000301, 48x40: cat box x 8..24, y 8..28 with a 255 ring at x 7 and 24,
    // y 7 and 28; dog box x 30..44, y 20..36 with its ring at x 29, 44 and y 19, 36.
    // Resized to 24x24: source x = 2x+1, source y = floor((2y+1)*40/48).
    let seg = s.test.seg_of(0);
    let at = |y: usize, x: usize| seg[y * 24 + x];
    let (cat, dog) = (CAT as u8 + 1, DOG as u8 + 1);
    assert_eq!(at(5, 5), cat); // (9, 11)
    assert_eq!(at(4, 5), SEG_IGNORE); // (7, 11) ring row
    assert_eq!(at(3, 5), 0); // (5, 11)
    assert_eq!(at(5, 3), SEG_IGNORE); // (9, 7) ring column
    assert_eq!(at(16, 11), cat); // (27, 23) last box row and column
    assert_eq!(at(16, 12), 0); // (27, 25) just past the ring
    assert_eq!(at(11, 15), SEG_IGNORE); // (19, 31) dog ring
    assert_eq!(at(12, 15), dog); // (20, 31)
    assert_eq!(at(21, 21), dog); // (35, 43)
    assert_eq!(at(22, 21), 0); // (37, 43)
    assert_eq!(at(21, 22), 0); // (35, 45)
    // Rows with source y in 8..28: y = 5..=16 (12 rows); columns with 2x+1 in 8..24: x = 4..=11.
    assert_eq!(seg.iter().filter(|&&v| v == cat).count(), 12 * 8);
    // Source y in 20..36: y = 12..=21 (10 rows); 2x+1 in 30..44: x = 15..=21 (7 columns).
    assert_eq!(seg.iter().filter(|&&v| v == dog).count(), 10 * 7);

    // The photo itself: background outside the boxes, the cat's palette colour (64,0,0)
    // inside (JPEG keeps flat areas close).
    let img = s.test.image(0);
    let p = 24 * 24;
    let (r, g, b) = (
        img[5 * 24 + 5],
        img[p + 5 * 24 + 5],
        img[2 * p + 5 * 24 + 5],
    );
    assert!(
        (r - 64.0 / 255.0).abs() < 0.15 && g < 0.15 && b < 0.15,
        "{r} {g} {b}"
    );
}

#[test]
fn voc_difficult_include_and_exclude() {
    let dir = fixture();
    let inc = load_voc(&voc_cfg(dir.path())).unwrap();
    let exc = load_voc(&VocConfig {
        difficult: Difficult::Exclude,
        ..voc_cfg(dir.path())
    })
    .unwrap();
    // Train 2012_000105: aeroplane + difficult person.
    assert_eq!(present(&inc.train, 4), vec![AEROPLANE, PERSON]);
    assert_eq!(present(&exc.train, 4), vec![AEROPLANE]);
    // Val 2012_000204 holds only a difficult person: no class at all when excluded.
    assert_eq!(present(&exc.val, 3), Vec::<usize>::new());
    // Test 2012_000302: person + difficult dog (x 26..44, y 8..30). Output (10, 16) reads
    // source (17, 33), inside the dog box.
    assert_eq!(present(&inc.test, 1), vec![DOG, PERSON]);
    assert_eq!(present(&exc.test, 1), vec![PERSON]);
    let dog = DOG as u8 + 1;
    assert_eq!(inc.test.seg_of(1)[10 * 24 + 16], dog);
    assert_eq!(exc.test.seg_of(1)[10 * 24 + 16], SEG_IGNORE);
    assert!(!exc.test.seg_of(1).contains(&dog));
    // Person pixels are unaffected: output (10, 5) reads (17, 11), inside person 4..20 x 4..36.
    let person = PERSON as u8 + 1;
    assert_eq!(exc.test.seg_of(1)[10 * 24 + 5], person);
    assert_eq!(inc.test.seg_of(1)[10 * 24 + 5], person);
    // Other images do not change.
    assert_eq!(inc.test.seg_of(0), exc.test.seg_of(0));
    exc.validate().unwrap();
}

#[test]
fn voc_caps_and_root_forms() {
    let dir = fixture();
    let capped = load_voc(&VocConfig {
        max_train: Some(3),
        max_val: Some(1),
        max_test: Some(2),
        ..voc_cfg(&voc_dir(dir.path())) // ROOT pointing at VOC2012 itself
    })
    .unwrap();
    assert_eq!(
        (capped.train.len(), capped.val.len(), capped.test.len()),
        (3, 1, 2)
    );
    assert_eq!(present(&capped.train, 2), vec![CAT, DOG]);
    assert_eq!(present(&capped.val, 0), vec![AEROPLANE]);
    assert_eq!(present(&capped.test, 1), vec![DOG, PERSON]);
    let full = load_voc(&voc_cfg(dir.path())).unwrap();
    assert_eq!(capped.test, full.test.subset(&[0, 1]));

    let e = err_text(load_voc(&voc_cfg(&dir.path().join("nowhere"))));
    assert!(
        e.contains("nowhere") && e.contains("no PASCAL VOC 2012 data"),
        "{e}"
    );
}

#[test]
fn voc_errors_name_the_file() {
    // Missing mask.
    let dir = fixture();
    let voc = voc_dir(dir.path());
    std::fs::remove_file(voc.join("SegmentationClass/2012_000303.png")).unwrap();
    let e = err_text(load_voc(&voc_cfg(dir.path())));
    assert!(
        e.contains("2012_000303.png") && e.contains("does not exist"),
        "{e}"
    );

    // Corrupt JPEG.
    let dir = fixture();
    let voc = voc_dir(dir.path());
    std::fs::write(
        voc.join("JPEGImages/2012_000102.jpg"),
        b"\xff\xd8garbage bytes",
    )
    .unwrap();
    let e = err_text(load_voc(&voc_cfg(dir.path())));
    assert!(e.contains("2012_000102.jpg"), "{e}");

    // Unknown class name.
    let dir = fixture();
    let xml = voc_dir(dir.path()).join("Annotations/2012_000201.xml");
    let text = std::fs::read_to_string(&xml).unwrap();
    std::fs::write(&xml, text.replace("aeroplane", "unicorn")).unwrap();
    let e = err_text(load_voc(&voc_cfg(dir.path())));
    assert!(
        e.contains("2012_000201.xml") && e.contains("unknown object name 'unicorn'"),
        "{e}"
    );

    // Malformed XML.
    let dir = fixture();
    let xml = voc_dir(dir.path()).join("Annotations/2012_000305.xml");
    std::fs::write(&xml, "<annotation><object><name>dog</name></annotation>").unwrap();
    let e = err_text(load_voc(&voc_cfg(dir.path())));
    assert!(
        e.contains("2012_000305.xml") && e.contains("not valid XML"),
        "{e}"
    );

    // Missing annotation and missing split list.
    let dir = fixture();
    let voc = voc_dir(dir.path());
    std::fs::remove_file(voc.join("Annotations/2012_000106.xml")).unwrap();
    let e = err_text(load_voc(&voc_cfg(dir.path())));
    assert!(e.contains("2012_000106.xml"), "{e}");
    std::fs::remove_file(voc.join("ImageSets/Main/val.txt")).unwrap();
    let e = err_text(load_voc(&voc_cfg(dir.path())));
    assert!(e.contains("Main/val.txt"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Folder

/// Writes a solid-colour image of `w×h`.
fn solid(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

fn grey_mask(path: &Path, w: u32, h: u32, data: Vec<u8>) {
    image::GrayImage::from_raw(w, h, data)
        .unwrap()
        .save(path)
        .unwrap();
}

/// Three images with explicit splits plus six without; classes.txt fixes the order.
fn folder_fixture(dir: &Path) {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    std::fs::write(dir.join("classes.txt"), "zebra\napple\n\nmango\n").unwrap();
    solid(&dir.join("img/a.png"), 4, 2, [255, 0, 0]);
    solid(&dir.join("img/b.jpg"), 16, 16, [0, 0, 255]);
    solid(&dir.join("img/c.png"), 3, 3, [0, 255, 0]);
    // Mask of a.png (4x2): columns 0-1 zebra (1), column 2 ignore, column 3 apple (2).
    grey_mask(
        &dir.join("masks/a.png"),
        4,
        2,
        vec![1, 1, 255, 2, 1, 1, 255, 2],
    );
    let mut csv = String::from("split,file,labels\n");
    csv += "train,img/a.png,\"zebra; apple\"\n";
    csv += "test,img/b.jpg,mango\n";
    csv += "val,img/c.png,\n";
    for i in 0..6 {
        solid(
            &dir.join(format!("img/u{i}.png")),
            5,
            5,
            [20 * i as u8, 0, 0],
        );
        csv += &format!(",img/u{i}.png,apple\n");
    }
    std::fs::write(dir.join("labels.csv"), csv).unwrap();
}

fn folder_cfg(root: &Path) -> FolderConfig {
    FolderConfig {
        root: root.to_path_buf(),
        size: 8,
        val_fraction: 1.0 / 3.0,
        test_fraction: 1.0 / 6.0,
        ..FolderConfig::default()
    }
}

#[test]
fn folder_loads_labels_masks_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    folder_fixture(dir.path());
    let s = load_folder(&folder_cfg(dir.path())).unwrap();
    assert_eq!(s.train.class_names, vec!["zebra", "apple", "mango"]);
    // Six unassigned entries: round(6/6) = 1 to test, round(6/3) = 2 to val, 3 to train.
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (4, 3, 2));
    // a.png is first in train (file order kept), labelled zebra + apple.
    assert_eq!(s.train.classes_of(0), vec![0, 1]);
    // Its 4x2 mask at 8x8: source column floor((2x+1)*4/16) = 0,0,1,1,2,2,3,3 for x = 0..8.
    let row: Vec<u8> = s.train.seg_of(0)[..8].to_vec();
    assert_eq!(row, vec![1, 1, 1, 1, 255, 255, 2, 2]);
    assert_eq!(s.train.seg_of(0)[56..64], row[..]);
    // Red image stays red after resizing.
    assert!((s.train.image(0)[0] - 1.0).abs() < 1e-6);
    assert!(s.train.image(0)[64].abs() < 1e-6);
    // b.jpg is the explicit test entry with mango; no mask -> all ignore.
    assert_eq!(s.test.classes_of(0), vec![2]);
    assert!(s.test.seg_of(0).iter().all(|&v| v == SEG_IGNORE));
    // c.png is the explicit val entry with no labels.
    assert!(s.val.classes_of(0).is_empty());
    // Every shuffled entry has apple only.
    for ds in [&s.train, &s.val, &s.test] {
        for i in 1..ds.len() {
            assert_eq!(ds.classes_of(i), vec![1], "{}", ds.name);
        }
    }
    // Deterministic: same seed same splits; another seed moves some shuffled entry.
    let again = load_folder(&folder_cfg(dir.path())).unwrap();
    assert_eq!(again, s);
    let moved = (1..40).any(|seed| {
        let o = load_folder(&FolderConfig {
            seed,
            ..folder_cfg(dir.path())
        })
        .unwrap();
        o.train.images != s.train.images
    });
    assert!(moved, "the seed never changes the split");
}

#[test]
fn folder_json_and_sorted_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    solid(&root.join("x.png"), 6, 4, [10, 20, 30]);
    solid(&root.join("y.png"), 6, 4, [30, 20, 10]);
    std::fs::write(
        root.join("labels.json"),
        r#"[{"file": "x.png", "labels": ["pear", "fig"], "split": "train"},
            {"file": "y.png", "labels": ["fig"], "split": "test"}]"#,
    )
    .unwrap();
    let s = load_folder(&folder_cfg(root)).unwrap();
    assert_eq!(s.train.class_names, vec!["fig", "pear"]);
    assert_eq!(s.train.classes_of(0), vec![0, 1]);
    assert_eq!(s.test.classes_of(0), vec![0]);
    assert!(s.val.is_empty());
}

#[test]
fn folder_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    folder_fixture(root);
    let csv_path = root.join("labels.csv");
    let good = std::fs::read_to_string(&csv_path).unwrap();

    // Unknown class on the third line of the file.
    std::fs::write(&csv_path, good.replace("mango", "kiwi")).unwrap();
    let e = err_text(load_folder(&folder_cfg(root)));
    assert!(
        e.contains("labels.csv line 3") && e.contains("unknown class 'kiwi'"),
        "{e}"
    );

    // Missing image.
    std::fs::write(&csv_path, good.replace("img/c.png", "img/gone.png")).unwrap();
    let e = err_text(load_folder(&folder_cfg(root)));
    assert!(e.contains("gone.png") && e.contains("line 4"), "{e}");

    // Missing mask with require_masks.
    std::fs::write(&csv_path, &good).unwrap();
    let e = err_text(load_folder(&FolderConfig {
        require_masks: true,
        ..folder_cfg(root)
    }));
    assert!(e.contains("masks") && e.contains("require_masks"), "{e}");

    // A mask class the labels do not list.
    grey_mask(
        &root.join("masks/c.png"),
        3,
        3,
        vec![0, 0, 0, 0, 3, 0, 0, 0, 0],
    );
    let e = err_text(load_folder(&folder_cfg(root)));
    assert!(e.contains("c.png") && e.contains("'mango'"), "{e}");
    std::fs::remove_file(root.join("masks/c.png")).unwrap();

    // Bad header and bad split.
    std::fs::write(&csv_path, "path,labels\nimg/a.png,zebra\n").unwrap();
    let e = err_text(load_folder(&folder_cfg(root)));
    assert!(e.contains("labels.csv") && e.contains("'file'"), "{e}");
    std::fs::write(&csv_path, "file,labels,split\nimg/a.png,zebra,holdout\n").unwrap();
    let e = err_text(load_folder(&folder_cfg(root)));
    assert!(e.contains("line 2") && e.contains("holdout"), "{e}");
    std::fs::remove_file(&csv_path).unwrap();
    let e = err_text(load_folder(&folder_cfg(root)));
    assert!(e.contains("labels.csv or labels.json"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST (real files)

fn fashion_dir() -> Option<PathBuf> {
    let d = PathBuf::from(DEFAULT_FASHION_DIR);
    if d.join("train-images-idx3-ubyte.gz").is_file() || d.join("train-images-idx3-ubyte").is_file()
    {
        Some(d)
    } else {
        eprintln!(
            "SKIPPED: no Fashion-MNIST in {DEFAULT_FASHION_DIR}; install dataset-fashion-mnist"
        );
        None
    }
}

#[test]
fn fashion_mnist_real_files_have_the_published_counts() {
    let Some(dir) = fashion_dir() else { return };
    let d = load_fashion_mnist(&dir).unwrap();
    assert_eq!(
        (d.train_images.n, d.train_images.rows, d.train_images.cols),
        (60000, 28, 28)
    );
    assert_eq!(d.test_images.n, 10000);
    // Fashion-MNIST is balanced: 6000 train and 1000 test photos per class.
    for k in 0..10u8 {
        assert_eq!(d.train_labels.iter().filter(|&&l| l == k).count(), 6000);
        assert_eq!(d.test_labels.iter().filter(|&&l| l == k).count(), 1000);
    }
}

#[test]
fn fashion_canvas_from_real_files() {
    let Some(dir) = fashion_dir() else { return };
    let cfg = FashionCanvasConfig {
        dir: dir.clone(),
        n_train: 24,
        n_val: 6,
        n_test: 6,
        seed: 4,
        ..FashionCanvasConfig::default()
    };
    let s = generate_fashion_canvas(&cfg).unwrap();
    s.validate().unwrap();
    assert_eq!(s.train.class_names[0], "t_shirt_top");
    assert_eq!(s.train.class_names[9], "ankle_boot");
    for ds in [&s.train, &s.val, &s.test] {
        for i in 0..ds.len() {
            let k = ds.classes_of(i);
            assert!((1..=3).contains(&k.len()), "{} image {i}: {k:?}", ds.name);
            for c in k {
                assert!(ds.class_mask(i, c).iter().any(|&m| m));
            }
        }
    }
    let data = load_fashion_mnist(&dir).unwrap();
    for i in 0..6 {
        let v = render_canvas(&cfg, &data, "val", i).unwrap();
        assert_eq!(v.image, s.val.image(i));
        for it in &v.info.items {
            assert!(it.photo >= 55000, "val item from the training part");
            assert_eq!(data.train_labels[it.photo] as usize, it.class);
        }
        let t = render_canvas(&cfg, &data, "test", i).unwrap();
        for it in &t.info.items {
            assert_eq!(data.test_labels[it.photo] as usize, it.class);
        }
    }
}
