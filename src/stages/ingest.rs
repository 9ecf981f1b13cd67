//! `ingest`: the Kaggle layout (image folders + label CSV) → `catalog.parquet`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OnProblem;
use crate::artifacts::{self, CatalogRow, Split};
use crate::cache::Manifest;
use crate::config::StageSpec;
use crate::labels::{CLASS_NAMES, N_CLASSES, tree_deviation};

use crate::kind::{JobShape, KindDecl, Params, SeedUse, StageKind};

use super::{FileInput, StageContext, StageError, StageKindDef, StageOutcome};

pub struct Ingest;

/// The catalog of the stage's `ingest` input (which its kind requires).
pub fn input_catalog(ctx: &StageContext) -> Result<Vec<CatalogRow>, StageError> {
    let dir = &ctx.input_of::<Ingest>()?.dir;
    Ok(artifacts::read_catalog(&dir.join(artifacts::CATALOG))?)
}

/// At most this many individual problems are listed in one error.
const MAX_LISTED: usize = 20;

impl StageKindDef for Ingest {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "ingest",
        // 2: image paths in the catalog are normalised (`data`, not `pipelines/../data`).
        code_version: 2,
        seed: SeedUse::InKey,
        path_params: &["data_dir"],
        accepts: &[],
        requires: &[],
        job: JobShape::PARALLEL,
    });
    type Params = IngestParams;

    fn file_inputs(&self, p: &IngestParams, spec: &StageSpec) -> Vec<FileInput> {
        let root = spec.resolve(&p.data_dir);
        let mut inputs = vec![
            FileInput {
                group: "images".into(),
                path: root.join(&p.images),
            },
            FileInput {
                group: "labels".into(),
                path: root.join(&p.labels),
            },
        ];
        if !p.test_images.is_empty() {
            inputs.push(FileInput {
                group: "test_images".into(),
                path: root.join(&p.test_images),
            });
        }
        inputs
    }

    fn check_setup(&self, p: &IngestParams, spec: &StageSpec) -> Option<String> {
        missing_data(p, spec)
    }

    fn run(&self, p: &IngestParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let root = ctx.spec.resolve(&p.data_dir);
        let images_dir = root.join(&p.images);
        let labels_path = root.join(&p.labels);
        let mut notes = Vec::new();

        ctx.progress.start(0, "rows", "reading labels");
        let labels = read_labels(&labels_path)?;
        let (images, ignored) = image_index(&ctx.files["images"]);
        note_ignored(&mut notes, &ignored, &images_dir);
        let labelled = Labelled {
            labels: &labels,
            images: &images,
            images_dir: &images_dir,
            labels_path: &labels_path,
        };
        let (mut rows, skipped) = labelled.rows(p, ctx.seed()?, &mut notes)?;
        labelled.note_unlabelled(&mut notes);
        let violations = rows
            .iter()
            .filter(|r| {
                r.labels
                    .is_some_and(|l| tree_deviation(&l) > p.tree_tolerance as f32)
            })
            .count();
        if violations > 0 {
            notes.push(format!(
                "{violations} label row(s) break a decision-tree sum by more than {}",
                p.tree_tolerance
            ));
        }
        if !p.test_images.is_empty() {
            let test_dir = root.join(&p.test_images);
            rows.extend(test_rows(
                &ctx.files["test_images"],
                &test_dir,
                &labels,
                &mut notes,
            )?);
        }
        rows.sort_by_key(|r| r.id);

        let count = |s: Split| rows.iter().filter(|r| r.split == s).count() as f64;
        let mut metrics = BTreeMap::new();
        metrics.insert("train_rows".into(), count(Split::Train));
        metrics.insert("valid_rows".into(), count(Split::Valid));
        metrics.insert("test_rows".into(), count(Split::Test));
        metrics.insert("tree_violations".into(), violations as f64);

        ctx.progress.message("writing catalog.parquet");
        let out = ctx.out_dir.join(crate::artifacts::CATALOG);
        artifacts::write_parquet(&out, &artifacts::catalog_batch(&rows))?;
        if !skipped.is_empty() {
            artifacts::write_skipped(&ctx.out_dir.join(crate::artifacts::SKIPPED), &skipped)?;
        }
        Ok(StageOutcome { metrics, notes })
    }
}

