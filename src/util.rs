//! Small shared helpers: atomic file writes, deterministic seeding, and serde helpers for
//! human-readable config text.

use anyhow::{Context, Result};
use serde::Serializer;
use std::path::Path;
use std::sync::Mutex;

/// Serialises every use of burn's process-wide random generator.
static BURN_RNG_LOCK: Mutex<()> = Mutex::new(());

/// Seeds burn's process-wide generator and runs `draw` while no other thread can use it, so
/// the draws depend on `seed` alone. Every random draw through burn (initialisers,
/// `Tensor::random`) in this crate goes through here.
pub fn with_burn_rng<T>(device: &burn::prelude::Device, seed: u64, draw: impl FnOnce() -> T) -> T {
    let _guard = BURN_RNG_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    draw()
}

/// A tensor of `shape` drawn from `distribution` with burn's generator seeded by `seed`, under
/// [`with_burn_rng`]: the same seed gives the same tensor whatever runs in parallel.
pub fn seeded_random<const D: usize>(
    shape: [usize; D],
    distribution: burn::tensor::Distribution,
    device: &burn::prelude::Device,
    seed: u64,
) -> burn::prelude::Tensor<D> {
    with_burn_rng(device, seed, || {
        burn::prelude::Tensor::<D>::random(shape, distribution, device)
    })
}

/// Forces every lazily initialised parameter of `module` to draw its values now (burn defers
/// initialisation to first use, which would happen outside [`with_burn_rng`]).
pub fn materialize_params<M: burn::module::Module>(module: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, then a rename,
/// so an interrupted run never leaves a half-written model, checkpoint or report.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    // unique per host, process and call: cells on several machines may share the folder, and
    // cells running in threads of one process may write the same file at once
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}-{}-{call}",
        file_name.to_string_lossy(),
        host_name(),
        std::process::id()
    ));
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        // A full disk or a failed rename must not leave the temp file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Hash of a file's bytes (FNV-1a, hex), naming the file when it cannot be read.
pub fn file_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Fnv1a::default();
    h.write(&bytes);
    Ok(format!("{:016x}", h.finish()))
}

/// Exclusive ownership of a run folder (or of one cell of it) for the life of the process: a
/// second process that tries to write the same thing fails at once, naming the holder. The lock
/// is an OS file lock, so the kernel releases it when the holder exits or is killed; a lock file
/// left behind by a crash does not block anyone.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// The lock file's name inside a run folder.
pub const RUN_LOCK_FILE: &str = "run.lock";

impl RunLock {
    /// Takes the lock of `dir` (created if missing), or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        Self::acquire_file(
            &dir.join(RUN_LOCK_FILE),
            &format!(
                "{} is in use by another faithful process; a run folder has one writer: \
                 wait for it or choose another --out",
                dir.display()
            ),
        )
    }

    /// Takes the lock file `path` (its folder created if missing); `busy` says what a second
    /// taker is told, followed by the holder.
    pub fn acquire_file(path: &Path, busy: &str) -> Result<RunLock> {
        use std::io::{Seek, Write};
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if let Err(e) = file.try_lock() {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            anyhow::bail!(
                "{busy} ({}; {e})",
                if holder.is_empty() {
                    "holder unknown"
                } else {
                    holder
                }
            );
        }
        let me = format!(
            "pid {} on {}, since unix time {}",
            std::process::id(),
            host_name(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

/// This machine's name (for lock holders and temp files on shared folders).
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this-host".into())
}

/// Reads a JSON `null` as NaN: metrics that are undefined (NaN) are written as `null` by
/// serde_json.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// FNV-1a, a small stable hash: the same bytes give the same value on every machine and
/// version (unlike `std`'s hasher), as stage keys need.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Derives an independent, reproducible seed from a base seed and a stream label,
/// so that e.g. data generation and weight init never share random streams.
pub fn derive_seed(base: u64, stream: &str) -> u64 {
    // FNV-1a over the label, mixed with the base seed through splitmix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(base ^ h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The f64 with the same shortest decimal as `v` (0.3f32 -> 0.3f64, not 0.30000001192092896):
/// parsing it back as f32 gives `v` again.
fn shortest_f64(v: f32) -> f64 {
    format!("{v}").parse().unwrap_or(v as f64)
}

/// Serialises an f32 config field as its shortest decimal (`0.3`), for
/// `#[serde(serialize_with = "crate::util::ser_f32")]`: formats such as TOML widen f32 to f64
/// and would otherwise print `0.30000001192092896`.
pub fn ser_f32<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(shortest_f64(*v))
}

/// [`ser_f32`] for a pair of f32 (`[0.08, 1.0]`).
pub fn ser_f32_pair<S: Serializer>(v: &[f32; 2], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|&x| shortest_f64(x)))
}

