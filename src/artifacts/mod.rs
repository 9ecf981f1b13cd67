//! The artifacts: each file's Arrow schema, rows and Parquet read/write, one module per artifact
//! family; the file names as constants.

mod catalog;
mod class_predictions;
mod crops;
mod io;
mod tables;

pub use catalog::*;
pub use class_predictions::*;
pub use crops::*;
pub use io::*;
pub use tables::*;

use arrow::datatypes::Schema;

/// The artifact file names (inside a stage's output folder).
pub const CATALOG: &str = "catalog.parquet";

pub const CROPS: &str = "crops.parquet";

pub const METRICS: &str = "metrics.parquet";

pub const PREDICTIONS: &str = "predictions.parquet";

pub const SKIPPED: &str = "skipped.parquet";

pub const HISTORY: &str = "history.parquet";

pub const SUMMARY: &str = "summary.parquet";

pub const CORRELATIONS: &str = "correlations.parquet";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: unexpected layout: {what}")]
    Schema { path: String, what: String },
    #[error("{path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

/// Every artifact's Arrow schema, as committed in `schemas/artifacts.json` (crops at size 64).
pub fn documented_schemas() -> serde_json::Value {
    let describe = |s: Schema| -> serde_json::Value {
        s.fields()
            .iter()
            .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable() }))
            .collect()
    };
    serde_json::json!({
        "ingest/catalog.parquet": describe(catalog_schema()),
        "ingest/skipped.parquet": describe(skipped_schema()),
        "crop/crops.parquet (size = 64)": describe(crops_schema(64)),
        "crop/skipped.parquet": describe(skipped_schema()),
        "baseline/metrics.parquet": describe(metrics_schema()),
        "baseline/predictions.parquet": describe(predictions_schema()),
        "explore/summary.parquet": describe(summary_schema()),
        "explore/correlations.parquet": describe(correlations_schema()),
        "train/history.parquet": describe(history_schema()),
        "evaluate/metrics.parquet": describe(evaluation_schema()),
        "evaluate/predictions.parquet": describe(predictions_schema()),
        "command (produces = \"predictions\")/predictions.parquet": describe(class_predictions_schema()),
    })
}

/// The artifact schemas as committed: pretty JSON with a trailing newline.
pub fn documented_schemas_text() -> String {
    serde_json::to_string_pretty(&documented_schemas()).expect("serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn crops_written_in_many_row_groups_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crops.parquet");
        let size = 4;
        let mut stream = ParquetStream::create(&path, Arc::new(crops_schema(size))).unwrap();
        let mut expected = Vec::new();
        for group in 0..9u64 {
            let rows: Vec<CropRow> = (0..(group % 4 + 1))
                .map(|i| {
                    let id = group * 100 + i;
                    let pixels = vec![(id % 251) as u8; size * size * 3];
                    let labels = (id % 2 == 0).then_some([id as f32 / 1000.0; 37]);
                    let split = if labels.is_some() {
                        Split::Valid
                    } else {
                        Split::Test
                    };
                    expected.push((id, split, pixels.clone(), labels));
                    CropRow {
                        id,
                        split,
                        roi: (0, 0, 424),
                        placement: "whole",
                        pixels,
                        labels,
                    }
                })
                .collect();
            stream.write(&crops_batch(size, &rows)).unwrap();
        }
        stream.finish().unwrap();
        let crops = read_crops(&path).unwrap();
        assert_eq!(crops.size, size);
        assert_eq!(crops.ids.len(), expected.len());
        for (i, (id, split, pixels, labels)) in expected.iter().enumerate() {
            assert_eq!(crops.ids[i], *id);
            assert_eq!(crops.splits[i], *split);
            assert_eq!(crops.pixels_of(i), pixels.as_slice());
            assert_eq!(crops.labels[i], *labels);
        }
    }
}
