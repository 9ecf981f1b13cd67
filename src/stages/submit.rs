//! `submit`: the Kaggle submission CSV for the test images (a cached artifact, also exported to
//! the `output` path of the pipeline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::artifacts::Split;
use crate::config::StageSpec;
use crate::labels::CLASS_NAMES;

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};
use crate::model::recipe::Device;

use super::{StageContext, StageError, StageKindDef, StageOutcome};

pub struct Submit;

pub const FILE: &str = "submission.csv";

impl StageKindDef for Submit {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "submit",
        code_version: 3,
        seed: SeedUse::Unused,
        path_params: &["output"],
        accepts: &["train", "ensemble", "command", "crop"],
        requires: &[super::ensemble::MODEL, Need::one(&["crop"])],
        job: JobShape::MODEL,
    });
    type Params = SubmitParams;

    fn exports(&self, p: &SubmitParams, spec: &StageSpec) -> Vec<(String, PathBuf)> {
        vec![(FILE.to_string(), spec.resolve(&p.output))]
    }

    fn run(&self, p: &SubmitParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let model = ctx.input_for(&super::ensemble::MODEL)?;
        let crops = super::crop::input_crops(ctx)?;
        let mut test: Vec<usize> = (0..crops.ids.len())
            .filter(|&i| crops.splits[i] == Split::Test)
            .collect();
        if test.is_empty() {
            return Err(StageError::msg(
                "no test images in the crops (is ingest.test_images set?)",
            ));
        }
        test.sort_by_key(|&i| crops.ids[i]);
        ctx.progress
            .start(test.len() as u64, "images", "predicting");
        let mut notes = vec![format!("{} test predictions", test.len())];
        let preds = match super::command::predictions_of(model, &crops, &test)? {
            Some(from_program) => from_program,
            None => {
                let device = crate::model::device::resolve_noted(p.device, &mut notes)?;
                crate::model::inference::predict_on_device(
                    &model.dir, device, &crops, &test, p.tta,
                )?
            }
        };
        let mut csv = format!("GalaxyID,{}\n", CLASS_NAMES.join(","));
        for (&i, pred) in test.iter().zip(&preds) {
            write!(csv, "{}", crops.ids[i]).expect("string write");
            for v in pred {
                write!(csv, ",{:.6}", v.clamp(0.0, 1.0)).expect("string write");
            }
            csv.push('\n');
        }
        let path = ctx.out_dir.join(FILE);
        std::fs::write(&path, csv).map_err(|e| StageError::io("writing", &path, e))?;
        let mut metrics = BTreeMap::new();
        metrics.insert("test_images".into(), test.len() as f64);
        Ok(StageOutcome { metrics, notes })
    }
}

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

/// `submit`: the Kaggle submission CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    /// Where the CSV is exported (atomically), relative to the pipeline file that sets it.
    #[serde(default = "defaults::output_csv")]
    #[schemars(length(min = 1))]
    pub output: String,
    /// Average predictions over the 8 rotations/flips of each crop (test-time augmentation).
    #[serde(default)]
    pub tta: bool,
    /// Where to run inference (as for `train`).
    #[serde(default)]
    pub device: Device,
}

impl Params for SubmitParams {}

/// Defaults, one function each (serde needs functions).
mod defaults {
    pub fn output_csv() -> String {
        "submission.csv".into()
    }
}
