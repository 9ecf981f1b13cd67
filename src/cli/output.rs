//! Writing to standard output: a closed pipe becomes [`CliError::BrokenPipe`] (exit 0, quietly)
//! instead of a panic.

use std::io::Write;

use super::CliError;

/// Write `text` to standard output as it is.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Write `text` and a newline to standard output.
pub fn println(text: impl std::fmt::Display) -> Result<(), CliError> {
    print(&format!("{text}\n"))
}

/// Text or JSON, as `--json` asks.
pub fn emit(json: bool, value: &serde_json::Value, text: &str) -> Result<(), CliError> {
    if json { println(value) } else { print(text) }
}
