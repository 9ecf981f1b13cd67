//! The pipeline model: TOML (with `extends` and `--set`) → typed, validated [`Pipeline`].

mod error;
mod resources;
mod settings;
mod source;
mod template;
mod texts;

use std::path::{Path, PathBuf};

pub use crate::executor::ExecutorKind;
pub use crate::kind::{KindCatalog, StageKind, StageParams};
use crate::kind::{KindParams, Place};
pub use error::{ConfigError, did_you_mean};
pub use resources::Resources;
pub use settings::{DEFAULT_SEED, PipelineSettings};
use source::{Node, NodeKind, Origin, Sources};

/// Top-level keys of a pipeline file (`extends` is consumed while loading).
const TOP_KEYS: [&str; 3] = ["pipeline", "stages", "extends"];

/// A loaded, validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub seed: u64,
    /// The pipeline file as given on the command line.
    pub path: PathBuf,
    /// `cache_dir` from the file, resolved against the file that set it.
    pub cache_dir: Option<PathBuf>,
    /// `remote`: the shared remote cache's URL (`s3://bucket/prefix`, `file:///dir`).
    pub remote: Option<String>,
    /// `remote_push`: upload what this pipeline computes to the remote.
    pub remote_push: bool,
    /// `executor`: where stages that must be computed run (`local` unless set).
    pub executor: ExecutorKind,
    /// Stages in the order they were written.
    pub stages: Vec<StageSpec>,
    /// The `--set` overrides applied, as given.
    pub overrides: Vec<String>,
    /// The texts the pipeline came from, for diagnostics found after loading.
    sources: Sources,
}

/// One stage as declared.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub id: String,
    pub kind: StageKind,
    pub inputs: Vec<String>,
    pub params: StageParams,
    /// What the stage asks of a cluster scheduler; never part of its cache key.
    pub resources: Resources,
    /// Directory against which this stage's relative path parameters resolve (the directory of
    /// the file that set `data_dir` / `output`, or the working directory for `--set`).
    pub base_dir: PathBuf,
    /// Where the stage table and its `inputs` were written.
    origin: SpecOrigin,
}

#[derive(Debug, Clone, Default)]
struct SpecOrigin {
    table: Origin,
    inputs: Option<(Origin, Vec<std::ops::Range<usize>>)>,
}

impl StageSpec {
    /// A stage rebuilt outside its pipeline file (a job on a cluster node): no source positions,
    /// no inputs list (its inputs come as artifact folders).
    pub fn detached(id: String, kind: StageKind, params: StageParams, base_dir: PathBuf) -> Self {
        StageSpec {
            id,
            kind,
            inputs: Vec::new(),
            params,
            resources: Resources::default(),
            base_dir,
            origin: SpecOrigin::default(),
        }
    }
}

impl Pipeline {
    pub fn stage(&self, id: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// A diagnostic pointing at input `input` of stage `stage` (or its whole `inputs` list /
    /// its table when `input` is None or it has none).
    pub fn error_at_input(
        &self,
        stage: usize,
        input: Option<usize>,
        message: String,
        help: Option<String>,
    ) -> ConfigError {
        let origin = &self.stages[stage].origin;
        let (src, span) = match (&origin.inputs, input) {
            (Some((o, items)), Some(i)) if i < items.len() => (o.source, items[i].clone()),
            (Some((o, _)), _) => (o.source, o.value.clone()),
            (None, _) => (origin.table.source, origin.table.key.clone()),
        };
        ConfigError::at(&self.sources, src, span, message, help)
    }
}

impl StageSpec {
    /// Resolve a path parameter of this stage against the file that declared it (normalised:
    /// `pipelines/../data` reads `data`).
    pub fn resolve(&self, relative: &str) -> PathBuf {
        normalize(&self.base_dir.join(relative))
    }
}

/// `path` with `.` and `name/..` removed, without touching the file system (as users write
/// paths; a symlinked folder followed by `..` is taken literally).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use std::path::Path;