/// The competition's files as Kaggle names them, for the missing-data message.
const KAGGLE_FILES: &str =
    "`images_training_rev1/`, `training_solutions_rev1.csv` and `images_test_rev1/`";

/// When an input folder or the label file is not there: which, where it is expected, what the
/// competition's files are called, and what works without them.
fn missing_data(p: &IngestParams, spec: &StageSpec) -> Option<String> {
    let root = spec.resolve(&p.data_dir);
    let mut expected = vec![
        (&p.images, "training images", "/"),
        (&p.labels, "training labels", ""),
    ];
    if !p.test_images.is_empty() {
        expected.push((&p.test_images, "test images", "/"));
    }
    let missing: Vec<String> = expected
        .into_iter()
        .filter(|(name, _, _)| !root.join(name).exists())
        .map(|(name, what, slash)| {
            let path = root.join(name);
            format!("  missing: {}{slash}  ({what})", path.display())
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let id = &spec.id;
    Some(format!(
        "the Galaxy Zoo data is not in {root} (`{id}.data_dir`):\n{missing}\n\
         The Kaggle challenge's files are {KAGGLE_FILES} \
         (https://www.kaggle.com/c/galaxy-zoo-the-galaxy-challenge/data). Put them there, or point \
         `data_dir` in the pipeline file (or `--set {id}.data_dir=DIR`) at the folder that holds them.\n\
         Without the download, these work now:\n  \
         galaxy-pipe synth --out data/synth --count 2000 --test-count 200 --seed 42 && galaxy-pipe run pipelines/demo.toml\n    \
         (2,000 synthetic galaxies in the Kaggle layout, the whole workflow)\n  \
         galaxy-pipe run pipelines/sample.toml\n    \
         (the real Kaggle sample in ../shared/data/galaxy-zoo-sample: 7,866 labelled + 1,197 test images)",
        root = root.display(),
        missing = missing.join("\n"),
    ))
}

/// Files of an image folder not named `<GalaxyID>.jpg`, as a note.
fn note_ignored(notes: &mut Vec<String>, ignored: &[String], dir: &Path) {
    if !ignored.is_empty() {
        notes.push(format!(
            "ignored {} file(s) in {} not named <GalaxyID>.jpg: {}",
            ignored.len(),
            dir.display(),
            preview(ignored)
        ));
    }
}

/// Label rows left out, with why (`skipped.parquet`).
type Skipped = Vec<(u64, String)>;

/// The label rows and the training images, matched by id.
struct Labelled<'a> {
    labels: &'a BTreeMap<u64, crate::labels::Labels>,
    images: &'a BTreeMap<u64, (String, String)>,
    images_dir: &'a Path,
    labels_path: &'a Path,
}

impl Labelled<'_> {
    /// A catalog row per label row with an image; rows without one fail or are skipped
    /// (`on_missing_image`).
    fn rows(
        &self,
        p: &IngestParams,
        seed: u64,
        notes: &mut Vec<String>,
    ) -> Result<(Vec<CatalogRow>, Skipped), StageError> {
        let mut rows = Vec::with_capacity(self.labels.len());
        let mut missing = Vec::new();
        for (id, values) in self.labels {
            match self.images.get(id) {
                Some((name, digest)) => rows.push(CatalogRow {
                    id: *id,
                    split: split_of(seed, *id, p.valid_fraction),
                    image_path: self.images_dir.join(name).to_string_lossy().into_owned(),
                    image_digest: digest.clone(),
                    labels: Some(*values),
                }),
                None => missing.push(*id),
            }
        }
        if missing.is_empty() {
            return Ok((rows, Vec::new()));
        }
        let ids: Vec<String> = missing.iter().map(u64::to_string).collect();
        match p.on_missing_image {
            OnProblem::Error => Err(StageError::msg(format!(
                "{} label row(s) of {} have no image in {} (first: {}); set on_missing_image = \"skip\" to leave them out",
                missing.len(),
                self.labels_path.display(),
                self.images_dir.display(),
                preview(&ids)
            ))),
            OnProblem::Skip => {
                notes.push(format!(
                    "skipped {} label row(s) without an image (listed in skipped.parquet): {}",
                    missing.len(),
                    preview(&ids)
                ));
                let skipped = missing.iter().map(|id| (*id, "no image".to_string()));
                Ok((rows, skipped.collect()))
            }
        }
    }

    /// Images without a label row, as a note.
    fn note_unlabelled(&self, notes: &mut Vec<String>) {
        let unlabelled: Vec<String> = self
            .images
            .keys()
            .filter(|id| !self.labels.contains_key(id))
            .map(u64::to_string)
            .collect();
        if !unlabelled.is_empty() {
            notes.push(format!(
                "{} image(s) in {} have no label row and are left out: {}",
                unlabelled.len(),
                self.images_dir.display(),
                preview(&unlabelled)
            ));
        }
    }
}

