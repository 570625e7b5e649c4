//! Experiment configuration (TOML). The config used is saved next to every result, so every
//! number can be reproduced from its output folder with `faithful demo --config config.toml`.

use crate::compression::Method;
use crate::compression::kd::Distillation;
use crate::compression::structured::FilterPruning;
use crate::compression::unstructured::MagnitudePruning;
use crate::data::Dataset;
use crate::data::source::DatasetSource;
use crate::data::synthetic::{SyntheticConfig, TeacherCues};
use crate::evaluation::EvalConfig;
use crate::matching;
use crate::models::{Arch, VggArch};
use crate::training::{MatchConfig, Normalization, OptimizerKind, TrainConfig};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Teacher settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// Architecture (the students derive theirs from it): `family = "vgg"` (the default) or
    /// `"resnet"`, with that family's settings.
    pub arch: Arch,
    /// Supervised training.
    pub train: TrainConfig,
    /// torchvision VGG-BN weights (`.safetensors` or `.pth`) to start from instead of a random
    /// init; `arch` must then be the matching torchvision layout (e.g. `layout = "vgg16"`,
    /// `hidden = [4096, 4096]`, 224 input). The last classifier layer is replaced by a fresh
    /// one when the dataset has other than 1000 classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<std::path::PathBuf>,
}

/// Where the per-channel input normalisation comes from.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InputNorm {
    /// Mean and std of the training split (VOC's own statistics for VOC).
    #[default]
    Dataset,
    /// ImageNet's mean and std, as torchvision's pretrained networks expect.
    Imagenet,
}

impl InputNorm {
    /// The normalisation for a training split.
    pub fn of(self, train: &Dataset) -> Normalization {
        match self {
            InputNorm::Dataset => Normalization::of(train),
            InputNorm::Imagenet => Normalization {
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
            },
        }
    }
}

/// Report settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Number of heat-map overlay rows to draw.
    pub overlays: usize,
    /// Upscaling of overlay panels.
    pub overlay_scale: u32,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            overlays: 8,
            overlay_scale: 3,
        }
    }
}

