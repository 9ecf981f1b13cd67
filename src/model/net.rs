//! The CNN, built from the architecture declared in the pipeline (generic over Burn backends).

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::kernels::{self, Fused, LayerKernels};
use crate::labels::{N_CLASSES, QUESTIONS};
use crate::model::recipe::{Activation, ConvBlock, DenseLayer, OutputHead};

/// The negative slope of `activation = "leaky_relu"`.
const LEAKY_SLOPE: f32 = 0.01;

/// Everything needed to rebuild the network (stored beside the weights as `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub input_size: usize,
    pub conv: Vec<ConvBlock>,
    pub dense: Vec<DenseLayer>,
    pub activation: Activation,
    pub output: OutputHead,
}

#[derive(Module, Debug)]
pub struct ConvLayer<B: Backend> {
    conv: Conv2d<B>,
    norm: Option<BatchNorm<B>>,
    pool: Option<MaxPool2d>,
}

#[derive(Module, Debug)]
pub struct DenseBlock<B: Backend> {
    linear: Linear<B>,
    dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct Net<B: Backend> {
    convs: Vec<ConvLayer<B>>,
    dense: Vec<DenseBlock<B>>,
    head: Linear<B>,
    activation: Activation,
    output: OutputHead,
}

/// Replaces each parameter's random id with its position in the module.
#[derive(Default)]
struct SequentialIds {
    next: u64,
}

impl SequentialIds {
    fn next(&mut self) -> ParamId {
        self.next += 1;
        self.next.into()
    }
}

impl<B: Backend> ModuleMapper<B> for SequentialIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.next(), tensor, mapper)
    }
}

impl<B: Backend> Net<B> {
    /// The same network with parameter ids numbered in module order. Burn draws ids at random
    /// and stores them with the weights; numbering them makes the saved file a function of the
    /// weights alone, so retraining with the same seed gives a byte-identical `model.bin`.
    pub fn with_sequential_ids(self) -> Self {
        let mut ids = SequentialIds::default();
        let net = self.map(&mut ids);
        // Batch-norm running statistics keep their own id through `map`; renumber in the record.
        let mut record = net.clone().into_record();
        for layer in &mut record.convs {
            if let Some(norm) = &mut layer.norm {
                norm.running_mean = Param::initialized(ids.next(), norm.running_mean.val());
                norm.running_var = Param::initialized(ids.next(), norm.running_var.val());
            }
        }
        net.load_record(record)
    }
}

impl Architecture {
    /// Spatial side and channels after the conv stack, or an error if it shrinks to nothing.
    pub fn conv_output(&self) -> Result<(usize, usize), super::ModelError> {
        let mut side = self.input_size as i64;
        let mut channels = 3usize;
        for (i, c) in self.conv.iter().enumerate() {
            side = side + 2 * c.padding as i64 - c.kernel as i64 + 1;
            if side < 1 {
                return Err(super::ModelError::ConvTooLarge {
                    block: i + 1,
                    kernel: c.kernel,
                    input: self.input_size,
                });
            }
            side /= c.pool as i64;
            if side < 1 {
                return Err(super::ModelError::PoolTooLarge { block: i + 1 });
            }
            channels = c.filters as usize;
        }
        Ok((side as usize, channels))
    }

    /// Floating-point operations (a multiply-add counts 2) of one image's forward pass through
    /// the convolutions and dense layers (activations, pooling and norms are not counted: they
    /// are a rounding error next to these). A training step costs about 3× this: the forward
    /// pass, and the backward pass's two products per layer (input and weight gradients).
    pub fn forward_flops(&self) -> f64 {
        let mut flops = 0.0;
        let (mut side, mut channels) = (self.input_size as f64, 3.0);
        for c in &self.conv {
            let (k, filters) = (c.kernel as f64, c.filters as f64);
            side = side + 2.0 * c.padding as f64 - k + 1.0;
            flops += 2.0 * side * side * filters * k * k * channels;
            side = (side / c.pool as f64).floor();
            channels = filters;
        }
        let mut width = side * side * channels;
        for d in &self.dense {
            flops += 2.0 * width * d.units as f64;
            width = d.units as f64;
        }
        flops + 2.0 * width * N_CLASSES as f64
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Net<B>, super::ModelError> {
        let (side, channels) = self.conv_output()?;
        let mut in_ch = 3;
        let convs = self
            .conv
            .iter()
            .map(|c| {
                let p = c.padding as usize;
                let conv = Conv2dConfig::new(
                    [in_ch, c.filters as usize],
                    [c.kernel as usize, c.kernel as usize],
                )
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init(device);
                in_ch = c.filters as usize;
                ConvLayer {
                    conv,
                    norm: c
                        .batch_norm
                        .then(|| BatchNormConfig::new(c.filters as usize).init(device)),
                    pool: (c.pool > 1)
                        .then(|| MaxPool2dConfig::new([c.pool as usize, c.pool as usize]).init()),
                }
            })
            .collect();
        let mut width = side * side * channels;
        let dense = self
            .dense
            .iter()
            .map(|d| {
                let block = DenseBlock {
                    linear: LinearConfig::new(width, d.units as usize).init(device),
                    dropout: DropoutConfig::new(d.dropout).init(),
                };
                width = d.units as usize;
                block
            })
            .collect();
        let head = LinearConfig::new(width, N_CLASSES).init(device);
        Ok(Net {
            convs,
            dense,
            head,
            activation: self.activation,
            output: self.output,
        })
    }
}

impl<B: LayerKernels> Net<B> {
    fn act<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.fused() {
            Some(act) => act.on_burn(x),
            None => activation::gelu(x),
        }
    }

