//! The canvas: its image as the GPU shows it, the view transform and the mask being painted.

pub mod cell_map;
pub mod image;
pub mod mask;
pub mod view;
