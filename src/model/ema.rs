//! Weight averaging: an exponential moving average of the network's weights (and batch-norm
//! running statistics), updated after every optimisation step,
//! `average ← d · average + (1 − d) · current`, with `d = min(decay, (1 + n) / (10 + n))` after
//! `n` updates (TensorFlow's `ExponentialMovingAverage` with `num_updates`): early on the average
//! follows the weights closely, so the random initial weights do not linger in it. Validation
//! and the saved model use the average; the optimiser keeps training the current weights.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::net::Net;

/// The averaged network and its decay.
pub struct Ema<B: Backend> {
    decay: f64,
    /// Updates so far (the optimisation steps done, also after a resume).
    updates: u64,
    average: Net<B>,
}

impl<B: Backend> Ema<B> {
    /// The average `average` after `updates` steps (the initial network and 0, or a checkpoint's).
    pub fn new(decay: f64, average: Net<B>, updates: u64) -> Self {
        Ema {
            decay,
            updates,
            average,
        }
    }

    /// Blend the weights of `current` (the same architecture) into the average.
    pub fn update(&mut self, current: &Net<B>) {
        let mut collect = Collect { out: Vec::new() };
        current.visit(&mut collect);
        let n = self.updates as f64;
        let mut blend = Blend {
            decay: self.decay.min((1.0 + n) / (10.0 + n)),
            current: collect.out.into_iter(),
        };
        self.updates += 1;
        self.average = self.average.clone().map(&mut blend);
        assert!(blend.current.next().is_none(), "the same architecture");
    }

    pub fn average(&self) -> &Net<B> {
        &self.average
    }
}

/// Every float tensor of a module (parameters and running statistics), flattened, in module order.
struct Collect<B: Backend> {
    out: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.out.push(value.reshape([n]));
    }
}

/// Maps each float tensor of the average to its blend with the next collected current tensor.
struct Blend<B: Backend> {
    decay: f64,
    current: std::vec::IntoIter<Tensor<B, 1>>,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, average, mapper) = param.consume();
        let current = self
            .current
            .next()
            .expect("the same architecture")
            .reshape(average.shape());
        let blended = average
            .mul_scalar(self.decay)
            .add(current.mul_scalar(1.0 - self.decay));
        Param::from_mapped_value(id, blended, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;
    use crate::model::recipe::{Activation, ConvBlock, DenseLayer, OutputHead};
    use burn::backend::{Flex, flex::FlexDevice};

    fn net() -> Net<Flex> {
        let arch = Architecture {
            input_size: 8,
            conv: vec![ConvBlock {
                filters: 2,
                kernel: 3,
                padding: 1,
                pool: 2,
                batch_norm: true,
            }],
            dense: vec![DenseLayer {
                units: 4,
                dropout: 0.0,
            }],
            activation: Activation::Relu,
            output: OutputHead::Sigmoid,
        };
        arch.init::<Flex>(&FlexDevice).unwrap()
    }

    fn values(net: &Net<Flex>) -> Vec<f32> {
        let mut collect = Collect { out: Vec::new() };
        net.visit(&mut collect);
        collect
            .out
            .into_iter()
            .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn each_update_moves_the_average_a_share_of_the_way_to_the_current_weights() {
        // Initialisation draws from Burn's process-wide RNG, which trainings in other tests hold.
        let _rng = crate::model::rng::rng_guard();
        let (start, current) = (net(), net());
        let (a, c) = (values(&start), values(&current));
        assert_ne!(a, c, "two random initialisations");
        // Past the warm-up (1,000 updates done), the decay is the one asked for.
        let copy = net().load_record(start.clone().into_record());
        let mut ema = Ema::new(0.75, copy, 1000);
        ema.update(&current);
        let got = values(ema.average());
        assert_eq!(got.len(), a.len());
        for ((g, a), c) in got.iter().zip(&a).zip(&c) {
            assert!((g - (0.75 * a + 0.25 * c)).abs() < 1e-6, "{g} vs {a}, {c}");
        }
        ema.update(&current);
        let twice = values(ema.average());
        for ((g, a), c) in twice.iter().zip(&a).zip(&c) {
            assert!((g - (0.5625 * a + 0.4375 * c)).abs() < 1e-6);
        }
        // The first update of a fresh average moves 90 % of the way (d = 1/10). (A copy through
        // the record: a clone shares batch-norm statistics, which the update above changed.)
        let start = net().load_record(start.into_record());
        let mut fresh = Ema::new(0.999, start, 0);
        fresh.update(&current);
        for ((g, a), c) in values(fresh.average()).iter().zip(&a).zip(&c) {
            assert!((g - (0.1 * a + 0.9 * c)).abs() < 1e-6);
        }
    }
}
