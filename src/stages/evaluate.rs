//! `evaluate`: the trained network on the validation split — RMSE overall, per question and per
//! class, side by side with every baseline given as input (and each member of an ensemble), and
//! the share of predictions that are a consistent answer set of the decision tree.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use plotters::prelude::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::artifacts::{self, Split};
use crate::labels::{CLASS_NAMES, Labels, QUESTIONS, tree_deviation};
use crate::metrics::{Scores, score};
use crate::model::{device, ensemble, inference};

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};
use crate::model::recipe::Device;

use super::{StageContext, StageError, StageKindDef, StageOutcome};

pub struct Evaluate;

impl StageKindDef for Evaluate {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "evaluate",
        code_version: 3,
        seed: SeedUse::Unused,
        path_params: &[],
        accepts: &["train", "ensemble", "command", "crop", "baseline"],
        requires: &[super::ensemble::MODEL, Need::one(&["crop"])],
        job: JobShape::MODEL,
    });
    type Params = EvaluateParams;

    fn run(&self, p: &EvaluateParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let model = ctx.input_for(&super::ensemble::MODEL)?;
        let crops = super::crop::input_crops(ctx)?;
        let valid: Vec<usize> = (0..crops.ids.len())
            .filter(|&i| crops.splits[i] == Split::Valid && crops.labels[i].is_some())
            .collect();
        if valid.is_empty() {
            return Err(StageError::msg(
                "no labelled validation crops to evaluate on",
            ));
        }
        let truth: Vec<crate::labels::Labels> = valid
            .iter()
            .map(|&i| crops.labels[i].expect("labelled"))
            .collect();
        ctx.progress
            .start(valid.len() as u64, "images", "predicting");
        let mut device_notes = Vec::new();
        let members = match super::command::predictions_of(model, &crops, &valid)? {
            Some(from_program) => vec![("command".to_string(), from_program)],
            None => {
                let device = device::resolve_noted(p.device, &mut device_notes)?;
                inference::predict_members_on_device(&model.dir, device, &crops, &valid, p.tta)?
            }
        };
        ctx.progress.set_position(valid.len() as u64);
        let preds = ensemble::mean(
            &members
                .iter()
                .map(|(_, m)| m.as_slice())
                .collect::<Vec<_>>(),
        );
        // An ensemble's members are scored beside their mean.
        let members: Vec<(String, Vec<Labels>)> = if members.len() > 1 {
            members
                .into_iter()
                .map(|(name, m)| (format!("member:{name}"), m))
                .collect()
        } else {
            Vec::new()
        };

        let mut table: Vec<(String, Scores)> = vec![("model".into(), score(&preds, &truth))];
        table.extend(
            members
                .iter()
                .map(|(name, m)| (name.clone(), score(m, &truth))),
        );
        let consistent = preds
            .iter()
            .filter(|p| tree_deviation(&p[..]) < 1e-3)
            .count() as f64
            / preds.len() as f64;
        // Baselines side by side, on the same galaxies.
        let truth_by_id: HashMap<u64, crate::labels::Labels> = valid
            .iter()
            .map(|&i| (crops.ids[i], crops.labels[i].expect("labelled")))
            .collect();
        table.extend(baseline_scores(ctx, &truth_by_id)?);

        let ids: Vec<u64> = valid.iter().map(|&i| crops.ids[i]).collect();
        let mut pred_rows: Vec<(u64, &str, Labels)> = ids
            .iter()
            .zip(&preds)
            .map(|(g, p)| (*g, "model", *p))
            .collect();
        for (name, m) in &members {
            pred_rows.extend(ids.iter().zip(m).map(|(g, p)| (*g, name.as_str(), *p)));
        }
        artifacts::write_predictions(&ctx.out_dir.join(crate::artifacts::PREDICTIONS), &pred_rows)?;
        write_metrics(&ctx.out_dir.join(crate::artifacts::METRICS), &table)?;
        per_class_chart(&ctx.out_dir.join("per_class_rmse.png"), &table)?;

        let mut outcome = outcome(&table, consistent, valid.len(), p.tta);
        outcome.notes.extend(device_notes);
        Ok(outcome)
    }
}

