//! Follows the states of this process's Slurm jobs with one `squeue --json` per poll for all of
//! them (Slurm 22.05+; no accounting needed), polling with back-off, from one thread.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::untrusted::escape;

/// The first poll comes this soon after a submission; the interval then grows to the maximum.
const FIRST_POLL: Duration = Duration::from_millis(500);
const MAX_POLL: Duration = Duration::from_secs(15);
/// How long a job this run submitted may be missing from the controller's answers before it
/// counts as gone (unless `GALAXY_PIPE_SLURM_GONE_AFTER` says otherwise, in seconds). Only answers
/// count: while the controller does not answer, nothing is missing.
pub const GONE_AFTER: Duration = Duration::from_secs(600);
pub const GONE_AFTER_VAR: &str = "GALAXY_PIPE_SLURM_GONE_AFTER";
/// A job submitted by an earlier run (its id from the cache's marker) that the controller does
/// not know is gone after this many answers in a row: Slurm forgets finished jobs after `MinJobAge`.
const MISSES_TO_VANISH: u32 = 3;

/// Pending reasons that no waiting resolves: the job asks for more than the partition or its
/// nodes can ever give, or for something that does not exist.
const NEVER_STARTS: &[&str] = &[
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxMemoryPerJob",
    "QOSMaxGRESPerJob",
    "QOSMaxWallDurationPerJobLimit",
    "MaxCpuPerAccount",
];

/// What Slurm last said about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Submitted; no poll has seen it yet.
    Submitted,
    /// PENDING, RUNNING, COMPLETING, …, with the pending reason when there is one.
    Active(String, Option<String>),
    /// COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, …, and how it exited.
    Ended(String, Option<String>),
    /// PENDING for a reason no waiting resolves (`PartitionConfig`, …).
    NeverStarts(String),
    /// No longer known to Slurm, its end unseen.
    Gone,
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Ended(..) | JobState::Gone | JobState::NeverStarts(_)
        )
    }

    pub fn word(&self) -> String {
        match self {
            JobState::Submitted => "SUBMITTED".into(),
            JobState::Active(s, None) | JobState::Ended(s, None) => s.clone(),
            JobState::Active(s, Some(why)) | JobState::Ended(s, Some(why)) => {
                format!("{s} ({why})")
            }
            JobState::NeverStarts(reason) => format!("PENDING ({reason})"),
            JobState::Gone => "GONE (no longer known to Slurm)".into(),
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

/// One job in `squeue --json`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: String,
    /// `state_reason`, when it is not `None`.
    pub reason: Option<String>,
    /// How it exited, once it has: `exit code 3`, `signal 9`.
    pub exit: Option<String>,
}

impl Seen {
    fn state(&self) -> JobState {
        if is_end_state(&self.state) {
            return JobState::Ended(self.state.clone(), self.exit.clone());
        }
        match &self.reason {
            Some(r) if self.state == "PENDING" && NEVER_STARTS.contains(&r.as_str()) => {
                JobState::NeverStarts(r.clone())
            }
            r => JobState::Active(self.state.clone(), r.clone()),
        }
    }
}

/// Why a poll told nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// `squeue` ran but the controller did not answer (its `errors` list, or a failed exit).
    Controller(String),
    /// `squeue` could not be run at all.
    Squeue(String),
}

struct TrackedJob {
    state: JobState,
    /// Missing from the answers since then (the controller answered without it).
    missing_since: Option<Instant>,
    misses: u32,
    /// Submitted by this run: missing for [`gone_after`] before it is gone. Else a few answers.
    ours: bool,
}

#[derive(Default)]
struct Tracked {
    jobs: BTreeMap<String, TrackedJob>,
    polling: bool,
    /// Since when polls fail, and why (reported once, and again when they work).
    failing: Option<(Instant, String)>,
}

#[derive(Default)]
pub struct Monitor {
    tracked: Mutex<Tracked>,
    changed: Condvar,
}

