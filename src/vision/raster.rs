//! The three-channel rasters the ROI and resize kernels read, and the SSE2 luma threshold.

use super::decode::{Rgb, YCbCr};

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
pub(super) fn y_bits(row: &[u8], threshold: u8, bits: &mut [u64]) {
    // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it.
    #[cfg(target_arch = "x86_64")]
    return unsafe { y_bits_sse2(row, threshold, bits) };
    #[cfg(not(target_arch = "x86_64"))]
    return y_bits_scalar(row, threshold, bits);
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(super) fn y_bits_scalar(row: &[u8], threshold: u8, bits: &mut [u64]) {
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
