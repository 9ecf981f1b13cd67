//! The content-addressed store under `cache/`:
//!
//! ```text
//! cache/
//!   objects/<key>/{out/, fingerprint.json, manifest.json, result.json}   published artifacts
//!   tmp/<key>.<pid>.<n>/        a stage writing (renamed into objects/ when complete)
//!   work/<key>/                 a stage's resumable work area (checkpoints), kept across kills
//!   locks/<key>.lock            per-key flock
//!   inputs/stat-<id>.json       stat cache of an input file group
//!   inputs/manifest-<digest>.json  input file manifests (for `why`)
//!   index/<pipeline>/<stage>.json  the last fingerprint of each stage (for `status`/`why`)
//!   runs/<time>-<pid>.json      run records
//! ```

mod atomic;
pub mod files;
pub mod fingerprint;
pub mod lock;
pub mod remote;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub use atomic::write_atomic;

pub use files::Manifest;
use files::mtime_ns;
pub use fingerprint::{CACHE_FORMAT, Change, Fingerprint};
pub use lock::{Acquired, KeyLock};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

impl CacheError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        CacheError::Io(crate::io_error::IoError::new(what, path, source))
    }
}

/// One output file of a published artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    pub digest: String,
    /// Modification time at publish; a file whose stat changed is re-hashed on use.
    pub mtime_ns: i128,
}

/// `manifest.json` of a published artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputManifest {
    /// Content digest of all outputs: what downstream fingerprints depend on.
    pub digest: String,
    pub files: Vec<OutputFile>,
}

/// `result.json`: what a stage reported besides files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub metrics: BTreeMap<String, f64>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// A published, verified artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub key: String,
    /// Folder holding the stage's output files.
    pub out_dir: PathBuf,
    pub digest: String,
    pub report: StageReport,
    /// What was hashed into the key (parameters with defaults, inputs, seed).
    pub fingerprint: Fingerprint,
}

/// The result of looking a key up.
pub enum Lookup {
    Missing,
    Valid(Box<Artifact>),
    /// Present but damaged; it has been moved aside and must be recomputed.
    Corrupt(String),
}

