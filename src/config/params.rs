//! Kind-specific stage parameters with their defaults. Every struct denies unknown fields and
//! is the single source of the JSON Schema in `schemas/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The seven stage kinds of the Galaxy Zoo workflow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Ingest,
    Explore,
    Crop,
    Baseline,
    Train,
    Evaluate,
    Submit,
}

impl StageKind {
    pub const ALL: [StageKind; 7] = [
        StageKind::Ingest,
        StageKind::Explore,
        StageKind::Crop,
        StageKind::Baseline,
        StageKind::Train,
        StageKind::Evaluate,
        StageKind::Submit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Ingest => "ingest",
            StageKind::Explore => "explore",
            StageKind::Crop => "crop",
            StageKind::Baseline => "baseline",
            StageKind::Train => "train",
            StageKind::Evaluate => "evaluate",
            StageKind::Submit => "submit",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Upstream kinds this kind accepts as inputs, and which of them it requires.
    pub fn accepted_inputs(self) -> (&'static [StageKind], &'static [StageKind]) {
        use StageKind::*;
        match self {
            Ingest => (&[], &[]),
            Explore => (&[Ingest, Crop], &[Ingest]),
            Crop => (&[Ingest], &[Ingest]),
            Baseline => (&[Ingest, Crop], &[Ingest]),
            Train => (&[Crop], &[Crop]),
            Evaluate => (&[Train, Crop, Baseline], &[Train, Crop]),
            Submit => (&[Train, Crop], &[Train, Crop]),
        }
    }

    /// Whether the pipeline seed enters this kind's fingerprint (it does where it changes output).
    pub fn uses_seed(self) -> bool {
        matches!(self, StageKind::Ingest | StageKind::Train)
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
    pub valid_fraction: f64,
    /// A label row without an image: fail, or skip it and list it in the artifact.
    #[serde(default = "d::on_error")]
    pub on_missing_image: OnProblem,
    /// Allowed absolute deviation of a decision-tree sum before a row is counted as violating it.
    #[serde(default = "d::tree_tolerance")]
    pub tree_tolerance: f64,
}

/// `explore`: figures and `summary.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExploreParams {
    /// Vote fraction at or above which a galaxy counts as showing a class.
    #[serde(default = "d::confidence")]
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
    pub size: u32,
    /// Grayscale threshold for the ROI mask.
    #[serde(default = "d::threshold")]
    pub threshold: u8,
    /// Padding around the ROI box, as a fraction of its longer side.
    #[serde(default = "d::padding")]
    pub padding: f64,
    #[serde(default = "d::fallback")]
    pub fallback: CropFallback,
    /// Side of the centre square for `method = "center"`.
    #[serde(default = "d::center_size")]
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
    pub filters: u32,
    pub kernel: u32,
    /// Zero padding on each side; default keeps nothing ("valid" convolution).
    #[serde(default)]
    pub padding: u32,
    /// Max-pool window after the block (1 = none).
    #[serde(default = "d::one")]
    pub pool: u32,
    #[serde(default)]
    pub batch_norm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenseLayer {
    pub units: u32,
    #[serde(default)]
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
    pub epochs: u32,
    #[serde(default = "d::batch_size")]
    pub batch_size: u32,
    #[serde(default = "d::learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "d::lr_schedule")]
    pub lr_schedule: LrSchedule,
    #[serde(default = "d::lr_decay")]
    pub lr_decay: f64,
    #[serde(default = "d::one")]
    pub lr_step_epochs: u32,
    #[serde(default = "d::optimizer")]
    pub optimizer: Optimizer,
    /// Nesterov momentum for `optimizer = "sgd"`.
    #[serde(default = "d::momentum")]
    pub momentum: f64,
    #[serde(default)]
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

/// `submit`: the Kaggle submission CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    /// Where the CSV is exported (atomically), relative to the pipeline file that sets it.
    #[serde(default = "d::output_csv")]
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

/// Typed parameters of one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum StageParams {
    Ingest(IngestParams),
    Explore(ExploreParams),
    Crop(CropParams),
    Baseline(BaselineParams),
    Train(TrainParams),
    Evaluate(EvaluateParams),
    Submit(SubmitParams),
}

/// A value-range problem: the offending key and what is wrong with it.
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

fn check(ok: bool, key: &'static str, message: impl Into<String>, out: &mut Vec<Invalid>) {
    if !ok {
        out.push(Invalid {
            key,
            message: message.into(),
        });
    }
}

impl StageParams {
    /// Parse the kind-specific keys of a stage table (everything but `kind` and `inputs`).
    pub fn from_value(
        kind: StageKind,
        value: toml::Value,
    ) -> Result<Self, serde_path_to_error::Error<toml::de::Error>> {
        fn de<T: serde::de::DeserializeOwned>(
            v: toml::Value,
        ) -> Result<T, serde_path_to_error::Error<toml::de::Error>> {
            serde_path_to_error::deserialize(v)
        }
        Ok(match kind {
            StageKind::Ingest => StageParams::Ingest(de(value)?),
            StageKind::Explore => StageParams::Explore(de(value)?),
            StageKind::Crop => StageParams::Crop(de(value)?),
            StageKind::Baseline => StageParams::Baseline(de(value)?),
            StageKind::Train => StageParams::Train(de(value)?),
            StageKind::Evaluate => StageParams::Evaluate(de(value)?),
            StageKind::Submit => StageParams::Submit(de(value)?),
        })
    }

    /// The parameters with every default filled in, as JSON with sorted keys: the canonical
    /// form that enters the fingerprint.
    pub fn canonical(&self) -> serde_json::Value {
        let v = match self {
            StageParams::Ingest(p) => serde_json::to_value(p),
            StageParams::Explore(p) => serde_json::to_value(p),
            StageParams::Crop(p) => serde_json::to_value(p),
            StageParams::Baseline(p) => serde_json::to_value(p),
            StageParams::Train(p) => serde_json::to_value(p),
            StageParams::Evaluate(p) => serde_json::to_value(p),
            StageParams::Submit(p) => serde_json::to_value(p),
        };
        v.expect("parameters always serialise")
    }

    /// Keys this kind accepts (from its schema), for unknown-key errors.
    pub fn known_keys(kind: StageKind) -> Vec<String> {
        let schema = kind_schema(kind);
        let mut keys: Vec<String> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Range checks serde cannot express.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        match self {
            StageParams::Ingest(p) => {
                check(
                    (0.0..1.0).contains(&p.valid_fraction),
                    "valid_fraction",
                    "must be in [0, 1)",
                    &mut out,
                );
                check(
                    p.tree_tolerance >= 0.0,
                    "tree_tolerance",
                    "must be ≥ 0",
                    &mut out,
                );
                check(
                    !p.data_dir.is_empty(),
                    "data_dir",
                    "must name a folder",
                    &mut out,
                );
            }
            StageParams::Explore(p) => {
                check(
                    (0.0..=1.0).contains(&p.confidence),
                    "confidence",
                    "must be in [0, 1]",
                    &mut out,
                );
            }
            StageParams::Crop(p) => {
                check(
                    (8..=424).contains(&p.size),
                    "size",
                    "must be between 8 and 424 pixels",
                    &mut out,
                );
                check(
                    (0.0..=2.0).contains(&p.padding),
                    "padding",
                    "must be in [0, 2]",
                    &mut out,
                );
                check(
                    (8..=424).contains(&p.center_size),
                    "center_size",
                    "must be between 8 and 424 pixels",
                    &mut out,
                );
            }
            StageParams::Baseline(p) => {
                check(
                    !p.methods.is_empty(),
                    "methods",
                    "must list at least one method",
                    &mut out,
                );
            }
            StageParams::Train(p) => {
                check(p.epochs >= 1, "epochs", "must be at least 1", &mut out);
                check(
                    p.batch_size >= 1,
                    "batch_size",
                    "must be at least 1",
                    &mut out,
                );
                check(
                    p.learning_rate > 0.0 && p.learning_rate.is_finite(),
                    "learning_rate",
                    "must be a positive number",
                    &mut out,
                );
                check(
                    (0.0..1.0).contains(&p.momentum),
                    "momentum",
                    "must be in [0, 1)",
                    &mut out,
                );
                check(
                    p.weight_decay >= 0.0,
                    "weight_decay",
                    "must be ≥ 0",
                    &mut out,
                );
                check(
                    p.lr_decay > 0.0 && p.lr_decay <= 1.0,
                    "lr_decay",
                    "must be in (0, 1]",
                    &mut out,
                );
                check(
                    p.lr_step_epochs >= 1,
                    "lr_step_epochs",
                    "must be at least 1",
                    &mut out,
                );
                check(
                    p.conv
                        .iter()
                        .all(|c| c.filters >= 1 && c.kernel >= 1 && c.pool >= 1),
                    "conv",
                    "filters, kernel and pool must be at least 1",
                    &mut out,
                );
                check(
                    p.dense
                        .iter()
                        .all(|d| d.units >= 1 && (0.0..1.0).contains(&d.dropout)),
                    "dense",
                    "units must be ≥ 1 and dropout in [0, 1)",
                    &mut out,
                );
            }
            StageParams::Evaluate(_) => {}
            StageParams::Submit(p) => {
                check(!p.output.is_empty(), "output", "must name a file", &mut out);
            }
        }
        out
    }
}

/// The JSON Schema of one kind's parameter table.
pub fn kind_schema(kind: StageKind) -> serde_json::Value {
    let schema = match kind {
        StageKind::Ingest => schemars::schema_for!(IngestParams),
        StageKind::Explore => schemars::schema_for!(ExploreParams),
        StageKind::Crop => schemars::schema_for!(CropParams),
        StageKind::Baseline => schemars::schema_for!(BaselineParams),
        StageKind::Train => schemars::schema_for!(TrainParams),
        StageKind::Evaluate => schemars::schema_for!(EvaluateParams),
        StageKind::Submit => schemars::schema_for!(SubmitParams),
    };
    serde_json::to_value(schema).expect("schemas serialise")
}
