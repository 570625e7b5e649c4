//! Which dataset an experiment uses: the built-in synthetic shapes, Fashion-MNIST canvases,
//! PASCAL VOC 2012, or a user's folder. Selected in the experiment TOML by `[dataset] source`.

use super::fashion::{FashionCanvasConfig, generate_fashion_canvas};
use super::folder::{FolderConfig, load_folder};
use super::synthetic::{self, SyntheticConfig};
use super::voc::{VocConfig, load_voc};
use super::{Dataset, Splits};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The data source of an experiment. `synthetic` takes its settings from the experiment's
/// `[data]` table (kept there so that older configs still load); the others carry their own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum DatasetSource {
    /// The built-in procedural shapes (settings in `[data]`).
    #[default]
    Synthetic,
    /// Fashion-MNIST photographs pasted on cluttered canvases.
    FashionCanvas(FashionCanvasConfig),
    /// PASCAL VOC 2012 in its standard folder layout.
    Voc(VocConfig),
    /// A folder of images with a label file and optional masks.
    Folder(FolderConfig),
}

impl DatasetSource {
    /// Short name for reports and errors.
    pub fn name(&self) -> &'static str {
        match self {
            DatasetSource::Synthetic => "synthetic",
            DatasetSource::FashionCanvas(_) => "fashion-canvas",
            DatasetSource::Voc(_) => "voc",
            DatasetSource::Folder(_) => "folder",
        }
    }

    /// (classes, input side) known before loading, for validating architectures early. A
    /// folder's classes are only known once its label file is read: 2 stands in for them.
    pub fn shape_hint(&self, synthetic_cfg: &SyntheticConfig) -> (usize, usize) {
        match self {
            DatasetSource::Synthetic => (synthetic_cfg.num_classes, synthetic_cfg.size),
            DatasetSource::FashionCanvas(c) => (super::fashion::FASHION_CLASSES.len(), c.size),
            DatasetSource::Voc(c) => (20, c.size),
            DatasetSource::Folder(c) => (2, c.size),
        }
    }

    /// Loads (or generates) the three splits and validates them.
    pub fn load(&self, synthetic_cfg: &SyntheticConfig) -> Result<Splits> {
        let splits = match self {
            DatasetSource::Synthetic => synthetic::generate(synthetic_cfg),
            DatasetSource::FashionCanvas(cfg) => generate_fashion_canvas(cfg),
            DatasetSource::Voc(cfg) => load_voc(cfg),
            DatasetSource::Folder(cfg) => load_folder(cfg),
        }
        .with_context(|| format!("loading the {} dataset", self.name()))?;
        splits
            .validate()
            .with_context(|| format!("the {} dataset is inconsistent", self.name()))?;
        for (split, d) in [
            ("train", &splits.train),
            ("val", &splits.val),
            ("test", &splits.test),
        ] {
            anyhow::ensure!(
                split == "val" || !d.is_empty(),
                "the {} dataset has no {split} images",
                self.name()
            );
        }
        Ok(splits)
    }

    /// The teacher's own training split, where the settings ask for one (`teacher_cues =
    /// "none"`: the training images without cues and decoys); `None` when the teacher trains on
    /// the students' images.
    pub fn teacher_train(&self, synthetic_cfg: &SyntheticConfig) -> Result<Option<Dataset>> {
        let train = match self {
            DatasetSource::Synthetic => match synthetic_cfg.teacher_view() {
                Some(view) => {
                    synthetic::generate_split(&view, synthetic::SPLIT_NAMES[0], view.n_train)?
                }
                None => return Ok(None),
            },
            DatasetSource::FashionCanvas(cfg) => match cfg.teacher_view() {
                Some(view) => {
                    let photos = super::fashion::load_fashion_mnist(&view.dir)?;
                    super::fashion::generate_canvas_split(
                        &view,
                        &photos,
                        super::fashion::FASHION_SPLITS[0],
                        view.n_train,
                    )?
                }
                None => return Ok(None),
            },
            DatasetSource::Voc(_) | DatasetSource::Folder(_) => return Ok(None),
        };
        anyhow::ensure!(
            !train.is_empty(),
            "the {} dataset has no teacher training images",
            self.name()
        );
        Ok(Some(train))
    }

    /// One-line description for reports.
    pub fn describe(&self, synthetic_cfg: &SyntheticConfig, splits: &Splits) -> String {
        let sizes = format!(
            "{}x{} px, {} classes, {} train / {} test images",
            splits.train.height,
            splits.train.width,
            splits.train.num_classes(),
            splits.train.len(),
            splits.test.len()
        );
        match self {
            DatasetSource::Synthetic => format!(
                "synthetic (seed {}, {sizes}, cue probability {}, decoys {}{})",
                synthetic_cfg.seed,
                synthetic_cfg.cue_prob,
                synthetic_cfg.false_cue_prob,
                teacher_note(synthetic_cfg.teacher_cues)
            ),
            DatasetSource::FashionCanvas(c) => format!(
                "fashion-canvas (Fashion-MNIST from {}, seed {}, {sizes}, up to {} items, cue \
                 probability {}, decoys {}{})",
                c.dir.display(),
                c.seed,
                c.max_items,
                c.cue_prob,
                c.false_cue_prob,
                teacher_note(c.teacher_cues)
            ),
            DatasetSource::Voc(c) => format!("PASCAL VOC 2012 ({}, {sizes})", c.root.display()),
            DatasetSource::Folder(c) => format!("folder {} ({sizes})", c.root.display()),
        }
    }
}

/// The description's note on the teacher's training images.
fn teacher_note(cues: synthetic::TeacherCues) -> &'static str {
    match cues {
        synthetic::TeacherCues::Dataset => "",
        synthetic::TeacherCues::None => "; the teacher trains on the same images without cues",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::TeacherCues;

    #[test]
    fn the_teacher_gets_its_own_images_only_when_asked() {
        let students = SyntheticConfig {
            n_train: 30,
            n_val: 5,
            n_test: 5,
            ..SyntheticConfig::default()
        };
        let source = DatasetSource::Synthetic;
        assert!(source.teacher_train(&students).unwrap().is_none());
        let cue_free = SyntheticConfig {
            teacher_cues: TeacherCues::None,
            ..students.clone()
        };
        let splits = source.load(&cue_free).unwrap();
        let teacher = source.teacher_train(&cue_free).unwrap().unwrap();
        assert_eq!(teacher.len(), splits.train.len());
        assert_eq!(teacher.labels, splits.train.labels);
        assert_ne!(teacher.fingerprint(), splits.train.fingerprint());
        // the students' split is the one the dataset's settings draw, cues included
        assert_eq!(
            splits.train.fingerprint(),
            source.load(&students).unwrap().train.fingerprint()
        );
        assert!(
            source
                .describe(&cue_free, &splits)
                .contains("teacher trains on the same images without cues")
        );
        // datasets without generated cues have no teacher view to draw
        let folder = DatasetSource::Folder(Default::default());
        assert!(folder.teacher_train(&cue_free).unwrap().is_none());
    }
}
