//! The training loop: seeded, checkpointed after every epoch, resumable after a kill.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig, decay::WeightDecayConfig};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::data::{self, Transform};
use super::ema::Ema;
use super::inference;
use super::kernels::{LayerKernels, TrainingBackend};
use super::net::{Architecture, Net};
use crate::artifacts::{Crops, Split};
use crate::labels::N_CLASSES;
use crate::model::recipe::{Loss, LrSchedule, Optimizer as OptimizerKind, TrainParams};
use crate::progress::Progress;

/// One row of `history.parquet`: a batch loss, or (batch = None) an epoch summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub epoch: u32,
    pub batch: Option<u32>,
    pub loss: f64,
    pub valid_rmse: Option<f64>,
    pub images_per_sec: Option<f64>,
}

/// What a training run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub history: Vec<HistoryRow>,
    pub resumed_from_epoch: u32,
    pub images_per_sec: f64,
    /// Share of step time spent waiting for batches (loading + augmentation + upload).
    pub data_share: f64,
    pub final_valid_rmse: f64,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    epochs_done: u32,
    history: Vec<HistoryRow>,
}

pub struct TrainInputs<'a> {
    pub params: &'a TrainParams,
    pub arch: &'a Architecture,
    pub crops: &'a Crops,
    pub seed: u64,
    pub work_dir: &'a Path,
    pub out_dir: &'a Path,
    pub progress: &'a Progress,
}

type Rec = BinFileRecorder<FullPrecisionSettings>;

fn recorder() -> Rec {
    BinFileRecorder::<FullPrecisionSettings>::new()
}

/// Per-class loss weights for `weighted_mse`: rarer answers weigh more (w ∝ 1/√(mean + 0.01),
/// normalised to mean 1), so the few-vote classes of the deep tree are not ignored.
pub fn class_weights(labels: &[crate::labels::Labels]) -> crate::labels::Labels {
    let n = labels.len().max(1) as f64;
    let mut w = [0f64; N_CLASSES];
    for (c, wc) in w.iter_mut().enumerate() {
        let mean = labels.iter().map(|l| l[c] as f64).sum::<f64>() / n;
        *wc = 1.0 / (mean + 0.01).sqrt();
    }
    let avg = w.iter().sum::<f64>() / N_CLASSES as f64;
    w.map(|v| (v / avg) as f32)
}

