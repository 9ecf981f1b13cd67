//! Backend and device selection. `auto` prefers CUDA (built with `--features cuda` and a driver
//! present), then a wgpu GPU (built with `--features wgpu`: Metal, Vulkan or DX12; software
//! adapters such as Mesa's lavapipe are never picked by `auto`), then this crate's CPU kernels on
//! Burn's `Flex`. Drivers are probed before Burn touches them, because creating a device without
//! one panics inside cudarc and CubeCL. Which device ran is a note in the run record, never part
//! of a cache key.

use crate::model::recipe::Device;

#[cfg(feature = "wgpu")]
pub mod wgpu;

/// The backend a run actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
    /// The adapter chosen by [`wgpu::adapter`], set up for CubeCL.
    #[cfg(feature = "wgpu")]
    Wgpu(&'static wgpu::Adapter),
}

impl Resolved {
    pub fn name(self) -> String {
        match self {
            Resolved::Cpu => "cpu (burn flex)".into(),
            #[cfg(feature = "cuda")]
            Resolved::Cuda => "cuda".into(),
            #[cfg(feature = "wgpu")]
            Resolved::Wgpu(adapter) => format!("wgpu ({})", adapter.describe()),
        }
    }
}

/// One device kind as this build and machine have it: `galaxy-pipe devices`.
#[derive(Debug, serde::Serialize)]
pub struct Availability {
    pub device: &'static str,
    pub usable: bool,
    pub detail: String,
}

/// Every device kind: built in or not, and what was found (nothing is set up).
pub fn survey() -> Vec<Availability> {
    let cpu = Availability {
        device: "cpu",
        usable: true,
        detail: format!(
            "this crate's kernels on Burn's flex, {} threads",
            rayon::current_num_threads()
        ),
    };
    vec![cpu, cuda_availability(), wgpu_availability()]
}

fn cuda_availability() -> Availability {
    let (usable, detail) = if !cfg!(feature = "cuda") {
        (false, "not built in (`--features cuda`)".to_string())
    } else if cuda_driver_present() {
        (true, "driver libcuda.so.1 found".into())
    } else {
        (
            false,
            "built in, but no CUDA driver (libcuda.so.1) on this machine".into(),
        )
    };
    Availability {
        device: "cuda",
        usable,
        detail,
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_availability() -> Availability {
    let found = wgpu::listed();
    let usable = !found.is_empty();
    let detail = if usable {
        found.join("; ")
    } else {
        "built in, but wgpu finds no adapter (no Vulkan, Metal or DX12 driver)".into()
    };
    Availability {
        device: "wgpu",
        usable,
        detail,
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_availability() -> Availability {
    Availability {
        device: "wgpu",
        usable: false,
        detail: "not built in (`--features wgpu`)".into(),
    }
}

/// Whether the CUDA driver library can be loaded (never, in a build without CUDA).
pub fn cuda_driver_present() -> bool {
    #[cfg(feature = "cuda")]
    // SAFETY: loading the driver library runs its initialisers, as any CUDA program does.
    return unsafe { libloading::Library::new("libcuda.so.1") }.is_ok();
    #[cfg(not(feature = "cuda"))]
    false
}

/// Resolve the requested device and say which it is (and any fallback) in `notes`, which the
/// run record keeps.
pub fn resolve_noted(
    requested: Device,
    notes: &mut Vec<String>,
) -> Result<Resolved, super::ModelError> {
    let (resolved, notice) = resolve(requested)?;
    notes.extend(notice);
    notes.push(format!("device: {}", resolved.name()));
    Ok(resolved)
}

/// Resolve the requested device; the `String` is a notice for the user when `auto` fell back
/// or the device is a slow one.
pub fn resolve(requested: Device) -> Result<(Resolved, Option<String>), super::ModelError> {
    match requested {
        Device::Cpu => Ok((Resolved::Cpu, None)),
        Device::Cuda => cuda(),
        Device::Wgpu => wgpu_any(),
        Device::Auto => Ok(auto()),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<(Resolved, Option<String>), super::ModelError> {
    if cuda_driver_present() {
        Ok((Resolved::Cuda, None))
    } else {
        Err(super::ModelError::Device(
            "device = \"cuda\" but the CUDA driver (libcuda.so.1) cannot be loaded on this machine; use device = \"auto\" or \"cpu\"".into(),
        ))
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<(Resolved, Option<String>), super::ModelError> {
    Err(super::ModelError::Device(
        "device = \"cuda\" but this galaxy-pipe was built without CUDA support: build it with `cargo build --release --features cuda`".into(),
    ))
}

/// `device = "wgpu"`: any adapter wgpu finds, a software one included (said, as it is slow).
#[cfg(feature = "wgpu")]
fn wgpu_any() -> Result<(Resolved, Option<String>), super::ModelError> {
    let adapter = wgpu::adapter(wgpu::Pick::Any).map_err(super::ModelError::Device)?;
    let notice = adapter.is_software().then(|| {
        format!(
            "wgpu found only a software adapter ({}): expect it to be far slower than device = \"cpu\"",
            adapter.describe()
        )
    });
    Ok((Resolved::Wgpu(adapter), notice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_any() -> Result<(Resolved, Option<String>), super::ModelError> {
    Err(super::ModelError::Device(
        "device = \"wgpu\" but this galaxy-pipe was built without wgpu support: build it with `cargo build --release --features wgpu`".into(),
    ))
}

/// `device = "auto"`: CUDA, then a wgpu GPU, then the CPU; each fallback said.
#[allow(unused_mut)]
fn auto() -> (Resolved, Option<String>) {
    let mut passed_over: Vec<String> = Vec::new();
    #[cfg(feature = "cuda")]
    {
        if cuda_driver_present() {
            return (Resolved::Cuda, None);
        }
        passed_over.push("no CUDA driver found".into());
    }
    #[cfg(feature = "wgpu")]
    {
        match wgpu::adapter(wgpu::Pick::Hardware) {
            Ok(adapter) => {
                let notice = (!passed_over.is_empty())
                    .then(|| format!("{}: using wgpu", passed_over.join("; ")));
                return (Resolved::Wgpu(adapter), notice);
            }
            Err(why) => passed_over.push(why),
        }
    }
    let notice =
        (!passed_over.is_empty()).then(|| format!("{}: using the CPU", passed_over.join("; ")));
    (Resolved::Cpu, notice)
}
