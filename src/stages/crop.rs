//! `crop`: every catalogued image → a fixed-size uint8 RGB crop in `crops.parquet`, streamed
//! in chunks (bounded memory), decoded and cropped in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OnProblem;
use crate::artifacts::{self, CatalogRow, CropRow, ParquetStream};
use crate::vision::{self, Placement};

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};

use super::{StageContext, StageError, StageKindDef, StageOutcome};

pub struct Crop;

/// The crops of the stage's `crop` input (which its kind requires).
pub fn input_crops(ctx: &StageContext) -> Result<artifacts::Crops, StageError> {
    let dir = &ctx.input_of::<Crop>()?.dir;
    Ok(artifacts::read_crops(&dir.join(artifacts::CROPS))?)
}

/// The crops of the stage's `crop` input, when the pipeline gave it one.
pub fn optional_input_crops(ctx: &StageContext) -> Result<Option<artifacts::Crops>, StageError> {
    match ctx.optional_input::<Crop>() {
        Some(input) => Ok(Some(artifacts::read_crops(
            &input.dir.join(artifacts::CROPS),
        )?)),
        None => Ok(None),
    }
}

/// Images decoded at once; bounds memory to a few hundred MB whatever the data set size.
const CHUNK: usize = 1024;
/// The Kaggle images are 424×424.
pub const IMAGE_SIZE: (usize, usize) = (424, 424);

/// A crop: the square cut (x, y, side), how it was placed, and its RGB bytes.
pub type Cropped = ((u16, u16, u16), Placement, Vec<u8>);

/// The crop of one image, or why it could not be made.
pub fn crop_one(path: &Path, p: &CropParams) -> Result<Cropped, String> {
    match vision::decode_jpeg_native(path, Some(IMAGE_SIZE)).map_err(|e| e.to_string())? {
        vision::Decoded::YCbCr(img) => Ok(crop_decoded(&img, p)),
        vision::Decoded::Rgb(img) => Ok(crop_decoded(&img, p)),
    }
}

fn crop_decoded<R: vision::Raster>(img: &R, p: &CropParams) -> Cropped {
    let vision::View { width, height, .. } = img.view();
    let (square, placement) = match p.method {
        CropMethod::Center => (
            vision::centre_square(width, height, p.center_size as usize),
            Placement::Center,
        ),
        CropMethod::Roi => vision::square_around(
            vision::roi_box(img, p.threshold),
            p.padding,
            width,
            height,
            p.fallback == CropFallback::Clamp,
        ),
    };
    let pixels = vision::crop_resize(img, square, p.size as usize);
    (
        (square.x as u16, square.y as u16, square.w as u16),
        placement,
        pixels,
    )
}

impl StageKindDef for Crop {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "crop",
        // 4: ROI thresholded on the JPEG's own luma, crops averaged in YCbCr then converted.
        // 5: centre crops record their placement as `center` (was `roi`).
        code_version: 5,
        seed: SeedUse::Unused,
        path_params: &[],
        accepts: &["ingest"],
        requires: &[Need::one(&["ingest"])],
        job: JobShape::PARALLEL,
    });
    type Params = CropParams;

    fn run(&self, p: &CropParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let catalog = super::ingest::input_catalog(ctx)?;
        let size = p.size as usize;
        let out_path = ctx.out_dir.join(crate::artifacts::CROPS);
        let mut stream = ParquetStream::create(&out_path, Arc::new(artifacts::crops_schema(size)))?;
        ctx.progress
            .start(catalog.len() as u64, "images", "cropping");

        let mut tally = Tally::default();
        // A writer thread encodes and writes chunk k while the cores crop chunk k + 1.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<CropRow>>(1);
        std::thread::scope(|scope| -> Result<(), StageError> {
            let tx = tx;
            let writer = scope.spawn(move || -> Result<(), StageError> {
                for rows in rx {
                    stream.write(&artifacts::crops_batch(size, &rows))?;
                }
                stream.finish().map_err(StageError::from)
            });
            for chunk in catalog.chunks(CHUNK) {
                let results: Vec<(&CatalogRow, Result<Cropped, String>)> = chunk
                    .par_iter()
                    .map(|row| {
                        let r = crop_one(Path::new(&row.image_path), p);
                        ctx.progress.inc(1);
                        (row, r)
                    })
                    .collect();
                let mut rows = Vec::with_capacity(results.len());
                for (row, result) in results {
                    rows.extend(tally.take(row, result, p)?);
                }
                tally.written += rows.len();
                if !rows.is_empty() && tx.send(rows).is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            drop(tx);
            writer
                .join()
                .expect("the Parquet writer thread does not panic")
        })?;
        if tally.written == 0 {
            return Err(StageError::msg("no image could be cropped"));
        }
        write_contact_sheet(&ctx.out_dir.join("contact_sheet.png"), size, &tally.sheet)?;
        if !tally.skipped.is_empty() {
            let path = ctx.out_dir.join(crate::artifacts::SKIPPED);
            artifacts::write_skipped(&path, &tally.skipped)?;
        }
        Ok(tally.outcome())
    }
}

