//! [`LayerKernels`] for Burn's CPU backend (`Flex`), and for `Autodiff<Flex>` with the backward
//! passes registered as custom autodiff operations.

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};

use super::conv::{self, ConvGeometry, OutGrad};
use super::norm::{self, ChannelStats, NormGeometry};
use super::pool::{self, PoolGeometry};
use super::{Fused, LayerKernels, NormOutput, NormParams};

/// The tensor's values in NCHW order, when it holds `f32`.
fn values(t: &FlexTensor) -> Option<std::borrow::Cow<'_, [f32]>> {
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(match t.as_slice::<f32>() {
        Some(s) if s.len() == t.shape().num_elements() => std::borrow::Cow::Borrowed(s),
        // One copy: `to_contiguous` makes a tensor of its own, whose buffer becomes the `Vec`.
        _ => std::borrow::Cow::Owned(t.to_contiguous().into_data().into_vec::<f32>().ok()?),
    })
}

fn flex(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

fn conv_geometry(x: &FlexTensor, weight: &FlexTensor, padding: [usize; 2]) -> Option<ConvGeometry> {
    let (xs, ws) = (x.shape(), weight.shape());
    if xs.num_dims() != 4 || ws.num_dims() != 4 {
        return None;
    }
    let ([batch, channels, height, width], [filters, in_ch, kh, kw]) = (xs.dims(), ws.dims());
    let fits = in_ch == channels && height + 2 * padding[0] >= kh && width + 2 * padding[1] >= kw;
    let g = ConvGeometry {
        batch,
        channels,
        height,
        width,
        filters,
        kernel: [kh, kw],
        padding,
    };
    fits.then_some(g)
}

fn conv_forward(
    g: &ConvGeometry,
    x: &FlexTensor,
    w: &FlexTensor,
    b: Option<&FlexTensor>,
    act: Fused,
) -> Option<FlexTensor> {
    let (xv, wv) = (values(x)?, values(w)?);
    let bv = match b {
        Some(b) => Some(values(b)?),
        None => None,
    };
    let out = conv::forward(g, &xv, &wv, bv.as_deref(), act);
    Some(flex(
        out,
        [g.batch, g.filters, g.out_height(), g.out_width()],
    ))
}

impl LayerKernels for Flex {
    const DRAWS_ON_THE_CPU: bool = true;

    fn conv2d_kernel(
        x: &FlexTensor,
        w: &FlexTensor,
        b: Option<&FlexTensor>,
        padding: [usize; 2],
        act: Fused,
    ) -> Option<FlexTensor> {
        conv_forward(&conv_geometry(x, w, padding)?, x, w, b, act)
    }

    fn max_pool2d_kernel(x: &FlexTensor, window: usize) -> Option<FlexTensor> {
        pool_forward(x, window).map(|(_, out, _)| out)
    }

    fn batch_norm_inference_kernel(
        x: &FlexTensor,
        p: NormParams<'_, Self>,
        act: Fused,
    ) -> Option<FlexTensor> {
        let geometry = norm_geometry(x)?;
        let [gamma, beta, mean, var] = [p.gamma, p.beta, p.running_mean, p.running_var].map(values);
        let stats: Vec<(f64, f64)> = mean?
            .iter()
            .zip(var?.iter())
            .map(|(&m, &v)| (m as f64, v as f64))
            .collect();
        let (scale, shift) = norm::fold(&stats, &gamma?, &beta?, p.epsilon);
        let out = norm::affine(&geometry, &values(x)?, &scale, &shift, act);
        Some(flex(out, x.shape()))
    }
}

fn pool_geometry(x: &FlexTensor, window: usize) -> Option<PoolGeometry> {
    let shape = x.shape();
    if shape.num_dims() != 4 || window == 0 {
        return None;
    }
    let [batch, channels, height, width] = shape.dims();
    let g = PoolGeometry {
        planes: batch * channels,
        height,
        width,
        window,
    };
    (g.out_height() > 0 && g.out_width() > 0).then_some(g)
}

/// The pooled tensor and where each maximum came from.
fn pool_forward(x: &FlexTensor, window: usize) -> Option<(PoolGeometry, FlexTensor, Vec<u32>)> {
    let g = pool_geometry(x, window)?;
    let (out, argmax) = pool::forward(&g, &values(x)?);
    let [batch, channels, _, _] = x.shape().dims();
    Some((
        g,
        flex(out, [batch, channels, g.out_height(), g.out_width()]),
        argmax,
    ))
}

/// Max pooling's backward pass, from where each maximum came from.
#[derive(Debug)]
struct PoolBackward {
    geometry: PoolGeometry,
    input_shape: Shape,
}

impl Backward<Flex, 1> for PoolBackward {
    type State = Vec<u32>;
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [Some(x)] = ops.parents else { return };
        let dy = values(&grad).expect("an f32 gradient for an f32 pool");
        let dx = pool::backward(&self.geometry, &ops.state, &dy);
        grads.register::<Flex>(x.id, flex(dx, self.input_shape));
    }
}

/// The convolution's backward pass: which gradients to register, from the saved input, weights
/// and output (for the fused activation's slope).
#[derive(Debug)]
struct ConvBackward {
    geometry: ConvGeometry,
    act: Fused,
}

type ConvState = (FlexTensor, FlexTensor, FlexTensor);

