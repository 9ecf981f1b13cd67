//! The neural network: Burn modules generic over the backend, the decision-tree output layer,
//! batches and augmentation, the training loop, inference, and device selection.

pub mod data;
pub mod device;
pub mod ema;
pub mod ensemble;
pub mod error;
pub mod inference;
pub mod kernels;
pub mod net;
pub mod recipe;
pub mod rng;
pub mod training;

pub use device::Resolved;
pub use error::ModelError;
pub use net::{Architecture, Net};
