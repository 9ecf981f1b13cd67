//! What several commands share: loading a pipeline and its DAG, finding and opening the cache,
//! and a runner for planning.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cache::Store;
use crate::cache::remote::Remote;
use crate::config::{self, Pipeline};
use crate::graph::Graph;
use crate::progress::Bars;
use crate::runner::{RunOptions, Runner};

use super::{CliError, Context, PipelineArgs};

pub fn load(ctx: &Context, args: &PipelineArgs) -> Result<(Pipeline, Graph), CliError> {
    let pipeline = config::load(&args.pipeline, &args.set, ctx.registry)?;
    let graph = Graph::build(&pipeline)?;
    Ok((pipeline, graph))
}

/// Where the cache lives: `--cache-dir`/`GALAXY_PIPE_CACHE_DIR`, else the pipeline's
/// `cache_dir`, else `cache/` in the project root: the nearest folder at or above the pipeline
/// file (or the working directory) that holds a `cache/` folder or a `.git`.
fn cache_root(flag: Option<&Path>, pipeline: Option<&Pipeline>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = pipeline.and_then(|p| p.cache_dir.clone()) {
        return dir;
    }
    let start = match pipeline {
        Some(p) => std::path::absolute(&p.path)
            .ok()
            .and_then(|a| a.parent().map(Path::to_path_buf)),
        None => std::env::current_dir().ok(),
    }
    .unwrap_or_else(|| PathBuf::from("."));
    project_root(&start).join("cache")
}

pub fn project_root(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|d| d.join("cache").is_dir() || d.join(".git").exists())
        .unwrap_or(start)
        .to_path_buf()
}

pub fn open_store(ctx: &Context, pipeline: Option<&Pipeline>) -> Result<Store, CliError> {
    let root = cache_root(ctx.cache_dir, pipeline);
    Store::open(&root).map_err(CliError::Cache)
}

/// The stages `run` selects (`--until`, `--only`), after checking every stage id the options
/// name (`--force`, `--only`).
pub fn select(
    pipeline: &Pipeline,
    graph: &Graph,
    opts: &RunOptions,
) -> Result<BTreeSet<usize>, CliError> {
    for id in opts.force.iter().chain(&opts.only) {
        crate::graph::index_of(pipeline, id)?;
    }
    Ok(graph.select(pipeline, opts.until.as_deref(), &opts.only)?)
}

/// A runner that only plans (`status`, `why`, `compare --pipelines`): no progress bars.
pub fn planner<'a>(
    ctx: &Context<'a>,
    pipeline: &'a Pipeline,
    graph: &'a Graph,
    store: &'a Store,
    remote: Option<&'a Remote>,
) -> Runner<'a> {
    Runner {
        pipeline,
        graph,
        store,
        registry: ctx.registry,
        bars: Bars::new(false),
        remote,
        executor: &crate::executor::Local,
    }
}

/// The remote cache: `--remote`, else the pipeline's `remote`; pushing with `--push` or the
/// pipeline's `remote_push`. A URL that cannot be used is a usage error (exit 2).
pub fn open_remote(
    ctx: &Context,
    pipeline: Option<&Pipeline>,
    push: bool,
) -> Result<Option<Remote>, CliError> {
    let url = ctx
        .remote
        .map(str::to_string)
        .or_else(|| pipeline.and_then(|p| p.remote.clone()));
    let Some(url) = url else {
        return Ok(None);
    };
    let push = push || pipeline.is_some_and(|p| p.remote_push);
    Remote::open(&url, push)
        .map(Some)
        .map_err(CliError::RemoteUrl)
}

/// For commands that plan without running (`status`, `why`): the remote's failure, said once
/// on stderr (a missing bucket or a frozen server must not pass for an empty cache).
pub fn warn_if_remote_down(remote: Option<&Remote>) {
    if let Some(warning) = remote.and_then(Remote::take_warning) {
        eprintln!("warning: {warning}");
    }
}
