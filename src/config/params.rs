//! Kind-specific stage parameters with their defaults. Every struct denies unknown fields and
//! is the single source of the JSON Schema in `schemas/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kind::Params;

/// What to do with a catalogued galaxy whose image is missing or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnProblem {
    Error,
    Skip,
}

/// `ingest`: the Kaggle layout under `data_dir` → `catalog.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// Folder of the Kaggle download; relative to the pipeline file that sets it.
    #[schemars(length(min = 1))]
    pub data_dir: String,
    /// Training images folder, relative to `data_dir`.
    #[serde(default = "d::images")]
    pub images: String,
    /// Label CSV, relative to `data_dir`.
    #[serde(default = "d::labels")]
    pub labels: String,
    /// Unlabelled test images folder, relative to `data_dir`; "" to leave the test split out.
    #[serde(default = "d::test_images")]
    pub test_images: String,
    /// Fraction of labelled galaxies assigned to the validation split.
    #[serde(default = "d::valid_fraction")]
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub valid_fraction: f64,
    /// A label row without an image: fail, or skip it and list it in the artifact.
    #[serde(default = "d::on_error")]
    pub on_missing_image: OnProblem,
    /// Allowed absolute deviation of a decision-tree sum before a row is counted as violating it.
    #[serde(default = "d::tree_tolerance")]
    #[schemars(range(min = 0.0))]
    pub tree_tolerance: f64,
}

/// `explore`: figures and `summary.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExploreParams {
    /// Vote fraction at or above which a galaxy counts as showing a class.
    #[serde(default = "d::confidence")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// At most this many training images enter the mean image (0 = all).
    #[serde(default)]
    pub mean_image_limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CropMethod {
    /// Threshold → largest contour box → pad → square.
    Roi,
    /// A fixed centre square of `center_size` pixels.
    Center,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CropFallback {
    /// Use the whole image when the padded square leaves the frame (the seed's behaviour).
    Whole,
    /// Shift/clamp the square into the frame.
    Clamp,
}

/// `crop`: fixed-size uint8 RGB crops in `crops.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CropParams {
    #[serde(default = "d::crop_method")]
    pub method: CropMethod,
    /// Output side length in pixels.
    #[serde(default = "d::crop_size")]
    #[schemars(range(min = 8, max = 424))]
    pub size: u32,
    /// Grayscale threshold for the ROI mask.
    #[serde(default = "d::threshold")]
    pub threshold: u8,
    /// Padding around the ROI box, as a fraction of its longer side.
    #[serde(default = "d::padding")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub padding: f64,
    #[serde(default = "d::fallback")]
    pub fallback: CropFallback,
    /// Side of the centre square for `method = "center"`.
    #[serde(default = "d::center_size")]
    #[schemars(range(min = 8, max = 424))]
    pub center_size: u32,
    /// A corrupt or wrongly sized image: fail naming the file, or skip it with a reason.
    #[serde(default = "d::on_error")]
    pub on_bad_image: OnProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BaselineMethod {
    Mean,
    CentralPixel,
    AverageColour,
}

/// `baseline`: the seed's benchmark regressions on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineParams {
    #[serde(default = "d::baseline_methods")]
    #[schemars(length(min = 1))]
    pub methods: Vec<BaselineMethod>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Auto,
    Cpu,
    Cuda,
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
    #[serde(default = "d::one")]
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
    #[serde(default = "d::device")]
    pub device: Device,
    #[serde(default = "d::epochs")]
    #[schemars(range(min = 1))]
    pub epochs: u32,
    #[serde(default = "d::batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    #[serde(default = "d::learning_rate")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub learning_rate: f64,
    #[serde(default = "d::lr_schedule")]
    pub lr_schedule: LrSchedule,
    #[serde(default = "d::lr_decay")]
    #[schemars(extend("exclusiveMinimum" = 0.0), range(max = 1.0))]
    pub lr_decay: f64,
    #[serde(default = "d::one")]
    #[schemars(range(min = 1))]
    pub lr_step_epochs: u32,
    #[serde(default = "d::optimizer")]
    pub optimizer: Optimizer,
    /// Nesterov momentum for `optimizer = "sgd"`.
    #[serde(default = "d::momentum")]
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub momentum: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    #[serde(default = "d::loss")]
    pub loss: Loss,
    #[serde(default = "d::activation")]
    pub activation: Activation,
    #[serde(default = "d::conv")]
    pub conv: Vec<ConvBlock>,
    #[serde(default = "d::dense")]
    pub dense: Vec<DenseLayer>,
    #[serde(default = "d::output")]
    pub output: OutputHead,
    #[serde(default)]
    pub augment: Augment,
    /// Keep an exponential moving average of the weights with this decay per step (e.g. 0.999)
    /// and use it for validation and the saved model; 0 = off.
    #[serde(default, skip_serializing_if = "d::is_zero")]
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
        d::conv()
    }
}

/// `evaluate`: RMSE on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Average predictions over the 8 rotations/flips of each crop (test-time augmentation).
    #[serde(default)]
    pub tta: bool,
    /// Where to run inference (as for `train`).
    #[serde(default = "d::device")]
    pub device: Device,
}

/// `ensemble`: the networks of two or more `train` stages as one model; `evaluate` and `submit`
/// average their predictions. It has no parameters of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsembleParams {}

/// `submit`: the Kaggle submission CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    /// Where the CSV is exported (atomically), relative to the pipeline file that sets it.
    #[serde(default = "d::output_csv")]
    #[schemars(length(min = 1))]
    pub output: String,
    /// Average predictions over the 8 rotations/flips of each crop (test-time augmentation).
    #[serde(default)]
    pub tta: bool,
    /// Where to run inference (as for `train`).
    #[serde(default = "d::device")]
    pub device: Device,
}

/// Defaults, one function each (serde needs functions).
mod d {
    use super::*;
    pub fn is_zero(v: &f64) -> bool {
        *v == 0.0
    }
    pub fn images() -> String {
        "images_training_rev1".into()
    }
    pub fn labels() -> String {
        "training_solutions_rev1.csv".into()
    }
    pub fn test_images() -> String {
        "images_test_rev1".into()
    }
    pub fn valid_fraction() -> f64 {
        0.1
    }
    pub fn on_error() -> OnProblem {
        OnProblem::Error
    }
    pub fn tree_tolerance() -> f64 {
        0.01
    }
    pub fn confidence() -> f64 {
        0.5
    }
    pub fn crop_method() -> CropMethod {
        CropMethod::Roi
    }
    pub fn crop_size() -> u32 {
        64
    }
    pub fn threshold() -> u8 {
        10
    }
    pub fn padding() -> f64 {
        0.2
    }
    pub fn fallback() -> CropFallback {
        CropFallback::Whole
    }
    pub fn center_size() -> u32 {
        207
    }
    pub fn baseline_methods() -> Vec<BaselineMethod> {
        vec![
            BaselineMethod::Mean,
            BaselineMethod::CentralPixel,
            BaselineMethod::AverageColour,
        ]
    }
    pub fn device() -> Device {
        Device::Auto
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
    pub fn output_csv() -> String {
        "submission.csv".into()
    }
}

// Ranges are declared on the fields above (schemars attributes): the schema shows them and
// `kind::check_bounds` enforces them. No kind needs a check beyond that.
impl Params for IngestParams {}
impl Params for ExploreParams {}
impl Params for CropParams {}
impl Params for BaselineParams {}
impl Params for TrainParams {}
impl Params for EvaluateParams {}
impl Params for SubmitParams {}
impl Params for EnsembleParams {}
