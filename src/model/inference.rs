//! Predictions from a trained network: batched, on any backend, with optional test-time
//! augmentation (the mean over the 8 symmetries of the square).

use std::path::Path;

use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::ModelError;
use super::data::{self, Transform};
use super::kernels::LayerKernels;
use super::net::{Architecture, Net};
use crate::artifacts::Crops;
use crate::labels::N_CLASSES;

const BATCH: usize = 256;

/// Rebuild the network stored by `train` in `dir` (`model.json` + `model.bin`).
pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Net<B>, Architecture), ModelError> {
    let arch = super::ensemble::architecture(dir)?;
    // Parameters are initialised lazily (possibly while loading), drawing from the RNG.
    let _rng = super::rng::rng_guard();
    let net = arch.init::<B>(device)?;
    let net = net
        .load_file(
            dir.join("model"),
            &BinFileRecorder::<FullPrecisionSettings>::new(),
            device,
        )
        .map_err(ModelError::record(format!(
            "loading {}",
            dir.join("model.bin").display()
        )))?;
    Ok((net, arch))
}

/// Predict the crops at `indices` (in order).
pub fn predict_crops<B: LayerKernels>(
    model: &Net<B>,
    device: &B::Device,
    crops: &Crops,
    indices: &[usize],
    tta: bool,
) -> Vec<crate::labels::Labels> {
    let size = crops.size;
    let variants = if tta { 8 } else { 1 };
    let mut sums = vec![[0f32; N_CLASSES]; indices.len()];
    for k in 0..variants {
        let transformed: Vec<Vec<u8>> = if k == 0 {
            Vec::new()
        } else {
            indices
                .iter()
                .map(|&i| data::dihedral(crops.pixels_of(i), size, k))
                .collect()
        };
        for (chunk_no, chunk) in indices.chunks(BATCH).enumerate() {
            let local: Vec<usize> = (chunk_no * BATCH..chunk_no * BATCH + chunk.len()).collect();
            let identity = vec![Transform::IDENTITY; chunk.len()];
            let batch = if k == 0 {
                data::assemble(&|i| crops.pixels_of(i), size, chunk, &identity, &|_| {
                    [0.0; N_CLASSES]
                })
            } else {
                data::assemble(&|j| &transformed[j], size, &local, &identity, &|_| {
                    [0.0; N_CLASSES]
                })
            };
            let images = Tensor::<B, 4>::from_data(
                TensorData::new(batch.images, [batch.n, 3, size, size]),
                device,
            );
            let out = model.forward(images).into_data();
            let values: Vec<f32> = out.to_vec().expect("f32 outputs");
            for (r, row) in values.chunks_exact(N_CLASSES).enumerate() {
                for c in 0..N_CLASSES {
                    sums[local[r]][c] += row[c];
                }
            }
        }
    }
    sums.iter()
        .map(|s| s.map(|v| v / variants as f32))
        .collect()
}

/// Predict `indices` with the model stored in `model_dir` (one network, or the mean of an
/// ensemble's), on `device`.
pub fn predict_on_device(
    model_dir: &Path,
    device: super::Resolved,
    crops: &Crops,
    indices: &[usize],
    tta: bool,
) -> Result<Vec<crate::labels::Labels>, ModelError> {
    let members = predict_members_on_device(model_dir, device, crops, indices, tta)?;
    let predictions: Vec<_> = members.into_iter().map(|(_, p)| p).collect();
    Ok(super::ensemble::mean(&predictions))
}

/// Each network's predictions of `indices`, by name (one `model`, or an ensemble's members).
pub fn predict_members_on_device(
    model_dir: &Path,
    device: super::Resolved,
    crops: &Crops,
    indices: &[usize],
    tta: bool,
) -> Result<Vec<(String, Vec<crate::labels::Labels>)>, ModelError> {
    let mut out = Vec::new();
    for network in super::ensemble::members(model_dir)? {
        let predictions = match device {
            super::Resolved::Cpu => predict_with::<burn::backend::Flex>(
                &network.dir,
                &burn::backend::flex::FlexDevice,
                crops,
                indices,
                tta,
            )?,
            #[cfg(feature = "cuda")]
            super::Resolved::Cuda => predict_with::<burn::backend::Cuda>(
                &network.dir,
                &Default::default(),
                crops,
                indices,
                tta,
            )?,
            #[cfg(feature = "wgpu")]
            super::Resolved::Wgpu(adapter) => predict_with::<burn::backend::Wgpu>(
                &network.dir,
                &adapter.device,
                crops,
                indices,
                tta,
            )?,
        };
        out.push((network.name, predictions));
    }
    Ok(out)
}

/// Load the network in `dir` on `device` and predict `indices` with it.
fn predict_with<B: LayerKernels>(
    dir: &Path,
    device: &B::Device,
    crops: &Crops,
    indices: &[usize],
    tta: bool,
) -> Result<Vec<crate::labels::Labels>, ModelError> {
    let (net, arch) = load_model::<B>(dir, device)?;
    if arch.input_size != crops.size {
        return Err(ModelError::Record {
            what: format!("applying {}", dir.join("model.json").display()),
            message: format!(
                "the network reads {}-pixel crops but these crops are {} pixels; train it on the same `crop` stage",
                arch.input_size, crops.size
            ),
        });
    }
    Ok(predict_crops(&net, device, crops, indices, tta))
}
