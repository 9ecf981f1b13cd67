//! The command line: parses arguments, wires config → graph → runner, prints results, and maps
//! errors to the documented exit codes.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::cache::Store;
use crate::config::{self, ConfigError, Pipeline};
use crate::graph::{Graph, GraphError};
use crate::progress::{Bars, bars_enabled};
use crate::records::{self, Outcome, RunRecord};
use crate::runner::{PlanState, RunOptions, Runner};
use crate::stages::Registry;

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: i32 = 0;
    /// A stage failed (or was skipped because an input failed), or the cache could not be used.
    pub const STAGE_FAILED: i32 = 1;
    /// The pipeline or the command line is invalid; nothing ran.
    pub const USAGE: i32 = 2;
}

#[derive(Parser, Debug)]
#[command(
    name = "galaxy-pipe",
    version,
    about = "Reproducible, cached Galaxy Zoo pipelines",
    max_term_width = 100
)]
struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Cache folder (default: `cache/` in the project root).
    #[arg(long, global = true, env = "GALAXY_PIPE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// More detail (-v: fingerprints and debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct PipelineArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Override a parameter: `STAGE.KEY=VALUE` or `pipeline.KEY=VALUE` (repeatable).
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the pipeline file and its DAG; nothing runs.
    Validate(PipelineArgs),
    /// Print the stage DAG.
    Dag {
        #[command(flatten)]
        args: PipelineArgs,
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Run what is stale, reuse what is cached.
    Run {
        #[command(flatten)]
        args: PipelineArgs,
        /// Run this stage and everything it depends on, nothing after it.
        #[arg(long, value_name = "STAGE", conflicts_with = "only")]
        until: Option<String>,
        /// Run only these stages; their inputs must already be cached (repeatable).
        #[arg(long, value_name = "STAGE")]
        only: Vec<String>,
        /// Re-run this stage even if it is cached (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Re-run every selected stage.
        #[arg(long)]
        force_all: bool,
        /// Stages run at once (default: number of cores).
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<usize>,
        /// Plan only: print hit/miss per stage, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Re-hash every input file instead of trusting the stat cache.
        #[arg(long)]
        verify_inputs: bool,
        /// Re-hash every reused artifact instead of trusting unchanged file stats.
        #[arg(long)]
        verify: bool,
        /// Run a grid: every combination of the values of each `--sweep` (repeatable), sharing
        /// cached upstream stages, then print the compare table of those runs.
        #[arg(long, value_name = "STAGE.KEY=V1,V2,...")]
        sweep: Vec<String>,
    },
    /// Per stage: fresh or stale, and why. Nothing runs.
    Status(PipelineArgs),
    /// Explain exactly what changed for one stage since it last ran.
    Why {
        #[command(flatten)]
        args: PipelineArgs,
        /// The stage id.
        stage: String,
    },
    /// Delete artifacts that neither the last N runs nor any pipeline's current state use.
    Gc {
        /// Keep every artifact used by the newest N runs.
        #[arg(long, default_value_t = 10, value_name = "N")]
        keep_runs: usize,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Recent runs, newest first (optionally of one pipeline file).
    Runs {
        pipeline: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Runs (or pipelines) side by side: the parameters that differ and every metric (best marked).
    #[command(group = clap::ArgGroup::new("what").required(true).args(["runs", "pipelines"]))]
    Compare {
        /// Run ids (or unique prefixes) from `galaxy-pipe runs`.
        runs: Vec<String>,
        /// Compare pipeline files as they are now (their cached stages) instead of runs.
        #[arg(long, num_args = 1.., value_name = "PIPELINE", conflicts_with = "runs")]
        pipelines: Vec<PathBuf>,
        /// Comma-separated values instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Write a self-contained HTML report of a run (default: the newest).
    Report {
        /// Run id (or unique prefix) from `galaxy-pipe runs`.
        run: Option<String>,
        /// The HTML file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the JSON Schema of pipeline files (or, with --artifacts, the Parquet artifact schemas).
    Schema {
        #[arg(long)]
        artifacts: bool,
    },
    /// Measure the performance figures of BENCHMARKS.md (each against a baseline in the same run).
    Bench {
        /// The real Kaggle sample.
        #[arg(
            long,
            default_value = "../shared/data/galaxy-zoo-sample",
            value_name = "DIR"
        )]
        sample: PathBuf,
        /// Scratch folder for the large data set and caches (reused between runs).
        #[arg(long, default_value = "target/bench", value_name = "DIR")]
        work: PathBuf,
        /// Images in the large data set.
        #[arg(long, default_value_t = 61_578)]
        count: usize,
        /// Training batches to time.
        #[arg(long, default_value_t = 40)]
        train_batches: usize,
        /// Measure only these groups of figures (repeatable; default: all).
        #[arg(long, value_enum, value_name = "PART")]
        only: Vec<crate::bench::Part>,
    },
    /// Write a synthetic data set in the Kaggle layout (JPEGs + label CSV + test folder).
    Synth {
        /// Output folder (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Labelled training galaxies.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Unlabelled test galaxies.
        #[arg(long, default_value_t = 200)]
        test_count: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

/// An error with the exit code it maps to.
enum Failure {
    Config(ConfigError),
    Usage(String),
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<GraphError> for Failure {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Invalid(c) => Failure::Config(c),
            other => Failure::Usage(other.to_string()),
        }
    }
}

/// Run the CLI with `args` (including the program name) and the given stage implementations.
pub fn main_with(args: Vec<OsString>, registry: &dyn Registry) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    init_tracing(cli.verbose);
    let json = cli.json;
    match dispatch(cli, registry) {
        Ok(code) => code,
        Err(failure) => {
            let (code, text) = match failure {
                Failure::Config(e) => (exit::USAGE, render_diagnostic(e)),
                Failure::Usage(m) => (exit::USAGE, format!("error: {m}")),
                Failure::Runtime(m) => (exit::STAGE_FAILED, format!("error: {m}")),
            };
            eprintln!("{}", text.trim_end());
            if json {
                println!("{}", json!({ "error": text.trim_end(), "exit_code": code }));
            }
            code
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "galaxy_pipe=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GALAXY_PIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

fn render_diagnostic(e: ConfigError) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    use std::io::IsTerminal;
    let theme = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    match handler.render_report(&mut out, &e) {
        Ok(()) => out,
        Err(_) => e.to_string(),
    }
}

fn load(args: &PipelineArgs) -> Result<(Pipeline, Graph), Failure> {
    let pipeline = config::load(&args.pipeline, &args.set)?;
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

fn open_store(flag: Option<&Path>, pipeline: Option<&Pipeline>) -> Result<Store, Failure> {
    let root = cache_root(flag, pipeline);
    Store::open(&root).map_err(|e| Failure::Runtime(format!("cannot use the cache: {e}")))
}

fn dispatch(cli: Cli, registry: &dyn Registry) -> Result<i32, Failure> {
    let json = cli.json;
    let cache_flag = cli.cache_dir.as_deref();
    match cli.command {
        Command::Schema { artifacts } => {
            if artifacts {
                print!("{}", crate::artifacts::documented_schemas_text());
            } else {
                print!("{}", crate::schema::pipeline_schema_text());
            }
            Ok(exit::OK)
        }
        Command::Validate(args) => {
            let (pipeline, graph) = load(&args)?;
            let order: Vec<&str> = graph
                .order()
                .map(|i| pipeline.stages[i].id.as_str())
                .collect();
            if json {
                println!(
                    "{}",
                    json!({ "ok": true, "pipeline": pipeline.name, "stages": order })
                );
            } else {
                println!(
                    "ok: pipeline `{}`, {} stages ({})",
                    pipeline.name,
                    order.len(),
                    order.join(" → ")
                );
            }
            Ok(exit::OK)
        }
        Command::Dag { args, format } => {
            let (pipeline, graph) = load(&args)?;
            if json {
                let stages: Vec<_> = graph
                    .order()
                    .map(|i| &pipeline.stages[i])
                    .map(|s| json!({ "id": s.id, "kind": s.kind.name(), "inputs": s.inputs }))
                    .collect();
                println!("{}", json!({ "pipeline": pipeline.name, "stages": stages }));
            } else {
                let text = match format {
                    DagFormat::Text => graph.to_text(&pipeline),
                    DagFormat::Dot => graph.to_dot(&pipeline),
                    DagFormat::Mermaid => graph.to_mermaid(&pipeline),
                };
                print!("{text}");
            }
            Ok(exit::OK)
        }
        Command::Run {
            args,
            until,
            only,
            force,
            force_all,
            jobs,
            dry_run,
            verify_inputs,
            verify,
            sweep,
        } => {
            let opts = RunOptions {
                until,
                only,
                force,
                force_all,
                jobs: jobs.unwrap_or_else(default_jobs),
                dry_run,
                verify_inputs,
                verify,
            };
            if !sweep.is_empty() {
                return run_sweep(&args, &sweep, cache_flag, registry, &opts, json);
            }
            let (pipeline, graph) = load(&args)?;
            let selected = select(&pipeline, &graph, &opts)?;
            let store = open_store(cache_flag, Some(&pipeline))?;
            run(&pipeline, &graph, &store, registry, &selected, &opts, json).map(|(code, _)| code)
        }
        Command::Status(args) => {
            let (pipeline, graph) = load(&args)?;
            let store = open_store(cache_flag, Some(&pipeline))?;
            let runner = planner(&pipeline, &graph, &store, registry);
            let all: BTreeSet<usize> = (0..pipeline.stages.len()).collect();
            let plan = runner.plan(&all, &RunOptions::default());
            let mut rows = Vec::new();
            for entry in &plan {
                let id = &pipeline.stages[entry.index].id;
                let (state, key, reasons) = describe(&entry.state);
                if !json {
                    let key = key.as_deref().map(|k| &k[..12]).unwrap_or("-");
                    println!("{state:>11}  {id:<14} {key}");
                    for r in &reasons {
                        println!("{:>13}{r}", "");
                    }
                }
                rows.push(json!({ "id": id, "state": state, "key": key, "reasons": reasons }));
            }
            if json {
                println!("{}", json!({ "pipeline": pipeline.name, "stages": rows }));
            }
            Ok(exit::OK)
        }
        Command::Why { args, stage } => {
            let (pipeline, graph) = load(&args)?;
            let index = crate::graph::index_of(&pipeline, &stage)?;
            let store = open_store(cache_flag, Some(&pipeline))?;
            let runner = planner(&pipeline, &graph, &store, registry);
            let selected: BTreeSet<usize> = [index].into();
            let plan = runner.plan(&selected, &RunOptions::default());
            let entry = plan
                .into_iter()
                .find(|e| e.index == index)
                .expect("selected stage is planned");
            let (state, key, reasons) = describe(&entry.state);
            if json {
                println!(
                    "{}",
                    json!({ "stage": stage, "state": state, "key": key, "reasons": reasons })
                );
            } else {
                let headline = match &entry.state {
                    PlanState::Fresh { .. } => {
                        format!(
                            "`{stage}` is fresh: nothing it depends on changed since it last ran"
                        )
                    }
                    PlanState::Stale {
                        first_run: true, ..
                    } => {
                        format!(
                            "`{stage}` is stale: it has not run in this pipeline (on this cache) yet"
                        )
                    }
                    PlanState::Stale { .. } => format!("`{stage}` is stale because:"),
                    PlanState::Pending { upstream } => format!(
                        "`{stage}` will run after its stale input(s) {}; whether it then changes depends on their new outputs",
                        upstream.join(", ")
                    ),
                    PlanState::Unavailable { reason } => {
                        format!("`{stage}` cannot be planned: {reason}")
                    }
                };
                println!("{headline}");
                if let PlanState::Stale { .. } = entry.state {
                    for r in &reasons {
                        println!("  - {r}");
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Synth {
            out,
            count,
            test_count,
            seed,
        } => {
            let bars = Bars::new(bars_enabled(json));
            let progress = bars.stage("synth");
            progress.start((count + test_count) as u64, "rendering");
            let start = Instant::now();
            let opts = crate::synth::SynthOptions {
                out: out.clone(),
                count,
                test_count,
                seed,
            };
            crate::synth::generate(&opts, &|| progress.inc(1))
                .map_err(|e| Failure::Runtime(crate::runner::chain(&e)))?;
            drop(progress);
            let seconds = start.elapsed().as_secs_f64();
            if json {
                println!(
                    "{}",
                    json!({ "out": out, "count": count, "test_count": test_count, "seed": seed, "seconds": seconds })
                );
            } else {
                eprintln!(
                    "wrote {count} labelled + {test_count} test galaxies to {} in {seconds:.1}s",
                    out.display()
                );
            }
            Ok(exit::OK)
        }
        Command::Bench {
            sample,
            work,
            count,
            train_batches,
            only,
        } => {
            let opts = crate::bench::BenchOptions {
                sample,
                work,
                count,
                train_batches,
                only,
            };
            let v = crate::bench::run(&opts).map_err(Failure::Runtime)?;
            if json {
                println!("{v}");
            } else {
                crate::bench::print_table(&v);
            }
            Ok(exit::OK)
        }
        Command::Runs { pipeline, limit } => {
            let store = match &pipeline {
                Some(p) => open_store(cache_flag, Some(&config::load(p, &[])?))?,
                None => open_store(cache_flag, None)?,
            };
            crate::compare::runs(&store, pipeline.as_deref(), limit, json)
                .map_err(Failure::Runtime)?;
            Ok(exit::OK)
        }
        Command::Compare {
            runs,
            pipelines,
            csv,
        } => {
            let format = compare_format(json, csv);
            let columns = if pipelines.is_empty() {
                crate::compare::run_columns(&open_store(cache_flag, None)?, &runs)
                    .map_err(Failure::Usage)?
            } else {
                pipeline_columns(&pipelines, cache_flag, registry)?
            };
            crate::compare::print(&columns, format).map_err(Failure::Runtime)?;
            Ok(exit::OK)
        }
        Command::Report { run, out } => {
            let store = open_store(cache_flag, None)?;
            let (all, unreadable) = records::list(&store.runs_dir());
            let record = match &run {
                Some(id) => crate::compare::resolve(&all, &unreadable, std::slice::from_ref(id))
                    .map_err(Failure::Usage)?[0],
                None => all
                    .first()
                    .ok_or_else(|| Failure::Usage("no runs yet on this cache".into()))?,
            };
            let html = crate::report::render(&store, record);
            crate::cache::write_atomic(&out, html.as_bytes()).map_err(|e| {
                Failure::Runtime(format!("writing the report {}: {e}", out.display()))
            })?;
            if json {
                println!(
                    "{}",
                    json!({ "run_id": record.id, "out": out, "bytes": html.len() })
                );
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
        Command::Gc { keep_runs, dry_run } => {
            crate::gc::gc(&open_store(cache_flag, None)?, keep_runs, dry_run, json)
                .map_err(Failure::Runtime)
        }
    }
}

fn describe(state: &PlanState) -> (&'static str, Option<String>, Vec<String>) {
    match state {
        PlanState::Fresh { key } => ("fresh", Some(key.clone()), Vec::new()),
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

fn run(
    pipeline: &Pipeline,
    graph: &Graph,
    store: &Store,
    registry: &dyn Registry,
    selected: &BTreeSet<usize>,
    opts: &RunOptions,
    json: bool,
) -> Result<(i32, String), Failure> {
    let start = Instant::now();
    let (run_id, started) = records::new_run_id();
    let bars = Bars::new(bars_enabled(json));
    let runner = Runner {
        pipeline,
        graph,
        store,
        registry,
        bars,
    };
    let stages = runner.run(selected, opts);
    let failed = stages
        .iter()
        .any(|s| matches!(s.outcome, Outcome::Failed | Outcome::Skipped));
    let seconds = start.elapsed().as_secs_f64();
    let mut record_path = None;
    if !opts.dry_run {
        let dir = std::path::absolute(&pipeline.path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let record = RunRecord {
            id: run_id.clone(),
            started,
            pipeline: pipeline.path.display().to_string(),
            pipeline_name: pipeline.name.clone(),
            overrides: pipeline.overrides.clone(),
            git: records::git_info(&dir),
            seconds,
            stages: stages.clone(),
        };
        match record.write(&store.runs_dir()) {
            Ok(p) => record_path = Some(p),
            Err(e) => eprintln!("warning: could not write the run record: {e}"),
        }
    }
    if json {
        println!(
            "{}",
            json!({ "run_id": run_id, "pipeline": pipeline.name, "dry_run": opts.dry_run, "record": record_path, "seconds": seconds, "stages": stages })
        );
    } else {
        let count = |o: Outcome| stages.iter().filter(|s| s.outcome == o).count();
        let verdict = if failed { "FAILED" } else { "ok" };
        if opts.dry_run {
            eprintln!(
                "dry run: {} hit, {} miss",
                count(Outcome::Hit),
                count(Outcome::Miss)
            );
        } else {
            eprintln!(
                "{verdict}: {} ran, {} cached, {} failed, {} skipped in {seconds:.2}s",
                count(Outcome::Ran),
                count(Outcome::Cached),
                count(Outcome::Failed),
                count(Outcome::Skipped)
            );
        }
    }
    let code = if failed { exit::STAGE_FAILED } else { exit::OK };
    Ok((code, run_id))
}

/// The stages `run` selects (`--until`, `--only`), after checking every stage id the options
/// name (`--force`, `--only`).
fn select(
    pipeline: &Pipeline,
    graph: &Graph,
    opts: &RunOptions,
) -> Result<BTreeSet<usize>, Failure> {
    for id in opts.force.iter().chain(&opts.only) {
        crate::graph::index_of(pipeline, id)?;
    }
    Ok(graph.select(pipeline, opts.until.as_deref(), &opts.only)?)
}

/// A runner that only plans (`status`, `why`, `compare --pipelines`): no progress bars.
fn planner<'a>(
    pipeline: &'a Pipeline,
    graph: &'a Graph,
    store: &'a Store,
    registry: &'a dyn Registry,
) -> Runner<'a> {
    Runner {
        pipeline,
        graph,
        store,
        registry,
        bars: Bars::new(false),
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn compare_format(json: bool, csv: bool) -> crate::compare::Format {
    if json {
        crate::compare::Format::Json
    } else if csv {
        crate::compare::Format::Csv
    } else {
        crate::compare::Format::Text
    }
}

/// Splits `V1,V2,...` at the commas outside brackets, braces and quotes, so a value may be a
/// TOML array or inline table.
fn split_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut current = String::new();
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                values.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    values.push(current.trim().to_string());
    values
}

/// The `--set` lists of a sweep's grid, in the order the sweeps were given (last varies fastest).
fn sweep_grid(sweeps: &[String]) -> Result<Vec<Vec<String>>, Failure> {
    let mut grid: Vec<Vec<String>> = vec![Vec::new()];
    for sweep in sweeps {
        let (key, values) = sweep.split_once('=').ok_or_else(|| {
            Failure::Usage(format!(
                "--sweep `{sweep}`: expected STAGE.KEY=V1,V2,... (e.g. train.epochs=5,10)"
            ))
        })?;
        let values = split_values(values);
        if values.iter().any(String::is_empty) {
            return Err(Failure::Usage(format!(
                "--sweep `{sweep}`: empty value in the list"
            )));
        }
        grid = grid
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.push(format!("{}={v}", key.trim()));
                    next
                })
            })
            .collect();
    }
    Ok(grid)
}

/// `run --sweep`: every grid point as its own run (one at a time, sharing the cache), then
/// the compare table of those runs. Every point is validated before anything runs.
fn run_sweep(
    args: &PipelineArgs,
    sweeps: &[String],
    cache_flag: Option<&Path>,
    registry: &dyn Registry,
    opts: &RunOptions,
    json: bool,
) -> Result<i32, Failure> {
    let grid = sweep_grid(sweeps)?;
    let mut points = Vec::new();
    for sets in &grid {
        let point_args = PipelineArgs {
            pipeline: args.pipeline.clone(),
            set: args.set.iter().chain(sets).cloned().collect(),
        };
        let (pipeline, graph) = load(&point_args)?;
        let selected = select(&pipeline, &graph, opts)?;
        points.push((sets, pipeline, graph, selected));
    }
    let store = open_store(cache_flag, Some(&points[0].1))?;
    let mut run_ids = Vec::new();
    let mut worst = exit::OK;
    for (i, (sets, pipeline, graph, selected)) in points.iter().enumerate() {
        eprintln!(
            "sweep {}/{}: --set {}",
            i + 1,
            points.len(),
            sets.join(" --set ")
        );
        let (code, id) = run(pipeline, graph, &store, registry, selected, opts, false)?;
        worst = worst.max(code);
        run_ids.push(id);
    }
    if !opts.dry_run {
        if !json {
            println!();
        }
        let columns = crate::compare::run_columns(&store, &run_ids).map_err(Failure::Runtime)?;
        crate::compare::print(&columns, compare_format(json, false)).map_err(Failure::Runtime)?;
    }
    Ok(worst)
}

/// `compare --pipelines`: each pipeline as it is now, from the stages that are cached.
fn pipeline_columns(
    paths: &[PathBuf],
    cache_flag: Option<&Path>,
    registry: &dyn Registry,
) -> Result<Vec<crate::compare::Column>, Failure> {
    let mut loaded = Vec::new();
    for path in paths {
        let args = PipelineArgs {
            pipeline: path.clone(),
            set: Vec::new(),
        };
        loaded.push(load(&args)?);
    }
    let store = open_store(cache_flag, Some(&loaded[0].0))?;
    let mut columns = Vec::new();
    for (path, (pipeline, graph)) in paths.iter().zip(&loaded) {
        let runner = planner(pipeline, graph, &store, registry);
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
        columns.push(crate::compare::state_column(
            &store,
            path.display().to_string(),
            &cached,
        ));
    }
    Ok(columns)
}
