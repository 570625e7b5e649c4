//! Evaluation of one network: prediction quality (mAP, F1) and attribution quality (ROC-AUC
//! and pointing game against the masks; cosine and normalised l2 against the teacher's maps),
//! the latter over (image, class) pairs whose class is present and predicted, as the paper, or
//! over every present pair (`eval.pairs = "present"`).

pub mod faithfulness;
pub mod health;
pub mod roar;

use crate::attribution::Attribution;
use crate::data::{Dataset, SEG_IGNORE};
use crate::metrics;
use crate::models::Network;
use crate::training::Normalization;
use anyhow::{Result, ensure};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which mAP definition to report.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MapVariant {
    /// VOC: per-class interpolated AP averaged over classes (default; the usual definition).
    PerClass,
    /// The authors' code: per-sample AP averaged over samples.
    PerSample,
}

/// Which (image, class) pairs the attribution metrics average over.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PairSet {
    /// Pairs whose class is present and predicted by the evaluated network (logit > 0), as the
    /// paper and the authors' code. A weak network is then scored on the pairs it finds, often
    /// the easier ones.
    #[default]
    Predicted,
    /// Every pair whose class is present: the same pairs for every network, so differences
    /// between networks are not differences in which pairs they were scored on.
    Present,
}

/// Evaluation settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Attribution methods to evaluate, by registry name (see
    /// [`crate::attribution::REGISTRY`]). The first is the main one (the results tables,
    /// claims and overlays); every one gets its own result rows, pairs and a column in the
    /// methods table, with cos/l2 against the teacher's maps of the same method. A single
    /// name is accepted for a list of one, and the config loader reads the older key
    /// `attribution` as this one.
    #[serde(deserialize_with = "one_or_many")]
    pub attributions: Vec<String>,
    /// mAP definition.
    pub map_variant: MapVariant,
    /// Pointing-game tolerance in pixels (0: the maximum must fall inside the mask).
    #[serde(serialize_with = "crate::util::ser_f32")]
    pub pointing_tolerance: f32,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Which pairs the attribution metrics average over.
    pub pairs: PairSet,
    /// Deletion / insertion, ROAD and the randomisation sanity check.
    pub faithfulness: faithfulness::FaithfulnessConfig,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            attributions: vec!["gradcam".into()],
            map_variant: MapVariant::PerClass,
            pointing_tolerance: 0.0,
            batch_size: 64,
            pairs: PairSet::Predicted,
            faithfulness: faithfulness::FaithfulnessConfig::default(),
        }
    }
}

/// A name or a list of names.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
}

impl EvalConfig {
    /// The main attribution method (the first listed).
    pub fn primary_attribution(&self) -> &str {
        self.attributions.first().map_or("gradcam", String::as_str)
    }

    /// Checks the attribution list: not empty, every name registered, none twice.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.attributions.is_empty(),
            "eval.attributions is empty: name at least one method (e.g. [\"gradcam\"])"
        );
        for (i, name) in self.attributions.iter().enumerate() {
            crate::attribution::by_name(name)
                .map_err(|e| anyhow::anyhow!("eval.attributions: {e}"))?;
            ensure!(
                !self.attributions[..i].contains(name),
                "eval.attributions lists '{name}' twice"
            );
        }
        self.faithfulness.validate()
    }
}

/// Attribution metrics of one network under one pair protocol (percentages for AUC and point
/// accuracy; NaN, written as `null`, when no pair qualifies).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Localization {
    /// Mean ROC-AUC of maps against masks, in %.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub auc: f64,
    /// Pointing-game accuracy, in %.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub point_acc: f64,
    /// Mean cosine similarity to the teacher's maps.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub cos: f64,
    /// Mean normalised l2 distance to the teacher's maps.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub l2: f64,
    /// Pairs averaged over.
    pub pairs: usize,
}

/// The attribution metrics under the paper's protocol and under the common one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Protocols {
    /// Pairs whose class is present and predicted by this network (the paper's protocol).
    pub predicted: Localization,
    /// Every pair whose class is present: the same pairs for every network.
    pub present: Localization,
}

