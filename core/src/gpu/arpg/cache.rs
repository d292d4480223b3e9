//! The transformer's KV cache on the GPU.

use super::step::Scratch;
use crate::error::Result;
use crate::gpu::Gpu;

/// The KV cache of a [`GpuArpg`] (mirrors [`crate::model::KvCache`]): keys and values of every
/// self-decoder layer and the shared cross K/V, each `(B, H, capacity, head_dim)` on the GPU,
/// in the weights' format.
/// Not `Clone`: use [`GpuCache::deep_clone`].
pub struct GpuCache {
    pub(super) gpu: Gpu,
    pub(super) self_kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    pub(super) cross_kv: (wgpu::Buffer, wgpu::Buffer),
    pub(super) batch: usize,
    pub(super) capacity: usize,
    pub(super) len: usize,
    pub(super) scratch: Option<Scratch>,
}

impl std::fmt::Debug for GpuCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuCache")
            .field("batch", &self.batch)
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl GpuCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// An independent copy (forking a generation): new buffers, filled on the GPU.
    pub fn deep_clone(&self) -> Result<Self> {
        self.gpu.scoped("copying the KV cache", || {
            let device = &self.gpu.device;
            let mut encoder = device.create_command_encoder(&Default::default());
            let mut copy = |b: &wgpu::Buffer| {
                let c = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("arpg kv cache"),
                    size: b.size(),
                    usage: b.usage(),
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(b, 0, &c, 0, b.size());
                c
            };
            let self_kv = self
                .self_kv
                .iter()
                .map(|(k, v)| (copy(k), copy(v)))
                .collect();
            let cross_kv = (copy(&self.cross_kv.0), copy(&self.cross_kv.1));
            self.gpu.queue.submit([encoder.finish()]);
            Ok(Self {
                gpu: self.gpu.clone(),
                self_kv,
                cross_kv,
                batch: self.batch,
                capacity: self.capacity,
                len: self.len,
                scratch: None,
            })
        })
    }
}
