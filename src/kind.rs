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
    /// What it needs among those: each rule names the kinds that fill it and how many.
    pub requires: &'static [Need],
    /// What its cluster job asks for unless the stage's `resources` say otherwise.
    pub job: JobShape,
}

/// One input a kind needs: any of `kinds`, between `min` and `max` of them (`evaluate` reads one
/// model, from a `train` or an `ensemble` stage; `ensemble` averages two or more `train`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub kinds: &'static [&'static str],
    pub min: usize,
    pub max: usize,
}

impl Need {
    /// Exactly one input of one of `kinds`.
    pub const fn one(kinds: &'static [&'static str]) -> Need {
        Need {
            kinds,
            min: 1,
            max: 1,
        }
    }
    /// `min` or more inputs of `kinds`.
    pub const fn at_least(min: usize, kinds: &'static [&'static str]) -> Need {
        Need {
            kinds,
            min,
            max: usize::MAX,
        }
    }
    /// Whether an input of kind `name` fills this need.
    pub fn takes(&self, name: &str) -> bool {
        self.kinds.contains(&name)
    }
    /// `` `train`, `ensemble` or `command` `` — the kinds, as messages name them.
    pub fn describe(&self) -> String {
        describe_kinds(self.kinds)
    }
}

/// `` `train`, `ensemble` or `command` ``: kind names as messages give them.
pub fn describe_kinds(kinds: &[&str]) -> String {
    let names: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// A kind's default cluster job: CPUs, memory, and whether a GPU helps (asked for only by a build
/// with the `cuda` feature: a CPU-only build has nothing to use it with). Sized so the demo runs
/// on a one-node cluster of 2 CPUs; a stage's `resources` ask for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobShape {
    pub cpus: u32,
    /// Memory in MiB (`--mem`): where memory is a consumable resource (most sites), a job that
    /// asks for none is given the whole node's, and jobs then run one at a time.
    pub mem_mb: u32,
    pub gpu: bool,
}

