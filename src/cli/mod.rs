//! The command line: parses arguments and hands each subcommand to its module (one function
//! per subcommand); errors carry their exit code ([`CliError::code`]).
//!
//! - `inspect`: schema, validate, dag
//! - `plan`: status, why
//! - `run`, `sweep`: run (and run --sweep)
//! - `history`: runs, compare, report, gc
//! - `tools`: synth, bench

mod error;
mod history;
mod inspect;
mod job;
mod output;
mod pipeline;
mod plan;
mod remote;
mod run;
mod sweep;
mod tools;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::stages::Registry;

pub use error::{CliError, exit};
pub use pipeline::project_root;

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
    /// Shared remote cache: `s3://bucket/prefix` or `file:///dir` (default: the pipeline's
    /// `remote`; credentials from the standard `AWS_*` variables).
    #[arg(long, global = true, env = "GALAXY_PIPE_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// More detail (-v: fingerprints and debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Override a parameter: `STAGE.KEY=VALUE` or `pipeline.KEY=VALUE` (repeatable).
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    pub set: Vec<String>,
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
    Run(RunArgs),
    /// Upload the artifacts of a pipeline's current state (or, with --all, of the whole local
    /// cache) to the remote cache.
    Push {
        /// The pipeline file (omit with --all).
        #[arg(required_unless_present = "all")]
        pipeline: Option<PathBuf>,
        /// Every artifact in the local cache.
        #[arg(long, conflicts_with = "pipeline")]
        all: bool,
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Download from the remote cache every stage of a pipeline that is not cached locally;
    /// compute nothing.
    Pull(PipelineArgs),
    /// Per stage: fresh or stale, and why. Nothing runs.
    Status(PipelineArgs),
    /// Explain exactly what changed for one stage since it last ran.
    Why {
        #[command(flatten)]
        args: PipelineArgs,
        /// The stage id.
        stage: String,
    },
    /// Delete artifacts that neither the last N runs nor any pipeline's current state use (with
    /// `--remote URL`: on the remote cache instead of the local one).
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
    Bench(BenchArgs),
    /// Write a synthetic data set in the Kaggle layout (JPEGs + label CSV + test folder).
    Synth(SynthArgs),
    /// The training devices this build can use on this machine, and what `device = "auto"` picks.
    Devices,
    /// Compute and publish one stage from a job description (what a Slurm job runs on its node).
    #[command(hide = true)]
    ComputeJob {
        /// The job's `job.json` in the cache's `logs/<key>/`.
        job_file: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Run this stage and everything it depends on, nothing after it.
    #[arg(long, value_name = "STAGE", conflicts_with = "only")]
    pub until: Option<String>,
    /// Run only these stages; their inputs must already be cached (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Re-run this stage even if it is cached (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Re-run every selected stage.
    #[arg(long)]
    pub force_all: bool,
    /// Stages run at once (default: number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Plan only: print hit/miss per stage, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-hash every input file instead of trusting the stat cache.
    #[arg(long)]
    pub verify_inputs: bool,
    /// Re-hash every reused artifact instead of trusting unchanged file stats.
    #[arg(long)]
    pub verify: bool,
    /// Upload what this run computes to the remote cache (`--remote`).
    #[arg(long)]
    pub push: bool,
    /// Run a grid: every combination of the values of each `--sweep` (repeatable), sharing
    /// cached upstream stages, then print the compare table of those runs.
    #[arg(long, value_name = "STAGE.KEY=V1,V2,...")]
    pub sweep: Vec<String>,
    /// Where stages that must be computed run: here, or one Slurm job each (default: the
    /// pipeline's `executor`, else local).
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<crate::config::ExecutorKind>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The real Kaggle sample.
    #[arg(
        long,
        default_value = "../shared/data/galaxy-zoo-sample",
        value_name = "DIR"
    )]
    pub sample: PathBuf,
    /// Scratch folder for the large data set and caches (reused between runs).
    #[arg(long, default_value = "target/bench", value_name = "DIR")]
    pub work: PathBuf,
    /// Images in the large data set.
    #[arg(long, default_value_t = 61_578)]
    pub count: usize,
    /// Training batches to time.
    #[arg(long, default_value_t = 40)]
    pub train_batches: usize,
    /// Measure only these groups of figures (repeatable; default: all).
    #[arg(long, value_enum, value_name = "PART")]
    pub only: Vec<crate::bench::Part>,
    /// Also time training on this accelerator (`cuda` or `wgpu`), against the CPU kernels and
    /// the device's matrix-product peak; says so when this build or machine has none.
    #[arg(long, value_enum, value_name = "DEVICE")]
    pub device: Option<crate::bench::AcceleratorArg>,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Labelled training galaxies.
    #[arg(long, default_value_t = 2000)]
    pub count: usize,
    /// Unlabelled test galaxies.
    #[arg(long, default_value_t = 200)]
    pub test_count: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What every subcommand gets: the global flags and the stage kinds of this build.
