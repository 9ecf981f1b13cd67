//! `baseline`: the seed's benchmarks on the validation split — the training-mean predictor and
//! least-squares linear regressions on the central pixel and on the average colour of each crop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, Float64Array, RecordBatch, StringArray, StringBuilder, UInt64Builder,
};
use nalgebra::DMatrix;

use crate::artifacts::{self, Crops, Split};
use crate::config::params::BaselineMethod;
use crate::config::{StageKind, StageParams};
use crate::labels::N_CLASSES;

use super::{Stage, StageContext, StageError, StageOutcome};

pub struct Baseline;

impl BaselineMethod {
    pub fn name(self) -> &'static str {
        match self {
            BaselineMethod::Mean => "mean",
            BaselineMethod::CentralPixel => "central_pixel",
            BaselineMethod::AverageColour => "average_colour",
        }
    }
}

/// Features of one crop for a method (empty for the mean predictor).
fn features(method: BaselineMethod, crops: &Crops, i: usize) -> Vec<f64> {
    let px = crops.pixels_of(i);
    let s = crops.size;
    match method {
        BaselineMethod::Mean => Vec::new(),
        BaselineMethod::CentralPixel => {
            let c = ((s / 2) * s + s / 2) * 3;
            px[c..c + 3].iter().map(|v| *v as f64 / 255.0).collect()
        }
        BaselineMethod::AverageColour => {
            let mut sum = [0f64; 3];
            for p in px.chunks_exact(3) {
                for k in 0..3 {
                    sum[k] += p[k] as f64;
                }
            }
            sum.iter().map(|v| v / (255.0 * (s * s) as f64)).collect()
        }
    }
}

/// Least squares with an intercept: returns a (features+1)×37 coefficient matrix.
pub fn fit(x: &[Vec<f64>], y: &[[f32; N_CLASSES]]) -> Result<DMatrix<f64>, String> {
    let n = x.len();
    let d = x.first().map_or(0, |r| r.len()) + 1;
    let xm = DMatrix::from_fn(n, d, |r, c| if c == 0 { 1.0 } else { x[r][c - 1] });
    let ym = DMatrix::from_fn(n, N_CLASSES, |r, c| y[r][c] as f64);
    let svd = xm.svd(true, true);
    svd.solve(&ym, 1e-12).map_err(|e| e.to_string())
}

pub fn predict(beta: &DMatrix<f64>, x: &[f64]) -> [f32; N_CLASSES] {
    let mut out = [0f32; N_CLASSES];
    for (c, o) in out.iter_mut().enumerate() {
        let mut v = beta[(0, c)];
        for (k, xv) in x.iter().enumerate() {
            v += beta[(k + 1, c)] * xv;
        }
        *o = v.clamp(0.0, 1.0) as f32;
    }
    out
}

/// Root mean squared error over all outputs of all rows.
pub fn rmse(pred: &[[f32; N_CLASSES]], truth: &[[f32; N_CLASSES]]) -> f64 {
    let mut sum = 0f64;
    for (p, t) in pred.iter().zip(truth) {
        for c in 0..N_CLASSES {
            let d = p[c] as f64 - t[c] as f64;
            sum += d * d;
        }
    }
    (sum / (pred.len() * N_CLASSES).max(1) as f64).sqrt()
}

