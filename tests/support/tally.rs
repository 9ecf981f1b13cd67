//! A toy stage kind, `tally`, declared the way a new kind is added to galaxy-pipe: this one file
//! plus one `.with(tally::Tally)` line in the registry. It counts the ingest catalog's galaxies
//! per split and picks `sample` of them at random with the pipeline seed (so its key records it).

use std::collections::BTreeMap;

use galaxy_pipe::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};
use galaxy_pipe::stages::{StageContext, StageError, StageKindDef, StageOutcome, ingest};
use rand::{SeedableRng, seq::IndexedRandom};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub struct Tally;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TallyParams {
    /// How many galaxy ids to pick at random.
    #[serde(default = "three")]
    #[schemars(range(max = 100))]
    pub sample: u32,
}

fn three() -> u32 {
    3
}

impl Params for TallyParams {}

impl StageKindDef for Tally {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "tally",
        code_version: 1,
        seed: SeedUse::InKey,
        path_params: &[],
        accepts: &["ingest"],
        requires: &[Need::one(&["ingest"])],
        job: JobShape::LIGHT,
    });
    type Params = TallyParams;

    fn run(&self, p: &TallyParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let catalog = ingest::input_catalog(ctx)?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for row in &catalog {
            *counts.entry(format!("{:?}", row.split)).or_default() += 1;
        }
        let ids: Vec<u64> = catalog.iter().map(|r| r.id).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ctx.seed()?);
        let sample: Vec<u64> = ids
            .choose_multiple(&mut rng, p.sample as usize)
            .copied()
            .collect();
        let text = serde_json::json!({ "counts": counts, "sample": sample }).to_string();
        let out = ctx.out_dir.join("tally.json");
        std::fs::write(&out, text).map_err(|e| StageError::io("writing", out, e))?;
        let metrics = counts.into_iter().map(|(k, v)| (k, v as f64)).collect();
        Ok(StageOutcome {
            metrics,
            notes: Vec::new(),
        })
    }
}
