//! `baseline`: the seed's benchmarks on the validation split — the training-mean predictor and
//! least-squares linear regressions on the central pixel and on the average colour of each crop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use nalgebra::DMatrix;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::artifacts::{self, CatalogRow, Crops, Split};
use crate::labels::N_CLASSES;

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};

use super::{StageContext, StageError, StageKindDef, StageOutcome};

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
pub fn fit(x: &[Vec<f64>], y: &[crate::labels::Labels]) -> Result<DMatrix<f64>, String> {
    let n = x.len();
    let d = x.first().map_or(0, |r| r.len()) + 1;
    let xm = DMatrix::from_fn(n, d, |r, c| if c == 0 { 1.0 } else { x[r][c - 1] });
    let ym = DMatrix::from_fn(n, N_CLASSES, |r, c| y[r][c] as f64);
    let svd = xm.svd(true, true);
    svd.solve(&ym, 1e-12).map_err(|e| e.to_string())
}

pub fn predict(beta: &DMatrix<f64>, x: &[f64]) -> crate::labels::Labels {
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

impl StageKindDef for Baseline {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "baseline",
        code_version: 1,
        seed: SeedUse::Unused,
        path_params: &[],
        accepts: &["ingest", "crop"],
        requires: &[Need::one(&["ingest"])],
        job: JobShape::LIGHT,
    });
    type Params = BaselineParams;

    fn run(&self, p: &BaselineParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let catalog = super::ingest::input_catalog(ctx)?;
        let labels: HashMap<u64, crate::labels::Labels> = catalog
            .iter()
            .filter_map(|r| r.labels.map(|l| (r.id, l)))
            .collect();
        let needs_pixels = p.methods.iter().any(|m| *m != BaselineMethod::Mean);
        let crop_input = super::crop::optional_input_crops(ctx)?;
        let has_crops = crop_input.is_some();
        let crops = match crop_input {
            Some(crops) => crops,
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
        let rows = used_rows(&catalog, has_crops.then_some(&crops));
        let in_split = |split: Split| -> Vec<&(usize, u64, Split)> {
            rows.iter()
                .filter(|r| r.2 == split && labels.contains_key(&r.1))
                .collect()
        };
        let (train, valid) = (in_split(Split::Train), in_split(Split::Valid));
        if train.is_empty() || valid.is_empty() {
            return Err(StageError::msg(format!(
                "need labelled galaxies in both splits (train {}, valid {})",
                train.len(),
                valid.len()
            )));
        }
        let y_train: Vec<crate::labels::Labels> = train.iter().map(|r| labels[&r.1]).collect();
        let y_valid: Vec<crate::labels::Labels> = valid.iter().map(|r| labels[&r.1]).collect();

        let mut metrics = BTreeMap::new();
        let mut metric_rows: Vec<(String, f64)> = Vec::new();
        let mut pred_rows: Vec<(u64, &'static str, crate::labels::Labels)> = Vec::new();
        ctx.progress
            .start(p.methods.len() as u64, "methods", "fitting");
        for &method in &p.methods {
            let x_train: Vec<Vec<f64>> = train
                .iter()
                .map(|r| features(method, &crops, r.0))
                .collect();
            let beta = fit(&x_train, &y_train).map_err(|e| {
                StageError::msg(format!("{}: least squares failed: {e}", method.name()))
            })?;
            let preds: Vec<crate::labels::Labels> = valid
                .iter()
                .map(|r| predict(&beta, &features(method, &crops, r.0)))
                .collect();
            let score = crate::metrics::rmse(&preds, &y_valid);
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
            &ctx.out_dir.join(crate::artifacts::METRICS),
            &metric_rows,
            valid.len(),
        )?;
        artifacts::write_predictions(&ctx.out_dir.join(crate::artifacts::PREDICTIONS), &pred_rows)?;
        let notes = metric_rows
            .iter()
            .map(|(m, s)| format!("{m}: validation RMSE {s:.5} ({} galaxies)", valid.len()))
            .collect();
        Ok(StageOutcome { metrics, notes })
    }
}

/// The rows the regressions use, as (index, id, split): the crops when there are any (the
/// pixels the regressions see), else the catalog.
fn used_rows(catalog: &[CatalogRow], crops: Option<&Crops>) -> Vec<(usize, u64, Split)> {
    match crops {
        Some(crops) => crops
            .ids
            .iter()
            .zip(&crops.splits)
            .enumerate()
            .map(|(i, (id, s))| (i, *id, *s))
            .collect(),
        None => catalog
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.id, r.split))
            .collect(),
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
    Ok(artifacts::write_parquet(path, &batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_linear_relation() {
        let x: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![i as f64 / 50.0, ((i * 7) % 11) as f64 / 11.0])
            .collect();
        let y: Vec<crate::labels::Labels> = x
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
        assert!((crate::metrics::rmse(&a, &b) - 0.1).abs() < 1e-6);
    }
}

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BaselineMethod {
    Mean,
    CentralPixel,
    AverageColour,
}

/// `baseline`: the seed's benchmark regressions on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineParams {
    #[serde(default = "defaults::baseline_methods")]
    #[schemars(length(min = 1))]
    pub methods: Vec<BaselineMethod>,
}

impl Params for BaselineParams {}

/// Defaults, one function each (serde needs functions).
mod defaults {
    use super::*;
    pub fn baseline_methods() -> Vec<BaselineMethod> {
        vec![
            BaselineMethod::Mean,
            BaselineMethod::CentralPixel,
            BaselineMethod::AverageColour,
        ]
    }
}
