//! `[pipeline]`: the settings of a whole pipeline, typed like a stage's parameters (serde with
//! `deny_unknown_fields`, the JSON Schema generated from this struct, each default written once).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::executor::ExecutorKind;
use crate::kind::{Invalid, Params};

/// The seed when the file names none.
pub const DEFAULT_SEED: u64 = 42;

fn default_seed() -> u64 {
    DEFAULT_SEED
}

/// `[pipeline]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// The pipeline's name, shown by `runs`, `compare` and the report.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Enters the keys of the stages that use it (ingest's split, a training's initialisation).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Cache folder, relative to this file (default: `cache/` in the project root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// Shared remote cache: `s3://bucket/prefix` or `file:///dir` (credentials from the
    /// environment, never from this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Upload what this pipeline computes to the remote (default: read-only).
    #[serde(default)]
    pub remote_push: bool,
    /// Where stages that must be computed run: this process, or one Slurm job each.
    #[serde(default)]
    pub executor: ExecutorKind,
}

impl Params for PipelineSettings {
    fn validate(&self) -> Vec<Invalid> {
        let named = !self.name.trim().is_empty();
        Invalid::unless(named, "name", "must not be blank")
            .into_iter()
            .collect()
    }
}
