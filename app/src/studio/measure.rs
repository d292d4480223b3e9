//! A headless measurement of the app's worker: the code path the window uses (the worker thread,
//! its events, the preview thread and the palette), driven without a window, next to the same
//! run through the core in this process. `arpg bench --app` prints it; it is how "the app is
//! slower than its CLI" is measured, not a test.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arpg_core::order::Order;
use arpg_core::pair::{ModelPair, ModelSpec};
use arpg_core::run::Run;

use super::messages::{Job, JobKind, WorkerCommand, WorkerEvent};
use super::ui::tools_panel::LivePreview;
use super::worker::WorkerHandle;

/// What the worker measurement found, in seconds.
#[derive(Debug, Clone)]
pub struct AppTimes {
    /// From `LoadModels` to `ModelsLoaded` (Generate possible).
    pub load_s: f64,
    /// From `Run` to the first step event.
    pub first_step_s: f64,
    /// From `Run` to `Finished` (tokens and the final decode).
    pub image_s: f64,
    /// The same generation through `core::run::Run` in this process: tokens and decode.
    pub direct_s: f64,
    /// Whether the run decoded a live preview every step (View → Live preview → Auto).
    pub live_decode: bool,
}

fn next(h: &WorkerHandle, deadline: Instant) -> Result<WorkerEvent> {
    let left = deadline.saturating_duration_since(Instant::now());
    match h.events.recv_timeout(left) {
        Ok(WorkerEvent::Error(e)) => bail!("the worker failed: {e}"),
        Ok(ev) => Ok(ev),
        Err(_) => bail!("the worker sent nothing in time"),
    }
}

/// Loads `spec` in a worker, generates one image of class 0 with `steps` steps (the model's
/// recommended settings otherwise, the app's defaults where it has none), and times it; then
/// the same run directly.
pub fn measure(spec: ModelSpec, steps: usize) -> Result<AppTimes> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let h = WorkerHandle::spawn(|| {}, None, Default::default());
    let t = Instant::now();
    h.send(WorkerCommand::LoadModels(spec.clone()))
        .map_err(anyhow::Error::msg)?;
    let info = loop {
        if let WorkerEvent::ModelsLoaded { info, .. } = next(&h, deadline)? {
            break info;
        }
    };
    let load_s = t.elapsed().as_secs_f64();
    // The preview thread times a decode after the load; the app's Auto waits for it.
    let decode_ms = loop {
        if let WorkerEvent::DecodeTimed { ms } = next(&h, deadline)? {
            break ms;
        }
    };
    let live_decode = LivePreview::Auto.decodes(decode_ms);
    let mut settings = info
        .sampling
        .apply(&arpg_core::generator::Settings::default())?;
    settings.steps = steps.min(info.grid * info.grid).max(1);
    let job = Job {
        id: 1,
        kind: JobKind::Generate { batch: None },
        class: Some(0),
        settings: settings.clone(),
        order: Order::Random,
        priority: None,
        resumed: false,
        live_decode,
        label: "Generate".into(),
        step_delay_ms: 0,
    };
    let t = Instant::now();
    h.send(WorkerCommand::Run(job))
        .map_err(anyhow::Error::msg)?;
    let mut first_step_s = None;
    loop {
        match next(&h, deadline)? {
            WorkerEvent::Step(_) => {
                first_step_s.get_or_insert(t.elapsed().as_secs_f64());
            }
            WorkerEvent::Finished(_) => break,
            _ => {}
        }
    }
    let image_s = t.elapsed().as_secs_f64();
    drop(h);

    let models = ModelPair::load(&spec)?;
    let t = Instant::now();
    let mut run = Run::generate(&models, Some(0), settings, Order::Random, None, 1)?;
    run.run_to_end()?;
    run.finish(&models)?
        .0
        .first()
        .context("the direct run made no image")?;
    let direct_s = t.elapsed().as_secs_f64();
    Ok(AppTimes {
        load_s,
        first_step_s: first_step_s.unwrap_or(image_s),
        image_s,
        direct_s,
        live_decode,
    })
}
