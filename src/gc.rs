//! `gc`: delete published artifacts that no recent run and no pipeline's current state uses.

use std::collections::BTreeSet;

use serde_json::json;

use crate::cache::{Fingerprint, Store};
use crate::records;

pub fn gc(store: &Store, keep_runs: usize, dry_run: bool, json: bool) -> Result<i32, String> {
    let (runs, warnings) = records::list(&store.runs_dir());
    for w in &warnings {
        eprintln!("warning: ignoring {w}");
    }
    let mut keep: BTreeSet<String> = runs
        .iter()
        .take(keep_runs)
        .flat_map(|r| r.stages.iter().filter_map(|s| s.key.clone()))
        .collect();
    // The last state of every stage of every pipeline stays, so `run` after `gc` is a no-op.
    keep.extend(current_keys(store));
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
                removed.push(key);
                freed += size;
            }
            Ok(false) => busy.push(key),
            Err(e) => return Err(format!("gc: {e}")),
        }
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    if json {
        println!(
            "{}",
            json!({ "dry_run": dry_run, "removed": removed, "kept": keep.len(), "busy": busy, "freed_bytes": freed, "swept_temp": swept })
        );
    } else {
        for key in &removed {
            println!("{verb} {key}");
        }
        println!(
            "{verb} {} artifact(s), {:.1} MiB; kept {} in use",
            removed.len(),
            freed as f64 / (1 << 20) as f64,
            keep.len()
        );
        if !busy.is_empty() {
            println!("left {} artifact(s) that a running stage holds", busy.len());
        }
    }
    Ok(0)
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
