//! `report.html`: one self-contained page per run folder (inline CSS, every image embedded as a
//! base64 `data:` URI, no scripts, fonts or other network resources), rebuilt from the files a
//! run leaves behind: `config.toml`, `results.json`, and when present `results.md`,
//! `overlays-<compression>.png` with its `.txt` caption, `sweep.png` and `sweep.csv`.
//!
//! Every string that comes from a file (names, messages, captions, the config) goes through
//! [`escape`].

use super::claims::{self, ClaimCheck, protocol_label, undefined_reason};
use super::{ResultRow, bars, curves, seeds_of, tables_by_compression};
use crate::config::ExperimentConfig;
use crate::evaluation::PairSet;
use crate::util::write_atomic;
use anyhow::{Context, Result};
use base64::Engine as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a run folder holds, read once.
struct Run {
    dir: PathBuf,
    cfg: ExperimentConfig,
    config_text: String,
    /// The main attribution method's rows (every section but the methods table).
    rows: Vec<ResultRow>,
    /// Every row, of every attribution method.
    all_rows: Vec<ResultRow>,
    results_md: Option<String>,
}

/// Writes `run_dir/report.html` atomically from the run's files and returns its path. A missing
/// or unreadable `config.toml` or `results.json` is an error naming the file; the optional
/// files are shown when present and said to be absent otherwise.
pub fn write_report(run_dir: &Path) -> Result<PathBuf> {
    let run = load(run_dir)?;
    let html = render(&run);
    let path = run_dir.join("report.html");
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

fn load(dir: &Path) -> Result<Run> {
    let config_path = dir.join("config.toml");
    let cfg = ExperimentConfig::load(&config_path)?;
    let config_text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read config {}", config_path.display()))?;
    let results_path = dir.join("results.json");
    let text = std::fs::read_to_string(&results_path).with_context(|| {
        format!(
            "cannot read results {} (has a seed of this run finished yet?)",
            results_path.display()
        )
    })?;
    let rows: Vec<ResultRow> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a results file (a JSON array of result rows)",
            results_path.display()
        )
    })?;
    let all_rows = rows;
    let rows = super::rows_of_method(&all_rows, cfg.eval.primary_attribution());
    Ok(Run {
        dir: dir.to_path_buf(),
        cfg,
        config_text,
        rows,
        all_rows,
        results_md: std::fs::read_to_string(dir.join("results.md")).ok(),
    })
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An `<img>` with the PNG bytes as a base64 `data:` URI.
fn img_tag(png: &[u8], alt: &str, class: &str) -> String {
    format!(
        "<img class=\"{class}\" alt=\"{}\" src=\"data:image/png;base64,{}\">",
        escape(alt),
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// A PNG file of the run, checked to decode, with its width; or why it cannot be shown.
fn read_png(path: &Path) -> std::result::Result<(Vec<u8>, u32), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map_err(|e| format!("{} is not a readable PNG: {e}", path.display()))?;
    Ok((bytes, img.width()))
}

/// Widest an overlay figure is shown, in CSS pixels (the caption sits beside it).
const OVERLAY_MAX_WIDTH: u32 = 1100;

/// Whole-number upscaling of a small overlay figure (small inputs give tiny panels), at most
/// 3x and within [`OVERLAY_MAX_WIDTH`].
fn overlay_scale(width: u32) -> u32 {
    (OVERLAY_MAX_WIDTH / width.max(1)).clamp(1, 3)
}

fn bad(msg: &str) -> String {
    format!("<p class=\"bad\">{}</p>\n", escape(msg))
}

fn render(run: &Run) -> String {
    let title = format!("faithful report: {}", run_name(&run.dir));
    let mut body = String::new();
    body.push_str(&format!("<h1>{}</h1>\n", escape(&title)));
    body.push_str(&summary(run));
    body.push_str(&health(&run.rows));
    body.push_str(CONTENTS);
    body.push_str(&claims_section(run));
    body.push_str(&tables_section(run));
    body.push_str(&methods_section(run));
    body.push_str(&bars_section(run));
    body.push_str(&curves_section(run));
    body.push_str(&sweep_section(&run.dir));
    body.push_str(&roar_section(&run.dir));
    body.push_str(&overlays_section(run));
    body.push_str(&config_section(&run.config_text));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}<footer>Written by \
         faithful {} from this folder's files; rebuild with <code>faithful report \
         RUN_DIR</code>.</footer>\n</body>\n</html>\n",
        escape(&title),
        env!("CARGO_PKG_VERSION"),
    )
}

fn run_name(dir: &Path) -> String {
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| abs.display().to_string())
}

