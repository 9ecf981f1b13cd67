//! Follows the states of this process's Slurm jobs with one `squeue --json` per poll for all of
//! them (Slurm 22.05+; no accounting needed), polling with back-off, from one thread.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The first poll comes this soon after a submission; the interval then grows to the maximum.
const FIRST_POLL: Duration = Duration::from_millis(500);
const MAX_POLL: Duration = Duration::from_secs(15);
/// Polls in a row that must miss a job before it counts as gone (Slurm forgets finished jobs
/// after `MinJobAge`, 300 s by default).
const MISSES_TO_VANISH: u32 = 3;

/// What Slurm last said about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Submitted; no poll has seen it yet.
    Submitted,
    /// PENDING, RUNNING, COMPLETING, …
    Active(String),
    /// COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, …
    Ended(String),
    /// No longer known to Slurm, its end unseen.
    Gone,
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Ended(_) | JobState::Gone)
    }

    pub fn word(&self) -> &str {
        match self {
            JobState::Submitted => "SUBMITTED",
            JobState::Active(s) | JobState::Ended(s) => s,
            JobState::Gone => "GONE (no longer known to Slurm)",
        }
    }
}

/// Slurm's words for a job that is over.
fn is_end_state(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
    )
}

#[derive(Default)]
struct Tracked {
    jobs: BTreeMap<String, (JobState, u32)>,
    polling: bool,
    /// The last `squeue` failure, reported once.
    failing: Option<String>,
}

#[derive(Default)]
pub struct Monitor {
    tracked: Mutex<Tracked>,
    changed: Condvar,
}

impl Monitor {
    /// Follow job `id` from now on (starting the poller if it is not running).
    pub fn track(self: &Arc<Self>, id: &str) {
        let mut t = self.tracked.lock().expect("not poisoned");
        t.jobs
            .entry(id.to_string())
            .or_insert((JobState::Submitted, 0));
        if !t.polling {
            t.polling = true;
            let me = Arc::clone(self);
            std::thread::spawn(move || me.poll_loop());
        }
    }

    /// Block until job `id` (tracked) is over; `on_change` sees every state it passes through.
    pub fn wait(&self, id: &str, mut on_change: impl FnMut(&JobState)) -> JobState {
        let mut t = self.tracked.lock().expect("not poisoned");
        let mut last = JobState::Submitted;
        loop {
            let state = t
                .jobs
                .get(id)
                .map(|(s, _)| s.clone())
                .unwrap_or(JobState::Gone);
            if state != last {
                on_change(&state);
                last = state.clone();
            }
            if state.is_final() {
                return state;
            }
            t = self.changed.wait(t).expect("not poisoned");
        }
    }

    /// The jobs not over yet (what an interrupted run cancels).
    pub fn active(&self) -> Vec<String> {
        let t = self.tracked.lock().expect("not poisoned");
        t.jobs
            .iter()
            .filter(|(_, (s, _))| !s.is_final())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn poll_loop(&self) {
        let mut interval = FIRST_POLL;
        loop {
            std::thread::sleep(interval);
            {
                let mut t = self.tracked.lock().expect("not poisoned");
                if t.jobs.values().all(|(s, _)| s.is_final()) {
                    t.polling = false;
                    return;
                }
            }
            let changed = match squeue_states() {
                Ok(states) => self.update(&states),
                Err(e) => self.report_failure(e),
            };
            interval = if changed {
                FIRST_POLL
            } else {
                (interval * 3 / 2).min(MAX_POLL)
            };
        }
    }

    /// Apply one poll's answer; whether any tracked job changed state.
    fn update(&self, states: &BTreeMap<String, String>) -> bool {
        let mut t = self.tracked.lock().expect("not poisoned");
        t.failing = None;
        let mut changed = false;
        for (id, (state, misses)) in t.jobs.iter_mut() {
            if state.is_final() {
                continue;
            }
            let next = match states.get(id) {
                Some(s) if is_end_state(s) => JobState::Ended(s.clone()),
                Some(s) => JobState::Active(s.clone()),
                None if *misses + 1 >= MISSES_TO_VANISH => JobState::Gone,
                None => {
                    *misses += 1;
                    continue;
                }
            };
            *misses = 0;
            if next != *state {
                *state = next;
                changed = true;
            }
        }
        if changed {
            self.changed.notify_all();
        }
        changed
    }

    fn report_failure(&self, e: String) -> bool {
        let mut t = self.tracked.lock().expect("not poisoned");
        if t.failing.is_none() {
            eprintln!("warning: squeue failed ({e}); still waiting for the jobs");
        }
        t.failing = Some(e);
        false
    }
}

/// Every job's state, by id, from one `squeue --json`.
fn squeue_states() -> Result<BTreeMap<String, String>, String> {
    let out = Command::new("squeue")
        .args(["--json", "--states=all"])
        .output()
        .map_err(|e| format!("running squeue: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    parse_squeue(&out.stdout)
}

/// `jobs[].job_id` → `jobs[].job_state` of `squeue --json` (a string up to Slurm 23.02, a list
/// of strings from 23.11).
pub fn parse_squeue(json: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("squeue --json: {e}"))?;
    let jobs = v["jobs"]
        .as_array()
        .ok_or("squeue --json: no `jobs` list")?;
    let mut states = BTreeMap::new();
    for job in jobs {
        let id = match &job["job_id"] {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => continue,
        };
        let state = match &job["job_state"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => {
                a.first().and_then(|s| s.as_str()).unwrap_or("").to_string()
            }
            _ => continue,
        };
        states.insert(id, state);
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_json_of_old_and_new_slurm_is_read() {
        let old = br#"{"jobs": [{"job_id": 12, "job_state": "RUNNING"}, {"job_id": 13, "job_state": "TIMEOUT"}]}"#;
        let new = br#"{"jobs": [{"job_id": 14, "job_state": ["PENDING"]}]}"#;
        let old = parse_squeue(old).unwrap();
        assert_eq!(old["12"], "RUNNING");
        assert_eq!(old["13"], "TIMEOUT");
        assert_eq!(parse_squeue(new).unwrap()["14"], "PENDING");
        assert!(parse_squeue(b"<html>").is_err());
    }

    #[test]
    fn a_job_missing_from_several_polls_is_gone_and_end_states_are_final() {
        let monitor = Monitor::default();
        monitor
            .tracked
            .lock()
            .unwrap()
            .jobs
            .insert("7".into(), (JobState::Submitted, 0));
        monitor
            .tracked
            .lock()
            .unwrap()
            .jobs
            .insert("8".into(), (JobState::Submitted, 0));
        let running = BTreeMap::from([("7".to_string(), "RUNNING".to_string())]);
        assert!(monitor.update(&running));
        for _ in 0..MISSES_TO_VANISH {
            monitor.update(&BTreeMap::from([(
                "7".to_string(),
                "CANCELLED".to_string(),
            )]));
        }
        let t = monitor.tracked.lock().unwrap();
        assert_eq!(t.jobs["7"].0, JobState::Ended("CANCELLED".into()));
        assert_eq!(t.jobs["8"].0, JobState::Gone);
    }
}
