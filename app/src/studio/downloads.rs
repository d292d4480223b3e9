//! Downloads of the official checkpoints for the Model menu: each on a thread of its own (never
//! the UI thread, never the model worker), reporting over a bounded channel that the UI drains
//! each frame; cancel keeps the partial file and the next download resumes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::hub::{Hub, Official, State, OFFICIAL};

/// What the menu shows for one official checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    NotDownloaded,
    /// A partial file of this many bytes waits to be resumed.
    Partial(u64),
    Downloading {
        done: u64,
        total: u64,
    },
    Ready(PathBuf),
    Failed(String),
}

impl Status {
    /// A short label for the menu: "not downloaded", "downloading 42%", "ready".
    pub fn label(&self) -> String {
        match self {
            Status::NotDownloaded => "not downloaded".into(),
            Status::Partial(n) => format!("paused at {} MB", n / 1_000_000),
            Status::Downloading { done, total } if *total > 0 => {
                format!("downloading {}%", done * 100 / total)
            }
            Status::Downloading { .. } => "downloading".into(),
            Status::Ready(_) => "ready".into(),
            Status::Failed(_) => "failed".into(),
        }
    }
}

enum Event {
    Progress(&'static str, u64, u64),
    Done(&'static str, PathBuf),
    Failed(&'static str, String),
    Cancelled(&'static str),
}

/// The official checkpoints' states and the downloads in flight.
pub struct Downloads {
    pub status: HashMap<&'static str, Status>,
    running: HashMap<&'static str, Arc<AtomicBool>>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Load this ARPG checkpoint (with the official tokenizer) once both are ready.
    pub load_when_ready: Option<&'static str>,
}

impl Default for Downloads {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(256);
        let mut d = Self {
            status: HashMap::new(),
            running: HashMap::new(),
            tx,
            rx,
            load_when_ready: None,
        };
        d.refresh();
        d
    }
}

impl Downloads {
    /// Re-reads the states of the checkpoints not downloading from the cache (no request).
    pub fn refresh(&mut self) {
        let Ok(hub) = Hub::from_env(true) else {
            return;
        };
        for o in OFFICIAL {
            if self.running.contains_key(o.name) {
                continue;
            }
            let status = match hub.state(&o) {
                State::NotDownloaded => Status::NotDownloaded,
                State::Partial(n) => Status::Partial(n),
                State::Ready(p) => Status::Ready(p),
            };
            self.status.insert(o.name, status);
        }
    }

    pub fn status(&self, name: &str) -> Status {
        self.status
            .get(name)
            .cloned()
            .unwrap_or(Status::NotDownloaded)
    }

    /// The file of a ready checkpoint.
    pub fn ready(&self, name: &str) -> Option<PathBuf> {
        match self.status(name) {
            Status::Ready(p) => Some(p),
            _ => None,
        }
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running.contains_key(name)
    }

    /// Starts downloading `o` (nothing when it is ready or already downloading).
    pub fn start(&mut self, o: Official, repaint: impl Fn() + Send + 'static) {
        if self.is_running(o.name) || self.ready(o.name).is_some() {
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.insert(o.name, cancel.clone());
        self.status
            .insert(o.name, Status::Downloading { done: 0, total: 0 });
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("download-{}", o.name))
            .spawn(move || {
                // A panic in the transfer (a malformed server answer) is reported, not lost.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Hub::from_env(false).and_then(|hub| {
                        let mut last = 0;
                        hub.fetch(
                            &o,
                            |p| {
                                // About every 1%, never blocking the transfer.
                                if p.done >= last + p.total / 100 || p.done == p.total {
                                    last = p.done;
                                    let _ = tx.try_send(Event::Progress(o.name, p.done, p.total));
                                    repaint();
                                }
                            },
                            &cancel,
                        )
                    })
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error in the download")));
                let event = match result {
                    Ok(path) => Event::Done(o.name, path),
                    Err(e) if e.downcast_ref::<crate::hub::Cancelled>().is_some() => {
                        Event::Cancelled(o.name)
                    }
                    Err(e) => Event::Failed(o.name, format!("{e:#}")),
                };
                let _ = tx.send(event);
                repaint();
            });
        if let Err(e) = spawned {
            self.running.remove(o.name);
            self.status
                .insert(o.name, Status::Failed(format!("cannot start: {e}")));
        }
    }

    /// Cancels a download in flight (its partial file is kept). The menu shows it stopped at
    /// once; the thread notices between chunks.
    pub fn cancel(&mut self, name: &str) {
        if let Some(flag) = self.running.remove(name) {
            flag.store(true, Ordering::Relaxed);
        }
        self.refresh();
    }

    /// Drains the downloads' events; returns the errors to show.
    pub fn poll(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            match ev {
                Event::Progress(name, done, total) => {
                    if self.running.contains_key(name) {
                        self.status
                            .insert(name, Status::Downloading { done, total });
                    }
                }
                Event::Done(name, path) => {
                    self.running.remove(name);
                    self.status.insert(name, Status::Ready(path));
                }
                Event::Failed(name, e) => {
                    self.running.remove(name);
                    errors.push(format!("Download of {name} failed: {e}"));
                    self.status.insert(name, Status::Failed(e));
                }
                Event::Cancelled(name) => {
                    self.running.remove(name);
                    self.refresh();
                }
            }
        }
        errors
    }
}
