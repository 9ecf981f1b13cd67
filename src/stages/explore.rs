//! `explore`: the seed's exploratory figures (PNG, plotters) and the numbers behind them.
//!
//! - `class_counts.png`: training galaxies with a vote fraction ≥ `confidence`, per class.
//! - `terminal_classes.png`: the class where each galaxy's most-voted path through the decision
//!   tree ends (smooth → roundness, edge-on → bulge shape, spiral → arm count, other disks →
//!   bulge prominence, star/artifact).
//! - `mean_image.png`: the mean of the training images.
//! - `correlation_q01.png` … `correlation_q11.png`: correlation of each question's answers.
//! - `gallery.png`: the highest-vote galaxy of every class, raw and (with a crop input) cropped.
//! - `summary.parquet`, `correlations.parquet`: the numbers behind the figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use plotters::prelude::*;
use rayon::prelude::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::artifacts::{self, CatalogRow, Split};
use crate::labels::{CLASS_NAMES, N_CLASSES, QUESTIONS};
use crate::vision;

use crate::kind::{JobShape, KindDecl, Need, Params, SeedUse, StageKind};

use super::{StageContext, StageError, StageKindDef, StageOutcome};

pub struct Explore;

/// The class (column) where the most-voted path through the tree ends.
pub fn terminal_class(l: &crate::labels::Labels) -> usize {
    let argmax = |q: usize| {
        let cols = QUESTIONS[q].columns.clone();
        cols.clone()
            .max_by(|a, b| l[*a].total_cmp(&l[*b]))
            .unwrap_or(cols.start)
    };
    match argmax(0) {
        0 => argmax(6), // smooth → Q7 roundness
        2 => 2,         // star or artifact
        _ => {
            if argmax(1) == 3 {
                argmax(8) // edge-on → Q9 bulge shape
            } else if argmax(3) == 7 {
                argmax(10) // spiral → Q11 arm count
            } else {
                argmax(4) // other disks → Q5 bulge prominence
            }
        }
    }
}

impl StageKindDef for Explore {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "explore",
        // 2: the gallery's area-averaging resize sums whole rows as integers (rounding moved).
        code_version: 2,
        seed: SeedUse::Unused,
        path_params: &[],
        accepts: &["ingest", "crop"],
        requires: &[Need::one(&["ingest"])],
        job: JobShape::LIGHT,
    });
    type Params = ExploreParams;

    fn run(&self, p: &ExploreParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        crate::figures::register_font();
        let catalog = super::ingest::input_catalog(ctx)?;
        let train: Vec<(&CatalogRow, crate::labels::Labels)> = catalog
            .iter()
            .filter(|r| r.split == Split::Train)
            .filter_map(|r| r.labels.map(|l| (r, l)))
            .collect();
        if train.is_empty() {
            return Err(StageError::msg("no labelled training galaxies to explore"));
        }
        let out = &ctx.out_dir;
        let threshold = p.confidence as f32;

        let confident: Vec<u64> = (0..N_CLASSES)
            .map(|c| train.iter().filter(|(_, l)| l[c] >= threshold).count() as u64)
            .collect();
        let mut terminal = vec![0u64; N_CLASSES];
        for (_, l) in &train {
            terminal[terminal_class(l)] += 1;
        }
        bar_chart(
            &out.join("class_counts.png"),
            &format!("Training galaxies with vote ≥ {}", p.confidence),
            &confident,
        )?;
        bar_chart(
            &out.join("terminal_classes.png"),
            "Where the most-voted path through the tree ends",
            &terminal,
        )?;

        let correlations = correlation_figures(out, &train)?;
        let n = mean_image(ctx, p, &train, &out.join("mean_image.png"))?;

        // Gallery: the highest-vote galaxy of each class.
        let best: Vec<(usize, f32)> = (0..N_CLASSES)
            .map(|c| {
                train
                    .iter()
                    .enumerate()
                    .map(|(i, (_, l))| (i, l[c]))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap()
            })
            .collect();
        let crops = super::crop::optional_input_crops(ctx)?;
        gallery(&out.join("gallery.png"), &train, &best, crops.as_ref())?;

        write_summary(
            &out.join(crate::artifacts::SUMMARY),
            &train,
            &confident,
            &terminal,
            &best,
        )?;
        write_correlations(&out.join(crate::artifacts::CORRELATIONS), &correlations)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("train_galaxies".into(), train.len() as f64);
        metrics.insert("mean_image_galaxies".into(), n as f64);
        Ok(StageOutcome {
            metrics,
            notes: Vec::new(),
        })
    }
}

