//! The JSON Schema of pipeline files, generated from the parameter types. It accepts what
//! galaxy-pipe accepts: a stage table names its `kind` (its keys checked against that kind), or
//! — in a file that `extends` another, or with `like` — overrides a stage declared elsewhere (its
//! kind unknown here: keys checked against those of every kind).

use serde_json::{Map, Value, json};

use crate::kind::{KindCatalog, StageKind};

/// The JSON Schema of pipeline files whose stages are of the kinds in `kinds`.
pub fn pipeline_schema(kinds: &dyn KindCatalog) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut variants = Vec::new();
    let mut refs = Vec::new();
    let resources = generator
        .subschema_for::<crate::config::Resources>()
        .to_value();
    let settings = generator
        .subschema_for::<crate::config::PipelineSettings>()
        .to_value();
    for kind in kinds.kinds() {
        let schema = kind.schema(&mut generator);
        refs.push((kind.kind(), schema.to_value()));
    }
    let mut defs: Map<String, Value> = generator.definitions().clone().into_iter().collect();
    for (kind, reference) in refs {
        variants.push(kind_variant(kind, &reference, &mut defs, &resources));
    }
    variants.push(override_table(&variants));
    // A file that extends another may set a few settings; the chain as a whole needs a name.
    let settings_name = settings["$ref"].as_str().and_then(|r| r.rsplit('/').next());
    if let Some(def) = settings_name.and_then(|name| defs.get_mut(name)) {
        def.as_object_mut().expect("object").remove("required");
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "galaxy-pipe pipeline",
        "description": "A galaxy-pipe pipeline file: `[pipeline]` settings and `[stages.<id>]` tables.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "extends": { "type": "string", "description": "Another pipeline file (relative to this one) whose keys this file overrides." },
            "pipeline": settings,
            "stages": {
                "type": "object",
                "additionalProperties": { "oneOf": variants }
            }
        },
        // Without `extends`, everything is declared here: the pipeline's name, and every stage by
        // its kind or like another stage.
        "if": { "not": { "required": ["extends"] } },
        "then": {
            "required": ["pipeline"],
            "properties": {
                "pipeline": { "required": ["name"] },
                "stages": {
                    "additionalProperties": {
                        "anyOf": [{ "required": ["kind"] }, { "required": ["like"] }]
                    }
                }
            }
        },
        "$defs": defs,
    })
}

/// The table of one kind's stage: its parameter struct (taken out of `defs`, inlined) plus the
/// keys every stage has (`kind`, `inputs`, `resources`, `like`), `kind` required.
fn kind_variant(
    kind: StageKind,
    reference: &Value,
    defs: &mut Map<String, Value>,
    resources: &Value,
) -> Value {
    let name = reference["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .expect("a $ref")
        .to_string();
    let mut stage = defs.remove(&name).expect("definition present");
    // A kind without parameters of its own (`ensemble`) has no `properties` yet.
    if stage.get("properties").is_none() {
        stage["properties"] = json!({});
    }
    let props = stage["properties"]
        .as_object_mut()
        .expect("struct schema has properties");
    props.insert(
        "kind".into(),
        json!({ "const": kind.name(), "description": "The stage kind." }),
    );
    props.insert(
        "inputs".into(),
        json!({ "type": "array", "items": { "type": "string" }, "description": "Ids of the upstream stages this stage reads." }),
    );
    let mut resources = resources.clone();
    resources["description"] = json!(
        "What the stage's job asks of a cluster scheduler (`executor = \"slurm\"`); not part of the cache key."
    );
    props.insert("resources".into(), resources);
    props.insert("like".into(), like_schema());
    let required = stage
        .as_object_mut()
        .expect("object")
        .entry("required")
        .or_insert_with(|| json!([]));
    required
        .as_array_mut()
        .expect("array")
        .insert(0, json!("kind"));
    stage
}

fn like_schema() -> Value {
    json!({
        "type": "string",
        "description": "Copy another stage's table (kind, inputs, parameters, resources); this table's keys override it."
    })
}

/// A stage table without `kind`: an override of a stage declared in the file this one extends,
/// or a stage `like` another. Its keys must be keys of some kind (or the keys every stage has).
fn override_table(variants: &[Value]) -> Value {
    let mut union: Map<String, Value> = Map::new();
    for variant in variants {
        let props = variant["properties"].as_object().expect("properties");
        for (key, schema) in props.iter().filter(|(k, _)| *k != "kind") {
            match union.get_mut(key) {
                None => {
                    union.insert(key.clone(), schema.clone());
                }
                Some(existing) if existing == schema => {}
                Some(existing) => {
                    let mut options = match existing.get("anyOf") {
                        Some(Value::Array(a))
                            if existing.as_object().is_some_and(|o| o.len() == 1) =>
                        {
                            a.clone()
                        }
                        _ => vec![existing.clone()],
                    };
                    if !options.contains(schema) {
                        options.push(schema.clone());
                    }
                    *existing = json!({ "anyOf": options });
                }
            }
        }
    }
    json!({
        "type": "object",
        "description": "Overrides a stage declared in the file this one extends (or copies one with `like`): keys of its kind.",
        "not": { "required": ["kind"] },
        "additionalProperties": false,
        "properties": union,
    })
}

/// The schema as committed: pretty JSON with a trailing newline.
pub fn pipeline_schema_text(kinds: &dyn KindCatalog) -> String {
    serde_json::to_string_pretty(&pipeline_schema(kinds)).expect("serialise") + "\n"
}