/// The score of every baseline given as input, on the galaxies of `truth_by_id`.
fn baseline_scores(
    ctx: &StageContext,
    truth_by_id: &HashMap<u64, crate::labels::Labels>,
) -> Result<Vec<(String, Scores)>, StageError> {
    let mut table = Vec::new();
    let baselines = ctx
        .inputs
        .iter()
        .filter(|(_, i)| i.kind == super::baseline::Baseline::KIND);
    for (id, input) in baselines {
        let path = input.dir.join(crate::artifacts::PREDICTIONS);
        for (method, rows) in artifacts::read_predictions(&path)? {
            let (p, t): (Vec<_>, Vec<_>) = rows
                .iter()
                .filter_map(|(g, pr)| truth_by_id.get(g).map(|t| (*pr, *t)))
                .unzip();
            if !p.is_empty() {
                table.push((format!("{id}:{method}"), score(&p, &t)));
            }
        }
    }
    Ok(table)
}

/// The metrics (model RMSE overall and per question, each baseline, tree consistency) and the
/// note that lists them.
fn outcome(table: &[(String, Scores)], consistent: f64, n: usize, tta: bool) -> StageOutcome {
    let mut metrics = BTreeMap::new();
    metrics.insert("rmse".into(), table[0].1.overall);
    for (q, s) in QUESTIONS.iter().zip(&table[0].1.questions) {
        metrics.insert(format!("rmse_q{}", q.number), *s);
    }
    metrics.insert("tree_consistent".into(), consistent);
    for (name, s) in &table[1..] {
        metrics.insert(format!("rmse_{}", name.replace(':', "_")), s.overall);
    }
    let mut text = format!(
        "validation RMSE on {n} galaxies{}:\n",
        if tta { " (8-fold TTA)" } else { "" }
    );
    for (name, s) in table {
        text.push_str(&format!("            {name:<28} {:.5}\n", s.overall));
    }
    text.push_str(&format!(
        "            tree-consistent predictions: {:.1}%",
        100.0 * consistent
    ));
    StageOutcome {
        metrics,
        notes: vec![text],
    }
}

fn write_metrics(path: &Path, table: &[(String, Scores)]) -> Result<(), StageError> {
    let mut who = Vec::new();
    let mut scope = Vec::new();
    let mut value = Vec::new();
    for (name, s) in table {
        who.push(name.clone());
        scope.push("overall".to_string());
        value.push(s.overall);
        for (q, v) in QUESTIONS.iter().zip(&s.questions) {
            who.push(name.clone());
            scope.push(format!("Q{}", q.number));
            value.push(*v);
        }
        for (c, v) in CLASS_NAMES.iter().zip(&s.classes) {
            who.push(name.clone());
            scope.push(c.to_string());
            value.push(*v);
        }
    }
    let schema = artifacts::evaluation_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(who)),
        Arc::new(StringArray::from(scope)),
        Arc::new(Float64Array::from(value)),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).expect("columns match");
    Ok(artifacts::write_parquet(path, &batch)?)
}

/// Per-class RMSE: bars for the model, a line per baseline.
fn per_class_chart(path: &Path, table: &[(String, Scores)]) -> Result<(), StageError> {
    crate::figures::register_font();
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(StageError::drawing("the per-class chart"))?;
    let max = table
        .iter()
        .flat_map(|(_, s)| s.classes.iter().copied())
        .fold(1e-6, f64::max);
    let mut chart =
        crate::figures::class_axes(&root, "Validation RMSE per class", "RMSE", max * 1.1)
            .map_err(StageError::msg)?;
    chart
        .draw_series(table[0].1.classes.iter().enumerate().map(|(i, v)| {
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                RGBColor(70, 110, 180).filled(),
            )
        }))
        .map_err(StageError::drawing("the per-class chart"))?
        .label("model")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 14, y + 5)],
                RGBColor(70, 110, 180).filled(),
            )
        });
    let palette = [
        RGBColor(200, 80, 60),
        RGBColor(60, 160, 90),
        RGBColor(150, 90, 180),
        RGBColor(220, 150, 30),
    ];
    for (k, (name, s)) in table.iter().skip(1).enumerate() {
        let colour = palette[k % palette.len()];
        chart
            .draw_series(LineSeries::new(
                s.classes
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (SegmentValue::CenterOf(i), *v)),
                colour.stroke_width(2),
            ))
            .map_err(StageError::drawing("the per-class chart"))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(StageError::drawing("the per-class chart"))?;
    root.present()
        .map_err(StageError::drawing("the per-class chart"))
}

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

/// `evaluate`: RMSE on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Average predictions over the 8 rotations/flips of each crop (test-time augmentation).
    #[serde(default)]
    pub tta: bool,
    /// Where to run inference (as for `train`).
    #[serde(default)]
    pub device: Device,
}

impl Params for EvaluateParams {}
