//! The CLI's errors, each knowing its exit class: the one place where failures become 0/1/2.

use std::path::PathBuf;

use crate::cache::CacheError;
use crate::cache::remote::RemoteError;
use crate::compare::RunLookupError;
use crate::config::ConfigError;
use crate::graph::GraphError;

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: i32 = 0;
    /// A stage failed (or was skipped because an input failed), or the cache could not be used.
    pub const STAGE_FAILED: i32 = 1;
    /// The pipeline or the command line is invalid; nothing ran.
    pub const USAGE: i32 = 2;
    /// Every stage succeeded, but with `--push` some computed artifact did not reach the remote
    /// (it refused the write, does not exist, or could not be reached): the team does not have it.
    pub const NOT_PUSHED: i32 = 3;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    // Exit 2: the pipeline or the command line is invalid; nothing ran.
    /// The pipeline file is invalid (rendered with its source spans).
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// `--until`/`--only` name a stage that does not exist, or select nothing.
    #[error(transparent)]
    Selection(GraphError),
    /// A run id on the command line that names no run (or several).
    #[error(transparent)]
    RunLookup(RunLookupError),
    /// A `--sweep` that is not `STAGE.KEY=V1,V2,...`.
    #[error("--sweep `{sweep}`: {problem}")]
    Sweep {
        sweep: String,
        problem: &'static str,
    },
    /// `report` without a run id on a cache that has no runs.
    #[error("no runs yet on this cache")]
    NoRuns,
    /// `push`/`pull` without a remote.
    #[error("no remote: give --remote URL (or `remote` in the pipeline file)")]
    NoRemote,
    /// A remote URL that cannot be opened (unknown scheme, bad bucket name, missing key file).
    #[error(transparent)]
    RemoteUrl(RemoteError),
    /// An executor that cannot be used here (`sbatch` or `squeue` not on PATH).
    #[error("{0}")]
    Executor(String),
    /// A compute-job file that cannot be read or does not fit this build.
    #[error("{0}")]
    JobFile(String),

    // Exit 1: something failed while the command worked.
    /// The cache folder cannot be opened or used.
    #[error("cannot use the cache: {0}")]
    Cache(#[source] CacheError),
    /// `push` could not write to the remote.
    #[error(transparent)]
    Push(RemoteError),
    /// Garbage collection failed (local cache or remote).
    #[error("gc: {0}")]
    Gc(String),
    /// The HTML report could not be written.
    #[error("writing the report {}: {source}", path.display())]
    Report {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `synth` could not write its galaxies.
    #[error("{0}")]
    Synth(String),
    /// A benchmark could not be prepared or measured.
    #[error("{0}")]
    Bench(String),
    /// A compute job could not prepare or compute its stage.
    #[error("{0}")]
    Job(String),
    /// Standard output could not be written (other than closed).
    #[error("writing to standard output: {0}")]
    Stdout(std::io::Error),
    /// Standard output was closed (`galaxy-pipe runs | head -1`): end quietly.
    #[error("standard output closed")]
    BrokenPipe,
}

impl CliError {
    /// The exit code this error maps to.
    pub fn code(&self) -> i32 {
        use CliError::*;
        match self {
            Config(_)
            | Selection(_)
            | RunLookup(_)
            | Sweep { .. }
            | NoRuns
            | NoRemote
            | RemoteUrl(_)
            | Executor(_)
            | JobFile(_) => exit::USAGE,
            Cache(_)
            | Push(_)
            | Gc(_)
            | Report { .. }
            | Synth(_)
            | Bench(_)
            | Job(_)
            | Stdout(_) => exit::STAGE_FAILED,
            BrokenPipe => exit::OK,
        }
    }

    /// The message for stderr: a rendered diagnostic for config errors, `error: …` otherwise.
    pub fn render(&self) -> String {
        match self {
            CliError::Config(e) => render_diagnostic(e),
            other => format!("error: {other}"),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Config(Box::new(e))
    }
}

impl From<GraphError> for CliError {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Invalid(c) => CliError::Config(Box::new(c)),
            other => CliError::Selection(other),
        }
    }
}

impl From<RunLookupError> for CliError {
    fn from(e: RunLookupError) -> Self {
        CliError::RunLookup(e)
    }
}

impl From<std::io::Error> for CliError {
    /// A failed write to standard output.
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Stdout(e)
        }
    }
}

fn render_diagnostic(e: &ConfigError) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    use std::io::IsTerminal;
    let theme = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    match handler.render_report(&mut out, e) {
        Ok(()) => out,
        Err(_) => e.to_string(),
    }
}
