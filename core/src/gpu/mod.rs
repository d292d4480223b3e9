//! The engine's GPU path through wgpu compute shaders: any vendor (Vulkan, Metal, DX12), and
//! Mesa's software Vulkan (lavapipe) where there is no GPU, so the path is tested in CI.
//!
//! - [`adapters`] lists every adapter wgpu finds (`arpg info --devices`); `--device wgpu:N`
//!   indexes this list, software adapters included.
//! - [`Gpu`] is a device and queue: opened here ([`Gpu::open`]) or shared with the desktop
//!   app's renderer ([`Gpu::shared`]). Device loss sets a flag every later call checks.
//! - [`vq_decoder::VqDecoder`]: the tokenizer's decoder as compute shaders (`shaders/vq_*.wgsl`,
//!   one file per kernel family; [`SHADERS`] lists them for validation).
//!
//! Faults (no adapter, device lost, out of memory, limits too small) are [`Error::Gpu`]; the
//! callers fall back to the CPU with a message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

pub mod arpg;
pub mod engine;
pub mod vq_decoder;
mod vq_plan;

/// Every compute shader of the engine, `(name, source)`, as its owning module builds it.
pub const SHADERS: [(&str, &str); 11] = [
    (
        "arpg_matmul",
        concat!(
            include_str!("../../../shaders/arpg_matmul.wgsl"),
            include_str!("../../../shaders/arpg_weights.wgsl"),
            include_str!("../../../shaders/arpg_half.wgsl")
        ),
    ),
    (
        "arpg_embed",
        concat!(
            include_str!("../../../shaders/arpg_embed.wgsl"),
            include_str!("../../../shaders/arpg_weights.wgsl"),
            include_str!("../../../shaders/arpg_half.wgsl")
        ),
    ),
    (
        "arpg_rms_norm",
        include_str!("../../../shaders/arpg_rms_norm.wgsl"),
    ),
    (
        "arpg_swiglu",
        include_str!("../../../shaders/arpg_swiglu.wgsl"),
    ),
    (
        "arpg_rope",
        concat!(
            include_str!("../../../shaders/arpg_rope.wgsl"),
            include_str!("../../../shaders/arpg_kv.wgsl"),
            include_str!("../../../shaders/arpg_half.wgsl")
        ),
    ),
    (
        "arpg_attention",
        concat!(
            include_str!("../../../shaders/arpg_attention.wgsl"),
            include_str!("../../../shaders/arpg_kv.wgsl"),
            include_str!("../../../shaders/arpg_half.wgsl")
        ),
    ),
    ("vq_conv", include_str!("../../../shaders/vq_conv.wgsl")),
    (
        "vq_group_norm",
        include_str!("../../../shaders/vq_group_norm.wgsl"),
    ),
    (
        "vq_attention",
        include_str!("../../../shaders/vq_attention.wgsl"),
    ),
    ("vq_lookup", include_str!("../../../shaders/vq_lookup.wgsl")),
    (
        "vq_to_texture",
        include_str!("../../../shaders/vq_to_texture.wgsl"),
    ),
];

/// The error of `wgpu:index` on a machine with `count` adapters (at least one).
fn no_such_adapter(index: usize, count: usize) -> String {
    let have = if count == 1 {
        "wgpu:0".to_string()
    } else {
        format!("wgpu:0 to wgpu:{}", count - 1)
    };
    format!("there is no adapter wgpu:{index}: this machine has {have} (see `arpg info --devices`)")
}

/// What `arpg info --devices` shows of one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    /// The `N` of `--device wgpu:N`.
    pub index: usize,
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`, `Gl`.
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (a software renderer such as lavapipe), ...
    pub device_type: String,
    /// A software renderer: correct, but slower than the CPU path.
    pub software: bool,
}

fn instance() -> wgpu::Instance {
    // `WGPU_BACKEND` (e.g. `vulkan`) narrows the backends, as in the desktop app.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn enumerate() -> Vec<wgpu::Adapter> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

fn summary(index: usize, info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// What [`adapters`] says of an adapter opened elsewhere (the desktop app's renderer): its index
/// is the first listed adapter of the same name and backend (0 if none is).
pub fn describe(info: &wgpu::AdapterInfo) -> AdapterSummary {
    let index = enumerate()
        .iter()
        .position(|a| {
            let i = a.get_info();
            i.name == info.name && i.backend == info.backend
        })
        .unwrap_or(0);
    summary(index, info)
}

/// Every adapter wgpu finds, in the order `--device wgpu:N` indexes.
pub fn adapters() -> Vec<AdapterSummary> {
    enumerate()
        .iter()
        .enumerate()
        .map(|(i, a)| summary(i, &a.get_info()))
        .collect()
}

/// The first hardware adapter's index, if any (what the app picks by default: never a software
/// renderer, which is slower than the CPU path).
pub fn default_hardware() -> Option<usize> {
    adapters()
        .into_iter()
        .find(|a| !a.software)
        .map(|a| a.index)
}

/// A wgpu device and queue the engine computes on.
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    info: AdapterSummary,
    lost: Arc<AtomicBool>,
    /// Which device this is: wgpu's handles compare equal across instances, so clones of one
    /// `Gpu` share this number and nothing else does.
    id: u64,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.info).finish()
    }
}

impl Gpu {
    /// Opens adapter `index` of [`adapters`] with its own limits (the largest storage buffers
    /// it allows).
    pub fn open(index: usize) -> Result<Self> {
        let mut all = enumerate();
        if all.is_empty() {
            return Err(Error::Gpu(
                "wgpu found no adapter (no Vulkan, Metal or DX12 driver; on Linux install \
                 mesa-vulkan-drivers for a software one)"
                    .into(),
            ));
        }
        if index >= all.len() {
            return Err(Error::InvalidRequest(no_such_adapter(index, all.len())));
        }
        let adapter = all.swap_remove(index);
        let info = summary(index, &adapter.get_info());
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("arpg-engine"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| Error::Gpu(format!("{}: cannot open a device: {e}", info.name)))?;
        Ok(Self::shared(device, queue, info))
    }

    /// Opens the adapter `wgpu[:N]` names: `index`, or without one the first hardware adapter,
    /// else the first adapter.
    pub fn open_named(index: Option<usize>) -> Result<Self> {
        Self::open(index.or_else(default_hardware).unwrap_or(0))
    }

    /// A device and queue someone else opened (the desktop app's renderer).
    pub fn shared(device: wgpu::Device, queue: wgpu::Queue, info: AdapterSummary) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| flag.store(true, Ordering::SeqCst));
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            device,
            queue,
            info,
            lost,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether `other` is this device (a clone of this `Gpu`).
    pub fn same_device(&self, other: &Gpu) -> bool {
        self.id == other.id
    }

    /// The adapter this device belongs to.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.info
    }

    /// An error when the device was lost (driver reset, GPU removed).
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Gpu(format!(
                "{}: the device was lost",
                self.info.name
            )));
        }
        Ok(())
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they caught
    /// into an error.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        self.check()?;
        if let Some(e) = oom {
            return Err(Error::Gpu(format!(
                "{}: out of memory while {what}: {e}",
                self.info.name
            )));
        }
        if let Some(e) = invalid {
            return Err(Error::Gpu(format!("{}: {what}: {e}", self.info.name)));
        }
        out
    }

    /// Waits until the queue has run everything submitted.
    pub(crate) fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("{}: {e}", self.info.name)))?;
        self.check()
    }
}
