//! What can go wrong building, training, loading or running a network.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The declared conv stack does not fit the input size.
    #[error("conv block {block} (kernel {kernel}) leaves no pixels of a {input}-pixel input")]
    ConvTooLarge {
        block: usize,
        kernel: u32,
        input: usize,
    },
    #[error("pooling after conv block {block} leaves no pixels")]
    PoolTooLarge { block: usize },
    /// The requested device cannot be used here.
    #[error("{0}")]
    Device(String),
    #[error("no labelled training crops")]
    NoTrainingData,
    #[error("loss became {loss} in epoch {epoch} batch {batch}; lower learning_rate")]
    Diverged { loss: f64, epoch: u32, batch: usize },
    #[error("the batch producer stopped")]
    ProducerStopped,
    /// A file of the model or its checkpoint could not be read or written.
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    /// Burn's recorder or the architecture JSON failed (their message as Burn gives it).
    #[error("{what}: {message}")]
    Record { what: String, message: String },
}

impl ModelError {
    /// For `map_err`: an I/O error while `what`-ing `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let at = crate::io_error::IoError::at(what, path);
        move |source| ModelError::Io(at(source))
    }

    /// For `map_err`: a recorder (or JSON) error while doing `what`.
    pub fn record<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| ModelError::Record {
            what,
            message: e.to_string(),
        }
    }
}
