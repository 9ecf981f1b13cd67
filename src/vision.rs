//! Image kernels: decode, region of interest, crop, area-averaging resize. Pure functions.

use std::path::Path;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A JPEG's own full-range (JFIF) luma and chroma, interleaved Y, Cb, Cr, row-major: what the
/// decoder has before its colour conversion. Y is the image's luma (0.299 R + 0.587 G + 0.114 B).
#[derive(Debug, Clone, PartialEq)]
pub struct YCbCr {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A decoded JPEG as the crop kernels read it: YCbCr when the file is YCbCr (nearly every
/// JPEG), RGB otherwise (grayscale, CMYK, Adobe RGB).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    YCbCr(YCbCr),
    Rgb(Rgb),
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
    let (width, height, data) = decode_as(bytes, expect, |_| ColorSpace::RGB)?;
    Ok(Rgb {
        width,
        height,
        data,
    })
}

/// Decode a JPEG for cropping: its YCbCr samples without colour conversion when it has them
/// (the crop converts only its 64×64 result), else RGB.
pub fn decode_jpeg_native(
    path: &Path,
    expect: Option<(usize, usize)>,
) -> Result<Decoded, DecodeError> {
    let bytes = std::fs::read(path)?;
    let mut native = false;
    let (width, height, data) = decode_as(&bytes, expect, |input| {
        native = input == ColorSpace::YCbCr;
        if native { input } else { ColorSpace::RGB }
    })?;
    Ok(if native {
        Decoded::YCbCr(YCbCr {
            width,
            height,
            data,
        })
    } else {
        Decoded::Rgb(Rgb {
            width,
            height,
            data,
        })
    })
}

/// Decode with zune-jpeg into the colour space `out` picks from the file's own.
fn decode_as(
    bytes: &[u8],
    expect: Option<(usize, usize)>,
    out: impl FnOnce(ColorSpace) -> ColorSpace,
) -> Result<(usize, usize, Vec<u8>), DecodeError> {
    // The decoder pads a truncated scan with grey instead of failing; a complete JPEG ends with
    // the end-of-image marker (allowing a little trailing padding).
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    if bytes.len() >= 4 && bytes[..2] == [0xFF, 0xD8] && !tail.windows(2).any(|w| w == [0xFF, 0xD9])
    {
        return Err(DecodeError::Decode(
            "truncated JPEG (no end-of-image marker)".into(),
        ));
    }
    let bad = |e: zune_jpeg::errors::DecodeErrors| DecodeError::Decode(e.to_string());
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(bad)?;
    let (w, h) = decoder.dimensions().expect("headers were decoded");
    if let Some((ew, eh)) = expect
        && (w, h) != (ew, eh)
    {
        return Err(DecodeError::WrongSize(w, h, ew, eh));
    }
    let input = decoder.input_colorspace().expect("headers were decoded");
    decoder.set_options(options.jpeg_set_out_colorspace(out(input)));
    let data = decoder.decode().map_err(bad)?;
    Ok((w, h, data))
}

/// A borrowed three-channel image: width, height and interleaved bytes, row-major.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [u8],
}

/// Three interleaved 8-bit channels per pixel, as the ROI and resize kernels read them.
pub trait Raster {
    fn view(&self) -> View<'_>;
    /// Sets bit x (least significant first, 64 per word) of `bits` for each pixel of row `y`
    /// whose luma is above `threshold`; clears the others.
    fn bright_bits(&self, y: usize, threshold: u8, bits: &mut [u64]);
    /// One output pixel (channel values averaged, 0–255 scale) as rounded RGB bytes.
    fn to_rgb(px: [f32; 3]) -> [u8; 3];
}

impl Raster for Rgb {
    fn view(&self) -> View<'_> {
        View {
            width: self.width,
            height: self.height,
            data: &self.data,
        }
    }
    fn bright_bits(&self, y: usize, threshold: u8, bits: &mut [u64]) {
        // luma > t  ⇔  4899 R + 9617 G + 1868 B + 8192 ≥ (t + 1) · 2^14 (OpenCV's RGB→gray)
        let limit = ((threshold as u32 + 1) << 14).saturating_sub(8192);
        let w = self.width;
        let row = &self.data[y * w * 3..(y + 1) * w * 3];
        for (word, px64) in bits.iter_mut().zip(row.chunks(64 * 3)) {
            *word = 0;
            for (k, px8) in px64.chunks(8 * 3).enumerate() {
                let mut bytes = [0u8; 8];
                for (b, p) in bytes.iter_mut().zip(px8.chunks_exact(3)) {
                    *b = (p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 >= limit)
                        as u8;
                }
                // byte i of 8 (0 or 1) → bit i
                let v = u64::from_le_bytes(bytes);
                *word |= (v.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (k * 8);
            }
        }
    }
    fn to_rgb(px: [f32; 3]) -> [u8; 3] {
        px.map(|v| v.round().clamp(0.0, 255.0) as u8)
    }
}

