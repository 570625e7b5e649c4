//! `bench --compare` end to end against a stand-in for the Python side (a shell script that
//! speaks the same line protocol with fixed timings), so the protocol, the interleaving and the
//! table are checked without PyTorch; and a missing interpreter is a clear error.

use burn::prelude::Device;
use faithful::bench::compare::{CompareOptions, compare};
use faithful::config::ExperimentConfig;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn tiny_config() -> ExperimentConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ci.toml");
    ExperimentConfig::load(&path).unwrap()
}

fn options(python: &Path) -> CompareOptions {
    CompareOptions {
        rounds: 2,
        iters: 1,
        python: python.display().to_string(),
        batch: 4,
        eval_batch: 4,
    }
}

#[test]
fn rounds_interleave_with_the_python_side_and_the_table_holds_both() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-python");
    // answers `round` with 10 ms for the teacher step (PyTorch) and 2 ms for the teacher's
    // single-image inference (onnxruntime); counts its rounds in a file
    let count = dir.path().join("rounds");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho '{{\"ready\": true, \"torch\": \"0-fake\", \"onnxruntime\": \"0-fake\"}}'\n\
             while read line; do\n\
               if [ \"$line\" = round ]; then echo r >> {count}; echo '{{\"pytorch\": {{\"teacher train step\": {{\"ms\": 10, \"peak_mb\": 5}}}}, \"onnxruntime\": {{\"teacher inference, 1 image\": {{\"ms\": 2, \"peak_mb\": 5}}}}}}'; fi\n\
               if [ \"$line\" = quit ]; then exit 0; fi\n\
             done\n",
            count = count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = dir.path().join("work");
    let result = compare(&tiny_config(), &options(&fake), &Device::flex(), &work).unwrap();
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
    assert!(!work.exists(), "the scratch folder is removed");
    assert_eq!(
        result.versions.get("pytorch").map(String::as_str),
        Some("0-fake")
    );
    let ours = result.median_ms("teacher train step", "faithful").unwrap();
    assert!(ours > 0.0);
    assert_eq!(
        result.median_ms("teacher train step", "pytorch"),
        Some(10.0)
    );
    assert_eq!(
        result.median_ms("teacher inference, 1 image", "onnxruntime"),
        Some(2.0)
    );
    // faithful's own stages cover training, attribution and inference of every network
    for stage in [
        "student KD step",
        "student KD + SSWA step",
        "fixture Grad-CAM-loss step",
        "teacher Grad-CAM maps",
        "teacher-97%-pruned inference, 4 images",
    ] {
        assert!(result.median_ms(stage, "faithful").is_some(), "{stage}");
    }
    assert!(
        result
            .median_ms("teacher-97%-pruned inference, 4 images", "faithful-runtime")
            .is_some()
    );
    let table = result.markdown();
    let row = table
        .lines()
        .find(|l| l.starts_with("| teacher train step |"))
        .unwrap();
    assert!(row.contains(&format!("{:.2}×", ours / 10.0)), "{row}");
    assert!(table.contains("the sparse runtime is"), "{table}");
    assert!(table.contains("of the MAC ratio"), "{table}");
}

#[test]
fn a_missing_interpreter_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-python");
    let err = compare(
        &tiny_config(),
        &options(&missing),
        &Device::flex(),
        &dir.path().join("w"),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no-such-python") && msg.contains("torch"),
        "{msg}"
    );
}
