//! The network's convolutions, batch norms and max pooling as whole operations.
//!
//! On Burn's CPU backend (flex) they run this crate's kernels ([`conv`], [`norm`], [`pool`]) with
//! their own backward passes: one `gemm` per image on an im2col matrix (ReLU fused in), one pass
//! per channel for the norm and its activation, one scan per plane for max pooling, all in
//! parallel. Burn's generic backward for these (a convolution with batch and
//! channels swapped, ~10 broadcast element-wise ops for a norm) spends most of its time copying
//! strided tensors on one core (BENCHMARKS.md has the profile). On every other backend (CUDA)
//! the same layers are Burn's own modules.

mod activation;
pub mod conv;
mod flex;
pub mod norm;
pub mod pool;

use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

pub use activation::Activation as Fused;

impl Fused {
    /// The same activation as Burn's own op (where the kernels do not run).
    pub fn on_burn<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Fused::Identity => x,
            Fused::Rectifier { slope: 0.0 } => relu(x),
            Fused::Rectifier { slope } => leaky_relu(x, slope as f64),
        }
    }
}

/// A training-mode batch norm's output and the batch statistics it normalised with.
pub struct NormOutput<B: Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub var: FloatTensor<B>,
}

/// A batch norm's parameters and running statistics.
pub struct NormParams<'a, B: Backend> {
    pub gamma: &'a FloatTensor<B>,
    pub beta: &'a FloatTensor<B>,
    pub running_mean: &'a FloatTensor<B>,
    pub running_var: &'a FloatTensor<B>,
    pub epsilon: f64,
}

/// Backends that may run a layer on this crate's kernels; `None` means "use Burn's module".
pub trait LayerKernels: Backend {
    /// Whether this backend draws random numbers on the CPU as `Flex` does. Backends that do
    /// not (CUDA, wgpu) take their initial weights from a CPU draw, so a seed gives the same
    /// starting network on every device.
    const DRAWS_ON_THE_CPU: bool = false;

