//! Owns the pipeline of `shaders/generation_overlay.wgsl`: undecided cells, the latest step's cells
//! and the optional token grid, from a cell-state texture (RGBA8, one texel per cell).

use eframe::egui_wgpu::wgpu;

use super::{Extent, PassDesc, QuadPass, TextureSpec};

/// The shader as built: the canvas prelude, then `shaders/generation_overlay.wgsl`.
pub const SOURCE: &str = canvas_shader!("generation_overlay.wgsl");

pub(crate) fn pass(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    uniform: &wgpu::Buffer,
    extent: Extent,
) -> QuadPass {
    let state = TextureSpec {
        label: "cell state",
        format: wgpu::TextureFormat::Rgba8Unorm,
        per_cell: true,
        storage: false,
    };
    QuadPass::new(
        device,
        format,
        uniform,
        extent,
        &PassDesc {
            label: "generation overlay",
            source: SOURCE,
            textures: &[state],
            blend: Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
        },
    )
}
