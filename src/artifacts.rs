//! Arrow schemas of the artifacts and their Parquet read/write.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::labels::{CLASS_NAMES, N_CLASSES};

/// The artifact file names (inside a stage's output folder).
pub const CATALOG: &str = "catalog.parquet";
pub const CROPS: &str = "crops.parquet";
pub const METRICS: &str = "metrics.parquet";
pub const PREDICTIONS: &str = "predictions.parquet";
pub const SKIPPED: &str = "skipped.parquet";
pub const HISTORY: &str = "history.parquet";
pub const SUMMARY: &str = "summary.parquet";
pub const CORRELATIONS: &str = "correlations.parquet";

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
    #[error("{path}: unexpected layout: {what}")]
    Schema { path: String, what: String },
    #[error("{path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: arrow::error::ArrowError,
    },
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
    })
}

/// The artifact schemas as committed: pretty JSON with a trailing newline.
pub fn documented_schemas_text() -> String {
    serde_json::to_string_pretty(&documented_schemas()).expect("serialise") + "\n"
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

/// `crops.parquet`: one row per cropped galaxy; `pixels` is size×size×3 uint8 RGB, row-major;
/// the 37 labels are carried along (null for test galaxies) so training needs no other input.
pub fn crops_schema(size: usize) -> Schema {
    let mut fields = vec![
        Field::new("GalaxyID", DataType::UInt64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("roi_x", DataType::UInt16, false),
        Field::new("roi_y", DataType::UInt16, false),
        Field::new("roi_side", DataType::UInt16, false),
        Field::new("placement", DataType::Utf8, false),
        Field::new(
            "pixels",
            DataType::FixedSizeBinary((size * size * 3) as i32),
            false,
        ),
    ];
    fields.extend(
        CLASS_NAMES
            .iter()
            .map(|c| Field::new(*c, DataType::Float32, true)),
    );
    Schema::new(fields)
}

/// One crop as stored.
#[derive(Debug, Clone)]
pub struct CropRow {
    pub id: u64,
    pub split: Split,
    pub roi: (u16, u16, u16),
    pub placement: &'static str,
    pub pixels: Vec<u8>,
    pub labels: Option<crate::labels::Labels>,
}

pub fn crops_batch(size: usize, rows: &[CropRow]) -> RecordBatch {
    use arrow::array::{FixedSizeBinaryBuilder, UInt16Builder};
    let n = rows.len();
    let mut id = UInt64Builder::with_capacity(n);
    let mut split = StringBuilder::new();
    let (mut x, mut y, mut s) = (
        UInt16Builder::with_capacity(n),
        UInt16Builder::with_capacity(n),
        UInt16Builder::with_capacity(n),
    );
    let mut placement = StringBuilder::new();
    let mut pixels = FixedSizeBinaryBuilder::with_capacity(n, (size * size * 3) as i32);
    let mut labels: Vec<Float32Builder> =
        (0..37).map(|_| Float32Builder::with_capacity(n)).collect();
    for r in rows {
        for (c, b) in labels.iter_mut().enumerate() {
            b.append_option(r.labels.map(|l| l[c]));
        }
        id.append_value(r.id);
        split.append_value(r.split.name());
        x.append_value(r.roi.0);
        y.append_value(r.roi.1);
        s.append_value(r.roi.2);
        placement.append_value(r.placement);
        pixels
            .append_value(&r.pixels)
            .expect("pixel buffers have the schema's size");
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(split.finish()),
        Arc::new(x.finish()),
        Arc::new(y.finish()),
        Arc::new(s.finish()),
        Arc::new(placement.finish()),
        Arc::new(pixels.finish()),
    ];
    columns.extend(labels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(Arc::new(crops_schema(size)), columns).expect("columns match the schema")
}

/// Streams record batches into one Parquet file (one row group per batch).
pub struct ParquetStream {
    writer: ArrowWriter<File>,
    path: String,
}

impl ParquetStream {
    pub fn create(path: &Path, schema: Arc<Schema>) -> Result<Self, ArtifactError> {
        let p = path.display().to_string();
        let file = File::create(path).map_err(|e| ArtifactError::Io {
            path: p.clone(),
            source: e,
        })?;
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

/// Crops loaded into memory: contiguous u8 pixels, one `size*size*3` block per galaxy.
#[derive(Debug, Clone)]
pub struct Crops {
    pub size: usize,
    pub ids: Vec<u64>,
    pub splits: Vec<Split>,
    pub pixels: Vec<u8>,
    pub labels: Vec<Option<crate::labels::Labels>>,
}

impl Crops {
    pub fn pixels_of(&self, i: usize) -> &[u8] {
        let n = self.size * self.size * 3;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// The non-pixel columns of one row group of `crops.parquet`.
struct CropColumns {
    ids: Vec<u64>,
    splits: Vec<Split>,
    labels: Vec<Option<crate::labels::Labels>>,
}

/// Read `crops.parquet` into one contiguous pixel buffer. Row groups are decoded in parallel,
/// each straight into its slice of the pre-sized buffer (one copy out of Parquet's pages).
pub fn read_crops(path: &Path) -> Result<Crops, ArtifactError> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
    use rayon::prelude::*;
    let name = path.display().to_string();
    let bad = |what: &str| ArtifactError::Schema {
        path: name.clone(),
        what: what.to_string(),
    };
    let parquet_err = |e| ArtifactError::Parquet {
        path: name.clone(),
        source: e,
    };
    let file = File::open(path).map_err(|e| ArtifactError::Io {
        path: name.clone(),
        source: e,
    })?;
    let meta = ArrowReaderMetadata::load(&file, Default::default()).map_err(parquet_err)?;
    let width = match meta
        .schema()
        .field_with_name("pixels")
        .map(|f| f.data_type())
    {
        Ok(DataType::FixedSizeBinary(w)) => *w as usize,
        _ => return Err(bad("no fixed-size `pixels` column")),
    };
    let size = ((width / 3) as f64).sqrt().round() as usize;
    if size * size * 3 != width {
        return Err(bad("pixels are not size×size×3"));
    }
    let group_rows: Vec<usize> = meta
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as usize)
        .collect();
    // Zeroed pages come lazily from the OS, so this costs no extra pass over the memory.
    let mut pixels = vec![0u8; group_rows.iter().sum::<usize>() * width];
    let mut chunks = Vec::with_capacity(group_rows.len());
    let mut rest = pixels.as_mut_slice();
    for &rows in &group_rows {
        let (chunk, tail) = rest.split_at_mut(rows * width);
        chunks.push(chunk);
        rest = tail;
    }
    let groups: Vec<CropColumns> = chunks
        .into_par_iter()
        .enumerate()
        .map(|(g, chunk)| {
            // Its own descriptor: clones share one file offset, and readers seek.
            let file = File::open(path).map_err(|e| ArtifactError::Io {
                path: name.clone(),
                source: e,
            })?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                .with_row_groups(vec![g])
                .with_batch_size(group_rows[g].max(1))
                .build()
                .map_err(parquet_err)?;
            let mut cols = CropColumns {
                ids: Vec::with_capacity(group_rows[g]),
                splits: Vec::with_capacity(group_rows[g]),
                labels: Vec::with_capacity(group_rows[g]),
            };
            let mut filled = 0;
            for batch in reader {
                let batch = batch.map_err(|e| ArtifactError::Arrow {
                    path: name.clone(),
                    source: e,
                })?;
                filled += crop_batch_into(&batch, path, width, &mut chunk[filled..], &mut cols)?;
            }
            if filled != chunk.len() {
                return Err(bad("row group shorter than its metadata"));
            }
            Ok(cols)
        })
        .collect::<Result<_, ArtifactError>>()?;
    let mut crops = Crops {
        size,
        ids: Vec::with_capacity(group_rows.iter().sum()),
        splits: Vec::new(),
        pixels,
        labels: Vec::new(),
    };
    for g in groups {
        crops.ids.extend(g.ids);
        crops.splits.extend(g.splits);
        crops.labels.extend(g.labels);
    }
    Ok(crops)
}

/// Copies one batch's pixels to the front of `out` and its other columns to `cols`; returns the
/// number of pixel bytes written.
fn crop_batch_into(
    batch: &RecordBatch,
    path: &Path,
    width: usize,
    out: &mut [u8],
    cols: &mut CropColumns,
) -> Result<usize, ArtifactError> {
    use arrow::array::{Array, FixedSizeBinaryArray, StringArray, UInt64Array};
    let bad = |what: &str| ArtifactError::Schema {
        path: path.display().to_string(),
        what: what.to_string(),
    };
    let ids = column::<UInt64Array>(batch, "GalaxyID", path)?;
    let splits = column::<StringArray>(batch, "split", path)?;
    let px = column::<FixedSizeBinaryArray>(batch, "pixels", path)?;
    cols.ids.extend(ids.values().iter().copied());
    for s in splits.iter() {
        cols.splits
            .push(s.and_then(Split::parse).ok_or_else(|| bad("split"))?);
    }
    let label_cols = label_columns(batch, path)?;
    cols.labels
        .extend((0..batch.num_rows()).map(|r| labels_at(&label_cols, r)));
    let n = px.len() * width;
    if out.len() < n || px.null_count() > 0 {
        return Err(bad(
            "more pixel rows than the metadata says, or null pixels",
        ));
    }
    // The values of a fixed-size column are one contiguous buffer: copy it in one go.
    let values = px.value_data();
    if values.len() == n {
        out[..n].copy_from_slice(values);
    } else {
        for i in 0..px.len() {
            out[i * width..(i + 1) * width].copy_from_slice(px.value(i));
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
