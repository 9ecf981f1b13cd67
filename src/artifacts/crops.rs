//! `crops.parquet` (crop): fixed-size uint8 RGB crops, written in row groups and loaded into one buffer.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};

use crate::io_error::IoError;
use crate::labels::CLASS_NAMES;

use super::*;

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

/// The GalaxyID and split of every row of `crops.parquet`, without reading its pixels or labels
/// (for checks that need only which galaxies the crops hold).
pub fn read_crop_splits(path: &Path) -> Result<Vec<(u64, Split)>, ArtifactError> {
    use arrow::array::{StringArray, UInt64Array};
    let mut rows = Vec::new();
    for batch in super::io::read_parquet_columns(path, &["GalaxyID", "split"])? {
        let ids = column::<UInt64Array>(&batch, "GalaxyID", path)?;
        let splits = column::<StringArray>(&batch, "split", path)?;
        for (id, split) in ids.values().iter().zip(splits.iter()) {
            let split = split
                .and_then(Split::parse)
                .ok_or_else(|| ArtifactError::Schema {
                    path: path.display().to_string(),
                    what: "split".into(),
                })?;
            rows.push((*id, split));
        }
    }
    Ok(rows)
}

/// Read `crops.parquet` into one contiguous pixel buffer. Row groups are decoded in parallel,
/// each straight into its slice of the pre-sized buffer (one copy out of Parquet's pages).
pub fn read_crops(path: &Path) -> Result<Crops, ArtifactError> {
    use parquet::arrow::arrow_reader::ArrowReaderMetadata;
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
    let file = File::open(path).map_err(IoError::at("opening", path))?;
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
        .map(|(g, chunk)| read_row_group(path, &meta, g, group_rows[g], width, chunk))
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

/// Row group `g` (of `rows` rows) of the crops file: its pixels into `chunk`, its other columns
/// returned. Each call opens its own descriptor: clones share one file offset, and readers seek.
fn read_row_group(
    path: &Path,
    meta: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
    g: usize,
    rows: usize,
    width: usize,
    chunk: &mut [u8],
) -> Result<CropColumns, ArtifactError> {
    let name = || path.display().to_string();
    let file = File::open(path).map_err(IoError::at("opening", path))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(
        file,
        meta.clone(),
    )
    .with_row_groups(vec![g])
    .with_batch_size(rows.max(1))
    .build()
    .map_err(|source| ArtifactError::Parquet {
        path: name(),
        source,
    })?;
    let mut cols = CropColumns {
        ids: Vec::with_capacity(rows),
        splits: Vec::with_capacity(rows),
        labels: Vec::with_capacity(rows),
    };
    let mut filled = 0;
    for batch in reader {
        let batch = batch.map_err(|source| ArtifactError::Arrow {
            path: name(),
            source,
        })?;
        filled += crop_batch_into(&batch, path, width, &mut chunk[filled..], &mut cols)?;
    }
    if filled != chunk.len() {
        return Err(ArtifactError::Schema {
            path: name(),
            what: "row group shorter than its metadata".into(),
        });
    }
    Ok(cols)
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
