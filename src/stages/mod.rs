//! Stage kinds. Each implements [`Stage`]: it reads its input artifacts' folders and writes
//! its outputs into the folder it is given. Stages never see the cache.

pub mod baseline;
pub mod command;
pub mod crop;
pub mod ensemble;
pub mod evaluate;
pub mod explore;
pub mod ingest;
pub mod submit;
pub mod train;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cache::Manifest;

use crate::config::StageSpec;
use crate::kind::{
    Invalid, KindCatalog, KindParams, Need, Params, ParseError, Place, StageKind, StageParams,
};
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
    /// The pipeline seed, for kinds whose key records it (`SeedUse::InKey`); None otherwise.
    pub seed: Option<u64>,
    /// Upstream stage id → its artifact.
    pub inputs: BTreeMap<String, Input>,
    /// Manifests (relative path, size, digest) of the stage's file inputs, by group.
    pub files: BTreeMap<String, Arc<Manifest>>,
    /// The (empty) folder to write outputs into.
    pub out_dir: PathBuf,
    /// A folder that survives a killed run of the same key (for checkpoints).
    pub work_dir: PathBuf,
    /// A folder for logs kept beside the artifact, never part of it (may not exist yet).
    pub log_dir: PathBuf,
    pub progress: &'a Progress,
}

impl StageContext<'_> {
    /// The single input of kind `K` (the graph validated its presence when `K` is required).
    pub fn input_of<K: StageKindDef>(&self) -> Result<&Input, StageError> {
        self.input_among(&[K::KIND.name()])
    }

    /// The input that fills `need` (one of several kinds: `evaluate`'s `train` or `ensemble`).
    pub fn input_for(&self, need: &Need) -> Result<&Input, StageError> {
        self.input_among(need.kinds)
    }

    fn input_among(&self, kinds: &[&str]) -> Result<&Input, StageError> {
        self.inputs
            .values()
            .find(|i| kinds.contains(&i.kind.name()))
            .ok_or_else(|| {
                StageError::msg(format!(
                    "stage `{}` has no {} input",
                    self.spec.id,
                    crate::kind::describe_kinds(kinds)
                ))
            })
    }

    /// The input of kind `K`, if the pipeline gave one.
    pub fn optional_input<K: StageKindDef>(&self) -> Option<&Input> {
        self.inputs.values().find(|i| i.kind == K::KIND)
    }

    /// The pipeline seed; an error for a kind that does not declare `SeedUse::InKey`.
    pub fn seed(&self) -> Result<u64, StageError> {
        self.seed.ok_or_else(|| {
            StageError::msg(format!(
                "stage `{}` ({}) reads the seed but its kind does not put it in its key",
                self.spec.id, self.spec.kind
            ))
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
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error(transparent)]
    Artifact(#[from] crate::artifacts::ArtifactError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl StageError {
    pub fn msg(m: impl Into<String>) -> Self {
        StageError::Message(m.into())
    }
    /// For `map_err`: the figure `what` could not be drawn.
    pub fn drawing<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Self {
        move |e| StageError::Message(format!("drawing {what}: {e}"))
    }
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io(crate::io_error::IoError::new(what.into(), path, source))
    }
}

/// One stage kind, declared in one module: its static facts ([`KindDecl`]), its parameter type,
/// the files outside the cache it reads, what it exports, and how it runs. Register it with one
/// line in [`Registry::standard`] (or a test's registry).
pub trait StageKindDef: Send + Sync + 'static {
    /// The kind's declaration: `const KIND: StageKind = StageKind::new(&KindDecl { .. })`.
    const KIND: StageKind;
    type Params: Params;

    /// Files outside the cache this stage reads (hashed into its fingerprint).
    fn file_inputs(&self, _params: &Self::Params, _spec: &StageSpec) -> Vec<FileInput> {
        Vec::new()
    }

    /// Output files the runner copies (atomically) to paths outside the cache after the stage
    /// runs or is reused: (file in the output folder, destination).
    fn exports(&self, _params: &Self::Params, _spec: &StageSpec) -> Vec<(String, PathBuf)> {
        Vec::new()
    }

    /// What is wrong with the stage's setup before anything runs (a missing input folder), and
    /// what to do about it. `validate` prints it as a warning; `run` fails the stage with it.
    fn check_setup(&self, _params: &Self::Params, _spec: &StageSpec) -> Option<String> {
        None
    }

    fn run(&self, params: &Self::Params, ctx: &StageContext) -> Result<StageOutcome, StageError>;
}

