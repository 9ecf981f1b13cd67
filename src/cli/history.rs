//! `runs`, `compare`, `report`, `gc`: what earlier runs left in the cache.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::output::{emit, print};
use super::pipeline::{load, open_remote, open_store, planner};
use super::plan::describe;
use super::{CliError, Context, PipelineArgs, compare_format, exit};
use crate::config;
use crate::records;
use crate::runner::{PlanState, RunOptions};

/// `gc --remote URL`: the remote entries that no retained local run or pipeline state uses, then
/// the blobs no remaining entry names (older than an hour, so a push in progress is safe).
fn remote_gc(
    ctx: &Context,
    store: &crate::cache::Store,
    keep_runs: usize,
    dry_run: bool,
) -> Result<i32, CliError> {
    let remote = open_remote(ctx, None, false)?.expect("--remote was given");
    let (keep, warnings) = crate::gc::retained(store, keep_runs);
    warn_unreadable(&warnings);
    let grace = crate::cache::remote::BLOB_GRACE;
    let report = remote
        .gc(&keep, dry_run, grace)
        .map_err(|e| CliError::Gc(e.to_string()))?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = String::new();
    for key in &report.removed_entries {
        text.push_str(&format!("{verb} entry {key}\n"));
    }
    text.push_str(&format!(
        "{verb} {} entr(ies) and {} blob(s), {:.1} MiB on {}; kept {} entr(ies)\n",
        report.removed_entries.len(),
        report.removed_blobs,
        report.freed_bytes as f64 / (1 << 20) as f64,
        remote.url(),
        report.kept_entries
    ));
    let value = serde_json::to_value(&report).expect("serialise");
    emit(ctx.json, &value, &text)?;
    Ok(exit::OK)
}

fn warn_unreadable(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: ignoring {w}");
    }
}

pub fn runs(ctx: &Context, pipeline: Option<&Path>, limit: usize) -> Result<i32, CliError> {
    let store = match pipeline {
        Some(p) => open_store(ctx, Some(&config::load(p, &[], ctx.registry)?))?,
        None => open_store(ctx, None)?,
    };
    let (rows, warnings) = crate::compare::runs(&store, pipeline, limit);
    warn_unreadable(&warnings);
    let value = json!({ "runs": rows });
    emit(ctx.json, &value, &crate::compare::runs_text(&rows))?;
    Ok(exit::OK)
}

pub fn compare(
    ctx: &Context,
    runs: &[String],
    pipelines: &[PathBuf],
    csv: bool,
) -> Result<i32, CliError> {
    let columns = if pipelines.is_empty() {
        crate::compare::run_columns(&open_store(ctx, None)?, runs)?
    } else {
        pipeline_columns(ctx, pipelines)?
    };
    print(&crate::compare::render(
        &columns,
        compare_format(ctx.json, csv),
    ))?;
    Ok(exit::OK)
}

/// `compare --pipelines`: each pipeline as it is now, from the stages that are cached.
fn pipeline_columns(
    ctx: &Context,
    paths: &[PathBuf],
) -> Result<Vec<crate::compare::Column>, CliError> {
    let mut loaded = Vec::new();
    for path in paths {
        let args = PipelineArgs {
            pipeline: path.clone(),
            set: Vec::new(),
        };
        loaded.push(load(ctx, &args)?);
    }
    let store = open_store(ctx, Some(&loaded[0].0))?;
    let mut columns = Vec::new();
    for (path, (pipeline, graph)) in paths.iter().zip(&loaded) {
        let runner = planner(ctx, pipeline, graph, &store, None);
        let all: BTreeSet<usize> = (0..pipeline.stages.len()).collect();
        let mut cached = Vec::new();
        for entry in runner.plan(&all, &RunOptions::default()) {
            let id = &pipeline.stages[entry.index].id;
            match entry.state {
                PlanState::Fresh { key } => cached.push((id.clone(), key)),
                other => eprintln!(
                    "warning: {}: stage `{id}` is {} (run the pipeline to compare its metrics)",
                    path.display(),
                    describe(&other).0
                ),
            }
        }
        let label = path.display().to_string();
        columns.push(crate::compare::state_column(&store, label, &cached));
    }
    Ok(columns)
}

pub fn report(ctx: &Context, run: Option<&str>, out: &Path) -> Result<i32, CliError> {
    let store = open_store(ctx, None)?;
    let (all, unreadable) = records::list(&store.runs_dir());
    let record = match run {
        Some(id) => crate::compare::resolve(&all, &unreadable, &[id.to_string()])?[0],
        None => all.first().ok_or_else(|| CliError::NoRuns)?,
    };
    let html = crate::report::render(&store, record);
    crate::cache::write_atomic(out, html.as_bytes()).map_err(|source| CliError::Report {
        path: out.to_path_buf(),
        source,
    })?;
    if ctx.json {
        super::output::println(json!({ "run_id": record.id, "out": out, "bytes": html.len() }))?;
    } else {
        eprintln!(
            "wrote {} ({:.1} MiB) for run {}",
            out.display(),
            html.len() as f64 / (1 << 20) as f64,
            record.id
        );
    }
    Ok(exit::OK)
}

pub fn gc(ctx: &Context, keep_runs: usize, dry_run: bool) -> Result<i32, CliError> {
    let store = open_store(ctx, None)?;
    if ctx.remote_on_command_line {
        return remote_gc(ctx, &store, keep_runs, dry_run);
    }
    let report =
        crate::gc::gc(&store, keep_runs, dry_run).map_err(|e| CliError::Gc(e.to_string()))?;
    warn_unreadable(&report.warnings);
    let value = serde_json::to_value(&report).expect("serialise");
    emit(ctx.json, &value, &report.text())?;
    Ok(exit::OK)
}