/// A stage's temporary output area; removed on drop unless published.
pub struct Staging {
    pub dir: PathBuf,
    pub out_dir: PathBuf,
    published: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Store {
    root: PathBuf,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Open (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        for sub in ["objects", "tmp", "work", "locks", "inputs", "index", "runs"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| CacheError::io("creating cache folder", &dir, e))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    /// The identity (inode) of the published object of `key`: a new publish of the key, here
    /// or by a cluster job, changes it.
    pub fn object_stamp(&self, key: &str) -> Option<u64> {
        std::fs::metadata(self.object_dir(key))
            .ok()
            .map(|m| m.ino())
    }

    fn object_dir(&self, key: &str) -> PathBuf {
        self.root.join("objects").join(key)
    }

    /// Look a key up, verifying its files: sizes always, digests of any file whose mtime
    /// changed since publishing (or of every file when `verify` is set).
    pub fn lookup(&self, key: &str, verify: bool) -> Lookup {
        let dir = self.object_dir(key);
        match self.peek(key, verify) {
            Lookup::Corrupt(reason) => {
                self.quarantine(&dir, key);
                Lookup::Corrupt(reason)
            }
            other => other,
        }
    }

    /// Like [`Store::lookup`], but leaves a damaged object where it is (for planning).
    pub fn peek(&self, key: &str, verify: bool) -> Lookup {
        let dir = self.object_dir(key);
        if !dir.exists() {
            return Lookup::Missing;
        }
        match self.check(&dir, key, verify) {
            Ok(artifact) => Lookup::Valid(Box::new(artifact)),
            Err(reason) => Lookup::Corrupt(reason),
        }
    }

    fn check(&self, dir: &Path, key: &str, verify: bool) -> Result<Artifact, String> {
        let read_json = |name: &str| -> Result<Vec<u8>, String> {
            std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        let manifest: OutputManifest = serde_json::from_slice(&read_json("manifest.json")?)
            .map_err(|e| format!("manifest.json is garbled: {e}"))?;
        let fp: Fingerprint = serde_json::from_slice(&read_json("fingerprint.json")?)
            .map_err(|e| format!("fingerprint.json is garbled: {e}"))?;
        if fp.key() != key {
            return Err("fingerprint.json does not hash to this key".into());
        }
        let report: StageReport = serde_json::from_slice(&read_json("result.json")?)
            .map_err(|e| format!("result.json is garbled: {e}"))?;
        let out_dir = dir.join("out");
        let present = list_files(&out_dir).map_err(|e| format!("listing outputs: {e}"))?;
        let expected: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        if let Some(extra) = present.iter().find(|p| !expected.contains(p.as_str())) {
            return Err(format!("unexpected file {extra}"));
        }
        for file in &manifest.files {
            let path = out_dir.join(&file.path);
            let meta = std::fs::metadata(&path).map_err(|_| format!("{} is missing", file.path))?;
            if meta.size() != file.size {
                return Err(format!(
                    "{} has {} bytes, expected {}",
                    file.path,
                    meta.size(),
                    file.size
                ));
            }
            if verify || mtime_ns(&meta) != file.mtime_ns {
                let digest = files::hash_file(&path).map_err(|e| e.to_string())?;
                if digest != file.digest {
                    return Err(format!("{} does not match its digest", file.path));
                }
            }
        }
        if output_digest(&manifest.files) != manifest.digest {
            return Err("manifest.json digest does not match its files".into());
        }
        Ok(Artifact {
            key: key.to_string(),
            out_dir,
            digest: manifest.digest,
            report,
            fingerprint: fp,
        })
    }

    /// Move a damaged object out of the way (into tmp/, swept later).
    fn quarantine(&self, dir: &Path, key: &str) {
        let aside = self.root.join("tmp").join(format!(
            "{key}.corrupt.{}.{}",
            std::process::id(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::rename(dir, &aside).is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Take the lock for `key`, calling `on_wait` if another run holds it.
    pub fn lock(&self, key: &str, on_wait: impl FnMut()) -> Result<Acquired, CacheError> {
        let path = self.lock_path(key);
        KeyLock::acquire(&path, on_wait).map_err(|e| CacheError::io("locking", &path, e))
    }

    /// A fresh temp area for computing `key` (hold its lock).
    pub fn staging(&self, key: &str) -> Result<Staging, CacheError> {
        let dir = self.root.join("tmp").join(format!(
            "{key}.{}.{}",
            std::process::id(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        ));
        let out_dir = dir.join("out");
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| CacheError::io("creating temp folder", &out_dir, e))?;
        Ok(Staging {
            dir,
            out_dir,
            published: false,
        })
    }

    /// The persistent work area of `key` (checkpoints); removed after publishing.
    pub fn work_dir(&self, key: &str) -> Result<PathBuf, CacheError> {
        let dir = self.root.join("work").join(key);
        std::fs::create_dir_all(&dir)
            .map_err(|e| CacheError::io("creating work folder", &dir, e))?;
        Ok(dir)
    }

    /// Hash the outputs, write the fingerprint and report beside them, and rename the whole
    /// folder into `objects/<key>` (replacing a previous object of the same key).
    pub fn publish(
        &self,
        staging: Staging,
        fp: &Fingerprint,
        report: &StageReport,
    ) -> Result<Artifact, CacheError> {
        let manifest = self.seal(&staging)?;
        self.commit(staging, fp, report, manifest)
    }

    /// The manifest of a staging folder's outputs, hashed as [`Store::publish`] would (for a
    /// caller that must compare it with what it expected before committing).
    pub fn seal(&self, staging: &Staging) -> Result<OutputManifest, CacheError> {
        let files = hash_outputs(&staging.out_dir)?;
        Ok(OutputManifest {
            digest: output_digest(&files),
            files,
        })
    }

    /// Publish `staging` with the `manifest` [`Store::seal`] made of it.
    pub fn commit(
        &self,
        mut staging: Staging,
        fp: &Fingerprint,
        report: &StageReport,
        manifest: OutputManifest,
    ) -> Result<Artifact, CacheError> {
        let key = fp.key();
        let write = |name: &str, bytes: Vec<u8>| -> Result<(), CacheError> {
            let path = staging.dir.join(name);
            write_atomic(&path, &bytes).map_err(|e| CacheError::io("writing", &path, e))
        };
        write(
            "manifest.json",
            serde_json::to_vec_pretty(&manifest).expect("serialise"),
        )?;
        write(
            "fingerprint.json",
            serde_json::to_vec_pretty(fp).expect("serialise"),
        )?;
        write(
            "result.json",
            serde_json::to_vec_pretty(report).expect("serialise"),
        )?;
        atomic::sync_dir(&staging.out_dir)
            .map_err(|e| CacheError::io("syncing", &staging.out_dir, e))?;
        let target = self.object_dir(&key);
        if target.exists() {
            self.quarantine(&target, &key);
        }
        std::fs::rename(&staging.dir, &target)
            .map_err(|e| CacheError::io("publishing", &target, e))?;
        staging.published = true;
        let _ = atomic::sync_dir(&self.root.join("objects"));
        let _ = std::fs::remove_dir_all(self.root.join("work").join(&key));
        Ok(Artifact {
            key,
            out_dir: target.join("out"),
            digest: manifest.digest,
            report: report.clone(),
            fingerprint: fp.clone(),
        })
    }

    /// Remove temp folders no live run is writing (their key lock is free), work areas of keys
    /// that are already published (a kill between publishing and cleaning up), and lock files a
    /// killed run left behind. Work areas of unpublished keys stay: they hold checkpoints.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        if let Ok(work) = std::fs::read_dir(self.root.join("work")) {
            for entry in work.flatten() {
                let key = entry.file_name().to_string_lossy().into_owned();
                if self.object_dir(&key).is_dir()
                    && let Ok(Some(_lock)) = KeyLock::try_acquire(&self.lock_path(&key))
                    && std::fs::remove_dir_all(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        if let Ok(locks) = std::fs::read_dir(self.root.join("locks")) {
            for entry in locks.flatten() {
                // Taking a free lock and dropping it removes its file; held locks are untouched.
                let _ = KeyLock::try_acquire(&entry.path());
            }
        }
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name.split('.').next().unwrap_or_default().to_string();
            let lock_path = self.lock_path(&key);
            if let Ok(Some(_lock)) = KeyLock::try_acquire(&lock_path) {
                // Nobody is computing this key: anything under tmp/ for it is an orphan.
                if std::fs::remove_dir_all(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// The manifest digest of an input file group, through the stat cache. The manifest itself
    /// is stored (`inputs/manifest-<digest>.json`) for stages that read it and for `why`.
    pub fn input_manifest(
        &self,
        root: &Path,
        verify: bool,
        on_hashed: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<String, CacheError> {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let id = blake3::hash(abs.to_string_lossy().as_bytes()).to_hex();
        let stat_file = self
            .root
            .join("inputs")
            .join(format!("stat-{}.txt", &id[..24]));
        let (mut digest, mut built) = files::manifest(root, &stat_file, verify, false, on_hashed)?;
        if built.is_none() && !self.manifest_path(&digest).exists() {
            // Unchanged files, but the stored manifest is gone: rebuild it from the stat cache.
            (digest, built) = files::manifest(root, &stat_file, verify, true, on_hashed)?;
        }
        if let Some(manifest) = built {
            let path = self.manifest_path(&digest);
            if !path.exists() {
                let bytes = serde_json::to_vec(&manifest).expect("serialise");
                write_atomic(&path, &bytes).map_err(|e| CacheError::io("writing", &path, e))?;
            }
        }
        Ok(digest)
    }

    fn manifest_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("inputs")
            .join(format!("manifest-{digest}.json"))
    }

    pub fn stored_manifest(&self, digest: &str) -> Option<Manifest> {
        let bytes = std::fs::read(self.manifest_path(digest)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn index_path(&self, pipeline: &Path, stage: &str) -> PathBuf {
        let abs = std::path::absolute(pipeline).unwrap_or_else(|_| pipeline.to_path_buf());
        let id = blake3::hash(abs.to_string_lossy().as_bytes()).to_hex();
        self.root
            .join("index")
            .join(&id[..24])
            .join(format!("{stage}.json"))
    }

    /// Remember the fingerprint a stage of a pipeline last ran or reused.
    pub fn record_last(
        &self,
        pipeline: &Path,
        stage: &str,
        fp: &Fingerprint,
    ) -> Result<(), CacheError> {
        let path = self.index_path(pipeline, stage);
        write_atomic(&path, &serde_json::to_vec_pretty(fp).expect("serialise"))
            .map_err(|e| CacheError::io("writing", &path, e))
    }

    pub fn last_fingerprint(&self, pipeline: &Path, stage: &str) -> Option<Fingerprint> {
        let bytes = std::fs::read(self.index_path(pipeline, stage)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Keys of all published objects.
    pub fn object_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(self.root.join("objects"))
            .map(|it| {
                it.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Delete one object under its lock (skipped if a run is using the key right now).
    pub fn remove_object(&self, key: &str) -> Result<bool, CacheError> {
        let lock_path = self.lock_path(key);
        let Some(_lock) = KeyLock::try_acquire(&lock_path)
            .map_err(|e| CacheError::io("locking", &lock_path, e))?
        else {
            return Ok(false);
        };
        let dir = self.object_dir(key);
        let aside = self
            .root
            .join("tmp")
            .join(format!("{key}.gc.{}", std::process::id()));
        std::fs::rename(&dir, &aside).map_err(|e| CacheError::io("removing", &dir, e))?;
        std::fs::remove_dir_all(&aside).map_err(|e| CacheError::io("removing", &aside, e))?;
        Ok(true)
    }

    /// Where the cluster jobs computing `key` keep their description, script and logs.
    pub fn log_dir(&self, key: &str) -> PathBuf {
        self.root.join("logs").join(key)
    }

    /// Remove the cluster jobs' logs of `key`.
    pub fn remove_logs(&self, key: &str) {
        let _ = std::fs::remove_dir_all(self.log_dir(key));
    }

    /// Bytes used by an object.
    pub fn object_size(&self, key: &str) -> u64 {
        fn size(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .map(|it| it.flatten().map(|e| size(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        size(&self.object_dir(key))
    }
}

/// Relative paths of all files under `dir`, sorted.
fn list_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type()?.is_dir() {
                stack.push((entry.path(), rel));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn hash_outputs(out_dir: &Path) -> Result<Vec<OutputFile>, CacheError> {
    use rayon::prelude::*;
    let names = list_files(out_dir).map_err(|e| CacheError::io("listing outputs", out_dir, e))?;
    names
        .par_iter()
        .map(|rel| {
            let path = out_dir.join(rel);
            let file = std::fs::File::open(&path)
                .map_err(|e| CacheError::io("reading output", &path, e))?;
            file.sync_all()
                .map_err(|e| CacheError::io("syncing output", &path, e))?;
            let meta = file
                .metadata()
                .map_err(|e| CacheError::io("reading output", &path, e))?;
            let digest = files::hash_file(&path)?;
            Ok(OutputFile {
                path: rel.clone(),
                size: meta.size(),
                digest,
                mtime_ns: mtime_ns(&meta),
            })
        })
        .collect()
}

pub(crate) fn output_digest(files: &[OutputFile]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update(&[0]);
        h.update(f.digest.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// An error and its sources, joined with ": " (each source once).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
