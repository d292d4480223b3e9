//! The preview palette: one decoded tile per code, what the canvas shows of each decided cell
//! while a run is under way. Small codebooks (up to [`IN_CONTEXT_PALETTE_CODES`], decoded in
//! context: about a second) are computed when the model loads. Larger ones (VQ-16's 16384
//! codes: minutes on a CPU) are computed on a thread of their own, only while the worker is idle
//! (a run never waits for it), with progress reported; the model is usable the moment its
//! weights are in, and cells show as flat grey until the palette arrives. Either way the result
//! is cached on disk under the tokenizer's identity, so it is computed once per tokenizer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arpg_core::vq::{Palette, VqModel};
use crossbeam_channel::Sender;

use super::messages::WorkerEvent;

/// Codebooks up to this size get the in-context palette, computed when the model loads.
pub const IN_CONTEXT_PALETTE_CODES: usize = 4096;

/// Codes decoded per batch when the palette is computed at load.
const BATCH: usize = 256;

/// Codes decoded per batch in the background. The thread checks between batches whether a run
/// has started, so a batch is what a run may wait for: 16 one-cell decodes are about a
/// sixteenth of a 256x256 decode (256 codes a batch cost VQ-16 runs 3.5 s in f32: the app
/// then took 1.33x the CLI's time for an image).
const BACKGROUND_BATCH: usize = 16;

/// The cache file of `vq`'s palette, when there is a cache folder.
fn cache_file(vq: &VqModel, in_context: bool) -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    // A bf16 decoder's tiles differ from f32's by a level or so: each has its own file.
    let bf16 = vq.decode_dtype() == candle_core::DType::BF16;
    let key = format!(
        "{}{}{}",
        if in_context { "ctx-" } else { "" },
        vq.identity(),
        if bf16 { "-bf16" } else { "" }
    );
    Some(dir.join("arpg-studio").join(format!("palette-{key}.bin")))
}

/// Whether `vq`'s palette is decoded in context (see [`Palette::compute_in_context`]): codes
/// among copies of themselves preview closer to the final decode (measured on the shipped model:
/// 27 instead of 48 levels of mean error, `arpg eval --seams`), at nine times the decoding.
fn in_context(vq: &VqModel) -> bool {
    vq.config().codebook_size <= IN_CONTEXT_PALETTE_CODES
}

fn store(vq: &VqModel, palette: &Palette) {
    if let Some(file) = cache_file(vq, in_context(vq)) {
        // A cache that cannot be written is only slower next time.
        if file
            .parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        {
            let _ = arpg_core::document::write_atomic(&file, &palette.to_bytes());
        }
    }
}

/// The palette now when it is cached or cheap (a small codebook); `None` when it must be
/// computed in the background ([`PaletteThread::spawn`]).
pub fn on_load(vq: &VqModel) -> anyhow::Result<Option<Palette>> {
    let cached = cache_file(vq, in_context(vq))
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|bytes| Palette::from_bytes(&bytes).ok())
        .filter(|p| p.codes() == vq.config().codebook_size);
    if cached.is_some() || !in_context(vq) {
        return Ok(cached);
    }
    let palette = Palette::compute_in_context(vq, BATCH)?;
    store(vq, &palette);
    Ok(Some(palette))
}

/// A palette being computed in the background; dropping it stops the thread at its next batch.
pub struct PaletteThread {
    stop: Arc<AtomicBool>,
}

impl PaletteThread {
    /// Computes `vq`'s palette while `busy` is false (the worker is idle), sending
    /// `PaletteProgress` events and, once done, `PaletteReady`.
    pub fn spawn(
        vq: VqModel,
        busy: Arc<AtomicBool>,
        events: Sender<WorkerEvent>,
        repaint: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let run = move || {
            let tokenizer = vq.identity().to_string();
            let send = |ev| {
                let sent = events.send(ev).is_ok();
                repaint();
                sent
            };
            let mut go = |done: usize, total: usize| {
                while busy.load(Ordering::Relaxed) && !halt.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                !halt.load(Ordering::Relaxed)
                    && send(WorkerEvent::PaletteProgress {
                        tokenizer: tokenizer.clone(),
                        done,
                        total,
                    })
            };
            match Palette::compute_with(&vq, BACKGROUND_BATCH, in_context(&vq), &mut go) {
                Ok(Some(palette)) => {
                    store(&vq, &palette);
                    send(WorkerEvent::PaletteReady {
                        tokenizer,
                        palette: Arc::new(palette),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    send(WorkerEvent::Error(format!(
                        "The preview palette could not be computed ({e}); previews show plain \
                         cells until the run ends."
                    )));
                }
            }
        };
        // Without a thread there is no palette: previews show plain cells, nothing else changes.
        let _ = std::thread::Builder::new()
            .name("arpg-palette".into())
            .spawn(run);
        Self { stop }
    }
}

impl Drop for PaletteThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
