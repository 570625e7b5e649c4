//! The attribution-methods table (the paper's Table 8 analogue): for each compression method,
//! the teacher and every regularizer's network, AUC and point accuracy of every evaluated
//! attribution method (mean ± std over seeds), and per method whether naive compression lowers
//! them and whether each regularizer lifts them above naive. Shows whether matching one method
//! (Grad-CAM) preserves the others' maps too.

use super::{ResultRow, final_rows, fmt_mean_std, mean_of_defined};
use crate::evaluation::PairSet;
use std::fmt::Write as _;

/// `(network, compression, regularizer)` of a row.
type Group = (String, String, String);

fn group_of(r: &ResultRow) -> Group {
    (
        r.network.clone(),
        r.compression.clone(),
        r.regularizer.clone(),
    )
}

/// Values of `metric` over seeds for a group and method.
fn values(rows: &[&ResultRow], g: &Group, method: &str, metric: fn(&ResultRow) -> f64) -> Vec<f64> {
    rows.iter()
        .filter(|r| &group_of(r) == g && r.attribution == method)
        .map(|r| metric(r))
        .collect()
}

/// "yes (+1.23)" when `difference` has the expected sign, "no (−0.45)" otherwise.
fn verdict(difference: f64) -> String {
    if !difference.is_finite() {
        return "n/a".into();
    }
    let word = if difference > 0.0 { "yes" } else { "no" };
    format!("{word} ({difference:+.2})")
}

