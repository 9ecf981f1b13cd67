//! Shared plotting helpers (plotters): the embedded font and the 37-class axis.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::prelude::*;

use crate::labels::{CLASS_NAMES, N_CLASSES};

static FONT: Once = Once::new();

/// Plotters draws text with an embedded DejaVu Sans, so figures look the same everywhere.
pub fn register_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

pub type ClassChart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<SegmentedCoord<RangedCoordusize>, RangedCoordf64>>;

/// A chart whose x axis is the 37 classes (labelled `1.1` … `11.6`) and y axis `0..y_max`.
pub fn class_axes<'a, DB: DrawingBackend + 'a>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    y_max: f64,
) -> Result<ClassChart<'a, DB>, String> {
    let err = |e: &dyn std::fmt::Display| format!("drawing `{title}`: {e}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 26))
        .margin(14)
        .x_label_area_size(90)
        .y_label_area_size(70)
        .build_cartesian_2d((0..N_CLASSES - 1).into_segmented(), 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(N_CLASSES)
        .x_desc("class")
        .y_desc(y_desc)
        .x_label_style(
            ("sans-serif", 13)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < N_CLASSES => {
                CLASS_NAMES[*i].trim_start_matches("Class").to_string()
            }
            _ => String::new(),
        })
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|e| err(&e))?;
    Ok(chart)
}
