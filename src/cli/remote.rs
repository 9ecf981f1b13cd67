//! `push` and `pull`: move a pipeline's artifacts to and from the shared remote cache.

use std::collections::BTreeSet;

use serde_json::json;

use super::output::emit;
use super::pipeline::{load, open_remote, open_store, planner};
use super::run::{Place, run_once};
use super::{CliError, Context, PipelineArgs, exit};
use crate::cache::Lookup;
use crate::progress::human_bytes;
use crate::runner::{PlanState, RunOptions};

/// Upload the artifacts of the pipeline's current state (its fresh stages), or with no pipeline
/// (`--all`) every artifact of the local cache.
pub fn push(ctx: &Context, args: Option<PipelineArgs>) -> Result<i32, CliError> {
    let loaded = args.as_ref().map(|a| load(ctx, a)).transpose()?;
    let pipeline = loaded.as_ref().map(|(p, _)| p);
    let store = open_store(ctx, pipeline)?;
    let remote = open_remote(ctx, pipeline, true)?.ok_or_else(|| CliError::NoRemote)?;
    // (label, key) of what to push.
    let targets: Vec<(String, String)> = match &loaded {
        Some((pipeline, graph)) => {
            let runner = planner(ctx, pipeline, graph, &store, None);
            let all: BTreeSet<usize> = (0..pipeline.stages.len()).collect();
            runner
                .plan(&all, &RunOptions::default())
                .into_iter()
                .filter_map(|e| match e.state {
                    PlanState::Fresh { key } => Some((pipeline.stages[e.index].id.clone(), key)),
                    _ => None,
                })
                .collect()
        }
        None => store
            .object_keys()
            .into_iter()
            .map(|k| (k[..12].to_string(), k))
            .collect(),
    };
    let mut rows = Vec::new();
    let mut text = String::new();
    for (label, key) in &targets {
        let Lookup::Valid(artifact) = store.lookup(key, false) else {
            continue;
        };
        let bytes = remote.push_artifact(&artifact).map_err(CliError::Push)?;
        let what = if bytes > 0 { "pushed" } else { "present" };
        text.push_str(&format!(
            "{what:>8}  {label:<14} {}  {}\n",
            &key[..12],
            human_bytes(bytes)
        ));
        rows.push(json!({ "stage": label, "key": key, "outcome": what, "bytes": bytes }));
    }
    text.push_str(&format!("{} artifact(s) on {}\n", rows.len(), remote.url()));
    emit(
        ctx.json,
        &json!({ "remote": remote.url(), "artifacts": rows }),
        &text,
    )?;
    Ok(exit::OK)
}

/// Download every stage of the pipeline that is not cached locally; compute nothing. Stages the
/// remote does not have are `skipped` (exit 1).
pub fn pull(ctx: &Context, args: &PipelineArgs) -> Result<i32, CliError> {
    let (pipeline, graph) = load(ctx, args)?;
    let store = open_store(ctx, Some(&pipeline))?;
    let remote = open_remote(ctx, Some(&pipeline), false)?.ok_or_else(|| CliError::NoRemote)?;
    let opts = RunOptions {
        jobs: 4,
        fetch_only: true,
        ..RunOptions::default()
    };
    let selected: BTreeSet<usize> = (0..pipeline.stages.len()).collect();
    let at = Place {
        store: &store,
        remote: Some(&remote),
        executor: &crate::executor::Local,
    };
    let (code, _) = run_once(ctx, &pipeline, &graph, &at, &selected, &opts, ctx.json)?;
    Ok(code)
}