const CONTENTS: &str = "<nav>Contents: <a href=\"#claims\">claims</a> · \
    <a href=\"#tables\">tables</a> · <a href=\"#methods\">attribution methods</a> · \
    <a href=\"#bars\">bar charts</a> · \
    <a href=\"#training\">training curves</a> · <a href=\"#sweep\">pruning sweep</a> · <a href=\"#roar\">ROAR</a> · \
    <a href=\"#overlays\">overlays</a> · <a href=\"#config\">config</a></nav>\n";

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `Dataset: ...` paragraph of `results.md` (it describes the data as loaded).
fn dataset_paragraph(results_md: Option<&str>) -> Option<String> {
    let md = results_md?;
    let line = md.lines().find(|l| l.starts_with("Dataset: "))?;
    Some(line.replace('`', ""))
}

fn summary(run: &Run) -> String {
    let cfg = &run.cfg;
    let done = seeds_of(&run.rows);
    let mut s = String::from("<section id=\"summary\">\n<ul class=\"summary\">\n");
    let mut item = |k: &str, v: String| {
        let _ = writeln!(s, "<li><b>{k}:</b> {}</li>", escape(&v));
    };
    item("Run folder", run.dir.display().to_string());
    item("Dataset", cfg.dataset.name().to_string());
    item(
        "Seeds",
        format!("{} (with results: {})", join(&cfg.seeds), join(&done)),
    );
    item("Compressions", cfg.compressions.join(", "));
    item("Regularizers", cfg.regularizers.join(", "));
    item(
        "Evaluation",
        format!(
            "attribution {} (the first is the main one), mAP {}, pointing tolerance {} px; the rows' own metrics use the \
             {} protocol (eval.pairs)",
            cfg.eval.attributions.join(", "),
            file_name_of(&cfg.eval.map_variant),
            cfg.eval.pointing_tolerance,
            protocol_label(cfg.eval.pairs)
        ),
    );
    item(
        "Networks evaluated",
        format!("{} rows in results.json", run.rows.len()),
    );
    s.push_str("</ul>\n");
    if let Some(p) = dataset_paragraph(run.results_md.as_deref()) {
        let _ = writeln!(s, "<p class=\"describe\">{}</p>", escape(&p));
    }
    let missing: Vec<u64> = cfg
        .seeds
        .iter()
        .copied()
        .filter(|x| !done.contains(x))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"partial-run\">Partial run: no results yet for seed(s) {}; the tables \
             average the seeds that finished.</p>",
            join(&missing)
        );
    }
    s.push_str("</section>\n");
    s
}

/// How a unit enum variant is spelled in the run's files (`per-class`, `at-chance`, ...).
fn file_name_of<T: serde::Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(String::from))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// A warning kind in words (`at chance`, `predicts nothing`, ...).
fn kind_words(kind: &super::WarningKind) -> String {
    file_name_of(kind).replace('-', " ")
}

fn network_words(r: &ResultRow) -> String {
    let who = if r.compression == "none" {
        "teacher".to_string()
    } else {
        format!("{} / {}", r.compression, r.regularizer)
    };
    let round = if r.round > 0 {
        format!(", round {}", r.round)
    } else {
        String::new()
    };
    format!(
        "{who} ({}), seed {}{round}{}",
        r.network,
        r.seed,
        r.replicate_tag()
    )
}

/// The loud box: every row warning, or that none was found, or that health was not recorded.
fn health(rows: &[ResultRow]) -> String {
    let warned: Vec<(&ResultRow, &super::Warning)> = rows
        .iter()
        .flat_map(|r| r.warnings.iter().map(move |w| (r, w)))
        .collect();
    if !warned.is_empty() {
        let mut s = format!(
            "<div class=\"warn-box\" id=\"health\">\n<h2>&#9888; Training problems: {} \
             warning(s) on {} of {} networks</h2>\n<p>Numbers of the networks below are not a \
             fair test of the method; read them with care.</p>\n<ul>\n",
            warned.len(),
            rows.iter().filter(|r| !r.warnings.is_empty()).count(),
            rows.len()
        );
        for (r, w) in warned {
            let _ = writeln!(
                s,
                "<li><b>{}</b>: <span class=\"kind\">{}</span> — {}</li>",
                escape(&network_words(r)),
                escape(&kind_words(&w.kind)),
                escape(&w.message)
            );
        }
        s.push_str("</ul>\n</div>\n");
        return s;
    }
    if curves::has_history(rows) {
        let n = rows.iter().filter(|r| !r.history.is_empty()).count();
        return format!(
            "<p class=\"ok-box\" id=\"health\">&#10004; No training problems detected (health \
             checks recorded for {n} networks: none at chance, none predicting nothing, no flat \
             loss, no network without pairs).</p>\n"
        );
    }
    "<p class=\"unknown-box\" id=\"health\">Training health was not recorded in this run: its \
     results.json has no per-epoch history or warnings (it predates the health checks).</p>\n"
        .to_string()
}

