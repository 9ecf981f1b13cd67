//! Stage templates: `like = "train"` copies another stage's table — kind, inputs, parameters,
//! resources — and the stage's own keys override it, in the spirit of Snakemake's
//! `use rule … with:`. Expanded on the merged tree, before `--set` overrides and before parsing,
//! so a stage written with `like` has exactly the key it would have written out in full.

use super::error::ConfigError;
use super::source::{Node, NodeKind, Sources, merge};

/// The key naming a stage's template.
pub const LIKE: &str = "like";

/// Replace every stage table that has `like` with its template's table, its own keys merged
/// over it (templates of templates resolved first). A missing or cyclic `like` is an error at
/// the `like` value.
pub fn expand(root: &mut Node, sources: &Sources) -> Result<(), ConfigError> {
    let Some(stages) = stages_of(root) else {
        return Ok(());
    };
    let snapshot = stages.clone();
    let mut errors = Vec::new();
    let NodeKind::Table(table) = &mut stages.kind else {
        return Ok(());
    };
    for (id, node) in table.0.iter_mut() {
        if node.as_table().is_some_and(|t| t.get(LIKE).is_some()) {
            match resolve(id, &snapshot, sources, &mut vec![id.clone()]) {
                Ok(expanded) => *node = expanded,
                Err(e) => errors.push(e),
            }
        }
    }
    ConfigError::many(errors).map_or(Ok(()), Err)
}

fn stages_of(root: &mut Node) -> Option<&mut Node> {
    let NodeKind::Table(top) = &mut root.kind else {
        return None;
    };
    top.get_mut("stages").filter(|s| s.as_table().is_some())
}

/// The table of stage `id` with its template applied; `chain` holds the stages being resolved.
fn resolve(
    id: &str,
    stages: &Node,
    sources: &Sources,
    chain: &mut Vec<String>,
) -> Result<Node, ConfigError> {
    let node = stages
        .as_table()
        .and_then(|t| t.get(id))
        .expect("a stage id");
    let Some(like) = node.as_table().and_then(|t| t.get(LIKE)) else {
        return Ok(node.clone());
    };
    let at = |message: String, help: Option<String>| {
        ConfigError::at(
            sources,
            like.origin.source,
            like.origin.value.clone(),
            message,
            help,
        )
    };
    let target = match &like.kind {
        NodeKind::Leaf {
            value: toml::Value::String(s),
            ..
        } => s.clone(),
        _ => {
            let message = format!("`stages.{id}.like` must be a string: the id of another stage");
            return Err(at(message, None));
        }
    };
    let ids: Vec<String> = stages
        .as_table()
        .expect("a table")
        .keys()
        .map(String::from)
        .collect();
    if !ids.contains(&target) {
        let near = super::error::did_you_mean(&target, &ids);
        let help = near.map(|s| format!("did you mean `{s}`?"));
        return Err(at(
            format!("`stages.{id}.like`: there is no stage `{target}`"),
            help,
        ));
    }
    if chain.contains(&target) {
        let mut path = chain.clone();
        path.push(target);
        let message = format!("`like` cycle: {}", path.join(" → "));
        return Err(at(
            message,
            Some("a template must not be like itself, directly or through others".into()),
        ));
    }
    chain.push(target.clone());
    let mut expanded = resolve(&target, stages, sources, chain)?;
    chain.pop();
    let mut own = node.clone();
    if let NodeKind::Table(t) = &mut own.kind {
        t.remove(LIKE);
    }
    let origin = own.origin.clone();
    merge(&mut expanded, own);
    expanded.origin = origin;
    Ok(expanded)
}