/// One heatmap per question of the Pearson correlations between its answers; the values.
fn correlation_figures(
    out: &Path,
    train: &[(&CatalogRow, crate::labels::Labels)],
) -> Result<Vec<(u8, &'static str, &'static str, f64)>, StageError> {
    let mut correlations = Vec::new();
    for q in QUESTIONS.iter() {
        let cols: Vec<usize> = q.columns.clone().collect();
        let matrix: Vec<Vec<f64>> = cols
            .iter()
            .map(|a| cols.iter().map(|b| pearson(train, *a, *b)).collect())
            .collect();
        for (i, a) in cols.iter().enumerate() {
            for (j, b) in cols.iter().enumerate() {
                correlations.push((q.number, CLASS_NAMES[*a], CLASS_NAMES[*b], matrix[i][j]));
            }
        }
        heatmap(
            &out.join(format!("correlation_q{:02}.png", q.number)),
            q.number,
            &cols,
            &matrix,
        )?;
    }
    Ok(correlations)
}

/// The mean of (up to `mean_image_limit`) training images, decoded in parallel, written to
/// `path`; how many images it averages.
fn mean_image(
    ctx: &StageContext,
    p: &ExploreParams,
    train: &[(&CatalogRow, crate::labels::Labels)],
    path: &Path,
) -> Result<usize, StageError> {
    let limit = if p.mean_image_limit == 0 {
        train.len()
    } else {
        (p.mean_image_limit as usize).min(train.len())
    };
    ctx.progress.start(limit as u64, "images", "mean image");
    let (sum, n) = train[..limit]
        .par_iter()
        .map(|(r, _)| {
            let img = vision::decode_jpeg(Path::new(&r.image_path), None)
                .map_err(|e| format!("{}: {e}", r.image_path));
            ctx.progress.inc(1);
            img
        })
        .try_fold(
            || (Vec::<u64>::new(), 0usize),
            |(mut acc, n), img| {
                let img = img?;
                if acc.is_empty() {
                    acc = vec![0; img.data.len()];
                }
                if acc.len() != img.data.len() {
                    return Err("training images differ in size".to_string());
                }
                acc.iter_mut()
                    .zip(&img.data)
                    .for_each(|(a, v)| *a += *v as u64);
                Ok((acc, n + 1))
            },
        )
        .try_reduce(
            || (Vec::new(), 0),
            |(a, n), (b, m)| {
                if a.is_empty() {
                    return Ok((b, m));
                }
                if b.is_empty() {
                    return Ok((a, n));
                }
                Ok((a.iter().zip(&b).map(|(x, y)| x + y).collect(), n + m))
            },
        )
        .map_err(StageError::msg)?;
    let side = ((sum.len() / 3) as f64).sqrt() as u32;
    let mean: Vec<u8> = sum
        .iter()
        .map(|v| (*v as f64 / n.max(1) as f64).round() as u8)
        .collect();
    image::RgbImage::from_raw(side, side, mean)
        .ok_or_else(|| StageError::msg("mean image is not square"))?
        .save(path)
        .map_err(|e| StageError::msg(format!("writing mean_image.png: {e}")))?;
    Ok(n)
}

fn pearson(rows: &[(&CatalogRow, crate::labels::Labels)], a: usize, b: usize) -> f64 {
    let n = rows.len() as f64;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (_, l) in rows {
        let (x, y) = (l[a] as f64, l[b] as f64);
        sa += x;
        sb += y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
    }
    let cov = sab / n - (sa / n) * (sb / n);
    let va = saa / n - (sa / n).powi(2);
    let vb = sbb / n - (sb / n).powi(2);
    if va <= 1e-15 || vb <= 1e-15 {
        0.0
    } else {
        (cov / (va * vb).sqrt()).clamp(-1.0, 1.0)
    }
}

