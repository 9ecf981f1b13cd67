//! The crop square around the ROI (or the centre), and the area-averaging resize.

use super::raster::{Raster, View};
use super::roi::BoxPx;

/// How a crop square was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The padded square fits in the image.
    Roi,
    /// It did not fit and was shifted into the frame.
    Clamped,
    /// It did not fit (or nothing was found): the whole image is used.
    Whole,
    /// A fixed centre square (`method = "center"`), no ROI search.
    Center,
}

/// The square to crop around `roi`: side = longer side × (1 + 2·padding), centred on the box.
/// If it leaves the image, `clamp` shifts it inside (when it can), else the whole image is used.
pub fn square_around(
    roi: Option<BoxPx>,
    padding: f64,
    width: usize,
    height: usize,
    clamp: bool,
) -> (BoxPx, Placement) {
    let whole = (
        BoxPx {
            x: 0,
            y: 0,
            w: width,
            h: height,
        },
        Placement::Whole,
    );
    let Some(b) = roi else { return whole };
    let long = b.w.max(b.h) as f64;
    let side = (long + 2.0 * (padding * long).round()).round() as i64;
    let cx2 = 2 * b.x as i64 + b.w as i64; // twice the centre, to stay in integers
    let cy2 = 2 * b.y as i64 + b.h as i64;
    let x = (cx2 - side) / 2;
    let y = (cy2 - side) / 2;
    let fits =
        |x: i64, y: i64| x >= 0 && y >= 0 && x + side <= width as i64 && y + side <= height as i64;
    let square = |x: i64, y: i64| BoxPx {
        x: x as usize,
        y: y as usize,
        w: side as usize,
        h: side as usize,
    };
    if fits(x, y) {
        return (square(x, y), Placement::Roi);
    }
    if clamp && side <= width.min(height) as i64 {
        let x = x.clamp(0, width as i64 - side);
        let y = y.clamp(0, height as i64 - side);
        return (square(x, y), Placement::Clamped);
    }
    whole
}

/// A centred square of `side` pixels (clipped to the image).
pub fn centre_square(width: usize, height: usize, side: usize) -> BoxPx {
    let side = side.min(width).min(height);
    BoxPx {
        x: (width - side) / 2,
        y: (height - side) / 2,
        w: side,
        h: side,
    }
}

/// Crop `b` out of `img` and resize it to `size`×`size` RGB by area averaging (each output
/// pixel is the mean of the input area it covers, with fractional edge weights, like OpenCV
/// INTER_AREA when shrinking). A YCbCr image is averaged first and converted after.
pub fn crop_resize<R: Raster>(img: &R, b: BoxPx, size: usize) -> Vec<u8> {
    let xs = area_weights(b.x, b.w, size);
    let ys = area_weights(b.y, b.h, size);
    let View { width, data, .. } = img.view();
    let stride = width * 3;
    // Vertical pass first, a whole box row at a time (vectorises): `size` rows of b.w pixels.
    let span = b.w * 3;
    let mut cols = vec![0f32; size * span];
    // Rows with the largest weight (the ones the cell covers whole) are summed as integers
    // first; the sum and the (at most two) fractional edge rows are then weighted in one pass.
    let mut sum = vec![0u16; span];
    for ((first, weights), acc) in ys.iter().zip(cols.chunks_exact_mut(span)) {
        let whole = weights.iter().copied().fold(0f32, f32::max);
        let row = |k: usize| {
            let start = (first + k) * stride + b.x * 3;
            &data[start..start + span]
        };
        let mut summed = 0;
        let mut edges: [Option<(&[u8], f32)>; 2] = [None, None];
        for (k, &wgt) in weights.iter().enumerate() {
            // u16 sums stay exact for up to 257 rows of 255.
            if wgt == whole && summed < 257 {
                // The first whole row overwrites the previous cell's sums (no separate clear).
                let keep = (summed > 0) as u16;
                for (s, &v) in sum.iter_mut().zip(row(k)) {
                    *s = *s * keep + v as u16;
                }
                summed += 1;
            } else if let Some(slot) = edges.iter_mut().find(|e| e.is_none()) {
                *slot = Some((row(k), wgt));
            } else {
                for (a, &v) in acc.iter_mut().zip(row(k)) {
                    *a += v as f32 * wgt;
                }
            }
        }
        if summed == 0 {
            sum.fill(0);
        }
        match edges {
            [Some((e1, w1)), Some((e2, w2))] => {
                for (((a, &s), &v1), &v2) in acc.iter_mut().zip(&sum).zip(e1).zip(e2) {
                    *a += v1 as f32 * w1 + v2 as f32 * w2 + s as f32 * whole;
                }
            }
            [Some((e1, w1)), None] => {
                for ((a, &s), &v1) in acc.iter_mut().zip(&sum).zip(e1) {
                    *a += v1 as f32 * w1 + s as f32 * whole;
                }
            }
            _ => {
                for (a, &s) in acc.iter_mut().zip(&sum) {
                    *a += s as f32 * whole;
                }
            }
        }
    }
    // Horizontal pass over only `size` rows.
    let mut out = Vec::with_capacity(size * size * 3);
    for row in cols.chunks_exact(span) {
        for (first, weights) in &xs {
            let taps = &row[(first - b.x) * 3..(first - b.x + weights.len()) * 3];
            let mut px = [0f32; 3];
            for (p, &wgt) in taps.chunks_exact(3).zip(weights) {
                px[0] += p[0] * wgt;
                px[1] += p[1] * wgt;
                px[2] += p[2] * wgt;
            }
            out.extend(R::to_rgb(px));
        }
    }
    out
}

/// For each of `n` output cells over input span [start, start+len): the first input index and
/// the weights of the consecutive inputs it averages (summing to 1).
fn area_weights(start: usize, len: usize, n: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f64 / n as f64;
    (0..n)
        .map(|o| {
            let a = o as f64 * scale;
            let b = (o + 1) as f64 * scale;
            if scale <= 1.0 {
                // Enlarging: nearest sample (no area to average).
                let i = (((a + b) / 2.0).floor() as usize).min(len - 1);
                return (start + i, vec![1.0]);
            }
            let mut first = None;
            let mut weights = Vec::new();
            let mut i = a.floor() as usize;
            while (i as f64) < b && i < len {
                let lo = (i as f64).max(a);
                let hi = ((i + 1) as f64).min(b);
                if hi > lo {
                    first.get_or_insert(start + i);
                    weights.push(((hi - lo) / scale) as f32);
                }
                i += 1;
            }
            (first.unwrap_or(start), weights)
        })
        .collect()
}
