//! The stage DAG: built from a validated pipeline, checked for cycles, sealed in topological
//! order, and narrowed by `--until` / `--only`.

use std::collections::BTreeSet;

use petgraph::Direction;
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};

use crate::config::{ConfigError, Pipeline, StageSpec, did_you_mean};
use crate::kind::Need;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The pipeline's DAG is invalid (a cycle, an input of the wrong kind); points into the file.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("no stage `{name}` in this pipeline{}", .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownStage {
        name: String,
        suggestion: Option<String>,
    },
}

/// A sealed DAG: an edge runs from an input stage to the stage that reads it.
#[derive(Debug)]
pub struct Graph {
    graph: DiGraph<usize, ()>,
    /// Node indices in a topological order (ties broken by declaration order).
    order: Vec<NodeIndex>,
}

impl Graph {
    pub fn build(pipeline: &Pipeline) -> Result<Self, GraphError> {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..pipeline.stages.len())
            .map(|i| graph.add_node(i))
            .collect();
        for (i, stage) in pipeline.stages.iter().enumerate() {
            for input in &stage.inputs {
                let j = pipeline
                    .stages
                    .iter()
                    .position(|s| &s.id == input)
                    .expect("inputs were validated");
                graph.add_edge(nodes[j], nodes[i], ());
            }
        }
        let order = match toposort(&graph, None) {
            Ok(_) => stable_topo(&graph),
            Err(cycle) => {
                let path = cycle_path(&graph, cycle.node_id(), pipeline);
                let at = pipeline
                    .stages
                    .iter()
                    .position(|s| s.id == path[0])
                    .expect("a stage");
                let next = pipeline.stages[at]
                    .inputs
                    .iter()
                    .position(|i| *i == path[path.len() - 2]);
                let message = format!("the stages form a cycle: {}", path.join(" → "));
                return Err(pipeline
                    .error_at_input(
                        at,
                        next,
                        message,
                        Some("a stage cannot depend on its own output".into()),
                    )
                    .into());
            }
        };
        check_kinds(pipeline)?;
        Ok(Graph { graph, order })
    }

    /// Stage indices (into `pipeline.stages`) in execution order.
    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.order.iter().map(|n| self.graph[*n])
    }

    /// Direct upstream stage indices of stage `i`.
    pub fn upstream(&self, i: usize) -> Vec<usize> {
        let mut up: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| self.graph[n])
            .collect();
        up.sort();
        up
    }

    /// `stages` and every stage they depend on, directly or not.
    pub fn with_ancestors(&self, stages: &BTreeSet<usize>) -> BTreeSet<usize> {
        let reversed = Reversed(&self.graph);
        let mut all = BTreeSet::new();
        for &i in stages {
            let mut dfs = Dfs::new(reversed, NodeIndex::new(i));
            while let Some(n) = dfs.next(reversed) {
                all.insert(self.graph[n]);
            }
        }
        all
    }

    /// The stages a run selects: everything, everything up to and including `until`, or only
    /// the named stages (whose inputs must then already be cached).
    pub fn select(
        &self,
        pipeline: &Pipeline,
        until: Option<&str>,
        only: &[String],
    ) -> Result<BTreeSet<usize>, GraphError> {
        let mut selected = BTreeSet::new();
        if !only.is_empty() {
            for name in only {
                selected.insert(index_of(pipeline, name)?);
            }
            return Ok(selected);
        }
        match until {
            None => selected.extend(0..pipeline.stages.len()),
            Some(name) => {
                let target = index_of(pipeline, name)?;
                selected = self.with_ancestors(&BTreeSet::from([target]));
            }
        }
        Ok(selected)
    }

    /// Text rendering: one line per stage in order, with its inputs.
    pub fn to_text(&self, pipeline: &Pipeline) -> String {
        let mut out = String::new();
        for i in self.order() {
            let s = &pipeline.stages[i];
            let inputs = if s.inputs.is_empty() {
                String::new()
            } else {
                format!(" ← {}", s.inputs.join(", "))
            };
            out.push_str(&format!("{} ({}){inputs}\n", s.id, s.kind));
        }
        out
    }

    pub fn to_dot(&self, pipeline: &Pipeline) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n",
            pipeline.name.replace('"', "'")
        );
        for i in self.order() {
            let s = &pipeline.stages[i];
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n({})\", shape=box];\n",
                s.id, s.id, s.kind
            ));
        }
        for i in self.order() {
            for up in self.upstream(i) {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    pipeline.stages[up].id, pipeline.stages[i].id
                ));
            }
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self, pipeline: &Pipeline) -> String {
        let mut out = String::from("flowchart LR\n");
        for i in self.order() {
            let s = &pipeline.stages[i];
            out.push_str(&format!("  {}[\"{} ({})\"]\n", s.id, s.id, s.kind));
        }
        for i in self.order() {
            for up in self.upstream(i) {
                out.push_str(&format!(
                    "  {} --> {}\n",
                    pipeline.stages[up].id, pipeline.stages[i].id
                ));
            }
        }
        out
    }
}

