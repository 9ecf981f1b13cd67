//! `report RUN --out report.html`: one self-contained HTML page about a run (every image inlined
//! as a data URI): the DAG, per-stage timings and cache hits, parameters, the explore figures,
//! crop examples, the loss curve, RMSE against the baselines, and the worst-predicted galaxies.
//! Built with maud: every text is escaped by construction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::artifacts::{self, Split};
use crate::cache::{Artifact, Fingerprint, Lookup, Store};
use crate::labels::{ANSWER_NAMES, QUESTION_TEXT, QUESTIONS};
use crate::records::{Outcome, RunRecord, StageRecord};

/// Galaxies shown in the worst-predicted gallery.
const WORST: usize = 12;

/// A stage of the run with its published folder, if the artifact is still in the cache.
struct StageView<'a> {
    record: &'a StageRecord,
    artifact: Option<Artifact>,
}

impl StageView<'_> {
    fn out_dir(&self) -> Option<&PathBuf> {
        self.artifact.as_ref().map(|a| &a.out_dir)
    }

    fn fingerprint(&self) -> Option<&Fingerprint> {
        self.artifact.as_ref().map(|a| &a.fingerprint)
    }
}

fn stage_views<'a>(store: &Store, run: &'a RunRecord) -> Vec<StageView<'a>> {
    run.stages
        .iter()
        .map(|record| StageView {
            record,
            artifact: record
                .key
                .as_ref()
                .and_then(|k| match store.peek(k, false) {
                    Lookup::Valid(a) => Some(*a),
                    _ => None,
                }),
        })
        .collect()
}

fn png_data_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// An `<img>` of a PNG file, or a note saying why it is missing.
fn figure(path: Option<PathBuf>, caption: &str, class: &str) -> Markup {
    match path.map(|p| (std::fs::read(&p), p)) {
        Some((Ok(bytes), _)) => html! {
            figure class=(class) {
                img src=(png_data_uri(&bytes)) alt=(caption);
                figcaption { (caption) }
            }
        },
        Some((Err(e), p)) => html! {
            p class="missing" { (caption) ": cannot read " (p.display()) ": " (e) }
        },
        None => html! {
            p class="missing" {
                (caption) ": not available (the stage is not in this run or its artifact was deleted by gc)"
            }
        },
    }
}