impl JobShape {
    /// Light, single-threaded work.
    pub const LIGHT: JobShape = JobShape {
        cpus: 1,
        mem_mb: 1024,
        gpu: false,
    };
    /// Data-parallel work over many files (decoding, hashing).
    pub const PARALLEL: JobShape = JobShape {
        cpus: 2,
        mem_mb: 2048,
        gpu: false,
    };
    /// A network trained or applied: a GPU where there is one.
    pub const MODEL: JobShape = JobShape {
        cpus: 2,
        mem_mb: 4096,
        gpu: true,
    };
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
#[derive(Debug, PartialEq)]
pub struct Invalid {
    /// The top-level parameter (where the diagnostic points).
    pub key: String,
    /// The full path of the offending value (`conv[1].kernel`).
    pub path: String,
    pub message: String,
}

impl Invalid {
    /// `Some(Invalid)` unless `ok`.
    pub fn unless(ok: bool, key: &str, message: impl Into<String>) -> Option<Invalid> {
        (!ok).then(|| Invalid {
            key: key.to_string(),
            path: key.to_string(),
            message: message.into(),
        })
    }
}

/// A kind's parameter table: parsed with serde (unknown keys denied), documented by its schema.
/// Numeric ranges and minimum lengths are declared once, as schemars attributes on the type
/// (`#[schemars(range(min = 8, max = 424))]`, `#[schemars(extend("exclusiveMaximum" = 1.0))]`,
/// `#[schemars(length(min = 1))]`): the JSON Schema shows them and [`check_bounds`] enforces them.
pub trait Params:
    Serialize + DeserializeOwned + JsonSchema + fmt::Debug + Send + Sync + 'static
{
    /// Checks the schema cannot express.
    fn validate(&self) -> Vec<Invalid> {
        Vec::new()
    }
    /// Checks that need the stage's place in its pipeline: its inputs, the folder its paths
    /// resolve against (`command`'s `{input}` placeholders and `deps` patterns).
    fn validate_at(&self, _place: &Place) -> Vec<Invalid> {
        Vec::new()
    }
}

/// Where a stage stands in its pipeline, for [`Params::validate_at`].
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The ids of its `inputs`.
    pub inputs: &'a [String],
    /// The folder its relative paths resolve against.
    pub base_dir: &'a std::path::Path,
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
    /// Parse parameters back from their canonical JSON (a job description on a cluster node).
    fn parse_json(&self, value: serde_json::Value) -> Result<StageParams, serde_json::Error>;
    /// Problems of parameters this kind parsed beyond the bounds its schema declares, for a
    /// stage at `place`.
    fn validate(&self, params: &StageParams, place: &Place) -> Vec<Invalid>;
    /// The JSON Schema of the parameter table (a `$ref` into the generator's definitions).
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

/// Parse a parameter table into `P`.
pub fn parse_params<P: Params>(value: toml::Value) -> Result<StageParams, ParseError> {
    let typed: P = serde_path_to_error::deserialize(value)?;
    Ok(StageParams::new(typed))
}

/// Parse canonical JSON parameters into `P`.
pub fn parse_json_params<P: Params>(
    value: serde_json::Value,
) -> Result<StageParams, serde_json::Error> {
    Ok(StageParams::new(serde_json::from_value::<P>(value)?))
}

/// `P::validate` of the typed parameters inside `params` (none when they are another type).
/// The bounds the schema declares are checked by [`check_bounds`].
pub fn validate_params<P: Params>(params: &StageParams) -> Vec<Invalid> {
    params.get::<P>().map(P::validate).unwrap_or_default()
}

/// [`validate_params`] and then `P::validate_at(place)`.
pub fn validate_params_at<P: Params>(params: &StageParams, place: &Place) -> Vec<Invalid> {
    let mut all = validate_params::<P>(params);
    all.extend(
        params
            .get::<P>()
            .map(|p| p.validate_at(place))
            .unwrap_or_default(),
    );
    all
}

/// Every value of `value` (parameters as canonical JSON) outside the bounds `root` (their JSON
/// Schema, with its `$defs`) declares: `minimum`/`maximum` and their exclusive forms,
/// `minLength`, `minItems`; arrays and nested tables are checked item by item.
pub fn check_bounds(root: &serde_json::Value, value: &serde_json::Value) -> Vec<Invalid> {
    let mut out = Vec::new();
    if let (Some(props), Some(values)) = (root["properties"].as_object(), value.as_object()) {
        for (key, schema) in props {
            if let Some(v) = values.get(key) {
                check_value(root, schema, v, key, key, &mut out);
            }
        }
    }
    out
}

fn check_value(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    v: &serde_json::Value,
    key: &str,
    path: &str,
    out: &mut Vec<Invalid>,
) {
    let schema = resolve_ref(root, schema);
    let mut problem = |message: String| {
        out.push(Invalid {
            key: key.to_string(),
            path: path.to_string(),
            message,
        })
    };
    let bounds = Bounds::of(schema);
    match v {
        serde_json::Value::Number(n) if !bounds.contains(n.as_f64().unwrap_or(f64::NAN)) => {
            problem(bounds.describe(schema["type"] == "integer"));
        }
        // A NaN or infinity serialises as null: never inside a declared range. (An unset
        // optional value is null too, where the schema allows it.)
        serde_json::Value::Null if bounds.any() && !allows_null(schema) => {
            problem(format!("{} (a finite number)", bounds.describe(false)));
        }
        serde_json::Value::String(s)
            if (s.chars().count() as u64) < min_of(schema, "minLength") =>
        {
            problem("must not be empty".into());
        }
        serde_json::Value::Array(items) => {
            if (items.len() as u64) < min_of(schema, "minItems") {
                problem("must list at least one item".into());
            }
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                check_value(root, &schema["items"], item, key, &path, out);
            }
        }
        serde_json::Value::Object(fields) => {
            for (name, sub) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(x) = fields.get(name) {
                    check_value(root, sub, x, key, &format!("{path}.{name}"), out);
                }
            }
        }
        _ => {}
    }
}

/// Whether `schema` admits null (an `Option` field: `"type": ["integer", "null"]`).
fn allows_null(schema: &serde_json::Value) -> bool {
    match &schema["type"] {
        serde_json::Value::Array(types) => types.iter().any(|t| t == "null"),
        t => t == "null",
    }
}

fn resolve_ref<'a>(
    root: &'a serde_json::Value,
    schema: &'a serde_json::Value,
) -> &'a serde_json::Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => &root["$defs"][name],
        None => schema,
    }
}

