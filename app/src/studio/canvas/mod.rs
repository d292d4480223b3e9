//! The canvas document: the view transform and the mask being painted.

pub mod mask;
pub mod view;
