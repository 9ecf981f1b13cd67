//! 2-D convolution (stride 1, no dilation, one group) on NCHW `f32` buffers: forward, and the
//! gradients of the input, the weights and the bias.
//!
//! Every product is one `gemm` call per image on an im2col matrix (`[C·kh·kw, Ho·Wo]`, rebuilt
//! in the backward pass rather than kept for 64 images). Images run in parallel; sums over the
//! batch (weight and bias gradients) are taken per fixed group of images and then added in group
//! order, so the bytes do not depend on the number of threads.

use rayon::prelude::*;

use super::activation::Activation;

/// Images per partial sum of the weight and bias gradients (fixed, so sums keep their order).
const IMAGES_PER_PARTIAL: usize = 4;

/// The shapes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub filters: usize,
    pub kernel: [usize; 2],
    pub padding: [usize; 2],
}

impl ConvGeometry {
    pub fn out_height(&self) -> usize {
        self.height + 2 * self.padding[0] + 1 - self.kernel[0]
    }
    pub fn out_width(&self) -> usize {
        self.width + 2 * self.padding[1] + 1 - self.kernel[1]
    }
    fn image(&self) -> usize {
        self.channels * self.height * self.width
    }
    fn positions(&self) -> usize {
        self.out_height() * self.out_width()
    }
    /// Rows of the im2col matrix: one per (channel, kernel row, kernel column).
    fn taps(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }
    fn out_image(&self) -> usize {
        self.filters * self.positions()
    }
}

/// For each tap and output row: the output columns that read inside the image, and the input
/// column the first of them reads. Calls `f(tap, out_row, in_row_start, out_cols, in_col0)`.
fn for_each_segment(
    g: &ConvGeometry,
    mut f: impl FnMut(usize, usize, usize, std::ops::Range<usize>, usize),
) {
    let (ho, wo) = (g.out_height(), g.out_width());
    let [ph, pw] = [g.padding[0] as isize, g.padding[1] as isize];
    for c in 0..g.channels {
        for ki in 0..g.kernel[0] {
            for kj in 0..g.kernel[1] {
                let tap = (c * g.kernel[0] + ki) * g.kernel[1] + kj;
                let shift = kj as isize - pw;
                let lo = (-shift).clamp(0, wo as isize) as usize;
                let hi = (g.width as isize - shift).clamp(0, wo as isize) as usize;
                for oy in 0..ho {
                    let iy = oy as isize + ki as isize - ph;
                    if iy < 0 || iy >= g.height as isize || lo >= hi {
                        continue;
                    }
                    let row = (c * g.height + iy as usize) * g.width;
                    f(tap, oy, row, lo..hi, (lo as isize + shift) as usize);
                }
            }
        }
    }
}

/// One image `[C, H, W]` → its im2col matrix `[taps, Ho·Wo]` (padding reads as zero).
fn im2col(g: &ConvGeometry, image: &[f32], col: &mut [f32]) {
    if g.padding != [0, 0] {
        col.fill(0.0); // without padding, every element is written below
    }
    let (wo, positions) = (g.out_width(), g.positions());
    for_each_segment(g, |tap, oy, row, cols, x0| {
        let dst = tap * positions + oy * wo;
        col[dst + cols.start..dst + cols.end]
            .copy_from_slice(&image[row + x0..row + x0 + cols.len()]);
    });
}

/// Adds an im2col-shaped gradient back onto the image it was read from.
fn col2im(g: &ConvGeometry, col: &[f32], image: &mut [f32]) {
    image.fill(0.0);
    let (wo, positions) = (g.out_width(), g.positions());
    for_each_segment(g, |tap, oy, row, cols, x0| {
        let src = &col[tap * positions + oy * wo + cols.start..][..cols.len()];
        for (d, s) in image[row + x0..row + x0 + cols.len()].iter_mut().zip(src) {
            *d += s;
        }
    });
}