/// Each stage's column (depth) and row in the DAG drawing, and its inputs (by index).
fn dag_layout(views: &[StageView]) -> (Vec<(f64, f64)>, Vec<Vec<usize>>) {
    let index: BTreeMap<&str, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.record.id.as_str(), i))
        .collect();
    let inputs: Vec<Vec<usize>> = views
        .iter()
        .map(|v| {
            v.fingerprint()
                .map(|f| {
                    f.inputs
                        .keys()
                        .filter_map(|k| index.get(k.as_str()).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    // Records list stages in topological order, so one pass gives each stage its depth.
    let mut depth = vec![0usize; views.len()];
    for i in 0..views.len() {
        depth[i] = inputs[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
    }
    let mut row_in_column = BTreeMap::<usize, usize>::new();
    let pos = depth
        .iter()
        .map(|&d| {
            let row = row_in_column.entry(d).or_default();
            *row += 1;
            (20.0 + d as f64 * 190.0, 20.0 + (*row - 1) as f64 * 64.0)
        })
        .collect();
    (pos, inputs)
}

/// The stage DAG as an SVG: columns by depth, edges from the fingerprints' inputs.
fn dag_svg(views: &[StageView]) -> Markup {
    let (pos, inputs) = dag_layout(views);
    let (w, h) = (150.0, 42.0);
    let width = pos.iter().map(|p| p.0).fold(0.0, f64::max) + w + 20.0;
    let height = pos.iter().map(|p| p.1).fold(0.0, f64::max) + h + 20.0;
    let edges = inputs
        .iter()
        .enumerate()
        .flat_map(|(i, ins)| ins.iter().map(move |&j| (j, i)));
    html! {
        svg class="dag" xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="stage DAG" {
            @for (j, i) in edges {
                @let (x1, y1) = (pos[j].0 + w, pos[j].1 + h / 2.0);
                @let (x2, y2) = (pos[i].0, pos[i].1 + h / 2.0);
                @let mx = (x1 + x2) / 2.0;
                path d=(format!("M{x1},{y1} C{mx},{y1} {mx},{y2} {x2},{y2}")) fill="none"
                    stroke="#8a94a6" stroke-width="1.6" {}
            }
            @for (v, (x, y)) in views.iter().zip(&pos) {
                rect x=(x) y=(y) width=(w) height=(h) rx="7" fill=(outcome_fill(v.record.outcome))
                    stroke="#56607a" {}
                text x=(x + w / 2.0) y=(y + 18.0) text-anchor="middle" font-size="14"
                    font-weight="600" { (v.record.id) }
                text x=(x + w / 2.0) y=(y + 34.0) text-anchor="middle" font-size="11" fill="#444" {
                    (v.record.kind) " · " (v.record.outcome.word())
                }
            }
        }
    }
}

fn outcome_fill(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ran => "#d8efdc",
        Outcome::Cached => "#e3e9f3",
        Outcome::Failed => "#f6d5d5",
        _ => "#f1f1f1",
    }
}

fn stage_table(views: &[StageView]) -> Markup {
    html! {
        table {
            thead { tr { th { "stage" } th { "kind" } th { "outcome" } th class="num" { "seconds" } th { "key" } th { "notes" } } }
            tbody {
                @for v in views {
                    @let r = v.record;
                    tr {
                        td { (r.id) }
                        td { (r.kind) }
                        td class=(r.outcome.word()) { (r.outcome.word()) }
                        td class="num" { (format!("{:.2}", r.seconds)) }
                        td { code { (r.key.as_deref().map(|k| &k[..12.min(k.len())]).unwrap_or("-")) } }
                        td { pre {
                            (r.notes.join("\n"))
                            @if let Some(e) = &r.error {
                                @if !r.notes.is_empty() { "\n" }
                                span class="error" { (e) }
                            }
                        } }
                    }
                }
            }
        }
    }
}

/// Every parameter of every stage, as fingerprinted (defaults filled in), and the seed.
fn params_table(views: &[StageView]) -> Markup {
    html! {
        table class="params" {
            thead { tr { th { "stage" } th { "parameter" } th { "value" } } }
            tbody {
                @for v in views {
                    @match v.fingerprint() {
                        None => tr { td { (v.record.id) } td colspan="2" class="missing" { "artifact not in the cache" } },
                        Some(fp) => @for (i, (name, value)) in param_rows(fp).iter().enumerate() {
                            tr {
                                td { @if i == 0 { (v.record.id) } }
                                td { code { (name) } }
                                td { code { (value) } }
                            }
                        },
                    }
                }
            }
        }
    }
}

fn param_rows(fp: &Fingerprint) -> Vec<(String, String)> {
    let mut params = BTreeMap::new();
    crate::compare::flatten("", &fp.params, &mut params);
    let mut rows: Vec<(String, String)> = params.into_iter().collect();
    if let Some(seed) = fp.seed {
        rows.push(("(seed)".into(), seed.to_string()));
    }
    rows
}

fn first_of_kind<'v, 'a>(views: &'v [StageView<'a>], kind: &str) -> Option<&'v StageView<'a>> {
    views.iter().find(|v| v.record.kind == kind)
}

/// Why a stage kind's artifacts cannot be shown.
fn unavailable(views: &[StageView], kind: &str) -> String {
    match first_of_kind(views, kind) {
        None => format!("this run has no `{kind}` stage"),
        Some(v) if v.record.key.is_none() => format!("`{}` did not run", v.record.id),
        Some(v) => format!(
            "the artifacts of `{}` (or of its crop input) are no longer in the cache (removed by gc?)",
            v.record.id
        ),
    }
}

fn file_of(views: &[StageView], kind: &str, name: &str) -> Option<PathBuf> {
    first_of_kind(views, kind)
        .and_then(|v| v.out_dir())
        .map(|d| d.join(name))
}

/// Why a section of the report could not be drawn (the page says so in its place).
#[derive(Debug, thiserror::Error)]
enum SectionError {
    #[error(transparent)]
    Artifact(#[from] artifacts::ArtifactError),
    #[error("encoding a PNG: {0}")]
    Image(#[from] image::ImageError),
    #[error("{0}")]
    Missing(&'static str),
}

/// evaluate's metrics.parquet as method → scope → RMSE.
fn read_rmse(metrics: &Path) -> Result<BTreeMap<String, BTreeMap<String, f64>>, SectionError> {
    use arrow::array::{Float64Array, StringArray};
    let mut table: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for b in &artifacts::read_parquet(metrics)? {
        let method = artifacts::column::<StringArray>(b, "method", metrics)?;
        let scope = artifacts::column::<StringArray>(b, "scope", metrics)?;
        let rmse = artifacts::column::<Float64Array>(b, "rmse", metrics)?;
        for r in 0..b.num_rows() {
            table
                .entry(method.value(r).to_string())
                .or_default()
                .insert(scope.value(r).to_string(), rmse.value(r));
        }
    }
    Ok(table)
}

/// Per-question RMSE of the model and each baseline (from evaluate's metrics.parquet).
fn rmse_table(metrics: &Path) -> Result<Markup, SectionError> {
    let table = read_rmse(metrics)?;
    // The model first, then the baselines.
    let mut methods: Vec<&String> = table.keys().collect();
    methods.sort_by_key(|m| (m.as_str() != "model", m.as_str()));
    let mut scopes = vec!["overall".to_string()];
    scopes.extend((1..=11).map(|q| format!("Q{q}")));
    let label = |s: &str| match s.strip_prefix('Q').and_then(|q| q.parse::<usize>().ok()) {
        Some(q) => format!("{s} {}", QUESTION_TEXT[q - 1]),
        None => s.to_string(),
    };
    let best = |s: &String| {
        methods
            .iter()
            .filter_map(|m| table[*m].get(s))
            .copied()
            .fold(f64::INFINITY, f64::min)
    };
    Ok(html! {
        table {
            thead { tr { th { "scope" } @for m in &methods { th class="num" { (m) } } } }
            tbody {
                @for s in &scopes {
                    tr {
                        td { (label(s)) }
                        @for m in &methods {
                            @match table[*m].get(s) {
                                Some(v) if *v == best(s) => td class="num best" { (format!("{v:.5}")) },
                                Some(v) => td class="num" { (format!("{v:.5}")) },
                                None => td class="num" { "-" },
                            }
                        }
                    }
                }
            }
        }
    })
}

/// (RMSE, GalaxyID, prediction, crop row, truth) of one validation galaxy.
type Scored<'a> = (
    f64,
    u64,
    &'a crate::labels::Labels,
    usize,
    crate::labels::Labels,
);

/// The validation galaxies with a model prediction, worst first.
fn worst_first<'a>(
    model: &'a [(u64, crate::labels::Labels)],
    crops: &artifacts::Crops,
) -> Vec<Scored<'a>> {
    let row_of: BTreeMap<u64, usize> = crops
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let mut scored: Vec<Scored> = model
        .iter()
        .filter_map(|(id, p)| {
            let i = *row_of.get(id)?;
            if crops.splits[i] != Split::Valid {
                return None;
            }
            let truth = crops.labels[i]?;
            let rmse = crate::metrics::score(&[*p], &[truth]).overall;
            Some((rmse, *id, p, i, truth))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
}

/// The validation galaxies the model predicts worst, with predicted vs true answers.
fn worst_gallery(predictions: &Path, crops: &Path) -> Result<Markup, SectionError> {
    let preds = artifacts::read_predictions(predictions)?;
    let model = preds.get("model").ok_or(SectionError::Missing(
        "no `model` rows in predictions.parquet",
    ))?;
    let crops = artifacts::read_crops(crops)?;
    let scored = worst_first(model, &crops);
    if scored.is_empty() {
        return Ok(html! { p class="missing" { "no validation galaxies with predictions" } });
    }
    let mut cards = Vec::new();
    for (rmse, id, pred, row, truth) in scored.iter().take(WORST) {
        let size = crops.size as u32;
        let img = image::RgbImage::from_raw(size, size, crops.pixels_of(*row).to_vec())
            .ok_or(SectionError::Missing("crop size mismatch"))?;
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        cards.push(html! {
            div class="card" {
                img class="crop" src=(png_data_uri(&png)) alt=(format!("galaxy {id}"));
                div {
                    b { (id) } " RMSE " (format!("{rmse:.4}"))
                    (answers_table(pred, truth))
                }
            }
        });
    }
    Ok(html! { div class="gallery" { @for card in cards { (card) } } })
}

/// Per question, the most-voted answer predicted vs true (rows where they differ marked).
fn answers_table(pred: &crate::labels::Labels, truth: &crate::labels::Labels) -> Markup {
    html! {
        table class="answers" {
            tr { th { "question" } th { "predicted" } th { "true" } }
            @for q in &QUESTIONS {
                @let top = |v: &crate::labels::Labels| {
                    q.columns.clone().max_by(|a, b| v[*a].total_cmp(&v[*b])).expect("questions have answers")
                };
                @let (p, t) = (top(pred), top(truth));
                tr class=[(p != t).then_some("wrong")] {
                    td { "Q" (q.number) " " (QUESTION_TEXT[q.number as usize - 1]) }
                    td class="a" { (ANSWER_NAMES[p]) " " span class="v" { (format!("{:.2}", pred[p])) } }
                    td class="a" { (ANSWER_NAMES[t]) " " span class="v" { (format!("{:.2}", truth[t])) } }
                }
            }
        }
    }
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1240px; padding: 16px 24px 48px; color: #1d2330; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 4px; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d5dae3; padding-bottom: 4px; }
.meta { color: #4a5366; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; background: #e6f4e8; }
td.ran { color: #17702b; } td.cached { color: #3b5b8f; } td.failed { color: #a11; }
pre { margin: 0; white-space: pre-wrap; font-size: 0.8rem; }
.missing { color: #8a5a00; font-style: italic; }
.error { color: #a11; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ec; }
figcaption { font-size: 0.85rem; color: #4a5366; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
.card { display: flex; gap: 10px; border: 1px solid #d5dae3; border-radius: 8px; padding: 8px; font-size: 0.85rem; }
.card img.crop { width: 128px; height: 128px; image-rendering: pixelated; flex: none; }
table.answers { font-size: 0.75rem; margin: 4px 0 0; }
table.answers td, table.answers th { padding: 1px 4px; }
table.answers td.a { white-space: nowrap; }
table.answers .v { color: #5b6478; font-variant-numeric: tabular-nums; }
tr.wrong td { background: #fbeaea; }
svg.dag { max-width: 100%; height: auto; font-family: inherit; }
"#;

/// Marks `<body>` with how many images decoded, for checks in a headless browser.
const LOAD_CHECK: &str = r#"<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length));
});
</script>"#;

/// The report of `run` as one HTML document.
pub fn render(store: &Store, run: &RunRecord) -> String {
    let views = stage_views(store, run);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "galaxy-pipe report: " (run.pipeline_name) " " (run.id) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(run))
                h2 { "Pipeline" }
                (dag_svg(&views))
                h3 { "Stages: timings and cache hits" }
                (stage_table(&views))
                h2 { "Parameters" }
                p class="meta" { "As fingerprinted for this run (defaults filled in)." }
                (params_table(&views))
                (exploration(&views))
                h2 { "Crops" }
                (figure(file_of(&views, "crop", "contact_sheet.png"), "crop examples (contact sheet)", "wide"))
                h2 { "Training" }
                (figure(file_of(&views, "train", "loss_curve.png"), "training loss and validation RMSE", "wide"))
                h2 { "Evaluation against the baselines" }
                (evaluation(&views))
                h2 { "Worst-predicted validation galaxies" }
                p class="meta" {
                    "The " (WORST) " validation galaxies with the largest RMSE; per question, the most-voted answer predicted vs true (red: they differ)."
                }
                (worst_section(&views))
                (PreEscaped(LOAD_CHECK))
            }
        }
    };
    page.into_string() + "\n"
}

/// The title and the run's facts.
fn header(run: &RunRecord) -> Markup {
    let headline = run
        .headline_rmse()
        .map(|v| format!("{v:.5}"))
        .unwrap_or_else(|| "-".into());
    let git = run
        .git
        .as_ref()
        .map(|g| format!("{}{}", g.commit, if g.dirty { " (dirty)" } else { "" }))
        .unwrap_or_else(|| "-".into());
    let overrides = if run.overrides.is_empty() {
        "none".to_string()
    } else {
        run.overrides.join(" ")
    };
    html! {
        h1 { (run.pipeline_name) ": validation RMSE " (headline) }
        p class="meta" {
            "run " code { (run.id) } " · started " (run.started) " · " (format!("{:.1}", run.seconds)) " s · "
            (run.count(Outcome::Ran)) " ran, " (run.count(Outcome::Cached)) " cached, "
            (run.count(Outcome::Failed)) " failed"
            br;
            "pipeline " code { (run.pipeline) } " · git " code { (git) } " · overrides: " code { (overrides) }
        }
    }
}

/// explore's figures: class counts, terminal classes, mean image, gallery, correlation maps.
fn exploration(views: &[StageView]) -> Markup {
    let explore = [
        ("class_counts.png", "classes answered with ≥ confidence"),
        ("terminal_classes.png", "terminal classes"),
        ("mean_image.png", "mean image"),
    ];
    let correlations: Vec<(PathBuf, String)> = (1..=11)
        .filter_map(|q| {
            let path = file_of(views, "explore", &format!("correlation_q{q:02}.png"))?;
            let caption = format!("answer correlations, Q{q} {}", QUESTION_TEXT[q - 1]);
            path.exists().then_some((path, caption))
        })
        .collect();
    html! {
        h2 { "Data exploration" }
        div class="grid" {
            @for (name, caption) in explore { (figure(file_of(views, "explore", name), caption, "")) }
        }
        (figure(file_of(views, "explore", "gallery.png"), "raw images and their crops", "wide"))
        div class="grid" {
            @for (path, caption) in correlations { (figure(Some(path), &caption, "")) }
        }
    }
}

/// The RMSE table against the baselines and the per-class chart.
fn evaluation(views: &[StageView]) -> Markup {
    let table = match file_of(views, "evaluate", crate::artifacts::METRICS) {
        Some(p) => match rmse_table(&p) {
            Ok(t) => t,
            Err(e) => html! { p class="missing" { "metrics: " (e) } },
        },
        None => html! { p class="missing" { "metrics: " (unavailable(views, "evaluate")) } },
    };
    html! {
        (table)
        (figure(file_of(views, "evaluate", "per_class_rmse.png"), "RMSE per class, model vs baselines", "wide"))
    }
}

/// The worst-predicted gallery, from evaluate's predictions and the crops it read.
fn worst_section(views: &[StageView]) -> Markup {
    let evaluate = first_of_kind(views, "evaluate");
    let crop_of_evaluate = evaluate
        .and_then(|e| e.fingerprint())
        .and_then(|fp| {
            fp.inputs.keys().find_map(|id| {
                views
                    .iter()
                    .find(|v| &v.record.id == id && v.record.kind == "crop")
            })
        })
        .and_then(|v| v.out_dir());
    match (evaluate.and_then(|e| e.out_dir()), crop_of_evaluate) {
        (Some(e), Some(c)) => match worst_gallery(
            &e.join(crate::artifacts::PREDICTIONS),
            &c.join(crate::artifacts::CROPS),
        ) {
            Ok(g) => g,
            Err(err) => html! { p class="missing" { "gallery: " (err) } },
        },
        _ => html! { p class="missing" { "gallery: " (unavailable(views, "evaluate")) } },
    }
}