/// How long a job this run submitted may be missing from the answers before it is gone.
pub fn gone_after() -> Duration {
    std::env::var(GONE_AFTER_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(GONE_AFTER)
}

impl Monitor {
    /// Follow job `id` from now on (starting the poller if it is not running); `ours` when this
    /// run submitted it.
    pub fn track(self: &Arc<Self>, id: &str, ours: bool) {
        let mut t = self.tracked.lock().expect("not poisoned");
        t.jobs.entry(id.to_string()).or_insert(TrackedJob {
            state: JobState::Submitted,
            missing_since: None,
            misses: 0,
            ours,
        });
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
                .map(|j| j.state.clone())
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
            .filter(|(_, j)| !j.state.is_final())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn poll_loop(&self) {
        let patience = gone_after();
        let mut interval = FIRST_POLL;
        loop {
            std::thread::sleep(interval);
            {
                let mut t = self.tracked.lock().expect("not poisoned");
                if t.jobs.values().all(|j| j.state.is_final()) {
                    t.polling = false;
                    return;
                }
            }
            let changed = match squeue_states() {
                Ok(states) => self.update(&states, Instant::now(), patience),
                Err(e) => self.report_failure(e),
            };
            interval = if changed {
                FIRST_POLL
            } else {
                (interval * 3 / 2).min(MAX_POLL)
            };
        }
    }

    /// Apply one answer of the controller at `now`; whether any tracked job changed state.
    fn update(&self, states: &BTreeMap<String, Seen>, now: Instant, patience: Duration) -> bool {
        let mut t = self.tracked.lock().expect("not poisoned");
        if let Some((since, _)) = t.failing.take() {
            let secs = now.duration_since(since).as_secs();
            eprintln!("slurm: the controller answers again (after {secs} s); following the jobs");
        }
        let mut changed = false;
        for (id, job) in t.jobs.iter_mut() {
            if job.state.is_final() {
                continue;
            }
            let next = match states.get(id) {
                Some(seen) => {
                    job.missing_since = None;
                    job.misses = 0;
                    seen.state()
                }
                None => {
                    job.misses += 1;
                    let since = *job.missing_since.get_or_insert(now);
                    let gone = match job.ours {
                        true => now.duration_since(since) >= patience,
                        false => job.misses >= MISSES_TO_VANISH,
                    };
                    if !gone {
                        continue;
                    }
                    JobState::Gone
                }
            };
            if next != job.state {
                job.state = next;
                changed = true;
            }
        }
        if changed {
            self.changed.notify_all();
        }
        changed
    }

    fn report_failure(&self, e: PollError) -> bool {
        let mut t = self.tracked.lock().expect("not poisoned");
        if t.failing.is_none() {
            let waiting = t.jobs.iter().filter(|(_, j)| !j.state.is_final());
            let ids: Vec<&str> = waiting.map(|(id, _)| id.as_str()).collect();
            let what = match &e {
                PollError::Controller(m) => format!("the Slurm controller does not answer ({m})"),
                PollError::Squeue(m) => format!("squeue failed ({m})"),
            };
            eprintln!(
                "warning: {what}; still waiting for job(s) {} (they keep running on their nodes)",
                ids.join(", ")
            );
            let message = match e {
                PollError::Controller(m) | PollError::Squeue(m) => m,
            };
            t.failing = Some((Instant::now(), message));
        }
        false
    }
}
/// Every job's state, by id, from one `squeue --json`.
fn squeue_states() -> Result<BTreeMap<String, Seen>, PollError> {
    let out = Command::new("squeue")
        .args(["--json", "--states=all"])
        .output()
        .map_err(|e| PollError::Squeue(format!("running squeue: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(PollError::Controller(escape(why.trim()).into_owned()));
    }
    parse_squeue(&out.stdout)
}

/// `jobs[]` of `squeue --json`: id, state (a string up to Slurm 23.02, a list of strings from
/// 23.11), `state_reason` and `exit_code`. An answer with `errors` is the controller not
/// answering (Slurm 22.05 exits 0 during an outage, with an empty job list): never "no jobs".
pub fn parse_squeue(json: &[u8]) -> Result<BTreeMap<String, Seen>, PollError> {
    let garbled = |why: String| PollError::Squeue(format!("squeue --json: {why}"));
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| garbled(e.to_string()))?;
    if let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) {
        let said: Vec<String> = errors.iter().map(describe_error).collect();
        return Err(PollError::Controller(escape(&said.join("; ")).into_owned()));
    }
    let jobs = v["jobs"]
        .as_array()
        .ok_or_else(|| garbled("no `jobs` list".into()))?;
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
        let reason = job["state_reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "None")
            .map(|r| escape(r).into_owned());
        let exit = match is_end_state(&state) {
            true => exit_of(&job["exit_code"]),
            false => None,
        };
        states.insert(
            id,
            Seen {
                state,
                reason,
                exit,
            },
        );
    }
    Ok(states)
}

/// One item of `errors`: its `error` text (22.05: `{"error": "...", "errno": N}`), else as JSON.
fn describe_error(e: &serde_json::Value) -> String {
    match e["error"].as_str().or(e["description"].as_str()) {
        Some(text) => text.to_string(),
        None => e.to_string(),
    }
}

/// How a job exited: 22.05 gives the raw wait status (`768` = exit code 3, `9` = signal 9);
/// 23.11+ an object with `return_code` and `signal`.
fn exit_of(v: &serde_json::Value) -> Option<String> {
    let number = |x: &serde_json::Value| x.as_u64().or_else(|| x["number"].as_u64());
    let (code, signal) = match v {
        serde_json::Value::Number(n) => {
            let status = n.as_u64()?;
            (status >> 8, status & 0x7f)
        }
        serde_json::Value::Object(_) => {
            let signal = number(&v["signal"]["id"]).or_else(|| number(&v["signal"]));
            (number(&v["return_code"]).unwrap_or(0), signal.unwrap_or(0))
        }
        _ => return None,
    };
    match (code, signal) {
        (_, s) if s != 0 => Some(format!("signal {s}")),
        (c, _) if c != 0 => Some(format!("exit code {c}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: &str) -> Seen {
        Seen {
            state: state.into(),
            reason: None,
            exit: None,
        }
    }

    #[test]
    fn squeue_json_of_old_and_new_slurm_is_read() {
        let old = br#"{"errors": [], "jobs": [{"job_id": 12, "job_state": "RUNNING", "state_reason": "None"},
            {"job_id": 13, "job_state": "FAILED", "exit_code": 768}, {"job_id": 15, "job_state": "FAILED", "exit_code": 9},
            {"job_id": 16, "job_state": "PENDING", "state_reason": "Resources"}]}"#;
        let new = br#"{"jobs": [{"job_id": 14, "job_state": ["FAILED"], "exit_code": {"status": ["SIGNALED"], "return_code": {"set": true, "number": 0}, "signal": {"id": {"set": true, "number": 9}, "name": "KILL"}}}]}"#;
        let old = parse_squeue(old).unwrap();
        assert_eq!(old["12"], seen("RUNNING"));
        assert_eq!(old["13"].exit.as_deref(), Some("exit code 3"));
        assert_eq!(old["15"].exit.as_deref(), Some("signal 9"));
        assert_eq!(old["16"].state().word(), "PENDING (Resources)");
        let new = parse_squeue(new).unwrap();
        assert_eq!(new["14"].state().word(), "FAILED (signal 9)");
        assert!(matches!(parse_squeue(b"<html>"), Err(PollError::Squeue(_))));
    }

    #[test]
    fn an_answer_with_errors_is_an_outage_not_an_empty_queue() {
        let outage = br#"{"meta": {}, "errors": [{"error": "Failed while looking for jobs", "errno": 1}], "jobs": []}"#;
        let Err(PollError::Controller(why)) = parse_squeue(outage) else {
            panic!("an outage");
        };
        assert!(why.contains("Failed while looking for jobs"), "{why}");
    }

    #[test]
    fn a_pending_reason_that_never_resolves_is_final() {
        let stuck = Seen {
            reason: Some("PartitionConfig".into()),
            ..seen("PENDING")
        };
        assert_eq!(
            stuck.state(),
            JobState::NeverStarts("PartitionConfig".into())
        );
        assert!(stuck.state().is_final());
        let waiting = Seen {
            reason: Some("Resources".into()),
            ..seen("PENDING")
        };
        assert!(!waiting.state().is_final());
    }

    fn monitor_with(jobs: &[(&str, bool)]) -> Monitor {
        let monitor = Monitor::default();
        for (id, ours) in jobs {
            let job = TrackedJob {
                state: JobState::Submitted,
                missing_since: None,
                misses: 0,
                ours: *ours,
            };
            monitor
                .tracked
                .lock()
                .unwrap()
                .jobs
                .insert(id.to_string(), job);
        }
        monitor
    }

    fn state(monitor: &Monitor, id: &str) -> JobState {
        monitor.tracked.lock().unwrap().jobs[id].state.clone()
    }

    #[test]
    fn a_job_of_this_run_is_gone_only_after_missing_for_the_whole_patience() {
        let monitor = monitor_with(&[("7", true), ("8", false)]);
        let patience = Duration::from_secs(600);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let running = BTreeMap::from([("7".to_string(), seen("RUNNING"))]);
        assert!(monitor.update(&running, t0, patience));
        // Answers without job 7 for 9 minutes: still running as far as we know.
        for minute in 1..10 {
            monitor.update(&BTreeMap::new(), at(60 * minute), patience);
        }
        assert_eq!(
            state(&monitor, "7"),
            JobState::Active("RUNNING".into(), None)
        );
        // An earlier run's job 8, unknown for three answers, is gone.
        assert_eq!(state(&monitor, "8"), JobState::Gone);
        // Seen again, the clock starts over; then missing for the whole patience: gone.
        monitor.update(&running, at(600), patience);
        monitor.update(&BTreeMap::new(), at(601), patience);
        assert!(!state(&monitor, "7").is_final());
        monitor.update(&BTreeMap::new(), at(1201), patience);
        assert_eq!(state(&monitor, "7"), JobState::Gone);
    }
}