/// Catalog rows of the unlabelled test images; a test image that also has a label fails.
fn test_rows(
    manifest: &Manifest,
    test_dir: &Path,
    labels: &BTreeMap<u64, crate::labels::Labels>,
    notes: &mut Vec<String>,
) -> Result<Vec<CatalogRow>, StageError> {
    let (test, ignored) = image_index(manifest);
    note_ignored(notes, &ignored, test_dir);
    let mut rows = Vec::with_capacity(test.len());
    for (id, (name, digest)) in test {
        if labels.contains_key(&id) {
            return Err(StageError::msg(format!(
                "galaxy {id} is both labelled and in the test folder {}",
                test_dir.display()
            )));
        }
        rows.push(CatalogRow {
            id,
            split: Split::Test,
            image_path: test_dir.join(name).to_string_lossy().into_owned(),
            image_digest: digest,
            labels: None,
        });
    }
    Ok(rows)
}

/// `<GalaxyID>.jpg` files of a manifest → id → (file name, digest); other names are returned apart.
fn image_index(manifest: &Manifest) -> (BTreeMap<u64, (String, String)>, Vec<String>) {
    let mut images = BTreeMap::new();
    let mut ignored = Vec::new();
    for e in &manifest.entries {
        let id = e
            .path
            .strip_suffix(".jpg")
            .filter(|s| !s.contains('/'))
            .and_then(|s| s.parse::<u64>().ok());
        match id {
            Some(id) => {
                images.insert(id, (e.path.clone(), e.digest.clone()));
            }
            None => ignored.push(e.path.clone()),
        }
    }
    (images, ignored)
}

/// Deterministic split from (seed, id): the same galaxy lands in the same split on every machine.
pub fn split_of(seed: u64, id: u64, valid_fraction: f64) -> Split {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&id.to_le_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    let u = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    if u < valid_fraction {
        Split::Valid
    } else {
        Split::Train
    }
}

/// Parse and validate the label CSV; every problem names the file and line.
pub fn read_labels(path: &Path) -> Result<BTreeMap<u64, crate::labels::Labels>, StageError> {
    let file =
        std::fs::File::open(path).map_err(|e| StageError::io("cannot open label CSV", path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let name = path.display().to_string();
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(StageError::msg(format!(
                "{name}: the label CSV is empty (expected a header `GalaxyID,Class1.1,…,Class11.6`)"
            )));
        }
        Some(Err(e)) => return Err(StageError::msg(format!("{name}:1: {e}"))),
        Some(Ok(h)) => h,
    };
    check_header(&name, &header)?;

    let mut labels = BTreeMap::new();
    let mut first_line: HashMap<u64, u64> = HashMap::new();
    let mut problems = Problems::default();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.add(format!("{name}:{line}: {e}"));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue; // a blank line
        }
        let Some((id, values)) = label_row(&name, line, &record, &mut problems) else {
            continue;
        };
        if let Some(first) = first_line.get(&id) {
            problems.add(format!(
                "{name}:{line}: GalaxyID {id} already appeared on line {first}"
            ));
            continue;
        }
        first_line.insert(id, line);
        if let Some(values) = values {
            labels.insert(id, values);
        }
    }
    problems.into_result()?;
    if labels.is_empty() {
        return Err(StageError::msg(format!(
            "{name}: no label rows after the header"
        )));
    }
    Ok(labels)
}

