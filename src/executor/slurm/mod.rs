//! Each stage that must be computed becomes one Slurm job: a generated, readable script that
//! runs this project's own binary (`galaxy-pipe compute-job`) on the node, submitted with
//! `sbatch --parsable` and followed with `squeue --json`. Commands are run with argument vectors,
//! never through a shell. The job takes the key's lock and publishes into the shared cache itself,
//! so a job whose `galaxy-pipe run` was killed still finishes and publishes, and the next run
//! waits for it or reuses its artifact.
//!
//! Per key, the cache's `logs/<key>/` folder holds `job.json` (the job description), `job.sh`
//! (the script), `slurm-<id>.out` (its stdout and stderr) and, while it runs, the job's id
//! ([`marker`]).

pub mod marker;
pub mod monitor;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::job_file::JobFile;
use super::{ExecError, Executor, Job, Produced, Workshop};
use crate::cache::{Artifact, KeyLock, Lookup};
use crate::config::Resources;
use crate::progress::Progress;
use crate::records::JobRecord;
use crate::stages::StageOutcome;
use monitor::{JobState, Monitor};

/// The environment variable naming the command that starts galaxy-pipe on a node (default: this
/// binary's absolute path), e.g. `apptainer exec galaxy.sif galaxy-pipe`.
pub const LAUNCHER_VAR: &str = "GALAXY_PIPE_JOB_LAUNCHER";
/// Lines of a failed job's log shown in the stage's error.
const LOG_TAIL: usize = 12;

pub struct Slurm {
    launcher: Vec<String>,
    monitor: Arc<Monitor>,
}

impl Slurm {
    /// A Slurm executor, once `sbatch` is found; its jobs are cancelled if this process is
    /// interrupted (SIGINT, SIGTERM).
    pub fn new() -> Result<Slurm, String> {
        // All three, before anything is submitted: a job that cannot be followed or cancelled
        // must not be started.
        for tool in ["sbatch", "squeue", "scancel"] {
            let found = Command::new(tool).arg("--version").output();
            if !found.is_ok_and(|o| o.status.success()) {
                return Err(format!(
                    "--executor slurm: `{tool}` was not found on PATH (run on a Slurm login node, or use --executor local)"
                ));
            }
        }
        let launcher = launcher()?;
        let monitor = Arc::new(Monitor::default());
        cancel_on_interrupt(Arc::clone(&monitor))?;
        Ok(Slurm { launcher, monitor })
    }

    /// Write the job's description and script into `dir` and submit it; the job id.
    fn submit(
        &self,
        job: &Job,
        cache_dir: &Path,
        dir: &Path,
        resources: &Resources,
    ) -> Result<String, ExecError> {
        let failed = |message: String| ExecError::Job {
            id: job.spec.id.clone(),
            message,
        };
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            crate::cache::write_atomic(&path, bytes)
                .map_err(|e| failed(format!("writing {}: {e}", path.display())))
        };
        let description =
            serde_json::to_vec_pretty(&JobFile::of(job, cache_dir)).expect("serialise");
        write("job.json", &description)?;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name=gp-{}", job.spec.id),
            format!("--output={}", dir.join("slurm-%j.out").display()),
            format!("--chdir={}", dir.display()),
        ];
        args.extend(resources.sbatch_args());
        let script = job_script(job, &self.launcher, &dir.join("job.json"), &args);
        write("job.sh", script.as_bytes())?;
        let out = Command::new("sbatch")
            .args(&args)
            .arg(dir.join("job.sh"))
            .output()
            .map_err(|e| failed(format!("running sbatch: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if !out.status.success() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(failed(format!("sbatch refused the job: {why}")));
        }
        Ok(id)
    }

    /// Wait for job `id` of stage `stage`, showing its state (each change on its own line when
    /// `announce`: only the run that submitted it says it); its final state.
    fn follow(&self, stage: &str, id: &str, progress: &Progress, announce: bool) -> JobState {
        self.monitor.track(id, announce);
        self.monitor.wait(id, |state| {
            progress.message(&format!("Slurm job {id} {}", state.word()));
            if announce {
                progress.println(&format!("slurm: `{stage}` job {id} {}", state.word()));
            }
        })
    }
}

