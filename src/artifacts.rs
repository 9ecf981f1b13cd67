//! Arrow schemas of the artifacts and their Parquet read/write.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::labels::CLASS_NAMES;

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

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    pub id: u64,
    pub split: Split,
    pub image_path: String,
    pub image_digest: String,
    pub labels: Option<[f32; 37]>,
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

/// Write one record batch as a Parquet file (zstd-free: snappy, widely readable).
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), ArtifactError> {
    let file = File::create(path).map_err(|e| ArtifactError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| {
        ArtifactError::Parquet {
            path: path.display().to_string(),
            source: e,
        }
    })?;
    writer.write(batch).map_err(|e| ArtifactError::Parquet {
        path: path.display().to_string(),
        source: e,
    })?;
    writer.close().map_err(|e| ArtifactError::Parquet {
        path: path.display().to_string(),
        source: e,
    })?;
    Ok(())
}

/// Read a whole Parquet file into record batches.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, ArtifactError> {
    let file = File::open(path).map_err(|e| ArtifactError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| ArtifactError::Parquet {
            path: path.display().to_string(),
            source: e,
        })?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArtifactError::Arrow {
            path: path.display().to_string(),
            source: e,
        })
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}