/// Defines [`ExperimentConfig`] with one settings section per compression method, and the
/// method registry ([`ExperimentConfig::methods`]) from the same list: a new compression method
/// is its own file (settings struct implementing [`Method`] and `Compression`) plus one line in
/// the `methods` list below. The section is named as the field (`[kd]`, `[structured]`, ...).
macro_rules! experiment_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$bmeta:meta])* pub $bfield:ident: $bty:ty,)*
        }
        methods {
            $($(#[$mmeta:meta])* pub $mfield:ident: $mty:ty,)+
        }
        then {
            $($(#[$ameta:meta])* pub $afield:ident: $aty:ty,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$bmeta])* pub $bfield: $bty,)*
            $($(#[$mmeta])* pub $mfield: $mty,)+
            $($(#[$ameta])* pub $afield: $aty,)*
        }

        impl $name {
            /// Every compression method with its config section: the registry of methods, in
            /// the order of the list above.
            pub fn methods(&self) -> Vec<&dyn Method> {
                vec![$(&self.$mfield),+]
            }
        }
    };
}

experiment_config! {
    /// A whole knowledge-distillation experiment: data, teacher, students, matching, evaluation.
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    pub struct ExperimentConfig {
        /// Seeds; each seed trains its own teacher and students (the data stay fixed by `data.seed`).
        pub seeds: Vec<u64>,
        /// Regularizers to compare (`none`, `ewa`, `swa`, `sswa`).
        pub regularizers: Vec<String>,
        /// Which dataset: `[dataset] source = "synthetic" | "fashion-canvas" | "voc" | "folder"`
        /// with that source's settings (default: synthetic).
        pub dataset: DatasetSource,
        /// Settings of the built-in synthetic dataset (used when `dataset.source = "synthetic"`).
        pub data: SyntheticConfig,
        /// Input normalisation: the training split's channel statistics (`dataset`, default), or
        /// ImageNet's (`imagenet`, for torchvision-pretrained teachers).
        pub input_norm: InputNorm,
        /// The teacher.
        pub teacher: TeacherConfig,
        /// Compression methods to run: `kd`, `unstructured`, `structured`.
        pub compressions: Vec<String>,
    }
    methods {
        /// Distillation settings (student width, temperature, alpha).
        pub kd: Distillation,
        /// Iterative magnitude pruning settings.
        pub unstructured: MagnitudePruning,
        /// L1 filter pruning settings.
        pub structured: FilterPruning,
        /// Quantization-aware fine-tuning settings.
        pub quantize: crate::compression::quantize::Quantization,
    }
    then {
        /// Fine-tuning of pruned networks (each unstructured round, and the structured network).
        pub prune_train: TrainConfig,
        /// Student fine-tuning.
        pub student_train: TrainConfig,
        /// Attribution matching.
        pub matching: MatchConfig,
        /// Evaluation.
        pub eval: EvalConfig,
        /// Report.
        pub report: ReportConfig,
        /// ROAR: remove the maps' top pixels and retrain (off by default).
        pub roar: crate::evaluation::roar::RoarConfig,
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self::demo()
    }
}

impl ExperimentConfig {
    /// The default demo: about half an hour per seed on 2 CPU cores.
    pub fn demo() -> Self {
        let train = TrainConfig {
            batch_size: 32,
            lr: 0.05,
            ..TrainConfig::default()
        };
        ExperimentConfig {
            seeds: vec![0],
            regularizers: matching::PAPER.iter().map(|s| s.to_string()).collect(),
            // The teacher trains on the training images without their context cues, so it
            // looks at objects; the students are distilled on the cue-rich images (the
            // dataset's cue rates, 0.8 and 0.15), where a /8 network learns the shortcut unless
            // attribution matching holds it to the teacher's maps. With one teacher on cue-rich
            // data the claims depended on how far each seed's teacher leaned on cues (README,
            // "The demo").
            dataset: DatasetSource::Synthetic,
            input_norm: InputNorm::Dataset,
            // 2000 test images: the claims compare point accuracies a few points apart, over the
            // pairs each network predicts; on 500 images that comparison is within test noise
            // (README, "The demo"). The test split is not part of any stage key, so this only
            // costs evaluation time.
            // 1000 training images: the /8 students are then data-limited, as the paper's are
            // on VOC (their mAP on the un-augmented training images is about 6 points above
            // test), and the teacher's maps are supervision they lack, so matching raises their
            // mAP (claim 3). On 3000 images they were capacity-limited (training and test mAP
            // within about 1 point), matching cost them 0.3-1.0 mAP on average, and per-seed
            // verdicts on claims 2 and 3 went with the initial weights (README, "The demo").
            data: SyntheticConfig {
                n_train: 1000,
                n_test: 2000,
                teacher_cues: TeacherCues::None,
                ..SyntheticConfig::default()
            },
            teacher: TeacherConfig {
                arch: Arch::Vgg(VggArch::default()),
                // SGD with a budget of at least 2500 steps: a from-scratch VGG leaves its
                // initial plateau after a number of steps, not epochs, so a small dataset trains
                // for more epochs (README, "Teacher recipe").
                train: TrainConfig {
                    epochs: 30,
                    min_steps: 2500,
                    ..train.clone()
                },
                pretrained: None,
            },
            compressions: vec!["kd".into()],
            // Three students per regularizer and seed, from three initial weights; the claims
            // compare per-seed means. Within one seed and teacher, single /8 naive students'
            // mAP moved by up to 3.6 points (87.7-91.3 on seed 1) and their pointing accuracy by up
            // to 10.5 (53.0-63.5 on seed 0) with the initial weights alone, as large as the
            // effect the claims test, so a one-draw verdict is mostly a verdict on the draw
            // (README, "The demo"). Lockstep students share the teacher's forward pass: three
            // replicates cost about twice one.
            kd: Distillation {
                replicates: 3,
                ..Distillation::default()
            },
            unstructured: MagnitudePruning::default(),
            structured: FilterPruning::default(),
            quantize: Default::default(),
            prune_train: TrainConfig {
                epochs: 5,
                lr: 0.01,
                ..train.clone()
            },
            // Gradient clipping at norm 1 per tensor, for every regularizer (naive included):
            // the normalised-map loss has gradients of order 1/||map||, which explode while a
            // tiny student's map is near zero; unclipped, /8 students collapse (README).
            // 60 epochs: on the earlier 3000 images, 30 left the /8 students short of what
            // their width can do (their curves flattened only because the cosine schedule
            // ended) and 60 brought each regularizer's spread over seeds from up to 8 mAP points
            // to under 2 (README, "The demo"); on 1000 images 60 epochs are a third of those
            // steps.
            student_train: TrainConfig {
                epochs: 60,
                grad_clip: 1.0,
                ..train
            },
            // beta ramps up over the first 5 student epochs: the /8 student first learns from
            // the task loss (README, "Method and options").
            matching: MatchConfig {
                warmup_epochs: 5.0,
                ..MatchConfig::default()
            },
            eval: EvalConfig::default(),
            report: ReportConfig::default(),
            roar: crate::evaluation::roar::RoarConfig::default(),
        }
    }

    /// A smaller version: 70-110 s on 2 cores (a smoke run, not a fair test).
    pub fn quick() -> Self {
        let mut cfg = Self::demo();
        // 32x32 images: four times fewer pixels, so the teacher gets past its initial plateau
        // (about 1000 steps) within the budget; maps are 4x4.
        cfg.data.size = 32;
        cfg.data.n_train = 2000;
        cfg.data.n_val = 100;
        cfg.data.n_test = 300;
        // AdamW for the smoke run's teacher: with SGD it sat on its base-rate plateau for
        // about 550 steps and needed 26 epochs of 62 steps to reach validation mAP 50; AdamW
        // at lr 0.002 gets there in 12 (README, "The demo"), half the compute
        cfg.teacher.train.optimizer = OptimizerKind::Adamw;
        cfg.teacher.train.lr = 0.002;
        // No head dropout (teacher and students): with the demo's 0.5 the teacher left its
        // plateau at epoch 8 and reached test mAP 52.2 in 12 epochs; without, it leaves at
        // epoch 3 and reaches 56.8 in 8 (README, "The demo"). Lr 0.004 kept it on the plateau.
        cfg.teacher.arch = cfg.teacher.arch.with_dropout(0.0);
        cfg.teacher.train.epochs = 8;
        // a smoke run keeps its fixed budget (2000 images: 62 steps per epoch)
        cfg.teacher.train.min_steps = 0;
        // 3 epochs: the /2 students are off their plateau (none flagged; test mAP 38-40
        // against 34-39 after 5 epochs under the dropout-0.5 teacher)
        cfg.student_train.epochs = 3;
        cfg.eval.faithfulness.pairs = 50;
        // At /8 (or /4) the 32 px students stay on the base-rate plateau for all 10 epochs
        // (predicting nothing: the health checks flag them); /2 students leave it in time.
        cfg.kd.width_divisor = 2;
        // one student per regularizer: a smoke run
        cfg.kd.replicates = 1;
        cfg.matching.warmup_epochs = 2.0;
        cfg.report.overlays = 4;
        cfg.report.overlay_scale = 4;
        cfg
    }

    /// Reads a TOML config, naming the file in errors.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg = Self::from_toml(&text)
            .with_context(|| format!("{}: invalid config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(cfg)
    }

    /// Parses TOML on top of the demo config: every key not given, at any depth, keeps the
    /// demo's value (so `[teacher.train]` with only `epochs` keeps the demo's batch size).
    pub fn from_toml(text: &str) -> Result<Self> {
        let mut given: toml::Table = toml::from_str(text)?;
        legacy_attribution_key(&mut given)?;
        legacy_teacher_cues(&mut given);
        let mut merged = toml::Table::try_from(Self::demo())?;
        merge(&mut merged, given);
        Ok(toml::Value::Table(merged).try_into()?)
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Checks every part before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            bail!("seeds must list at least one seed");
        }
        if let Some(dup) = first_duplicate(&self.seeds) {
            bail!("seeds lists {dup} twice: a repeated seed would count as two runs");
        }
        if let Some(dup) = first_duplicate(&self.regularizers) {
            bail!("regularizers lists '{dup}' twice");
        }
        if let Some(dup) = first_duplicate(&self.compressions) {
            bail!("compressions lists '{dup}' twice");
        }
        if self.regularizers.is_empty() {
            bail!(
                "regularizers must list at least one of {}",
                matching::names().join(", ")
            );
        }
        for c in &self.compressions {
            self.method(c)?;
        }
        if self.compressions.is_empty() {
            bail!(
                "compressions must list at least one of {}",
                self.method_names().join(", ")
            );
        }
        self.prune_train.validate("prune_train")?;
        for method in self.methods() {
            method.validate()?;
        }
        self.matching.validate(&self.regularizers)?;
        self.kd.validate()?;
        if self.dataset == DatasetSource::Synthetic {
            self.data.validate()?;
        }
        let (num_classes, input_size) = self.dataset.shape_hint(&self.data);
        let arch = self.teacher_arch_for(num_classes, input_size);
        arch.validate().context("teacher.arch")?;
        let quantizes = |c: &String| c.split('+').any(|p| p == "quantize");
        if matches!(arch, Arch::Quant(_)) && self.compressions.iter().any(quantizes) {
            bail!(
                "quantize is not implemented for a teacher that is quantized already (family \
                 `quantized`); quantize its float base"
            );
        }
        if self
            .compressions
            .iter()
            .any(|c| c.split('+').any(|p| p == "structured"))
        {
            self.structured.check_family(&arch)?;
        }
        arch.thinner(self.kd.width_divisor)
            .validate()
            .context("student architecture (teacher.arch with kd.width_divisor)")?;
        self.teacher.train.validate("teacher.train")?;
        self.student_train.validate("student_train")?;
        self.eval.validate()?;
        self.roar.validate(&self.regularizers)?;
        Ok(())
    }

    /// Names of every compression method.
    pub fn method_names(&self) -> Vec<&'static str> {
        self.methods().iter().map(|m| m.name()).collect()
    }

    /// The compression method `name`; an unknown name is an error listing the known ones.
    pub fn method(&self, name: &str) -> Result<Box<dyn Method + '_>> {
        let one = |part: &str| {
            self.methods()
                .into_iter()
                .find(|m| m.name() == part)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown compression '{part}' (known: {}, or a chain of them such as \
                         kd+quantize)",
                        self.method_names().join(", ")
                    )
                })
        };
        if !name.contains('+') {
            return Ok(Box::new(crate::compression::Single(one(name)?)));
        }
        let parts = name
            .split('+')
            .map(|p| one(p.trim()))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("compression chain '{name}'"))?;
        if parts.len() < 2 || parts.windows(2).any(|w| w[0].name() == w[1].name()) {
            bail!("compression chain '{name}' must join different methods with '+'");
        }
        Ok(Box::new(crate::compression::Chain {
            name: crate::compression::chain_name(name),
            parts,
        }))
    }

    /// The teacher architecture for the synthetic dataset's classes and image size.
    pub fn teacher_arch(&self) -> Arch {
        self.teacher_arch_for(self.data.num_classes, self.data.size)
    }

    /// The teacher architecture with a loaded dataset's classes and image size filled in.
    pub fn teacher_arch_for(&self, num_classes: usize, input_size: usize) -> Arch {
        self.teacher.arch.for_data(num_classes, input_size)
    }
}