/// Stages in flight at once with a cluster executor (the scheduler queues the rest).
const CLUSTER_JOBS: usize = 256;

impl Executor for Slurm {
    /// As many as the DAG allows: stages computed as jobs are not limited by this machine's cores.
    fn default_jobs(&self) -> usize {
        CLUSTER_JOBS
    }

    /// At once, so every point's stale stages are submitted together (a stage shared by several
    /// points is one job the others wait for).
    fn sweep_points_at_once(&self) -> bool {
        true
    }

    fn produce(
        &self,
        at: Workshop,
        job: &Job,
        lock: KeyLock,
        progress: &Progress,
    ) -> Result<Produced, ExecError> {
        let key = job.fingerprint.key();
        // Absolute: the job starts in its own folder, maybe on another node.
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let cache_dir = absolute(at.store.root());
        let dir = absolute(&at.store.log_dir(&key));
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::cache::CacheError::io("creating", &dir, e))?;
        let resources = job.spec.resources.or(&kind_defaults(job.spec.kind));
        let record = |id: &str| JobRecord {
            id: id.to_string(),
            resources: resources.clone(),
        };
        // A job for this key submitted before (by this run, a parallel one, or one that was
        // killed) and not over yet: wait for it instead of computing twice.
        let mut lock = lock;
        while let Some(old) = marker::submitted(at.store, &key) {
            drop(lock);
            progress.println(&format!(
                "slurm: `{}` is already job {old}; waiting for it",
                job.spec.id
            ));
            self.follow(&job.spec.id, &old, progress, false);
            if let Lookup::Valid(a) = at.store.lookup(&key, false) {
                return Ok(produced(*a, record(&old)));
            }
            marker::clear(at.store, &key);
            lock = at.store.lock(&key, || {})?.into_lock();
        }
        let before = at.store.object_stamp(&key);
        let id = self.submit(job, &cache_dir, &dir, &resources)?;
        marker::mark(at.store, &key, &id)?;
        let asked = resources.sbatch_args().join(" ");
        progress.println(&format!(
            "slurm: `{}` submitted as job {id} ({asked})",
            job.spec.id
        ));
        drop(lock);
        let state = self.follow(&job.spec.id, &id, progress, true);
        let failed = |message: String| ExecError::Job {
            id: job.spec.id.clone(),
            message,
        };
        if let JobState::NeverStarts(reason) = &state {
            // Cancelled before the marker is cleared: a job that cannot be cancelled stays known.
            let cancel = cancel_jobs(std::slice::from_ref(&id));
            marker::clear(at.store, &key);
            return Err(failed(never_starts(
                &id,
                reason,
                &resources,
                &job.spec.id,
                cancel,
            )));
        }
        marker::clear(at.store, &key);
        // With --force the job must have published anew: the old artifact does not count.
        let replaced = !job.replace || at.store.object_stamp(&key) != before;
        match at.store.lookup(&key, false) {
            Lookup::Valid(a) if replaced => Ok(produced(*a, record(&id))),
            _ => {
                let log = dir.join(format!("slurm-{id}.out"));
                Err(failed(ended_without_artifact(&id, &state, &log)))
            }
        }
    }
}

/// The error of a job that can never start: why, what it asked for, where to change that.
fn never_starts(
    id: &str,
    reason: &str,
    resources: &Resources,
    stage: &str,
    cancelled: Result<(), String>,
) -> String {
    let asked = resources.sbatch_args().join(" ");
    let cancel = match cancelled {
        Ok(()) => format!("job {id} was cancelled"),
        Err(why) => format!("cancelling it failed ({why}): cancel it with `scancel {id}`"),
    };
    format!(
        "Slurm job {id} can never start: PENDING ({reason}) — the cluster cannot give what it asks \
         for ({asked}); lower it under [stages.{stage}.resources] in the pipeline file, or pick \
         another partition; {cancel}"
    )
}

