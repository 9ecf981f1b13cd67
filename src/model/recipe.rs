//! A training recipe as pipeline files declare it: the network (conv blocks, dense layers, output
//! head, activation), the optimiser and schedule, augmentation and the device. `train` takes it as
//! its parameters; the model's modules read their vocabulary from here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// CUDA, then a wgpu GPU, then the CPU: whichever this build and machine have.
    #[default]
    Auto,
    /// This crate's CPU kernels on Burn's `Flex` backend.
    Cpu,
    /// Burn's CUDA backend (built with `--features cuda`).
    Cuda,
    /// Burn's wgpu backend: Metal, Vulkan or DX12 (built with `--features wgpu`).
    Wgpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Adam,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    Mse,
    WeightedMse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputHead {
    Sigmoid,
    Clip,
    /// Normalise each question and multiply by its parent answer (DESIGN.md).
    Tree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    LeakyRelu,
    Gelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    Cosine,
    /// Multiply by `lr_decay` every `lr_step_epochs` epochs.
    Step,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvBlock {
    #[schemars(range(min = 1))]
    pub filters: u32,
    #[schemars(range(min = 1))]
    pub kernel: u32,
    /// Zero padding on each side; default keeps nothing ("valid" convolution).
    #[serde(default)]
    pub padding: u32,
    /// Max-pool window after the block (1 = none).
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1))]
    pub pool: u32,
    #[serde(default)]
    pub batch_norm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenseLayer {
    #[schemars(range(min = 1))]
    pub units: u32,
    #[serde(default)]
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub dropout: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Random rotation by any angle.
    #[serde(default)]
    pub rotate: bool,
    /// Random horizontal/vertical flips.
    #[serde(default)]
    pub flip: bool,
    /// Maximum relative zoom (0 = none).
    #[serde(default)]
    pub zoom: f64,
    /// Maximum translation in pixels.
    #[serde(default)]
    pub translate: f64,
    /// Maximum relative brightness change (0 = none).
    #[serde(default)]
    pub brightness: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            rotate: true,
            flip: false,
            zoom: 0.0,
            translate: 0.0,
            brightness: 0.0,
        }
    }
}

/// `train`: a Burn CNN declared here, trained on the crops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Where to train; the resolved device is recorded in the run record, not in the cache key.
    #[serde(default)]
    pub device: Device,
    #[serde(default = "defaults::epochs")]
    #[schemars(range(min = 1))]
    pub epochs: u32,
    #[serde(default = "defaults::batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    #[serde(default = "defaults::learning_rate")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub learning_rate: f64,
    #[serde(default = "defaults::lr_schedule")]
    pub lr_schedule: LrSchedule,
    #[serde(default = "defaults::lr_decay")]
    #[schemars(extend("exclusiveMinimum" = 0.0), range(max = 1.0))]
    pub lr_decay: f64,
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1))]
    pub lr_step_epochs: u32,
    #[serde(default = "defaults::optimizer")]
    pub optimizer: Optimizer,
    /// Nesterov momentum for `optimizer = "sgd"`.
    #[serde(default = "defaults::momentum")]
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub momentum: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    #[serde(default = "defaults::loss")]
    pub loss: Loss,
    #[serde(default = "defaults::activation")]
    pub activation: Activation,
    #[serde(default = "defaults::conv")]
    pub conv: Vec<ConvBlock>,
    #[serde(default = "defaults::dense")]
    pub dense: Vec<DenseLayer>,
    #[serde(default = "defaults::output")]
    pub output: OutputHead,
    #[serde(default)]
    pub augment: Augment,
    /// Keep an exponential moving average of the weights with this decay per step (e.g. 0.999)
    /// and use it for validation and the saved model; 0 = off.
    #[serde(default, skip_serializing_if = "defaults::is_zero")]
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub ema: f64,
    /// This training's own seed instead of the pipeline's (two trainings of one `ensemble`
    /// differ by it). Unset: the pipeline seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl TrainParams {
    /// The seed's conv stack (the default of `conv`).
    pub fn default_conv() -> Vec<ConvBlock> {
        defaults::conv()
    }
}

/// Defaults, one function each (serde needs functions).
mod defaults {
    use super::*;
    pub fn is_zero(v: &f64) -> bool {
        *v == 0.0
    }
    pub fn epochs() -> u32 {
        5
    }
    pub fn batch_size() -> u32 {
        64
    }
    pub fn learning_rate() -> f64 {
        1e-3
    }
    pub fn lr_schedule() -> LrSchedule {
        LrSchedule::Constant
    }
    pub fn lr_decay() -> f64 {
        0.1
    }
    pub fn one() -> u32 {
        1
    }
    pub fn optimizer() -> Optimizer {
        Optimizer::Adam
    }
    pub fn momentum() -> f64 {
        0.9
    }
    pub fn loss() -> Loss {
        Loss::WeightedMse
    }
    pub fn activation() -> Activation {
        Activation::Relu
    }
    /// The seed's network: conv 9×9×64 → pool → conv 5×5×96 + BN → pool.
    pub fn conv() -> Vec<ConvBlock> {
        vec![
            ConvBlock {
                filters: 64,
                kernel: 9,
                padding: 0,
                pool: 2,
                batch_norm: false,
            },
            ConvBlock {
                filters: 96,
                kernel: 5,
                padding: 0,
                pool: 2,
                batch_norm: true,
            },
        ]
    }
    /// The seed's head: dense 1/8 → dense 1/4 (of 1024 units), dropout 0.15.
    pub fn dense() -> Vec<DenseLayer> {
        vec![
            DenseLayer {
                units: 128,
                dropout: 0.15,
            },
            DenseLayer {
                units: 256,
                dropout: 0.15,
            },
        ]
    }
    pub fn output() -> OutputHead {
        OutputHead::Sigmoid
    }
}
