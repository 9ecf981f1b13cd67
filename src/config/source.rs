//! Pipeline files as a span-carrying tree: parse each file of an `extends` chain, merge them,
//! apply `--set` overrides, and remember for every key where (file, byte span) it was written.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap_like::Entries;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
pub use super::texts::{Source, Sources};
use crate::io_error::IoError;

/// Where a key and its value were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub source: usize,
    pub key: Range<usize>,
    pub value: Range<usize>,
}

/// A value with its origin. Tables keep their entries in written order.
#[derive(Debug, Clone)]
pub struct Node {
    pub origin: Origin,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Table(Entries),
    /// Scalars and arrays; `items` holds the spans of array elements (empty for scalars).
    Leaf {
        value: toml::Value,
        items: Vec<Range<usize>>,
    },
}

/// A small ordered map; pipelines have tens of keys, so a vector is the right structure.
mod indexmap_like {
    use super::Node;

    #[derive(Debug, Clone, Default)]
    pub struct Entries(pub Vec<(String, Node)>);

    impl Entries {
        pub fn get(&self, key: &str) -> Option<&Node> {
            self.0.iter().find(|(k, _)| k == key).map(|(_, n)| n)
        }
        pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
            self.0.iter_mut().find(|(k, _)| k == key).map(|(_, n)| n)
        }
        pub fn insert(&mut self, key: String, node: Node) {
            match self.get_mut(&key) {
                Some(slot) => *slot = node,
                None => self.0.push((key, node)),
            }
        }
        pub fn remove(&mut self, key: &str) -> Option<Node> {
            let pos = self.0.iter().position(|(k, _)| k == key)?;
            Some(self.0.remove(pos).1)
        }
        pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
            self.0.iter().map(|(k, n)| (k, n))
        }
        pub fn keys(&self) -> impl Iterator<Item = &str> {
            self.0.iter().map(|(k, _)| k.as_str())
        }
    }
}
pub use indexmap_like::Entries as Table;

impl Node {
    pub fn as_table(&self) -> Option<&Table> {
        match &self.kind {
            NodeKind::Table(t) => Some(t),
            NodeKind::Leaf { .. } => None,
        }
    }

