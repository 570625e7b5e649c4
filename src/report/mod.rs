//! Results for machines (JSON, CSV) and for people (Markdown tables, heat-map overlays).

pub mod bars;
pub mod claims;
pub mod curves;
pub mod html;
pub mod methods;
pub mod overlay;
pub mod roar;
pub mod sweep;

pub use crate::evaluation::health::{Warning, WarningKind};
pub use crate::evaluation::{Localization, PairScore, Protocols, Scores};
use crate::metrics::mean_std;
pub use crate::training::EpochRecord;
use crate::util::write_atomic;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One evaluated network: the unit of `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResultRow {
    /// Network description, e.g. `small/1` (layout / width divisor).
    pub network: String,
    /// Compression method (`none` for the teacher, `kd`, ...).
    pub compression: String,
    /// Matching regularizer (`none`, `ewa`, `swa`, `sswa`; `-` for the teacher).
    pub regularizer: String,
    /// Seed of the run.
    pub seed: u64,
    /// The attribution method of this row's attribution metrics (`gradcam` in results of
    /// runs before there were several).
    #[serde(default = "default_attribution")]
    pub attribution: String,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per image.
    pub macs: usize,
    /// mAP in %.
    pub map: f64,
    /// Sample-averaged F1 in %.
    pub f1: f64,
    /// Attribution ROC-AUC vs masks in %.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub auc: f64,
    /// Pointing-game accuracy in %.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub point_acc: f64,
    /// Cosine similarity to the teacher's maps.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub cos: f64,
    /// Normalised l2 distance to the teacher's maps.
    #[serde(deserialize_with = "crate::util::nan_if_null")]
    pub l2: f64,
    /// Pairs the attribution metrics average over.
    pub pairs: usize,
    /// Wall time of this network's training stage in seconds (0 when loaded from a checkpoint).
    pub train_seconds: f64,
    /// Pruning round (iterative unstructured pruning), 0 otherwise.
    #[serde(default)]
    pub round: usize,
    /// Which of this regularizer's students of the seed (`kd.replicates`), 0 for the first
    /// and for every network of a run without replicates.
    #[serde(default)]
    pub replicate: usize,
    /// Fraction of conv weights that are exactly zero.
    #[serde(default)]
    pub sparsity: f64,
    /// Median inference latency of one image in ms on the machine that ran the experiment.
    #[serde(default)]
    pub latency_ms: f64,
    /// The attribution metrics under both pair protocols (the row's own `auc` ... `pairs` are
    /// those of `eval.pairs`); absent in results of older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Protocols>,
    /// Deletion, insertion and ROAD of this row's attribution method (absent when turned off
    /// or in results of older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbation: Option<crate::evaluation::faithfulness::Perturbation>,
    /// The cascading-randomisation sanity check (teacher rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanity: Option<Vec<crate::evaluation::faithfulness::SanityStep>>,
    /// Per-epoch training record of this network's stage (empty when not trained here).
    #[serde(default)]
    pub history: Vec<EpochRecord>,
    /// Health problems found in training or evaluation (at chance, predicts nothing, flat loss).
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

impl ResultRow {
    /// A row from evaluation scores.
    pub fn new(network: &str, compression: &str, regularizer: &str, seed: u64, s: &Scores) -> Self {
        ResultRow {
            network: network.into(),
            compression: compression.into(),
            regularizer: regularizer.into(),
            seed,
            attribution: default_attribution(),
            params: 0,
            macs: 0,
            map: s.map,
            f1: s.f1,
            auc: s.auc,
            point_acc: s.point_acc,
            cos: s.cos,
            l2: s.l2,
            pairs: s.pairs,
            train_seconds: 0.0,
            round: 0,
            replicate: 0,
            sparsity: 0.0,
            latency_ms: 0.0,
            protocols: None,
            perturbation: None,
            sanity: None,
            history: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// `, replicate r` for a regularizer's students after the first (`kd.replicates`).
    pub fn replicate_tag(&self) -> String {
        match self.replicate {
            0 => String::new(),
            k => format!(", replicate {k}"),
        }
    }

    fn group_key(&self) -> (String, String, String, usize) {
        (
            self.network.clone(),
            self.compression.clone(),
            self.regularizer.clone(),
            self.round,
        )
    }
}

fn default_attribution() -> String {
    "gradcam".into()
}

/// The rows of one attribution method (results of runs before there were several are all
/// `gradcam`).
pub fn rows_of_method(rows: &[ResultRow], method: &str) -> Vec<ResultRow> {
    rows.iter()
        .filter(|r| r.attribution == method)
        .cloned()
        .collect()
}

/// Writes `results.json` (all rows, one per network and seed) atomically.
pub fn write_json(rows: &[ResultRow], path: &Path) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(rows)?.as_bytes())
}

/// `pairs.csv`: every evaluated (image, class) pair of every network, written with a CSV
/// writer (network names contain commas). `predicted` says whether the network predicts the
/// pair's class, i.e. whether the pair counts under the paper's protocol; `attribution` names
/// the row's method; `deletion` and `insertion` are filled for the pairs the faithfulness
/// metrics scored (`eval.faithfulness.pairs`).
pub struct PairsCsv {
    writer: csv::Writer<Vec<u8>>,
}

#[derive(Serialize)]
struct PairLine<'a> {
    network: &'a str,
    compression: &'a str,
    regularizer: &'a str,
    attribution: &'a str,
    round: usize,
    seed: u64,
    replicate: usize,
    image: usize,
    class: usize,
    predicted: u8,
    auc: f64,
    hit: u8,
    cos: Option<f64>,
    l2: Option<f64>,
    deletion: Option<f64>,
    insertion: Option<f64>,
}

impl PairsCsv {
    /// An empty table (the header is written with the first line).
    pub fn new() -> Self {
        PairsCsv {
            writer: csv::Writer::from_writer(Vec::new()),
        }
    }

    /// Adds one network's pairs.
    pub fn push(&mut self, row: &ResultRow, pairs: &[PairScore]) -> Result<()> {
        let perturbed = |image: usize, class: usize| {
            row.perturbation.as_ref().and_then(|f| {
                f.per_pair
                    .iter()
                    .find(|q| q.0 == image && q.1 == class)
                    .map(|q| (q.2, q.3))
            })
        };
        for p in pairs {
            let faith = perturbed(p.image, p.class);
            self.writer.serialize(PairLine {
                network: &row.network,
                compression: &row.compression,
                regularizer: &row.regularizer,
                attribution: &row.attribution,
                round: row.round,
                seed: row.seed,
                replicate: row.replicate,
                image: p.image,
                class: p.class,
                predicted: p.predicted as u8,
                auc: p.auc,
                hit: p.hit as u8,
                cos: p.cos,
                l2: p.l2,
                deletion: faith.map(|f| f.0),
                insertion: faith.map(|f| f.1),
            })?;
        }
        Ok(())
    }

    /// The CSV bytes.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.writer
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot finish pairs.csv: {e}"))
    }
}

impl Default for PairsCsv {
    fn default() -> Self {
        Self::new()
    }
}

/// Mean over the finite values (NaN when there are none): an undefined metric of one seed
/// does not poison the mean of the others.
pub(crate) fn mean_of_defined(values: &[f64]) -> f64 {
    let defined: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if defined.is_empty() {
        f64::NAN
    } else {
        mean_std(&defined).0
    }
}

pub(crate) fn fmt_mean_std(values: &[f64], digits: usize) -> String {
    // Attribution metrics are undefined for a network that predicts no class right: average
    // the seeds where they are defined and say how many those are.
    let defined: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if defined.is_empty() {
        // Undefined in every seed: no pair qualified (see the warnings section).
        return "n/a (no pair qualifies: see the warnings)".into();
    }
    let (m, s) = mean_std(&defined);
    let mut text = if defined.len() < 2 {
        format!("{m:.digits$}")
    } else {
        format!("{m:.digits$} ± {s:.digits$}")
    };
    if defined.len() < values.len() {
        text.push_str(&format!(" ({}/{} seeds)", defined.len(), values.len()));
    }
    text
}

/// The warnings section of `results.md`: every network with a health problem, loudly; or one
/// line saying none was found.
pub fn warnings_markdown(rows: &[ResultRow]) -> String {
    let flagged: Vec<&ResultRow> = rows.iter().filter(|r| !r.warnings.is_empty()).collect();
    if flagged.is_empty() {
        return "## Training health\n\nNo network is at chance, predicts nothing or has a flat \
                task loss.\n\n"
            .into();
    }
    let mut out = format!(
        "## ⚠ WARNINGS: {} network(s) failed to train properly\n\n\
         Their rows in the tables below are not evidence for or against attribution matching.\n\n",
        flagged.len()
    );
    for r in flagged {
        for w in &r.warnings {
            let _ = writeln!(
                out,
                "- **{} {} {}** (seed {}, round {}{}): {}",
                r.network,
                r.compression,
                r.regularizer,
                r.seed,
                r.round,
                r.replicate_tag(),
                w.message
            );
        }
    }
    out.push('\n');
    out
}

/// A Markdown table, one line per (network, compression, regularizer), mean ± std over seeds.
pub fn markdown_table(rows: &[ResultRow]) -> String {
    let mut groups: Vec<(String, String, String, usize)> = Vec::new();
    for r in rows {
        if !groups.contains(&r.group_key()) {
            groups.push(r.group_key());
        }
    }
    let mut out = String::from(
        "| network | compression | regularizer | round | sparsity % | params | MMACs | latency ms | seeds | mAP | F1 | AUC | point acc | cos | l2 |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for g in groups {
        let members: Vec<&ResultRow> = rows.iter().filter(|r| r.group_key() == g).collect();
        let col = |f: fn(&ResultRow) -> f64| members.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            g.0,
            g.1,
            g.2,
            g.3,
            100.0 * members[0].sparsity,
            members[0].params,
            members[0].macs as f64 / 1e6,
            mean_std(&col(|r| r.latency_ms)).0,
            members.len(),
            fmt_mean_std(&col(|r| r.map), 2),
            fmt_mean_std(&col(|r| r.f1), 2),
            fmt_mean_std(&col(|r| r.auc), 2),
            fmt_mean_std(&col(|r| r.point_acc), 2),
            fmt_mean_std(&col(|r| r.cos), 3),
            fmt_mean_std(&col(|r| r.l2), 3),
        );
    }
    out
}

/// The last pruning round of compression `c` (0 for one-shot methods).
fn last_round(rows: &[ResultRow], c: &str) -> usize {
    rows.iter()
        .filter(|r| r.compression == c)
        .map(|r| r.round)
        .max()
        .unwrap_or(0)
}

/// The teacher's rows and the final networks of compression `c` (its last round).
pub fn final_rows<'a>(rows: &'a [ResultRow], c: &str) -> Vec<&'a ResultRow> {
    let last = last_round(rows, c);
    rows.iter()
        .filter(|r| r.compression == "none" || (r.compression == c && r.round == last))
        .collect()
}

/// Distinct seeds of the rows, in order of appearance.
pub(crate) fn seeds_of<'a>(rows: impl IntoIterator<Item = &'a ResultRow>) -> Vec<u64> {
    let mut seeds = Vec::new();
    for r in rows {
        if !seeds.contains(&r.seed) {
            seeds.push(r.seed);
        }
    }
    seeds
}

/// The rows with each network's replicates of one seed (`kd.replicates`) replaced by their
/// mean ([`mean_row`]), in order of first appearance: tables and bar charts average over seeds
/// the per-seed means, as the claims compare them.
pub fn seed_means(rows: &[ResultRow]) -> Vec<ResultRow> {
    let key = |r: &ResultRow| (r.group_key(), r.seed, r.attribution.clone());
    means_by(rows.iter(), key)
        .into_iter()
        .map(|(row, _)| row)
        .collect()
}

/// The rows grouped by `key` (groups in order of first appearance), each group replaced by its
/// [`mean_row`] and how many rows it averages.
pub(crate) fn means_by<'a, K: PartialEq>(
    rows: impl Iterator<Item = &'a ResultRow>,
    key: impl Fn(&ResultRow) -> K,
) -> Vec<(ResultRow, usize)> {
    let mut groups: Vec<Vec<&ResultRow>> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|g| key(g[0]) == key(r)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.iter().map(|g| (mean_row(g), g.len())).collect()
}

/// The mean of rows of one network (its replicates): mAP, F1 and every attribution metric
/// under both protocols (NaN where any row's is undefined); everything else, including the
/// faithfulness scores and the history, is the first row's.
pub(crate) fn mean_row(group: &[&ResultRow]) -> ResultRow {
    let mean = |f: &dyn Fn(&ResultRow) -> f64| {
        group.iter().map(|r| f(r)).sum::<f64>() / group.len() as f64
    };
    let mean_loc = |f: &dyn Fn(&ResultRow) -> Option<&Localization>| -> Option<Localization> {
        let locs: Vec<&Localization> = group.iter().map(|r| f(r)).collect::<Option<_>>()?;
        let m = |g: &dyn Fn(&Localization) -> f64| {
            locs.iter().map(|l| g(l)).sum::<f64>() / locs.len() as f64
        };
        Some(Localization {
            auc: m(&|l| l.auc),
            point_acc: m(&|l| l.point_acc),
            cos: m(&|l| l.cos),
            l2: m(&|l| l.l2),
            pairs: (m(&|l| l.pairs as f64)).round() as usize,
        })
    };
    let mut out = group[0].clone();
    out.map = mean(&|r| r.map);
    out.f1 = mean(&|r| r.f1);
    out.auc = mean(&|r| r.auc);
    out.point_acc = mean(&|r| r.point_acc);
    out.cos = mean(&|r| r.cos);
    out.l2 = mean(&|r| r.l2);
    let predicted = mean_loc(&|r| r.protocols.as_ref().map(|p| &p.predicted));
    let present = mean_loc(&|r| r.protocols.as_ref().map(|p| &p.present));
    out.protocols = predicted
        .zip(present)
        .map(|(predicted, present)| crate::evaluation::Protocols { predicted, present });
    out
}

/// One Markdown section per compression method: the teacher and that method's final networks
/// (the last round for iterative pruning), plus the per-round table for unstructured pruning.
pub fn tables_by_compression(rows: &[ResultRow], compressions: &[String]) -> String {
    let rows = &seed_means(rows);
    let mut out = String::new();
    for c in compressions {
        let last = last_round(rows, c);
        let chosen: Vec<ResultRow> = final_rows(rows, c).into_iter().cloned().collect();
        let _ = write!(out, "## {c}\n\n{}\n", markdown_table(&chosen));
        if last > 0 {
            let rounds: Vec<ResultRow> = rows
                .iter()
                .filter(|r| &r.compression == c)
                .cloned()
                .collect();
            let _ = write!(out, "### {c}: every round\n\n{}\n", markdown_table(&rounds));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reg: &str, seed: u64, auc: f64) -> ResultRow {
        let s = Scores {
            map: 90.0,
            f1: 80.0,
            auc,
            point_acc: 50.0,
            cos: 0.5,
            l2: 0.25,
            pairs: 3,
        };
        ResultRow::new("small/4", "kd", reg, seed, &s)
    }

    #[test]
    fn markdown_groups_seeds_and_reports_mean_and_sample_std() {
        let rows = vec![
            row("none", 0, 70.0),
            row("swa", 0, 80.0),
            row("none", 1, 74.0),
        ];
        let md = markdown_table(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        // none: mean 72, sample std sqrt(8) = 2.83
        assert!(
            lines[2].contains("| none |") && lines[2].contains("72.00 ± 2.83"),
            "{md}"
        );
        assert!(
            lines[3].contains("| swa |") && lines[3].contains("| 80.00 |"),
            "{md}"
        );
    }

    /// A seed's replicates are averaged first, then the seeds: seed 0 has AUC 80 and 90
    /// (mean 85), seed 1 has 70; over the seeds 77.5 ± |85 - 70| / sqrt 2 = 10.61, with a
    /// seed count of 2, not 3.
    #[test]
    fn tables_average_replicates_within_a_seed_before_the_seeds() {
        let mut second = row("none", 0, 90.0);
        second.replicate = 1;
        let rows = vec![row("none", 0, 80.0), second, row("none", 1, 70.0)];
        let md = tables_by_compression(&rows, &["kd".to_string()]);
        let line = md.lines().find(|l| l.contains("| none |")).unwrap();
        assert!(line.contains("| 2 | 90.00 ± 0.00 |"), "{line}");
        assert!(line.contains("77.50 ± 10.61"), "{line}");
        let means = seed_means(&rows);
        assert_eq!(means.len(), 2);
        assert_eq!((means[0].auc, means[1].auc), (85.0, 70.0));
    }

    #[test]
    fn undefined_metrics_are_left_out_of_the_mean_and_counted() {
        let rows = vec![
            row("swa", 0, 70.0),
            row("swa", 1, f64::NAN),
            row("swa", 2, 80.0),
        ];
        let md = markdown_table(&rows);
        assert!(md.contains("75.00 ± 7.07 (2/3 seeds)"), "{md}");
        let md = markdown_table(&[row("swa", 1, f64::NAN)]);
        assert!(md.contains("n/a"), "{md}");
    }

    #[test]
    fn pairs_csv_quotes_names_with_commas_and_any_reader_gets_every_field() {
        let mut r = row("none", 0, 70.0);
        r.network = "3,M,5,M/1 structured".into();
        let pair = PairScore {
            image: 4,
            class: 2,
            auc: 0.75,
            hit: true,
            predicted: false,
            cos: None,
            l2: Some(0.5),
        };
        let mut csv_out = PairsCsv::new();
        csv_out.push(&r, &[pair]).unwrap();
        let bytes = csv_out.finish().unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let header = reader.headers().unwrap().clone();
        let lines: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(header.len(), 16);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), 16);
        assert_eq!((&lines[0][14], &lines[0][15]), ("", ""));
        assert_eq!(&lines[0][0], "3,M,5,M/1 structured");
        assert_eq!(&lines[0][3], "gradcam");
        assert_eq!((&header[6], &lines[0][6]), ("replicate", "0"));
        assert_eq!(
            (&lines[0][9], &lines[0][10], &lines[0][12]),
            ("0", "0.75", "")
        );
    }

    #[test]
    fn json_round_trips() {
        let dir = std::env::temp_dir().join(format!("faithful-report-{}", std::process::id()));
        let p = dir.join("results.json");
        let rows = vec![row("none", 0, 70.0)];
        write_json(&rows, &p).unwrap();
        let back: Vec<ResultRow> =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, rows);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