/// `scancel` the jobs; its complaint when it did not succeed.
fn cancel_jobs(ids: &[String]) -> Result<(), String> {
    match Command::new("scancel").args(ids).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = crate::untrusted::escape(said.trim()).into_owned();
            Err(match said.is_empty() {
                true => format!("scancel exited with {}", out.status),
                false => said,
            })
        }
        Err(e) => Err(format!("running scancel: {e}")),
    }
}

/// The kind's default resources (a GPU only for a build that can use one).
fn kind_defaults(kind: crate::config::StageKind) -> Resources {
    let shape = kind.decl().job;
    Resources {
        cpus: Some(shape.cpus),
        mem: Some(format!("{}M", shape.mem_mb)),
        gpus: Some(u32::from(shape.gpu && cfg!(feature = "cuda"))),
        ..Resources::default()
    }
}

fn produced(artifact: Artifact, job: JobRecord) -> Produced {
    let mut outcome = StageOutcome {
        metrics: artifact.report.metrics.clone(),
        notes: artifact.report.notes.clone(),
    };
    outcome
        .notes
        .push(format!("computed by Slurm job {}", job.id));
    Produced {
        artifact,
        outcome,
        job: Some(job),
    }
}

/// The error of a job that published nothing: its state and the end of its log.
fn ended_without_artifact(id: &str, state: &JobState, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
    let tail = if tail.is_empty() {
        "(empty)".to_string()
    } else {
        tail
    };
    format!(
        "Slurm job {id} ended {} without publishing an artifact; last lines of {}:\n{tail}",
        state.word(),
        log.display()
    )
}

/// The command that starts galaxy-pipe on a node: `$GALAXY_PIPE_JOB_LAUNCHER` (split like a
/// shell would), else this binary.
fn launcher() -> Result<Vec<String>, String> {
    if let Ok(text) = std::env::var(LAUNCHER_VAR) {
        return shlex::split(&text)
            .filter(|words| !words.is_empty())
            .ok_or_else(|| format!("{LAUNCHER_VAR}=`{text}` is not a command line"));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    Ok(vec![exe.to_string_lossy().into_owned()])
}

/// The generated job script: readable, every value from the pipeline file quoted, and the
/// options it was submitted with as a comment.
pub fn job_script(
    job: &Job,
    launcher: &[String],
    job_file: &Path,
    sbatch_args: &[String],
) -> String {
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| "''".into())
    };
    let mut command: Vec<String> = launcher.iter().map(|w| quote(w)).collect();
    command.push("compute-job".into());
    command.push(quote(&job_file.to_string_lossy()));
    let submitted: Vec<String> = sbatch_args.iter().map(|a| quote(a)).collect();
    format!(
        "#!/bin/sh\n\
         # galaxy-pipe: computes stage `{id}` ({kind}), key {key}, and publishes it into the cache.\n\
         # Generated by `galaxy-pipe run --executor slurm`; submitted with:\n\
         #   sbatch {submitted}\n\
         exec {command}\n",
        id = job.spec.id,
        kind = job.spec.kind,
        key = job.fingerprint.key(),
        submitted = submitted.join(" "),
        command = command.join(" "),
    )
}

/// On SIGINT or SIGTERM: cancel this process's jobs that are not over, say so, and exit.
fn cancel_on_interrupt(monitor: Arc<Monitor>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("installing the interrupt handler: {e}"))?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let jobs = monitor.active();
            if !jobs.is_empty() {
                let list = jobs.join(", ");
                match cancel_jobs(&jobs) {
                    Ok(()) => eprintln!("interrupted: cancelled Slurm job(s) {list}"),
                    Err(why) => eprintln!(
                        "interrupted: could NOT cancel Slurm job(s) {list} ({why}); they may still be queued or running: cancel them with `scancel {}`",
                        jobs.join(" ")
                    ),
                }
            }
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}
