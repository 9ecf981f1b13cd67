//! `status` and `why`: the planner's view of a pipeline, nothing runs.

use std::collections::BTreeSet;

use serde_json::json;

use super::output::emit;
use super::pipeline::{load, open_remote, open_store, planner, warn_if_remote_down};
use super::{CliError, Context, PipelineArgs, exit};
use crate::executor;
use crate::runner::{PlanState, RunOptions};

/// A plan state as (word, key, reasons).
pub fn describe(state: &PlanState) -> (&'static str, Option<String>, Vec<String>) {
    match state {
        PlanState::Fresh { key } => ("fresh", Some(key.clone()), Vec::new()),
        PlanState::RemoteHit { key } => (
            "remote hit",
            Some(key.clone()),
            vec!["not in the local cache; the remote has it (run downloads it)".to_string()],
        ),
        PlanState::Stale {
            key,
            changes,
            first_run,
        } => {
            let reasons = if *first_run {
                vec!["never ran in this pipeline".to_string()]
            } else {
                changes.clone()
            };
            ("stale", Some(key.clone()), reasons)
        }
        PlanState::Pending { upstream } => (
            "pending",
            None,
            vec![format!("after stale input(s): {}", upstream.join(", "))],
        ),
        PlanState::Unavailable { reason } => ("unavailable", None, vec![reason.clone()]),
    }
}

pub fn status(ctx: &Context, args: &PipelineArgs) -> Result<i32, CliError> {
    let (pipeline, graph) = load(ctx, args)?;
    let store = open_store(ctx, Some(&pipeline))?;
    let remote = open_remote(ctx, Some(&pipeline), false)?;
    let runner = planner(ctx, &pipeline, &graph, &store, remote.as_ref());
    let all: BTreeSet<usize> = (0..pipeline.stages.len()).collect();
    let mut rows = Vec::new();
    let mut text = String::new();
    for entry in runner.plan(&all, &RunOptions::default()) {
        let id = &pipeline.stages[entry.index].id;
        let (state, key, mut reasons) = describe(&entry.state);
        let in_flight = key
            .as_deref()
            .and_then(|k| executor::in_flight_note(&store, k));
        if let (PlanState::Stale { .. }, Some(note)) = (&entry.state, in_flight) {
            reasons.push(note);
        }
        let short = key.as_deref().map(|k| &k[..12]).unwrap_or("-");
        text.push_str(&format!("{state:>11}  {id:<14} {short}\n"));
        for r in &reasons {
            text.push_str(&format!("{:>13}{r}\n", ""));
        }
        rows.push(json!({ "id": id, "state": state, "key": key, "reasons": reasons }));
    }
    warn_if_remote_down(remote.as_ref());
    let value = json!({ "pipeline": pipeline.name, "stages": rows });
    emit(ctx.json, &value, &text)?;
    Ok(exit::OK)
}

pub fn why(ctx: &Context, args: &PipelineArgs, stage: &str) -> Result<i32, CliError> {
    let (pipeline, graph) = load(ctx, args)?;
    let index = crate::graph::index_of(&pipeline, stage)?;
    let store = open_store(ctx, Some(&pipeline))?;
    let remote = open_remote(ctx, Some(&pipeline), false)?;
    let runner = planner(ctx, &pipeline, &graph, &store, remote.as_ref());
    let entry = runner
        .plan(&BTreeSet::from([index]), &RunOptions::default())
        .into_iter()
        .find(|e| e.index == index)
        .expect("selected stage is planned");
    warn_if_remote_down(remote.as_ref());
    let (state, key, reasons) = describe(&entry.state);
    let value = json!({ "stage": stage, "state": state, "key": key, "reasons": reasons });
    let mut text = headline(stage, &entry.state) + "\n";
    if let PlanState::Stale { .. } = entry.state {
        for r in &reasons {
            text.push_str(&format!("  - {r}\n"));
        }
    }
    emit(ctx.json, &value, &text)?;
    Ok(exit::OK)
}

/// The first line of `why`.
fn headline(stage: &str, state: &PlanState) -> String {
    match state {
        PlanState::Fresh { .. } => {
            format!("`{stage}` is fresh: nothing it depends on changed since it last ran")
        }
        PlanState::RemoteHit { .. } => {
            format!("`{stage}` is a remote hit: the remote cache has it, `run` downloads it")
        }
        PlanState::Stale {
            first_run: true, ..
        } => format!("`{stage}` is stale: it has not run in this pipeline (on this cache) yet"),
        PlanState::Stale { .. } => format!("`{stage}` is stale because:"),
        PlanState::Pending { upstream } => format!(
            "`{stage}` will run after its stale input(s) {}; whether it then changes depends on their new outputs",
            upstream.join(", ")
        ),
        PlanState::Unavailable { reason } => format!("`{stage}` cannot be planned: {reason}"),
    }
}