pub fn learning_rate(p: &TrainParams, epoch: u32) -> f64 {
    match p.lr_schedule {
        LrSchedule::Constant => p.learning_rate,
        LrSchedule::Cosine => {
            let t = epoch as f64 / p.epochs.max(1) as f64;
            p.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        LrSchedule::Step => {
            p.learning_rate * p.lr_decay.powi((epoch / p.lr_step_epochs.max(1)) as i32)
        }
    }
}

pub fn train<B: TrainingBackend>(
    device: B::Device,
    inp: &TrainInputs,
) -> Result<TrainReport, ModelError> {
    let _one_at_a_time = super::rng::rng_guard();
    let p = inp.params;
    let decay = (p.weight_decay > 0.0).then(|| WeightDecayConfig::new(p.weight_decay as f32));
    match p.optimizer {
        OptimizerKind::Adam => run::<B, _>(
            device,
            inp,
            AdamConfig::new().with_weight_decay(decay).init(),
        ),
        OptimizerKind::Sgd => {
            let momentum = MomentumConfig::new()
                .with_momentum(p.momentum)
                .with_dampening(0.0)
                .with_nesterov(true);
            run::<B, _>(
                device,
                inp,
                SgdConfig::new()
                    .with_weight_decay(decay)
                    .with_momentum(Some(momentum))
                    .init(),
            )
        }
    }
}

/// [`train`] on the backend `device` names: this crate's CPU kernels, CUDA or wgpu.
pub fn train_on(device: super::Resolved, inp: &TrainInputs) -> Result<TrainReport, ModelError> {
    use burn::backend::Autodiff;
    match device {
        super::Resolved::Cpu => {
            train::<Autodiff<burn::backend::Flex>>(burn::backend::flex::FlexDevice, inp)
        }
        #[cfg(feature = "cuda")]
        super::Resolved::Cuda => train::<Autodiff<burn::backend::Cuda>>(Default::default(), inp),
        #[cfg(feature = "wgpu")]
        super::Resolved::Wgpu(adapter) => {
            train::<Autodiff<burn::backend::Wgpu>>(adapter.device.clone(), inp)
        }
    }
}

/// The untrained network for `seed`. On a backend that draws elsewhere than the CPU, the weights
/// are drawn on `Flex` and copied over, so every device starts from the same network.
fn initial_net<B: TrainingBackend>(
    arch: &Architecture,
    seed: u64,
    device: &B::Device,
) -> Result<Net<B>, ModelError> {
    B::seed(device, seed);
    let net = arch.init::<B>(device)?;
    if B::DRAWS_ON_THE_CPU {
        return Ok(net);
    }
    use burn::record::BinBytesRecorder;
    let host = burn::backend::flex::FlexDevice;
    // On the CPU the weights are drawn lazily, at the first step, after epoch 0's re-seed
    // (`seed + 1`, in `run`); the same draw here gives the CPU's starting network.
    <burn::backend::Flex as burn::tensor::backend::Backend>::seed(&host, seed.wrapping_add(1));
    let drawn = arch.init::<burn::backend::Flex>(&host)?;
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder
        .record(drawn.into_record(), ())
        .map_err(ModelError::record("copying the initial weights"))?;
    let record = recorder
        .load(bytes, device)
        .map_err(ModelError::record("copying the initial weights"))?;
    Ok(net.load_record(record))
}

/// Indices of the labelled crops of `split`.
fn labelled(crops: &Crops, split: Split) -> Vec<usize> {
    (0..crops.ids.len())
        .filter(|&i| crops.splits[i] == split && crops.labels[i].is_some())
        .collect()
}

/// Where the time of training goes: images trained, seconds in steps, seconds waiting for data.
#[derive(Default)]
struct Throughput {
    images: usize,
    time: Duration,
    wait: Duration,
}

impl Throughput {
    fn images_per_sec(&self) -> f64 {
        self.images as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

fn run<B: TrainingBackend, O: Optimizer<Net<B>, B>>(
    device: B::Device,
    inp: &TrainInputs,
    mut optim: O,
) -> Result<TrainReport, ModelError> {
    let p = inp.params;
    let crops = inp.crops;
    let train_idx = labelled(crops, Split::Train);
    let valid_idx = labelled(crops, Split::Valid);
    if train_idx.is_empty() {
        return Err(ModelError::NoTrainingData);
    }
    let weights_t = loss_weights::<B>(p.loss, crops, &train_idx, &device);

    let mut model: Net<B> = initial_net(inp.arch, inp.seed, &device)?;
    // Resume from the last finished epoch, if a killed run left a checkpoint.
    let ckpt = inp.work_dir.join("checkpoint");
    let (start_epoch, mut history) = resume(&ckpt, &device, &mut model, &mut optim)?;
    let steps_done = history.iter().filter(|h| h.batch.is_some()).count() as u64;
    let mut ema = resume_average(p.ema, &ckpt, &device, &model, steps_done)?;

    let mut speed = Throughput::default();
    let mut last_rmse = f64::NAN;
    for epoch in start_epoch..p.epochs {
        // Seed per epoch, so a resumed run draws exactly what an uninterrupted one would.
        B::seed(&device, inp.seed.wrapping_add(1 + epoch as u64));
        let batches = epoch_batches(&train_idx, inp.seed, epoch, p.batch_size as usize);
        inp.progress.start(
            batches.len() as u64,
            "batches",
            &format!("epoch {}/{}", epoch + 1, p.epochs),
        );
        let epoch_start = Instant::now();
        let step = Step {
            device: &device,
            weights: &weights_t,
            lr: learning_rate(p, epoch),
            epoch,
        };
        let epoch_loss = step.epoch(
            inp,
            &batches,
            (&mut model, &mut optim, &mut ema),
            &mut speed,
            &mut history,
        )?;
        let seconds = epoch_start.elapsed().as_secs_f64();
        let trained = trained_weights(&model, &ema);
        last_rmse = validation_rmse(&trained, &device, crops, &valid_idx);
        history.push(HistoryRow {
            epoch: epoch + 1,
            batch: None,
            loss: epoch_loss / train_idx.len() as f64,
            valid_rmse: (!valid_idx.is_empty()).then_some(last_rmse),
            images_per_sec: Some(train_idx.len() as f64 / seconds),
        });
        save_checkpoint(&ckpt, (&model, &optim, &ema), epoch + 1, &history)?;
    }
    if last_rmse.is_nan()
        && let Some(row) = history.iter().rev().find(|r| r.batch.is_none())
    {
        last_rmse = row.valid_rmse.unwrap_or(f64::NAN);
    }
    match &ema {
        Some(average) => save_model(average.average().clone(), inp.out_dir)?,
        None => save_model(model, inp.out_dir)?,
    }
    Ok(TrainReport {
        history,
        resumed_from_epoch: start_epoch,
        images_per_sec: speed.images_per_sec(),
        data_share: speed.wait.as_secs_f64() / speed.time.as_secs_f64().max(1e-9),
        final_valid_rmse: last_rmse,
    })
}

/// The per-class weights of the loss, as a `[1, 37]` row.
fn loss_weights<B: Backend>(
    loss: Loss,
    crops: &Crops,
    train_idx: &[usize],
    device: &B::Device,
) -> Tensor<B, 2> {
    let weights = match loss {
        Loss::Mse => [1f32; N_CLASSES],
        Loss::WeightedMse => {
            let labels: Vec<crate::labels::Labels> = train_idx
                .iter()
                .map(|&i| crops.labels[i].expect("labelled"))
                .collect();
            class_weights(&labels)
        }
    };
    Tensor::<B, 1>::from_data(TensorData::new(weights.to_vec(), [N_CLASSES]), device)
        .reshape([1, N_CLASSES])
}

/// The training crops of `epoch` in their shuffled order (a function of seed and epoch, so a
/// resumed run draws what an uninterrupted one would), cut into batches.
fn epoch_batches(train_idx: &[usize], seed: u64, epoch: u32, batch_size: usize) -> Vec<Vec<usize>> {
    let mut order = train_idx.to_vec();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch as u64 + 1)),
    ));
    order.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// Load the checkpoint a killed run left in `ckpt` into `model` and `optim`: the epochs it had
