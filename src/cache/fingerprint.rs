//! Fingerprints: everything that determines a stage's outputs, hashed into its cache key, and
//! stored beside the outputs so a miss can be explained field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Salt of every key: bump when the cache layout or fingerprint meaning changes.
pub const CACHE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub cache_format: u32,
    pub kind: String,
    /// The stage implementation's code version (bumped when its output would change).
    pub code_version: u32,
    /// Parameters with defaults filled in (as written, before path resolution).
    pub params: serde_json::Value,
    /// The pipeline seed, for kinds whose output depends on it.
    pub seed: Option<u64>,
    /// Upstream stage id → content digest of its outputs (early cutoff: not its key).
    pub inputs: BTreeMap<String, String>,
    /// Input file group (e.g. `images`) → digest of its (relative path, size, digest) manifest.
    pub files: BTreeMap<String, String>,
}

impl Fingerprint {
    /// Canonical JSON: object keys sorted at every depth, no whitespace.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).expect("fingerprints serialise");
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    pub fn key(&self) -> String {
        blake3::hash(self.canonical_json().as_bytes())
            .to_hex()
            .to_string()
    }

    /// Human-readable differences from `old` to `self`, one line each.
    pub fn diff(&self, old: &Fingerprint) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.cache_format != old.cache_format {
            changes.push(Change::Code(format!(
                "cache format {} → {}",
                old.cache_format, self.cache_format
            )));
        }
        if self.kind != old.kind {
            changes.push(Change::Code(format!(
                "stage kind `{}` → `{}`",
                old.kind, self.kind
            )));
        }
        if self.code_version != old.code_version {
            changes.push(Change::Code(format!(
                "`{}` code version {} → {}",
                self.kind, old.code_version, self.code_version
            )));
        }
        if self.seed != old.seed {
            changes.push(Change::Param(format!(
                "pipeline seed {} → {}",
                show_opt(old.seed),
                show_opt(self.seed)
            )));
        }
        let mut params = Vec::new();
        diff_json("", &old.params, &self.params, &mut params);
        changes.extend(params.into_iter().map(Change::Param));
        for (id, digest) in &self.inputs {
            match old.inputs.get(id) {
                None => changes.push(Change::Upstream(format!("new input `{id}`"))),
                Some(d) if d != digest => changes.push(Change::Upstream(format!(
                    "output of `{id}` changed ({} → {})",
                    short(d),
                    short(digest)
                ))),
                Some(_) => {}
            }
        }
        for id in old
            .inputs
            .keys()
            .filter(|id| !self.inputs.contains_key(*id))
        {
            changes.push(Change::Upstream(format!("input `{id}` removed")));
        }
        for (group, digest) in &self.files {
            match old.files.get(group) {
                Some(d) if d == digest => {}
                Some(d) => changes.push(Change::Files {
                    group: group.clone(),
                    old: d.clone(),
                    new: digest.clone(),
                }),
                None => changes.push(Change::Upstream(format!("new input files `{group}`"))),
            }
        }
        changes
    }
}

/// One reason a fingerprint differs.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Code(String),
    Param(String),
    Upstream(String),
    /// An input file group changed; the caller expands it with the stored manifests.
    Files {
        group: String,
        old: String,
        new: String,
    },
}

pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn show_opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| "(unused)".into())
}

fn diff_json(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (old, new) {
        (Object(a), Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_json(&p, x, y, out),
                    (None, Some(y)) => out.push(format!("param `{p}` added: {y}")),
                    (Some(x), None) => out.push(format!("param `{p}` removed (was {x})")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("param `{path}`: {a} → {b}")),
        _ => {}
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("strings serialise"));
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