    #[test]
    fn normalize_removes_dot_and_parent_components() {
        let cases = [
            (
                "/abs/pipelines/../submissions/demo.csv",
                "/abs/submissions/demo.csv",
            ),
            ("pipelines/./../data/galaxy-zoo", "data/galaxy-zoo"),
            ("../shared/data", "../shared/data"),
            ("a/../../b", "../b"),
            ("/..", "/"),
            ("./", "."),
        ];
        for (given, want) in cases {
            assert_eq!(normalize(Path::new(given)), Path::new(want), "{given}");
        }
    }
}

/// Load `path`, follow `extends`, apply `overrides` (`STAGE.KEY=VALUE`), and validate against
/// the stage kinds of `kinds`.
pub fn load(
    path: &Path,
    overrides: &[String],
    kinds: &dyn KindCatalog,
) -> Result<Pipeline, ConfigError> {
    let mut sources = Sources::default();
    let mut root = source::load_chain(path, &mut sources)?;
    template::expand(&mut root, &sources)?;
    let cwd = std::env::current_dir().unwrap_or_default();
    for arg in overrides {
        source::apply_override(&mut root, arg, &mut sources, &cwd)?;
    }
    let mut pipeline = build(&root, &sources, kinds)?;
    pipeline.path = path.to_path_buf();
    pipeline.overrides = overrides.to_vec();
    Ok(pipeline)
}

fn build(root: &Node, sources: &Sources, kinds: &dyn KindCatalog) -> Result<Pipeline, ConfigError> {
    let mut errors = Vec::new();
    let top = root.as_table().expect("document is a table");
    for (key, node) in top.iter() {
        if !TOP_KEYS.contains(&key.as_str()) {
            errors.push(unknown(
                sources,
                &node.origin,
                "top-level key",
                key,
                &TOP_KEYS,
            ));
        }
    }

    let settings = match top.get("pipeline") {
        None => {
            errors.push(ConfigError::at(
                sources,
                0,
                0..0,
                "missing `[pipeline]` table (with at least `name`)".into(),
                Some("add:\n[pipeline]\nname = \"my-experiment\"".into()),
            ));
            Settings::default()
        }
        Some(node) => pipeline_table(node, sources, &mut errors),
    };

    let mut stages = Vec::new();
    match top.get("stages").map(|n| (n, n.as_table())) {
        None => errors.push(ConfigError::at(
            sources,
            0,
            0..0,
            "no stages: add at least one `[stages.<id>]` table".into(),
            None,
        )),
        Some((node, None)) => errors.push(type_error(
            sources,
            node,
            "`stages` must be a table of `[stages.<id>]` tables",
        )),
        Some((_, Some(table))) => {
            for (id, node) in table.iter() {
                if let Some(stage) = stage(id, node, sources, kinds, &mut errors) {
                    stages.push(stage);
                }
            }
        }
    }
    // Inputs must name declared stages (kinds and cycles are the graph's to check).
    let ids: Vec<String> = stages.iter().map(|s| s.id.clone()).collect();
    for (i, stage) in stages.iter().enumerate() {
        check_inputs(stage, &ids, &stages[i].origin, sources, &mut errors);
    }

    match ConfigError::many(errors) {
        Some(e) => Err(e),
        None => Ok(Pipeline {
            name: settings.name,
            seed: settings.seed,
            path: PathBuf::new(),
            cache_dir: settings.cache_dir,
            remote: settings.remote,
            remote_push: settings.remote_push,
            executor: settings.executor,
            stages,
            overrides: Vec::new(),
            sources: sources.clone(),
        }),
    }
}

/// The `[pipeline]` table, its paths resolved.
#[derive(Default)]
struct Settings {
    name: String,
    seed: u64,
    cache_dir: Option<PathBuf>,
    remote: Option<String>,
    remote_push: bool,
    executor: ExecutorKind,
}