/// Protocols whose metrics some row carries: both when any row has `protocols`, else the
/// run's `eval.pairs`.
fn protocols(run: &Run) -> Vec<PairSet> {
    if run.rows.iter().any(|r| r.protocols.is_some()) {
        vec![PairSet::Predicted, PairSet::Present]
    } else {
        vec![run.cfg.eval.pairs]
    }
}

/// Why a protocol is shown, in one sentence.
fn protocol_why(p: PairSet) -> &'static str {
    match p {
        PairSet::Predicted => {
            "As in the paper and the authors' code, each network is scored on the (image, class) \
             pairs whose class is present and that it predicts, so a weak student is scored only \
             on the pairs it finds, often the easier ones, which can flatter it."
        }
        PairSet::Present => {
            "Every network is scored on the same pairs, every present class, so a difference \
             between networks is not a difference in which pairs they were scored on."
        }
    }
}

fn claims_section(run: &Run) -> String {
    let checks = claims::check_claims(&run.rows, run.cfg.eval.pairs);
    let mut s = format!(
        "<section id=\"claims\">\n<h2>The paper's claims, checked per seed</h2>\n<p>On the \
         final networks (last round) of each compression method and seed: (1) {}: the naive \
         network's (regularizer none) AUC and pointing accuracy are below the teacher's; (2) {}: \
         their AUC and pointing accuracy are above the naive network's (EWA rows are information \
         only); (3) {}: a matched network's mAP is at least the naive network's minus <b>{:.1} \
         points</b> (the tolerance); whether it is above the naive network's is said apart. An \
         undefined metric fails its check.</p>\n",
        claims::Claim::NaiveLowersAttribution.statement(),
        claims::Claim::MatchingRecovers.statement(),
        claims::Claim::NoPredictiveCost.statement(),
        claims::MAP_TOLERANCE
    );
    if checks.is_empty() {
        s.push_str("<p>No compressed network has results yet: nothing to check.</p>\n</section>\n");
        return s;
    }
    s.push_str(&claims_summary(&checks));
    s.push_str(&claims_table(&checks));
    s.push_str("</section>\n");
    s
}

fn protocol_cell(p: Option<PairSet>) -> &'static str {
    p.map_or("any (mAP)", protocol_label)
}

/// Per claim and protocol: how many of the (non-information) checks hold.
fn claims_summary(checks: &[ClaimCheck]) -> String {
    let mut keys: Vec<(claims::Claim, Option<PairSet>)> = Vec::new();
    for c in checks.iter().filter(|c| !c.informational) {
        if !keys.contains(&(c.claim, c.protocol)) {
            keys.push((c.claim, c.protocol));
        }
    }
    keys.sort_by_key(|k| (k.0.number(), k.1.map_or(2, |p| p as u8)));
    let mut s = String::from(
        "<table class=\"claims-summary\">\n<tr><th>claim</th><th>protocol</th><th>checks \
         that hold</th></tr>\n",
    );
    for (claim, p) in keys {
        let these = checks
            .iter()
            .filter(|c| !c.informational && c.claim == claim && c.protocol == p);
        let (n, k) = these.fold((0, 0), |(n, k), c| (n + 1, k + c.holds as usize));
        let class = if k == n {
            "holds"
        } else if k == 0 {
            "fails"
        } else {
            "mixed"
        };
        let _ = writeln!(
            s,
            "<tr><td>{} {}</td><td>{}</td><td class=\"{class}\">{k} of {n}</td></tr>",
            claim.number(),
            escape(claim.statement()),
            escape(protocol_cell(p))
        );
    }
    s.push_str("</table>\n");
    s
}

/// Short protocol name for the per-seed claims table.
fn protocol_short(p: Option<PairSet>) -> &'static str {
    match p {
        Some(PairSet::Predicted) => "paper's",
        Some(PairSet::Present) => "common",
        None => "mAP",
    }
}