/// A matrix read through strides of a borrowed slice, for `gemm`: element (i, j) is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns.
    fn rows(m: &'a [f32], cols: usize) -> Self {
        View {
            data: m,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    fn transposed(m: &'a [f32], cols: usize) -> Self {
        View {
            data: m,
            rs: 1,
            cs: cols,
        }
    }
    /// Whether every element of a `rows`×`cols` matrix read through this view is in its slice.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, single-threaded (callers parallelise over images).
fn matmul(dst: &mut [f32], [m, n, k]: [usize; 3], accumulate: bool, lhs: View, rhs: View) {
    assert!(dst.len() >= m * n, "matmul destination");
    assert!(lhs.holds(m, k) && rhs.holds(k, n), "matmul operand extents");
    // SAFETY: checked just above: `dst` holds the m×n elements gemm writes (row stride n), and
    // every element gemm reads through `lhs` (m×k) and `rhs` (k×n) lies inside the slice the view
    // borrows, which outlives this call; `dst` is a unique borrow, so it overlaps neither.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn check_lengths(g: &ConvGeometry, input: usize, weight: usize) {
    assert_eq!(input, g.batch * g.image(), "conv input length");
    assert_eq!(weight, g.filters * g.taps(), "conv weight length");
}

/// `act([N, C, H, W]` ⊛ `[F, C, kh, kw]` + bias `[F])` → `[N, F, Ho, Wo]`.
pub fn forward(
    g: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    check_lengths(g, input.len(), weight.len());
    let (taps, positions) = (g.taps(), g.positions());
    let mut out = vec![0.0f32; g.batch * g.out_image()];
    out.par_chunks_mut(g.out_image())
        .zip(input.par_chunks(g.image()))
        .for_each_init(
            || vec![0.0f32; taps * positions],
            |col, (out, image)| {
                im2col(g, image, col);
                if let Some(bias) = bias {
                    for (row, b) in out.chunks_mut(positions).zip(bias) {
                        row.fill(*b);
                    }
                }
                let dims = [g.filters, positions, taps];
                matmul(
                    out,
                    dims,
                    bias.is_some(),
                    View::rows(weight, taps),
                    View::rows(col, positions),
                );
                if act != Activation::Identity {
                    out.iter_mut().for_each(|v| *v = act.apply(*v));
                }
            },
        );
    out
}

/// The gradient reaching a convolution's output, taken back through its fused activation one
/// image at a time (no tensor-sized pass of its own).
#[derive(Clone, Copy)]
pub struct OutGrad<'a> {
    /// The loss's gradient with respect to the output, `[N, F, Ho, Wo]`.
    pub grad: &'a [f32],
    /// The forward output: the activation's slope is read from it.
    pub output: &'a [f32],
    pub act: Activation,
}

impl<'a> OutGrad<'a> {
    /// Image `n`'s gradient before the activation (written into `scratch` unless the identity).
    fn image<'s>(&self, g: &ConvGeometry, n: usize, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        'a: 's,
    {
        let range = n * g.out_image()..(n + 1) * g.out_image();
        let dy = &self.grad[range.clone()];
        if self.act == Activation::Identity {
            return dy;
        }
        scratch.clear();
        let slopes = self.output[range].iter().map(|&y| self.act.slope(y));
        scratch.extend(dy.iter().zip(slopes).map(|(&d, s)| d * s));
        scratch
    }
}

/// The gradient of the input: per image, `Wᵀ · dY` folded back by col2im.
pub fn input_grad(g: &ConvGeometry, weight: &[f32], out_grad: OutGrad<'_>) -> Vec<f32> {
    check_lengths(g, g.batch * g.image(), weight.len());
    let (taps, positions) = (g.taps(), g.positions());
    let mut grad = vec![0.0f32; g.batch * g.image()];
    grad.par_chunks_mut(g.image()).enumerate().for_each_init(
        || (vec![0.0f32; taps * positions], Vec::new()),
        |(col, scratch), (n, grad)| {
            let dy = out_grad.image(g, n, scratch);
            let dims = [taps, positions, g.filters];
            matmul(
                col,
                dims,
                false,
                View::transposed(weight, taps),
                View::rows(dy, positions),
            );
            col2im(g, col, grad);
        },
    );
    grad
}

/// The gradients of the weights `[F, C, kh, kw]` and the bias `[F]`.
pub fn weight_and_bias_grad(
    g: &ConvGeometry,
    input: &[f32],
    out_grad: OutGrad<'_>,
) -> (Vec<f32>, Vec<f32>) {
    check_lengths(g, input.len(), g.filters * g.taps());
    let (taps, positions) = (g.taps(), g.positions());
    let partials: Vec<(Vec<f32>, Vec<f64>)> = input
        .par_chunks(g.image() * IMAGES_PER_PARTIAL)
        .enumerate()
        .map(|(group, images)| {
            let mut col = vec![0.0f32; taps * positions];
            let mut dw = vec![0.0f32; g.filters * taps];
            let mut db = vec![0.0f64; g.filters];
            let mut scratch = Vec::new();
            for (i, image) in images.chunks(g.image()).enumerate() {
                let dy = out_grad.image(g, group * IMAGES_PER_PARTIAL + i, &mut scratch);
                im2col(g, image, &mut col);
                let dims = [g.filters, taps, positions];
                matmul(
                    &mut dw,
                    dims,
                    i > 0,
                    View::rows(dy, positions),
                    View::transposed(&col, positions),
                );
                for (b, row) in db.iter_mut().zip(dy.chunks(positions)) {
                    *b += row.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![0.0f32; g.filters * taps];
    let mut db = vec![0.0f64; g.filters];
    for (pw, pb) in &partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dw, db.into_iter().map(|b| b as f32).collect())
}