fn pipeline_table(node: &Node, sources: &Sources, errors: &mut Vec<ConfigError>) -> Settings {
    let Some(table) = node.as_table() else {
        errors.push(type_error(sources, node, "`pipeline` must be a table"));
        return Settings::default();
    };
    let typed = TypedTable {
        path: "pipeline".into(),
        what: "`[pipeline]`".into(),
        whole: "`[pipeline]`".into(),
        reserved: &[],
        schema: crate::kind::type_schema::<PipelineSettings>(),
    };
    let parse = |v: toml::Value| crate::kind::parse_params::<PipelineSettings>(v);
    let validate = |p: &StageParams| crate::kind::validate_params::<PipelineSettings>(p);
    let Some(params) = typed.check(node, table, &parse, &validate, sources, errors) else {
        return Settings::default();
    };
    let settings = params
        .get::<PipelineSettings>()
        .expect("parsed as settings")
        .clone();
    // Relative paths resolve against the file that wrote them.
    let cache_dir = settings.cache_dir.as_ref().map(|dir| {
        let written = table.get("cache_dir").expect("set").origin.source;
        normalize(&sources.get(written).base_dir.join(dir))
    });
    Settings {
        name: settings.name,
        seed: settings.seed,
        cache_dir,
        remote: settings.remote,
        remote_push: settings.remote_push,
        executor: settings.executor,
    }
}

fn stage(
    id: &str,
    node: &Node,
    sources: &Sources,
    kinds: &dyn KindCatalog,
    errors: &mut Vec<ConfigError>,
) -> Option<StageSpec> {
    let Some(table) = node.as_table() else {
        errors.push(type_error(
            sources,
            node,
            &format!("stage `{id}` must be a table: `[stages.{id}]`"),
        ));
        return None;
    };
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(ConfigError::at(
            sources,
            node.origin.source,
            node.origin.key.clone(),
            format!("stage id `{id}` may only use letters, digits, `_` and `-`"),
            None,
        ));
        return None;
    }
    let kind = stage_kind(id, node, table, sources, kinds, errors)?;
    let inputs = stage_inputs(table, sources, errors)?;
    // Paths resolve against the file that wrote them.
    let base_dir = kind
        .kind()
        .decl()
        .path_params
        .iter()
        .find_map(|k| table.get(k))
        .map(|n| sources.get(n.origin.source).base_dir.clone())
        .unwrap_or_else(|| sources.get(node.origin.source).base_dir.clone());
    let place = Place {
        inputs: &inputs,
        base_dir: &base_dir,
    };
    let params = stage_params(id, node, table, kind, &place, sources, errors);
    // Invalid resources are reported; the stage stays, so its dependants are not misreported.
    let resources = stage_resources(id, table, sources, errors).unwrap_or_default();
    let params = params?;
    let inputs_origin = table.get("inputs").map(|n| {
        let items = match &n.kind {
            NodeKind::Leaf { items, .. } => items.clone(),
            NodeKind::Table(_) => Vec::new(),
        };
        (n.origin.clone(), items)
    });
    let origin = SpecOrigin {
        table: node.origin.clone(),
        inputs: inputs_origin,
    };
    Some(StageSpec {
        id: id.to_string(),
        kind: kind.kind(),
        inputs,
        params,
        resources,
        base_dir,
        origin,
    })
}

/// The kind a stage table names, among those of `kinds`.
fn stage_kind<'k>(
    id: &str,
    node: &Node,
    table: &source::Table,
    sources: &Sources,
    kinds: &'k dyn KindCatalog,
    errors: &mut Vec<ConfigError>,
) -> Option<&'k dyn KindParams> {
    let kind_names = kinds.names();
    let Some(k) = table.get("kind") else {
        errors.push(ConfigError::at(
            sources,
            node.origin.source,
            node.origin.key.clone(),
            format!("stage `{id}` has no `kind`"),
            Some(format!("kinds: {}", kind_names.join(", "))),
        ));
        return None;
    };
    let toml::Value::String(s) = k.to_value() else {
        errors.push(type_error(sources, k, "`kind` must be a string"));
        return None;
    };
    let found = kinds.find(&s);
    if found.is_none() {
        errors.push(ConfigError::unknown_name(
            sources,
            k.origin.source,
            k.origin.value.clone(),
            "stage kind",
            &s,
            &kind_names,
        ));
    }
    found
}

