//! What a stage kind declares about itself, in terms the lower layers understand: its name, code
//! version, whether the pipeline seed enters its key, which parameters are paths, which upstream
//! kinds it accepts, and its typed parameters. `config` parses and validates through
//! [`KindCatalog`]; `graph` checks inputs against the declaration; `runner` fingerprints with it.
//! The stage modules (`stages/<kind>.rs`) each declare one kind; `stages::Registry` lists them.
//!
//! This module imports nothing of the crate: it is the vocabulary the layers above share.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The static facts of one stage kind. A kind module writes one of these as a `const`.
#[derive(Debug)]
pub struct KindDecl {
    /// The `kind = "..."` name in pipeline files.
    pub name: &'static str,
    /// Bump when a change to the implementation changes its outputs: every cached artifact of
    /// this kind is then recomputed.
    pub code_version: u32,
    /// Whether the pipeline seed enters this kind's key (and so reaches the stage).
    pub seed: SeedUse,
    /// Parameters that are paths, resolved against the file that set them (the first one set
    /// decides the stage's base directory).
    pub path_params: &'static [&'static str],
    /// Upstream kinds (by name) this kind accepts as inputs.
    pub accepts: &'static [&'static str],
    /// Of those, the kinds it requires.
    pub requires: &'static [&'static str],
}

/// Whether a kind's outputs depend on the pipeline seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedUse {
    /// The seed enters the key and is handed to the stage.
    InKey,
    /// The stage never sees the seed, so it cannot depend on it.
    Unused,
}

/// A stage kind's identity: its declaration, compared by name.
#[derive(Clone, Copy)]
pub struct StageKind(&'static KindDecl);

impl StageKind {
    pub const fn new(decl: &'static KindDecl) -> Self {
        StageKind(decl)
    }
    pub fn name(self) -> &'static str {
        self.0.name
    }
    pub fn decl(self) -> &'static KindDecl {
        self.0
    }
    pub fn uses_seed(self) -> bool {
        self.0.seed == SeedUse::InKey
    }
    pub fn accepts(self, upstream: StageKind) -> bool {
        self.0.accepts.contains(&upstream.name())
    }
}

impl PartialEq for StageKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for StageKind {}
impl PartialOrd for StageKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for StageKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}
impl std::hash::Hash for StageKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}
impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl fmt::Debug for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageKind({})", self.name())
    }
}
impl Serialize for StageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A value-range problem: the offending key and what is wrong with it.
#[derive(Debug)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

impl Invalid {
    /// `Some(Invalid)` unless `ok`.
    pub fn unless(ok: bool, key: &'static str, message: impl Into<String>) -> Option<Invalid> {
        (!ok).then(|| Invalid {
            key,
            message: message.into(),
        })
    }
}

/// A kind's parameter table: parsed with serde (unknown keys denied), documented by its schema,
/// range-checked by `validate`.
pub trait Params:
    Serialize + DeserializeOwned + JsonSchema + fmt::Debug + Send + Sync + 'static
{
    /// Range checks serde cannot express.
    fn validate(&self) -> Vec<Invalid> {
        Vec::new()
    }
}

/// One stage's parameters: the typed value (for the stage) and its canonical JSON (every
/// default filled in; what enters the fingerprint).
#[derive(Clone)]
pub struct StageParams {
    typed: Arc<dyn Any + Send + Sync>,
    canonical: serde_json::Value,
}

impl StageParams {
    pub fn new<P: Params>(params: P) -> Self {
        let canonical = serde_json::to_value(&params).expect("parameters always serialise");
        StageParams {
            typed: Arc::new(params),
            canonical,
        }
    }
    /// The typed parameters, when they are of type `P`.
    pub fn get<P: Params>(&self) -> Option<&P> {
        self.typed.downcast_ref::<P>()
    }
    /// The parameters as canonical JSON (sorted keys, defaults filled in).
    pub fn canonical(&self) -> serde_json::Value {
        self.canonical.clone()
    }
}

impl fmt::Debug for StageParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.canonical)
    }
}

/// A parse error with the path of the offending key.
pub type ParseError = serde_path_to_error::Error<toml::de::Error>;

/// The object-safe face of a kind that `config` and `schema` use.
pub trait KindParams: Send + Sync {
    fn kind(&self) -> StageKind;
    /// Parse the kind-specific keys of a stage table (everything but `kind` and `inputs`).
    fn parse(&self, value: toml::Value) -> Result<StageParams, ParseError>;
    /// Range problems of parameters this kind parsed.
    fn validate(&self, params: &StageParams) -> Vec<Invalid>;
    /// The JSON Schema of the parameter table (a `$ref` into the generator's definitions).
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

/// Parse a parameter table into `P`.
pub fn parse_params<P: Params>(value: toml::Value) -> Result<StageParams, ParseError> {
    let typed: P = serde_path_to_error::deserialize(value)?;
    Ok(StageParams::new(typed))
}

/// `validate` of the typed parameters inside `params` (none when they are another type).
pub fn validate_params<P: Params>(params: &StageParams) -> Vec<Invalid> {
    params.get::<P>().map(P::validate).unwrap_or_default()
}

/// Every kind a build (or a test) knows, in declaration order.
pub trait KindCatalog: Sync {
    fn kinds(&self) -> Vec<&dyn KindParams>;

    fn find(&self, name: &str) -> Option<&dyn KindParams> {
        self.kinds().into_iter().find(|k| k.kind().name() == name)
    }

    /// The kind names, in declaration order.
    fn names(&self) -> Vec<String> {
        self.kinds()
            .iter()
            .map(|k| k.kind().name().to_string())
            .collect()
    }
}

/// The keys a parameter schema lists, sorted (for unknown-key errors).
pub fn schema_keys(schema: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The whole JSON Schema of one kind's parameter table.
pub fn full_schema(kind: &dyn KindParams) -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let reference = kind.schema(&mut generator).to_value();
    let defs = generator.definitions();
    match reference
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.rsplit('/').next())
    {
        Some(name) => defs.get(name).cloned().unwrap_or(reference),
        None => reference,
    }
}