/// A named metric of a row.
type Metric = (&'static str, fn(&ResultRow) -> f64);

const METRICS: [Metric; 2] = [("AUC", |r| r.auc), ("point acc", |r| r.point_acc)];

/// The methods section of `results.md`; empty when only one method was evaluated.
pub fn methods_markdown(
    rows: &[ResultRow],
    methods: &[String],
    compressions: &[String],
    protocol: PairSet,
) -> String {
    if methods.len() < 2 {
        return String::new();
    }
    let rows = &super::seed_means(rows);
    let mut out = format!(
        "## Attribution methods (the paper's Table 8)\n\n\
         AUC and point accuracy in %, mean ± std over seeds, over the {} pairs, for every \
         evaluated method (each network's maps of that method against the masks). Only \
         Grad-CAM is matched in training: the other methods show whether its preservation \
         carries over.\n\n",
        match protocol {
            PairSet::Predicted => "present and predicted (the paper's protocol)",
            PairSet::Present => "present",
        }
    );
    for c in compressions {
        let chosen = final_rows(rows, c);
        let mut groups: Vec<Group> = Vec::new();
        for r in &chosen {
            if !groups.contains(&group_of(r)) {
                groups.push(group_of(r));
            }
        }
        let _ = write!(out, "### {c}\n\n| network | compression | regularizer |");
        for m in methods {
            for (name, _) in METRICS {
                let _ = write!(out, " {m} {name} |");
            }
        }
        out.push_str("\n|---|---|---|");
        out.push_str(&"---:|".repeat(2 * methods.len()));
        out.push('\n');
        for g in &groups {
            let _ = write!(out, "| {} | {} | {} |", g.0, g.1, g.2);
            for m in methods {
                for (_, metric) in METRICS {
                    let _ = write!(
                        out,
                        " {} |",
                        fmt_mean_std(&values(&chosen, g, m, metric), 2)
                    );
                }
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&verdicts(&chosen, &groups, methods, c));
    }
    out
}

/// Per method: is naive below the teacher, and is each regularizer above naive (by the mean).
fn verdicts(rows: &[&ResultRow], groups: &[Group], methods: &[String], c: &str) -> String {
    let teacher = groups.iter().find(|g| g.1 == "none");
    let naive = groups.iter().find(|g| g.1 == c && g.2 == "none");
    let (Some(teacher), Some(naive)) = (teacher, naive) else {
        return String::new();
    };
    let matched: Vec<&Group> = groups
        .iter()
        .filter(|g| g.1 == c && g.2 != "none")
        .collect();
    let mut out = String::new();
    for m in methods {
        let mut parts = Vec::new();
        let differences = |a: &Group, b: &Group| -> Vec<String> {
            METRICS
                .iter()
                .map(|(name, metric)| {
                    let d = mean_of_defined(&values(rows, a, m, *metric))
                        - mean_of_defined(&values(rows, b, m, *metric));
                    format!("{name} {}", verdict(d))
                })
                .collect()
        };
        parts.push(format!(
            "naive below the teacher: {}",
            differences(teacher, naive).join(", ")
        ));
        for g in &matched {
            parts.push(format!(
                "{} above naive: {}",
                g.2,
                differences(g, naive).join(", ")
            ));
        }
        let _ = writeln!(out, "- `{m}`: {}", parts.join("; "));
    }
    out.push('\n');
    out
}

/// Mean ROAD probability over the removal percentages.
fn road_mean(curve: &[(u32, f64)]) -> f64 {
    mean_of_defined(&curve.iter().map(|p| p.1).collect::<Vec<_>>())
}

/// The faithfulness section of `results.md`: deletion / insertion areas and ROAD per network
/// and method (mean ± std over seeds), and the teacher's randomisation sanity check per method.
/// Empty when the run measured none.
pub fn faithfulness_markdown(
    rows: &[ResultRow],
    methods: &[String],
    compressions: &[String],
) -> String {
    if rows.iter().all(|r| r.perturbation.is_none()) {
        return String::new();
    }
    let mut out = String::from(
        "## Do the maps explain the network?\n\n\
         Deletion and insertion: area under the class probability as the map's top pixels are \
         removed (filled with the training mean) or inserted into an all-mean image (deletion: \
         lower is better; insertion: higher). ROAD: class probability after removing the top \
         10–90% by noisy linear imputation, averaged over the percentages, against the same \
         removal in a random order (a map that finds what the network uses must fall below \
         random). Mean ± std over seeds (each seed's students averaged over its replicates first).\n\n\
         | network | compression | regularizer | method | deletion ↓ | insertion ↑ | ROAD, map order ↓ | ROAD, random order |\n\
         |---|---|---|---|---:|---:|---:|---:|\n",
    );
    let mut groups: Vec<Group> = Vec::new();
    for c in compressions {
        for r in final_rows(rows, c) {
            if !groups.contains(&group_of(r)) {
                groups.push(group_of(r));
            }
        }
    }
    for g in &groups {
        for m in methods {
            let scored: Vec<&ResultRow> = rows
                .iter()
                .filter(|r| &group_of(r) == g && &r.attribution == m && r.perturbation.is_some())
                .collect();
            if scored.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&crate::evaluation::faithfulness::Perturbation) -> f64| {
                per_seed_means(&scored, &|r| f(r.perturbation.as_ref().unwrap()))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {m} | {} | {} | {} | {} |",
                g.0,
                g.1,
                g.2,
                fmt_mean_std(&col(&|p| p.deletion), 3),
                fmt_mean_std(&col(&|p| p.insertion), 3),
                fmt_mean_std(&col(&|p| road_mean(&p.road)), 3),
                fmt_mean_std(&col(&|p| road_mean(&p.road_random)), 3),
            );
        }
    }
    out.push('\n');
    out.push_str(&sanity_markdown(rows, methods));
    out
}

/// `value` of each seed's rows, averaged over the seed's replicates first (seeds in order of
/// first appearance), so that a seed with more students does not weigh more.
fn per_seed_means(rows: &[&ResultRow], value: &dyn Fn(&ResultRow) -> f64) -> Vec<f64> {
    super::seeds_of(rows.iter().copied())
        .into_iter()
        .map(|seed| {
            let values: Vec<f64> = rows
                .iter()
                .filter(|r| r.seed == seed)
                .map(|r| value(r))
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        })
        .collect()
}

/// The randomisation sanity check of the teacher, per method: the maps' rank correlation with
/// the trained network's after re-initialising the top group, and after re-initialising all.
fn sanity_markdown(rows: &[ResultRow], methods: &[String]) -> String {
    let mut out = String::from(
        "### Sanity check: cascading model randomisation (teacher)\n\n\
         Spearman rank correlation of the teacher's maps with the maps after re-initialising its \
         parameter groups from the logits down (Adebayo et al. 2018); mean ± std over seeds. A \
         method whose maps stay correlated (above 0.5) once every layer is random explains the \
         architecture, not the learned function, and fails.\n\n\
         | method | top group random | half the groups | all random | verdict |\n|---|---:|---:|---:|---|\n",
    );
    let mut any = false;
    for m in methods {
        let runs: Vec<&Vec<crate::evaluation::faithfulness::SanityStep>> = rows
            .iter()
            .filter(|r| r.compression == "none" && &r.attribution == m)
            .filter_map(|r| r.sanity.as_ref())
            .filter(|s| !s.is_empty())
            .collect();
        if runs.is_empty() {
            continue;
        }
        any = true;
        let at = |pick: &dyn Fn(usize) -> usize| -> Vec<f64> {
            runs.iter().map(|s| s[pick(s.len())].spearman).collect()
        };
        let all = at(&|n| n - 1);
        let verdict = if mean_of_defined(&all) > 0.5 {
            "fails"
        } else {
            "passes"
        };
        let _ = writeln!(
            out,
            "| {m} | {} | {} | {} | {verdict} |",
            fmt_mean_std(&at(&|_| 0), 3),
            fmt_mean_std(&at(&|n| (n - 1) / 2), 3),
            fmt_mean_std(&all, 3),
        );
    }
    out.push('\n');
    if any { out } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Scores;

    fn row(reg: &str, comp: &str, method: &str, seed: u64, auc: f64, point: f64) -> ResultRow {
        let s = Scores {
            map: 50.0,
            f1: 50.0,
            auc,
            point_acc: point,
            cos: 0.5,
            l2: 0.5,
            pairs: 10,
        };
        let mut r = ResultRow::new("net", comp, reg, seed, &s);
        r.attribution = method.into();
        r
    }

    #[test]
    fn the_table_has_a_column_pair_per_method_and_says_who_is_above_whom() {
        let mut rows = Vec::new();
        for seed in 0..2 {
            let d = seed as f64;
            rows.push(row("-", "none", "gradcam", seed, 90.0 + d, 80.0));
            rows.push(row("-", "none", "lrp", seed, 85.0, 70.0 + d));
            rows.push(row("none", "kd", "gradcam", seed, 80.0, 60.0));
            rows.push(row("none", "kd", "lrp", seed, 86.0, 65.0));
            rows.push(row("sswa", "kd", "gradcam", seed, 88.0, 75.0));
            rows.push(row("sswa", "kd", "lrp", seed, 84.0, 69.0));
        }
        let methods = vec!["gradcam".to_string(), "lrp".to_string()];
        let md = methods_markdown(&rows, &methods, &["kd".into()], PairSet::Predicted);
        assert!(
            md.contains("| gradcam AUC | gradcam point acc | lrp AUC | lrp point acc |"),
            "{md}"
        );
        // teacher gradcam AUC 90 and 91 over the two seeds
        assert!(
            md.contains("| net | none | - | 90.50 ± 0.71 | 80.00 ± 0.00 |"),
            "{md}"
        );
        // gradcam: naive 10.5 below the teacher; sswa 8 above naive
        assert!(md.contains("- `gradcam`: naive below the teacher: AUC yes (+10.50), point acc yes (+20.00); sswa above naive: AUC yes (+8.00), point acc yes (+15.00)"), "{md}");
        // lrp: naive AUC above the teacher (86 vs 85), sswa below naive in AUC
        assert!(md.contains("- `lrp`: naive below the teacher: AUC no (-1.00), point acc yes (+5.50); sswa above naive: AUC no (-2.00), point acc yes (+4.00)"), "{md}");
        assert!(
            methods_markdown(&rows, &methods[..1], &["kd".into()], PairSet::Predicted).is_empty()
        );
    }

    #[test]
    fn faithfulness_averages_each_seeds_replicates_before_the_seeds() {
        let with_deletion = |seed: u64, replicate: usize, deletion: f64| {
            let mut r = row("none", "kd", "gradcam", seed, 80.0, 60.0);
            r.replicate = replicate;
            r.perturbation = Some(crate::evaluation::faithfulness::Perturbation {
                deletion,
                insertion: 0.5,
                road: vec![(10, 0.2)],
                road_random: vec![(10, 0.6)],
                pairs: 4,
                per_pair: Vec::new(),
            });
            r
        };
        // seed 0: replicates 0.1 and 0.3 (mean 0.2); seed 1: one student at 0.4.
        // Over seeds: mean 0.3, sample std sqrt(0.02) = 0.141; pooling all three rows would
        // give 0.267 ± 0.153.
        let rows = vec![
            with_deletion(0, 0, 0.1),
            with_deletion(0, 1, 0.3),
            with_deletion(1, 0, 0.4),
        ];
        let md = faithfulness_markdown(&rows, &["gradcam".to_string()], &["kd".into()]);
        assert!(
            md.contains("| net | kd | none | gradcam | 0.300 ± 0.141 | 0.500 ± 0.000 |"),
            "{md}"
        );
    }
}
