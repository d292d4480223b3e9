//! The transformer on a GPU as the run sees it ([`crate::backend::Transformer::Wgpu`]): the
//! [`GpuArpg`] and the candle model it was uploaded from. A GPU fault (device lost, out of
//! memory) fails the call that met it with a message and sends every later cache and call to
//! the CPU model, so the next run works; [`TransformerOnGpu::take_fault`] says why, once.

use std::sync::Mutex;

use super::arpg::GpuArpg;
use super::Gpu;
use crate::error::{Error, Result};
use crate::model::Arpg;

#[derive(Debug, Default)]
struct Health {
    down: bool,
    fault: Option<String>,
}

/// See the module docs.
#[derive(Debug)]
pub struct TransformerOnGpu {
    cpu: Arpg,
    gpu: GpuArpg,
    health: Mutex<Health>,
}

impl TransformerOnGpu {
    /// Uploads `cpu` to `gpu`. Errors as [`GpuArpg::new`].
    pub fn new(cpu: Arpg, gpu: &Gpu) -> Result<Self> {
        let on = GpuArpg::new(&cpu, gpu)?;
        Ok(Self {
            cpu,
            gpu: on,
            health: Mutex::new(Health::default()),
        })
    }

    /// The candle model (on the CPU).
    pub fn cpu(&self) -> &Arpg {
        &self.cpu
    }

    pub fn gpu(&self) -> &GpuArpg {
        &self.gpu
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a fault sent the transformer to the CPU.
    pub fn is_down(&self) -> bool {
        self.health().down
    }

    /// Why the GPU stopped, once.
    pub fn take_fault(&self) -> Option<String> {
        self.health().fault.take()
    }

    /// Where the transformer runs, for status lines.
    pub fn device(&self) -> String {
        if self.is_down() {
            "CPU (after a GPU fault)".into()
        } else {
            self.gpu.gpu().adapter().name.clone()
        }
    }

    /// Runs `f` on the GPU model. A GPU fault marks the GPU down and is returned with what
    /// happens next; other errors pass through.
    pub fn with<T>(&self, f: impl FnOnce(&GpuArpg) -> Result<T>) -> Result<T> {
        match f(&self.gpu) {
            Err(Error::Gpu(msg)) => {
                let msg = format!("{msg}; the transformer runs on the CPU from the next run on");
                let mut h = self.health();
                h.down = true;
                h.fault = Some(msg.clone());
                Err(Error::Gpu(msg))
            }
            other => other,
        }
    }
}
