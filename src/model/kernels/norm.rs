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

/// Scatters per-channel results (one `Vec` per channel, images in order) into NCHW.
fn scatter(g: &NormGeometry, per_channel: Vec<Vec<f32>>) -> Vec<f32> {
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(g.channels * g.plane)
        .enumerate()
        .for_each(|(n, image)| {
            for (c, values) in per_channel.iter().enumerate() {
                image[c * g.plane..(c + 1) * g.plane]
                    .copy_from_slice(&values[n * g.plane..(n + 1) * g.plane]);
            }
        });
    out
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

/// Per channel `γ / sqrt(var + ε)` and `β − mean · that`: the norm as one multiply-add.
pub fn fold(
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g / (v as f64 + epsilon).sqrt() as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| b - m * s)
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
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&stats.0)
        .map(|(&g, s)| g / (s.1 + epsilon).sqrt() as f32)
        .collect();
    let shift: Vec<f32> = beta
        .iter()
        .zip(&stats.0)
        .zip(&scale)
        .map(|((&b, s), &k)| b - s.0 as f32 * k)
        .collect();
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
    let per_channel: Vec<(Vec<f32>, f32, f32)> = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let (mean, var) = stats.0[c];
            let inv_std = 1.0 / (var + epsilon).sqrt();
            // dz: the gradient before the activation; x̂: the normalised input.
            let dz = || {
                g.planes(output, c)
                    .flatten()
                    .zip(g.planes(out_grad, c).flatten())
                    .map(|(&y, &dy)| (dy * act.slope(y)) as f64)
            };
            let x_hat = || {
                g.planes(x, c)
                    .flatten()
                    .map(|&v| (v as f64 - mean) * inv_std)
            };
            let d_beta: f64 = dz().sum();
            let d_gamma: f64 = dz().zip(x_hat()).map(|(d, xh)| d * xh).sum();
            let k = gamma[c] as f64 * inv_std / count;
            let dx = dz()
                .zip(x_hat())
                .map(|(d, xh)| (k * (count * d - d_beta - xh * d_gamma)) as f32)
                .collect();
            (dx, d_gamma as f32, d_beta as f32)
        })
        .collect();
    let d_gamma = per_channel.iter().map(|p| p.1).collect();
    let d_beta = per_channel.iter().map(|p| p.2).collect();
    let dx = scatter(g, per_channel.into_iter().map(|p| p.0).collect());
    (dx, d_gamma, d_beta)
}
