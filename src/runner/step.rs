//! One stage, in steps: [`Runner::decide`] (reuse what is published, or compute), the remote
//! cache, then the executor (compute into a staging folder from a prepared [`Job`] and publish,
//! here or as a cluster job). Every failure is a [`StepError`], turned into the stage's record in
//! one place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::remote::{Fetched, RemoteError};
use crate::cache::{Acquired, Artifact, CacheError, Fingerprint, Lookup};
use crate::executor::{ExecError, Job, Produced, Workshop};
use crate::progress::Progress;
use crate::records::{Outcome, StageRecord};
use crate::stages::Input;

use super::plan::FingerprintError;
use super::{RunOptions, Runner, chain};

/// Why a stage did not produce an artifact. Each variant's text is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("stage `{id}`: {}", chain(.source))]
    Fingerprint {
        id: String,
        source: FingerprintError,
    },
    /// The cache could not be read, locked or written.
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error(
        "stage `{id}`: the manifest of its input files `{group}` is missing from the cache; run again"
    )]
    MissingManifest { id: String, group: String },
    /// The executor produced no artifact (the stage failed, crashed, or its job did).
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("stage `{id}`: exporting {file} to {}: {source}", .dest.display())]
    Export {
        id: String,
        file: String,
        dest: PathBuf,
        source: std::io::Error,
    },
}

/// What the decide step found.
enum Decision {
    Reuse(Box<Artifact>),
    Compute,
}

