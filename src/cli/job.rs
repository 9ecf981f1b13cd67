//! `compute-job JOB_FILE` (hidden): what a cluster job runs on its node. It computes the one stage
//! its job description names and publishes it into the shared cache, under the key's lock, with
//! the same step the local executor uses; a key published meanwhile is left alone, unless the
//! run was forced (`--force`: the job replaces it, through the same atomic publish).
//! Each phase is a timestamped line in the job's log, so a killed job's tail says where it died.

use std::path::Path;
use std::time::Instant;

use super::{CliError, Context, exit};
use crate::cache::{Lookup, Store};
use crate::executor::job_file::JobFile;
use crate::executor::{Workshop, compute_and_publish};
use crate::progress::Progress;

pub fn compute_job(ctx: &Context, job_file: &Path) -> Result<i32, CliError> {
    let start = Instant::now();
    let file = JobFile::read(job_file).map_err(CliError::JobFile)?;
    let spec = file.spec(ctx.registry).map_err(CliError::JobFile)?;
    let store = Store::open(&file.cache_dir).map_err(CliError::Cache)?;
    let key = file.fingerprint.key();
    let id = &file.stage;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    eprintln!(
        "{} galaxy-pipe compute-job: stage `{id}` ({}), key {}, on {}{}",
        chrono::Local::now().format("%H:%M:%S"),
        file.kind,
        &key[..12],
        host.trim(),
        if file.replace {
            " (--force: replaces the published artifact)"
        } else {
            ""
        }
    );
    let lock = store
        .lock(&key, || {
            eprintln!("waiting: another process is computing `{id}` …")
        })
        .map_err(CliError::Cache)?
        .into_lock();
    if !file.replace
        && let Lookup::Valid(_) = store.lookup(&key, false)
    {
        eprintln!(
            "`{id}` (key {}) is already published; nothing to do",
            &key[..12]
        );
        return Ok(exit::OK);
    }
    let job = file
        .job(&spec, &store, ctx.registry)
        .map_err(CliError::Job)?;
    let at = Workshop {
        store: &store,
        registry: ctx.registry,
    };
    let progress = Progress::log_lines(id);
    let (artifact, _) =
        compute_and_publish(at, &job, &progress).map_err(|e| CliError::Job(e.to_string()))?;
    drop(lock);
    eprintln!(
        "{} published `{id}` (key {}) into {} in {:.1}s",
        chrono::Local::now().format("%H:%M:%S"),
        &key[..12],
        artifact.out_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(exit::OK)
}
