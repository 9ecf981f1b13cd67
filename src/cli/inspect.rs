//! `schema`, `validate`, `dag`: what the pipeline file says, without the cache.

use serde_json::json;

use super::output::{emit, print};
use super::pipeline::load;
use super::{CliError, Context, DagFormat, PipelineArgs, exit};

pub fn schema(ctx: &Context, artifacts: bool) -> Result<i32, CliError> {
    if artifacts {
        print(&crate::artifacts::documented_schemas_text())?;
    } else {
        print(&crate::schema::pipeline_schema_text(ctx.registry))?;
    }
    Ok(exit::OK)
}

pub fn validate(ctx: &Context, args: &PipelineArgs) -> Result<i32, CliError> {
    let (pipeline, graph) = load(ctx, args)?;
    let order: Vec<&str> = graph
        .order()
        .map(|i| pipeline.stages[i].id.as_str())
        .collect();
    // The setup (input folders that exist) is checked too, as warnings: the file is valid.
    let warnings: Vec<String> = pipeline
        .stages
        .iter()
        .filter_map(|spec| {
            let problem = ctx.registry.stage(spec.kind)?.check_setup(spec)?;
            Some(format!("stage `{}`: {problem}", spec.id))
        })
        .collect();
    for w in &warnings {
        eprintln!("warning: {w}\n");
    }
    let value =
        json!({ "ok": true, "pipeline": pipeline.name, "stages": order, "warnings": warnings });
    let text = format!(
        "ok: pipeline `{}`, {} stages ({}){}\n",
        pipeline.name,
        order.len(),
        order.join(" → "),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(
                " — with {} warning(s) above: it will not run as it is",
                warnings.len()
            )
        }
    );
    emit(ctx.json, &value, &text)?;
    Ok(exit::OK)
}

pub fn dag(ctx: &Context, args: &PipelineArgs, format: DagFormat) -> Result<i32, CliError> {
    let (pipeline, graph) = load(ctx, args)?;
    let stages: Vec<_> = graph
        .order()
        .map(|i| &pipeline.stages[i])
        .map(|s| json!({ "id": s.id, "kind": s.kind.name(), "inputs": s.inputs }))
        .collect();
    let value = json!({ "pipeline": pipeline.name, "stages": stages });
    let text = match format {
        DagFormat::Text => graph.to_text(&pipeline),
        DagFormat::Dot => graph.to_dot(&pipeline),
        DagFormat::Mermaid => graph.to_mermaid(&pipeline),
    };
    emit(ctx.json, &value, &text)?;
    Ok(exit::OK)
}
