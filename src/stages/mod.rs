//! Stage kinds. Each implements [`Stage`]: it reads its input artifacts' folders and writes
//! its outputs into the folder it is given. Stages never see the cache.

pub mod baseline;
pub mod crop;
pub mod evaluate;
pub mod explore;
pub mod ingest;
pub mod submit;
pub mod train;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::Manifest;

use crate::config::{StageKind, StageSpec};
use crate::progress::Progress;

/// An upstream artifact as a stage sees it: a read-only folder of files.
#[derive(Debug, Clone)]
pub struct Input {
    pub kind: StageKind,
    pub dir: PathBuf,
}

/// A folder or file outside the cache that a stage reads; it is hashed into the fingerprint.
#[derive(Debug, Clone)]
pub struct FileInput {
    /// Name of the group in fingerprints and `why` output (e.g. `images`).
    pub group: String,
    pub path: PathBuf,
}

/// Everything a stage run gets.
pub struct StageContext<'a> {
    pub spec: &'a StageSpec,
    pub seed: u64,
    /// Upstream stage id → its artifact.
    pub inputs: BTreeMap<String, Input>,
    /// Manifests (relative path, size, digest) of the stage's file inputs, by group.
    pub files: BTreeMap<String, Arc<Manifest>>,
    /// The (empty) folder to write outputs into.
    pub out_dir: PathBuf,
    /// A folder that survives a killed run of the same key (for checkpoints).
    pub work_dir: PathBuf,
    pub progress: &'a Progress,
}

impl StageContext<'_> {
    /// The single input of `kind` (the pipeline validated its presence).
    pub fn input_of(&self, kind: StageKind) -> Result<&Input, StageError> {
        self.inputs
            .values()
            .find(|i| i.kind == kind)
            .ok_or_else(|| {
                StageError::msg(format!("stage `{}` has no `{kind}` input", self.spec.id))
            })
    }
}

/// What a stage reports besides its files.
#[derive(Debug, Default, Clone)]
pub struct StageOutcome {
    pub metrics: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Message(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl StageError {
    pub fn msg(m: impl Into<String>) -> Self {
        StageError::Message(m.into())
    }
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

pub trait Stage: Send + Sync {
    /// Bump when a change to the implementation changes its outputs: every cached artifact of
    /// this kind is then recomputed.
    fn code_version(&self) -> u32;

    /// Files outside the cache this stage reads (hashed into its fingerprint).
    fn file_inputs(&self, _spec: &StageSpec) -> Vec<FileInput> {
        Vec::new()
    }

    /// Output files the runner copies (atomically) to paths outside the cache after the stage
    /// runs or is reused: (file in the output folder, destination).
    fn exports(&self, _spec: &StageSpec) -> Vec<(String, PathBuf)> {
        Vec::new()
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError>;
}

/// Maps stage kinds to implementations.
pub trait Registry: Sync {
    fn stage(&self, kind: StageKind) -> Option<&dyn Stage>;
}

/// The stage kinds this build implements.
pub struct StandardStages {
    ingest: ingest::Ingest,
    crop: crop::Crop,
    baseline: baseline::Baseline,
    explore: explore::Explore,
    train: train::Train,
    evaluate: evaluate::Evaluate,
    submit: submit::Submit,
}

impl Default for StandardStages {
    fn default() -> Self {
        StandardStages {
            ingest: ingest::Ingest,
            crop: crop::Crop,
            baseline: baseline::Baseline,
            explore: explore::Explore,
            train: train::Train,
            evaluate: evaluate::Evaluate,
            submit: submit::Submit,
        }
    }
}

impl Registry for StandardStages {
    fn stage(&self, kind: StageKind) -> Option<&dyn Stage> {
        match kind {
            StageKind::Ingest => Some(&self.ingest),
            StageKind::Crop => Some(&self.crop),
            StageKind::Baseline => Some(&self.baseline),
            StageKind::Explore => Some(&self.explore),
            StageKind::Train => Some(&self.train),
            StageKind::Evaluate => Some(&self.evaluate),
            StageKind::Submit => Some(&self.submit),
        }
    }
}