/// The serde spelling of a value, as written in config files: a unit enum variant gives its
/// name (`PruneScope::Global` -> `global`, `SswaMode::FixedCount` -> `fixed-count`); any other
/// value gives its compact JSON text.
pub fn config_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<unprintable: {e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("faithful-util-{}", std::process::id()));
        let p = dir.join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("faithful-util-fail-{}", std::process::id()));
        // the target is an existing folder: the rename fails after the temp file was written
        let target = dir.join("occupied");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        let err = format!("{:#}", write_atomic(&target, b"x").unwrap_err());
        assert!(err.contains("occupied"), "{err}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["occupied"], "temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_folder_has_one_writer_until_the_lock_is_dropped() {
        let dir = std::env::temp_dir().join(format!("faithful-util-lock-{}", std::process::id()));
        let first = RunLock::acquire(&dir).unwrap();
        let err = format!("{:#}", RunLock::acquire(&dir).unwrap_err());
        assert!(
            err.contains("in use") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        // a lock file left behind (as after a crash) does not block the next writer
        assert!(dir.join(RUN_LOCK_FILE).exists());
        RunLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn derived_seeds_differ_by_stream_and_base() {
        assert_ne!(derive_seed(1, "data"), derive_seed(1, "init"));
        assert_ne!(derive_seed(1, "data"), derive_seed(2, "data"));
        assert_eq!(derive_seed(7, "x"), derive_seed(7, "x"));
    }

    #[derive(serde::Serialize)]
    struct Fields {
        #[serde(serialize_with = "ser_f32")]
        single: f32,
        #[serde(serialize_with = "ser_f32_pair")]
        pair: [f32; 2],
    }

    #[test]
    fn f32_fields_serialise_as_their_shortest_decimal() {
        let f = Fields {
            single: 0.3,
            pair: [0.08, 1.0],
        };
        let text = toml::to_string(&f).unwrap();
        assert!(text.contains("single = 0.3\n"), "{text}");
        assert!(text.contains("pair = [0.08, 1.0]"), "{text}");
        // without the helper, TOML widens through f64: the digits this module removes
        assert_eq!((0.3f32 as f64).to_string(), "0.30000001192092896");
        // the decimal parses back to the same f32
        for v in [0.3f32, 0.08, 1.0 / 3.0, 1e-7, 123456.79, -2.5] {
            assert_eq!(shortest_f64(v) as f32, v);
        }
    }

    #[test]
    fn config_names_are_the_serde_spellings() {
        use crate::compression::unstructured::PruneScope;
        use crate::matching::SswaMode;
        assert_eq!(config_name(&PruneScope::Global), "global");
        assert_eq!(config_name(&PruneScope::PerLayer), "per-layer");
        assert_eq!(config_name(&SswaMode::FixedCount), "fixed-count");
        assert_eq!(config_name(&SswaMode::Bernoulli), "bernoulli");
        assert_eq!(config_name(&3u8), "3");
    }

    /// Longest run of the digit `d` in `text`.
    fn longest_run(text: &str, d: char) -> usize {
        text.split(|c| c != d).map(str::len).max().unwrap_or(0)
    }

    #[test]
    fn config_text_has_short_decimals_and_round_trips() {
        use crate::config::ExperimentConfig;
        use crate::data::fashion::FashionCanvasConfig;
        use crate::data::folder::FolderConfig;
        use crate::data::source::DatasetSource;
        let demo = ExperimentConfig::demo();
        let text = demo.to_toml().unwrap();
        assert!(text.contains("false_cue_prob = 0.15\n"), "{text}");
        assert!(text.contains("cue_prob = 0.8\n"), "{text}");
        assert!(text.contains("teacher_cues = \"none\"\n"), "{text}");
        assert!(longest_run(&text, '0') < 7, "{text}");
        assert_eq!(ExperimentConfig::from_toml(&text).unwrap(), demo);

        // every other f32 field: fashion canvas and folder settings, crop scale, tolerance
        let mut cfg = ExperimentConfig::demo();
        cfg.student_train.crop_scale = [0.3, 0.9];
        cfg.eval.pointing_tolerance = 0.7;
        for source in [
            DatasetSource::FashionCanvas(FashionCanvasConfig {
                min_scale: 0.9,
                mask_threshold: 0.1,
                ..FashionCanvasConfig::default()
            }),
            DatasetSource::Folder(FolderConfig {
                val_fraction: 0.1,
                test_fraction: 0.2,
                ..FolderConfig::default()
            }),
        ] {
            cfg.dataset = source;
            let text = cfg.to_toml().unwrap();
            // pretty TOML spreads arrays over lines: compare without whitespace
            let compact: String = text.split_whitespace().collect();
            for want in ["crop_scale=[0.3,0.9,]", "pointing_tolerance=0.7"] {
                assert!(compact.contains(want), "{want} missing from {text}");
            }
            assert!(longest_run(&text, '0') < 7, "{text}");
            assert!(longest_run(&text, '9') < 7, "{text}");
            assert_eq!(ExperimentConfig::from_toml(&text).unwrap(), cfg);
        }
        assert!(cfg.to_toml().unwrap().contains("test_fraction = 0.2\n"));
    }
}
