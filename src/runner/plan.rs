//! Planning: a stage's fingerprint from its parameters, code version, seed, upstream digests and
//! input files; whether it is fresh or stale, and why.

use std::collections::{BTreeMap, BTreeSet};

use crate::cache::{CACHE_FORMAT, CacheError, Change, Fingerprint, Lookup};
use crate::config::StageKind;
use crate::progress::Progress;

use super::{RunOptions, Runner};

/// A stage's state as planning sees it (for `status`, `why`, `--dry-run`).
#[derive(Debug, Clone)]
pub enum PlanState {
    /// Published and intact.
    Fresh { key: String },
    /// Must run; `changes` says why (empty when the stage never ran in this pipeline).
    Stale {
        key: String,
        changes: Vec<String>,
        first_run: bool,
    },
    /// Not in the local cache, but the remote cache has it: it would be downloaded.
    RemoteHit { key: String },
    /// Its key depends on an upstream output that must be computed first.
    Pending { upstream: Vec<String> },
    /// This build cannot run the stage (or its inputs could not be read).
    Unavailable { reason: String },
}

#[derive(Debug, Clone)]
pub struct PlanEntry {
    pub index: usize,
    pub state: PlanState,
}

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// The stage's setup is wrong (e.g. its input folder does not exist): what and what to do.
    #[error("{0}")]
    Setup(String),
    #[error("stage kind `{0}` is not available in this build of galaxy-pipe")]
    NotImplemented(StageKind),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl<'a> Runner<'a> {
    /// The fingerprint of stage `i` given its upstream output digests.
    pub(super) fn fingerprint(
        &self,
        i: usize,
        upstream: &BTreeMap<String, String>,
        verify_inputs: bool,
        progress: &Progress,
    ) -> Result<Fingerprint, FingerprintError> {
        let spec = &self.pipeline.stages[i];
        let stage = self
            .registry
            .stage(spec.kind)
            .ok_or(FingerprintError::NotImplemented(spec.kind))?;
        if let Some(problem) = stage.check_setup(spec) {
            return Err(FingerprintError::Setup(problem));
        }
        let mut files = BTreeMap::new();
        for input in stage.file_inputs(spec) {
            let label = format!("hashing {}", input.group);
            let on_hashed = |done: u64, total: u64| {
                if done == total.min(256) || done == total {
                    progress.start(total, "files", &label);
                }
                progress.set_position(done);
            };
            let digest = self
                .store
                .input_manifest(&input.path, verify_inputs, &on_hashed)?;
            files.insert(input.group, digest);
        }
        let fp = Fingerprint {
            cache_format: CACHE_FORMAT,
            kind: spec.kind.name().to_string(),
            code_version: spec.kind.decl().code_version,
            params: spec.params.canonical(),
            seed: spec.kind.uses_seed().then_some(self.pipeline.seed),
            inputs: upstream.clone(),
            files,
        };
        Ok(fp)
    }

    /// Explain a fingerprint change in words, expanding input-file changes into file names.
    pub fn explain(&self, new: &Fingerprint, old: &Fingerprint) -> Vec<String> {
        new.diff(old)
            .into_iter()
            .map(|c| match c {
                Change::Code(s) | Change::Param(s) | Change::Upstream(s) => s,
                Change::Files { group, old, new } => {
                    match (
                        self.store.stored_manifest(&old),
                        self.store.stored_manifest(&new),
                    ) {
                        (Some(o), Some(n)) => {
                            let (added, removed, changed) = n.diff(&o);
                            let mut parts = Vec::new();
                            for (what, list) in [
                                ("changed", &changed),
                                ("added", &added),
                                ("removed", &removed),
                            ] {
                                if !list.is_empty() {
                                    let shown: Vec<&str> =
                                        list.iter().take(5).map(String::as_str).collect();
                                    let more = if list.len() > 5 {
                                        format!(", … {} more", list.len() - 5)
                                    } else {
                                        String::new()
                                    };
                                    parts.push(format!(
                                        "{} {what} ({}{more})",
                                        list.len(),
                                        shown.join(", ")
                                    ));
                                }
                            }
                            format!("input files `{group}`: {}", parts.join("; "))
                        }
                        _ => format!("input files `{group}` changed"),
                    }
                }
            })
            .collect()
    }

    /// Plan the selected stages without running anything.
    pub fn plan(&self, selected: &BTreeSet<usize>, opts: &RunOptions) -> Vec<PlanEntry> {
        let mut digests: BTreeMap<usize, String> = BTreeMap::new();
        let mut entries = Vec::new();
        let needed = self.graph.with_ancestors(selected);
        let progress = Progress::hidden();
        for i in self.graph.order().filter(|i| needed.contains(i)) {
            let (state, digest) = self.plan_one(i, &digests, opts, &progress);
            if let Some(d) = digest {
                digests.insert(i, d);
            }
            if selected.contains(&i) {
                entries.push(PlanEntry { index: i, state });
            }
        }
        entries
    }

    /// One stage's plan state, and its output digest when it is fresh.
    fn plan_one(
        &self,
        i: usize,
        digests: &BTreeMap<usize, String>,
        opts: &RunOptions,
        progress: &Progress,
    ) -> (PlanState, Option<String>) {
        let spec = &self.pipeline.stages[i];
        let ups = self.graph.upstream(i);
        let missing: Vec<String> = ups
            .iter()
            .filter(|u| !digests.contains_key(u))
            .map(|u| self.pipeline.stages[*u].id.clone())
            .collect();
        if !missing.is_empty() {
            return (PlanState::Pending { upstream: missing }, None);
        }
        let upstream = ups
            .iter()
            .map(|u| (self.pipeline.stages[*u].id.clone(), digests[u].clone()))
            .collect();
        let fp = match self.fingerprint(i, &upstream, opts.verify_inputs, progress) {
            Ok(fp) => fp,
            Err(e) => {
                return (
                    PlanState::Unavailable {
                        reason: e.to_string(),
                    },
                    None,
                );
            }
        };
        let key = fp.key();
        let forced = opts.force_all || opts.force.iter().any(|f| f == &spec.id);
        let found = match self.store.peek(&key, opts.verify) {
            Lookup::Valid(a) => Some(a.digest),
            Lookup::Missing | Lookup::Corrupt(_) => None,
        };
        if let Some(digest) = &found
            && !forced
        {
            return (PlanState::Fresh { key }, Some(digest.clone()));
        }
        if !forced && self.remote.is_some_and(|r| r.has(&key).unwrap_or(false)) {
            return (PlanState::RemoteHit { key }, None);
        }
        let last = self.store.last_fingerprint(&self.pipeline.path, &spec.id);
        let (changes, first_run) = match &last {
            _ if forced => (vec!["forced (--force)".to_string()], false),
            Some(old) if old.key() == key => (
                vec![
                    "same fingerprint as last time, but its artifact is gone or damaged"
                        .to_string(),
                ],
                false,
            ),
            Some(old) => (self.explain(&fp, old), false),
            None => (Vec::new(), true),
        };
        (
            PlanState::Stale {
                key,
                changes,
                first_run,
            },
            None,
        )
    }
}
