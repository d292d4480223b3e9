//! Where an image came from. Stored in its PNG beside its [`Settings`]; together they are
//! enough to regenerate a generated image exactly ([`regenerate`]).

use serde::{Deserialize, Serialize};

use crate::backend::Transformer;
use crate::canvas::TokenCanvas;
use crate::error::{Error, Result};
use crate::generator::lifecycle::ForkPoint;
use crate::generator::{Generation, KnownCells, OrderMode, Request, Settings};
use crate::order::Order;

/// The kind of work that made an image (recorded in its provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Generate,
    Inpaint,
    Outpaint,
    Expand,
    /// A generation paused, edited (cells erased) and resumed: its tokens depend on the paused
    /// state, so its metadata alone cannot make it again.
    Resume,
}

/// How an image was made, beyond its settings (see [`crate::sampler::stream`] for what the seeds
/// mean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub task: Task,
    /// The order its unknown cells were generated in.
    #[serde(default)]
    pub order: Order,
    /// For an image of a batch: the batch's seed and the image's index in it. The image's own
    /// seed, in its settings, is [`crate::sampler::image_seed`]`(batch.seed, batch.index)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchPlace>,
    /// The forks that led to this image, oldest first: the seed drawn with until each fork and
    /// the step it was taken at. After the last fork, tokens came from the settings' seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forked_from: Vec<ForkPoint>,
    /// Windows of a canvas job (generated in waves; wave `w` sampled as a batch with
    /// [`crate::sampler::window_seed`]`(seed, w)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<usize>,
    /// A painted priority map over the job's canvas (one level per cell, raster order, higher
    /// first). When present it orders the unknown cells instead of `order`: random (the
    /// settings' seed) inside each level, as [`OrderMode::Priority`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Vec<u8>>,
}

/// An image's place in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlace {
    pub seed: u64,
    pub index: usize,
}

impl Provenance {
    pub fn new(task: Task, order: Order) -> Self {
        Self {
            task,
            order,
            batch: None,
            forked_from: Vec::new(),
            windows: None,
            priority: None,
        }
    }

    /// The sampler's order for `canvas`: the painted priority map when there is one (of the
    /// canvas' size), else [`Order::mode`].
    pub fn order_mode(&self, canvas: &TokenCanvas) -> OrderMode {
        match &self.priority {
            Some(levels) if levels.len() == canvas.cells.len() => {
                OrderMode::Priority(levels.clone())
            }
            _ => self.order.mode(canvas),
        }
    }
}

/// The generation that regenerates a generated image from its class, settings and provenance:
/// a single image with the settings' seed, or, for a fork, the first seed run to each fork point
/// and forked there. Run it to the end for the image's tokens.
///
/// Errors: the image was made by an edit (its source image is needed, not only its metadata),
/// or the fork points do not fit the settings.
pub fn regenerate(
    model: impl Into<Transformer>,
    class: Option<usize>,
    settings: &Settings,
    provenance: &Provenance,
) -> Result<Generation> {
    if provenance.task == Task::Resume {
        return Err(Error::InvalidRequest(
            "this image was paused, edited and resumed: it depends on the tokens it had when \
             paused, which its metadata does not hold"
                .into(),
        ));
    }
    if provenance.task != Task::Generate {
        return Err(Error::InvalidRequest(format!(
            "this image was made by {:?}: rerun that edit on its source image with these \
             settings; only generated images regenerate from their metadata alone",
            provenance.task
        )));
    }
    let model: Transformer = model.into();
    let forks = &provenance.forked_from;
    let mut first = settings.clone();
    first.seed = forks.first().map_or(settings.seed, |f| f.seed);
    let g = model.config().grid_size();
    if let Some(levels) = provenance.priority.as_ref().filter(|l| l.len() != g * g) {
        return Err(Error::InvalidRequest(format!(
            "the painted priority map has {} cells; this model's grid has {}",
            levels.len(),
            g * g
        )));
    }
    let request = Request {
        classes: vec![class],
        settings: first,
        order: provenance.order_mode(&TokenCanvas::empty(g, g)),
        known: KnownCells::Nothing,
    };
    let mut gen = Generation::new(&model, &request)?;
    for (j, fork) in forks.iter().enumerate() {
        while gen.steps_done() < fork.step {
            if gen.step()?.is_none() {
                break;
            }
        }
        if gen.steps_done() != fork.step || gen.is_done() {
            return Err(Error::InvalidRequest(format!(
                "fork {} is at step {} but the generation has {} steps",
                j + 1,
                fork.step,
                gen.total_steps()
            )));
        }
        let next = forks.get(j + 1).map_or(settings.seed, |f| f.seed);
        gen = gen.fork(next)?;
    }
    Ok(gen)
}
