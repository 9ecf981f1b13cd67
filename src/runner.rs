//! Drives a pipeline through the cache: fingerprints each stage, reuses what is published,
//! runs what is stale (independent stages in parallel), and records the run.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use crate::cache::{
    Artifact, CACHE_FORMAT, CacheError, Change, Fingerprint, Lookup, StageReport, Store,
};
use crate::config::{Pipeline, StageKind};
use crate::graph::Graph;
use crate::progress::{Bars, Progress};
use crate::records::{Outcome, StageRecord};
use crate::stages::{Input, Registry, StageContext};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub until: Option<String>,
    pub only: Vec<String>,
    pub force: Vec<String>,
    pub force_all: bool,
    pub jobs: usize,
    pub dry_run: bool,
    /// Re-hash every input file instead of trusting the stat cache.
    pub verify_inputs: bool,
    /// Re-hash every reused artifact instead of trusting unchanged stats.
    pub verify: bool,
}

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

pub struct Runner<'a> {
    pub pipeline: &'a Pipeline,
    pub graph: &'a Graph,
    pub store: &'a Store,
    pub registry: &'a dyn Registry,
    pub bars: Bars,
}

#[derive(Debug, thiserror::Error)]
enum FingerprintError {
    #[error("stage kind `{0}` is not available in this build of galaxy-pipe")]
    NotImplemented(StageKind),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl<'a> Runner<'a> {
    /// The fingerprint of stage `i` given its upstream output digests.
    fn fingerprint(
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
        let mut files = BTreeMap::new();
        for input in stage.file_inputs(spec) {
            let label = format!("hashing {}", input.group);
            let on_hashed = |done: u64, total: u64| {
                if done == total.min(256) || done == total {
                    progress.start(total, &label);
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
            code_version: stage.code_version(),
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
        let needed = self.needed(selected);
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

    /// Selected stages plus every ancestor whose output they need.
    fn needed(&self, selected: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut needed = selected.clone();
        let mut stack: Vec<usize> = selected.iter().copied().collect();
        while let Some(i) = stack.pop() {
            for u in self.graph.upstream(i) {
                if needed.insert(u) {
                    stack.push(u);
                }
            }
        }
        needed
    }

    /// Run the selected stages. Unselected ancestors are reused if cached, never run.
    pub fn run(&self, selected: &BTreeSet<usize>, opts: &RunOptions) -> Vec<StageRecord> {
        let swept = self.store.sweep();
        if swept > 0 {
            self.bars.println(&format!(
                "swept {swept} orphaned temp folder(s) from an interrupted run"
            ));
        }
        let needed = self.needed(selected);
        let order: Vec<usize> = self.graph.order().filter(|i| needed.contains(i)).collect();
        let mut artifacts: BTreeMap<usize, Artifact> = BTreeMap::new();
        let mut records: BTreeMap<usize, StageRecord> = BTreeMap::new();
        let mut blocked: BTreeMap<usize, String> = BTreeMap::new();
        let jobs = opts.jobs.max(1);
        let (tx, rx) = mpsc::channel::<(usize, StageRecord, Option<Artifact>)>();
        let mut running = BTreeSet::new();

        std::thread::scope(|scope| {
            let mut pending: Vec<usize> = order.clone();
            loop {
                // Start every stage whose inputs are resolved, up to `jobs` at once.
                let mut idx = 0;
                while idx < pending.len() {
                    let i = pending[idx];
                    let ups = self.graph.upstream(i);
                    if let Some(bad) = ups.iter().find(|u| blocked.contains_key(u)) {
                        let why =
                            format!("input `{}` is not available", self.pipeline.stages[*bad].id);
                        blocked.insert(i, why.clone());
                        if selected.contains(&i) {
                            // In a dry run a blocked stage is one that would run after its inputs.
                            let rec = if opts.dry_run {
                                let mut r = self.record(i, None, Outcome::Miss, 0.0, None);
                                r.notes.push(format!(
                                    "would run after `{}`",
                                    self.pipeline.stages[*bad].id
                                ));
                                r
                            } else {
                                self.record(i, None, Outcome::Skipped, 0.0, Some(why))
                            };
                            self.summary(&rec);
                            records.insert(i, rec);
                        }
                        pending.remove(idx);
                        continue;
                    }
                    if !ups.iter().all(|u| artifacts.contains_key(u)) || running.len() >= jobs {
                        idx += 1;
                        continue;
                    }
                    pending.remove(idx);
                    let inputs: BTreeMap<String, Artifact> = ups
                        .iter()
                        .map(|u| (self.pipeline.stages[*u].id.clone(), artifacts[u].clone()))
                        .collect();
                    let reuse_only = !selected.contains(&i);
                    let tx = tx.clone();
                    running.insert(i);
                    scope.spawn(move || {
                        let (rec, art) = self.execute(i, inputs, opts, reuse_only);
                        let (rec, art) = if opts.dry_run || reuse_only {
                            (rec, art)
                        } else {
                            self.export(i, rec, art)
                        };
                        let _ = tx.send((i, rec, art));
                    });
                }
                if running.is_empty() {
                    break;
                }
                let (i, rec, art) = rx.recv().expect("a worker always reports");
                running.remove(&i);
                match art {
                    Some(a) => {
                        artifacts.insert(i, a);
                    }
                    None => {
                        blocked.insert(i, rec.error.clone().unwrap_or_default());
                    }
                }
                if selected.contains(&i) {
                    self.summary(&rec);
                    records.insert(i, rec);
                } else if let Some(err) = &rec.error {
                    self.bars.println(&format!("error: {err}"));
                }
            }
        });
        // Report in pipeline order.
        order.iter().filter_map(|i| records.remove(i)).collect()
    }

    fn record(
        &self,
        i: usize,
        key: Option<String>,
        outcome: Outcome,
        seconds: f64,
        error: Option<String>,
    ) -> StageRecord {
        let spec = &self.pipeline.stages[i];
        StageRecord {
            id: spec.id.clone(),
            kind: spec.kind.name().into(),
            key,
            outcome,
            seconds,
            error,
            metrics: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    fn summary(&self, rec: &StageRecord) {
        let key = rec.key.as_deref().map(|k| &k[..12]).unwrap_or("-");
        let mut line = format!(
            "{:>8}  {:<14} {:>8.2}s  {key}",
            rec.outcome.word(),
            rec.id,
            rec.seconds
        );
        for note in &rec.notes {
            line.push_str(&format!("\n          note: {note}"));
        }
        if let Some(e) = &rec.error {
            line.push_str(&format!("\n          error: {e}"));
        }
        self.bars.println(&line);
    }

    /// Resolve one stage: reuse its artifact, or (unless `reuse_only`) compute and publish it.
    fn execute(
        &self,
        i: usize,
        inputs: BTreeMap<String, Artifact>,
        opts: &RunOptions,
        reuse_only: bool,
    ) -> (StageRecord, Option<Artifact>) {
        let spec = &self.pipeline.stages[i];
        let start = Instant::now();
        let progress = self.bars.stage(&spec.id);
        let fail = |key: Option<String>, msg: String| {
            (
                self.record(
                    i,
                    key,
                    Outcome::Failed,
                    start.elapsed().as_secs_f64(),
                    Some(msg),
                ),
                None,
            )
        };

        let upstream: BTreeMap<String, String> = inputs
            .iter()
            .map(|(id, a)| (id.clone(), a.digest.clone()))
            .collect();
        let fp = match self.fingerprint(i, &upstream, opts.verify_inputs, &progress) {
            Ok(x) => x,
            Err(e) => return fail(None, format!("stage `{}`: {}", spec.id, chain(&e))),
        };
        let key = fp.key();
        tracing::debug!(stage = %spec.id, %key, fingerprint = %fp.canonical_json(), "fingerprint");
        let forced = !reuse_only && (opts.force_all || opts.force.iter().any(|f| f == &spec.id));

        if !forced {
            match self.reuse(&key, &spec.id, opts.verify) {
                Ok(Some(a)) => return self.reused(i, &fp, a, start, opts.dry_run),
                Ok(None) => {}
                Err(e) => return fail(Some(key), e),
            }
        }
        if reuse_only {
            let msg = format!(
                "input `{}` is not cached (run it first, or drop --only)",
                spec.id
            );
            return (
                self.record(i, Some(key), Outcome::Skipped, 0.0, Some(msg)),
                None,
            );
        }
        if opts.dry_run {
            return (self.record(i, Some(key), Outcome::Miss, 0.0, None), None);
        }

        // Compute under the key's lock; another run computing the same key is waited for.
        let lock = match self.store.lock(&key, || {
            self.bars.println(&format!(
                "waiting: another run is computing `{}` (key {}) …",
                spec.id,
                &key[..12]
            ));
        }) {
            Ok(l) => l,
            Err(e) => return fail(Some(key), e.to_string()),
        };
        let waited = matches!(lock, crate::cache::Acquired::AfterWaiting(_));
        let _lock = lock.into_lock();
        if waited && !opts.force_all {
            // The other run may have published it while we waited.
            if let Ok(Some(a)) = self.reuse(&key, &spec.id, opts.verify) {
                return self.reused(i, &fp, a, start, false);
            }
        }
        let staging = match self.store.staging(&key) {
            Ok(s) => s,
            Err(e) => return fail(Some(key), e.to_string()),
        };
        let work_dir = match self.store.work_dir(&key) {
            Ok(w) => w,
            Err(e) => return fail(Some(key), e.to_string()),
        };
        let stage = self
            .registry
            .stage(spec.kind)
            .expect("fingerprint checked availability");
        // The stage reads its input-file manifests (stored when they were built).
        let mut manifests = BTreeMap::new();
        for (group, digest) in &fp.files {
            match self.store.stored_manifest(digest) {
                Some(m) => {
                    manifests.insert(group.clone(), Arc::new(m));
                }
                None => {
                    return fail(
                        Some(key),
                        format!(
                            "stage `{}`: the manifest of its input files `{group}` is missing from the cache; run again",
                            spec.id
                        ),
                    );
                }
            }
        }
        let files = manifests;
        let ctx = StageContext {
            spec,
            seed: self.pipeline.seed,
            inputs: inputs
                .iter()
                .map(|(id, a)| {
                    (
                        id.clone(),
                        Input {
                            kind: self.kind_of(id),
                            dir: a.out_dir.clone(),
                        },
                    )
                })
                .collect(),
            out_dir: staging.out_dir.clone(),
            files,
            work_dir,
            progress: &progress,
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(&ctx)));
        let outcome = match result {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                return fail(
                    Some(key),
                    format!("stage `{}` ({}): {}", spec.id, spec.kind, chain(&e)),
                );
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                return fail(
                    Some(key),
                    format!("stage `{}` ({}) crashed: {msg}", spec.id, spec.kind),
                );
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let report = StageReport {
            metrics: outcome.metrics.clone(),
            notes: outcome.notes.clone(),
            seconds,
        };
        let artifact = match self.store.publish(staging, &fp, &report) {
            Ok(a) => a,
            Err(e) => return fail(Some(key), format!("stage `{}`: {e}", spec.id)),
        };
        if let Err(e) = self.store.record_last(&self.pipeline.path, &spec.id, &fp) {
            tracing::warn!("{e}");
        }
        let mut rec = self.record(i, Some(key), Outcome::Ran, seconds, None);
        rec.metrics = outcome.metrics;
        rec.notes = outcome.notes;
        (rec, Some(artifact))
    }

    /// Copy a stage's exported files (e.g. the submission CSV) to their destinations, atomically,
    /// after it ran or was reused; a destination already holding the same bytes is left alone.
    fn export(
        &self,
        i: usize,
        mut rec: StageRecord,
        art: Option<Artifact>,
    ) -> (StageRecord, Option<Artifact>) {
        let Some(a) = &art else { return (rec, art) };
        let spec = &self.pipeline.stages[i];
        let Some(stage) = self.registry.stage(spec.kind) else {
            return (rec, art);
        };
        for (file, dest) in stage.exports(spec) {
            let src = a.out_dir.join(&file);
            let result = std::fs::read(&src).and_then(|bytes| {
                if std::fs::read(&dest).is_ok_and(|old| old == bytes) {
                    return Ok(false);
                }
                crate::cache::write_atomic(&dest, &bytes).map(|_| true)
            });
            match result {
                Ok(true) => rec.notes.push(format!("exported {}", dest.display())),
                Ok(false) => {}
                Err(e) => {
                    rec.outcome = Outcome::Failed;
                    rec.error = Some(format!(
                        "stage `{}`: exporting {} to {}: {e}",
                        spec.id,
                        file,
                        dest.display()
                    ));
                    return (rec, None);
                }
            }
        }
        (rec, art)
    }

    /// A published artifact for `key`, or None; damage is reported and the artifact discarded.
    fn reuse(&self, key: &str, id: &str, verify: bool) -> Result<Option<Artifact>, String> {
        match self.store.lookup(key, verify) {
            Lookup::Valid(a) => Ok(Some(*a)),
            Lookup::Missing => Ok(None),
            Lookup::Corrupt(reason) => {
                self.bars.println(&format!(
                    "warning: cached output of `{id}` is damaged ({reason}); recomputing"
                ));
                Ok(None)
            }
        }
    }

    fn reused(
        &self,
        i: usize,
        fp: &Fingerprint,
        a: Artifact,
        start: Instant,
        dry_run: bool,
    ) -> (StageRecord, Option<Artifact>) {
        let spec = &self.pipeline.stages[i];
        if !dry_run && let Err(e) = self.store.record_last(&self.pipeline.path, &spec.id, fp) {
            tracing::warn!("{e}");
        }
        let outcome = if dry_run {
            Outcome::Hit
        } else {
            Outcome::Cached
        };
        let mut rec = self.record(
            i,
            Some(a.key.clone()),
            outcome,
            start.elapsed().as_secs_f64(),
            None,
        );
        rec.metrics = a.report.metrics.clone();
        (rec, Some(a))
    }

    fn kind_of(&self, id: &str) -> StageKind {
        self.pipeline
            .stage(id)
            .map(|s| s.kind)
            .expect("inputs were validated")
    }
}

/// An error and its sources, joined with ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
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