impl Raster for YCbCr {
    fn view(&self) -> View<'_> {
        View {
            width: self.width,
            height: self.height,
            data: &self.data,
        }
    }
    fn bright_bits(&self, y: usize, threshold: u8, bits: &mut [u64]) {
        let w = self.width;
        y_bits(&self.data[y * w * 3..(y + 1) * w * 3], threshold, bits);
    }
    fn to_rgb([y, cb, cr]: [f32; 3]) -> [u8; 3] {
        // JFIF: full-range BT.601. `as u8` saturates, so adding ½ and truncating rounds.
        let (cb, cr) = (cb - 128.0, cr - 128.0);
        [
            y + 1.402 * cr,
            y - 0.344_136 * cb - 0.714_136 * cr,
            y + 1.772 * cb,
        ]
        .map(|v| (v + 0.5) as u8)
    }
}

/// `bright_bits` for interleaved Y, Cb, Cr bytes: bit x set when the Y of pixel x is above
/// `threshold`.
fn y_bits(row: &[u8], threshold: u8, bits: &mut [u64]) {
    // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it.
    #[cfg(target_arch = "x86_64")]
    return unsafe { y_bits_sse2(row, threshold, bits) };
    #[cfg(not(target_arch = "x86_64"))]
    return y_bits_scalar(row, threshold, bits);
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn y_bits_scalar(row: &[u8], threshold: u8, bits: &mut [u64]) {
    bits.fill(0);
    for (x, p) in row.chunks_exact(3).enumerate() {
        bits[x / 64] |= ((p[0] > threshold) as u64) << (x % 64);
    }
}

/// Bit i of `EVERY_THIRD[v]` is bit 3·i of the 12-bit `v`: picks the Y bits out of a
/// Y, Cb, Cr, Y, … byte mask, 4 pixels per lookup.
#[cfg(target_arch = "x86_64")]
static EVERY_THIRD: [u8; 4096] = {
    let mut t = [0u8; 4096];
    let mut v = 0;
    while v < 4096 {
        t[v] = ((v & 1) | (v >> 2 & 2) | (v >> 4 & 4) | (v >> 6 & 8)) as u8;
        v += 1;
    }
    t
};

/// SSE2 (every x86-64 has it): 16 pixels = 48 bytes per step — compare every byte with the
/// threshold, gather the 48 comparison bits with `movemask`, keep every third.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn y_bits_sse2(row: &[u8], threshold: u8, bits: &mut [u64]) {
    use std::arch::x86_64::*;
    bits.fill(0);
    let t = _mm_set1_epi8(threshold as i8);
    let zero = _mm_setzero_si128();
    // 16 bits, one per byte of `v`, set where the byte is above the threshold.
    let above = |v: __m128i| {
        (!_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_subs_epu8(v, t), zero))) as u64 & 0xFFFF
    };
    let groups = row.len() / 48;
    for g in 0..groups {
        let p = row[g * 48..g * 48 + 48].as_ptr() as *const __m128i;
        // SAFETY: the slice above holds 48 bytes, read as three unaligned 16-byte loads.
        let (a, b, c) = unsafe {
            (
                _mm_loadu_si128(p),
                _mm_loadu_si128(p.add(1)),
                _mm_loadu_si128(p.add(2)),
            )
        };
        let m = above(a) | above(b) << 16 | above(c) << 32;
        let mut px = 0u64;
        for k in 0..4 {
            px |= (EVERY_THIRD[(m >> (12 * k)) as usize & 0xFFF] as u64) << (4 * k);
        }
        bits[g / 4] |= px << (16 * (g % 4));
    }
    for (i, p) in row[groups * 48..].chunks_exact(3).enumerate() {
        let x = groups * 16 + i;
        bits[x / 64] |= ((p[0] > threshold) as u64) << (x % 64);
    }
}