/// The first value that occurs twice in `items`.
fn first_duplicate<T: PartialEq + std::fmt::Display>(items: &[T]) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find(|(i, x)| items[..*i].contains(x))
        .map(|(_, x)| x)
}

/// A `[data]` table that sets its own cue rates but not `teacher_cues` was written before the
/// teacher could train on other images than its students (every config saved with a result
/// before this key existed lists both rates): its teacher trains on the dataset's images, as it
/// did then, so that the saved config still reproduces its numbers. The demo's cue-free teacher
/// belongs with the demo's cue rates.
fn legacy_teacher_cues(given: &mut toml::Table) {
    let Some(toml::Value::Table(data)) = given.get_mut("data") else {
        return;
    };
    let sets_rates = data.contains_key("cue_prob") || data.contains_key("false_cue_prob");
    if sets_rates && !data.contains_key("teacher_cues") {
        data.insert("teacher_cues".into(), "dataset".into());
    }
}

/// Configs written before several attribution methods could be evaluated say
/// `[eval] attribution = "name"`; that is `attributions = ["name"]` now.
fn legacy_attribution_key(given: &mut toml::Table) -> Result<()> {
    let Some(toml::Value::Table(eval)) = given.get_mut("eval") else {
        return Ok(());
    };
    let Some(old) = eval.remove("attribution") else {
        return Ok(());
    };
    if eval.contains_key("attributions") {
        bail!("[eval] has both `attribution` and `attributions`: keep `attributions` (a list)");
    }
    eval.insert("attributions".into(), old);
    Ok(())
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else is replaced. A table
/// that names another network `family` than the base's replaces it whole: a ResNet does not
/// inherit the default VGG's settings.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("family").is_none_or(|f| b.get("family") == Some(f)) =>
            {
                merge(b, o)
            }
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_lists_are_checked_and_the_old_single_key_still_reads() {
        let old = ExperimentConfig::from_toml("[eval]\nattribution = \"lrp\"\n").unwrap();
        assert_eq!(old.eval.attributions, vec!["lrp".to_string()]);
        let many =
            ExperimentConfig::from_toml("[eval]\nattributions = [\"gradcam\", \"rap\"]\n").unwrap();
        assert_eq!(many.eval.primary_attribution(), "gradcam");
        many.validate().unwrap();
        let both = "[eval]\nattribution = \"lrp\"\nattributions = [\"rap\"]\n";
        assert!(format!("{:#}", ExperimentConfig::from_toml(both).unwrap_err()).contains("both"));
        for (list, says) in [
            ("[]", "empty"),
            ("[\"gradcam\", \"gradcam\"]", "twice"),
            (
                "[\"gradcam\", \"saliency-by-magic\"]",
                "unknown attribution method",
            ),
        ] {
            let cfg =
                ExperimentConfig::from_toml(&format!("[eval]\nattributions = {list}\n")).unwrap();
            let e = format!("{:#}", cfg.validate().unwrap_err());
            assert!(e.contains(says), "{list}: {e}");
        }
    }

    #[test]
    fn a_teacher_of_another_family_does_not_inherit_the_default_vgg_settings() {
        let cfg = ExperimentConfig::from_toml(
            "[teacher.arch]\nfamily = \"resnet\"\nlayout = \"1,1,1\"\nbase_width = 8\n",
        )
        .unwrap();
        let Arch::ResNet(arch) = &cfg.teacher.arch else {
            panic!("expected a resnet, got {:?}", cfg.teacher.arch)
        };
        assert_eq!((arch.layout.as_str(), arch.base_width), ("1,1,1", 8));
        cfg.validate().unwrap();
        // a VGG table without a family still merges into the default
        let cfg = ExperimentConfig::from_toml("[teacher.arch]\nwidth_divisor = 2\n").unwrap();
        assert_eq!(cfg.teacher.arch.width_divisor(), 2);
        assert_eq!(cfg.teacher.arch.layout_name(), "small");
        // and a saved resnet config reloads exactly
        let resnet = ExperimentConfig::from_toml("[teacher.arch]\nfamily = \"resnet\"\n").unwrap();
        let again = ExperimentConfig::from_toml(&resnet.to_toml().unwrap()).unwrap();
        assert_eq!(again, resnet);
    }

    #[test]
    fn structured_settings_are_checked_against_a_resnet_teacher_before_training() {
        let resnet = "[teacher.arch]\nfamily = \"resnet\"\nlayout = \"1,1\"\n";
        let text = format!("compressions = [\"structured\"]\n[structured]\nlayers = [0]\n{resnet}");
        let e = ExperimentConfig::from_toml(&text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(format!("{e:#}").contains("vgg family only"), "{e:#}");
        // a pruned resnet's explicit widths are a config table too, and round-trip
        let text = format!(
            "{resnet}[[teacher.arch.widths]]\nout = 3\nmid = [2]\n\
             [[teacher.arch.widths]]\nout = 5\nmid = [4]\n"
        );
        let cfg = ExperimentConfig::from_toml(&text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.teacher.arch.attribution_shape().unwrap().0, 5);
        assert_eq!(
            ExperimentConfig::from_toml(&cfg.to_toml().unwrap()).unwrap(),
            cfg
        );
    }

    #[test]
    fn presets_validate_and_round_trip_through_toml() {
        for cfg in [ExperimentConfig::demo(), ExperimentConfig::quick()] {
            cfg.validate().unwrap();
            let back: ExperimentConfig = toml::from_str(&cfg.to_toml().unwrap()).unwrap();
            assert_eq!(back, cfg);
        }
    }

    /// A saved config is reloaded on top of the demo's settings, so a field left out of the
    /// saved text would silently take the demo's value: every preset and a config whose
    /// values differ from the demo's must survive `to_toml` -> `from_toml` unchanged.
    #[test]
    fn saved_configs_reload_exactly_through_the_demo_merge() {
        let mut other = ExperimentConfig::demo();
        other.teacher.train.warmup_epochs = 0.0;
        other.teacher.train.optimizer = crate::training::OptimizerKind::Sgd;
        other.student_train.grad_clip = 0.0;
        other.matching.beta_scale = crate::matching::BetaScale::PerPosition;
        other.eval.pairs = crate::evaluation::PairSet::Present;
        for cfg in [ExperimentConfig::demo(), ExperimentConfig::quick(), other] {
            let back = ExperimentConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn configs_with_their_own_cue_rates_keep_the_teacher_on_their_images() {
        use crate::data::synthetic::TeacherCues;
        assert_eq!(
            ExperimentConfig::demo().data.teacher_cues,
            TeacherCues::None
        );
        let no_cues = ExperimentConfig::from_toml("[data]\nn_train = 10\n").unwrap();
        assert_eq!(no_cues.data.teacher_cues, TeacherCues::None);
        for table in ["cue_prob = 0.5", "false_cue_prob = 0.3"] {
            let own = ExperimentConfig::from_toml(&format!("[data]\n{table}\n")).unwrap();
            assert_eq!(own.data.teacher_cues, TeacherCues::Dataset, "{table}");
        }
        let explicit =
            ExperimentConfig::from_toml("[data]\ncue_prob = 0.5\nteacher_cues = \"none\"\n")
                .unwrap();
        assert_eq!(explicit.data.teacher_cues, TeacherCues::None);
        let bad = ExperimentConfig::from_toml("[data]\nteacher_cues = \"some\"\n");
        assert!(bad.is_err());
        // every result saved before the key existed keeps its teacher on the students' images
        let mut checked = 0;
        for dir in std::fs::read_dir("docs/results").unwrap() {
            let path = dir.unwrap().path().join("config.toml");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if text.contains("teacher_cues") {
                continue;
            }
            let cfg = ExperimentConfig::load(&path).unwrap();
            if cfg.dataset == crate::data::source::DatasetSource::Synthetic {
                assert_eq!(cfg.data.teacher_cues, TeacherCues::Dataset, "{path:?}");
                checked += 1;
            }
        }
        assert!(checked >= 5, "only {checked} saved configs checked");
    }

    #[test]
    fn partial_tables_keep_the_demo_values_of_missing_keys() {
        let cfg =
            ExperimentConfig::from_toml("[teacher.train]\nepochs = 3\n[data]\nn_train = 10\n")
                .unwrap();
        let demo = ExperimentConfig::demo();
        assert_eq!(cfg.teacher.train.epochs, 3);
        assert_eq!(cfg.teacher.train.batch_size, demo.teacher.train.batch_size);
        assert_eq!(cfg.data.n_train, 10);
        assert_eq!(cfg.data.cue_prob, demo.data.cue_prob);
        assert_eq!(cfg.student_train, demo.student_train);
    }

    #[test]
    fn settings_that_would_train_silently_wrong_are_rejected_before_any_work() {
        let bad = [
            ("seeds = [0, 0]", "twice"),
            ("[matching]\nbeta_swa = nan", "beta_swa"),
            ("[matching]\nbeta_ewa = -1.0", "beta_ewa"),
            ("[matching]\nbeta_swa = 0.0", "beta_swa"),
            ("[kd]\nalpha = 2.0", "kd.alpha"),
            ("[kd]\ntemperature = 0.0", "kd.temperature"),
            ("[student_train]\nwarmup_epochs = -1.0", "warmup_epochs"),
            ("[matching]\ndrop = 1.5", "drop"),
        ];
        for (text, needle) in bad {
            let cfg = ExperimentConfig::from_toml(text).unwrap();
            let err = format!("{:#}", cfg.validate().unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
        // beta 0 is fine when only naive KD runs
        let ok =
            ExperimentConfig::from_toml("regularizers = [\"none\"]\n[matching]\nbeta_swa = 0.0");
        ok.unwrap().validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_file_name() {
        let dir = std::env::temp_dir().join(format!("faithful-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "seeds = [0]\nregularizers = [\"fancy\"]\n").unwrap();
        let err = format!("{:#}", ExperimentConfig::load(&p).unwrap_err());
        assert!(err.contains("bad.toml") && err.contains("fancy"), "{err}");
        std::fs::write(&p, "colour = 3\n").unwrap();
        let err = format!("{:#}", ExperimentConfig::load(&p).unwrap_err());
        assert!(err.contains("colour"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
