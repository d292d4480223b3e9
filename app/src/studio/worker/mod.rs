//! The background worker: the only thread that runs model code. The UI sends [`WorkerCommand`]s
//! and drains [`WorkerEvent`]s; both channels are bounded. Step events carry only the cells
//! decided in that step; when the UI falls behind, the worker merges pending steps into one event
//! (the latest preview wins) instead of blocking the sampler. A panic inside a job is caught and
//! reported; the UI restarts the worker if its thread ever dies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arpg_core::document::{self, Metadata};
use arpg_core::generator::Generation;
use arpg_core::pair::ModelPair;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::studio::gpu::GpuCanvas;
use crate::studio::messages::{Job, ModelInfo, RunStep, WorkerCommand, WorkerEvent};
use crate::studio::preview::GpuTarget;

mod documents;
mod jobs;

use documents::class_names_beside;

/// The UI's handle on the worker thread.
pub struct WorkerHandle {
    pub commands: Sender<WorkerCommand>,
    pub events: Receiver<WorkerEvent>,
    pub cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts a worker; `repaint` is called after every event.
    /// Starts the worker. `gpu`: the window's own device, which `wgpu` (no adapter index) in a
    /// [`ModelSpec`](arpg_core::pair::ModelSpec) means.
    pub fn spawn(
        repaint: impl Fn() + Send + Sync + 'static,
        gpu: Option<arpg_core::gpu::Gpu>,
        canvas: GpuCanvas,
    ) -> Self {
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(16);
        let (ev_tx, ev_rx) = crossbeam_channel::bounded(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("arpg-worker".into())
            .spawn(move || Worker::new(ev_tx, c, Arc::new(repaint), gpu, canvas).run(cmd_rx))
            .ok();
        Self {
            commands: cmd_tx,
            events: ev_rx,
            cancel,
            thread,
        }
    }

    /// Whether the worker thread is gone (it panicked outside a job, or the channel closed).
    pub fn is_dead(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn send(&self, cmd: WorkerCommand) -> Result<(), String> {
        self.commands.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => "the worker is busy; try again in a moment".to_string(),
            TrySendError::Disconnected(_) => {
                "the worker stopped; it is being restarted".to_string()
            }
        })
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.commands.try_send(WorkerCommand::Shutdown);
    }
}

struct Worker {
    events: Sender<WorkerEvent>,
    cancel: Arc<AtomicBool>,
    repaint: Arc<dyn Fn() + Send + Sync>,
    models: Option<ModelPair>,
    /// The live preview's decoder thread (with the loaded tokenizer).
    preview: Option<crate::studio::preview::PreviewDecoder>,
    /// The preview palette being computed in the background, if it is.
    palette: Option<crate::studio::palette::PaletteThread>,
    /// Set while a command is handled: the background palette waits meanwhile.
    busy: Arc<AtomicBool>,
    /// The last generate job that stopped early or is forkable: (id, state).
    last: Option<(u64, Generation, Job)>,
    pending: Option<WorkerEvent>,
    /// The window's own GPU device (see [`WorkerHandle::spawn`]).
    gpu: Option<arpg_core::gpu::Gpu>,
    /// The canvas texture the live preview may write on that device.
    canvas: GpuCanvas,
}

impl Worker {
    fn new(
        events: Sender<WorkerEvent>,
        cancel: Arc<AtomicBool>,
        repaint: Arc<dyn Fn() + Send + Sync>,
        gpu: Option<arpg_core::gpu::Gpu>,
        canvas: GpuCanvas,
    ) -> Self {
        Self {
            gpu,
            canvas,
            events,
            cancel,
            repaint,
            models: None,
            preview: None,
            palette: None,
            busy: Arc::new(AtomicBool::new(false)),
            last: None,
            pending: None,
        }
    }