impl Localization {
    /// Means over pair scores (NaN when there are none).
    fn of(pairs: &[&PairScore]) -> Self {
        let mean = |v: Vec<f64>| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        Localization {
            auc: 100.0 * mean(pairs.iter().map(|p| p.auc).collect()),
            point_acc: 100.0 * mean(pairs.iter().map(|p| p.hit as u8 as f64).collect()),
            cos: mean(pairs.iter().filter_map(|p| p.cos).collect()),
            l2: mean(pairs.iter().filter_map(|p| p.l2).collect()),
            pairs: pairs.len(),
        }
    }
}

impl Protocols {
    /// The metrics of the protocol `set`.
    pub fn get(&self, set: PairSet) -> &Localization {
        match set {
            PairSet::Predicted => &self.predicted,
            PairSet::Present => &self.present,
        }
    }
}

/// Everything the evaluation of one network on one split measures.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Summary under the configured protocol (`eval.pairs`).
    pub scores: Scores,
    /// Attribution metrics under both protocols.
    pub protocols: Protocols,
    /// mAP, F1 and positive rates.
    pub quality: health::PredictionQuality,
    /// Every present pair's scores (`predicted` says whether the network predicts it).
    pub pairs: Vec<PairScore>,
}

/// Logits (N×K, row-major) of a network in evaluation mode.
pub fn predict(
    model: &Network,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
) -> Result<Vec<f32>> {
    let device = model.devices()[0].clone();
    let mut out = Vec::with_capacity(data.len() * data.num_classes());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = batch_tensor(data, chunk, norm, &device);
        let logits = model.forward(x);
        out.extend(to_vec(logits.into_data())?);
    }
    Ok(out)
}

fn to_vec(data: TensorData) -> Result<Vec<f32>> {
    data.try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read tensor data: {e:?}"))
}

fn batch_tensor(data: &Dataset, idx: &[usize], norm: &Normalization, device: &Device) -> Tensor<4> {
    let (h, w) = (data.height, data.width);
    let mut xs = Vec::with_capacity(idx.len() * 3 * h * w);
    for &i in idx {
        let mut img = data.image(i).to_vec();
        norm.apply(&mut img);
        xs.extend_from_slice(&img);
    }
    Tensor::from_data(TensorData::new(xs, [idx.len(), 3, h, w]), device)
}

/// Median wall time in ms of one forward pass on one `side`x`side` image (after 3 warm-ups).
pub fn latency_ms(model: &Network, side: usize, iterations: usize) -> Result<f64> {
    let device = model.devices()[0].clone();
    let x = Tensor::<4>::zeros([1, 3, side, side], &device);
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations + 3 {
        let t0 = std::time::Instant::now();
        let y = model.forward(x.clone());
        to_vec(y.into_data())?; // waits for the result
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(f64::NAN))
}

/// Attribution maps at input resolution (bilinear, raw values) for (image, class) pairs.
pub fn attribution_maps(
    model: &Network,
    method: &dyn Attribution,
    data: &Dataset,
    norm: &Normalization,
    pairs: &[(usize, usize)],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let device = model.devices()[0].clone();
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch.max(1)) {
        let images: Vec<usize> = chunk.iter().map(|p| p.0).collect();
        let classes: Vec<usize> = chunk.iter().map(|p| p.1).collect();
        let x = batch_tensor(data, &images, norm, &device);
        let maps = method.maps(model, x, &classes)?;
        let [_, h, w] = maps.dims();
        let flat = to_vec(maps.into_data())?;
        for m in flat.chunks(h * w) {
            out.push(metrics::upsample_bilinear(
                m,
                h,
                w,
                data.height,
                data.width,
            )?);
        }
    }
    Ok(out)
}

/// All (image, class) pairs whose class is labelled and has mask pixels.
pub fn ground_truth_pairs(data: &Dataset) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for i in 0..data.len() {
        let seg = data.seg_of(i);
        for (k, &l) in data.labels_of(i).iter().enumerate() {
            if l == 1 && seg.contains(&(k as u8 + 1)) {
                pairs.push((i, k));
            }
        }
    }
    pairs
}

/// Maps of a reference network (the teacher) for comparison, keyed by (image, class).
pub type MapSet = HashMap<(usize, usize), Vec<f32>>;

