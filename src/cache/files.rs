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
        let before: HashMap<&str, &FileEntry> =
            old.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let after: HashMap<&str, &FileEntry> =
            self.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut added: Vec<String> = after
            .keys()
            .filter(|p| !before.contains_key(*p))
            .map(|p| p.to_string())
            .collect();
        let mut removed: Vec<String> = before
            .keys()
            .filter(|p| !after.contains_key(*p))
            .map(|p| p.to_string())
            .collect();
        let mut changed: Vec<String> = after
            .iter()
            .filter(|(p, e)| before.get(*p).is_some_and(|b| b != *e))
            .map(|(p, _)| p.to_string())
            .collect();
        added.sort();
        removed.sort();
        changed.sort();
        (added, removed, changed)
    }
}

/// What the stat cache remembers of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The stat cache of one input group: the manifest digest it last produced and, sorted by
/// path, each file's stat and digest. Stored as text, one file per line (parsing 61,578 lines
/// takes milliseconds; a JSON map took a third of a no-op run).
struct StatCache {
    manifest: String,
    entries: Vec<(String, Stat)>,
}

const STAT_HEADER: &str = "galaxy-pipe stat cache v1";

impl StatCache {
    fn read(path: &Path) -> Option<StatCache> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        if lines.next()? != STAT_HEADER {
            return None;
        }
        let manifest = lines.next()?.strip_prefix("manifest ")?.to_string();
        let mut entries = Vec::new();
        for line in lines {
            let mut f = line.splitn(5, '\t');
            let size = f.next()?.parse().ok()?;
            let mtime_ns = f.next()?.parse().ok()?;
            let ino = f.next()?.parse().ok()?;
            let digest = f.next()?.to_string();
            let rel = f.next()?.to_string();
            entries.push((
                rel,
                Stat {
                    size,
                    mtime_ns,
                    ino,
                    digest,
                },
            ));
        }
        // A garbled or hand-edited cache is never trusted blindly: it must be sorted and unique.
        entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0)
            .then_some(StatCache { manifest, entries })
    }

    fn write(&self, path: &Path) -> Result<(), CacheError> {
        let mut text = String::with_capacity(self.entries.len() * 120);
        text.push_str(STAT_HEADER);
        text.push_str("\nmanifest ");
        text.push_str(&self.manifest);
        text.push('\n');
        for (rel, s) in &self.entries {
            use std::fmt::Write;
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{}\t{}",
                s.size, s.mtime_ns, s.ino, s.digest, rel
            );
        }
        write_atomic(path, text.as_bytes())
            .map_err(|e| CacheError::io("writing the stat cache", path, e))
    }
}

/// The digest of the manifest of `root` (a folder, walked recursively, or a single file), and
/// the manifest itself when it had to be (re)built. Files whose (size, mtime, inode) match the
/// stat cache in `stat_file` keep their digest; the rest are hashed (all of them if `verify`).
/// When nothing changed, the digest comes straight from the stat cache.
pub fn manifest(
    root: &Path,
    stat_file: &Path,
    verify: bool,
    build: bool,
    on_hashed: &(dyn Fn(u64, u64) + Sync),
) -> Result<(String, Option<Manifest>), CacheError> {
    let found = walk(root)?;
    let cache = if verify {
        None
    } else {
        StatCache::read(stat_file)
    };
    let same = |f: &Found, s: &Stat| s.size == f.size && s.mtime_ns == f.mtime_ns && s.ino == f.ino;
    if let Some(c) = &cache
        && !build
        && c.entries.len() == found.len()
        && c.entries
            .iter()
            .zip(&found)
            .all(|((rel, s), f)| *rel == f.rel && same(f, s))
    {
        return Ok((c.manifest.clone(), None));
    }
    let cached = cache.as_ref().map(|c| c.entries.as_slice()).unwrap_or(&[]);
    let known = known_stats(&found, cached, same);
    let hashed = hash_stale(&found, &known, on_hashed)?;
    let mut fresh = hashed.into_iter();
    let entries: Vec<(String, Stat)> = found
        .iter()
        .zip(&known)
        .map(|(f, k)| {
            let digest = match k {
                Some(s) => s.digest.clone(),
                None => fresh.next().expect("one digest per stale file"),
            };
            (
                f.rel.clone(),
                Stat {
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    ino: f.ino,
                    digest,
                },
            )
        })
        .collect();
    let manifest = Manifest {
        entries: entries
            .iter()
            .map(|(rel, s)| FileEntry {
                path: rel.clone(),
                size: s.size,
                digest: s.digest.clone(),
            })
            .collect(),
    };
    let digest = manifest.digest();
    let new_cache = StatCache {
        manifest: digest.clone(),
        entries,
    };
    if cache
        .as_ref()
        .is_none_or(|c| c.manifest != new_cache.manifest || c.entries != new_cache.entries)
    {
        new_cache.write(stat_file)?;
    }
    Ok((digest, Some(manifest)))
}