    /// The plain TOML value of this node (tables converted recursively).
    pub fn to_value(&self) -> toml::Value {
        match &self.kind {
            NodeKind::Leaf { value, .. } => value.clone(),
            NodeKind::Table(entries) => {
                let mut table = toml::Table::new();
                for (k, n) in entries.iter() {
                    table.insert(k.clone(), n.to_value());
                }
                toml::Value::Table(table)
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Table(_) => "table",
            NodeKind::Leaf { value, .. } => value.type_str(),
        }
    }
}

/// Parse one file's text into a node tree. `values` gives the typed values (integers, floats,
/// dates parsed by `toml`), `spans` the positions; both come from the same text.
fn parse_text(text: &str, source: usize) -> Result<Node, (String, Option<Range<usize>>)> {
    let spans = DeTable::parse(text).map_err(|e| (e.message().to_string(), e.span()))?;
    let values: toml::Table =
        toml::from_str(text).map_err(|e| (e.message().to_string(), e.span()))?;
    let whole = 0..text.len();
    Ok(build_table(
        &values,
        spans.get_ref(),
        source,
        whole.clone(),
        whole,
    ))
}

fn build_table(
    values: &toml::Table,
    spans: &DeTable<'_>,
    source: usize,
    key: Range<usize>,
    value: Range<usize>,
) -> Node {
    let mut entries = Table::default();
    for (k, v) in spans.iter() {
        let name: &str = k.get_ref();
        let Some(typed) = values.get(name) else {
            continue;
        };
        entries.insert(name.to_string(), build_node(typed, v, source, k.span()));
    }
    Node {
        origin: Origin { source, key, value },
        kind: NodeKind::Table(entries),
    }
}

fn build_node(
    typed: &toml::Value,
    spanned: &Spanned<DeValue<'_>>,
    source: usize,
    key: Range<usize>,
) -> Node {
    let value_span = spanned.span();
    match (typed, spanned.get_ref()) {
        (toml::Value::Table(t), DeValue::Table(st)) => build_table(t, st, source, key, value_span),
        (v, de) => {
            let items = match de {
                DeValue::Array(items) => items.iter().map(|i| i.span()).collect(),
                _ => Vec::new(),
            };
            Node {
                origin: Origin {
                    source,
                    key,
                    value: value_span,
                },
                kind: NodeKind::Leaf {
                    value: v.clone(),
                    items,
                },
            }
        }
    }
}

/// Deep merge: tables merge key by key, anything else in `over` replaces `base`.
pub(super) fn merge(base: &mut Node, over: Node) {
    match (&mut base.kind, over.kind) {
        (NodeKind::Table(b), NodeKind::Table(o)) => {
            for (k, v) in o.0 {
                match b.get_mut(&k) {
                    Some(existing) if existing.as_table().is_some() && v.as_table().is_some() => {
                        merge(existing, v)
                    }
                    _ => b.insert(k, v),
                }
            }
        }
        (_, kind) => {
            base.kind = kind;
            base.origin = over.origin;
        }
    }
}

/// Load a pipeline file and the chain of files it `extends`, merged, base first.
pub fn load_chain(path: &Path, sources: &mut Sources) -> Result<Node, ConfigError> {
    let mut seen = HashSet::new();
    load_file(path, sources, &mut seen, None)
}

fn load_file(
    path: &Path,
    sources: &mut Sources,
    seen: &mut HashSet<PathBuf>,
    from: Option<(usize, Range<usize>)>,
) -> Result<Node, ConfigError> {
    let canonical = path.canonicalize().map_err(|e| match &from {
        Some((src, span)) => ConfigError::at(
            sources,
            *src,
            span.clone(),
            format!("cannot read extended pipeline {}: {e}", path.display()),
            None,
        ),
        None => ConfigError::Io(IoError::new("cannot read pipeline file", path, e)),
    })?;
    if !seen.insert(canonical.clone()) {
        let (src, span) = from.expect("the first file cannot be seen twice");
        return Err(ConfigError::at(
            sources,
            src,
            span,
            format!(
                "`extends` cycle: {} is already part of this chain",
                path.display()
            ),
            None,
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Io(IoError::new("cannot read pipeline file", path, e)))?;
    let base_dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    sources.0.push(Source {
        name: path.display().to_string(),
        base_dir: base_dir.clone(),
        text,
    });
    let index = sources.0.len() - 1;
    let mut node = parse_text(&sources.get(index).text, index).map_err(|(msg, span)| {
        ConfigError::at(
            sources,
            index,
            span.unwrap_or(0..0),
            format!("TOML syntax: {msg}"),
            None,
        )
    })?;
    let NodeKind::Table(entries) = &mut node.kind else {
        unreachable!("a document is a table")
    };
    let Some(extends) = entries.remove("extends") else {
        return Ok(node);
    };
    let NodeKind::Leaf {
        value: toml::Value::String(parent),
        ..
    } = &extends.kind
    else {
        return Err(ConfigError::at(
            sources,
            index,
            extends.origin.value,
            "`extends` must be a string: the path of another pipeline file".into(),
            None,
        ));
    };
    let parent_path = base_dir.join(parent);
    let mut merged = load_file(
        &parent_path,
        sources,
        seen,
        Some((index, extends.origin.value.clone())),
    )?;
    merge(&mut merged, node);
    Ok(merged)
}

/// Apply one `--set stage.key=value` (or `pipeline.key=value`) override. The value is read as a
/// TOML value when it parses as one (`10`, `0.5`, `true`, `[1, 2]`, `"x"`), else as a string.
pub fn apply_override(
    root: &mut Node,
    arg: &str,
    sources: &mut Sources,
    cwd: &Path,
) -> Result<(), ConfigError> {
    sources.0.push(Source {
        name: "--set".into(),
        base_dir: cwd.to_path_buf(),
        text: arg.to_string(),
    });
    let index = sources.0.len() - 1;
    let Some(eq) = arg.find('=') else {
        return Err(ConfigError::at(
            sources,
            index,
            0..arg.len(),
            "an override is written `--set STAGE.KEY=VALUE` (or `pipeline.KEY=VALUE`)".into(),
            None,
        ));
    };
    let (path, raw) = (&arg[..eq], &arg[eq + 1..]);
    let segments: Vec<&str> = path.split('.').collect();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::at(
            sources,
            index,
            0..eq,
            format!("`{path}` is not STAGE.KEY or pipeline.KEY"),
            None,
        ));
    }
    let value = parse_override_value(raw);
    let value_span = eq + 1..arg.len();
    let leaf = Node {
        origin: Origin {
            source: index,
            key: 0..eq,
            value: value_span.clone(),
        },
        kind: NodeKind::Leaf {
            value,
            items: Vec::new(),
        },
    };
    let parent = parent_table(root, &segments, sources, index, eq)?;
    parent.insert(segments[segments.len() - 1].to_string(), leaf);
    Ok(())
}

/// The table an override `segments` writes into, created where missing: `pipeline.x` →
/// [pipeline], `train.epochs` → [stages, train]. A stage that does not exist is an error.
fn parent_table<'n>(
    root: &'n mut Node,
    segments: &[&str],
    sources: &Sources,
    index: usize,
    eq: usize,
) -> Result<&'n mut Table, ConfigError> {
    let mut table_path: Vec<&str> = if segments[0] == "pipeline" {
        vec!["pipeline"]
    } else {
        vec!["stages", segments[0]]
    };
    table_path.extend(&segments[1..segments.len() - 1]);
    let mut cursor = root;
    for (depth, name) in table_path.iter().enumerate() {
        if depth == 1
            && table_path[0] == "stages"
            && cursor.as_table().is_some_and(|t| t.get(name).is_none())
        {
            return Err(ConfigError::unknown_name(
                sources,
                index,
                0..segments[0].len(),
                "stage",
                segments[0],
                &stage_ids(cursor),
            ));
        }
        let NodeKind::Table(entries) = &mut cursor.kind else {
            unreachable!("the walk only enters tables")
        };
        if entries.get(name).is_none() {
            let origin = Origin {
                source: index,
                key: 0..eq,
                value: 0..eq,
            };
            let table = NodeKind::Table(Table::default());
            entries.insert(
                name.to_string(),
                Node {
                    origin,
                    kind: table,
                },
            );
        }
        cursor = entries.get_mut(name).expect("just inserted");
        if cursor.as_table().is_none() {
            return Err(ConfigError::at(
                sources,
                index,
                0..eq,
                format!("`{name}` is not a table"),
                None,
            ));
        }
    }
    let NodeKind::Table(entries) = &mut cursor.kind else {
        unreachable!("checked above")
    };
    Ok(entries)
}

fn stage_ids(stages: &Node) -> Vec<String> {
    stages
        .as_table()
        .map(|t| t.keys().map(str::to_string).collect())
        .unwrap_or_default()
}

fn parse_override_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