/// The `inputs` array of a stage table (empty when absent).
fn stage_inputs(
    table: &source::Table,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<String>> {
    let Some(n) = table.get("inputs") else {
        return Some(Vec::new());
    };
    match n.to_value() {
        toml::Value::Array(items) if items.iter().all(|v| v.is_str()) => Some(
            items
                .into_iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
        ),
        _ => {
            errors.push(type_error(
                sources,
                n,
                "`inputs` must be an array of stage ids",
            ));
            None
        }
    }
}

/// The kind-specific keys of a stage table (all but `kind`, `inputs` and `resources`).
fn stage_params(
    id: &str,
    node: &Node,
    table: &source::Table,
    kind: &dyn KindParams,
    place: &Place,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> Option<StageParams> {
    let typed = TypedTable {
        path: id.to_string(),
        what: format!("a `{}` stage", kind.kind()),
        whole: format!("stage `{id}`"),
        reserved: &["kind", "inputs", "resources"],
        schema: crate::kind::parameter_schema(kind),
    };
    let parse = |v: toml::Value| kind.parse(v);
    typed.check(
        node,
        table,
        &parse,
        &|p| kind.validate(p, place),
        sources,
        errors,
    )
}

/// A stage's `resources` table (defaults when absent).
fn stage_resources(
    id: &str,
    table: &source::Table,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> Option<Resources> {
    let Some(node) = table.get("resources") else {
        return Some(Resources::default());
    };
    let Some(inner) = node.as_table() else {
        let message = format!("`{id}.resources` must be a table: `[stages.{id}.resources]`");
        errors.push(type_error(sources, node, &message));
        return None;
    };
    let typed = TypedTable {
        path: format!("{id}.resources"),
        what: "`resources`".into(),
        whole: format!("`{id}.resources`"),
        reserved: &[],
        schema: crate::kind::type_schema::<Resources>(),
    };
    let parse = |v: toml::Value| crate::kind::parse_params::<Resources>(v);
    let validate = |p: &StageParams| crate::kind::validate_params::<Resources>(p);
    let params = typed.check(node, inner, &parse, &validate, sources, errors)?;
    params.get::<Resources>().cloned()
}

/// A table of typed keys (a stage's parameters, its `resources`), checked in order: unknown
/// names (with suggestions), then types, then the bounds its schema declares and `validate`.
struct TypedTable<'a> {
    /// How its values are named in messages (`train`, `train.resources`).
    path: String,
    /// What the table is, for "unknown key `x` for …".
    what: String,
    /// What a problem of the whole table is said of (`stage \`train\``, `` `[pipeline]` ``).
    whole: String,
    /// Keys of the enclosing table that are not part of it.
    reserved: &'a [&'a str],
    schema: serde_json::Value,
}

type ParseFn<'a> = dyn Fn(toml::Value) -> Result<StageParams, crate::kind::ParseError> + 'a;

impl TypedTable<'_> {
    fn check(
        &self,
        node: &Node,
        table: &source::Table,
        parse: &ParseFn,
        validate: &dyn Fn(&StageParams) -> Vec<crate::kind::Invalid>,
        sources: &Sources,
        errors: &mut Vec<ConfigError>,
    ) -> Option<StageParams> {
        let values = self.known_values(table, sources, errors)?;
        let params = match parse(toml::Value::Table(values)) {
            Ok(p) => p,
            Err(e) => {
                errors.push(parse_error(self, node, table, sources, &e));
                return None;
            }
        };
        let mut invalid = crate::kind::check_bounds(&self.schema, &params.canonical());
        invalid.extend(validate(&params));
        for invalid in &invalid {
            let (src, span) = table
                .get(&invalid.key)
                .map(|n| (n.origin.source, n.origin.value.clone()))
                .unwrap_or((node.origin.source, node.origin.key.clone()));
            let message = format!("`{}.{}` {}", self.path, invalid.path, invalid.message);
            errors.push(ConfigError::at(sources, src, span, message, None));
        }
        invalid.is_empty().then_some(params)
    }

    /// The table's own keys as TOML, or None after reporting the unknown ones.
    fn known_values(
        &self,
        table: &source::Table,
        sources: &Sources,
        errors: &mut Vec<ConfigError>,
    ) -> Option<toml::Table> {
        let known = crate::kind::schema_keys(&self.schema);
        let mut values = toml::Table::new();
        let mut ok = true;
        for (key, n) in table.iter() {
            if self.reserved.contains(&key.as_str()) {
                continue;
            }
            if !known.iter().any(|k| k == key) {
                let mut all = known.clone();
                all.extend(self.reserved.iter().map(|r| r.to_string()));
                let message = format!("unknown key `{key}` for {}", self.what);
                let (src, span) = (n.origin.source, n.origin.key.clone());
                let e = ConfigError::unknown_name(sources, src, span, "key", key, &all);
                errors.push(e.with_message(message));
                ok = false;
                continue;
            }
            values.insert(key.clone(), n.to_value());
        }
        ok.then_some(values)
    }
}

