//! Input-file manifests with a stat cache: a folder of images is hashed once, and later runs
//! trust (path, size, mtime in ns, inode) and re-hash only files whose stat changed.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::CacheError;
use super::atomic::write_atomic;

/// One file of an input group: its path relative to the group root, size and blake3 digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub digest: String,
}

/// The files of one input group, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<FileEntry>,
}

impl Manifest {
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for e in &self.entries {
            h.update(e.path.as_bytes());
            h.update(&[0]);
            h.update(e.size.to_string().as_bytes());
            h.update(&[0]);
            h.update(e.digest.as_bytes());
            h.update(b"\n");
        }
        h.finalize().to_hex().to_string()
    }

    /// Files added, removed and changed from `old` to `self` (paths).
    pub fn diff(&self, old: &Manifest) -> (Vec<String>, Vec<String>, Vec<String>) {
        let before: HashMap<&str, &FileEntry> = old.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let after: HashMap<&str, &FileEntry> = self.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut added: Vec<String> = after.keys().filter(|p| !before.contains_key(*p)).map(|p| p.to_string()).collect();
        let mut removed: Vec<String> =
            before.keys().filter(|p| !after.contains_key(*p)).map(|p| p.to_string()).collect();
        let mut changed: Vec<String> =
            after.iter().filter(|(p, e)| before.get(*p).is_some_and(|b| b != *e)).map(|(p, _)| p.to_string()).collect();
        added.sort();
        removed.sort();
        changed.sort();
        (added, removed, changed)
    }
}

/// What the stat cache remembers of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    digest: String,
}

/// A file found by the walk, with its current stat.
struct Found {
    rel: String,
    abs: PathBuf,
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

/// Build the manifest of `root` (a folder, walked recursively, or a single file), reusing the
/// digests in `stat_file` for files whose stat is unchanged unless `verify` is set. Calls
/// `on_hashed(done, total)` while hashing.
pub fn manifest(
    root: &Path,
    stat_file: &Path,
    verify: bool,
    on_hashed: &(dyn Fn(u64, u64) + Sync),
) -> Result<Manifest, CacheError> {
    let found = walk(root)?;
    let mut stats: HashMap<String, Stat> = if verify { HashMap::new() } else { read_stats(stat_file) };
    let stale: Vec<&Found> = found
        .iter()
        .filter(|f| stats.get(&f.rel).is_none_or(|s| s.size != f.size || s.mtime_ns != f.mtime_ns || s.ino != f.ino))
        .collect();
    let total = stale.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let hashed: Vec<(String, Stat)> = stale
        .par_iter()
        .map(|f| {
            let digest = hash_file(&f.abs)?;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n % 256 == 0 || n == total {
                on_hashed(n, total);
            }
            Ok((f.rel.clone(), Stat { size: f.size, mtime_ns: f.mtime_ns, ino: f.ino, digest }))
        })
        .collect::<Result<_, CacheError>>()?;
    let changed = !hashed.is_empty() || stats.len() != found.len();
    stats.extend(hashed);
    let entries: Vec<FileEntry> = found
        .iter()
        .map(|f| FileEntry { path: f.rel.clone(), size: f.size, digest: stats[&f.rel].digest.clone() })
        .collect();
    if changed {
        // Keep only files that still exist, so the stat cache never grows without bound.
        stats.retain(|k, _| found.binary_search_by(|f| f.rel.as_str().cmp(k)).is_ok());
        let bytes = serde_json::to_vec(&stats).expect("stats serialise");
        write_atomic(stat_file, &bytes).map_err(|e| CacheError::io("writing the stat cache", stat_file, e))?;
    }
    Ok(Manifest { entries })
}

fn read_stats(stat_file: &Path) -> HashMap<String, Stat> {
    // A missing or garbled stat cache only costs a re-hash; it is never trusted blindly.
    std::fs::read(stat_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

pub fn hash_file(path: &Path) -> Result<String, CacheError> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path).map_err(|e| CacheError::io("reading input file", path, e))?;
    std::io::copy(&mut file, &mut hasher).map_err(|e| CacheError::io("reading input file", path, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// All regular files under `root` (following file symlinks, not directory symlinks), sorted.
fn walk(root: &Path) -> Result<Vec<Found>, CacheError> {
    let meta = std::fs::metadata(root).map_err(|e| CacheError::io("reading input", root, e))?;
    let mut found = Vec::new();
    if meta.is_file() {
        let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        found.push(Found {
            rel: name,
            abs: root.to_path_buf(),
            size: meta.size(),
            mtime_ns: mtime_ns(&meta),
            ino: meta.ino(),
        });
        return Ok(found);
    }
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| CacheError::io("listing input folder", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| CacheError::io("listing input folder", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // editor and OS litter (.DS_Store, ._x) is not data
            }
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let abs = entry.path();
            let ft = entry.file_type().map_err(|e| CacheError::io("reading input", &abs, e))?;
            if ft.is_dir() {
                stack.push((abs, rel));
                continue;
            }
            // Follows file symlinks; a dangling link or a link to a folder is reported.
            let meta = std::fs::metadata(&abs).map_err(|e| CacheError::io("reading input file", &abs, e))?;
            if meta.is_dir() {
                continue; // directory symlinks are not followed (no loops)
            }
            found.push(Found { rel, abs, size: meta.size(), mtime_ns: mtime_ns(&meta), ino: meta.ino() });
        }
    }
    found.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}
