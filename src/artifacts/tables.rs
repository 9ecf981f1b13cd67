//! The result tables of baseline, explore, train and evaluate: metrics, predictions, summary, history.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};

use crate::labels::{CLASS_NAMES, N_CLASSES};

use super::*;

/// `predictions.parquet`: GalaxyID, method, and the 37 predicted outputs.
pub fn write_predictions(
    path: &std::path::Path,
    rows: &[(u64, &str, crate::labels::Labels)],
) -> Result<(), ArtifactError> {
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
    let batch =
        RecordBatch::try_new(Arc::new(predictions_schema()), columns).expect("columns match");
    write_parquet(path, &batch)
}

/// `metrics.parquet` of `baseline`: validation RMSE per method.
pub fn metrics_schema() -> Schema {
    Schema::new(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("rmse", DataType::Float64, false),
        Field::new("n_valid", DataType::UInt64, false),
    ])
}

/// `metrics.parquet` of `evaluate`: RMSE of the model and each baseline, overall (`scope` = `overall`), per question (`Q1`…) and per class (`Class1.1`…).
pub fn evaluation_schema() -> Schema {
    Schema::new(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("scope", DataType::Utf8, false),
        Field::new("rmse", DataType::Float64, false),
    ])
}

/// `summary.parquet` of `explore`: the numbers behind its figures, one row per class.
pub fn summary_schema() -> Schema {
    Schema::new(vec![
        Field::new("class", DataType::Utf8, false),
        Field::new("confident_count", DataType::UInt64, false),
        Field::new("terminal_count", DataType::UInt64, false),
        Field::new("mean_vote", DataType::Float64, false),
        Field::new("max_vote", DataType::Float64, false),
        Field::new("max_vote_galaxy", DataType::UInt64, false),
    ])
}

/// `correlations.parquet` of `explore`: Pearson correlation of each pair of answers of a question.
pub fn correlations_schema() -> Schema {
    Schema::new(vec![
        Field::new("question", DataType::UInt64, false),
        Field::new("a", DataType::Utf8, false),
        Field::new("b", DataType::Utf8, false),
        Field::new("r", DataType::Float64, false),
    ])
}

/// `history.parquet` of `train`: one row per batch (loss), and per epoch (batch null; mean loss,
/// validation RMSE). Only deterministic values: throughput goes to the run record, so a
/// retrained model is byte-identical and downstream stages stay cached.
pub fn history_schema() -> Schema {
    Schema::new(vec![
        Field::new("epoch", DataType::UInt32, false),
        Field::new("batch", DataType::UInt32, true),
        Field::new("loss", DataType::Float64, false),
        Field::new("valid_rmse", DataType::Float64, true),
    ])
}

/// `predictions.parquet` of `baseline` and `evaluate`: GalaxyID, method, the 37 predictions.
pub fn predictions_schema() -> Schema {
    let mut fields = vec![
        Field::new("GalaxyID", DataType::UInt64, false),
        Field::new("method", DataType::Utf8, false),
    ];
    fields.extend(
        CLASS_NAMES
            .iter()
            .map(|c| Field::new(*c, DataType::Float32, false)),
    );
    Schema::new(fields)
}

/// `predictions.parquet` of `baseline` or `evaluate`: method → [(GalaxyID, prediction)].
pub fn read_predictions(path: &Path) -> Result<PredictionsByMethod, ArtifactError> {
    use arrow::array::{StringArray, UInt64Array};
    let bad = |what: &str| ArtifactError::Schema {
        path: path.display().to_string(),
        what: what.to_string(),
    };
    let mut out = PredictionsByMethod::new();
    for batch in read_parquet(path)? {
        let ids = column::<UInt64Array>(&batch, "GalaxyID", path)?;
        let methods = column::<StringArray>(&batch, "method", path)?;
        let cols = label_columns(&batch, path)?;
        for r in 0..batch.num_rows() {
            let p = labels_at(&cols, r).ok_or_else(|| bad("null prediction"))?;
            out.entry(methods.value(r).to_string())
                .or_default()
                .push((ids.value(r), p));
        }
    }
    Ok(out)
}

pub type PredictionsByMethod =
    std::collections::BTreeMap<String, Vec<(u64, crate::labels::Labels)>>;
