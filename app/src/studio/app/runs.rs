//! The one owner of running jobs: their ids, the queue, cancel, pause, resume and fork. A run's
//! [`RunKind`] says what it is; ids come from one counter.

use super::*;

/// A run in progress.
pub(super) struct Running {
    pub(super) id: u64,
    pub(super) kind: RunKind,
    pub(super) label: String,
    pub(super) class: Option<usize>,
    pub(super) started: Instant,
    /// Canvas as last seen (decided cells filled in).
    pub(super) canvas: TokenCanvas,
    /// Cells highlighted as "latest step".
    pub(super) latest: Vec<(usize, usize)>,
    pub(super) last_step_at: Instant,
    /// Fork requested while running: start it when this run stops.
    pub(super) fork_after: bool,
    /// Pause requested: when this run stops, it waits to be resumed.
    pub(super) pause_after: bool,
    /// The cells this run decides (unknown when it started): the only ones a live decode
    /// repaints.
    pub(super) to_decide: Vec<bool>,
}

impl Running {
    pub(super) fn new(id: u64, kind: RunKind, label: String, class: Option<usize>) -> Self {
        Self {
            id,
            kind,
            label,
            class,
            started: Instant::now(),
            canvas: TokenCanvas::empty(1, 1),
            latest: Vec::new(),
            last_step_at: Instant::now(),
            fork_after: false,
            pause_after: false,
            to_decide: Vec::new(),
        }
    }

    /// A generation (or a fork of one), the runs Fork can continue.
    pub(super) fn is_generation(&self) -> bool {
        self.kind.is_generation()
    }
}

impl StudioApp {
    pub(super) fn new_job(
        &mut self,
        kind: JobKind,
        label: &str,
        settings: Settings,
        order: Order,
    ) -> Job {
        let id = self.next_id;
        self.next_id += 1;
        Job {
            id,
            kind,
            class: Some(self.class),
            settings,
            order,
            priority: None,
            resumed: false,
            live_decode: self.live_decode(),
            label: label.into(),
            step_delay_ms: self.settings.step_delay_ms,
        }
    }

    pub(super) fn submit(&mut self, jobs: Vec<Job>) {
        if self.model.is_none() {
            self.errors.push(
                "No model is loaded yet: wait for it, or open checkpoints from the Model menu."
                    .into(),
            );
            return;
        }
        if self.is_running() {
            self.errors
                .push("A generation is running: cancel it first (Esc).".into());
            return;
        }
        // The run takes the panel's seed; the panel moves on to the next run's.
        if !self.settings.lock_seed {
            self.settings.settings.seed = self.new_seed();
        }
        self.queued = jobs;
        self.queued.reverse();
        self.run_next();
    }

    pub(super) fn run_next(&mut self) {
        if let Some(job) = self.queued.pop() {
            self.paused = None;
            self.worker
                .cancel
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.running = Some(Running::new(
                job.id,
                job.run_kind(),
                job.label.clone(),
                job.class,
            ));
            self.status.message = format!("{}…", job.label);
            self.send(WorkerCommand::Run(job));
        }
    }

    pub(super) fn cancel(&mut self) {
        // Queued jobs never outlive a cancel, even with nothing running.
        self.queued.clear();
        if self.running.is_some() {
            self.worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.status.message = "Cancelling…".into();
        }
    }

    pub(super) fn fork(&mut self) {
        let seed = self.new_seed();
        if let Some(run) = self.running.as_mut() {
            if !run.is_generation() {
                self.errors.push(
                    "Fork continues a generation; an inpaint, outpaint or expand cannot be forked."
                        .into(),
                );
                return;
            }
            run.fork_after = true;
            self.worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        match self.forkable {
            Some((id, class)) => self.start_fork(id, class, seed),
            None => self.errors.push(
                "Fork continues a stopped generation: generate, cancel mid-way, then fork.".into(),
            ),
        }
    }

    /// Stops the running generation after its current step and keeps it to resume.
    pub(super) fn pause(&mut self) {
        match self.running.as_mut() {
            Some(run) if run.is_generation() => {
                run.pause_after = true;
                // A batch's later candidates are dropped: the paused one waits alone.
                self.queued.clear();
                self.worker
                    .cancel
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.status.message = "Pausing…".into();
            }
            Some(_) => self.errors.push(
                "Pause works on generations; an edit can be cancelled (Esc), which keeps its \
                 partial image."
                    .into(),
            ),
            None => self.errors.push("Nothing is running to pause.".into()),
        }
    }

    /// Continues the paused generation: the cells the mask covers more than half of are erased
    /// and decided again, every other decided token is kept as context.
    pub(super) fn resume(&mut self) {
        let (Some(id), Some(doc)) = (self.paused, self.doc.as_ref()) else {
            self.errors
                .push("Resume continues a paused generation: pause one first (Ctrl+P).".into());
            return;
        };
        if self.running.is_some() {
            return self
                .errors
                .push("A run is in progress: wait for it, or cancel it (Esc).".into());
        }
        let (rows, cols, class) = (doc.canvas.rows, doc.canvas.cols, doc.class);
        let erase: Vec<usize> = canvas::token_mask(
            &self.mask.pixels,
            self.mask.width,
            self.mask.height,
            self.patch(),
            0.5,
            0,
        )
        .ok()
        .filter(|m| m.len() == rows * cols)
        .map(|m| {
            (0..m.len())
                .filter(|&i| m[i] && doc.canvas.cells[i].is_some())
                .collect()
        })
        .unwrap_or_default();
        let new_id = self.next_id;
        self.next_id += 1;
        // `paused` stays until the resumed run starts: a refused resume can be tried again.
        self.queued.clear();
        self.running = Some(Running::new(
            new_id,
            RunKind::Resume,
            "Resume".into(),
            class,
        ));
        self.worker
            .cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.status.message = format!("Resuming ({} cells erased)…", erase.len());
        self.send(WorkerCommand::Resume { id, new_id, erase });
    }

    /// Forks the stopped generation `id`, which ran with `class`: the worker continues its
    /// state, so the fork's record must carry the same class.
    pub(super) fn start_fork(&mut self, id: u64, class: Option<usize>, seed: u64) {
        let new_id = self.next_id;
        self.next_id += 1;
        let label = format!("Fork (seed {seed})");
        self.running = Some(Running::new(new_id, RunKind::Fork, label, class));
        self.worker
            .cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.send(WorkerCommand::Fork { id, new_id, seed });
    }
}
