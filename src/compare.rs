//! `runs` and `compare`: the run history, and runs side by side (differing parameters, metrics).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::cache::{Lookup, Store};
use crate::records::{self, GitInfo, Outcome, RunRecord};

/// One line of `galaxy-pipe runs`.
#[derive(Debug, Serialize)]
pub struct RunRow {
    pub id: String,
    pub started: String,
    pub pipeline: String,
    pub name: String,
    pub git: Option<GitInfo>,
    pub overrides: Vec<String>,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub rmse: Option<f64>,
}

/// Recent runs, newest first, optionally only those of one pipeline file; and the warnings
/// about unreadable records.
pub fn runs(store: &Store, pipeline: Option<&Path>, limit: usize) -> (Vec<RunRow>, Vec<String>) {
    let (all, warnings) = records::list(&store.runs_dir());
    let wanted = pipeline.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let rows = all
        .into_iter()
        .filter(|r| {
            wanted.as_ref().is_none_or(|w| {
                std::path::absolute(&r.pipeline).is_ok_and(|p| &p == w)
                    || Path::new(&r.pipeline) == w
            })
        })
        .take(limit)
        .map(|r| RunRow {
            ran: r.count(Outcome::Ran),
            cached: r.count(Outcome::Cached),
            failed: r.count(Outcome::Failed),
            rmse: r.headline_rmse(),
            id: r.id,
            started: r.started,
            pipeline: r.pipeline,
            name: r.pipeline_name,
            git: r.git,
            overrides: r.overrides,
        })
        .collect();
    (rows, warnings)
}

/// The run list as a text table.
pub fn runs_text(rows: &[RunRow]) -> String {
    let mut out = format!(
        "{:<27} {:<20} {:<22} {:<9} {:>4} {:>6} {:>9}  overrides\n",
        "run", "started", "pipeline", "git", "ran", "cached", "rmse"
    );
    for r in rows {
        let git = r
            .git
            .as_ref()
            .map(|g| {
                format!(
                    "{}{}",
                    &g.commit[..g.commit.len().min(7)],
                    if g.dirty { "*" } else { "" }
                )
            })
            .unwrap_or_else(|| "-".into());
        let rmse = r.rmse.map_or_else(|| "-".into(), |v| format!("{v:.5}"));
        let started: String = r.started.chars().take(19).collect();
        out.push_str(&format!(
            "{:<27} {:<20} {:<22} {:<9} {:>4} {:>6} {:>9}  {}\n",
            r.id,
            started,
            r.name,
            git,
            r.ran,
            r.cached,
            rmse,
            r.overrides.join(" ")
        ));
    }
    out
}

/// A run id that names no run, or more than one.
#[derive(Debug, thiserror::Error)]
pub enum RunLookupError {
    #[error("no run `{0}` (see `galaxy-pipe runs`)")]
    Unknown(String),
    #[error("run `{wanted}`: {warning}")]
    Unreadable { wanted: String, warning: String },
    #[error("`{wanted}` matches {n} runs; give more of the id")]
    Ambiguous { wanted: String, n: usize },
}

/// Find runs by id or unique id prefix; a miss that matches an unreadable record says so.
pub fn resolve<'a>(
    all: &'a [RunRecord],
    unreadable: &[String],
    wanted: &[String],
) -> Result<Vec<&'a RunRecord>, RunLookupError> {
    wanted
        .iter()
        .map(|w| {
            let hits: Vec<&RunRecord> = all
                .iter()
                .filter(|r| r.id.starts_with(w.as_str()))
                .collect();
            match hits.len() {
                1 => Ok(hits[0]),
                0 => match unreadable.iter().find(|u| u.contains(w.as_str())) {
                    Some(warning) => Err(RunLookupError::Unreadable {
                        wanted: w.clone(),
                        warning: warning.clone(),
                    }),
                    None => Err(RunLookupError::Unknown(w.clone())),
                },
                n => Err(RunLookupError::Ambiguous {
                    wanted: w.clone(),
                    n,
                }),
            }
        })
        .collect()
}

/// Flattens nested parameters into `prefix.key.subkey` → rendered value (no prefix when empty).
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// One column of a comparison: a run, or a pipeline's current cached state.
pub struct Column {
    pub label: String,
    pub params: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
}

/// Adds the parameters of the stage `id` (from its stored fingerprint) to `params`; returns the
/// stage's metrics as stored with the artifact.
fn stage_into(
    store: &Store,
    id: &str,
    key: &str,
    params: &mut BTreeMap<String, String>,
) -> Option<BTreeMap<String, f64>> {
    let Lookup::Valid(a) = store.peek(key, false) else {
        return None;
    };
    flatten(id, &a.fingerprint.params, params);
    if let Some(seed) = a.fingerprint.seed {
        params.insert(format!("{id}.(seed)"), seed.to_string());
    }
    Some(a.report.metrics)
}

/// Columns for runs given by id or unique id prefix.
pub fn run_columns(store: &Store, ids: &[String]) -> Result<Vec<Column>, RunLookupError> {
    let (all, unreadable) = records::list(&store.runs_dir());
    let runs = resolve(&all, &unreadable, ids)?;
    Ok(runs
        .into_iter()
        .map(|r| {
            let mut params = BTreeMap::new();
            let mut metrics = BTreeMap::new();
            for s in &r.stages {
                if let Some(key) = &s.key {
                    stage_into(store, &s.id, key, &mut params);
                }
                for (m, v) in &s.metrics {
                    metrics.insert(format!("{}.{m}", s.id), *v);
                }
            }
            Column {
                label: r.id.clone(),
                params,
                metrics,
            }
        })
        .collect())
}