/// What the crop of a whole catalog counted on the way.
#[derive(Default)]
struct Tally {
    skipped: Vec<(u64, String)>,
    placements: BTreeMap<&'static str, usize>,
    /// The first 64 crops, for the contact sheet.
    sheet: Vec<Vec<u8>>,
    written: usize,
}

impl Tally {
    /// The row of one cropped image; a bad image fails or is skipped (`on_bad_image`).
    fn take(
        &mut self,
        row: &CatalogRow,
        result: Result<Cropped, String>,
        p: &CropParams,
    ) -> Result<Option<CropRow>, StageError> {
        let (roi, placement, pixels) = match result {
            Ok(cropped) => cropped,
            Err(reason) => {
                return match p.on_bad_image {
                    OnProblem::Error => Err(StageError::msg(format!(
                        "{}: {reason} (galaxy {}); set on_bad_image = \"skip\" to leave such images out",
                        row.image_path, row.id
                    ))),
                    OnProblem::Skip => {
                        let why = format!("{}: {reason}", row.image_path);
                        self.skipped.push((row.id, why));
                        Ok(None)
                    }
                };
            }
        };
        let name = match placement {
            Placement::Roi => "roi",
            Placement::Clamped => "clamped",
            Placement::Whole => "whole",
            Placement::Center => "center",
        };
        *self.placements.entry(name).or_default() += 1;
        if self.sheet.len() < 64 {
            self.sheet.push(pixels.clone());
        }
        Ok(Some(CropRow {
            id: row.id,
            split: row.split,
            roi,
            placement: name,
            pixels,
            labels: row.labels,
        }))
    }

    fn outcome(self) -> StageOutcome {
        let written = self.written as f64;
        let mut notes = Vec::new();
        let mut metrics = BTreeMap::new();
        metrics.insert("images".into(), written);
        for (name, n) in &self.placements {
            metrics.insert(format!("placement_{name}"), *n as f64 / written);
        }
        if !self.skipped.is_empty() {
            metrics.insert("skipped".into(), self.skipped.len() as f64);
            notes.push(format!(
                "skipped {} bad image(s) (listed in skipped.parquet), first: {}",
                self.skipped.len(),
                self.skipped[0].1
            ));
        }
        if let Some(whole) = self.placements.get("whole") {
            notes.push(format!(
                "{:.1}% of crops fell back to the whole image",
                100.0 * *whole as f64 / written
            ));
        }
        StageOutcome { metrics, notes }
    }
}

/// An 8×8 grid of the first crops, for eyeballing.
fn write_contact_sheet(path: &Path, size: usize, crops: &[Vec<u8>]) -> Result<(), StageError> {
    let cols = 8;
    let rows = crops.len().div_ceil(cols).max(1);
    let (w, h) = (cols * (size + 2), rows * (size + 2));
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (i, c) in crops.iter().enumerate() {
        let (ox, oy) = ((i % cols) * (size + 2) + 1, (i / cols) * (size + 2) + 1);
        for y in 0..size {
            for x in 0..size {
                let p = &c[(y * size + x) * 3..(y * size + x) * 3 + 3];
                img.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    image::Rgb([p[0], p[1], p[2]]),
                );
            }
        }
    }
    img.save(path)
        .map_err(|e| StageError::msg(format!("writing {}: {e}", path.display())))
}

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CropMethod {
    /// Threshold → largest contour box → pad → square.
    Roi,
    /// A fixed centre square of `center_size` pixels.
    Center,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CropFallback {
    /// Use the whole image when the padded square leaves the frame (the seed's behaviour).
    Whole,
    /// Shift/clamp the square into the frame.
    Clamp,
}

/// `crop`: fixed-size uint8 RGB crops in `crops.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CropParams {
    #[serde(default = "defaults::crop_method")]
    pub method: CropMethod,
    /// Output side length in pixels.
    #[serde(default = "defaults::crop_size")]
    #[schemars(range(min = 8, max = 424))]
    pub size: u32,
    /// Grayscale threshold for the ROI mask.
    #[serde(default = "defaults::threshold")]
    pub threshold: u8,
    /// Padding around the ROI box, as a fraction of its longer side.
    #[serde(default = "defaults::padding")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub padding: f64,
    #[serde(default = "defaults::fallback")]
    pub fallback: CropFallback,
    /// Side of the centre square for `method = "center"`.
    #[serde(default = "defaults::center_size")]
    #[schemars(range(min = 8, max = 424))]
    pub center_size: u32,
    /// A corrupt or wrongly sized image: fail naming the file, or skip it with a reason.
    #[serde(default)]
    pub on_bad_image: OnProblem,
}

impl Params for CropParams {}

/// Defaults, one function each (serde needs functions).
mod defaults {
    use super::*;
    pub fn crop_method() -> CropMethod {
        CropMethod::Roi
    }
    pub fn crop_size() -> u32 {
        64
    }
    pub fn threshold() -> u8 {
        10
    }
    pub fn padding() -> f64 {
        0.2
    }
    pub fn fallback() -> CropFallback {
        CropFallback::Whole
    }
    pub fn center_size() -> u32 {
        207
    }
}