/// finished and its history (0 and none without a checkpoint).
fn resume<B: AutodiffBackend, O: Optimizer<Net<B>, B>>(
    ckpt: &Path,
    device: &B::Device,
    model: &mut Net<B>,
    optim: &mut O,
) -> Result<(u32, Vec<HistoryRow>), ModelError> {
    let Ok(bytes) = std::fs::read(ckpt.join("state.json")) else {
        return Ok((0, Vec::new()));
    };
    let Ok(state) = serde_json::from_slice::<CheckpointState>(&bytes) else {
        return Ok((0, Vec::new()));
    };
    let rec = recorder();
    let model_rec: <Net<B> as Module<B>>::Record = rec
        .load(ckpt.join("model"), device)
        .map_err(ModelError::record("loading checkpoint"))?;
    *model = model.clone().load_record(model_rec);
    let optim_rec = rec
        .load(ckpt.join("optim"), device)
        .map_err(ModelError::record("loading optimizer checkpoint"))?;
    *optim = optim.clone().load_record(optim_rec);
    Ok((state.epochs_done, state.history))
}

/// The weight average `train.ema` asks for (none at 0): the checkpoint's when a killed run left
/// one, else started at the current weights.
fn resume_average<B: AutodiffBackend>(
    decay: f64,
    ckpt: &Path,
    device: &B::Device,
    model: &Net<B>,
    steps_done: u64,
) -> Result<Option<Ema<B::InnerBackend>>, ModelError> {
    if decay <= 0.0 {
        return Ok(None);
    }
    let current = model.valid();
    if !ckpt.join("ema.bin").exists() {
        return Ok(Some(Ema::new(decay, current, 0)));
    }
    let record = recorder()
        .load(ckpt.join("ema"), device)
        .map_err(ModelError::record(
            "loading the weight average's checkpoint",
        ))?;
    Ok(Some(Ema::new(
        decay,
        current.load_record(record),
        steps_done,
    )))
}

/// Save `net` as the stage's `model.bin`.
fn save_model<Bk: Backend>(net: Net<Bk>, out_dir: &Path) -> Result<(), ModelError> {
    net.with_sequential_ids()
        .save_file(out_dir.join("model"), &recorder())
        .map_err(ModelError::record("saving the model"))
}

/// The weights training produced: the average when `train.ema` is set, else the current ones.
fn trained_weights<B: AutodiffBackend>(
    model: &Net<B>,
    ema: &Option<Ema<B::InnerBackend>>,
) -> Net<B::InnerBackend> {
    match ema {
        Some(e) => e.average().clone(),
        None => model.valid(),
    }
}