/// A column for a pipeline's current state: `(stage id, key)` of each stage that is cached.
pub fn state_column(store: &Store, label: String, stages: &[(String, String)]) -> Column {
    let mut params = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for (id, key) in stages {
        for (m, v) in stage_into(store, id, key, &mut params).unwrap_or_default() {
            metrics.insert(format!("{id}.{m}"), v);
        }
    }
    Column {
        label,
        params,
        metrics,
    }
}

pub enum Format {
    Text,
    Json,
    Csv,
}

/// What `compare` shows: the parameters that differ and every metric, per column.
struct Table<'a> {
    columns: &'a [Column],
    differing: Vec<&'a String>,
    metrics: Vec<&'a String>,
}

impl<'a> Table<'a> {
    fn new(columns: &'a [Column]) -> Self {
        let param_names: BTreeSet<&String> = columns.iter().flat_map(|c| c.params.keys()).collect();
        let differing = param_names
            .into_iter()
            .filter(|name| {
                let values: BTreeSet<Option<&String>> =
                    columns.iter().map(|c| c.params.get(*name)).collect();
                values.len() > 1
            })
            .collect();
        let metrics: BTreeSet<&String> = columns.iter().flat_map(|c| c.metrics.keys()).collect();
        Table {
            columns,
            differing,
            metrics: metrics.into_iter().collect(),
        }
    }

    /// The best value of a lower-is-better metric (RMSE, loss), when the columns differ.
    fn best(&self, name: &str) -> Option<f64> {
        let lower_better = name.contains("rmse") || name.ends_with("loss");
        let vals: Vec<f64> = self
            .columns
            .iter()
            .filter_map(|c| c.metrics.get(name).copied())
            .collect();
        let all_equal = vals.windows(2).all(|w| w[0] == w[1]);
        if lower_better && !all_equal {
            vals.into_iter().min_by(f64::total_cmp)
        } else {
            None
        }
    }

    fn param_cells(&self, name: &str, missing: &str) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| {
                c.params
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| missing.into())
            })
            .collect()
    }

    fn json(&self) -> String {
        let params: BTreeMap<&String, Vec<Option<&String>>> = self
            .differing
            .iter()
            .map(|n| (*n, self.columns.iter().map(|c| c.params.get(*n)).collect()))
            .collect();
        let metrics: BTreeMap<&String, Vec<Option<f64>>> = self
            .metrics
            .iter()
            .map(|n| {
                (
                    *n,
                    self.columns
                        .iter()
                        .map(|c| c.metrics.get(*n).copied())
                        .collect(),
                )
            })
            .collect();
        let ids: Vec<&str> = self.columns.iter().map(|c| c.label.as_str()).collect();
        json!({ "runs": ids, "params": params, "metrics": metrics }).to_string() + "\n"
    }

    fn csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["name".to_string()];
        header.extend(self.columns.iter().map(|c| c.label.clone()));
        w.write_record(&header).expect("writing to memory");
        for n in &self.differing {
            let mut row = vec![format!("param {n}")];
            row.extend(self.param_cells(n, ""));
            w.write_record(&row).expect("writing to memory");
        }
        for n in &self.metrics {
            let mut row = vec![format!("metric {n}")];
            row.extend(
                self.columns
                    .iter()
                    .map(|c| c.metrics.get(*n).map(|v| v.to_string()).unwrap_or_default()),
            );
            w.write_record(&row).expect("writing to memory");
        }
        let bytes = w.into_inner().expect("writing to memory");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Aligned text: every column as wide as its widest cell; the best RMSE starred.
    fn text(&self) -> String {
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        for n in &self.differing {
            rows.push((format!("  {n}"), self.param_cells(n, "-")));
        }
        let params_end = rows.len();
        for n in &self.metrics {
            let best = self.best(n);
            let cells = self
                .columns
                .iter()
                .map(|c| match c.metrics.get(*n) {
                    Some(v) if Some(*v) == best => format!("*{v:.5}"),
                    Some(v) => format!("{v:.5}"),
                    None => "-".into(),
                })
                .collect();
            rows.push((format!("  {n}"), cells));
        }
        let name_width = rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .chain(["metrics (* best):".len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                rows.iter()
                    .map(|(_, cells)| cells[c].chars().count())
                    .chain([self.columns[c].label.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |out: &mut String, name: &str, cells: &[String]| {
            let mut text = format!("{name:<name_width$}");
            for (cell, w) in cells.iter().zip(&widths) {
                text.push_str(&format!("  {cell:>w$}"));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        let mut out = String::new();
        let labels: Vec<String> = self.columns.iter().map(|c| c.label.clone()).collect();
        line(&mut out, "", &labels);
        for (i, (name, cells)) in rows.iter().enumerate() {
            if i == 0 && params_end > 0 {
                out.push_str("parameters that differ:\n");
            }
            if i == params_end {
                out.push_str("metrics (* best):\n");
            }
            line(&mut out, name, cells);
        }
        out
    }
}

/// Columns side by side: only the parameters that differ, and every metric (best RMSE marked).
pub fn render(columns: &[Column], format: Format) -> String {
    let table = Table::new(columns);
    match format {
        Format::Json => table.json(),
        Format::Csv => table.csv(),
        Format::Text => table.text(),
    }
}
