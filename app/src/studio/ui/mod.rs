//! The panels around the canvas, one per file.

pub mod class_panel;
pub mod history_panel;
pub mod settings_panel;
pub mod shortcuts_window;
pub mod status_bar;
pub mod tools_panel;
