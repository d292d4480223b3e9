//! ARPG Studio's front ends: shared document and model plumbing, and the desktop app.

pub mod document;
pub mod run;
pub mod studio;