/// For each walked file (sorted), its stat-cache entry when the file is unchanged since it was
/// hashed (a merge-join of the two sorted lists).
fn known_stats<'c>(
    found: &[Found],
    cached: &'c [(String, Stat)],
    same: impl Fn(&Found, &Stat) -> bool,
) -> Vec<Option<&'c Stat>> {
    let mut known = Vec::with_capacity(found.len());
    let mut j = 0;
    for f in found {
        while j < cached.len() && cached[j].0 < f.rel {
            j += 1;
        }
        known.push(
            (j < cached.len() && cached[j].0 == f.rel && same(f, &cached[j].1))
                .then(|| &cached[j].1),
        );
    }
    known
}

/// The digests of the files `known` has no entry for, in order, hashed on every core.
fn hash_stale(
    found: &[Found],
    known: &[Option<&Stat>],
    on_hashed: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<String>, CacheError> {
    let stale: Vec<usize> = (0..found.len()).filter(|&i| known[i].is_none()).collect();
    let total = stale.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    stale
        .par_iter()
        .map(|&i| {
            let digest = hash_file(&found[i].abs)?;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_multiple_of(256) || n == total {
                on_hashed(n, total);
            }
            Ok(digest)
        })
        .collect()
}

pub fn hash_file(path: &Path) -> Result<String, CacheError> {
    let mut hasher = blake3::Hasher::new();
    let mut file =
        std::fs::File::open(path).map_err(|e| CacheError::io("reading input file", path, e))?;
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| CacheError::io("reading input file", path, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// All regular files under `root` (following file symlinks, not directory symlinks), sorted.
fn walk(root: &Path) -> Result<Vec<Found>, CacheError> {
    let meta = std::fs::metadata(root).map_err(|e| CacheError::io("reading input", root, e))?;
    let mut found = Vec::new();
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
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
        let entries =
            std::fs::read_dir(&dir).map_err(|e| CacheError::io("listing input folder", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| CacheError::io("listing input folder", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // editor and OS litter (.DS_Store, ._x) is not data
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let abs = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| CacheError::io("reading input", &abs, e))?;
            if ft.is_dir() {
                stack.push((abs, rel));
                continue;
            }
            // Follows file symlinks (a dangling one is reported); plain files are stat'ed relative
            // to the open folder, which is cheaper than a full path lookup.
            let meta = if ft.is_symlink() {
                std::fs::metadata(&abs)
            } else {
                entry.metadata()
            }
            .map_err(|e| CacheError::io("reading input file", &abs, e))?;
            if meta.is_dir() {
                continue; // directory symlinks are not followed (no loops)
            }
            found.push(Found {
                rel,
                abs,
                size: meta.size(),
                mtime_ns: mtime_ns(&meta),
                ino: meta.ino(),
            });
        }
    }
    found.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

/// A file's modification time in nanoseconds.
pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}