impl Runner<'_> {
    /// Resolve one stage: reuse its artifact, or (unless `reuse_only`) compute, publish and
    /// export it.
    pub(super) fn resolve(
        &self,
        i: usize,
        inputs: BTreeMap<String, Artifact>,
        opts: &RunOptions,
        reuse_only: bool,
    ) -> (StageRecord, Option<Artifact>) {
        let start = Instant::now();
        let (rec, art) = match self.execute(i, &inputs, opts, reuse_only, start) {
            Ok(done) => done,
            Err((key, e)) => {
                let seconds = start.elapsed().as_secs_f64();
                let rec = self.record(i, key, Outcome::Failed, seconds, Some(e.to_string()));
                (rec, None)
            }
        };
        if opts.dry_run || reuse_only {
            return (rec, art);
        }
        self.export(i, rec, art)
    }

    /// Decide, then compute and publish when needed. An error carries the key when it is known.
    fn execute(
        &self,
        i: usize,
        inputs: &BTreeMap<String, Artifact>,
        opts: &RunOptions,
        reuse_only: bool,
        start: Instant,
    ) -> Result<(StageRecord, Option<Artifact>), (Option<String>, StepError)> {
        let spec = &self.pipeline.stages[i];
        let progress = self.bars.stage(&spec.id);
        let upstream = inputs
            .iter()
            .map(|(id, a)| (id.clone(), a.digest.clone()))
            .collect();
        let fp = self
            .fingerprint(i, &upstream, opts.verify_inputs, &progress)
            .map_err(|source| {
                let id = spec.id.clone();
                (None, StepError::Fingerprint { id, source })
            })?;
        let key = fp.key();
        tracing::debug!(stage = %spec.id, %key, fingerprint = %fp.canonical_json(), "fingerprint");
        if let Decision::Reuse(a) = self.decide(&spec.id, &key, opts, reuse_only) {
            return Ok(self.reused(i, &fp, *a, start, opts.dry_run));
        }
        if reuse_only {
            let msg = format!(
                "input `{}` is not cached (run it first, or drop --only)",
                spec.id
            );
            let rec = self.record(i, Some(key), Outcome::Skipped, 0.0, Some(msg));
            return Ok((rec, None));
        }
        if opts.dry_run {
            let remote_has = self.remote.is_some_and(|r| r.has(&key).unwrap_or(false));
            self.warn_if_remote_down();
            let outcome = if remote_has {
                Outcome::RemoteHit
            } else {
                Outcome::Miss
            };
            return Ok((self.record(i, Some(key), outcome, 0.0, None), None));
        }
        let job = self
            .job(i, fp, inputs)
            .map_err(|e| (Some(key.clone()), e))?;
        self.compute_and_publish(i, job, opts, &progress, start)
            .map_err(|e| (Some(key), e))
    }

    /// Reuse the published artifact of `key` unless the stage is forced.
    fn decide(&self, id: &str, key: &str, opts: &RunOptions, reuse_only: bool) -> Decision {
        let forced = !reuse_only && (opts.force_all || opts.force.iter().any(|f| f == id));
        if forced {
            return Decision::Compute;
        }
        match self.reuse(key, id, opts.verify) {
            Some(a) => Decision::Reuse(Box::new(a)),
            None => Decision::Compute,
        }
    }

    /// The job description of stage `i`: its inputs' folders and its input-file manifests.
    fn job<'s>(
        &'s self,
        i: usize,
        fingerprint: Fingerprint,
        inputs: &BTreeMap<String, Artifact>,
    ) -> Result<Job<'s>, StepError> {
        let spec = &self.pipeline.stages[i];
        let mut files = BTreeMap::new();
        for (group, digest) in &fingerprint.files {
            let manifest =
                self.store
                    .stored_manifest(digest)
                    .ok_or_else(|| StepError::MissingManifest {
                        id: spec.id.clone(),
                        group: group.clone(),
                    })?;
            files.insert(group.clone(), Arc::new(manifest));
        }
        let inputs = inputs
            .iter()
            .map(|(id, a)| {
                let kind = self.pipeline.stage(id).expect("inputs were validated").kind;
                let dir = a.out_dir.clone();
                (id.clone(), Input { kind, dir })
            })
            .collect();
        Ok(Job {
            spec,
            seed: spec.kind.uses_seed().then_some(self.pipeline.seed),
            fingerprint,
            inputs,
            files,
            replace: false,
        })
    }

    /// Compute under the key's lock (another run computing the same key is waited for, then
    /// its result reused), into a staging folder that is then published.
    fn compute_and_publish(
        &self,
        i: usize,
        job: Job,
        opts: &RunOptions,
        progress: &Progress,
        start: Instant,
    ) -> Result<(StageRecord, Option<Artifact>), StepError> {
        let spec = job.spec;
        let key = job.fingerprint.key();
        let lock = self.store.lock(&key, || {
            self.bars.println(&format!(
                "waiting: another run is computing `{}` (key {}) …",
                spec.id,
                &key[..12]
            ));
        })?;
        let waited = matches!(lock, Acquired::AfterWaiting(_));
        let lock = lock.into_lock();
        if waited
            && !opts.force_all
            && let Some(a) = self.reuse(&key, &spec.id, opts.verify)
        {
            return Ok(self.reused(i, &job.fingerprint, a, start, false));
        }
        let forced = opts.force_all || opts.force.iter().any(|f| f == &spec.id);
        let job = Job {
            replace: forced,
            ..job
        };
        if !forced && let Some(done) = self.fetch_remote(i, &job, start) {
            return Ok(done);
        }
        if opts.fetch_only {
            let msg = format!("`{}` is in neither the local nor the remote cache", spec.id);
            return Ok((
                self.record(i, Some(key), Outcome::Skipped, 0.0, Some(msg)),
                None,
            ));
        }
        let at = Workshop {
            store: self.store,
            registry: self.registry,
        };
        let Produced {
            artifact,
            outcome,
            job: job_record,
        } = self.executor.produce(at, &job, lock, progress)?;
        let seconds = start.elapsed().as_secs_f64();
        if let Err(e) = self
            .store
            .record_last(&self.pipeline.path, &spec.id, &job.fingerprint)
        {
            tracing::warn!("{e}");
        }
        let mut rec = self.record(i, Some(key), Outcome::Ran, seconds, None);
        rec.metrics = outcome.metrics;
        rec.notes = outcome.notes;
        rec.job = job_record;
        self.push(&mut rec, &artifact);
        Ok((rec, Some(artifact)))
    }

    /// Download stage `i` from the remote cache instead of computing it, when it is there. A
    /// damaged entry or an unreachable remote is a warning and a miss, never a failure.
    fn fetch_remote(
        &self,
        i: usize,
        job: &Job,
        start: Instant,
    ) -> Option<(StageRecord, Option<Artifact>)> {
        let remote = self.remote?;
        let key = job.fingerprint.key();
        let fetched = match remote.fetch(&key, self.store) {
            Ok(fetched) => fetched,
            Err(RemoteError::Unreachable { .. }) => None,
            Err(e) => {
                let id = &job.spec.id;
                self.bars
                    .println(&format!("warning: {e}; computing `{id}` here"));
                None
            }
        };
        self.warn_if_remote_down();
        let Fetched { artifact, bytes } = fetched?;
        let path = &self.pipeline.path;
        if let Err(e) = self.store.record_last(path, &job.spec.id, &job.fingerprint) {
            tracing::warn!("{e}");
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut rec = self.record(i, Some(key), Outcome::Remote, seconds, None);
        rec.metrics = artifact.report.metrics.clone();
        rec.remote_bytes = Some(bytes);
        rec.notes.push(format!(
            "downloaded {} from {}",
            crate::progress::human_bytes(bytes),
            remote.url()
        ));
        Some((rec, Some(artifact)))
    }

    /// With `--push`, upload what this run computed.
    fn push(&self, rec: &mut StageRecord, artifact: &Artifact) {
        let Some(remote) = self.remote.filter(|r| r.push) else {
            return;
        };
        match remote.push_artifact(artifact) {
            Ok(bytes) => {
                rec.remote_bytes = Some(bytes);
                rec.pushed = Some(true);
                rec.notes.push(format!(
                    "pushed {} to {}",
                    crate::progress::human_bytes(bytes),
                    remote.url()
                ));
            }
            Err(e) => {
                // Every stage left unpushed is said, with the server's reason: a user who
                // believes the team has their results must not be wrong in silence.
                let line = format!(
                    "stage `{}` not pushed to {}: {}",
                    rec.id,
                    remote.url(),
                    e.reason()
                );
                self.bars.println(&format!("warning: {line}"));
                rec.notes.push(line);
                rec.pushed = Some(false);
            }
        }
        self.warn_if_remote_down();
    }

    /// The remote's failure, once per run.
    fn warn_if_remote_down(&self) {
        if let Some(warning) = self.remote.and_then(|r| r.take_warning()) {
            self.bars.println(&format!(
                "warning: {warning}; this run goes on with the local cache only"
            ));
        }
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
                Err(source) => {
                    let id = spec.id.clone();
                    let e = StepError::Export {
                        id,
                        file,
                        dest,
                        source,
                    };
                    rec.outcome = Outcome::Failed;
                    rec.error = Some(e.to_string());
                    return (rec, None);
                }
            }
        }
        (rec, art)
    }

    /// The published artifact of `key`, or None; damage is reported and the artifact discarded.
    fn reuse(&self, key: &str, id: &str, verify: bool) -> Option<Artifact> {
        match self.store.lookup(key, verify) {
            Lookup::Valid(a) => Some(*a),
            Lookup::Missing => None,
            Lookup::Corrupt(reason) => {
                self.bars.println(&format!(
                    "warning: cached output of `{id}` is damaged ({reason}); recomputing"
                ));
                None
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
        let seconds = start.elapsed().as_secs_f64();
        let mut rec = self.record(i, Some(a.key.clone()), outcome, seconds, None);
        rec.metrics = a.report.metrics.clone();
        (rec, Some(a))
    }
}
