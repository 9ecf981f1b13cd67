//! The marker of a Slurm job in flight: `logs/<key>/job-id` in the cache holds the id of the job
//! submitted to compute `key`, from submission until a run sees it end. A run killed meanwhile
//! leaves it, so the next run (and `status`, and `gc`) know a job may still publish the key.

use crate::cache::{CacheError, Store, write_atomic};

const SUBMITTED_JOB: &str = "job-id";

/// The cluster job submitted to compute `key` and not yet seen to end, if any.
pub fn submitted(store: &Store, key: &str) -> Option<String> {
    let id = std::fs::read_to_string(store.log_dir(key).join(SUBMITTED_JOB)).ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// Record that job `id` was submitted to compute `key` (its log folder exists).
pub fn mark(store: &Store, key: &str, id: &str) -> Result<(), CacheError> {
    let path = store.log_dir(key).join(SUBMITTED_JOB);
    write_atomic(&path, id.as_bytes()).map_err(|e| CacheError::io("writing", &path, e))
}

/// Forget the submitted job of `key` (it ended, published or not).
pub fn clear(store: &Store, key: &str) {
    let _ = std::fs::remove_file(store.log_dir(key).join(SUBMITTED_JOB));
}
