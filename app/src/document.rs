//! Images on disk: the one import path (EXIF orientation, limits, masks) and the `arpg` PNG
//! metadata live in the core, [`arpg_core::document`], so every front end reads files alike.

pub use arpg_core::document::*;
