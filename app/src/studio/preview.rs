//! The live preview's decoder: a thread of its own that decodes the newest partial canvas of
//! the running job (unknown cells filled from their nearest decided ones,
//! [`TokenCanvas::filled_nearest`]) while the worker goes on sampling, so decided cells show
//! their colours in context instead of a per-code tile. Requests never queue: a new one
//! replaces the one not started yet, so the preview lags by at most one decode.
//!
//! When the tokenizer decodes on the window's own GPU, the decode is written straight into the
//! canvas texture's cells that the run decided ([`GpuCanvas`]): nothing is read back, and
//! [`WorkerEvent::PreviewOnGpu`] only says it happened. Otherwise (the CPU, another GPU, a
//! canvas wider than one GPU pass) the pixels come back in [`WorkerEvent::Preview`].

use std::sync::{Arc, Condvar, Mutex};

use arpg_core::canvas::TokenCanvas;
use arpg_core::Tokenizer;
use crossbeam_channel::Sender;

use super::gpu::GpuCanvas;
use super::messages::WorkerEvent;

/// One decode to do: the run, its partial canvas, and which cells the run decides.
type Request = (u64, TokenCanvas, Arc<Vec<bool>>);

/// The request slot: the newest canvas to decode, and whether the decoder should stop.
#[derive(Default)]
struct Slot {
    next: Option<Request>,
    closed: bool,
}

/// Where the live preview may write on the GPU: the canvas texture and its device.
#[derive(Clone)]
pub struct GpuTarget {
    pub canvas: GpuCanvas,
    pub device: arpg_core::gpu::Gpu,
}

pub struct PreviewDecoder {
    slot: Arc<(Mutex<Slot>, Condvar)>,
}

impl PreviewDecoder {
    /// Starts the decoder thread. It first times a decode of a blank `grid x grid` canvas (the
    /// second of two: the first pays for warm-up) and sends it as
    /// [`WorkerEvent::DecodeTimed`]; then each decode is sent as [`WorkerEvent::Preview`].
    /// `repaint` is called after each event.
    pub fn spawn(
        vq: Tokenizer,
        grid: usize,
        events: Sender<WorkerEvent>,
        repaint: Arc<dyn Fn() + Send + Sync>,
        target: Option<GpuTarget>,
    ) -> Self {
        let slot = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("arpg-preview".into())
            .spawn(move || {
                let blank = vec![0u32; grid * grid];
                let decode = || vq.decode_rgb8(&blank, grid, grid).is_ok();
                if decode() {
                    let timer = std::time::Instant::now();
                    if decode() {
                        let ms = timer.elapsed().as_secs_f64() * 1e3;
                        // A decoder replaced meanwhile (another model loaded) reports nothing.
                        let replaced = theirs.0.lock().map_or(true, |s| s.closed);
                        if replaced || events.send(WorkerEvent::DecodeTimed { ms }).is_err() {
                            return;
                        }
                        repaint();
                    }
                }
                while let Some((id, canvas, to_decide)) = next_request(&theirs) {
                    let Some(full) = canvas.filled_nearest() else {
                        continue;
                    };
                    let Ok(tokens) = full.tokens() else { continue };
                    if let Some(t) = &target {
                        let cells: Vec<bool> = (0..canvas.cells.len())
                            .map(|i| to_decide.get(i) == Some(&true) && canvas.cells[i].is_some())
                            .collect();
                        let written = t.canvas.texture().is_some_and(|texture| {
                            matches!(
                                vq.decode_to_texture(
                                    &tokens, full.rows, full.cols, &cells, &texture, &t.device,
                                ),
                                Ok(true)
                            )
                        });
                        if written {
                            if events
                                .send(WorkerEvent::PreviewOnGpu { id, canvas })
                                .is_err()
                            {
                                break;
                            }
                            repaint();
                            continue;
                        }
                    }
                    // A failed preview only leaves the tiles in place; the final decode reports.
                    if let Ok(rgb) = vq.preview_rgb8(&tokens, full.rows, full.cols) {
                        if events
                            .send(WorkerEvent::Preview { id, canvas, rgb })
                            .is_err()
                        {
                            break;
                        }
                        repaint();
                    }
                }
            });
        if spawned.is_err() {
            // No thread, no previews: the tiles stay.
            slot.0.lock().map(|mut s| s.closed = true).ok();
        }
        Self { slot }
    }

    /// Drops the request not started yet (the run it was for has ended).
    pub fn clear(&self) {
        if let Ok(mut s) = self.slot.0.lock() {
            s.next = None;
        }
    }

    /// Asks for a decode of `canvas` (the run `id`'s cells so far), replacing any request not
    /// started yet.
    pub fn submit(&self, id: u64, canvas: TokenCanvas, to_decide: Arc<Vec<bool>>) {
        let (lock, wake) = &*self.slot;
        if let Ok(mut s) = lock.lock() {
            if !s.closed {
                s.next = Some((id, canvas, to_decide));
                wake.notify_one();
            }
        }
    }
}

impl Drop for PreviewDecoder {
    fn drop(&mut self) {
        let (lock, wake) = &*self.slot;
        if let Ok(mut s) = lock.lock() {
            s.closed = true;
            s.next = None;
        }
        wake.notify_one();
    }
}

/// Waits for the next request; `None` once the decoder is closed.
fn next_request(slot: &(Mutex<Slot>, Condvar)) -> Option<Request> {
    let (lock, wake) = slot;
    let mut s = lock.lock().ok()?;
    loop {
        if s.closed {
            return None;
        }
        if let Some(req) = s.next.take() {
            return Some(req);
        }
        s = wake.wait(s).ok()?;
    }
}
