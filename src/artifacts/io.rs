//! Parquet I/O shared by every artifact: write one batch, read a file, stream row groups, typed columns.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::*;

use crate::io_error::IoError;

/// Column `name` of `batch` as the Arrow array type `T`, or a schema error naming the file.
pub fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a T, ArtifactError> {
    batch
        .column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArtifactError::Schema {
            path: path.display().to_string(),
            what: format!("column `{name}` is missing or has the wrong type"),
        })
}

/// Write one record batch as a Parquet file (zstd-free: snappy, widely readable).
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), ArtifactError> {
    let file = File::create(path).map_err(IoError::at("creating", path))?;
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
    read_batches(path, None)
}

/// Read only the named columns of a Parquet file (the others are not decoded).
pub fn read_parquet_columns(
    path: &Path,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, ArtifactError> {
    read_batches(path, Some(columns))
}

fn read_batches(path: &Path, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>, ArtifactError> {
    let parquet_err = |e| ArtifactError::Parquet {
        path: path.display().to_string(),
        source: e,
    };
    let file = File::open(path).map_err(IoError::at("opening", path))?;
    let mut builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?;
    if let Some(columns) = columns {
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            columns.iter().copied(),
        );
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(parquet_err)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArtifactError::Arrow {
            path: path.display().to_string(),
            source: e,
        })
}

/// Streams record batches into one Parquet file (one row group per batch).
pub struct ParquetStream {
    writer: ArrowWriter<File>,
    path: String,
}

impl ParquetStream {
    pub fn create(path: &Path, schema: Arc<Schema>) -> Result<Self, ArtifactError> {
        let p = path.display().to_string();
        let file = File::create(path).map_err(IoError::at("creating", path))?;
        // Pixels barely compress; leaving them plain keeps reads at disk speed.
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_column_compression("pixels".into(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled("pixels".into(), false)
            // Min/max of 12 KB pixel blobs are useless and costly to compute.
            .set_column_statistics_enabled(
                "pixels".into(),
                parquet::file::properties::EnabledStatistics::None,
            )
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| {
            ArtifactError::Parquet {
                path: p.clone(),
                source: e,
            }
        })?;
        Ok(ParquetStream { writer, path: p })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArtifactError> {
        self.writer
            .write(batch)
            .map_err(|e| ArtifactError::Parquet {
                path: self.path.clone(),
                source: e,
            })?;
        self.writer.flush().map_err(|e| ArtifactError::Parquet {
            path: self.path.clone(),
            source: e,
        })
    }

    pub fn finish(self) -> Result<(), ArtifactError> {
        self.writer.close().map_err(|e| ArtifactError::Parquet {
            path: self.path.clone(),
            source: e,
        })?;
        Ok(())
    }
}
