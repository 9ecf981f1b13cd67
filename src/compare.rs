//! `runs` and `compare`: the run history, and runs side by side (differing parameters, metrics).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::json;

use crate::cache::{Fingerprint, Lookup, Store};
use crate::records::{self, Outcome, RunRecord};

/// The headline metric of a run: the validation RMSE of its evaluate stage, if any.
fn headline(r: &RunRecord) -> Option<f64> {
    r.stages
        .iter()
        .filter(|s| s.kind == "evaluate")
        .find_map(|s| s.metrics.get("rmse").copied())
}

/// Recent runs, newest first, optionally only those of one pipeline file.
pub fn runs(
    store: &Store,
    pipeline: Option<&Path>,
    limit: usize,
    json: bool,
) -> Result<(), String> {
    let (all, warnings) = records::list(&store.runs_dir());
    for w in &warnings {
        eprintln!("warning: ignoring {w}");
    }
    let wanted = pipeline.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let selected: Vec<&RunRecord> = all
        .iter()
        .filter(|r| {
            wanted.as_ref().is_none_or(|w| {
                std::path::absolute(&r.pipeline).is_ok_and(|p| &p == w)
                    || Path::new(&r.pipeline) == w
            })
        })
        .take(limit)
        .collect();
    if json {
        let rows: Vec<_> = selected
            .iter()
            .map(|r| {
                let count = |o: Outcome| r.stages.iter().filter(|s| s.outcome == o).count();
                json!({ "id": r.id, "started": r.started, "pipeline": r.pipeline, "name": r.pipeline_name, "git": r.git,
                        "overrides": r.overrides, "ran": count(Outcome::Ran), "cached": count(Outcome::Cached),
                        "failed": count(Outcome::Failed), "rmse": headline(r) })
            })
            .collect();
        println!("{}", json!({ "runs": rows }));
        return Ok(());
    }
    println!(
        "{:<27} {:<20} {:<22} {:<9} {:>4} {:>6} {:>9}  overrides",
        "run", "started", "pipeline", "git", "ran", "cached", "rmse"
    );
    for r in selected {
        let count = |o: Outcome| r.stages.iter().filter(|s| s.outcome == o).count();
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
        let rmse = headline(r)
            .map(|v| format!("{v:.5}"))
            .unwrap_or_else(|| "-".into());
        let started: String = r.started.chars().take(19).collect();
        println!(
            "{:<27} {:<20} {:<22} {:<9} {:>4} {:>6} {:>9}  {}",
            r.id,
            started,
            r.pipeline_name,
            git,
            count(Outcome::Ran),
            count(Outcome::Cached),
            rmse,
            r.overrides.join(" ")
        );
    }
    Ok(())
}

/// Find runs by id or unique id prefix; a miss that matches an unreadable record says so.
fn resolve<'a>(
    all: &'a [RunRecord],
    unreadable: &[String],
    wanted: &[String],
) -> Result<Vec<&'a RunRecord>, String> {
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
                    Some(warning) => Err(format!("run `{w}`: {warning}")),
                    None => Err(format!("no run `{w}` (see `galaxy-pipe runs`)")),
                },
                n => Err(format!("`{w}` matches {n} runs; give more of the id")),
            }
        })
        .collect()
}

/// Flatten a JSON value into `prefix.key` → rendered value.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Parameters (from the stored fingerprints) and metrics of one run.
fn columns(store: &Store, r: &RunRecord) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    let mut params = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for s in &r.stages {
        if let Some(key) = &s.key
            && let Lookup::Valid(a) = store.peek(key, false)
            && let Ok(bytes) = std::fs::read(
                a.out_dir
                    .parent()
                    .expect("object folder")
                    .join("fingerprint.json"),
            )
            && let Ok(fp) = serde_json::from_slice::<Fingerprint>(&bytes)
        {
            flatten(&s.id, &fp.params, &mut params);
            if let Some(seed) = fp.seed {
                params.insert(format!("{}.(seed)", s.id), seed.to_string());
            }
        }
        for (m, v) in &s.metrics {
            metrics.insert(format!("{}.{m}", s.id), *v);
        }
    }
    (params, metrics)
}