/// The teacher's maps for every ground-truth pair.
pub fn reference_maps(
    teacher: &Network,
    method: &dyn Attribution,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
) -> Result<MapSet> {
    let pairs = ground_truth_pairs(data);
    let maps = attribution_maps(teacher, method, data, norm, &pairs, batch)?;
    Ok(pairs.into_iter().zip(maps).collect())
}

/// Attribution metrics of one (image, class) pair.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairScore {
    /// Image index in the evaluated split.
    pub image: usize,
    /// Class index.
    pub class: usize,
    /// ROC-AUC of the map against the class mask.
    pub auc: f64,
    /// Whether the map's maximum falls in the mask.
    pub hit: bool,
    /// Whether the evaluated network predicts this class present (logit > 0).
    pub predicted: bool,
    /// Cosine similarity to the reference map (absent without a reference).
    pub cos: Option<f64>,
    /// Normalised l2 distance to the reference map.
    pub l2: Option<f64>,
}

/// Summary metrics of one network on one split (percentages for map/f1/auc/point_acc).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    /// Mean average precision, in %.
    pub map: f64,
    /// Sample-averaged F1 at probability 0.5, in %.
    pub f1: f64,
    /// Mean ROC-AUC of maps vs masks over correctly predicted pairs, in %.
    pub auc: f64,
    /// Pointing-game accuracy over the same pairs, in %.
    pub point_acc: f64,
    /// Mean cosine similarity to the teacher's maps (1 for the teacher itself).
    pub cos: f64,
    /// Mean normalised l2 distance to the teacher's maps (0 for the teacher itself).
    pub l2: f64,
    /// Number of (image, class) pairs the attribution metrics average over.
    pub pairs: usize,
}

/// Evaluates a network (plain device) on `data`; `reference` gives the teacher's maps. Maps are
/// computed once for every present pair and summarised under both pair protocols.
pub fn evaluate(
    model: &Network,
    data: &Dataset,
    norm: &Normalization,
    method: &dyn Attribution,
    reference: Option<&MapSet>,
    cfg: &EvalConfig,
) -> Result<Evaluation> {
    ensure!(!data.is_empty(), "dataset '{}' is empty", data.name);
    let pairs = ground_truth_pairs(data);
    let maps = attribution_maps(model, method, data, norm, &pairs, cfg.batch_size)?;
    evaluate_maps(model, data, norm, &maps, reference, cfg)
}

/// [`evaluate`] with the maps of every [`ground_truth_pairs`] pair already computed (in that
/// order), e.g. the teacher's own reference maps.
pub fn evaluate_maps(
    model: &Network,
    data: &Dataset,
    norm: &Normalization,
    maps: &[Vec<f32>],
    reference: Option<&MapSet>,
    cfg: &EvalConfig,
) -> Result<Evaluation> {
    ensure!(!data.is_empty(), "dataset '{}' is empty", data.name);
    let k = data.num_classes();
    let logits = predict(model, data, norm, cfg.batch_size)?;
    let quality = health::prediction_quality(&logits, data, cfg.map_variant)?;
    let pairs = ground_truth_pairs(data);
    ensure!(
        maps.len() == pairs.len(),
        "{} maps for {} ground-truth pairs",
        maps.len(),
        pairs.len()
    );
    let mut scores = Vec::with_capacity(pairs.len());
    for (&(i, c), m) in pairs.iter().zip(maps) {
        let mut s = score_pair(data, i, c, m, reference, cfg.pointing_tolerance)?;
        s.predicted = logits[i * k + c] > 0.0;
        scores.push(s);
    }
    let protocols = Protocols {
        predicted: Localization::of(&scores.iter().filter(|p| p.predicted).collect::<Vec<_>>()),
        present: Localization::of(&scores.iter().collect::<Vec<_>>()),
    };
    let main = protocols.get(cfg.pairs);
    let summary = Scores {
        map: quality.map,
        f1: quality.f1,
        auc: main.auc,
        point_acc: main.point_acc,
        cos: main.cos,
        l2: main.l2,
        pairs: main.pairs,
    };
    Ok(Evaluation {
        scores: summary,
        protocols,
        quality,
        pairs: scores,
    })
}

