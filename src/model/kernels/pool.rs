//! Max pooling with a square window equal to its stride (no padding, floor), on NCHW `f32`
//! buffers: forward, keeping where each maximum came from, and backward, which routes each
//! output gradient to that place. Planes run in parallel; each output has one source, so the
//! bytes do not depend on the number of threads.

use rayon::prelude::*;

/// `planes` planes (batch × channels) of `height × width`, pooled by `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub window: usize,
}

impl PoolGeometry {
    pub fn out_height(&self) -> usize {
        self.height / self.window
    }
    pub fn out_width(&self) -> usize {
        self.width / self.window
    }
    fn plane(&self) -> usize {
        self.height * self.width
    }
    fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }
}

/// The pooled planes and, per output, the offset of its maximum within its input plane (the
/// first one on ties, as the row-major scan meets it).
pub fn forward(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    assert_eq!(x.len(), g.planes * g.plane(), "max pool input length");
    let mut out = vec![0.0f32; g.planes * g.out_plane()];
    let mut argmax = vec![0u32; out.len()];
    out.par_chunks_mut(g.out_plane().max(1))
        .zip(argmax.par_chunks_mut(g.out_plane().max(1)))
        .zip(x.par_chunks(g.plane().max(1)))
        .for_each(|((out, argmax), plane)| {
            for oy in 0..g.out_height() {
                let rows = oy * g.window..(oy + 1) * g.window;
                for ox in 0..g.out_width() {
                    let cols = ox * g.window..(ox + 1) * g.window;
                    let first = rows.start * g.width + cols.start;
                    let (mut best, mut at) = (plane[first], first);
                    for y in rows.clone() {
                        let row = y * g.width;
                        for (i, &v) in plane[row + cols.start..row + cols.end].iter().enumerate() {
                            if v > best {
                                (best, at) = (v, row + cols.start + i);
                            }
                        }
                    }
                    out[oy * g.out_width() + ox] = best;
                    argmax[oy * g.out_width() + ox] = at as u32;
                }
            }
        });
    (out, argmax)
}

/// The input gradient: each output's gradient at its maximum, zero elsewhere.
pub fn backward(g: &PoolGeometry, argmax: &[u32], out_grad: &[f32]) -> Vec<f32> {
    assert_eq!(out_grad.len(), argmax.len(), "max pool gradient length");
    let mut grad = vec![0.0f32; g.planes * g.plane()];
    grad.par_chunks_mut(g.plane().max(1))
        .zip(argmax.par_chunks(g.out_plane().max(1)))
        .zip(out_grad.par_chunks(g.out_plane().max(1)))
        .for_each(|((grad, argmax), dy)| {
            for (&at, &d) in argmax.iter().zip(dy) {
                grad[at as usize] += d;
            }
        });
    grad
}