    fn run(mut self, commands: Receiver<WorkerCommand>) {
        while let Ok(cmd) = commands.recv() {
            if matches!(cmd, WorkerCommand::Shutdown) {
                break;
            }
            // The cancel flag is reset by the UI before it sends a job, never here: a cancel sent
            // right after a job must not be lost.
            self.busy.store(true, Ordering::Relaxed);
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(cmd)));
            self.busy.store(false, Ordering::Relaxed);
            let err = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(p) => Some(format!(
                    "internal error in the worker: {}",
                    p.downcast_ref::<String>()
                        .map(String::as_str)
                        .or(p.downcast_ref::<&str>().copied())
                        .unwrap_or("panic")
                )),
            };
            // A GPU fault on this command or a live preview: said once; the CPU took over (a
            // transformer fault also failed the run that met it, with the same message).
            let faults: Vec<String> = self
                .models
                .as_ref()
                .map(|m| [m.vq.take_fault(), m.arpg.model.take_fault()])
                .into_iter()
                .flatten()
                .flatten()
                .filter(|f| err.as_ref().is_none_or(|e| !e.contains(f.as_str())))
                .collect();
            if let Some(e) = err {
                self.emit(WorkerEvent::Error(e));
            }
            for fault in faults {
                self.emit(WorkerEvent::Error(fault));
            }
        }
    }

    /// Sends an event, blocking; flushes a merged pending step first.
    fn emit(&mut self, ev: WorkerEvent) {
        if matches!(ev, WorkerEvent::Finished(_) | WorkerEvent::Error(_)) {
            // The run is over: a live decode not started yet would only compete with its end.
            if let Some(p) = &self.preview {
                p.clear();
            }
        }
        if let Some(p) = self.pending.take() {
            let _ = self.events.send(p);
        }
        let _ = self.events.send(ev);
        (self.repaint)();
    }

    /// Sends a step without blocking: if the UI is behind, merge into the pending one.
    fn emit_step(&mut self, ev: WorkerEvent) {
        let merged = match (self.pending.take(), ev) {
            (
                Some(WorkerEvent::Step(RunStep { id, mut cells, .. })),
                WorkerEvent::Step(RunStep {
                    id: id2,
                    cells: c2,
                    step,
                    total_steps,
                    decided,
                    elapsed,
                }),
            ) if id == id2 => {
                cells.extend(c2);
                WorkerEvent::Step(RunStep {
                    id,
                    cells,
                    step,
                    total_steps,
                    decided,
                    elapsed,
                })
            }
            (Some(p), ev) => {
                let _ = self.events.send(p);
                ev
            }
            (None, ev) => ev,
        };
        match self.events.try_send(merged) {
            Ok(()) => (self.repaint)(),
            Err(TrySendError::Full(ev)) => self.pending = Some(ev),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Where the live preview writes on the GPU: the canvas texture, when the tokenizer decodes
    /// on the window's own device (and that device may write the texture).
    fn gpu_target(&self, models: &ModelPair) -> Option<GpuTarget> {
        let gpu = self.gpu.as_ref()?;
        let on_window = models.vq.decodes_on(gpu);
        let writable = self.canvas.texture().is_some();
        (on_window && writable).then(|| GpuTarget {
            canvas: self.canvas.clone(),
            device: gpu.clone(),
        })
    }

    fn models(&self) -> anyhow::Result<&ModelPair> {
        self.models.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no model is loaded: open checkpoints from the Model menu")
        })
    }

    fn handle(&mut self, cmd: WorkerCommand) -> anyhow::Result<()> {
        match cmd {
            WorkerCommand::LoadModels(args) => {
                // A palette still being computed for the previous tokenizer stops.
                self.palette = None;
                let models = ModelPair::load_on(&args, self.gpu.as_ref())?;
                let palette = crate::studio::palette::on_load(models.vq.model())?.map(Arc::new);
                if palette.is_none() {
                    self.palette = Some(crate::studio::palette::PaletteThread::spawn(
                        models.vq.model().clone(),
                        self.busy.clone(),
                        self.events.clone(),
                        self.repaint.clone(),
                    ));
                }
                let info = ModelInfo {
                    name: models.arpg.name.clone(),
                    device: device_line(&args.device, &models),
                    notices: models.notices.clone(),
                    gpu_preview: self.gpu_target(&models).is_some(),
                    grid: models.grid(),
                    patch: models.patch(),
                    num_classes: models.arpg.config.num_classes,
                    params: models.arpg.config.num_params(),
                    class_names: class_names_beside(
                        &args
                            .gpt
                            .clone()
                            .unwrap_or_else(arpg_core::shipped::arpg_path),
                        models.arpg.config.num_classes,
                    ),
                    sampling: models.arpg.sampling.clone(),
                    working_limit: models.working_limit(),
                    tokenizer: models.vq.identity().to_string(),
                    transformer: models.arpg.identity.clone(),
                    codebook_size: models.vq.config().codebook_size,
                    // Measured by the preview thread, off the load path (`DecodeTimed`).
                    decode_ms: None,
                };
                self.preview = Some(crate::studio::preview::PreviewDecoder::spawn(
                    models.vq.clone(),
                    models.grid(),
                    self.events.clone(),
                    self.repaint.clone(),
                    self.gpu_target(&models),
                ));
                self.models = Some(models);
                self.last = None;
                self.emit(WorkerEvent::ModelsLoaded { info, palette });
            }
            WorkerCommand::OpenImage { path, full_size } => {
                let models = self.models()?;
                let pic = document::import_image_over(&path, models.background())?;
                let (pic, scaled) = if full_size {
                    (pic, None)
                } else {
                    models.scaled_to_working_size(pic, &path.display().to_string())?
                };
                let notices = scaled
                    .map(|s| format!("{s} (\"Keep full size on open\" in the File menu keeps it)."))
                    .into_iter()
                    .collect();
                self.open_picture(path.display().to_string(), pic, notices)?;
            }
            WorkerCommand::Reencode {
                rgb,
                size: [width, height],
                class,
                settings,
                provenance,
            } => {
                let pic = document::Picture {
                    width,
                    height,
                    rgb,
                    // No tokens: the pixels are encoded by the tokenizer now loaded.
                    metadata: Some(Metadata {
                        class,
                        settings,
                        provenance,
                        ..Metadata::empty()
                    }),
                    metadata_state: document::MetadataState::Absent,
                    transparency: None,
                };
                let notice = "The model's tokenizer changed: the open image's tokens belonged to \
                              the previous one, so it was kept as pixels and encoded again."
                    .to_string();
                self.open_picture("the open image".into(), pic, vec![notice])?;
            }
            WorkerCommand::Run(job) => self.run_job(job)?,
            WorkerCommand::Fork { id, new_id, seed } => {
                let Some((last_id, gen, job)) = self.last.as_ref() else {
                    anyhow::bail!("nothing to fork: generate first, then fork from a step");
                };
                if *last_id != id {
                    anyhow::bail!("that generation is no longer available to fork");
                }
                if gen.is_done() {
                    anyhow::bail!(
                        "that generation is finished: fork continues one stopped before its end"
                    );
                }
                let gen = gen.fork(seed)?;
                let mut job = job.clone();
                job.id = new_id;
                self.continue_generation(job, gen)?;
            }
            WorkerCommand::Resume { id, new_id, erase } => {
                let Some((last_id, gen, job)) = self.last.as_ref() else {
                    anyhow::bail!("nothing to resume: pause a generation first");
                };
                if *last_id != id {
                    anyhow::bail!("that generation is no longer available to resume");
                }
                let request = gen.resume_request(&erase)?;
                let models = self.models()?;
                let gen = Generation::new(&models.arpg.model, &request)?;
                let mut job = job.clone();
                job.id = new_id;
                job.resumed = true;
                self.continue_generation(job, gen)?;
            }
            WorkerCommand::Shutdown => {}
        }
        Ok(())
    }
}

/// The status bar's device: where the transformer runs and, when it is elsewhere, where the
/// tokenizer decodes.
fn device_line(asked: &str, models: &ModelPair) -> String {
    let decoder = models.vq.decoder_device();
    let transformer = models.arpg.model.device_name();
    match arpg_core::Backend::parse(asked) {
        Ok(arpg_core::Backend::Wgpu(_)) if decoder == transformer => transformer,
        Ok(arpg_core::Backend::Wgpu(_)) => {
            format!("{decoder} (decoder) · {transformer} (transformer)")
        }
        Ok(arpg_core::Backend::Cpu) => "CPU".into(),
        _ => asked.to_string(),
    }
}