impl Stage for Baseline {
    fn code_version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let StageParams::Baseline(p) = &ctx.spec.params else {
            unreachable!("registry maps baseline to Baseline")
        };
        let catalog =
            artifacts::read_catalog(&ctx.input_of(StageKind::Ingest)?.dir.join("catalog.parquet"))
                .map_err(|e| StageError::Other(Box::new(e)))?;
        let labels: HashMap<u64, [f32; N_CLASSES]> = catalog
            .iter()
            .filter_map(|r| r.labels.map(|l| (r.id, l)))
            .collect();
        let crop_input = ctx.inputs.values().find(|i| i.kind == StageKind::Crop);
        let needs_pixels = p.methods.iter().any(|m| *m != BaselineMethod::Mean);
        let crops = match crop_input {
            Some(input) => artifacts::read_crops(&input.dir.join("crops.parquet"))
                .map_err(|e| StageError::Other(Box::new(e)))?,
            None if needs_pixels => {
                return Err(StageError::msg(
                    "central_pixel and average_colour need a `crop` input",
                ));
            }
            None => Crops {
                size: 0,
                ids: Vec::new(),
                splits: Vec::new(),
                pixels: Vec::new(),
                labels: Vec::new(),
            },
        };
        // Rows used: crops when present (the pixels the regressions see), else the catalog.
        let rows: Vec<(usize, u64, Split)> = if crop_input.is_some() {
            crops
                .ids
                .iter()
                .zip(&crops.splits)
                .enumerate()
                .map(|(i, (id, s))| (i, *id, *s))
                .collect()
        } else {
            catalog
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r.id, r.split))
                .collect()
        };
        let train: Vec<&(usize, u64, Split)> = rows
            .iter()
            .filter(|r| r.2 == Split::Train && labels.contains_key(&r.1))
            .collect();
        let valid: Vec<&(usize, u64, Split)> = rows
            .iter()
            .filter(|r| r.2 == Split::Valid && labels.contains_key(&r.1))
            .collect();
        if train.is_empty() || valid.is_empty() {
            return Err(StageError::msg(format!(
                "need labelled galaxies in both splits (train {}, valid {})",
                train.len(),
                valid.len()
            )));
        }
        let y_train: Vec<[f32; N_CLASSES]> = train.iter().map(|r| labels[&r.1]).collect();
        let y_valid: Vec<[f32; N_CLASSES]> = valid.iter().map(|r| labels[&r.1]).collect();

        let mut metrics = BTreeMap::new();
        let mut metric_rows: Vec<(String, f64)> = Vec::new();
        let mut pred_rows: Vec<(u64, &'static str, [f32; N_CLASSES])> = Vec::new();
        ctx.progress.start(p.methods.len() as u64, "fitting");
        for &method in &p.methods {
            let x_train: Vec<Vec<f64>> = train
                .iter()
                .map(|r| features(method, &crops, r.0))
                .collect();
            let beta = fit(&x_train, &y_train).map_err(|e| {
                StageError::msg(format!("{}: least squares failed: {e}", method.name()))
            })?;
            let preds: Vec<[f32; N_CLASSES]> = valid
                .iter()
                .map(|r| predict(&beta, &features(method, &crops, r.0)))
                .collect();
            let score = rmse(&preds, &y_valid);
            metrics.insert(format!("rmse_{}", method.name()), score);
            metric_rows.push((method.name().to_string(), score));
            pred_rows.extend(
                valid
                    .iter()
                    .zip(preds)
                    .map(|(r, p)| (r.1, method.name(), p)),
            );
            ctx.progress.inc(1);
        }
        write_metrics(
            &ctx.out_dir.join("metrics.parquet"),
            &metric_rows,
            valid.len(),
        )?;
        write_predictions(&ctx.out_dir.join("predictions.parquet"), &pred_rows)?;
        let notes = metric_rows
            .iter()
            .map(|(m, s)| format!("{m}: validation RMSE {s:.5} ({} galaxies)", valid.len()))
            .collect();
        Ok(StageOutcome { metrics, notes })
    }
}

fn write_metrics(
    path: &std::path::Path,
    rows: &[(String, f64)],
    n_valid: usize,
) -> Result<(), StageError> {
    let schema = artifacts::metrics_schema();
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(arrow::array::UInt64Array::from_iter_values(
                rows.iter().map(|_| n_valid as u64),
            )),
        ],
    )
    .expect("columns match");
    artifacts::write_parquet(path, &batch).map_err(|e| StageError::Other(Box::new(e)))
}

/// `predictions.parquet`: GalaxyID, method, and the 37 predicted outputs.
pub fn write_predictions(
    path: &std::path::Path,
    rows: &[(u64, &str, [f32; N_CLASSES])],
) -> Result<(), StageError> {
    let mut id = UInt64Builder::new();
    let mut method = StringBuilder::new();
    let mut cols: Vec<Float32Builder> = (0..N_CLASSES).map(|_| Float32Builder::new()).collect();
    for (g, m, p) in rows {
        id.append_value(*g);
        method.append_value(m);
        for (c, b) in cols.iter_mut().enumerate() {
            b.append_value(p[c]);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(id.finish()), Arc::new(method.finish())];
    columns.extend(cols.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    let batch = RecordBatch::try_new(Arc::new(artifacts::predictions_schema()), columns)
        .expect("columns match");
    artifacts::write_parquet(path, &batch).map_err(|e| StageError::Other(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_linear_relation() {
        let x: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![i as f64 / 50.0, ((i * 7) % 11) as f64 / 11.0])
            .collect();
        let y: Vec<[f32; N_CLASSES]> = x
            .iter()
            .map(|r| [(0.1 + 0.5 * r[0] + 0.2 * r[1]) as f32; N_CLASSES])
            .collect();
        let beta = fit(&x, &y).unwrap();
        assert!(
            (beta[(0, 0)] - 0.1).abs() < 1e-5
                && (beta[(1, 3)] - 0.5).abs() < 1e-5
                && (beta[(2, 36)] - 0.2).abs() < 1e-5
        );
        let p = predict(&beta, &[0.5, 0.5]);
        assert!((p[0] - 0.45).abs() < 1e-5);
    }

    #[test]
    fn mean_predictor_is_the_training_mean() {
        let y = vec![[0.2f32; N_CLASSES], [0.4f32; N_CLASSES]];
        let beta = fit(&[vec![], vec![]], &y).unwrap();
        assert!((predict(&beta, &[])[5] - 0.3).abs() < 1e-6);
    }

    #[test]
    fn rmse_of_a_constant_offset() {
        let a = vec![[0.5f32; N_CLASSES]; 3];
        let b = vec![[0.4f32; N_CLASSES]; 3];
        assert!((rmse(&a, &b) - 0.1).abs() < 1e-6);
    }
}
