//! Where a stage that must be computed runs: in this process ([`Local`]) or as one job of a
//! cluster scheduler ([`slurm::Slurm`]). The runner decides *what* to compute (keys, reuse, the
//! remote cache) and prepares a [`Job`]; an executor turns it into a published artifact. Both
//! end in the same step, [`compute_and_publish`]: in this process, or in `galaxy-pipe
//! compute-job` on a node.

pub mod job_file;
pub mod slurm;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{Artifact, CacheError, Fingerprint, KeyLock, StageReport, Store};
use crate::config::{StageKind, StageSpec};
use crate::progress::Progress;
use crate::stages::{Input, Registry, Stage, StageContext, StageError, StageOutcome};

/// `[pipeline] executor` / `run --executor`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Stages run in this process (the default).
    #[default]
    Local,
    /// Each stage to compute is a Slurm job (`sbatch`).
    Slurm,
}

impl ExecutorKind {
    pub const NAMES: [&str; 2] = ["local", "slurm"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "local" => Some(ExecutorKind::Local),
            "slurm" => Some(ExecutorKind::Slurm),
            _ => None,
        }
    }

    /// The executor of this kind, ready to compute: the one place that builds executors. A
    /// cluster executor whose tools are missing is an error (the caller's exit 2).
    pub fn open(self) -> Result<Box<dyn Executor>, String> {
        Ok(match self {
            ExecutorKind::Local => Box::new(Local),
            ExecutorKind::Slurm => Box::new(slurm::Slurm::new()?),
        })
    }
}

/// What `status` says about `key` being computed elsewhere, by any executor that leaves work in
/// flight across runs (a Slurm job submitted for it and not seen to end).
pub fn in_flight_note(store: &Store, key: &str) -> Option<String> {
    slurm::marker::submitted(store, key).map(|job| {
        format!("Slurm job {job} was submitted for it (`run --executor slurm` waits for it)")
    })
}

/// Everything [`compute`] needs to run one stage, prepared by the planner: the stage as
/// declared, its fingerprint, its upstream artifact folders, and its input-file manifests.
pub struct Job<'a> {
    pub spec: &'a StageSpec,
    pub fingerprint: Fingerprint,
    /// The pipeline seed, when the stage's kind puts it in its key.
    pub seed: Option<u64>,
    /// Upstream stage id → its artifact folder (read-only).
    pub inputs: BTreeMap<String, Input>,
    /// Manifests of the stage's input files, by group.
    pub files: BTreeMap<String, Arc<crate::cache::Manifest>>,
    /// `--force`: compute and publish even if the key is published (replacing it).
    pub replace: bool,
}

/// Why an executor produced no artifact. Each variant's text is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("stage `{id}` ({kind}): {}", crate::cache::error_chain(.source))]
    Stage {
        id: String,
        kind: StageKind,
        source: StageError,
    },
    #[error("stage `{id}` ({kind}) crashed: {message}")]
    Crashed {
        id: String,
        kind: StageKind,
        message: String,
    },
    #[error("stage `{id}`: {source}")]
    Publish { id: String, source: CacheError },
    /// The cache could not be read, locked or written.
    #[error("{0}")]
    Cache(#[from] CacheError),
    /// A cluster job ended without publishing: its state and the end of its log.
    #[error("stage `{id}`: {message}")]
    Job { id: String, message: String },
}

/// A published artifact and what its computation reported.
pub struct Produced {
    pub artifact: Artifact,
    pub outcome: StageOutcome,
    /// The cluster job that computed it, when it ran as one.
    pub job: Option<crate::records::JobRecord>,
}

/// What an executor works with: the local cache and the stage implementations.
#[derive(Clone, Copy)]
pub struct Workshop<'a> {
    pub store: &'a Store,
    pub registry: &'a Registry,
}

/// Where stages are computed, and the policy that goes with it.
pub trait Executor: Sync {
    /// Produce and publish the artifact of `job`, whose key is not published. Called holding the
    /// key's `lock`; an executor that hands the computation to another process releases it.
    fn produce(
        &self,
        at: Workshop,
        job: &Job,
        lock: KeyLock,
        progress: &Progress,
    ) -> Result<Produced, ExecError>;

    /// Stages in flight at once unless `--jobs` says otherwise.
    fn default_jobs(&self) -> usize;

    /// Whether the points of a sweep run at once (else one after the other).
    fn sweep_points_at_once(&self) -> bool;
}

/// Stages computed in this process, holding the key's lock until published.
pub struct Local;

impl Executor for Local {
    /// This machine's cores.
    fn default_jobs(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    /// One after the other: each point already uses the cores.
    fn sweep_points_at_once(&self) -> bool {
        false
    }

    fn produce(
        &self,
        at: Workshop,
        job: &Job,
        lock: KeyLock,
        progress: &Progress,
    ) -> Result<Produced, ExecError> {
        let (artifact, outcome) = compute_and_publish(at, job, progress)?;
        drop(lock);
        Ok(Produced {
            artifact,
            outcome,
            job: None,
        })
    }
}

/// Compute `job` into a staging folder and publish it (the caller holds the key's lock): what
/// the local executor does, and what a cluster job does on its node.
pub fn compute_and_publish(
    at: Workshop,
    job: &Job,
    progress: &Progress,
) -> Result<(Artifact, StageOutcome), ExecError> {
    let start = Instant::now();
    let key = job.fingerprint.key();
    let staging = at.store.staging(&key)?;
    let work_dir = at.store.work_dir(&key)?;
    let stage = at
        .registry
        .stage(job.spec.kind)
        .expect("fingerprint checked availability");
    let places = Places {
        out_dir: &staging.out_dir,
        work_dir: &work_dir,
        log_dir: &at.store.log_dir(&key),
    };
    let outcome = compute(stage, job, places, progress)?;
    let report = StageReport {
        metrics: outcome.metrics.clone(),
        notes: outcome.notes.clone(),
        seconds: start.elapsed().as_secs_f64(),
    };
    let artifact = at
        .store
        .publish(staging, &job.fingerprint, &report)
        .map_err(|source| ExecError::Publish {
            id: job.spec.id.clone(),
            source,
        })?;
    Ok((artifact, outcome))
}

/// The folders a computation writes to (all given by the cache; the stage knows no cache).
#[derive(Clone, Copy)]
pub struct Places<'a> {
    /// The (empty) output folder the caller publishes.
    pub out_dir: &'a Path,
    /// Checkpoints that survive a killed run of the same key.
    pub work_dir: &'a Path,
    /// Logs kept beside the artifact (`logs/<key>/`), never part of it.
    pub log_dir: &'a Path,
}

/// Run `stage` for `job` into `places.out_dir` (empty). Touches no cache: the caller publishes
/// the output folder. A panic in the stage becomes [`ExecError::Crashed`].
pub fn compute(
    stage: &dyn Stage,
    job: &Job,
    places: Places,
    progress: &Progress,
) -> Result<StageOutcome, ExecError> {
    let spec = job.spec;
    let ctx = StageContext {
        spec,
        seed: job.seed,
        inputs: job.inputs.clone(),
        files: job.files.clone(),
        out_dir: places.out_dir.to_path_buf(),
        work_dir: places.work_dir.to_path_buf(),
        log_dir: places.log_dir.to_path_buf(),
        progress,
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(source)) => Err(ExecError::Stage {
            id: spec.id.clone(),
            kind: spec.kind,
            source,
        }),
        Err(panic) => Err(ExecError::Crashed {
            id: spec.id.clone(),
            kind: spec.kind,
            message: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        }),
    }
}