/// An axis-aligned box: top-left corner and size, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxPx {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// The bounding box of the 8-connected component of `luma > threshold` whose bounding box is
/// largest (the seed's "external contours, largest bounding rectangle"); None if nothing is
/// above the threshold.
pub fn roi_box<R: Raster>(img: &R, threshold: u8) -> Option<BoxPx> {
    let View { width, height, .. } = img.view();
    let mut bits = vec![0u64; width.div_ceil(64)];
    let mut labels = Labelling::new(width);
    for y in 0..height {
        img.bright_bits(y, threshold, &mut bits);
        labels.add_row(y as u16, &bits);
    }
    labels.largest_box()
}

/// Run-length connected-component labelling: each row's runs of foreground pixels are joined
/// to the runs of the previous row they touch (8-connectivity: overlapping once widened by one
/// pixel) in a union–find whose roots carry their set's bounding box. Much cheaper than a
/// per-pixel flood fill, and the noisy skies of the survey have thousands of tiny runs.
struct Labelling {
    width: usize,
    /// Union–find over sets, numbered in raster order of their first run.
    sets: Vec<Set>,
    /// The previous and the current row's runs: (first x, last x, set).
    prev: Vec<(u16, u16, u32)>,
    cur: Vec<(u16, u16, u32)>,
    /// Scratch: the current row's run starts and ends (`width` + 4 long, see `run_bounds`).
    starts: Vec<u16>,
    ends: Vec<u16>,
}

#[derive(Clone, Copy)]
struct Set {
    parent: u32,
    x0: u16,
    y0: u16,
    x1: u16,
    y1: u16,
}

/// The root of set `i` (halving the path on the way).
fn find(sets: &mut [Set], mut i: u32) -> u32 {
    while sets[i as usize].parent != i {
        let grand = sets[sets[i as usize].parent as usize].parent;
        sets[i as usize].parent = grand;
        i = grand;
    }
    i
}

/// Merge the sets rooted at `a` and `b`; the one created first stays the root (keeps ties in
/// raster order). Returns the root.
fn union(sets: &mut [Set], a: u32, b: u32) -> u32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let h = sets[hi as usize];
    let l = &mut sets[lo as usize];
    (l.x0, l.y0, l.x1, l.y1) = (
        l.x0.min(h.x0),
        l.y0.min(h.y0),
        l.x1.max(h.x1),
        l.y1.max(h.y1),
    );
    sets[hi as usize].parent = lo;
    lo
}

/// The first and the last x of every run of set bits in `bits` (x < `width`): fills the front
/// of `starts` and `ends` (each at least `width` + 4 long) and returns how many runs.
fn run_bounds(bits: &[u64], width: usize, starts: &mut [u16], ends: &mut [u16]) -> usize {
    let (mut n_first, mut n_last) = (0, 0);
    let mut carry = 0u64; // the previous word's top bit
    for (i, &word) in bits.iter().enumerate() {
        let valid = if (i + 1) * 64 <= width {
            !0
        } else {
            (1u64 << (width - i * 64)) - 1
        };
        let b = word & valid;
        let next_low = bits.get(i + 1).map_or(0, |n| n & 1) & (valid >> 63);
        let base = (i * 64) as u16;
        unpack_positions(b & !(b << 1 | carry), base, starts, &mut n_first);
        unpack_positions(b & !(b >> 1 | next_low << 63), base, ends, &mut n_last);
        carry = b >> 63;
    }
    debug_assert_eq!(n_first, n_last);
    n_first
}

/// Writes `base` + the position of each set bit of `word` at `out[*n..]` and advances `*n`.
/// Four positions are written per step whatever the count (the extra ones are overwritten
/// later), so the loop almost always runs once: a noisy row has one or two runs per word, and
/// a data-dependent loop exit per word would cost a branch misprediction each time.
#[inline]
fn unpack_positions(mut word: u64, base: u16, out: &mut [u16], n: &mut usize) {
    let end = *n + word.count_ones() as usize;
    let mut k = *n;
    while k < end {
        for slot in &mut out[k..k + 4] {
            *slot = base.wrapping_add(word.trailing_zeros() as u16);
            word &= word.wrapping_sub(1);
        }
        k += 4;
    }
    *n = end;
}

impl Labelling {
    /// Sized for a noisy sky (~5,000 runs per 424×424 image) so the vectors rarely grow.
    fn new(width: usize) -> Self {
        Labelling {
            width,
            sets: Vec::with_capacity(8192),
            prev: Vec::with_capacity(width / 2 + 1),
            cur: Vec::with_capacity(width / 2 + 1),
            starts: vec![0; width + 4],
            ends: vec![0; width + 4],
        }
    }

