//! `train`: the CNN declared in the pipeline, trained on the crops with Burn (CUDA or CPU).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, UInt32Array};
use plotters::prelude::*;

use crate::artifacts;
pub use crate::model::recipe::TrainParams;
use crate::model::training::{self, HistoryRow, TrainInputs};
use crate::model::{Architecture, device};

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};

use super::{StageContext, StageError, StageKindDef, StageOutcome};

pub struct Train;

impl StageKindDef for Train {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "train",
        code_version: 4,
        seed: SeedUse::InKey,
        path_params: &[],
        accepts: &["crop"],
        requires: &[Need::one(&["crop"])],
        job: JobShape::MODEL,
    });
    type Params = TrainParams;

    fn run(&self, p: &TrainParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let crops = super::crop::input_crops(ctx)?;
        let arch = Architecture {
            input_size: crops.size,
            conv: p.conv.clone(),
            dense: p.dense.clone(),
            activation: p.activation,
            output: p.output,
        };
        arch.conv_output().map_err(|e| {
            StageError::msg(format!(
                "the architecture does not fit {}-pixel crops: {e}",
                crops.size
            ))
        })?;
        let mut notes: Vec<String> = Vec::new();
        let resolved = device::resolve_noted(p.device, &mut notes)?;

        let inputs = TrainInputs {
            params: p,
            arch: &arch,
            crops: &crops,
            seed: match p.seed {
                Some(own) => own,
                None => ctx.seed()?,
            },
            work_dir: &ctx.work_dir,
            out_dir: &ctx.out_dir,
            progress: ctx.progress,
        };
        let report = training::train_on(resolved, &inputs)?;

        std::fs::write(
            ctx.out_dir.join("model.json"),
            serde_json::to_vec_pretty(&arch).expect("serialise"),
        )
        .map_err(|e| StageError::io("writing", ctx.out_dir.join("model.json"), e))?;
        write_history(
            &ctx.out_dir.join(crate::artifacts::HISTORY),
            &report.history,
        )?;
        loss_curve(&ctx.out_dir.join("loss_curve.png"), &report.history)?;
        if report.resumed_from_epoch > 0 {
            notes.push(format!(
                "resumed from the checkpoint after epoch {}",
                report.resumed_from_epoch
            ));
        }
        notes.push(format!(
            "validation RMSE {:.5} after {} epoch(s); {:.1} images/s; {:.1}% of step time waiting for data",
            report.final_valid_rmse,
            p.epochs,
            report.images_per_sec,
            100.0 * report.data_share
        ));
        let mut metrics = BTreeMap::new();
        metrics.insert("valid_rmse".into(), report.final_valid_rmse);
        metrics.insert("images_per_sec".into(), report.images_per_sec);
        metrics.insert("data_share".into(), report.data_share);
        Ok(StageOutcome { metrics, notes })
    }
}

fn write_history(path: &Path, rows: &[HistoryRow]) -> Result<(), StageError> {
    let schema = artifacts::history_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.epoch))),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.batch).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.loss))),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.valid_rmse).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).expect("columns match");
    Ok(artifacts::write_parquet(path, &batch)?)
}

/// Training loss per batch (and per epoch) on the left, validation RMSE per epoch on the right.
fn loss_curve(path: &Path, rows: &[HistoryRow]) -> Result<(), StageError> {
    crate::figures::register_font();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(StageError::drawing("the loss curve"))?;
    let (left, right) = root.split_horizontally(700);
    let batches: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.batch.is_some())
        .enumerate()
        .map(|(i, r)| (i as f64 + 1.0, r.loss))
        .collect();
    let max_loss = batches.iter().map(|b| b.1).fold(1e-6, f64::max);
    let steps = batches.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&left)
        .caption("Training loss", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..steps, 0f64..max_loss * 1.05)
        .map_err(StageError::drawing("the loss curve"))?;
    chart
        .configure_mesh()
        .x_desc("batch")
        .y_desc("loss")
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(StageError::drawing("the loss curve"))?;
    chart
        .draw_series(LineSeries::new(batches, RGBColor(70, 110, 180)))
        .map_err(StageError::drawing("the loss curve"))?;
    let epochs: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.batch.is_none())
        .filter_map(|r| r.valid_rmse.map(|v| (r.epoch as f64, v)))
        .collect();
    let max_rmse = epochs
        .iter()
        .map(|e| e.1)
        .filter(|v| v.is_finite())
        .fold(1e-6, f64::max);
    let n_epochs = epochs.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&right)
        .caption("Validation RMSE", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..n_epochs + 0.5, 0f64..max_rmse * 1.1)
        .map_err(StageError::drawing("the loss curve"))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("RMSE")
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(StageError::drawing("the loss curve"))?;
    chart
        .draw_series(LineSeries::new(epochs.clone(), RGBColor(200, 80, 60)))
        .map_err(StageError::drawing("the loss curve"))?;
    chart
        .draw_series(
            epochs
                .iter()
                .map(|p| Circle::new(*p, 4, RGBColor(200, 80, 60).filled())),
        )
        .map_err(StageError::drawing("the loss curve"))?;
    root.present()
        .map_err(StageError::drawing("the loss curve"))
}

/// `train`'s parameters are the training recipe (`model::recipe`), checked like any kind's.
impl Params for TrainParams {}