    /// A convolution with stride 1, no dilation and one group, padded by `padding`, then `act`.
    fn conv2d_kernel(
        _x: &FloatTensor<Self>,
        _weight: &FloatTensor<Self>,
        _bias: Option<&FloatTensor<Self>>,
        _padding: [usize; 2],
        _act: Fused,
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// Max pooling by a square `window` with the same stride, no padding, sizes rounded down.
    fn max_pool2d_kernel(_x: &FloatTensor<Self>, _window: usize) -> Option<FloatTensor<Self>> {
        None
    }

    /// A batch norm with its running statistics (inference), then `act`.
    fn batch_norm_inference_kernel(
        _x: &FloatTensor<Self>,
        _params: NormParams<'_, Self>,
        _act: Fused,
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// A batch norm with the batch's own statistics, then `act`.
    fn batch_norm_kernel(
        _x: &FloatTensor<Self>,
        _gamma: &FloatTensor<Self>,
        _beta: &FloatTensor<Self>,
        _epsilon: f64,
        _act: Fused,
    ) -> Option<NormOutput<Self>> {
        None
    }
}

#[cfg(feature = "cuda")]
impl LayerKernels for burn::backend::Cuda {}
#[cfg(feature = "cuda")]
impl<C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> LayerKernels
    for burn::backend::Autodiff<burn::backend::Cuda, C>
{
}

#[cfg(feature = "wgpu")]
impl LayerKernels for burn::backend::Wgpu {}
#[cfg(feature = "wgpu")]
impl<C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> LayerKernels
    for burn::backend::Autodiff<burn::backend::Wgpu, C>
{
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The symmetric padding of a stride-1, undilated, ungrouped convolution (what the kernel runs).
fn kernel_padding<B: Backend>(conv: &Conv2d<B>) -> Option<[usize; 2]> {
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1;
    match conv.padding {
        PaddingConfig2d::Valid if plain => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if plain && top == bottom && left == right =>
        {
            Some([top, left])
        }
        _ => None,
    }
}

/// `act(conv.forward(x))`, on the kernels where the backend has them.
pub fn conv2d<B: LayerKernels>(conv: &Conv2d<B>, x: Tensor<B, 4>, act: Fused) -> Tensor<B, 4> {
    let on_kernels = kernel_padding(conv).and_then(|padding| {
        let weight = primitive(conv.weight.val());
        let bias = conv.bias.as_ref().map(|b| primitive(b.val()));
        B::conv2d_kernel(&primitive(x.clone()), &weight, bias.as_ref(), padding, act)
    });
    match on_kernels {
        Some(out) => tensor(out),
        None => act.on_burn(conv.forward(x)),
    }
}

/// `pool.forward(x)`, on the kernel where the backend has it and the pool is a plain one.
pub fn max_pool2d<B: LayerKernels>(pool: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [window, other] = pool.kernel_size;
    let no_padding = matches!(pool.padding, PaddingConfig2d::Valid)
        || pool.padding == PaddingConfig2d::Explicit(0, 0, 0, 0);
    let plain = window == other
        && pool.stride == pool.kernel_size
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && no_padding;
    let pooled = plain
        .then(|| B::max_pool2d_kernel(&primitive(x.clone()), window))
        .flatten();
    match pooled {
        Some(out) => tensor(out),
        None => pool.forward(x),
    }
}

/// `act(norm.forward(x))`: with the batch's statistics while training (the running statistics
/// updated as Burn's `BatchNorm` updates them), with the running statistics otherwise; on the
/// kernels where the backend has them, else Burn's module and activation.
pub fn batch_norm<B: LayerKernels>(
    norm: &BatchNorm<B>,
    x: Tensor<B, 4>,
    act: Fused,
) -> Tensor<B, 4> {
    let on_kernels = match B::ad_enabled(&x.device()) {
        true => batch_norm_train(norm, &x, act),
        false => batch_norm_inference(norm, &x, act),
    };
    on_kernels.unwrap_or_else(|| act.on_burn(norm.forward(x)))
}

fn batch_norm_inference<B: LayerKernels>(
    norm: &BatchNorm<B>,
    x: &Tensor<B, 4>,
    act: Fused,
) -> Option<Tensor<B, 4>> {
    let [gamma, beta] = [&norm.gamma, &norm.beta].map(|p| primitive(p.val()));
    let [running_mean, running_var] =
        [&norm.running_mean, &norm.running_var].map(|s| primitive(s.value()));
    let params = NormParams {
        gamma: &gamma,
        beta: &beta,
        running_mean: &running_mean,
        running_var: &running_var,
        epsilon: norm.epsilon,
    };
    B::batch_norm_inference_kernel(&primitive(x.clone()), params, act).map(tensor)
}

fn batch_norm_train<B: LayerKernels>(
    norm: &BatchNorm<B>,
    x: &Tensor<B, 4>,
    act: Fused,
) -> Option<Tensor<B, 4>> {
    let (gamma, beta) = (primitive(norm.gamma.val()), primitive(norm.beta.val()));
    let out = B::batch_norm_kernel(&primitive(x.clone()), &gamma, &beta, norm.epsilon, act)?;
    let update = |state: &burn::module::RunningState<Tensor<B, 1>>, batch: FloatTensor<B>| {
        let old = state.value_sync().to_device(&x.device());
        let batch = tensor::<B, 1>(batch);
        state.update(
            (old.mul_scalar(1.0 - norm.momentum) + batch.mul_scalar(norm.momentum)).detach(),
        );
    };
    update(&norm.running_mean, out.mean);
    update(&norm.running_var, out.var);
    Some(tensor(out.output))
}

/// A backend to train on: autodiff with the kernels, and its inner backend (validation,
/// averaged weights) with them too.
pub trait TrainingBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: LayerKernels> + LayerKernels
{
}

impl<B> TrainingBackend for B where
    B: burn::tensor::backend::AutodiffBackend<InnerBackend: LayerKernels> + LayerKernels
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{AutodiffModule, Param};
    use burn::nn::BatchNormConfig;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::TensorData;
    use burn::tensor::backend::AutodiffBackend;

    type Ad = Autodiff<Flex>;
    type Grads = <Ad as AutodiffBackend>::Gradients;

    fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Ad, D> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_data(TensorData::new(values, shape), &FlexDevice)
    }

    /// Equal up to float rounding: within 2·10⁻⁴ of the largest magnitude in Burn's values.
    fn assert_close<const D: usize>(what: &str, ours: Tensor<Flex, D>, burn: Tensor<Flex, D>) {
        assert_eq!(ours.dims(), burn.dims(), "{what}: shape");
        let a: Vec<f32> = ours.into_data().to_vec().unwrap();
        let b: Vec<f32> = burn.into_data().to_vec().unwrap();
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 2e-4 * scale,
            "{what}: differs by {worst} (values up to {scale})"
        );
    }

    /// Backpropagates a fixed random weighting of both outputs; checks the outputs and the input
    /// gradients agree, and returns both gradient sets for the parameters.
    fn compare(x: &Tensor<Ad, 4>, ours: Tensor<Ad, 4>, burn: Tensor<Ad, 4>) -> (Grads, Grads) {
        let weights = random(burn.dims(), 99);
        let g_ours = (ours.clone() * weights.clone()).sum().backward();
        let g_burn = (burn.clone() * weights).sum().backward();
        assert_close("output", ours.inner(), burn.inner());
        if x.is_require_grad() {
            let (a, b) = (x.grad(&g_ours).unwrap(), x.grad(&g_burn).unwrap());
            assert_close("input grad", a, b);
        }
        (g_ours, g_burn)
    }

    fn assert_same_grad<const D: usize>(
        what: &str,
        ours: &Param<Tensor<Ad, D>>,
        burn: &Param<Tensor<Ad, D>>,
        (g_ours, g_burn): &(Grads, Grads),
    ) {
        assert_close(what, ours.grad(g_ours).unwrap(), burn.grad(g_burn).unwrap());
    }

