//! The canvas: its image as the GPU shows it, the view transform, the mask being painted and the
//! priority brush's map.

pub mod cell_map;
pub mod image;
pub mod mask;
pub mod priority;
pub mod view;