/// The object-safe face of a registered kind, as the runner drives it.
pub trait Stage: KindParams {
    fn file_inputs(&self, spec: &StageSpec) -> Vec<FileInput>;
    fn exports(&self, spec: &StageSpec) -> Vec<(String, PathBuf)>;
    fn check_setup(&self, spec: &StageSpec) -> Option<String>;
    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError>;
}

/// Adapts a [`StageKindDef`] to [`Stage`]: parses its parameters and hands them over typed.
pub struct Registered<K>(pub K);

impl<K: StageKindDef> Registered<K> {
    fn params<'s>(&self, spec: &'s StageSpec) -> Result<&'s K::Params, StageError> {
        spec.params.get::<K::Params>().ok_or_else(|| {
            StageError::msg(format!(
                "stage `{}`: parameters are not those of a `{}` stage",
                spec.id,
                K::KIND
            ))
        })
    }
}

impl<K: StageKindDef> KindParams for Registered<K> {
    fn kind(&self) -> StageKind {
        K::KIND
    }
    fn parse(&self, value: toml::Value) -> Result<StageParams, ParseError> {
        crate::kind::parse_params::<K::Params>(value)
    }
    fn parse_json(&self, value: serde_json::Value) -> Result<StageParams, serde_json::Error> {
        crate::kind::parse_json_params::<K::Params>(value)
    }
    fn validate(&self, params: &StageParams, place: &Place) -> Vec<Invalid> {
        crate::kind::validate_params_at::<K::Params>(params, place)
    }
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<K::Params>()
    }
}

impl<K: StageKindDef> Stage for Registered<K> {
    fn file_inputs(&self, spec: &StageSpec) -> Vec<FileInput> {
        match self.params(spec) {
            Ok(p) => self.0.file_inputs(p, spec),
            Err(_) => Vec::new(),
        }
    }
    fn exports(&self, spec: &StageSpec) -> Vec<(String, PathBuf)> {
        match self.params(spec) {
            Ok(p) => self.0.exports(p, spec),
            Err(_) => Vec::new(),
        }
    }
    fn check_setup(&self, spec: &StageSpec) -> Option<String> {
        self.0.check_setup(self.params(spec).ok()?, spec)
    }
    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        self.0.run(self.params(ctx.spec)?, ctx)
    }
}

/// The stage kinds a build knows, in declaration order.
#[derive(Default)]
pub struct Registry {
    kinds: Vec<Box<dyn Stage>>,
}

impl Registry {
    /// The kinds of the Galaxy Zoo workflow: one line per kind.
    pub fn standard() -> Self {
        Registry::default()
            .with(ingest::Ingest)
            .with(explore::Explore)
            .with(crop::Crop)
            .with(baseline::Baseline)
            .with(train::Train)
            .with(ensemble::Ensemble)
            .with(evaluate::Evaluate)
            .with(submit::Submit)
            .with(command::CommandStage)
    }

    /// Register a kind.
    pub fn with<K: StageKindDef>(self, kind: K) -> Self {
        self.with_stage(Box::new(Registered(kind)))
    }

    /// Register a kind given as a [`Stage`] (a test's stand-in implementation of a kind).
    pub fn with_stage(mut self, stage: Box<dyn Stage>) -> Self {
        let name = stage.kind().name();
        assert!(
            self.stage(stage.kind()).is_none(),
            "stage kind `{name}` registered twice"
        );
        self.kinds.push(stage);
        self
    }

    pub fn stage(&self, kind: StageKind) -> Option<&dyn Stage> {
        self.kinds
            .iter()
            .find(|s| s.kind() == kind)
            .map(|s| s.as_ref())
    }
}

impl KindCatalog for Registry {
    fn kinds(&self) -> Vec<&dyn KindParams> {
        self.kinds
            .iter()
            .map(|s| s.as_ref() as &dyn KindParams)
            .collect()
    }
}

/// What to do with a catalogued galaxy whose image is missing or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnProblem {
    #[default]
    Error,
    Skip,
}
