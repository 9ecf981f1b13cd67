//! `catalog.parquet` (ingest) and `skipped.parquet` (ingest, crop): galaxies, their split and labels.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};

use crate::labels::CLASS_NAMES;

use super::*;

/// `catalog.parquet`: one row per galaxy.
pub fn catalog_schema() -> Schema {
    let mut fields = vec![
        Field::new("GalaxyID", DataType::UInt64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("image_path", DataType::Utf8, false),
        Field::new("image_digest", DataType::Utf8, false),
    ];
    fields.extend(
        CLASS_NAMES
            .iter()
            .map(|c| Field::new(*c, DataType::Float32, true)),
    );
    Schema::new(fields)
}

/// `skipped.parquet` of ingest: rows left out and why.
pub fn skipped_schema() -> Schema {
    Schema::new(vec![
        Field::new("GalaxyID", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
    ])
}

/// Write `skipped.parquet`: the galaxies a stage left out, with the reason.
pub fn write_skipped(path: &Path, skipped: &[(u64, String)]) -> Result<(), ArtifactError> {
    use arrow::array::{StringArray, UInt64Array};
    let batch = RecordBatch::try_new(
        Arc::new(skipped_schema()),
        vec![
            Arc::new(UInt64Array::from_iter_values(skipped.iter().map(|s| s.0))),
            Arc::new(StringArray::from_iter_values(
                skipped.iter().map(|s| s.1.as_str()),
            )),
        ],
    )
    .expect("columns match");
    write_parquet(path, &batch)
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    pub id: u64,
    pub split: Split,
    pub image_path: String,
    pub image_digest: String,
    pub labels: Option<crate::labels::Labels>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Option<Split> {
        [Split::Train, Split::Valid, Split::Test]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

pub fn catalog_batch(rows: &[CatalogRow]) -> RecordBatch {
    let mut id = UInt64Builder::with_capacity(rows.len());
    let mut split = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut digest = StringBuilder::new();
    let mut labels: Vec<Float32Builder> = (0..37)
        .map(|_| Float32Builder::with_capacity(rows.len()))
        .collect();
    for r in rows {
        id.append_value(r.id);
        split.append_value(r.split.name());
        path.append_value(&r.image_path);
        digest.append_value(&r.image_digest);
        for (c, b) in labels.iter_mut().enumerate() {
            b.append_option(r.labels.map(|l| l[c]));
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(split.finish()),
        Arc::new(path.finish()),
        Arc::new(digest.finish()),
    ];
    columns.extend(labels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(Arc::new(catalog_schema()), columns).expect("columns match the schema")
}

/// The 37 `Class…` columns of a batch, in order.
pub fn label_columns<'a>(
    batch: &'a RecordBatch,
    path: &Path,
) -> Result<Vec<&'a arrow::array::Float32Array>, ArtifactError> {
    CLASS_NAMES
        .iter()
        .map(|c| column::<arrow::array::Float32Array>(batch, c, path))
        .collect()
}

/// Row `r` of the label columns; None where the labels are null (test galaxies).
pub fn labels_at(cols: &[&arrow::array::Float32Array], r: usize) -> Option<crate::labels::Labels> {
    use arrow::array::Array;
    if cols[0].is_null(r) {
        return None;
    }
    let mut l = [0f32; 37];
    for (c, a) in cols.iter().enumerate() {
        l[c] = a.value(r);
    }
    Some(l)
}

/// Read `catalog.parquet` back into rows.
pub fn read_catalog(path: &Path) -> Result<Vec<CatalogRow>, ArtifactError> {
    use arrow::array::{StringArray, UInt64Array};
    let bad = |what: &str| ArtifactError::Schema {
        path: path.display().to_string(),
        what: what.to_string(),
    };
    let mut rows = Vec::new();
    for batch in read_parquet(path)? {
        let ids = column::<UInt64Array>(&batch, "GalaxyID", path)?;
        let splits = column::<StringArray>(&batch, "split", path)?;
        let paths = column::<StringArray>(&batch, "image_path", path)?;
        let digests = column::<StringArray>(&batch, "image_digest", path)?;
        let labels = label_columns(&batch, path)?;
        for r in 0..batch.num_rows() {
            let split = Split::parse(splits.value(r))
                .ok_or_else(|| bad(&format!("unknown split `{}`", splits.value(r))))?;
            let row_labels = labels_at(&labels, r);
            rows.push(CatalogRow {
                id: ids.value(r),
                split,
                image_path: paths.value(r).to_string(),
                image_digest: digests.value(r).to_string(),
                labels: row_labels,
            });
        }
    }
    Ok(rows)
}