pub fn index_of(pipeline: &Pipeline, name: &str) -> Result<usize, GraphError> {
    pipeline
        .stages
        .iter()
        .position(|s| s.id == name)
        .ok_or_else(|| {
            let ids: Vec<String> = pipeline
                .stages
                .iter()
                .map(|s: &StageSpec| s.id.clone())
                .collect();
            GraphError::UnknownStage {
                name: name.to_string(),
                suggestion: did_you_mean(name, &ids).map(str::to_string),
            }
        })
}

/// Every input must be of a kind the stage accepts, and each input the kind needs must be there
/// as many times as it allows (one model for `evaluate`, two or more trainings for `ensemble`).
fn check_kinds(pipeline: &Pipeline) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let accepted = stage.kind.decl().accepts;
        for (n, input) in stage.inputs.iter().enumerate() {
            let up = pipeline.stage(input).expect("inputs were validated");
            if !stage.kind.accepts(up.kind) {
                let allowed = if accepted.is_empty() {
                    "no inputs".to_string()
                } else {
                    accepted.join(", ")
                };
                let message = format!(
                    "a `{}` stage cannot read `{input}` (a `{}` stage)",
                    stage.kind, up.kind
                );
                errors.push(pipeline.error_at_input(
                    i,
                    Some(n),
                    message,
                    Some(format!("`{}` accepts: {allowed}", stage.kind)),
                ));
            }
        }
        for need in stage.kind.decl().requires {
            if let Some(message) = unmet(pipeline, stage, need) {
                errors.push(pipeline.error_at_input(i, None, message, None));
            }
        }
    }
    ConfigError::many(errors).map_or(Ok(()), Err)
}

/// What is wrong with `stage`'s inputs for `need`: too few or too many of its kinds.
fn unmet(pipeline: &Pipeline, stage: &StageSpec, need: &Need) -> Option<String> {
    let given: Vec<&str> = stage
        .inputs
        .iter()
        .filter(|id| {
            pipeline
                .stage(id)
                .is_some_and(|up| need.takes(up.kind.name()))
        })
        .map(String::as_str)
        .collect();
    let head = format!("stage `{}` ({})", stage.id, stage.kind);
    let listed = given
        .iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if given.len() < need.min && need.min == 1 {
        Some(format!("{head} needs an input of kind {}", need.describe()))
    } else if given.len() < need.min {
        Some(format!(
            "{head} needs at least {} inputs of kind {}; it has {}{}",
            need.min,
            need.describe(),
            given.len(),
            if given.is_empty() {
                String::new()
            } else {
                format!(": {listed}")
            }
        ))
    } else if given.len() > need.max {
        let most = match need.max {
            1 => "one input".to_string(),
            n => format!("at most {n} inputs"),
        };
        Some(format!(
            "{head} reads {most} of kind {}; it has {}: {listed}",
            need.describe(),
            given.len()
        ))
    } else {
        None
    }
}

/// Kahn's algorithm, always taking the ready stage declared first: the order users expect.
fn stable_topo(graph: &DiGraph<usize, ()>) -> Vec<NodeIndex> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BTreeSet<usize> = graph
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(|n| graph[n])
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(i) = ready.pop_first() {
        let n = NodeIndex::new(i);
        order.push(n);
        for m in graph.neighbors_directed(n, Direction::Outgoing) {
            indegree[m.index()] -= 1;
            if indegree[m.index()] == 0 {
                ready.insert(graph[m]);
            }
        }
    }
    order
}

/// A cycle through `start`, as stage ids, first id repeated at the end.
fn cycle_path(graph: &DiGraph<usize, ()>, start: NodeIndex, pipeline: &Pipeline) -> Vec<String> {
    // Depth-first search for a path from `start` back to itself.
    fn walk(
        graph: &DiGraph<usize, ()>,
        at: NodeIndex,
        start: NodeIndex,
        path: &mut Vec<NodeIndex>,
        seen: &mut Vec<bool>,
    ) -> bool {
        for next in graph.neighbors_directed(at, Direction::Outgoing) {
            if next == start {
                return true;
            }
            if !seen[next.index()] {
                seen[next.index()] = true;
                path.push(next);
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = vec![false; graph.node_count()];
    seen[start.index()] = true;
    walk(graph, start, start, &mut path, &mut seen);
    path.push(start);
    path.into_iter()
        .map(|n| pipeline.stages[graph[n]].id.clone())
        .collect()
}