pub struct Context<'a> {
    pub json: bool,
    pub cache_dir: Option<&'a Path>,
    /// `--remote` / `GALAXY_PIPE_REMOTE`.
    pub remote: Option<&'a str>,
    /// Whether `--remote` was written on the command line (`gc --remote URL` collects the
    /// remote; the environment variable alone never makes `gc` touch it).
    pub remote_on_command_line: bool,
    pub registry: &'a Registry,
}

/// Run the CLI with `args` (including the program name) and the given stage kinds.
pub fn main_with(args: Vec<OsString>, registry: &Registry) -> i32 {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
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
    let remote_on_command_line = matches
        .subcommand()
        .and_then(|(_, sub)| sub.value_source("remote"))
        .or_else(|| matches.value_source("remote"))
        == Some(ValueSource::CommandLine);
    init_tracing(cli.verbose);
    let ctx = Context {
        json: cli.json,
        cache_dir: cli.cache_dir.as_deref(),
        remote: cli.remote.as_deref(),
        remote_on_command_line,
        registry,
    };
    match dispatch(&ctx, cli.command) {
        Ok(code) => code,
        Err(CliError::BrokenPipe) => exit::OK,
        Err(e) => {
            let text = e.render();
            eprintln!("{}", text.trim_end());
            if ctx.json {
                let value = json!({ "error": text.trim_end(), "exit_code": e.code() });
                let _ = output::println(value);
            }
            e.code()
        }
    }
}

fn dispatch(ctx: &Context, command: Command) -> Result<i32, CliError> {
    match command {
        Command::Schema { artifacts } => inspect::schema(ctx, artifacts),
        Command::Validate(args) => inspect::validate(ctx, &args),
        Command::Dag { args, format } => inspect::dag(ctx, &args, format),
        Command::Run(args) if !args.sweep.is_empty() => sweep::run_sweep(ctx, &args),
        Command::Run(args) => run::run(ctx, &args),
        Command::Status(args) => plan::status(ctx, &args),
        Command::Why { args, stage } => plan::why(ctx, &args, &stage),
        Command::Gc { keep_runs, dry_run } => history::gc(ctx, keep_runs, dry_run),
        Command::Push {
            pipeline,
            all: _,
            set,
        } => remote::push(ctx, pipeline.map(|p| PipelineArgs { pipeline: p, set })),
        Command::Pull(args) => remote::pull(ctx, &args),
        Command::Runs { pipeline, limit } => history::runs(ctx, pipeline.as_deref(), limit),
        Command::Compare {
            runs,
            pipelines,
            csv,
        } => history::compare(ctx, &runs, &pipelines, csv),
        Command::Report { run, out } => history::report(ctx, run.as_deref(), &out),
        Command::Synth(args) => tools::synth(ctx, args),
        Command::Bench(args) => tools::bench(ctx, args),
        Command::Devices => tools::devices(ctx),
        Command::ComputeJob { job_file } => job::compute_job(ctx, &job_file),
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

fn compare_format(json: bool, csv: bool) -> crate::compare::Format {
    if json {
        crate::compare::Format::Json
    } else if csv {
        crate::compare::Format::Csv
    } else {
        crate::compare::Format::Text
    }
}
