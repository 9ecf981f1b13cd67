//! Drives a pipeline through the cache: fingerprints each stage, reuses what is published,
//! runs what is stale (independent stages in parallel), and records the run.
//!
//! - [`plan`]: fingerprints and plan states (`status`, `why`, `--dry-run`);
//! - [`step`]: one stage's steps — decide (reuse or compute), the remote cache, then the
//!   executor (here, or a cluster job) for a prepared [`crate::executor::Job`];
//! - this module: the schedule (independent stages at once, up to `--jobs`) and the records.

pub mod plan;
pub mod step;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;

use crate::cache::remote::Remote;
use crate::cache::{Artifact, Store};
use crate::config::Pipeline;
use crate::executor::Executor;
use crate::graph::Graph;
use crate::progress::Bars;
use crate::records::{Outcome, StageRecord};
use crate::stages::Registry;

pub use plan::{PlanEntry, PlanState};

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
    /// `pull`: take what is not cached locally from the remote; never compute.
    pub fetch_only: bool,
}

pub struct Runner<'a> {
    pub pipeline: &'a Pipeline,
    pub graph: &'a Graph,
    pub store: &'a Store,
    pub registry: &'a Registry,
    pub bars: Bars,
    /// The shared remote cache, when one is configured.
    pub remote: Option<&'a Remote>,
    /// Where stages that must be computed run.
    pub executor: &'a dyn Executor,
}

/// What one worker reports: the stage, its record, and its artifact when it has one.
type Done = (usize, StageRecord, Option<Artifact>);

/// The state of one run's schedule.
#[derive(Default)]
struct Schedule {
    /// Stages not started yet, in execution order.
    pending: Vec<usize>,
    running: BTreeSet<usize>,
    artifacts: BTreeMap<usize, Artifact>,
    /// Stages whose output is not available, with why.
    blocked: BTreeMap<usize, String>,
    /// A blocked stage → the stage whose failure (or absence) blocked it, directly or not.
    root: BTreeMap<usize, usize>,
    /// The selected stages skipped because of each root, summarised in one line at the end.
    skipped: BTreeMap<usize, Vec<usize>>,
    records: BTreeMap<usize, StageRecord>,
}

impl<'a> Runner<'a> {
    /// Run the selected stages. Unselected ancestors are reused if cached, never run.
    pub fn run(&self, selected: &BTreeSet<usize>, opts: &RunOptions) -> Vec<StageRecord> {
        let swept = self.store.sweep();
        if swept > 0 {
            self.bars.println(&format!(
                "swept {swept} orphaned temp folder(s) from an interrupted run"
            ));
        }
        let needed = self.graph.with_ancestors(selected);
        let order: Vec<usize> = self.graph.order().filter(|i| needed.contains(i)).collect();
        let mut schedule = Schedule {
            pending: order.clone(),
            ..Schedule::default()
        };
        let (tx, rx) = mpsc::channel::<Done>();
        std::thread::scope(|scope| {
            loop {
                self.start_ready(scope, &mut schedule, selected, opts, &tx);
                if schedule.running.is_empty() {
                    break;
                }
                let done = rx.recv().expect("a worker always reports");
                self.finish(&mut schedule, selected, done);
            }
        });
        for (root, stages) in &schedule.skipped {
            self.bars
                .println(&self.skipped_line(&schedule, *root, stages));
        }
        // Report in pipeline order.
        order
            .iter()
            .filter_map(|i| schedule.records.remove(i))
            .collect()
    }