/// The header must be `GalaxyID` and the 37 class columns, in order; a missing or unexpected
/// column is named.
fn check_header(name: &str, header: &csv::StringRecord) -> Result<(), StageError> {
    let got: Vec<&str> = header
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim())
        .collect();
    let mut expected = vec!["GalaxyID"];
    expected.extend(CLASS_NAMES);
    if got == expected {
        return Ok(());
    }
    let missing = expected
        .iter()
        .filter(|e| !got.contains(e))
        .map(|e| format!("`{e}` missing"));
    let extra = got
        .iter()
        .filter(|g| !expected.contains(g))
        .map(|g| format!("`{g}` not a Kaggle column"));
    let named: Vec<String> = missing.chain(extra).collect();
    let detail = match got.iter().zip(&expected).position(|(g, e)| g != e) {
        _ if got.len() != expected.len() && !named.is_empty() => named.join("; "),
        Some(i) => format!(
            "column {} is `{}`, expected `{}`",
            i + 1,
            got[i],
            expected[i]
        ),
        None => format!("{} columns, expected {}", got.len(), expected.len()),
    };
    Err(StageError::msg(format!("{name}:1: wrong header: {detail}")))
}

/// One data row: its id, and its 37 values when every one is a number in [0, 1]. Problems are
/// recorded; None when the row has no usable id.
fn label_row(
    name: &str,
    line: u64,
    record: &csv::StringRecord,
    problems: &mut Problems,
) -> Option<(u64, Option<crate::labels::Labels>)> {
    if record.len() != 38 {
        problems.add(format!(
            "{name}:{line}: {} columns, expected 38",
            record.len()
        ));
        return None;
    }
    let Ok(id) = record[0].trim().parse::<u64>() else {
        problems.add(format!(
            "{name}:{line}: GalaxyID `{}` is not a non-negative integer",
            &record[0]
        ));
        return None;
    };
    let mut values = [0f32; N_CLASSES];
    let mut bad = Vec::new();
    for (c, field) in record.iter().skip(1).enumerate() {
        match field.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => values[c] = v as f32,
            Ok(v) => bad.push(format!("{} = {v} is outside [0, 1]", CLASS_NAMES[c])),
            Err(_) => bad.push(format!("{} = `{field}` is not a number", CLASS_NAMES[c])),
        }
    }
    let Some(first) = bad.first() else {
        return Some((id, Some(values)));
    };
    let more = if bad.len() > 1 {
        format!(" (and {} more on this line)", bad.len() - 1)
    } else {
        String::new()
    };
    problems.add(format!("{name}:{line}: {first}{more}"));
    Some((id, None))
}

/// The problems of a label CSV: all counted, the first `MAX_LISTED` kept.
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    total: usize,
}

impl Problems {
    fn add(&mut self, message: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(message);
        }
    }

    fn into_result(self) -> Result<(), StageError> {
        if self.total == 0 {
            return Ok(());
        }
        let more = if self.total > self.listed.len() {
            format!("\n  … and {} more", self.total - self.listed.len())
        } else {
            String::new()
        };
        Err(StageError::msg(format!(
            "{} problem(s) in the label CSV:\n  {}{more}",
            self.total,
            self.listed.join("\n  ")
        )))
    }
}

