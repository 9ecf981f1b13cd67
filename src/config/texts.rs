//! The texts a pipeline was loaded from (files and `--set` arguments), for diagnostics.

use std::path::PathBuf;

/// One text that configuration came from: a pipeline file or one `--set` argument.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name shown in diagnostics (the path as the user gave it, or `--set`).
    pub name: String,
    /// Directory against which relative paths written in this source resolve.
    pub base_dir: PathBuf,
    pub text: String,
}

/// All sources of one loaded pipeline, indexed by `Origin::source`.
#[derive(Debug, Clone, Default)]
pub struct Sources(pub Vec<Source>);

impl Sources {
    pub fn get(&self, index: usize) -> &Source {
        &self.0[index]
    }
}
