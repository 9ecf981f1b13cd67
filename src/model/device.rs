//! Backend and device selection: CUDA when built with `--features cuda` and a driver is present,
//! otherwise Burn's pure-Rust CPU backend (`Flex`). The driver is probed before Burn touches it,
//! because creating a CUDA device without one panics inside cudarc.

use crate::model::recipe::Device;

/// The backend a run actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
}

impl Resolved {
    pub fn name(self) -> &'static str {
        match self {
            Resolved::Cpu => "cpu (burn flex)",
            #[cfg(feature = "cuda")]
            Resolved::Cuda => "cuda",
        }
    }
}

/// Whether the CUDA driver library can be loaded.
#[cfg(feature = "cuda")]
pub fn cuda_driver_present() -> bool {
    // SAFETY: loading the driver library runs its initialisers, as any CUDA program does.
    unsafe { libloading::Library::new("libcuda.so.1") }.is_ok()
}

/// Resolve the requested device; the `String` is a notice for the user when `auto` fell back.
pub fn resolve(requested: Device) -> Result<(Resolved, Option<String>), super::ModelError> {
    match requested {
        Device::Cpu => Ok((Resolved::Cpu, None)),
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            if cuda_driver_present() {
                Ok((Resolved::Cuda, None))
            } else {
                Err(super::ModelError::Device(
                    "device = \"cuda\" but the CUDA driver (libcuda.so.1) cannot be loaded on this machine; use device = \"auto\" or \"cpu\"",
                ))
            }
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(super::ModelError::Device(
            "device = \"cuda\" but this galaxy-pipe was built without CUDA support: build it with `cargo build --release --features cuda`",
        )),
        Device::Auto => {
            #[cfg(feature = "cuda")]
            {
                if cuda_driver_present() {
                    return Ok((Resolved::Cuda, None));
                }
                Ok((
                    Resolved::Cpu,
                    Some("no CUDA driver found: training on the CPU".into()),
                ))
            }
            #[cfg(not(feature = "cuda"))]
            Ok((Resolved::Cpu, None))
        }
    }
}