fn claims_table(checks: &[ClaimCheck]) -> String {
    let mut s = String::from(
        "<p class=\"note\">Per seed: protocol <i>paper's</i> = predicted pairs, <i>common</i> = \
         present pairs, <i>mAP</i> = claim 3 (no pairs involved); the claim column gives the \
         claim's number (hover it for the statement); italic rows are information only.</p>\n\
         <div class=\"scroll\"><table class=\"claims\">\n<tr><th>compression</th><th>seed</th>\
         <th>protocol</th><th>claim</th><th>network</th><th>verdict</th><th>numbers</th></tr>\n",
    );
    for c in checks {
        let class = if c.holds { "holds" } else { "fails" };
        let _ = writeln!(
            s,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\" \
             title=\"{}\">{}</td><td>{}</td><td class=\"{class} verdict\">{}</td>\
             <td class=\"detail\">{}</td></tr>",
            if c.informational {
                " class=\"info\""
            } else {
                ""
            },
            escape(&c.compression),
            c.seed,
            protocol_short(c.protocol),
            escape(c.claim.statement()),
            c.claim.number(),
            escape(&c.regularizer),
            escape(&c.verdict()),
            escape(&c.detail),
        );
    }
    s.push_str("</table></div>\n");
    s
}

/// The rows with their attribution metrics replaced by those under `p`; rows that do not carry
/// `p` are left out and counted.
fn rows_under(run: &Run, p: PairSet) -> (Vec<ResultRow>, usize) {
    let mut out = Vec::new();
    let mut missing = 0;
    for r in &super::seed_means(&run.rows) {
        match claims::metrics_under(r, p, run.cfg.eval.pairs) {
            Some(l) => out.push(ResultRow {
                auc: l.auc,
                point_acc: l.point_acc,
                cos: l.cos,
                l2: l.l2,
                pairs: l.pairs,
                ..r.clone()
            }),
            None => missing += 1,
        }
    }
    (out, missing)
}

fn tables_section(run: &Run) -> String {
    let mut s = String::from(
        "<section id=\"tables\">\n<h2>Results per compression method</h2>\n<p>Mean ± sample \
         standard deviation over seeds; mAP, F1, AUC and pointing accuracy in %; cos and l2 \
         compare each network's Grad-CAM map with the teacher's on the same pair.</p>\n",
    );
    let ps = protocols(run);
    if ps.len() == 1 {
        let other = match ps[0] {
            PairSet::Predicted => PairSet::Present,
            PairSet::Present => PairSet::Predicted,
        };
        let _ = writeln!(
            s,
            "<p class=\"note\">Attribution metrics under the {} protocol were not recorded in \
             this run.</p>",
            escape(protocol_label(other))
        );
    }
    for p in ps {
        let (rows, missing) = rows_under(run, p);
        let _ = writeln!(
            s,
            "<h3>Protocol: {}</h3>\n<p class=\"why\">{}</p>",
            escape(protocol_label(p)),
            protocol_why(p)
        );
        if missing > 0 {
            let _ = writeln!(
                s,
                "<p class=\"note\">{missing} row(s) do not carry this protocol's metrics (not \
                 recorded in this run) and are left out.</p>"
            );
        }
        let md = tables_by_compression(&rows, &run.cfg.compressions);
        let (html, any_na) = markdown_html(&md, undefined_reason(p));
        s.push_str(&html);
        if any_na {
            let _ = writeln!(
                s,
                "<p class=\"footnote\">† n/a: {}. A cell with (k/n seeds) averages the k seeds \
                 where the metric is defined. Hover a cell for the reason.</p>",
                undefined_reason(p)
            );
        }
    }
    s.push_str("</section>\n");
    s
}

/// The attribution-methods table (Table 8 analogue, when several methods were evaluated) and
/// the faithfulness metrics (deletion / insertion, ROAD, the sanity check) when measured.
fn methods_section(run: &Run) -> String {
    let cfg = &run.cfg;
    let table8 = super::methods::methods_markdown(
        &run.all_rows,
        &cfg.eval.attributions,
        &cfg.compressions,
        cfg.eval.pairs,
    );
    let faithfulness = super::methods::faithfulness_markdown(
        &run.all_rows,
        &cfg.eval.attributions,
        &cfg.compressions,
    );
    let mut s = String::from("<section id=\"methods\">\n<h2>Attribution methods</h2>\n");
    if table8.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"note\">One attribution method was evaluated ({}); list several in \
             <code>eval.attributions</code> to compare them here.</p>",
            escape(cfg.eval.primary_attribution())
        );
    }
    // the section has its own heading; every sub-table stays open (### -> ##)
    let body: String = table8
        .lines()
        .skip_while(|l| !l.starts_with("AUC"))
        .chain(faithfulness.lines())
        .map(|l| match l.strip_prefix("### ") {
            Some(h) => format!("## {h}\n"),
            None => format!("{}\n", l.replace('`', "")),
        })
        .collect();
    s.push_str(&markdown_html(&body, "no pair qualifies for this method").0);
    s.push_str("</section>\n");
    s
}

