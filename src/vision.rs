//! Image kernels: decode, region of interest, crop, area-averaging resize. Pure functions.

use std::path::Path;

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a decodable JPEG: {0}")]
    Decode(String),
    #[error("is {0}×{1}, expected {2}×{3}")]
    WrongSize(usize, usize, usize, usize),
}

/// Decode a JPEG (grayscale and CMYK are converted to RGB) and check its size.
pub fn decode_jpeg(path: &Path, expect: Option<(usize, usize)>) -> Result<Rgb, DecodeError> {
    let bytes = std::fs::read(path)?;
    decode_jpeg_bytes(&bytes, expect)
}

pub fn decode_jpeg_bytes(bytes: &[u8], expect: Option<(usize, usize)>) -> Result<Rgb, DecodeError> {
    use image::ImageDecoder;
    // The decoder pads a truncated scan with grey instead of failing; a complete JPEG ends with
    // the end-of-image marker (allowing a little trailing padding).
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    if bytes.len() >= 4 && bytes[..2] == [0xFF, 0xD8] && !tail.windows(2).any(|w| w == [0xFF, 0xD9])
    {
        return Err(DecodeError::Decode(
            "truncated JPEG (no end-of-image marker)".into(),
        ));
    }
    let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| DecodeError::Decode(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let (w, h) = (w as usize, h as usize);
    if let Some((ew, eh)) = expect
        && (w, h) != (ew, eh)
    {
        return Err(DecodeError::WrongSize(w, h, ew, eh));
    }
    let img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| DecodeError::Decode(e.to_string()))?;
    let data = match img {
        image::DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        other => other.to_rgb8().into_raw(),
    };
    Ok(Rgb {
        width: w,
        height: h,
        data,
    })
}

