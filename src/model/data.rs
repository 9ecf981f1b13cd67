//! Batches from in-memory u8 crops: augmentation (random rotation, flips, zoom, translation,
//! brightness) with bilinear sampling, and HWC u8 → CHW f32 conversion. Deterministic: every
//! image's random transform comes from (seed, epoch, position), whatever the thread schedule.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::model::recipe::Augment;

/// A batch ready for a tensor: `images` is `[n, 3, size, size]`, `labels` `[n, 37]`, row-major.
pub struct Batch {
    pub n: usize,
    pub images: Vec<f32>,
    pub labels: Vec<f32>,
}

pub fn rng_for(seed: u64, epoch: u64, position: u64) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"augment");
    h.update(&seed.to_le_bytes());
    h.update(&epoch.to_le_bytes());
    h.update(&position.to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// One image's transform: output pixel → source pixel.
#[derive(Debug, Clone, Copy)]
pub struct Transform {
    cos: f32,
    sin: f32,
    zoom: f32,
    flip_x: bool,
    tx: f32,
    ty: f32,
    brightness: f32,
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        cos: 1.0,
        sin: 0.0,
        zoom: 1.0,
        flip_x: false,
        tx: 0.0,
        ty: 0.0,
        brightness: 1.0,
    };

    pub fn random(a: &Augment, rng: &mut impl Rng) -> Self {
        let angle = if a.rotate {
            rng.random_range(0.0..std::f32::consts::TAU)
        } else {
            0.0
        };
        let (sin, cos) = angle.sin_cos();
        let zoom = if a.zoom > 0.0 {
            rng.random_range(1.0 - a.zoom as f32..1.0 + a.zoom as f32)
        } else {
            1.0
        };
        let t = a.translate as f32;
        let (tx, ty) = if t > 0.0 {
            (rng.random_range(-t..t), rng.random_range(-t..t))
        } else {
            (0.0, 0.0)
        };
        let b = a.brightness as f32;
        let brightness = if b > 0.0 {
            rng.random_range(1.0 - b..1.0 + b)
        } else {
            1.0
        };
        Transform {
            cos,
            sin,
            zoom,
            flip_x: a.flip && rng.random_bool(0.5),
            tx,
            ty,
            brightness,
        }
    }

    fn is_identity(&self) -> bool {
        self.cos == 1.0
            && self.sin == 0.0
            && self.zoom == 1.0
            && !self.flip_x
            && self.tx == 0.0
            && self.ty == 0.0
    }
}

/// Write one HWC u8 crop into `out` (CHW f32 in [0, 1]) under `t`.
pub fn render(src: &[u8], size: usize, t: &Transform, out: &mut [f32]) {
    let plane = size * size;
    let scale = t.brightness / 255.0;
    if t.is_identity() {
        for (i, p) in src.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (p[c] as f32 * scale).min(1.0);
            }
        }
        return;
    }
    let centre = (size as f32 - 1.0) / 2.0;
    for y in 0..size {
        for x in 0..size {
            // Inverse map: undo translation, zoom, rotation (and flip) around the centre.
            let mut dx = (x as f32 - centre - t.tx) / t.zoom;
            let dy = (y as f32 - centre - t.ty) / t.zoom;
            if t.flip_x {
                dx = -dx;
            }
            let sx = t.cos * dx + t.sin * dy + centre;
            let sy = -t.sin * dx + t.cos * dy + centre;
            let value = bilinear(src, size, sx, sy);
            for c in 0..3 {
                out[c * plane + y * size + x] = (value[c] * scale).min(1.0);
            }
        }
    }
}

/// Bilinear sample with black outside the image.
fn bilinear(src: &[u8], size: usize, x: f32, y: f32) -> [f32; 3] {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let mut acc = [0f32; 3];
    for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
        for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
            let (px, py) = (x0 + dx, y0 + dy);
            if px < 0 || py < 0 || px >= size as i64 || py >= size as i64 {
                continue;
            }
            let i = (py as usize * size + px as usize) * 3;
            let w = wx * wy;
            for c in 0..3 {
                acc[c] += src[i + c] as f32 * w;
            }
        }
    }
    acc
}

