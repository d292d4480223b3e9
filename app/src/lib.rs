//! ARPG Studio's front ends: the CLI's generation commands ([`run`]) and, with the `studio`
//! feature, the desktop app ([`studio`]). Both work through the core: the model pair, the edit
//! pipeline, the seed streams and the PNG format live in `arpg_core`.

pub mod document;
pub mod hub;
pub mod output;
pub mod run;
#[cfg(feature = "studio")]
pub mod studio;