pub enum Format {
    Text,
    Json,
    Csv,
}

/// Runs side by side: only the parameters that differ, and every metric (best RMSE marked).
pub fn compare(store: &Store, ids: &[String], format: Format) -> Result<(), String> {
    let (all, unreadable) = records::list(&store.runs_dir());
    let runs = resolve(&all, &unreadable, ids)?;
    let cols: Vec<_> = runs.iter().map(|r| columns(store, r)).collect();
    let param_names: BTreeSet<&String> = cols.iter().flat_map(|(p, _)| p.keys()).collect();
    let differing: Vec<&String> = param_names
        .into_iter()
        .filter(|name| {
            let values: BTreeSet<Option<&String>> =
                cols.iter().map(|(p, _)| p.get(*name)).collect();
            values.len() > 1
        })
        .collect();
    let metric_names: BTreeSet<&String> = cols.iter().flat_map(|(_, m)| m.keys()).collect();
    let best = |name: &str| -> Option<f64> {
        let lower_better = name.contains("rmse") || name.ends_with("loss");
        let vals: Vec<f64> = cols
            .iter()
            .filter_map(|(_, m)| m.get(name).copied())
            .collect();
        let all_equal = vals.windows(2).all(|w| w[0] == w[1]);
        if lower_better && !all_equal {
            vals.into_iter().min_by(f64::total_cmp)
        } else {
            None
        }
    };
    match format {
        Format::Json => {
            let params: BTreeMap<&String, Vec<Option<&String>>> = differing
                .iter()
                .map(|n| (*n, cols.iter().map(|(p, _)| p.get(*n)).collect()))
                .collect();
            let metrics: BTreeMap<&String, Vec<Option<f64>>> = metric_names
                .iter()
                .map(|n| (*n, cols.iter().map(|(_, m)| m.get(*n).copied()).collect()))
                .collect();
            let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
            println!(
                "{}",
                json!({ "runs": ids, "params": params, "metrics": metrics })
            );
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            let mut header = vec!["name".to_string()];
            header.extend(runs.iter().map(|r| r.id.clone()));
            w.write_record(&header).map_err(|e| e.to_string())?;
            for n in &differing {
                let mut row = vec![format!("param {n}")];
                row.extend(
                    cols.iter()
                        .map(|(p, _)| p.get(*n).cloned().unwrap_or_default()),
                );
                w.write_record(&row).map_err(|e| e.to_string())?;
            }
            for n in &metric_names {
                let mut row = vec![format!("metric {n}")];
                row.extend(
                    cols.iter()
                        .map(|(_, m)| m.get(*n).map(|v| v.to_string()).unwrap_or_default()),
                );
                w.write_record(&row).map_err(|e| e.to_string())?;
            }
            w.flush().map_err(|e| e.to_string())?;
        }
        Format::Text => {
            let width = 34;
            print!("{:<width$}", "");
            for r in &runs {
                print!(" {:>24}", r.id);
            }
            println!();
            if !differing.is_empty() {
                println!("parameters that differ:");
            }
            for n in &differing {
                print!("  {:<w$}", n, w = width - 2);
                for (p, _) in &cols {
                    print!(" {:>24}", p.get(*n).map(String::as_str).unwrap_or("-"));
                }
                println!();
            }
            println!("metrics (* best):");
            for n in &metric_names {
                print!("  {:<w$}", n, w = width - 2);
                let b = best(n);
                for (_, m) in &cols {
                    let cell = match m.get(*n) {
                        Some(v) if Some(*v) == b => format!("*{v:.5}"),
                        Some(v) => format!("{v:.5}"),
                        None => "-".into(),
                    };
                    print!(" {cell:>24}");
                }
                println!();
            }
        }
    }
    Ok(())
}