fn bar_chart(path: &Path, title: &str, counts: &[u64]) -> Result<(), StageError> {
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(StageError::drawing("a figure"))?;
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut chart = crate::figures::class_axes(&root, title, "galaxies", max * 1.1 + 1.0)
        .map_err(StageError::msg)?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(70, 110, 180).filled())
                .margin(3)
                .data(counts.iter().enumerate().map(|(i, c)| (i, *c as f64))),
        )
        .map_err(StageError::drawing("a figure"))?;
    root.present().map_err(StageError::drawing("a figure"))
}

fn heatmap(path: &Path, question: u8, cols: &[usize], m: &[Vec<f64>]) -> Result<(), StageError> {
    let n = cols.len();
    let root = BitMapBackend::new(path, (560, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(StageError::drawing("a figure"))?;
    let names: Vec<String> = cols
        .iter()
        .map(|c| CLASS_NAMES[*c].trim_start_matches("Class").to_string())
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Question {question}: answer correlations"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(StageError::drawing("a figure"))?;
    let fmt = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < n => names[*i].clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_desc("answer")
        .y_desc("answer")
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(StageError::drawing("a figure"))?;
    let colour = |r: f64| {
        // Blue (−1) → white (0) → red (+1).
        let t = r.clamp(-1.0, 1.0);
        if t >= 0.0 {
            RGBColor(255, (255.0 * (1.0 - t)) as u8, (255.0 * (1.0 - t)) as u8)
        } else {
            RGBColor((255.0 * (1.0 + t)) as u8, (255.0 * (1.0 + t)) as u8, 255)
        }
    };
    for i in 0..n {
        for j in 0..n {
            let (x0, x1) = (SegmentValue::Exact(i), SegmentValue::Exact(i + 1));
            let (y0, y1) = (SegmentValue::Exact(j), SegmentValue::Exact(j + 1));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    colour(m[i][j]).filled(),
                )))
                .map_err(StageError::drawing("a figure"))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{:.2}", m[i][j]),
                    (SegmentValue::CenterOf(i), SegmentValue::CenterOf(j)),
                    ("sans-serif", 15).into_font(),
                )))
                .map_err(StageError::drawing("a figure"))?;
        }
    }
    root.present().map_err(StageError::drawing("a figure"))
}

fn gallery(
    path: &Path,
    train: &[(&CatalogRow, crate::labels::Labels)],
    best: &[(usize, f32)],
    crops: Option<&artifacts::Crops>,
) -> Result<(), StageError> {
    const TILE: u32 = 128;
    let cols = 6u32;
    let per = if crops.is_some() { 2 } else { 1 };
    let cell_w = TILE * per + 10;
    let cell_h = TILE + 34;
    let rows = (N_CLASSES as u32).div_ceil(cols);
    let (w, h) = (cols * cell_w + 10, rows * cell_h + 50);
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let crop_index: BTreeMap<u64, usize> = crops
        .map(|c| c.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect())
        .unwrap_or_default();
    let mut captions = Vec::new();
    for (c, (row, vote)) in best.iter().enumerate() {
        let (galaxy, _) = &train[*row];
        let (x0, y0) = (
            10 + (c as u32 % cols) * cell_w,
            40 + (c as u32 / cols) * cell_h,
        );
        let raw = vision::decode_jpeg(Path::new(&galaxy.image_path), None)
            .map_err(|e| StageError::msg(format!("{}: {e}", galaxy.image_path)))?;
        blit(&mut canvas, x0, y0, TILE, &resized(&raw, TILE));
        if let (Some(crops), Some(i)) = (crops, crop_index.get(&galaxy.id)) {
            let small = vision::Rgb {
                width: crops.size,
                height: crops.size,
                data: crops.pixels_of(*i).to_vec(),
            };
            blit(&mut canvas, x0 + TILE + 2, y0, TILE, &resized(&small, TILE));
        }
        captions.push((
            x0,
            y0 + TILE + 4,
            format!("{} {:.2} #{}", CLASS_NAMES[c], vote, galaxy.id),
        ));
    }
    let title = if crops.is_some() {
        "Highest-vote galaxy per class (raw | crop)"
    } else {
        "Highest-vote galaxy per class"
    };
    save_with_captions(canvas, title, &captions, path)
}