    /// The activation as the kernels fuse it, if they can (GELU they cannot).
    fn fused(&self) -> Option<Fused> {
        match self.activation {
            Activation::Relu => Some(Fused::Rectifier { slope: 0.0 }),
            Activation::LeakyRelu => Some(Fused::Rectifier { slope: LEAKY_SLOPE }),
            Activation::Gelu => None,
        }
    }

    /// `act(norm(conv(x)))` or `act(conv(x))`, the activation fused into the last of them
    /// where the kernels can (on the CPU; Burn's modules otherwise). GELU, which they cannot
    /// fuse, follows Burn's norm.
    fn conv_block(&self, layer: &ConvLayer<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (norm, fused) = (&layer.norm, self.fused());
        let conv_act = match norm {
            None => fused.unwrap_or(Fused::Identity),
            Some(_) => Fused::Identity,
        };
        let x = kernels::conv2d(&layer.conv, x, conv_act);
        match (norm, fused) {
            (None, Some(_)) => x,
            (Some(norm), Some(act)) => kernels::batch_norm(norm, x, act),
            (Some(norm), None) => self.act(norm.forward(x)),
            (None, None) => self.act(x),
        }
    }

    /// `[batch, 3, size, size]` in [0, 1] → `[batch, 37]` vote fractions.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = images;
        for layer in &self.convs {
            x = self.conv_block(layer, x);
            if let Some(pool) = &layer.pool {
                x = kernels::max_pool2d(pool, x);
            }
        }
        let [n, c, h, w] = x.dims();
        let mut x: Tensor<B, 2> = x.reshape([n, c * h * w]);
        for block in &self.dense {
            x = block.dropout.forward(self.act(block.linear.forward(x)));
        }
        let logits = self.head.forward(x);
        match self.output {
            OutputHead::Sigmoid => activation::sigmoid(logits),
            OutputHead::Clip => logits.clamp(0.0, 1.0),
            OutputHead::Tree => tree_head(logits),
        }
    }
}

/// The decision-tree output layer: softmax within each question, times the parent answer.
/// Every output row then satisfies all the tree's sums exactly (up to rounding).
pub fn tree_head<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    let mut columns: Vec<Option<Tensor<B, 2>>> = vec![None; N_CLASSES];
    for q in QUESTIONS.iter() {
        let probs = activation::softmax(
            logits.clone().narrow(1, q.columns.start, q.columns.len()),
            1,
        );
        let scaled = match q.parent {
            None => probs,
            Some(p) => probs * columns[p].clone().expect("parents come first"),
        };
        for (k, c) in q.columns.clone().enumerate() {
            columns[c] = Some(scaled.clone().narrow(1, k, 1));
        }
    }
    Tensor::cat(
        columns
            .into_iter()
            .map(|c| c.expect("every column set"))
            .collect(),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::tree_deviation;
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;
    use burn::tensor::TensorData;
    use proptest::prelude::*;

    #[test]
    fn the_seed_network_costs_278_megaflops_per_image_forward() {
        let seed: crate::model::recipe::TrainParams = toml::from_str("").unwrap();
        let arch = Architecture {
            input_size: 64,
            conv: seed.conv,
            dense: seed.dense,
            activation: Activation::Relu,
            output: OutputHead::Sigmoid,
        };
        // conv 9×9: 56²·64·243·2; conv 5×5: 24²·96·1600·2; dense 13824→128→256→37.
        let expected = 97_542_144.0 + 176_947_200.0 + 3_538_944.0 + 65_536.0 + 18_944.0;
        assert_eq!(arch.forward_flops(), expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn tree_head_outputs_are_consistent_answer_sets(logits in proptest::collection::vec(-20f32..20f32, N_CLASSES * 3)) {
            let t = Tensor::<Flex, 2>::from_data(TensorData::new(logits, [3, N_CLASSES]), &FlexDevice);
            let out: Vec<f32> = tree_head(t).into_data().to_vec().unwrap();
            for row in out.chunks_exact(N_CLASSES) {
                prop_assert!(row.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
                prop_assert!(tree_deviation(row) < 1e-5, "deviation {}", tree_deviation(row));
            }
        }
    }

    #[test]
    fn conv_output_size_and_too_small_inputs() {
        let arch = Architecture {
            input_size: 64,
            conv: crate::model::recipe::TrainParams::default_conv(),
            dense: vec![],
            activation: Activation::Relu,
            output: OutputHead::Sigmoid,
        };
        assert_eq!(
            arch.conv_output().unwrap(),
            (12, 96),
            "the seed's stack: 64 → 56 → 28 → 24 → 12"
        );
        let tiny = Architecture {
            input_size: 8,
            ..arch
        };
        assert!(
            tiny.conv_output()
                .unwrap_err()
                .to_string()
                .contains("leaves no pixels")
        );
    }
}