/// Converts the Markdown of [`tables_by_compression`] (`##` and `###` headings and pipe tables)
/// to HTML; a `###` section (every round) folds into `<details>`. Returns the HTML and whether
/// any cell is undefined (`n/a` or defined for only some seeds).
fn markdown_html(md: &str, reason: &str) -> (String, bool) {
    let mut out = String::new();
    let mut table: Vec<&str> = Vec::new();
    let mut open_details = false;
    let mut any_na = false;
    let mut flush = |out: &mut String, table: &mut Vec<&str>, open: &mut bool| {
        if !table.is_empty() {
            let (t, na) = table_html(table, reason);
            any_na |= na;
            out.push_str(&t);
            table.clear();
        }
        if *open {
            out.push_str("</details>\n");
            *open = false;
        }
    };
    for line in md.lines() {
        if line.starts_with('|') {
            table.push(line);
            continue;
        }
        if !table.is_empty() {
            flush(&mut out, &mut table, &mut open_details);
        }
        if let Some(h) = line.strip_prefix("### ") {
            let _ = writeln!(out, "<details><summary>{}</summary>", escape(h));
            open_details = true;
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h4>{}</h4>", escape(h));
        } else if let Some(item) = line.strip_prefix("- ") {
            // a Markdown list item (the methods and ROAR verdicts)
            let _ = writeln!(out, "<p class=\"item\">• {}</p>", escape(item));
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", escape(line));
        }
    }
    flush(&mut out, &mut table, &mut open_details);
    (out, any_na)
}

/// One pipe table (header, alignment, body lines) as HTML.
fn table_html(lines: &[&str], reason: &str) -> (String, bool) {
    let cells = |l: &str| -> Vec<String> {
        let t = l.trim().trim_start_matches('|').trim_end_matches('|');
        t.split('|').map(|c| c.trim().to_string()).collect()
    };
    let header = cells(lines[0]);
    let right: Vec<bool> = lines
        .get(1)
        .map(|l| cells(l).iter().map(|a| a.ends_with(':')).collect())
        .unwrap_or_default();
    let mut s = String::from("<div class=\"scroll\"><table class=\"results\">\n<tr>");
    for h in &header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>\n");
    let mut any_na = false;
    for l in lines.iter().skip(2) {
        s.push_str("<tr>");
        for (i, c) in cells(l).iter().enumerate() {
            let (td, na) = cell_html(c, right.get(i).copied().unwrap_or(false), reason);
            any_na |= na;
            s.push_str(&td);
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table></div>\n");
    (s, any_na)
}

/// A table cell; `n/a` and partly defined means get the reason as a tooltip and a † mark.
fn cell_html(text: &str, right: bool, reason: &str) -> (String, bool) {
    let num = if right { " num" } else { "" };
    // `n/a`, possibly followed by a short reason in parentheses
    if text == "n/a" || text.starts_with("n/a ") {
        return (
            format!(
                "<td class=\"na{num}\" title=\"{}\">n/a&nbsp;†</td>",
                escape(&format!("undefined for every seed: {reason}"))
            ),
            true,
        );
    }
    if let Some(open) = text.rfind(" (").filter(|_| text.ends_with(" seeds)")) {
        let counts = &text[open + 2..text.len() - " seeds)".len()];
        let title = format!("defined for {counts} seeds; the others: {reason}");
        return (
            format!(
                "<td class=\"partial{num}\" title=\"{}\">{}&nbsp;†</td>",
                escape(&title),
                escape(text)
            ),
            true,
        );
    }
    let open = if right { "<td class=\"num\">" } else { "<td>" };
    (format!("{open}{}</td>", escape(text)), false)
}

fn bars_section(run: &Run) -> String {
    let mut s = String::from(
        "<section id=\"bars\">\n<h2>Attribution metrics per network</h2>\n<p>Bars: mean over \
         seeds of each network's final round; whiskers: ± one sample standard deviation. The y \
         axes span the bars' range and need not start at 0. Undefined seeds are left out of \
         the mean; a network defined for no seed is marked n/a, one defined for only k of n seeds \
         carries k/n over its bar.</p>\n",
    );
    if run.rows.is_empty() {
        s.push_str("<p>No results yet.</p>\n</section>\n");
        return s;
    }
    let n = seeds_of(&run.rows).len();
    for p in protocols(run) {
        let (rows, _) = rows_under(run, p);
        let title = format!(
            "Per network, mean ± sample std over {n} seed(s) — {} protocol",
            protocol_label(p)
        );
        match bars::bars_png(&rows, &bars::PANELS, &title) {
            Ok(png) => s.push_str(&img_tag(&png, &title, "chart")),
            Err(e) => s.push_str(&bad(&format!("bar chart not drawn: {e:#}"))),
        }
    }
    s.push_str("</section>\n");
    s
}

fn curves_section(run: &Run) -> String {
    let mut s = String::from("<section id=\"training\">\n<h2>Training curves</h2>\n");
    if !curves::has_history(&run.rows) {
        s.push_str("<p>Per-epoch history: not recorded in this run.</p>\n</section>\n");
        return s;
    }
    let seed = run
        .cfg
        .seeds
        .iter()
        .copied()
        .find(|x| seeds_of(&run.rows).contains(x))
        .or_else(|| run.rows.first().map(|r| r.seed))
        .unwrap_or(0);
    match curves::val_map_png(&run.rows, &run.cfg.compressions, seed) {
        Ok(Some(png)) => {
            let _ = writeln!(
                s,
                "<p>Validation mAP after each epoch, seed {seed}: the teacher and every network of \
                 each compression method.</p>"
            );
            s.push_str(&img_tag(&png, "validation mAP per epoch", "chart"));
        }
        Ok(None) => {
            let _ = writeln!(
                s,
                "<p>No compressed network of seed {seed} has a history.</p>"
            );
        }
        Err(e) => s.push_str(&bad(&format!("training curves not drawn: {e:#}"))),
    }
    s.push_str("</section>\n");
    s
}

/// ROAR (the paper's Fig. 7) when the run has `roar.json`.
fn roar_section(dir: &Path) -> String {
    let mut s = String::from("<section id=\"roar\">\n<h2>ROAR: remove and retrain</h2>\n");
    let path = dir.join("roar.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        s.push_str("<p>No ROAR in this run (<code>[roar] enabled = true</code> runs it).</p>\n</section>\n");
        return s;
    };
    let points: Vec<crate::evaluation::roar::RoarPoint> = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            s.push_str(&bad(&format!(
                "{}: not a ROAR results file: {e}",
                path.display()
            )));
            s.push_str("</section>\n");
            return s;
        }
    };
    let md: String = super::roar::markdown(&points)
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.replace('`', "")))
        .collect();
    s.push_str(&markdown_html(&md, "no classifier result").0);
    match read_png(&dir.join("roar.png")) {
        Ok((bytes, _)) => s.push_str(&img_tag(&bytes, "ROAR curves", "chart")),
        Err(e) => s.push_str(&bad(&e)),
    }
    s.push_str("</section>\n");
    s
}

