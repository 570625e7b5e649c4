//! The wgpu backend on lavapipe (Mesa's Vulkan driver on the CPU), so the wgpu path never
//! regresses on machines without a GPU: builds the `wgpu` feature into `target/wgpu-ci`
//! (profile `wgpu-ci`; a target folder of its own, as the outer `cargo test` holds the main
//! one) and runs the op-by-op parity suite and the Grad-CAM fixture there with
//! `FAITHFUL_TEST_BACKEND=wgpu`. Skipped, with a
//! message, when Mesa's Vulkan driver is not installed (`apt-get install mesa-vulkan-drivers`)
//! or `FAITHFUL_SKIP_WGPU=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Mesa's lavapipe ICD, where Debian puts it.
fn lavapipe_icd() -> Option<PathBuf> {
    let dir = Path::new("/usr/share/vulkan/icd.d");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("lvp_icd"))
        })
}

#[test]
fn the_parity_suite_and_the_fixture_pass_on_wgpu_over_lavapipe() {
    if std::env::var("FAITHFUL_SKIP_WGPU").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: wgpu on lavapipe (FAITHFUL_SKIP_WGPU=1)");
        return;
    }
    let Some(icd) = lavapipe_icd() else {
        eprintln!(
            "SKIPPED: wgpu on lavapipe (no Mesa Vulkan driver; apt-get install \
             mesa-vulkan-drivers)"
        );
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .args([
            "test",
            "--profile",
            "wgpu-ci",
            "--features",
            "wgpu",
            "--target-dir",
        ])
        .arg(root.join("target/wgpu-ci"))
        .args(["--test", "op_parity", "--test", "gradcam_fixture"])
        .args(["--", "--nocapture", "--test-threads=1"])
        .env("FAITHFUL_TEST_BACKEND", "wgpu")
        // lavapipe only, even on a machine with a GPU: this test is about the CPU device
        .env("VK_ICD_FILENAMES", &icd)
        .env("CARGO_TERM_COLOR", "never")
        // wgpu asks for it; lavapipe needs none
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("cannot run cargo");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    // the parity table and the fixture's numbers, for the log
    for line in said
        .lines()
        .filter(|l| l.starts_with('|') || l.contains("test ") || l.contains("rel"))
    {
        println!("{line}");
    }
    assert!(output.status.success(), "wgpu on lavapipe failed:\n{said}");
    // with --nocapture the verdict line interleaves with the table: look for the table
    assert!(
        said.contains("| conv2d weight grad |") && said.contains("| batch-norm input grad |"),
        "the parity suite did not run:\n{said}"
    );
    if said.contains("SKIPPED: reference fixture not found") {
        eprintln!(
            "SKIPPED: the Grad-CAM fixture on wgpu (fixture not found; see gradcam_fixture.rs)"
        );
    }
}
