//! `ensemble`: the networks of two or more `train` stages as one model. `evaluate` and `submit`
//! read it where they read a `train` stage and average the members' predictions (and `evaluate`
//! scores each member beside the mean).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::ensemble::{self, NetworkDir};

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};

use super::{StageContext, StageError, StageKindDef, StageOutcome};

pub struct Ensemble;

impl StageKindDef for Ensemble {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "ensemble",
        code_version: 1,
        seed: SeedUse::Unused,
        path_params: &[],
        accepts: &["train"],
        requires: &[Need::at_least(2, &["train"])],
        job: JobShape::LIGHT,
    });
    type Params = EnsembleParams;

    fn run(&self, _p: &EnsembleParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        // Members in stage-id order: the same ensemble whatever order `inputs` lists them in.
        let networks: Vec<NetworkDir> = ctx
            .inputs
            .iter()
            .filter(|(_, i)| i.kind == super::train::Train::KIND)
            .map(|(id, i)| NetworkDir {
                name: id.clone(),
                dir: i.dir.clone(),
            })
            .collect();
        let archs = ensemble::write(&ctx.out_dir, &networks)?;
        let names: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
        let mut metrics = BTreeMap::new();
        metrics.insert("members".into(), networks.len() as f64);
        Ok(StageOutcome {
            metrics,
            notes: vec![format!(
                "{} networks on {}-pixel crops: {}",
                networks.len(),
                archs[0].input_size,
                names.join(", ")
            )],
        })
    }
}

/// What `evaluate` and `submit` read their model from: one `train`, `ensemble` or `command` input
/// (a `command` with `produces = "predictions"`).
pub const MODEL: Need = Need::one(&["train", "ensemble", "command"]);

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

/// `ensemble`: the networks of two or more `train` stages as one model; `evaluate` and `submit`
/// average their predictions. It has no parameters of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsembleParams {}

impl Params for EnsembleParams {}