/// A serde error in a stage's parameters, pointing at the value it names.
fn parse_error(
    typed: &TypedTable,
    node: &Node,
    table: &source::Table,
    sources: &Sources,
    e: &crate::kind::ParseError,
) -> ConfigError {
    let path = e.path().to_string();
    let first = path.split(['.', '[']).next().unwrap_or("").to_string();
    let (src, span) = match table.get(&first) {
        Some(n) => (n.origin.source, n.origin.value.clone()),
        None => (node.origin.source, node.origin.key.clone()),
    };
    let what = if first.is_empty() || path == "." {
        typed.whole.clone()
    } else {
        format!("`{}.{path}`", typed.path)
    };
    ConfigError::at(
        sources,
        src,
        span,
        format!("{what}: {}", e.inner().message()),
        None,
    )
}

fn check_inputs(
    stage: &StageSpec,
    ids: &[String],
    origin: &SpecOrigin,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) {
    for (i, input) in stage.inputs.iter().enumerate() {
        let (src, span) = match &origin.inputs {
            Some((o, items)) if i < items.len() => (o.source, items[i].clone()),
            Some((o, _)) => (o.source, o.value.clone()),
            None => (origin.table.source, origin.table.key.clone()),
        };
        if stage.inputs[..i].contains(input) {
            errors.push(ConfigError::at(
                sources,
                src,
                span,
                format!("stage `{}` lists input `{input}` twice", stage.id),
                None,
            ));
        } else if input == &stage.id {
            errors.push(ConfigError::at(
                sources,
                src,
                span,
                format!("the stages form a cycle: {0} → {0}", stage.id),
                None,
            ));
        } else if !ids.contains(input) {
            let others: Vec<String> = ids.iter().filter(|i| **i != stage.id).cloned().collect();
            errors.push(
                ConfigError::unknown_name(sources, src, span, "input stage", input, &others)
                    .with_message(format!(
                        "stage `{}`: unknown input stage `{input}`",
                        stage.id
                    )),
            );
        }
    }
}

fn unknown(
    sources: &Sources,
    origin: &Origin,
    what: &str,
    name: &str,
    known: &[&str],
) -> ConfigError {
    let known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
    ConfigError::unknown_name(
        sources,
        origin.source,
        origin.key.clone(),
        what,
        name,
        &known,
    )
}

fn type_error(sources: &Sources, node: &Node, message: &str) -> ConfigError {
    ConfigError::at(
        sources,
        node.origin.source,
        node.origin.value.clone(),
        format!("{message} (found {})", node.type_name()),
        None,
    )
}