/// RMSE of `model` on the validation crops (NaN when there are none).
fn validation_rmse<B: LayerKernels>(
    model: &Net<B>,
    device: &B::Device,
    crops: &Crops,
    valid_idx: &[usize],
) -> f64 {
    if valid_idx.is_empty() {
        return f64::NAN;
    }
    let preds = inference::predict_crops::<B>(model, device, crops, valid_idx, false);
    let truth: Vec<crate::labels::Labels> = valid_idx
        .iter()
        .map(|&i| crops.labels[i].expect("labelled"))
        .collect();
    crate::metrics::rmse(&preds, &truth)
}

/// What an optimisation step changes: the network, the optimiser's state, the weight average.
type Trainee<'a, B, O> = (
    &'a mut Net<B>,
    &'a mut O,
    &'a mut Option<Ema<<B as AutodiffBackend>::InnerBackend>>,
);

/// What every optimisation step of one epoch shares.
struct Step<'a, B: TrainingBackend> {
    device: &'a B::Device,
    weights: &'a Tensor<B, 2>,
    lr: f64,
    epoch: u32,
}

impl<B: TrainingBackend> Step<'_, B> {
    /// Train one epoch over `batches` (assembled and augmented by a producer thread while the
    /// current batch trains); the summed loss.
    fn epoch<O: Optimizer<Net<B>, B>>(
        &self,
        inp: &TrainInputs,
        batches: &[Vec<usize>],
        (model, optim, ema): Trainee<'_, B, O>,
        speed: &mut Throughput,
        history: &mut Vec<HistoryRow>,
    ) -> Result<f64, ModelError> {
        let (tx, rx) = mpsc::sync_channel::<data::Batch>(2);
        std::thread::scope(|scope| {
            scope.spawn(|| produce(inp, self.epoch, batches, tx));
            let mut epoch_loss = 0f64;
            for b in 0..batches.len() {
                let step_start = Instant::now();
                let batch = rx.recv().map_err(|_| ModelError::ProducerStopped)?;
                let n = batch.n;
                let loss = self.one(
                    inp,
                    batch,
                    b,
                    (&mut *model, &mut *optim, &mut *ema),
                    step_start,
                    speed,
                )?;
                epoch_loss += loss * n as f64;
                history.push(HistoryRow {
                    epoch: self.epoch + 1,
                    batch: Some(b as u32 + 1),
                    loss,
                    valid_rmse: None,
                    images_per_sec: None,
                });
                inp.progress.inc(1);
                inp.progress.message(&format!(
                    "loss {loss:.5}, {:.0} img/s",
                    speed.images_per_sec()
                ));
            }
            Ok(epoch_loss)
        })
    }

    /// One optimisation step on `batch` (number `b` of the epoch); its loss.
    fn one<O: Optimizer<Net<B>, B>>(
        &self,
        inp: &TrainInputs,
        batch: data::Batch,
        b: usize,
        (model, optim, ema): Trainee<'_, B, O>,
        step_start: Instant,
        speed: &mut Throughput,
    ) -> Result<f64, ModelError> {
        let size = inp.crops.size;
        let images = Tensor::<B, 4>::from_data(
            TensorData::new(batch.images, [batch.n, 3, size, size]),
            self.device,
        );
        let targets = Tensor::<B, 2>::from_data(
            TensorData::new(batch.labels, [batch.n, N_CLASSES]),
            self.device,
        );
        speed.wait += step_start.elapsed();
        let preds = model.forward(images);
        let diff = preds - targets;
        let loss = (diff.clone() * diff * self.weights.clone()).mean();
        let loss_value = loss.clone().into_scalar().elem::<f32>() as f64;
        if !loss_value.is_finite() {
            return Err(ModelError::Diverged {
                loss: loss_value,
                epoch: self.epoch + 1,
                batch: b + 1,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), model);
        *model = optim.step(self.lr, model.clone(), grads);
        if let Some(average) = ema {
            average.update(&model.valid());
        }
        speed.time += step_start.elapsed();
        speed.images += batch.n;
        Ok(loss_value)
    }
}