impl ConvBackward {
    fn run(
        self,
        [x_id, w_id, b_id]: [Option<NodeId>; 3],
        (x, w, out): ConvState,
        grad: FlexTensor,
        grads: &mut Gradients,
    ) {
        let g = self.geometry;
        let dy = values(&grad).expect("an f32 gradient for an f32 convolution");
        let yv = values(&out).expect("an f32 output");
        let dy = OutGrad {
            grad: &dy,
            output: &yv,
            act: self.act,
        };
        if let Some(id) = x_id {
            let wv = values(&w).expect("f32 weights");
            let dx = conv::input_grad(&g, &wv, dy);
            grads.register::<Flex>(id, flex(dx, [g.batch, g.channels, g.height, g.width]));
        }
        if w_id.is_some() || b_id.is_some() {
            let xv = values(&x).expect("f32 input");
            let (dw, db) = conv::weight_and_bias_grad(&g, &xv, dy);
            if let Some(id) = w_id {
                grads.register::<Flex>(id, flex(dw, w.shape()));
            }
            if let Some(id) = b_id {
                grads.register::<Flex>(id, flex(db, [g.filters]));
            }
        }
    }
}

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        self.run(ops.parents.map(|p| p.map(|n| n.id)), ops.state, grad, grads);
    }
}

impl Backward<Flex, 2> for ConvBackward {
    type State = ConvState;
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|n| n.id));
        self.run([x, w, None], ops.state, grad, grads);
    }
}

/// The norm's backward pass, from the saved input, output and γ.
#[derive(Debug)]
struct NormBackward {
    geometry: NormGeometry,
    epsilon: f64,
    act: Fused,
}

impl Backward<Flex, 3> for NormBackward {
    type State = (FlexTensor, FlexTensor, FlexTensor, ChannelStats);
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [x_id, gamma_id, beta_id] = ops.parents.map(|p| p.map(|n| n.id));
        let (x, output, gamma, stats) = ops.state;
        let [xv, yv, dy, gv] =
            [&x, &output, &grad, &gamma].map(|t| values(t).expect("f32 batch norm"));
        let (dx, dgamma, dbeta) = norm::backward(
            &self.geometry,
            (&xv, &yv, &dy),
            &stats,
            &gv,
            self.epsilon,
            self.act,
        );
        let channels = self.geometry.channels;
        for (id, values, shape) in [
            (x_id, dx, x.shape()),
            (gamma_id, dgamma, [channels].into()),
            (beta_id, dbeta, [channels].into()),
        ] {
            if let Some(id) = id {
                grads.register::<Flex>(id, flex(values, shape));
            }
        }
    }
}

fn norm_geometry(x: &FlexTensor) -> Option<NormGeometry> {
    let shape = x.shape();
    if shape.num_dims() != 4 {
        return None;
    }
    let [batch, channels, h, w] = shape.dims();
    Some(NormGeometry {
        batch,
        channels,
        plane: h * w,
    })
}

impl<C: CheckpointStrategy> LayerKernels for Autodiff<Flex, C> {
    const DRAWS_ON_THE_CPU: bool = true;

    fn conv2d_kernel(
        x: &FloatTensor<Self>,
        w: &FloatTensor<Self>,
        b: Option<&FloatTensor<Self>>,
        padding: [usize; 2],
        act: Fused,
    ) -> Option<FloatTensor<Self>> {
        let geometry = conv_geometry(&x.primitive, &w.primitive, padding)?;
        let (xp, wp, bp) = (&x.primitive, &w.primitive, b.map(|b| &b.primitive));
        let out = conv_forward(&geometry, xp, wp, bp, act)?;
        let state = (xp.clone(), wp.clone(), out.clone());
        let op = ConvBackward { geometry, act };
        Some(match b {
            Some(b) => match op
                .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
            None => match op
                .prepare::<C>([x.node.clone(), w.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        })
    }

    fn max_pool2d_kernel(x: &FloatTensor<Self>, window: usize) -> Option<FloatTensor<Self>> {
        let (geometry, out, argmax) = pool_forward(&x.primitive, window)?;
        let op = PoolBackward {
            geometry,
            input_shape: x.primitive.shape(),
        };
        Some(
            match op.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(argmax, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        )
    }

    fn batch_norm_kernel(
        x: &FloatTensor<Self>,
        gamma: &FloatTensor<Self>,
        beta: &FloatTensor<Self>,
        epsilon: f64,
        act: Fused,
    ) -> Option<NormOutput<Self>> {
        let geometry = norm_geometry(&x.primitive)?;
        let (xv, gv, bv) = (
            values(&x.primitive)?,
            values(&gamma.primitive)?,
            values(&beta.primitive)?,
        );
        let fwd = norm::forward(&geometry, &xv, &gv, &bv, epsilon, act);
        let out = flex(fwd.output, x.primitive.shape());
        let op = NormBackward {
            geometry,
            epsilon,
            act,
        };
        let output = match op
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (
                    x.primitive.clone(),
                    out.clone(),
                    gamma.primitive.clone(),
                    fwd.stats,
                ),
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        let stat = |v: Vec<f32>| Self::from_inner(flex(v, [geometry.channels]));
        Some(NormOutput {
            output,
            mean: stat(fwd.mean),
            var: stat(fwd.var),
        })
    }
}
