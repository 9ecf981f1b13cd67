//! The `predictions` family a user's program writes (`command` with `produces = "predictions"`):
//! `predictions.parquet` with `GalaxyID` and the 37 `Class…` columns, one row per validation and
//! test galaxy of the crops it was given. It is untrusted input: every column, value and id is
//! checked before the artifact is published, and a problem names the column and the row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};

use super::{ArtifactError, read_parquet};
use crate::labels::{CLASS_NAMES, Labels, N_CLASSES};
use crate::untrusted::escape;

/// The file a `predictions`-producing program writes.
pub const CLASS_PREDICTIONS: &str = "predictions.parquet";

/// The schema `produces = "predictions"` asks for (documented in `schemas/artifacts.json`);
/// integer ids of any width and `float` or `double` classes are accepted.
pub fn class_predictions_schema() -> Schema {
    let mut fields = vec![Field::new("GalaxyID", DataType::Int64, false)];
    fields.extend(
        CLASS_NAMES
            .iter()
            .map(|c| Field::new(*c, DataType::Float64, false)),
    );
    Schema::new(fields)
}

/// Reads `path` and checks it against the family: exactly the columns, finite values in [0, 1],
/// unique ids, and exactly the ids of `expected` (the crops' validation and test galaxies).
pub fn read_class_predictions(
    path: &Path,
    expected: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, Labels>, ArtifactError> {
    let bad = |what: String| ArtifactError::Schema {
        path: path.display().to_string(),
        what,
    };
    let mut rows = BTreeMap::new();
    let mut row = 0usize;
    for batch in read_parquet(path)? {
        check_columns(&batch).map_err(bad)?;
        let (ids, classes) = typed_columns(&batch).map_err(bad)?;
        for r in 0..batch.num_rows() {
            let (id, labels) = row_at(&ids, &classes, r, row).map_err(bad)?;
            if !expected.contains(&id) {
                return Err(bad(format!(
                    "row {row}: GalaxyID {id} is not a validation or test galaxy of the input crops"
                )));
            }
            if rows.insert(id, labels).is_some() {
                return Err(bad(format!("row {row}: GalaxyID {id} appears twice")));
            }
            row += 1;
        }
    }
    let missing: Vec<u64> = expected
        .iter()
        .filter(|id| !rows.contains_key(id))
        .copied()
        .collect();
    if let Some(first) = missing.first() {
        return Err(bad(format!(
            "{} validation/test galaxies of the input crops have no row (first: GalaxyID {first})",
            missing.len()
        )));
    }
    Ok(rows)
}

/// Exactly `GalaxyID` and the 37 classes: a missing or extra column is named.
fn check_columns(batch: &RecordBatch) -> Result<(), String> {
    let schema = batch.schema();
    let names: BTreeSet<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let wanted: BTreeSet<&str> = std::iter::once("GalaxyID")
        .chain(CLASS_NAMES.iter().copied())
        .collect();
    if let Some(missing) = wanted.difference(&names).next() {
        return Err(format!(
            "column `{missing}` is missing ({} columns found, {} expected: GalaxyID and the 37 Class columns)",
            names.len(),
            wanted.len()
        ));
    }
    if let Some(extra) = names.difference(&wanted).next() {
        return Err(format!(
            "unexpected column `{}` (expected GalaxyID and the 37 Class columns)",
            escape(extra)
        ));
    }
    Ok(())
}

/// The id column as i64 and the class columns as f64, whatever width the program wrote.
fn typed_columns(batch: &RecordBatch) -> Result<(Int64Array, Vec<Float64Array>), String> {
    let as_type = |name: &str, to: &DataType| -> Result<ArrayRef, String> {
        let column = batch.column_by_name(name).expect("columns checked");
        let numeric = column.data_type().is_numeric();
        let cast_ok = numeric.then(|| cast(column, to).ok()).flatten();
        cast_ok.ok_or_else(|| format!("column `{name}` is {}, not a number", column.data_type()))
    };
    let ids = as_type("GalaxyID", &DataType::Int64)?;
    let ids = ids
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("cast")
        .clone();
    let mut classes = Vec::with_capacity(N_CLASSES);
    for name in CLASS_NAMES {
        let c = as_type(name, &DataType::Float64)?;
        classes.push(
            c.as_any()
                .downcast_ref::<Float64Array>()
                .expect("cast")
                .clone(),
        );
    }
    Ok((ids, classes))
}

/// Row `r` of the batch (row `row` of the file): its id and its 37 values, each checked.
fn row_at(
    ids: &Int64Array,
    classes: &[Float64Array],
    r: usize,
    row: usize,
) -> Result<(u64, Labels), String> {
    if ids.is_null(r) || ids.value(r) < 0 {
        return Err(format!("row {row}: GalaxyID is null or negative"));
    }
    let id = ids.value(r) as u64;
    let mut labels = [0f32; N_CLASSES];
    for (c, column) in classes.iter().enumerate() {
        let v = if column.is_null(r) {
            f64::NAN
        } else {
            column.value(r)
        };
        if !(0.0..=1.0).contains(&v) {
            return Err(format!(
                "row {row} (GalaxyID {id}): {} is {v}, not a number in [0, 1]",
                CLASS_NAMES[c]
            ));
        }
        labels[c] = v as f32;
    }
    Ok((id, labels))
}