    fn add_row(&mut self, y: u16, bits: &[u64]) {
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
        let runs = run_bounds(bits, self.width, &mut self.starts, &mut self.ends);
        let (prev, sets) = (&self.prev, &mut self.sets);
        let mut j = 0; // first run of the previous row that may touch the current run
        for (&x0, &x1) in self.starts[..runs].iter().zip(&self.ends[..runs]) {
            while j < prev.len() && prev[j].1 + 1 < x0 {
                j += 1;
            }
            let mut root: Option<u32> = None;
            let mut k = j;
            while k < prev.len() && prev[k].0 <= x1 + 1 {
                let r = find(sets, prev[k].2);
                root = Some(match root {
                    Some(a) if a != r => union(sets, a, r),
                    _ => r,
                });
                k += 1;
            }
            let set = match root {
                Some(r) => {
                    let s = &mut sets[r as usize];
                    (s.x0, s.x1, s.y1) = (s.x0.min(x0), s.x1.max(x1), y);
                    r
                }
                None => {
                    let id = sets.len() as u32;
                    sets.push(Set {
                        parent: id,
                        x0,
                        y0: y,
                        x1,
                        y1: y,
                    });
                    id
                }
            };
            self.cur.push((x0, x1, set));
        }
    }

    /// The largest bounding box of any set (ties: the set seen first).
    fn largest_box(&self) -> Option<BoxPx> {
        let mut best: Option<(usize, BoxPx)> = None;
        for (i, s) in self.sets.iter().enumerate() {
            if s.parent as usize != i {
                continue;
            }
            let b = BoxPx {
                x: s.x0 as usize,
                y: s.y0 as usize,
                w: (s.x1 - s.x0) as usize + 1,
                h: (s.y1 - s.y0) as usize + 1,
            };
            let area = b.w * b.h;
            if best.as_ref().is_none_or(|(a, _)| area > *a) {
                best = Some((area, b));
            }
        }
        best.map(|(_, b)| b)
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
            // Up to 200 wide: runs cross the 64-pixel words of the row masks.
            let (w, h) = (rng.random_range(1..200), rng.random_range(1..40));
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
    fn luma_threshold_on_ycbcr_matches_the_scalar_rule() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..500 {
            let w: usize = rng.random_range(1..300);
            let t: u8 = rng.random();
            let row: Vec<u8> = (0..w * 3)
                .map(|_| t.saturating_add(rng.random_range(0..3)).saturating_sub(1))
                .collect();
            let (mut fast, mut slow) = (vec![!0u64; w.div_ceil(64)], vec![0u64; w.div_ceil(64)]);
            y_bits(&row, t, &mut fast);
            y_bits_scalar(&row, t, &mut slow);
            assert_eq!(fast, slow, "case {case}: width {w}, threshold {t}");
        }
    }

    /// The ellipse image written as a (YCbCr) JPEG and decoded both ways.
    fn ellipse_jpeg_both_ways() -> (YCbCr, Rgb) {
        let img = ellipse(424, 424, 200.0, 230.0, 60.0, 35.0);
        let mut jpeg = Vec::new();
        image::RgbImage::from_raw(424, 424, img.data)
            .unwrap()
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jpg");
        std::fs::write(&path, &jpeg).unwrap();
        let Decoded::YCbCr(ycc) = decode_jpeg_native(&path, Some((424, 424))).unwrap() else {
            panic!("a colour JPEG decodes to YCbCr")
        };
        (ycc, decode_jpeg(&path, Some((424, 424))).unwrap())
    }

    #[test]
    fn ycbcr_crop_matches_the_rgb_crop() {
        let (ycc, rgb) = ellipse_jpeg_both_ways();
        let b = roi_box(&ycc, 10).unwrap();
        assert_eq!(
            Some(b),
            roi_box(&rgb, 10),
            "same box from Y as from RGB luma"
        );
        let (sq, _) = square_around(Some(b), 0.2, 424, 424, false);
        let (a, c) = (crop_resize(&ycc, sq, 64), crop_resize(&rgb, sq, 64));
        let diffs: Vec<i32> = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (*x as i32 - *y as i32).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        assert!(mean < 0.5, "mean difference {mean}");
        // Larger differences only where the RGB path clamped out-of-gamut pixels (JPEG ringing
        // at the sharp edge) before averaging; the YCbCr path clamps once, after.
        let close = diffs.iter().filter(|&&d| d <= 2).count() as f64 / diffs.len() as f64;
        assert!(close > 0.99, "{close} of bytes within 2");
        assert!(
            diffs.iter().all(|&d| d <= 8),
            "max difference {:?}",
            diffs.iter().max()
        );
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