/// An axis-aligned box: top-left corner and size, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxPx {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// The bounding box of the 8-connected component of `gray > threshold` whose bounding box is
/// largest (the seed's "external contours, largest bounding rectangle"); None if nothing is
/// above the threshold.
pub fn roi_box(img: &Rgb, threshold: u8) -> Option<BoxPx> {
    // Run-length labelling: collect each row's runs of foreground pixels, union runs that touch
    // a run of the previous row (8-connectivity: overlapping once widened by one pixel), and
    // keep one bounding box per set. Much cheaper than a per-pixel flood fill.
    struct Run {
        y: usize,
        x0: usize,
        x1: usize,
    }
    let (w, h) = (img.width, img.height);
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut prev = 0..0; // indices of the previous row's runs
    // luma > t  ⇔  4899 R + 9617 G + 1868 B + 8192 ≥ (t + 1) · 2^14
    let limit = ((threshold as u32 + 1) << 14).saturating_sub(8192);
    let mut mask = vec![0u8; w];
    let mut bits = vec![0u64; w.div_ceil(64)];
    for y in 0..h {
        let row = &img.data[y * w * 3..(y + 1) * w * 3];
        for (m, p) in mask.iter_mut().zip(row.chunks_exact(3)) {
            *m = (p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 >= limit) as u8;
        }
        // Pack the 0/1 bytes into bits (byte i of each 8 → bit i) and find runs with
        // trailing-zero counts: cheap even for the many one-pixel runs of a noisy sky.
        for (word, chunk) in bits.iter_mut().zip(mask.chunks(64)) {
            *word = 0;
            for (k, c8) in chunk.chunks(8).enumerate() {
                let mut b = [0u8; 8];
                b[..c8.len()].copy_from_slice(c8);
                let v = u64::from_le_bytes(b);
                *word |= (v.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (k * 8);
            }
        }
        let start = runs.len();
        let mut x = 0;
        while let Some(x0) = next_bit(&bits, x, w, true) {
            let end = next_bit(&bits, x0, w, false).unwrap_or(w);
            runs.push(Run { y, x0, x1: end - 1 });
            parent.push(runs.len() - 1);
            x = end;
        }
        // Union with touching runs of the previous row (both lists are sorted by x).
        let mut j = prev.start;
        for i in start..runs.len() {
            while j < prev.end && runs[j].x1 + 1 < runs[i].x0 {
                j += 1;
            }
            let mut k = j;
            while k < prev.end && runs[k].x0 <= runs[i].x1 + 1 {
                let (a, b) = (find(&mut parent, i), find(&mut parent, k));
                if a != b {
                    // The root is the run seen first in raster order (keeps ties stable).
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    parent[hi] = lo;
                }
                k += 1;
            }
        }
        prev = start..runs.len();
    }
    // Bounding box per set, then the largest box (ties: the set seen first).
    let mut boxes: Vec<Option<(usize, usize, usize, usize)>> = vec![None; runs.len()];
    for i in 0..runs.len() {
        let r = find(&mut parent, i);
        let run = &runs[i];
        let b = boxes[r].get_or_insert((run.x0, run.y, run.x1, run.y));
        b.0 = b.0.min(run.x0);
        b.1 = b.1.min(run.y);
        b.2 = b.2.max(run.x1);
        b.3 = b.3.max(run.y);
    }
    let mut best: Option<(usize, BoxPx)> = None;
    for (x0, y0, x1, y1) in boxes.into_iter().flatten() {
        let b = BoxPx {
            x: x0,
            y: y0,
            w: x1 - x0 + 1,
            h: y1 - y0 + 1,
        };
        let area = b.w * b.h;
        if best.as_ref().is_none_or(|(a, _)| area > *a) {
            best = Some((area, b));
        }
    }
    best.map(|(_, b)| b)
}

/// The first position ≥ `from` (and < `w`) whose bit is `set`.
fn next_bit(bits: &[u64], from: usize, w: usize, set: bool) -> Option<usize> {
    let load = |i: usize| if set { bits[i] } else { !bits[i] };
    let mut i = from / 64;
    if i >= bits.len() {
        return None;
    }
    let mut word = load(i) & (!0u64 << (from % 64));
    loop {
        if word != 0 {
            let p = i * 64 + word.trailing_zeros() as usize;
            return (p < w).then_some(p);
        }
        i += 1;
        if i >= bits.len() {
            return None;
        }
        word = load(i);
    }
}

/// How a crop square was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The padded square fits in the image.
    Roi,
    /// It did not fit and was shifted into the frame.
    Clamped,
    /// It did not fit (or nothing was found): the whole image is used.
    Whole,
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

/// Crop `b` out of `img` and resize it to `size`×`size` by area averaging (each output pixel is
/// the mean of the input area it covers, with fractional edge weights, like OpenCV INTER_AREA
/// when shrinking).
pub fn crop_resize(img: &Rgb, b: BoxPx, size: usize) -> Vec<u8> {
    let xs = area_weights(b.x, b.w, size);
    let ys = area_weights(b.y, b.h, size);
    // Vertical pass first, a whole box row at a time (vectorises): `size` rows of b.w pixels.
    let span = b.w * 3;
    let mut cols: Vec<f32> = Vec::with_capacity(size * span);
    let mut acc = vec![0f32; span];
    for (first, weights) in &ys {
        acc.fill(0.0);
        for (k, &wgt) in weights.iter().enumerate() {
            let start = (first + k) * img.width * 3 + b.x * 3;
            for (a, &v) in acc.iter_mut().zip(&img.data[start..start + span]) {
                *a += v as f32 * wgt;
            }
        }
        cols.extend_from_slice(&acc);
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
            out.extend(px.map(|v| v.round().clamp(0.0, 255.0) as u8));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A black image with a bright filled ellipse centred at (cx, cy) with semi-axes (a, b).
    fn ellipse(w: usize, h: usize, cx: f64, cy: f64, a: f64, b: f64) -> Rgb {
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = ((x as f64 - cx) / a, (y as f64 - cy) / b);
                if dx * dx + dy * dy <= 1.0 {
                    data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[200, 180, 160]);
                }
            }
        }
        Rgb {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn truncated_and_non_jpeg_bytes_are_rejected() {
        let img = ellipse(424, 424, 200.0, 200.0, 30.0, 30.0);
        let mut jpeg = Vec::new();
        image::RgbImage::from_raw(424, 424, img.data.clone())
            .unwrap()
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        assert!(decode_jpeg_bytes(&jpeg, Some((424, 424))).is_ok());
        let cut = &jpeg[..jpeg.len() / 2];
        assert!(
            decode_jpeg_bytes(cut, Some((424, 424)))
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(decode_jpeg_bytes(b"hello", None).is_err());
        assert!(
            decode_jpeg_bytes(&jpeg, Some((100, 100)))
                .unwrap_err()
                .to_string()
                .contains("expected 100")
        );
    }

    #[test]
    fn roi_finds_the_ellipse_box() {
        let img = ellipse(424, 424, 200.0, 220.0, 40.0, 20.0);
        let b = roi_box(&img, 10).unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (160, 200, 81, 41));
    }

    /// Luma as OpenCV's RGB→gray: 0.299 R + 0.587 G + 0.114 B (fixed point, rounded).
    #[inline]
    fn luma(p: &[u8]) -> u8 {
        ((p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 + 8192) >> 14) as u8
    }

    /// The straightforward flood fill the run-based labelling replaced, as a reference.
    fn roi_reference(img: &Rgb, threshold: u8) -> Option<BoxPx> {
        let (w, h) = (img.width, img.height);
        let mask: Vec<bool> = img
            .data
            .chunks_exact(3)
            .map(|p| luma(p) > threshold)
            .collect();
        let mut seen = vec![false; w * h];
        let mut best: Option<(usize, BoxPx)> = None;
        for start in 0..w * h {
            if !mask[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                for (dx, dy) in [
                    (-1i64, -1i64),
                    (0, -1),
                    (1, -1),
                    (-1, 0),
                    (1, 0),
                    (-1, 1),
                    (0, 1),
                    (1, 1),
                ] {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx >= 0 && ny >= 0 && nx < w as i64 && ny < h as i64 {
                        let j = ny as usize * w + nx as usize;
                        if mask[j] && !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            let b = BoxPx {
                x: x0,
                y: y0,
                w: x1 - x0 + 1,
                h: y1 - y0 + 1,
            };
            if best.as_ref().is_none_or(|(a, _)| b.w * b.h > *a) {
                best = Some((b.w * b.h, b));
            }
        }
        best.map(|(_, b)| b)
    }

    #[test]
    fn run_labelling_matches_a_flood_fill_on_random_masks() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            let (w, h) = (rng.random_range(1..40), rng.random_range(1..40));
            let density = rng.random_range(0.05..0.7);
            let data: Vec<u8> = (0..w * h)
                .flat_map(|_| {
                    if rng.random_bool(density) {
                        [200u8; 3]
                    } else {
                        [0u8; 3]
                    }
                })
                .collect();
            let img = Rgb {
                width: w,
                height: h,
                data,
            };
            assert_eq!(
                roi_box(&img, 10),
                roi_reference(&img, 10),
                "case {case}: {w}×{h}"
            );
        }
    }

    #[test]
    fn roi_prefers_the_largest_box_over_small_stars() {
        let mut img = ellipse(424, 424, 212.0, 212.0, 30.0, 30.0);
        for (x, y) in [(10usize, 10usize), (400, 30)] {
            img.data[(y * 424 + x) * 3] = 255;
        }
        let b = roi_box(&img, 10).unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (182, 182, 61, 61));
    }

    #[test]
    fn padded_square_is_centred_on_the_box() {
        let b = BoxPx {
            x: 160,
            y: 200,
            w: 81,
            h: 41,
        };
        let (sq, how) = square_around(Some(b), 0.2, 424, 424, false);
        assert_eq!(how, Placement::Roi);
        assert_eq!(sq.w, 81 + 2 * 16);
        assert_eq!(
            (2 * sq.x + sq.w, 2 * sq.y + sq.h),
            (2 * 160 + 81, 2 * 200 + 41),
            "same centre"
        );
    }

    #[test]
    fn square_leaving_the_frame_falls_back_or_clamps() {
        let b = BoxPx {
            x: 0,
            y: 100,
            w: 100,
            h: 100,
        };
        assert_eq!(
            square_around(Some(b), 0.2, 424, 424, false).1,
            Placement::Whole
        );
        let (sq, how) = square_around(Some(b), 0.2, 424, 424, true);
        assert_eq!(how, Placement::Clamped);
        assert_eq!((sq.x, sq.w), (0, 140));
        assert_eq!(square_around(None, 0.2, 424, 424, true).1, Placement::Whole);
    }

    #[test]
    fn area_resize_averages_blocks() {
        // 4×4 → 2×2: each output pixel is the mean of a 2×2 block.
        let data: Vec<u8> = (0..16u8).flat_map(|v| [v * 10, 0, 255]).collect();
        let img = Rgb {
            width: 4,
            height: 4,
            data,
        };
        let out = crop_resize(
            &img,
            BoxPx {
                x: 0,
                y: 0,
                w: 4,
                h: 4,
            },
            2,
        );
        // block (0,0): values 0,10,40,50 → 25
        assert_eq!(out[0], 25);
        assert_eq!(out[2], 255);
        // block (1,1): 100,110,140,150 → 125
        assert_eq!(out[(3) * 3], 125);
    }

    #[test]
    fn area_resize_handles_fractional_ratios() {
        let img = Rgb {
            width: 3,
            height: 3,
            data: vec![90; 27],
        };
        let out = crop_resize(
            &img,
            BoxPx {
                x: 0,
                y: 0,
                w: 3,
                h: 3,
            },
            2,
        );
        assert!(
            out.iter().all(|&v| v == 90),
            "a flat image stays flat: {out:?}"
        );
    }

    #[test]
    fn ellipse_crop_keeps_the_galaxy_centred() {
        let img = ellipse(424, 424, 150.0, 260.0, 30.0, 30.0);
        let b = roi_box(&img, 10).unwrap();
        let (sq, _) = square_around(Some(b), 0.2, 424, 424, false);
        let crop = crop_resize(&img, sq, 64);
        let at = |x: usize, y: usize| crop[(y * 64 + x) * 3];
        assert!(at(32, 32) > 150, "centre of the crop is the galaxy");
        assert_eq!(at(0, 0), 0, "corner is background");
    }
}