/// The (image, class) pairs the attribution metrics average over (see [`PairSet`]).
pub fn scored_pairs(data: &Dataset, logits: &[f32], set: PairSet) -> Vec<(usize, usize)> {
    let k = data.num_classes();
    ground_truth_pairs(data)
        .into_iter()
        .filter(|&(i, c)| set == PairSet::Present || logits[i * k + c] > 0.0)
        .collect()
}

fn score_pair(
    data: &Dataset,
    i: usize,
    c: usize,
    map: &[f32],
    reference: Option<&MapSet>,
    tolerance: f32,
) -> Result<PairScore> {
    let mask = data.class_mask(i, c);
    let ignore: Vec<bool> = data.seg_of(i).iter().map(|&s| s == SEG_IGNORE).collect();
    let auc = metrics::roc_auc(map, &mask, Some(&ignore))?.unwrap_or(0.5);
    let hit = metrics::pointing_hit(map, data.width, &mask, Some(&ignore), tolerance)?;
    let (cos, l2) = match reference.and_then(|r| r.get(&(i, c))) {
        Some(t) => (
            Some(metrics::cosine_similarity(map, t)?),
            Some(metrics::normalized_l2(map, t)?),
        ),
        None => (None, None),
    };
    Ok(PairScore {
        image: i,
        class: c,
        auc,
        hit,
        predicted: true,
        cos,
        l2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        // 2 images of 2x2 px, 3 classes. Image 0: classes 0 and 2 labelled, only class 0 has
        // pixels (class 2 is e.g. fully occluded); image 1: class 1 with one ignored pixel.
        Dataset {
            name: "hand".into(),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            height: 2,
            width: 2,
            images: vec![0.5; 2 * 3 * 4],
            labels: vec![1, 0, 1, 0, 1, 0],
            seg: vec![1, 1, 0, 0, 0, 2, 255, 0],
        }
    }

    #[test]
    fn ground_truth_pairs_need_a_label_and_mask_pixels() {
        assert_eq!(ground_truth_pairs(&dataset()), vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn predicted_pairs_need_a_positive_logit_present_pairs_do_not() {
        // ground-truth pairs (0, 0) and (1, 1); the network predicts class 0 of image 0 only
        let logits = [2.0, -1.0, 3.0, 0.5, -0.1, 0.0];
        let d = dataset();
        assert_eq!(scored_pairs(&d, &logits, PairSet::Predicted), vec![(0, 0)]);
        assert_eq!(
            scored_pairs(&d, &logits, PairSet::Present),
            vec![(0, 0), (1, 1)]
        );
    }

    #[test]
    fn pair_scores_use_the_class_mask_and_skip_ignored_pixels() {
        let d = dataset();
        // image 1, class 1: mask = pixel 1; pixel 2 ignored. Map max at pixel 1 -> hit;
        // kept scores: pos {0.9}, neg {0.1 (px0), 0.2 (px3)} -> AUC 1. The ignored pixel has
        // the highest value: were it kept as a negative, AUC would drop to 2/3.
        let map = [0.1, 0.9, 5.0, 0.2];
        let s = score_pair(&d, 1, 1, &map, None, 0.0).unwrap();
        assert_eq!(s.auc, 1.0);
        assert!(s.hit);
        assert!(s.cos.is_none());
        let mut reference = MapSet::new();
        reference.insert((1, 1), map.to_vec());
        let s = score_pair(&d, 1, 1, &map, Some(&reference), 0.0).unwrap();
        assert!((s.cos.unwrap() - 1.0).abs() < 1e-12 && s.l2.unwrap().abs() < 1e-12);
    }

    #[test]
    fn localization_averages_pairs_in_percent() {
        let p = |auc: f64, hit: bool| PairScore {
            image: 0,
            class: 0,
            auc,
            hit,
            predicted: true,
            cos: Some(0.5),
            l2: None,
        };
        let (a, b) = (p(0.8, true), p(0.6, false));
        let s = Localization::of(&[&a, &b]);
        assert!((s.auc - 70.0).abs() < 1e-9 && (s.point_acc - 50.0).abs() < 1e-9);
        assert_eq!((s.cos, s.pairs), (0.5, 2));
        assert!(s.l2.is_nan(), "no reference: l2 undefined, not zero");
        assert!(Localization::of(&[]).auc.is_nan(), "no pairs: undefined");
    }
}