    /// The kernels' convolution and its three gradients equal Burn's `Conv2d` on the same data.
    fn conv_matches_burn(
        (channels, filters, kernel, pad, side): (usize, usize, usize, usize, usize),
        act: Fused,
    ) {
        let conv: Conv2d<Ad> = Conv2dConfig::new([channels, filters], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(&FlexDevice);
        let x = random([5, channels, side, side], 1).require_grad();
        let grads = compare(
            &x,
            conv2d(&conv, x.clone(), act),
            act.on_burn(conv.forward(x.clone())),
        );
        assert_same_grad("weight grad", &conv.weight, &conv.weight, &grads);
        let bias = conv.bias.as_ref().unwrap();
        assert_same_grad("bias grad", bias, bias, &grads);
    }

    #[test]
    fn convolution_and_its_gradients_equal_burns() {
        let relu = Fused::Rectifier { slope: 0.0 };
        conv_matches_burn((3, 8, 9, 0, 16), Fused::Identity); // the seed's first layer, smaller
        conv_matches_burn((6, 5, 5, 2, 9), Fused::Identity); // padded, odd sizes
        conv_matches_burn((4, 3, 3, 1, 3), Fused::Identity); // kernel = image + padding
        conv_matches_burn((6, 5, 5, 2, 9), relu); // with the activation fused in
        conv_matches_burn((3, 4, 3, 1, 7), Fused::Rectifier { slope: 0.01 });
    }

    #[test]
    fn an_untracked_input_gets_no_gradient_and_weights_still_do() {
        let conv: Conv2d<Ad> = Conv2dConfig::new([3, 4], [3, 3]).init(&FlexDevice);
        let x = random([2, 3, 6, 6], 3);
        let grads = conv2d(&conv, x.clone(), Fused::Identity).sum().backward();
        assert!(x.grad(&grads).is_none());
        assert!(conv.weight.grad(&grads).is_some());
    }

    #[test]
    fn max_pooling_and_its_gradient_equal_burns() {
        for (window, [h, w]) in [(2, [8, 8]), (2, [7, 9]), (3, [10, 6])] {
            let pool = MaxPool2dConfig::new([window, window]).init();
            let plain = pool.stride == pool.kernel_size && pool.padding == PaddingConfig2d::Valid;
            assert!(
                plain,
                "MaxPool2dConfig's default is the pool the kernel runs"
            );
            let x = random([3, 4, h, w], 8).require_grad();
            compare(&x, max_pool2d(&pool, x.clone()), pool.forward(x.clone()));
        }
    }

    /// A norm with random γ and β, and a copy for Burn's module.
    fn norm_pair() -> (BatchNorm<Ad>, BatchNorm<Ad>) {
        let mut norm: BatchNorm<Ad> = BatchNormConfig::new(6).init(&FlexDevice);
        norm.gamma = Param::from_tensor(random([6], 4).require_grad());
        norm.beta = Param::from_tensor(random([6], 5).require_grad());
        (norm.clone(), norm)
    }

    fn norm_matches_burn(act: Fused) {
        let (norm, reference) = norm_pair();
        let x = random([4, 6, 5, 7], 6)
            .mul_scalar(3.0)
            .add_scalar(0.5)
            .require_grad();
        let ours = batch_norm(&norm, x.clone(), act);
        let grads = compare(&x, ours, act.on_burn(reference.forward(x.clone())));
        assert_same_grad("gamma grad", &norm.gamma, &reference.gamma, &grads);
        assert_same_grad("beta grad", &norm.beta, &reference.beta, &grads);
        let (nm, rm) = (&norm.running_mean, &reference.running_mean);
        assert_close("running mean", nm.value().inner(), rm.value().inner());
        let (nv, rv) = (&norm.running_var, &reference.running_var);
        assert_close("running var", nv.value().inner(), rv.value().inner());
    }

    #[test]
    fn batch_norm_with_relu_and_leaky_relu_equals_burns_modules() {
        norm_matches_burn(Fused::Rectifier { slope: 0.0 });
        norm_matches_burn(Fused::Rectifier { slope: 0.01 });
        norm_matches_burn(Fused::Identity);
    }

    #[test]
    fn inference_mode_batch_norm_uses_the_running_statistics_as_burn_does() {
        let (norm, _) = norm_pair();
        for seed in 12..15 {
            // Training steps move the running statistics away from 0 and 1.
            let x = random([4, 6, 3, 3], seed).mul_scalar(2.0).add_scalar(1.0);
            batch_norm(&norm, x, Fused::Identity);
        }
        let norm = norm.valid();
        let x = random::<4>([2, 6, 5, 5], 16).inner();
        for (act, slope) in [
            (Fused::Identity, 1.0),
            (Fused::Rectifier { slope: 0.01 }, 0.01),
        ] {
            let ours = batch_norm_inference(&norm, &x, act).expect("flex has the kernel");
            assert_close("output", ours, leaky_relu(norm.forward(x.clone()), slope));
        }
    }
}
