//! The job description a cluster job computes from: what `galaxy-pipe compute-job` needs to
//! rebuild the [`Job`] on a node (the stage, its parameters as they entered the key, its input
//! artifact folders, the cache), as JSON beside the job's script and log. Parameters travel as
//! the key's canonical JSON, so editing the pipeline file while a job waits in the queue does not
//! change what it computes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Job;
use crate::cache::{Fingerprint, Store};
use crate::config::StageSpec;
use crate::kind::KindCatalog;
use crate::stages::{Input, Registry};

/// Layout version of the job description.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct JobFile {
    pub format: u32,
    /// The cache the artifact is published into (absolute: the node sees the same path).
    pub cache_dir: PathBuf,
    pub stage: String,
    pub kind: String,
    /// Where the stage's relative path parameters resolve.
    pub base_dir: PathBuf,
    /// The key's fingerprint: parameters, seed, input digests, input-file manifests.
    pub fingerprint: Fingerprint,
    /// Upstream stage id → (its kind, its artifact folder).
    pub inputs: BTreeMap<String, (String, PathBuf)>,
    /// `--force`: recompute and replace the key even if it is published.
    #[serde(default)]
    pub replace: bool,
}

/// `path` made absolute against this process's folder: the job starts in another.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl JobFile {
    /// The description of `job`, publishing into the cache at `cache_dir` (absolute).
    pub fn of(job: &Job, cache_dir: &Path) -> JobFile {
        JobFile {
            format: FORMAT,
            cache_dir: cache_dir.to_path_buf(),
            stage: job.spec.id.clone(),
            kind: job.spec.kind.name().to_string(),
            base_dir: absolute(&job.spec.base_dir),
            fingerprint: job.fingerprint.clone(),
            inputs: job
                .inputs
                .iter()
                .map(|(id, input)| {
                    (
                        id.clone(),
                        (input.kind.name().to_string(), absolute(&input.dir)),
                    )
                })
                .collect(),
            replace: job.replace,
        }
    }

    pub fn read(path: &Path) -> Result<JobFile, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let file: JobFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a job description: {e}", path.display()))?;
        if file.format != FORMAT {
            let got = file.format;
            return Err(format!(
                "{}: job format {got}, this galaxy-pipe reads {FORMAT} (same build on the nodes?)",
                path.display()
            ));
        }
        Ok(file)
    }

    /// The stage as its key declares it, parsed by this build's kinds.
    pub fn spec(&self, registry: &Registry) -> Result<StageSpec, String> {
        let kind = registry
            .find(&self.kind)
            .ok_or_else(|| format!("stage kind `{}` is not in this build", self.kind))?;
        let params = kind
            .parse_json(self.fingerprint.params.clone())
            .map_err(|e| format!("parameters of `{}`: {e}", self.stage))?;
        Ok(StageSpec::detached(
            self.stage.clone(),
            kind.kind(),
            params,
            self.base_dir.clone(),
        ))
    }

    /// The [`Job`] for `spec` (from [`JobFile::spec`]), its input-file manifests read from `store`.
    pub fn job<'a>(
        &self,
        spec: &'a StageSpec,
        store: &Store,
        registry: &Registry,
    ) -> Result<Job<'a>, String> {
        let mut files = BTreeMap::new();
        for (group, digest) in &self.fingerprint.files {
            let manifest = store.stored_manifest(digest).ok_or_else(|| {
                format!(
                    "the manifest of `{}`'s input files `{group}` is not in the cache",
                    self.stage
                )
            })?;
            files.insert(group.clone(), Arc::new(manifest));
        }
        let mut inputs = BTreeMap::new();
        for (id, (kind, dir)) in &self.inputs {
            let kind = registry
                .find(kind)
                .ok_or_else(|| format!("input kind `{kind}` is not in this build"))?
                .kind();
            inputs.insert(
                id.clone(),
                Input {
                    kind,
                    dir: dir.clone(),
                },
            );
        }
        Ok(Job {
            spec,
            fingerprint: self.fingerprint.clone(),
            seed: self.fingerprint.seed,
            inputs,
            files,
            replace: self.replace,
        })
    }
}
