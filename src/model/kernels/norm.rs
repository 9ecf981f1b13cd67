//! Batch normalisation over a training batch, fused with the activation that follows it, on
//! NCHW `f32` buffers: forward (which also returns the batch's mean and variance, for the
//! running statistics) and backward.
//!
//! Channels run in parallel; each channel's sums run in one fixed order (in `f64`), so the
//! bytes do not depend on the number of threads.

use rayon::prelude::*;

pub use super::activation::Activation;

/// The layout of the normalised tensor: `batch` images of `channels` planes of `plane` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormGeometry {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl NormGeometry {
    fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }
    /// The planes of channel `c`, one per image.
    fn planes<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (stride, plane) = (self.channels * self.plane, self.plane);
        data.chunks(stride)
            .map(move |image| &image[c * plane..(c + 1) * plane])
    }
}

/// What the forward pass returns: the output and the batch statistics per channel.
pub struct NormForward {
    pub output: Vec<f32>,
    pub mean: Vec<f32>,
    /// Biased (divided by the count), as the running variance and the normalisation use it.
    pub var: Vec<f32>,
    /// The same, unrounded, for [`backward`].
    pub stats: ChannelStats,
}

/// Each channel's mean and biased variance, in `f64`: the forward pass keeps them for the backward.
#[derive(Debug, Clone)]
pub struct ChannelStats(Vec<(f64, f64)>);

/// Mean and biased variance of each channel (two passes, `f64` sums).
fn channel_stats(g: &NormGeometry, x: &[f32]) -> ChannelStats {
    let count = (g.batch * g.plane) as f64;
    ChannelStats(
        (0..g.channels)
            .into_par_iter()
            .map(|c| {
                let sum: f64 = g.planes(x, c).flatten().map(|&v| v as f64).sum();
                let mean = sum / count;
                let sq: f64 = g
                    .planes(x, c)
                    .flatten()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum();
                (mean, sq / count)
            })
            .collect(),
    )
}

/// `act(x · scale + shift)`, per channel: a batch norm with its statistics folded in.
pub fn affine(
    g: &NormGeometry,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    act: Activation,
) -> Vec<f32> {
    assert_eq!(x.len(), g.len(), "batch norm input length");
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(g.plane.max(1))
        .zip(x.par_chunks(g.plane.max(1)))
        .enumerate()
        .for_each(|(i, (out, x))| {
            let c = i % g.channels;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = act.apply(v * scale[c] + shift[c]);
            }
        });
    out
}

/// Per channel `γ / sqrt(var + ε)` and `β − mean · that`: the norm as one multiply-add, from
/// each channel's `(mean, variance)`.
pub fn fold(
    stats: &[(f64, f64)],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(stats)
        .map(|(&g, &(_, var))| g / (var + epsilon).sqrt() as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(stats)
        .zip(&scale)
        .map(|((&b, &(mean, _)), &k)| b - mean as f32 * k)
        .collect();
    (scale, shift)
}

/// `act((x − mean) / sqrt(var + ε) · γ + β)` with the batch's own statistics.
pub fn forward(
    g: &NormGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    act: Activation,
) -> NormForward {
    assert_eq!(x.len(), g.len(), "batch norm input length");
    let stats = channel_stats(g, x);
    let (scale, shift) = fold(&stats.0, gamma, beta, epsilon);
    NormForward {
        output: affine(g, x, &scale, &shift, act),
        mean: stats.0.iter().map(|s| s.0 as f32).collect(),
        var: stats.0.iter().map(|s| s.1 as f32).collect(),
        stats,
    }
}

/// Gradients of the input, γ and β, from the input, the forward output and the output gradient.
pub fn backward(
    g: &NormGeometry,
    (x, output, out_grad): (&[f32], &[f32], &[f32]),
    stats: &ChannelStats,
    gamma: &[f32],
    epsilon: f64,
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let count = (g.batch * g.plane) as f64;
    // dz: the gradient before the activation; x̂: the normalised input.
    let dz = |y: &f32, dy: &f32| (dy * act.slope(*y)) as f64;
    let inv_std: Vec<f64> = stats
        .0
        .iter()
        .map(|&(_, var)| 1.0 / (var + epsilon).sqrt())
        .collect();
    let x_hat = |c: usize, v: f32| (v as f64 - stats.0[c].0) * inv_std[c];
    // Per channel: the sums of dz and dz·x̂ (β's and γ's gradients).
    let sums: Vec<(f64, f64)> = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let dzs = || {
                g.planes(output, c)
                    .flatten()
                    .zip(g.planes(out_grad, c).flatten())
            };
            let d_beta: f64 = dzs().map(|(y, dy)| dz(y, dy)).sum();
            let d_gamma: f64 = dzs()
                .zip(g.planes(x, c).flatten())
                .map(|((y, dy), &v)| dz(y, dy) * x_hat(c, v))
                .sum();
            (d_beta, d_gamma)
        })
        .collect();
    let mut dx = vec![0.0f32; g.len()];
    let plane = g.plane.max(1);
    dx.par_chunks_mut(plane)
        .zip(
            x.par_chunks(plane)
                .zip(output.par_chunks(plane).zip(out_grad.par_chunks(plane))),
        )
        .enumerate()
        .for_each(|(i, (dx, (x, (y, dy))))| {
            let c = i % g.channels;
            let (d_beta, d_gamma) = sums[c];
            let k = gamma[c] as f64 * inv_std[c] / count;
            for (((d, &v), y), dy) in dx.iter_mut().zip(x).zip(y).zip(dy) {
                *d = (k * (count * dz(y, dy) - d_beta - x_hat(c, v) * d_gamma)) as f32;
            }
        });
    let d_gamma = sums.iter().map(|s| s.1 as f32).collect();
    let d_beta = sums.iter().map(|s| s.0 as f32).collect();
    (dx, d_gamma, d_beta)
}