fn sweep_section(dir: &Path) -> String {
    let mut s = String::from("<section id=\"sweep\">\n<h2>Pruning sweep</h2>\n");
    let png = dir.join("sweep.png");
    if !png.exists() {
        s.push_str("<p>No sweep in this run (it has no unstructured pruning).</p>\n</section>\n");
        return s;
    }
    match read_png(&png) {
        Ok((bytes, _)) => {
            s.push_str(
                "<p>Iterative unstructured pruning: each metric against the share of conv \
                 weights pruned, one point per round, mean over seeds.</p>\n",
            );
            s.push_str(&img_tag(&bytes, "pruning sweep", "chart"));
        }
        Err(e) => s.push_str(&bad(&e)),
    }
    if let Ok(csv) = std::fs::read_to_string(dir.join("sweep.csv")) {
        let _ = writeln!(
            s,
            "<details><summary>sweep.csv</summary><pre>{}</pre></details>",
            escape(&csv)
        );
    }
    s.push_str("</section>\n");
    s
}

/// Overlay images of the run: the config's compressions first, then any other, by name.
fn overlay_files(run: &Run) -> Vec<(String, PathBuf)> {
    let mut found: Vec<String> = std::fs::read_dir(&run.dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let c = name.strip_prefix("overlays-")?.strip_suffix(".png")?;
                    Some(c.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let rank = |c: &String| {
        run.cfg
            .compressions
            .iter()
            .position(|x| x == c)
            .unwrap_or(usize::MAX)
    };
    found.sort_by_key(rank);
    found
        .into_iter()
        .map(|c| {
            let p = run.dir.join(format!("overlays-{c}.png"));
            (c, p)
        })
        .collect()
}

/// The `.txt` caption beside an overlay: (column labels, row labels).
fn parse_caption(text: &str) -> Option<(Vec<String>, Vec<String>)> {
    let mut lines = text.lines();
    let cols = lines.next()?.strip_prefix("columns:")?;
    let columns = cols.split(',').map(|c| column_words(c.trim())).collect();
    if lines.next()?.trim() != "rows:" {
        return None;
    }
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    Some((columns, rows))
}

fn column_words(c: &str) -> String {
    match c.split_once(' ') {
        Some(("none", "-")) => "teacher".into(),
        Some((comp, "none")) => format!("{comp} none (naive)"),
        _ => c.to_string(),
    }
}

fn overlays_section(run: &Run) -> String {
    let mut s = String::from(
        "<section id=\"overlays\">\n<h2>Grad-CAM overlays</h2>\n<p>Per row, a test image with \
         the class mask outlined in white, then the maps of the teacher and of each compressed \
         network (jet colours, red = high), with each map's maximum marked by a green cross.</p>\n",
    );
    let files = overlay_files(run);
    if files.is_empty() {
        s.push_str("<p>No overlay images in this run folder.</p>\n");
    }
    for (c, path) in files {
        let _ = writeln!(s, "<h3>{}</h3>", escape(&c));
        let (png, width) = match read_png(&path) {
            Ok(b) => b,
            Err(e) => {
                s.push_str(&bad(&e));
                continue;
            }
        };
        let caption = std::fs::read_to_string(path.with_extension("txt")).ok();
        s.push_str(&overlay_figure(&c, &png, width, caption.as_deref()));
    }
    s.push_str("</section>\n");
    s
}

fn overlay_figure(compression: &str, png: &[u8], width: u32, caption: Option<&str>) -> String {
    let k = overlay_scale(width);
    let img = img_tag(png, &format!("Grad-CAM overlays, {compression}"), "overlay").replacen(
        "<img ",
        &format!(
            "<img style=\"width:{}px\"{} ",
            width * k,
            if k > 1 { " data-upscaled=\"1\"" } else { "" }
        ),
        1,
    );
    let Some(text) = caption else {
        return format!(
            "<figure class=\"overlay\">{img}<figcaption>Caption: not recorded in this run.</figcaption></figure>\n"
        );
    };
    let Some((cols, rows)) = parse_caption(text) else {
        return format!(
            "<figure class=\"overlay\">{img}<figcaption><pre>{}</pre></figcaption></figure>\n",
            escape(text)
        );
    };
    // Newer figures draw their titles and captions into the image and older ones do not, so
    // the caption is text beside the image rather than labels laid over it.
    let mut s = format!(
        "<figure class=\"overlay\">\n{img}\n<figcaption><p><b>Columns, left to right:</b> \
         {}</p>\n<p><b>Rows, top to bottom:</b></p>\n<ol>",
        escape(&cols.join(" · "))
    );
    for r in &rows {
        let _ = write!(s, "<li>{}</li>", escape(r));
    }
    s.push_str("</ol></figcaption>\n</figure>\n");
    s
}

fn config_section(text: &str) -> String {
    format!(
        "<section id=\"config\">\n<h2>Configuration</h2>\n<details><summary>config.toml \
         (the exact settings of this run; rerun with <code>faithful experiment \
         config.toml</code>)</summary>\n<pre>{}</pre>\n</details>\n</section>\n",
        escape(text)
    )
}

const CSS: &str = "
body{font-family:'DejaVu Sans',Verdana,Arial,sans-serif;color:#1d1d1d;max-width:1440px;
  margin:0 auto;padding:12px 28px 40px;line-height:1.45;font-size:15px;background:#fff}
h1{font-size:26px;margin:10px 0 8px}
h2{font-size:21px;margin:28px 0 8px;border-bottom:2px solid #ddd;padding-bottom:3px}
h3{font-size:17px;margin:18px 0 6px}
h4{font-size:15px;margin:14px 0 4px}
nav{margin:14px 0;padding:6px 10px;background:#f3f3f3;border-radius:4px}
ul.summary{margin:4px 0 8px;padding-left:20px}
p.describe{color:#444;font-size:14px}
.partial-run{background:#fff4d6;border:2px solid #d49b00;padding:6px 12px;border-radius:5px}
.warn-box{border:4px solid #c40000;background:#ffe9e9;color:#5a0000;padding:8px 18px;
  border-radius:6px;margin:14px 0}
.warn-box h2{color:#c40000;border:0;margin:6px 0}
.warn-box .kind{font-weight:bold;color:#c40000;text-transform:uppercase;font-size:13px}
.ok-box{border:2px solid #1e8a3c;background:#e8f8ec;color:#0f5a25;padding:8px 16px;
  border-radius:6px;font-weight:bold}
.unknown-box{border:2px solid #888;background:#f2f2f2;color:#333;padding:8px 16px;
  border-radius:6px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 14px}
th,td{border:1px solid #c8c8c8;padding:3px 5px;white-space:nowrap}
th{background:#ececec;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.results tr:nth-child(even) td{background:#f8f8f8}
table.results td.na{color:#b00000;cursor:help;background:#fff0f0}
table.results td.partial{color:#8a5a00;cursor:help;white-space:normal}
table td.holds{background:#d5f2dc;color:#0c5a24;font-weight:bold}
table td.fails{background:#fbd3d3;color:#8a0000;font-weight:bold}
table td.mixed{background:#fff0c8;color:#6a4a00;font-weight:bold}
table.claims td.detail{white-space:normal;font-size:12.5px}
table.claims td.verdict{white-space:normal;max-width:330px}
table.claims tr.info td{color:#666;font-style:italic}
table.claims tr.info td.holds{background:#ecf8ef}
table.claims tr.info td.fails{background:#fcecec}
p.why{margin:2px 0 6px;font-style:italic}
p.note,p.footnote{font-size:13px;color:#555}
p.bad{color:#b00000;font-weight:bold}
details{margin:6px 0}
summary{cursor:pointer;font-weight:bold}
pre{background:#f6f6f6;border:1px solid #ddd;padding:8px;font-size:12.5px;overflow-x:auto}
img.chart{display:block;max-width:100%;height:auto;border:1px solid #ddd;margin:8px 0}
figure{margin:8px 0 22px}
figure.overlay{display:flex;gap:18px;align-items:flex-start}
figure.overlay figcaption{font-size:13.5px;min-width:200px;max-width:320px}
figure.overlay ol{margin:2px 0;padding-left:22px}
img.overlay{display:block;max-width:calc(100% - 240px);height:auto;border:1px solid #ddd}
img.overlay[data-upscaled]{image-rendering:pixelated}
footer{margin-top:30px;font-size:12px;color:#777}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_overlays_are_upscaled_by_whole_numbers_within_the_page() {
        assert_eq!(overlay_scale(1180), 1);
        assert_eq!(overlay_scale(440), 2);
        assert_eq!(overlay_scale(200), 3);
        assert_eq!(overlay_scale(3000), 1);
        assert!(440 * overlay_scale(440) <= OVERLAY_MAX_WIDTH);
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape("<a href=\"x\">O'Neil & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }

    #[test]
    fn markdown_tables_become_html_with_reasons_for_undefined_cells() {
        let md = "## kd\n\n| network | AUC |\n|---|---:|\n| a<b | n/a |\n| d | n/a (no pairs) |\n| c | 75.00 ± 7.07 (2/3 seeds) |\n\n\
                  ### kd: every round\n\n| x |\n|---|\n| 1 |\n";
        let (html, na) = markdown_html(md, "because");
        assert!(na);
        assert!(html.contains("<h4>kd</h4>"), "{html}");
        assert!(html.contains("<td>a&lt;b</td>"), "{html}");
        assert!(
            html.contains("title=\"undefined for every seed: because\">n/a&nbsp;†"),
            "{html}"
        );
        assert_eq!(
            html.matches("title=\"undefined for every seed: because\">n/a&nbsp;†")
                .count(),
            2,
            "{html}"
        );
        assert!(
            html.contains("title=\"defined for 2/3 seeds; the others: because\""),
            "{html}"
        );
        assert!(
            html.contains("<details><summary>kd: every round</summary>"),
            "{html}"
        );
        assert_eq!(html.matches("</details>").count(), 1, "{html}");
        let (_, na) = markdown_html("| a |\n|---|\n| 1.00 ± 0.10 |\n", "r");
        assert!(!na);
    }

    #[test]
    fn overlay_captions_parse_and_name_the_teacher() {
        let (cols, rows) = parse_caption(
            "columns: image, none -, kd none, kd swa\nrows:\ntest image 3, class square\n",
        )
        .unwrap();
        assert_eq!(cols, ["image", "teacher", "kd none (naive)", "kd swa"]);
        assert_eq!(rows, ["test image 3, class square"]);
        assert!(parse_caption("something else").is_none());
    }

    #[test]
    fn missing_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", write_report(dir.path()).unwrap_err());
        assert!(e.contains("config.toml"), "{e}");
        std::fs::write(dir.path().join("config.toml"), "seeds = [0]\n").unwrap();
        let e = format!("{:#}", write_report(dir.path()).unwrap_err());
        assert!(e.contains("results.json"), "{e}");
        std::fs::write(dir.path().join("results.json"), "{\"not\": \"rows\"}").unwrap();
        let e = format!("{:#}", write_report(dir.path()).unwrap_err());
        assert!(
            e.contains("results.json") && e.contains("not a results file"),
            "{e}"
        );
        std::fs::write(dir.path().join("config.toml"), "seeds = \"zero\"\n").unwrap();
        let e = format!("{:#}", write_report(dir.path()).unwrap_err());
        assert!(e.contains("config.toml"), "{e}");
    }
}
