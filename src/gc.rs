//! `gc`: delete published artifacts that no recent run and no pipeline's current state uses.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::cache::{CacheError, Fingerprint, Store};
use crate::records;

/// What `gc` did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed: Vec<String>,
    /// Artifacts kept because a retained run or a pipeline's current state uses them.
    pub kept: usize,
    /// Artifacts left alone because a running stage holds them.
    pub busy: Vec<String>,
    pub freed_bytes: u64,
    pub swept_temp: usize,
    /// Run records that could not be read (and so keep nothing).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl GcReport {
    pub fn text(&self) -> String {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mut out = String::new();
        for key in &self.removed {
            out.push_str(&format!("{verb} {key}\n"));
        }
        out.push_str(&format!(
            "{verb} {} artifact(s), {:.1} MiB; kept {} in use\n",
            self.removed.len(),
            self.freed_bytes as f64 / (1 << 20) as f64,
            self.kept
        ));
        if !self.busy.is_empty() {
            out.push_str(&format!(
                "left {} artifact(s) that a running stage holds\n",
                self.busy.len()
            ));
        }
        out
    }
}

/// Delete the artifacts that neither the newest `keep_runs` runs nor any pipeline's current
/// state use.
pub fn gc(store: &Store, keep_runs: usize, dry_run: bool) -> Result<GcReport, CacheError> {
    let (keep, warnings) = retained(store, keep_runs);
    let swept = if dry_run { 0 } else { store.sweep() };
    let mut removed = Vec::new();
    let mut busy = Vec::new();
    let mut freed = 0u64;
    for key in store
        .object_keys()
        .into_iter()
        .filter(|k| !keep.contains(k))
    {
        let size = store.object_size(&key);
        if dry_run {
            removed.push(key);
            freed += size;
            continue;
        }
        match store.remove_object(&key) {
            Ok(true) => {
                // Its cluster jobs' logs go with it, unless a job for it is still out there.
                if crate::executor::in_flight_note(store, &key).is_none() {
                    store.remove_logs(&key);
                }
                removed.push(key);
                freed += size;
            }
            Ok(false) => busy.push(key),
            Err(e) => return Err(e),
        }
    }
    Ok(GcReport {
        dry_run,
        removed,
        kept: keep.len(),
        busy,
        freed_bytes: freed,
        swept_temp: swept,
        warnings,
    })
}

/// The keys `gc` keeps (locally and on the remote): every key of the newest `keep_runs` runs,
/// and the last state of every stage of every pipeline (so `run` after `gc` is a no-op); and
/// the run records that could not be read.
pub fn retained(store: &Store, keep_runs: usize) -> (BTreeSet<String>, Vec<String>) {
    let (runs, warnings) = records::list(&store.runs_dir());
    let mut keep: BTreeSet<String> = runs
        .iter()
        .take(keep_runs)
        .flat_map(|r| r.stages.iter().filter_map(|s| s.key.clone()))
        .collect();
    keep.extend(current_keys(store));
    (keep, warnings)
}

/// Keys of the last fingerprint recorded for each stage of each pipeline.
fn current_keys(store: &Store) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let Ok(pipelines) = std::fs::read_dir(store.root().join("index")) else {
        return keys;
    };
    for dir in pipelines.flatten() {
        let Ok(stages) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in stages.flatten() {
            if let Some(fp) = std::fs::read(file.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Fingerprint>(&b).ok())
            {
                keys.insert(fp.key());
            }
        }
    }
    keys
}