    /// Start every pending stage whose inputs are resolved, up to `jobs` at once; settle those
    /// whose inputs are not available.
    fn start_ready<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        schedule: &mut Schedule,
        selected: &'s BTreeSet<usize>,
        opts: &'s RunOptions,
        tx: &mpsc::Sender<Done>,
    ) {
        let jobs = opts.jobs.max(1);
        let mut idx = 0;
        while idx < schedule.pending.len() {
            let i = schedule.pending[idx];
            let ups = self.graph.upstream(i);
            if let Some(bad) = ups.iter().find(|u| schedule.blocked.contains_key(u)) {
                self.block(schedule, selected, opts, i, *bad);
                schedule.pending.remove(idx);
                continue;
            }
            let ready = ups.iter().all(|u| schedule.artifacts.contains_key(u));
            if !ready || schedule.running.len() >= jobs {
                idx += 1;
                continue;
            }
            schedule.pending.remove(idx);
            let inputs: BTreeMap<String, Artifact> = ups
                .iter()
                .map(|u| {
                    let id = self.pipeline.stages[*u].id.clone();
                    (id, schedule.artifacts[u].clone())
                })
                .collect();
            let reuse_only = !selected.contains(&i);
            let tx = tx.clone();
            schedule.running.insert(i);
            scope.spawn(move || {
                let (rec, art) = self.resolve(i, inputs, opts, reuse_only);
                let _ = tx.send((i, rec, art));
            });
        }
    }

    /// Stage `i` cannot run because its input `bad` is not available.
    fn block(
        &self,
        schedule: &mut Schedule,
        selected: &BTreeSet<usize>,
        opts: &RunOptions,
        i: usize,
        bad: usize,
    ) {
        let bad_id = &self.pipeline.stages[bad].id;
        let why = format!("input `{bad_id}` is not available");
        schedule.blocked.insert(i, why.clone());
        let root = schedule.root.get(&bad).copied().unwrap_or(bad);
        schedule.root.insert(i, root);
        if !selected.contains(&i) {
            return;
        }
        // In a dry run a blocked stage is one that would run after its inputs.
        let rec = if opts.dry_run {
            let mut r = self.record(i, None, Outcome::Miss, 0.0, None);
            r.notes.push(format!("would run after `{bad_id}`"));
            r
        } else {
            self.record(i, None, Outcome::Skipped, 0.0, Some(why))
        };
        if opts.dry_run {
            self.summary(&rec);
        } else {
            schedule.skipped.entry(root).or_default().push(i);
        }
        schedule.records.insert(i, rec);
    }

    /// One line for every stage skipped because `root` failed (or is not available).
    fn skipped_line(&self, schedule: &Schedule, root: usize, stages: &[usize]) -> String {
        let ids: Vec<&str> = stages
            .iter()
            .map(|i| self.pipeline.stages[*i].id.as_str())
            .collect();
        let what = match schedule.records.get(&root).map(|r| r.outcome) {
            Some(Outcome::Failed) => "failed",
            _ => "is not available",
        };
        let root_id = &self.pipeline.stages[root].id;
        format!(
            "{:>8}  {} (`{root_id}` {what})",
            Outcome::Skipped.word(),
            ids.join(", ")
        )
    }

    /// A worker finished stage `i`.
    fn finish(&self, schedule: &mut Schedule, selected: &BTreeSet<usize>, done: Done) {
        let (i, rec, art) = done;
        schedule.running.remove(&i);
        match art {
            Some(a) => {
                schedule.artifacts.insert(i, a);
            }
            None => {
                schedule
                    .blocked
                    .insert(i, rec.error.clone().unwrap_or_default());
                schedule.root.insert(i, i);
            }
        }
        if selected.contains(&i) {
            self.summary(&rec);
            schedule.records.insert(i, rec);
        } else if let Some(err) = &rec.error {
            self.bars.println(&format!("error: {err}"));
        }
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
            remote_bytes: None,
            pushed: None,
            job: None,
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
        // Continuation lines of a long note or error stay under its first line.
        let indent = |text: &str| text.replace('\n', "\n                ");
        for note in &rec.notes {
            line.push_str(&format!("\n          note: {}", indent(note)));
        }
        if let Some(e) = &rec.error {
            line.push_str(&format!("\n          error: {}", indent(e)));
        }
        self.bars.println(&line);
    }
}

/// An error and its sources, joined with ": " (one implementation, in the cache layer).
pub use crate::cache::error_chain as chain;
