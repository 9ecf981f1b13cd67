//! What a user's program leaves behind, checked before anything is published: its input
//! artifacts untouched, its declared outputs present, no links in its output folder, and its
//! `metrics.json` a flat object of numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::untrusted::escape;

/// Every file of the input artifacts with its size and modification time, by input id.
pub type InputState = BTreeMap<String, BTreeMap<PathBuf, (u64, Option<SystemTime>)>>;

/// The state of `inputs` (id → artifact folder) now.
pub fn input_state(inputs: &BTreeMap<String, PathBuf>) -> InputState {
    inputs
        .iter()
        .map(|(id, dir)| {
            let files = walk(dir)
                .into_iter()
                .filter_map(|p| {
                    let meta = std::fs::symlink_metadata(&p).ok()?;
                    let rel = p.strip_prefix(dir).ok()?.to_path_buf();
                    Some((rel, (meta.len(), meta.modified().ok())))
                })
                .collect();
            (id.clone(), files)
        })
        .collect()
}

/// The first input file the program changed, added or removed, in words.
pub fn changed_input(before: &InputState, after: &InputState) -> Option<String> {
    for (id, files) in before {
        let now = after.get(id)?;
        let changed = files
            .iter()
            .find(|(path, state)| now.get(*path) != Some(state))
            .map(|(path, _)| path)
            .or_else(|| now.keys().find(|p| !files.contains_key(*p)));
        if let Some(path) = changed {
            return Some(format!(
                "the program changed `{}` of its input `{id}`: input artifacts are read-only (write into {{out}}); \
                 the next run recomputes `{id}` rather than reuse it",
                escape(&path.to_string_lossy())
            ));
        }
    }
    None
}

/// Files and links under `dir` (folders are entered, links are not followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                _ => out.push(path),
            }
        }
    }
    out.sort();
    out
}

/// What is wrong with the output folder: a link or special file, or a declared output missing.
pub fn check_outputs(out_dir: &Path, declared: &[String]) -> Result<(), String> {
    for path in walk(out_dir) {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
        if !meta.file_type().is_file() {
            let rel = path.strip_prefix(out_dir).unwrap_or(&path);
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file"
            };
            return Err(format!(
                "output `{}` is {what}: an artifact holds only regular files",
                escape(&rel.to_string_lossy())
            ));
        }
    }
    let missing: Vec<&str> = declared
        .iter()
        .filter(|name| !out_dir.join(name).is_file())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the program exited 0 but did not write its declared output(s) {} into {{out}}",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// The file a program may write to report metrics.
pub const METRICS_JSON: &str = "metrics.json";

/// `metrics.json` in `out_dir`, when the program wrote one: a flat object of name → finite
/// number, names of letters, digits and `_ . : -`.
pub fn read_metrics(out_dir: &Path) -> Result<BTreeMap<String, f64>, String> {
    let path = out_dir.join(METRICS_JSON);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(BTreeMap::new());
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{METRICS_JSON} is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("{METRICS_JSON} must be an object of name → number"))?;
    let mut metrics = BTreeMap::new();
    for (name, v) in object {
        let good_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        if !good_name {
            return Err(format!(
                "{METRICS_JSON}: metric name `{}` must be 1–64 letters, digits, `_`, `.`, `:` or `-`",
                escape(name)
            ));
        }
        let number = v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{METRICS_JSON}: `{name}` must be a finite number, not {v}"))?;
        metrics.insert(name.clone(), number);
    }
    Ok(metrics)
}
