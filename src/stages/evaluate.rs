//! `evaluate`: the trained network on the validation split — RMSE overall, per question and per
//! class, side by side with every baseline given as input, and the share of predictions that are
//! a consistent answer set of the decision tree.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use plotters::prelude::*;

use crate::artifacts::{self, Split};
use crate::config::{StageKind, StageParams};
use crate::labels::{CLASS_NAMES, N_CLASSES, QUESTIONS, tree_deviation};
use crate::model::{Resolved, device, inference};

use super::{Stage, StageContext, StageError, StageOutcome};

pub struct Evaluate;

/// RMSE overall, per question (11) and per class (37).
#[derive(Debug, Clone)]
pub struct Scores {
    pub overall: f64,
    pub questions: Vec<f64>,
    pub classes: Vec<f64>,
}

pub fn score(pred: &[[f32; N_CLASSES]], truth: &[[f32; N_CLASSES]]) -> Scores {
    let n = pred.len().max(1) as f64;
    let mut sq = [0f64; N_CLASSES];
    for (p, t) in pred.iter().zip(truth) {
        for c in 0..N_CLASSES {
            sq[c] += (p[c] as f64 - t[c] as f64).powi(2);
        }
    }
    let classes: Vec<f64> = sq.iter().map(|s| (s / n).sqrt()).collect();
    let questions = QUESTIONS
        .iter()
        .map(|q| {
            (q.columns.clone().map(|c| sq[c]).sum::<f64>() / (n * q.columns.len() as f64)).sqrt()
        })
        .collect();
    Scores {
        overall: (sq.iter().sum::<f64>() / (n * N_CLASSES as f64)).sqrt(),
        questions,
        classes,
    }
}

/// Predict `indices` with the model stored in `model_dir`, on the device `requested` resolves to.
pub fn predict(
    model_dir: &Path,
    requested: crate::config::params::Device,
    crops: &artifacts::Crops,
    indices: &[usize],
    tta: bool,
) -> Result<Vec<[f32; N_CLASSES]>, String> {
    let (resolved, _) = device::resolve(requested)?;
    match resolved {
        Resolved::Cpu => {
            let dev = burn::backend::flex::FlexDevice;
            let (net, _) = inference::load_model::<burn::backend::Flex>(model_dir, &dev)?;
            Ok(inference::predict_crops(&net, &dev, crops, indices, tta))
        }
        #[cfg(feature = "cuda")]
        Resolved::Cuda => {
            let dev = Default::default();
            let (net, _) = inference::load_model::<burn::backend::Cuda>(model_dir, &dev)?;
            Ok(inference::predict_crops(&net, &dev, crops, indices, tta))
        }
    }
}

impl Stage for Evaluate {
    fn code_version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let StageParams::Evaluate(p) = &ctx.spec.params else {
            unreachable!("registry maps evaluate to Evaluate")
        };
        let model_dir = &ctx.input_of(StageKind::Train)?.dir;
        let crops =
            artifacts::read_crops(&ctx.input_of(StageKind::Crop)?.dir.join("crops.parquet"))
                .map_err(|e| StageError::Other(Box::new(e)))?;
        let valid: Vec<usize> = (0..crops.ids.len())
            .filter(|&i| crops.splits[i] == Split::Valid && crops.labels[i].is_some())
            .collect();
        if valid.is_empty() {
            return Err(StageError::msg(
                "no labelled validation crops to evaluate on",
            ));
        }
        let truth: Vec<[f32; N_CLASSES]> = valid
            .iter()
            .map(|&i| crops.labels[i].expect("labelled"))
            .collect();
        ctx.progress.start(valid.len() as u64, "predicting");
        let preds = predict(model_dir, p.device, &crops, &valid, p.tta).map_err(StageError::msg)?;
        ctx.progress.set_position(valid.len() as u64);

        let mut table: Vec<(String, Scores)> = vec![("model".into(), score(&preds, &truth))];
        let consistent = preds
            .iter()
            .filter(|p| tree_deviation(&p[..]) < 1e-3)
            .count() as f64
            / preds.len() as f64;
        // Baselines side by side, on the same galaxies.
        let truth_by_id: HashMap<u64, [f32; N_CLASSES]> = valid
            .iter()
            .map(|&i| (crops.ids[i], crops.labels[i].expect("labelled")))
            .collect();
        for (id, input) in ctx
            .inputs
            .iter()
            .filter(|(_, i)| i.kind == StageKind::Baseline)
        {
            for (method, rows) in
                artifacts::read_predictions(&input.dir.join("predictions.parquet"))
                    .map_err(|e| StageError::Other(Box::new(e)))?
            {
                let (p, t): (Vec<_>, Vec<_>) = rows
                    .iter()
                    .filter_map(|(g, pr)| truth_by_id.get(g).map(|t| (*pr, *t)))
                    .unzip();
                if !p.is_empty() {
                    table.push((format!("{id}:{method}"), score(&p, &t)));
                }
            }
        }

        let ids: Vec<u64> = valid.iter().map(|&i| crops.ids[i]).collect();
        let pred_rows: Vec<(u64, &str, [f32; N_CLASSES])> = ids
            .iter()
            .zip(&preds)
            .map(|(g, p)| (*g, "model", *p))
            .collect();
        super::baseline::write_predictions(&ctx.out_dir.join("predictions.parquet"), &pred_rows)?;
        write_metrics(&ctx.out_dir.join("metrics.parquet"), &table)?;
        per_class_chart(&ctx.out_dir.join("per_class_rmse.png"), &table)?;

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
            "validation RMSE on {} galaxies{}:\n",
            valid.len(),
            if p.tta { " (8-fold TTA)" } else { "" }
        );
        for (name, s) in &table {
            text.push_str(&format!("            {name:<28} {:.5}\n", s.overall));
        }
        text.push_str(&format!(
            "            tree-consistent predictions: {:.1}%",
            100.0 * consistent
        ));
        Ok(StageOutcome {
            metrics,
            notes: vec![text],
        })
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
    artifacts::write_parquet(path, &batch).map_err(|e| StageError::Other(Box::new(e)))
}

fn plot_err(e: impl std::fmt::Display) -> StageError {
    StageError::msg(format!("drawing the per-class chart: {e}"))
}

/// Per-class RMSE: bars for the model, a line per baseline.
fn per_class_chart(path: &Path, table: &[(String, Scores)]) -> Result<(), StageError> {
    crate::figures::register_font();
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
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
        .map_err(plot_err)?
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
            .map_err(plot_err)?
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
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}