/// Assemble a batch of the crops at `indices`, each through its transform (in parallel).
pub fn assemble<'a>(
    pixels: &(dyn Fn(usize) -> &'a [u8] + Sync),
    size: usize,
    indices: &[usize],
    transforms: &[Transform],
    labels: &dyn Fn(usize) -> crate::labels::Labels,
) -> Batch {
    let per = 3 * size * size;
    let mut images = vec![0f32; indices.len() * per];
    images
        .par_chunks_mut(per)
        .zip(indices.par_iter().zip(transforms))
        .for_each(|(out, (i, t))| render(pixels(*i), size, t, out));
    let labels = indices.iter().flat_map(|i| labels(*i)).collect();
    Batch {
        n: indices.len(),
        images,
        labels,
    }
}

/// The 8 symmetries of the square (rotations by 90° and their mirror images), applied exactly to
/// an HWC crop: used for test-time augmentation.
pub fn dihedral(src: &[u8], size: usize, k: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    let last = size - 1;
    for y in 0..size {
        for x in 0..size {
            let xx = if k >= 4 { last - x } else { x };
            let (sx, sy) = match k % 4 {
                0 => (xx, y),
                1 => (y, last - xx),
                2 => (last - xx, last - y),
                _ => (last - y, xx),
            };
            let (o, s) = ((y * size + x) * 3, (sy * size + sx) * 3);
            out[o..o + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(size: usize) -> Vec<u8> {
        (0..size * size)
            .flat_map(|i| [(i % 251) as u8, (i / size * 3) as u8, 7])
            .collect()
    }

    #[test]
    fn identity_transform_is_a_plain_conversion() {
        let src = gradient(8);
        let mut out = vec![0f32; 3 * 64];
        render(&src, 8, &Transform::IDENTITY, &mut out);
        assert!((out[5] - src[15] as f32 / 255.0).abs() < 1e-6);
        assert!((out[64 + 9] - src[9 * 3 + 1] as f32 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn a_half_turn_maps_pixels_to_the_opposite_corner() {
        let src = gradient(8);
        let t = Transform {
            cos: -1.0,
            sin: 0.0,
            ..Transform::IDENTITY
        };
        let mut out = vec![0f32; 3 * 64];
        render(&src, 8, &t, &mut out);
        assert!((out[0] - src[63 * 3] as f32 / 255.0).abs() < 1e-5);
    }

    #[test]
    fn dihedral_transforms_are_eight_distinct_permutations() {
        let src = gradient(6);
        let all: Vec<Vec<u8>> = (0..8).map(|k| dihedral(&src, 6, k)).collect();
        assert_eq!(all[0], src);
        for a in 0..8 {
            for b in a + 1..8 {
                assert_ne!(all[a], all[b], "{a} vs {b}");
            }
        }
        let mut sorted_src = src.clone();
        sorted_src.sort();
        let mut sorted = all[5].clone();
        sorted.sort();
        assert_eq!(sorted, sorted_src, "a permutation of the pixels");
    }

    #[test]
    fn augmentation_is_deterministic_per_position() {
        let a = Augment {
            rotate: true,
            flip: true,
            zoom: 0.1,
            translate: 2.0,
            brightness: 0.1,
        };
        let t1 = Transform::random(&a, &mut rng_for(1, 2, 3));
        let t2 = Transform::random(&a, &mut rng_for(1, 2, 3));
        let src = gradient(8);
        let (mut o1, mut o2) = (vec![0f32; 192], vec![0f32; 192]);
        render(&src, 8, &t1, &mut o1);
        render(&src, 8, &t2, &mut o2);
        assert_eq!(o1, o2);
    }
}
