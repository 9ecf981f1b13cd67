//! The wgpu adapter a run trains on: found once per process (`WGPU_BACKEND` narrows the graphics
//! APIs looked at, `WGPU_ADAPTER_NAME` picks an adapter by a part of its name), then set up for
//! CubeCL with the graphics API it belongs to. Hardware adapters come before software ones
//! (Mesa's lavapipe, a CPU); `auto` never takes a software adapter.

use std::sync::OnceLock;

use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics, init_setup};
use wgpu::{Backend, Backends, DeviceType};

/// One adapter wgpu reports, and the CubeCL device naming it.
#[derive(Debug)]
pub struct Adapter {
    pub device: WgpuDevice,
    name: String,
    backend: Backend,
    kind: DeviceType,
    setup: OnceLock<Result<(), String>>,
}

impl PartialEq for Adapter {
    fn eq(&self, other: &Self) -> bool {
        self.device == other.device && self.backend == other.backend
    }
}
impl Eq for Adapter {}

/// Which adapters a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// `device = "wgpu"`: a software adapter too.
    Any,
    /// `device = "auto"`: GPUs only.
    Hardware,
}

impl Adapter {
    /// `llvmpipe (LLVM 15.0.6, 256 bits), Vulkan, software`
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            DeviceType::DiscreteGpu => "discrete GPU",
            DeviceType::IntegratedGpu => "integrated GPU",
            DeviceType::VirtualGpu => "virtual GPU",
            DeviceType::Cpu => "software",
            DeviceType::Other => "other",
        };
        format!(
            "{}, {}, {kind}",
            crate::untrusted::escape(&self.name),
            self.backend
        )
    }

    pub fn is_software(&self) -> bool {
        self.kind == DeviceType::Cpu
    }

    /// Create the CubeCL runtime for this adapter (once per process).
    fn set_up(&self) -> Result<(), String> {
        self.setup
            .get_or_init(|| {
                let options = RuntimeOptions::default();
                let device = &self.device;
                std::panic::catch_unwind(|| match self.backend {
                    Backend::Metal => drop(init_setup::<graphics::Metal>(device, options)),
                    Backend::Dx12 => drop(init_setup::<graphics::Dx12>(device, options)),
                    Backend::Gl => drop(init_setup::<graphics::OpenGl>(device, options)),
                    _ => drop(init_setup::<graphics::Vulkan>(device, options)),
                })
                .map_err(|panic| {
                    format!(
                        "wgpu could not open {}: {}",
                        self.describe(),
                        panic_text(&panic)
                    )
                })
            })
            .clone()
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "it panicked".into())
}

/// The best adapter `pick` allows, set up and ready; the error says what was found instead.
pub fn adapter(pick: Pick) -> Result<&'static Adapter, String> {
    let adapters = adapters();
    let wanted = std::env::var("WGPU_ADAPTER_NAME")
        .ok()
        .map(|n| n.to_lowercase());
    let chosen = adapters
        .iter()
        .filter(|a| pick == Pick::Any || !a.is_software())
        .find(|a| {
            wanted
                .as_ref()
                .is_none_or(|w| a.name.to_lowercase().contains(w))
        });
    let Some(chosen) = chosen else {
        return Err(nothing_found(pick, wanted.as_deref()));
    };
    chosen.set_up()?;
    Ok(chosen)
}

fn nothing_found(pick: Pick, wanted: Option<&str>) -> String {
    let seen = listed();
    let what = match (pick, wanted) {
        (_, Some(name)) => format!("no wgpu adapter named like WGPU_ADAPTER_NAME={name:?}"),
        (Pick::Hardware, None) => "no GPU found by wgpu".into(),
        (Pick::Any, None) => "wgpu found no adapter (no Vulkan, Metal or DX12 driver)".into(),
    };
    if seen.is_empty() {
        what
    } else {
        format!("{what} (found: {})", seen.join("; "))
    }
}

/// Every adapter found, described, best first.
pub fn listed() -> Vec<String> {
    adapters().iter().map(Adapter::describe).collect()
}

/// Every adapter of the graphics APIs in `WGPU_BACKEND` (default: Vulkan, Metal, DX12), best first.
fn adapters() -> &'static [Adapter] {
    static ADAPTERS: OnceLock<Vec<Adapter>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let backends = Backends::from_env().unwrap_or(Backends::PRIMARY);
        let mut found: Vec<Adapter> = Vec::new();
        for backend in [Backend::Vulkan, Backend::Metal, Backend::Dx12, Backend::Gl] {
            if backends.contains(Backends::from(backend)) {
                found.extend(adapters_of(backend));
            }
        }
        found.sort_by_key(|a| preference(a.kind));
        found
    })
}

/// One graphics API's adapters, numbered per type as CubeCL counts them.
fn adapters_of(backend: Backend) -> Vec<Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let listed = futures::executor::block_on(instance.enumerate_adapters(backend.into()));
    let mut seen_of_type: Vec<DeviceType> = Vec::new();
    let mut out = Vec::new();
    for adapter in listed {
        let info = adapter.get_info();
        let index = seen_of_type
            .iter()
            .filter(|t| **t == info.device_type)
            .count();
        seen_of_type.push(info.device_type);
        let device = match info.device_type {
            DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(index),
            DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(index),
            DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(index),
            DeviceType::Cpu => WgpuDevice::Cpu,
            // CubeCL reaches "other" adapters only as its fallback.
            DeviceType::Other => continue,
        };
        out.push(Adapter {
            device,
            name: info.name,
            backend: info.backend,
            kind: info.device_type,
            setup: OnceLock::new(),
        });
    }
    out
}

fn preference(kind: DeviceType) -> u8 {
    match kind {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Other => 3,
        DeviceType::Cpu => 4,
    }
}
