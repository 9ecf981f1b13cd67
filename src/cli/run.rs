//! `run`: plan and run a pipeline through the cache, write its run record, print the table.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::output::println;
use super::pipeline::{load, open_remote, open_store, select};
use super::{CliError, Context, RunArgs, exit};
use crate::cache::Store;
use crate::cache::remote::Remote;
use crate::config::Pipeline;
use crate::executor::Executor;
use crate::graph::Graph;
use crate::progress::{Bars, bars_enabled};
use crate::records::{self, Outcome, RunRecord, StageRecord};
use crate::runner::{RunOptions, Runner};

pub fn run(ctx: &Context, args: &RunArgs) -> Result<i32, CliError> {
    let (pipeline, graph) = load(ctx, &args.pipeline)?;
    let executor = open_executor(args, &pipeline)?;
    let opts = options(args, executor.as_ref());
    let selected = select(&pipeline, &graph, &opts)?;
    let store = open_store(ctx, Some(&pipeline))?;
    let remote = open_remote(ctx, Some(&pipeline), args.push)?;
    let at = Place {
        store: &store,
        remote: remote.as_ref(),
        executor: executor.as_ref(),
    };
    let (code, _) = run_once(ctx, &pipeline, &graph, &at, &selected, &opts, ctx.json)?;
    Ok(code)
}

/// The runner's options from the command line; `--jobs` defaults to the executor's policy.
pub fn options(args: &RunArgs, executor: &dyn Executor) -> RunOptions {
    let default_jobs = executor.default_jobs();
    RunOptions {
        until: args.until.clone(),
        only: args.only.clone(),
        force: args.force.clone(),
        force_all: args.force_all,
        jobs: args.jobs.unwrap_or(default_jobs),
        dry_run: args.dry_run,
        verify_inputs: args.verify_inputs,
        verify: args.verify,
        fetch_only: false,
    }
}

/// Where a run keeps its artifacts (the local cache and, optionally, the shared remote) and
/// where it computes them.
pub struct Place<'a> {
    pub store: &'a Store,
    pub remote: Option<&'a Remote>,
    pub executor: &'a dyn Executor,
}

/// Run `selected` stages of one pipeline, record the run, print it; the exit code and run id.
pub fn run_once(
    ctx: &Context,
    pipeline: &Pipeline,
    graph: &Graph,
    at: &Place,
    selected: &BTreeSet<usize>,
    opts: &RunOptions,
    json: bool,
) -> Result<(i32, String), CliError> {
    let start = Instant::now();
    let (run_id, started) = records::new_run_id();
    let store = at.store;
    let runner = Runner {
        pipeline,
        graph,
        store,
        registry: ctx.registry,
        bars: Bars::new(bars_enabled(json)),
        remote: at.remote,
        executor: at.executor,
    };
    let stages = runner.run(selected, opts);
    let failed = stages
        .iter()
        .any(|s| matches!(s.outcome, Outcome::Failed | Outcome::Skipped));
    let seconds = start.elapsed().as_secs_f64();
    let record_path = if opts.dry_run {
        None
    } else {
        let record = RunRecord {
            id: run_id.clone(),
            started,
            pipeline: pipeline.path.display().to_string(),
            pipeline_name: pipeline.name.clone(),
            overrides: pipeline.overrides.clone(),
            git: records::git_info(&pipeline_dir(&pipeline.path)),
            seconds,
            stages: stages.clone(),
        };
        record
            .write(&store.runs_dir())
            .inspect_err(|e| eprintln!("warning: could not write the run record: {e}"))
            .ok()
    };
    if json {
        println(
            json!({ "run_id": run_id, "pipeline": pipeline.name, "dry_run": opts.dry_run, "record": record_path, "seconds": seconds, "stages": stages }),
        )?;
    } else {
        eprintln!("{}", verdict(&stages, failed, opts.dry_run, seconds));
    }
    let unpushed = stages.iter().any(|s| s.pushed == Some(false));
    let code = match (failed, unpushed) {
        (true, _) => exit::STAGE_FAILED,
        (false, true) => exit::NOT_PUSHED,
        (false, false) => exit::OK,
    };
    Ok((code, run_id))
}

/// The last line of a run: what ran, was reused, failed.
fn verdict(stages: &[StageRecord], failed: bool, dry_run: bool, seconds: f64) -> String {
    let count = |o: Outcome| records::count(stages, o);
    if dry_run {
        let remote = match count(Outcome::RemoteHit) {
            0 => String::new(),
            n => format!(", {n} remote hit"),
        };
        return format!(
            "dry run: {} hit, {} miss{remote}",
            count(Outcome::Hit),
            count(Outcome::Miss)
        );
    }
    let remote = match count(Outcome::Remote) {
        0 => String::new(),
        n => format!(", {n} from the remote"),
    };
    let push: Vec<bool> = stages.iter().filter_map(|s| s.pushed).collect();
    let pushed_count = push.iter().filter(|&&p| p).count();
    let pushed = match push.len() {
        0 => String::new(),
        n => format!(", pushed {pushed_count} of {n}"),
    };
    let word = match (failed, pushed_count < push.len()) {
        (true, _) => "FAILED",
        (false, true) => "NOT PUSHED",
        (false, false) => "ok",
    };
    format!(
        "{}: {} ran, {} cached{remote}, {} failed, {} skipped{pushed} in {seconds:.2}s",
        word,
        count(Outcome::Ran),
        count(Outcome::Cached),
        count(Outcome::Failed),
        count(Outcome::Skipped)
    )
}

fn pipeline_dir(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

/// The executor a run computes with (`--executor`, else the pipeline's `executor`); a cluster one
/// that cannot be used is a usage error (exit 2) before anything runs.
pub fn open_executor(args: &RunArgs, pipeline: &Pipeline) -> Result<Box<dyn Executor>, CliError> {
    let kind = args.executor.unwrap_or(pipeline.executor);
    kind.open().map_err(CliError::Executor)
}
