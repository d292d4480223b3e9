//! ARPG Studio, the desktop app: an eframe window whose canvas is drawn by wgpu shaders, with a
//! background worker that owns the models.
//!
//! Threads: the UI thread (egui) never runs model code and never blocks on the worker; the
//! worker thread runs loading, sampling and decoding; the preview thread decodes partial canvases
//! for the live preview while the worker samples. They talk through bounded channels of
//! [`messages::WorkerCommand`] and [`messages::WorkerEvent`].

pub mod app;
pub mod canvas;
pub mod commands;
pub mod downloads;
pub mod gpu;
pub mod measure;
pub mod messages;
pub mod palette;
pub mod preview;
pub mod ui;
pub mod worker;

pub use app::StudioApp;
