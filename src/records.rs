//! Run records under `cache/runs/`: what each run did, so runs can be compared and `gc` knows
//! which artifacts are still in use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reused a published artifact.
    Cached,
    /// Computed and published.
    Ran,
    Failed,
    /// Not attempted because an input failed or is unavailable.
    Skipped,
    /// `--dry-run`: would be reused.
    Hit,
    /// `--dry-run`: would run.
    Miss,
    /// Downloaded from the remote cache instead of computed.
    Remote,
    /// `--dry-run`: the remote cache has it (would be downloaded).
    RemoteHit,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Cached => "cached",
            Outcome::Ran => "ran",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Remote => "remote",
            Outcome::RemoteHit => "remote hit",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub id: String,
    pub kind: String,
    /// Cache key; absent when it could not be computed (an input failed).
    pub key: Option<String>,
    pub outcome: Outcome,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Bytes downloaded from (`remote`) or uploaded to (`--push`) the remote cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_bytes: Option<u64>,
    /// With `--push`, whether what this stage computed reached the remote (the reason is in
    /// `notes` when it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<bool>,
    /// The cluster job that computed it (`--executor slurm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRecord>,
}

/// A stage computed as a cluster job: its id and what it asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub resources: crate::config::Resources,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitInfo {
    pub commit: String,
    pub dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub started: String,
    pub pipeline: String,
    pub pipeline_name: String,
    pub overrides: Vec<String>,
    #[serde(default)]
    pub git: Option<GitInfo>,
    pub seconds: f64,
    pub stages: Vec<StageRecord>,
}

/// How many of `stages` ended with `outcome`.
pub fn count(stages: &[StageRecord], outcome: Outcome) -> usize {
    stages.iter().filter(|s| s.outcome == outcome).count()
}

impl RunRecord {
    /// How many stages of this run ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        count(&self.stages, outcome)
    }

    /// The headline metric of a run: the validation RMSE of its evaluate stage, if any.
    pub fn headline_rmse(&self) -> Option<f64> {
        self.stages
            .iter()
            .filter(|s| s.kind == "evaluate")
            .find_map(|s| s.metrics.get("rmse").copied())
    }

    pub fn write(&self, runs_dir: &Path) -> std::io::Result<PathBuf> {
        let path = runs_dir.join(format!("{}.json", self.id));
        write_atomic(&path, &serde_json::to_vec_pretty(self).expect("serialise"))?;
        Ok(path)
    }
}

/// A new run id: UTC time, pid (sortable by time).
pub fn new_run_id() -> (String, String) {
    let now = std::time::SystemTime::now();
    let started = humantime::format_rfc3339_millis(now).to_string();
    let compact: String = started
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    (format!("{compact}-{}", std::process::id()), started)
}

/// All readable run records, newest first; unreadable ones are returned as warnings.
pub fn list(runs_dir: &Path) -> (Vec<RunRecord>, Vec<String>) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.reverse();
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for path in names {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<RunRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => records.push(r),
            Err(e) => warnings.push(format!("unreadable run record {}: {e}", path.display())),
        }
    }
    (records, warnings)
}

/// The git commit of the repository holding `dir`, if any.
pub fn git_info(dir: &Path) -> Option<GitInfo> {
    let run = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "HEAD"])?;
    let dirty = !run(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    Some(GitInfo { commit, dirty })
}