/// The producer: assemble and augment each batch of `epoch` in order and send it.
fn produce(
    inp: &TrainInputs,
    epoch: u32,
    batches: &[Vec<usize>],
    tx: mpsc::SyncSender<data::Batch>,
) {
    let crops = inp.crops;
    let mut position = 0u64;
    for indices in batches {
        let transforms: Vec<Transform> = (0..indices.len())
            .map(|k| {
                let mut rng = data::rng_for(inp.seed, epoch as u64, position + k as u64);
                Transform::random(&inp.params.augment, &mut rng)
            })
            .collect();
        position += indices.len() as u64;
        let batch = data::assemble(
            &|i| crops.pixels_of(i),
            crops.size,
            indices,
            &transforms,
            &|i| crops.labels[i].expect("labelled"),
        );
        if tx.send(batch).is_err() {
            return;
        }
    }
}

fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Net<B>, B>>(
    dir: &Path,
    (model, optim, ema): (&Net<B>, &O, &Option<Ema<B::InnerBackend>>),
    epochs_done: u32,
    history: &[HistoryRow],
) -> Result<(), ModelError> {
    // Write a complete checkpoint beside the old one, then swap it in.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ModelError::io("checkpoint", &tmp))?;
    let rec = recorder();
    rec.record(model.clone().into_record(), tmp.join("model"))
        .map_err(ModelError::record("checkpoint"))?;
    rec.record(optim.to_record(), tmp.join("optim"))
        .map_err(ModelError::record("checkpoint"))?;
    if let Some(average) = ema {
        rec.record(average.average().clone().into_record(), tmp.join("ema"))
            .map_err(ModelError::record("checkpoint"))?;
    }
    let state = CheckpointState {
        epochs_done,
        history: history.to_vec(),
    };
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_vec(&state).expect("serialise"),
    )
    .map_err(ModelError::record("checkpoint"))?;
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(ModelError::record("checkpoint"))?;
    }
    std::fs::rename(&tmp, dir).map_err(ModelError::record("checkpoint"))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::recipe::{Activation, Augment, ConvBlock, DenseLayer, OutputHead};
    use burn::backend::{Autodiff, Flex, flex::FlexDevice};

    /// A handful of tiny synthetic "galaxies": a bright blob whose size sets the labels.
    fn tiny_crops(n: usize, size: usize) -> Crops {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let r = 1.5 + (i % 4) as f32;
            for y in 0..size {
                for x in 0..size {
                    let d = ((x as f32 - 7.5).powi(2) + (y as f32 - 7.5).powi(2)).sqrt();
                    let v = if d < r { 220 } else { 5 };
                    pixels.extend([v, v, (v / 2) as u8]);
                }
            }
            let mut l = [0f32; N_CLASSES];
            l[0] = (i % 4) as f32 / 4.0 + 0.1;
            l[1] = 1.0 - l[0];
            labels.push(Some(l));
        }
        Crops {
            size,
            ids: (0..n as u64).collect(),
            splits: vec![Split::Train; n],
            pixels,
            labels,
        }
    }

    fn params(epochs: u32) -> TrainParams {
        let mut p: TrainParams = toml::from_str("").unwrap();
        p.epochs = epochs;
        p.batch_size = 8;
        p.learning_rate = 0.01;
        p.loss = Loss::Mse;
        p.augment = Augment {
            rotate: false,
            flip: false,
            zoom: 0.0,
            translate: 0.0,
            brightness: 0.0,
        };
        p
    }

    fn arch() -> Architecture {
        Architecture {
            input_size: 16,
            conv: vec![ConvBlock {
                filters: 8,
                kernel: 3,
                padding: 1,
                pool: 2,
                batch_norm: false,
            }],
            dense: vec![DenseLayer {
                units: 32,
                dropout: 0.0,
            }],
            activation: Activation::Relu,
            output: OutputHead::Sigmoid,
        }
    }

    fn run_training(p: &TrainParams, crops: &Crops, work: &Path, out: &Path) -> TrainReport {
        let progress = Progress::hidden();
        let inputs = TrainInputs {
            params: p,
            arch: &arch(),
            crops,
            seed: 7,
            work_dir: work,
            out_dir: out,
            progress: &progress,
        };
        train::<Autodiff<Flex>>(FlexDevice, &inputs).unwrap()
    }

    fn epoch_losses(r: &TrainReport) -> Vec<f64> {
        r.history
            .iter()
            .filter(|h| h.batch.is_none())
            .map(|h| h.loss)
            .collect()
    }

    #[test]
    fn a_small_network_overfits_a_handful_of_galaxies() {
        let crops = tiny_crops(16, 16);
        let (work, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let report = run_training(&params(40), &crops, work.path(), out.path());
        let losses = epoch_losses(&report);
        assert!(
            losses[39] < losses[0] / 10.0,
            "loss fell by a large factor: {} → {}",
            losses[0],
            losses[39]
        );
        assert!(out.path().join("model.bin").exists());
        std::fs::write(
            out.path().join("model.json"),
            serde_json::to_vec(&arch()).unwrap(),
        )
        .unwrap();
        let (net, _) =
            super::super::inference::load_model::<Flex>(out.path(), &FlexDevice).unwrap();
        let preds =
            super::super::inference::predict_crops(&net, &FlexDevice, &crops, &[0, 1, 2, 3], false);
        // The saved model learned the blob-size → label relation (monotonic, close to the truth).
        for (i, p) in preds.iter().enumerate() {
            let truth = crops.labels[i].unwrap();
            assert!(
                (p[0] - truth[0]).abs() < 0.15,
                "galaxy {i}: predicted {} for {}",
                p[0],
                truth[0]
            );
        }
        assert!(preds.windows(2).all(|w| w[0][0] < w[1][0]), "{preds:?}");
    }

    #[test]
    fn training_is_deterministic_and_resumes_exactly() {
        let crops = tiny_crops(16, 16);
        let p = params(4);
        let (w1, o1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let full = run_training(&p, &crops, w1.path(), o1.path());
        let (w2, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let again = run_training(&p, &crops, w2.path(), o2.path());
        let losses = |r: &TrainReport| {
            r.history
                .iter()
                .map(|h| (h.epoch, h.batch, h.loss))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            losses(&full),
            losses(&again),
            "same config, same loss history"
        );
        // Interrupted after 2 epochs (what a kill leaves: a checkpoint), then resumed.
        let (w3, o3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut two = p.clone();
        two.epochs = 2;
        run_training(&two, &crops, w3.path(), o3.path());
        let resumed = run_training(&p, &crops, w3.path(), o3.path());
        assert_eq!(resumed.resumed_from_epoch, 2);
        assert_eq!(
            losses(&resumed),
            losses(&full),
            "resume equals an uninterrupted run"
        );
        // The final weights agree too (compared by their predictions: the files also hold
        // parameter ids, which differ between a fresh and a restored model).
        let predict = |dir: &Path| {
            std::fs::write(dir.join("model.json"), serde_json::to_vec(&arch()).unwrap()).unwrap();
            let (net, _) = super::super::inference::load_model::<Flex>(dir, &FlexDevice).unwrap();
            super::super::inference::predict_crops(&net, &FlexDevice, &crops, &[0, 5, 10], false)
        };
        assert_eq!(predict(o3.path()), predict(o1.path()));
    }

    #[test]
    fn weight_averaging_is_deterministic_resumes_exactly_and_changes_the_model() {
        let crops = tiny_crops(16, 16);
        let mut p = params(4);
        p.ema = 0.9;
        let predict = |dir: &Path| {
            std::fs::write(dir.join("model.json"), serde_json::to_vec(&arch()).unwrap()).unwrap();
            let (net, _) = super::super::inference::load_model::<Flex>(dir, &FlexDevice).unwrap();
            super::super::inference::predict_crops(&net, &FlexDevice, &crops, &[0, 5, 10], false)
        };
        let (w1, o1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        run_training(&p, &crops, w1.path(), o1.path());
        let (w2, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        run_training(&p, &crops, w2.path(), o2.path());
        let bytes = |dir: &Path| std::fs::read(dir.join("model.bin")).unwrap();
        assert!(
            bytes(o1.path()) == bytes(o2.path()),
            "same config, same bytes"
        );

        // Killed after 2 epochs (the checkpoint holds the average too), then resumed.
        let (w3, o3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut two = p.clone();
        two.epochs = 2;
        run_training(&two, &crops, w3.path(), o3.path());
        assert!(w3.path().join("checkpoint/ema.bin").exists());
        let resumed = run_training(&p, &crops, w3.path(), o3.path());
        assert_eq!(resumed.resumed_from_epoch, 2);
        assert_eq!(predict(o3.path()), predict(o1.path()));

        // The saved model is the average, not the last weights.
        let (w4, o4) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        p.ema = 0.0;
        run_training(&p, &crops, w4.path(), o4.path());
        assert_ne!(predict(o4.path()), predict(o1.path()));
    }
}