fn preview(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    if items.len() > 5 {
        format!("{}, …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_close_to_the_fraction() {
        let valid = (0..20_000u64)
            .filter(|id| split_of(7, *id, 0.1) == Split::Valid)
            .count();
        assert!((1_700..2_300).contains(&valid), "{valid} of 20000 in valid");
        assert_eq!(split_of(7, 123, 0.1), split_of(7, 123, 0.1));
        let moved = (0..2_000u64)
            .filter(|id| split_of(7, *id, 0.5) != split_of(8, *id, 0.5))
            .count();
        assert!(moved > 500, "changing the seed reshuffles the split");
    }

    fn csv_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn header() -> String {
        format!("GalaxyID,{}\n", CLASS_NAMES.join(","))
    }

    fn row(id: &str, v: &str) -> String {
        let mut fields = vec![id.to_string()];
        fields.extend((0..37).map(|_| v.to_string()));
        fields.join(",") + "\n"
    }

    #[test]
    fn bad_values_are_reported_with_their_line() {
        let f = csv_file(&(header() + &row("1", "0.5") + &row("2", "1.5") + &row("x", "0.1")));
        let err = read_labels(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(":3: Class1.1 = 1.5 is outside [0, 1]"),
            "{err}"
        );
        assert!(err.contains(":4: GalaxyID `x`"), "{err}");
    }

    #[test]
    fn bom_and_crlf_are_accepted() {
        let text = format!(
            "\u{feff}{}{}",
            header().replace('\n', "\r\n"),
            row("5", "0.25").replace('\n', "\r\n")
        );
        let f = csv_file(&text);
        let labels = read_labels(f.path()).unwrap();
        assert_eq!(labels[&5][0], 0.25);
    }

    #[test]
    fn duplicate_ids_and_short_rows_are_errors() {
        let f = csv_file(&(header() + &row("1", "0.5") + &row("1", "0.5") + "3,0.1,0.2\n"));
        let err = read_labels(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(":3: GalaxyID 1 already appeared on line 2"),
            "{err}"
        );
        assert!(err.contains(":4: 3 columns, expected 38"), "{err}");
    }

    #[test]
    fn wrong_header_and_empty_file_are_errors() {
        let f = csv_file(&header().replace("Class1.2", "Class1.9"));
        assert!(
            read_labels(f.path())
                .unwrap_err()
                .to_string()
                .contains("column 3 is `Class1.9`, expected `Class1.2`")
        );
        // A column left out or added is named.
        let f = csv_file(&header().replace(",Class11.6", ""));
        let err = read_labels(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(":1: wrong header: `Class11.6` missing"),
            "{err}"
        );
        let f = csv_file(&header().replace("\n", ",Extra\n"));
        let err = read_labels(f.path()).unwrap_err().to_string();
        assert!(err.contains("`Extra` not a Kaggle column"), "{err}");
        let f = csv_file("");
        assert!(
            read_labels(f.path())
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

/// `ingest`: the Kaggle layout under `data_dir` → `catalog.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// Folder of the Kaggle download; relative to the pipeline file that sets it.
    #[schemars(length(min = 1))]
    pub data_dir: String,
    /// Training images folder, relative to `data_dir`.
    #[serde(default = "defaults::images")]
    pub images: String,
    /// Label CSV, relative to `data_dir`.
    #[serde(default = "defaults::labels")]
    pub labels: String,
    /// Unlabelled test images folder, relative to `data_dir`; "" to leave the test split out.
    #[serde(default = "defaults::test_images")]
    pub test_images: String,
    /// Fraction of labelled galaxies assigned to the validation split.
    #[serde(default = "defaults::valid_fraction")]
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub valid_fraction: f64,
    /// A label row without an image: fail, or skip it and list it in the artifact.
    #[serde(default)]
    pub on_missing_image: OnProblem,
    /// Allowed absolute deviation of a decision-tree sum before a row is counted as violating it.
    #[serde(default = "defaults::tree_tolerance")]
    #[schemars(range(min = 0.0))]
    pub tree_tolerance: f64,
}

impl Params for IngestParams {}

/// Defaults, one function each (serde needs functions).
mod defaults {
    pub fn images() -> String {
        "images_training_rev1".into()
    }
    pub fn labels() -> String {
        "training_solutions_rev1.csv".into()
    }
    pub fn test_images() -> String {
        "images_test_rev1".into()
    }
    pub fn valid_fraction() -> f64 {
        0.1
    }
    pub fn tree_tolerance() -> f64 {
        0.01
    }
}