fn min_of(schema: &serde_json::Value, key: &str) -> u64 {
    schema[key].as_u64().unwrap_or(0)
}

/// A numeric range as a schema declares it: (bound, exclusive) at each end.
struct Bounds {
    lo: Option<(f64, bool)>,
    hi: Option<(f64, bool)>,
}

impl Bounds {
    fn of(schema: &serde_json::Value) -> Self {
        let end = |inclusive: &str, exclusive: &str| {
            schema[exclusive]
                .as_f64()
                .map(|b| (b, true))
                .or_else(|| schema[inclusive].as_f64().map(|b| (b, false)))
        };
        Bounds {
            lo: end("minimum", "exclusiveMinimum"),
            hi: end("maximum", "exclusiveMaximum"),
        }
    }
    fn any(&self) -> bool {
        self.lo.is_some() || self.hi.is_some()
    }
    fn contains(&self, x: f64) -> bool {
        let above = self
            .lo
            .is_none_or(|(b, excl)| if excl { x > b } else { x >= b });
        let below = self
            .hi
            .is_none_or(|(b, excl)| if excl { x < b } else { x <= b });
        above && below
    }
    fn describe(&self, integer: bool) -> String {
        match (self.lo, self.hi) {
            (Some((lo, lx)), Some((hi, hx))) => format!(
                "must be in {}{lo}, {hi}{}",
                if lx { "(" } else { "[" },
                if hx { ")" } else { "]" }
            ),
            (Some((lo, false)), None) if integer => format!("must be at least {lo}"),
            (Some((lo, false)), None) => format!("must be ≥ {lo}"),
            (Some((lo, true)), None) => format!("must be > {lo}"),
            (None, Some((hi, false))) => format!("must be at most {hi}"),
            (None, Some((hi, true))) => format!("must be < {hi}"),
            (None, None) => "is out of range".into(),
        }
    }
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

/// The whole JSON Schema of one kind's parameter table, with the `$defs` its nested tables
/// refer to: what unknown-key errors list and [`check_bounds`] reads.
pub fn parameter_schema(kind: &dyn KindParams) -> serde_json::Value {
    schema_of(|generator| kind.schema(generator))
}

/// [`parameter_schema`] of any typed table (a stage's `resources`).
pub fn type_schema<T: JsonSchema>() -> serde_json::Value {
    schema_of(|generator| generator.subschema_for::<T>())
}

fn schema_of(schema: impl FnOnce(&mut SchemaGenerator) -> Schema) -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let reference = schema(&mut generator).to_value();
    let defs: serde_json::Map<String, serde_json::Value> =
        generator.definitions().clone().into_iter().collect();
    let mut root = reference
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.rsplit('/').next())
        .and_then(|name| defs.get(name).cloned())
        .unwrap_or(reference);
    root["$defs"] = serde_json::Value::Object(defs);
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_are_read_from_the_schema_and_described() {
        let root = json!({
            "properties": {
                "f": { "type": "number", "minimum": 0.0, "exclusiveMaximum": 1.0 },
                "n": { "type": "integer", "minimum": 1 },
                "s": { "type": "string", "minLength": 1 },
                "list": { "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/Item" } }
            },
            "$defs": { "Item": { "properties": { "k": { "type": "integer", "minimum": 8, "maximum": 424 } } } }
        });
        let ok = json!({ "f": 0.0, "n": 1, "s": "x", "list": [{ "k": 8 }, { "k": 424 }] });
        assert_eq!(check_bounds(&root, &ok), []);
        let bad = json!({ "f": 1.0, "n": 0, "s": "", "list": [{ "k": 8 }, { "k": 425 }] });
        let mut got: Vec<(String, String, String)> = check_bounds(&root, &bad)
            .into_iter()
            .map(|i| (i.key, i.path, i.message))
            .collect();
        got.sort();
        let want = [
            ("f", "f", "must be in [0, 1)"),
            ("list", "list[1].k", "must be in [8, 424]"),
            ("n", "n", "must be at least 1"),
            ("s", "s", "must not be empty"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
        let nan = json!({ "f": null });
        assert_eq!(
            check_bounds(&root, &nan)[0].message,
            "must be in [0, 1) (a finite number)"
        );
        assert_eq!(
            check_bounds(&root, &json!({ "list": [] }))[0].message,
            "must list at least one item"
        );
    }
}
