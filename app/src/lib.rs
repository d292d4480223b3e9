//! ARPG Studio's front ends: the CLI's generation commands ([`commands`]) and, with the `studio`
//! feature, the desktop app ([`studio`]). Both work through the core: the model pair, the edit
//! pipeline, the seed streams and the PNG format live in `arpg_core`.

pub mod commands;
pub mod document;
pub mod hub;
pub mod output;
#[cfg(feature = "studio")]
pub mod studio;