/// The whole of `img` area-resized to `side`×`side` RGB.
fn resized<R: vision::Raster>(img: &R, side: u32) -> Vec<u8> {
    let vision::View { width, height, .. } = img.view();
    let whole = vision::BoxPx {
        x: 0,
        y: 0,
        w: width,
        h: height,
    };
    vision::crop_resize(img, whole, side as usize)
}

/// `canvas` with `title` and the captions (x, y, text) drawn over it by plotters, as a PNG.
fn save_with_captions(
    canvas: image::RgbImage,
    title: &str,
    captions: &[(u32, u32, String)],
    path: &Path,
) -> Result<(), StageError> {
    let (w, h) = canvas.dimensions();
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.draw(&Text::new(title, (10, 8), ("sans-serif", 24).into_font()))
            .map_err(StageError::drawing("a figure"))?;
        for (x, y, text) in captions {
            root.draw(&Text::new(
                text.as_str(),
                (*x as i32, *y as i32),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(StageError::drawing("a figure"))?;
        }
        root.present().map_err(StageError::drawing("a figure"))?;
    }
    image::RgbImage::from_raw(w, h, buf)
        .expect("buffer size")
        .save(path)
        .map_err(|e| StageError::msg(format!("writing {}: {e}", path.display())))
}

fn blit(canvas: &mut image::RgbImage, x0: u32, y0: u32, side: u32, rgb: &[u8]) {
    for y in 0..side {
        for x in 0..side {
            let i = ((y * side + x) * 3) as usize;
            canvas.put_pixel(x0 + x, y0 + y, image::Rgb([rgb[i], rgb[i + 1], rgb[i + 2]]));
        }
    }
}

fn write_summary(
    path: &Path,
    train: &[(&CatalogRow, crate::labels::Labels)],
    confident: &[u64],
    terminal: &[u64],
    best: &[(usize, f32)],
) -> Result<(), StageError> {
    let n = train.len() as f64;
    let mean: Vec<f64> = (0..N_CLASSES)
        .map(|c| train.iter().map(|(_, l)| l[c] as f64).sum::<f64>() / n)
        .collect();
    let schema = artifacts::summary_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(CLASS_NAMES)),
        Arc::new(UInt64Array::from(confident.to_vec())),
        Arc::new(UInt64Array::from(terminal.to_vec())),
        Arc::new(Float64Array::from(mean)),
        Arc::new(Float64Array::from_iter_values(
            best.iter().map(|b| b.1 as f64),
        )),
        Arc::new(UInt64Array::from_iter_values(
            best.iter().map(|b| train[b.0].0.id),
        )),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).expect("columns match");
    Ok(artifacts::write_parquet(path, &batch)?)
}

fn write_correlations(path: &Path, rows: &[(u8, &str, &str, f64)]) -> Result<(), StageError> {
    let schema = artifacts::correlations_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.0 as u64),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).expect("columns match");
    Ok(artifacts::write_parquet(path, &batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_class_follows_the_most_voted_path() {
        let mut l = [0f32; N_CLASSES];
        l[0] = 0.8; // smooth
        l[17] = 0.6; // cigar
        assert_eq!(CLASS_NAMES[terminal_class(&l)], "Class7.3");
        let mut l = [0f32; N_CLASSES];
        l[1] = 0.9; // features
        l[4] = 0.8; // not edge-on
        l[7] = 0.7; // spiral
        l[32] = 0.5; // two arms
        assert_eq!(CLASS_NAMES[terminal_class(&l)], "Class11.2");
        let mut l = [0f32; N_CLASSES];
        l[2] = 0.9;
        assert_eq!(CLASS_NAMES[terminal_class(&l)], "Class1.3");
    }
}

// Parameters: the `[stages.<id>]` keys of this kind (the JSON Schema is generated from them).

/// `explore`: figures and `summary.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExploreParams {
    /// Vote fraction at or above which a galaxy counts as showing a class.
    #[serde(default = "defaults::confidence")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// At most this many training images enter the mean image (0 = all).
    #[serde(default)]
    pub mean_image_limit: u32,
}

impl Params for ExploreParams {}

/// Defaults, one function each (serde needs functions).
mod defaults {
    pub fn confidence() -> f64 {
        0.5
    }
}
