//! The CLI's errors, each knowing its exit class: the one place where failures become 0/1/2.

use crate::cache::CacheError;
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
    /// The pipeline file is invalid (rendered with its source spans).
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The command line names something that does not exist or does not fit.
    #[error("{0}")]
    Usage(String),
    /// The cache folder cannot be opened or used.
    #[error("cannot use the cache: {0}")]
    Cache(#[source] CacheError),
    /// Something failed while the command worked.
    #[error("{0}")]
    Runtime(String),
    /// Standard output was closed (`galaxy-pipe runs | head -1`): end quietly.
    #[error("standard output closed")]
    BrokenPipe,
}

impl CliError {
    /// The exit code this error maps to.
    pub fn code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Cache(_) | CliError::Runtime(_) => exit::STAGE_FAILED,
            CliError::BrokenPipe => exit::OK,
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
            other => CliError::Usage(other.to_string()),
        }
    }
}

impl From<crate::compare::RunLookupError> for CliError {
    /// A run id on the command line that names no run (or several).
    fn from(e: crate::compare::RunLookupError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    /// A failed write to standard output.
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Runtime(format!("writing to standard output: {e}"))
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
