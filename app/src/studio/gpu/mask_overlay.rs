//! Owns the pipeline of `shaders/mask_overlay.wgsl`: tint and outline of the painted pixels (R8,
//! one texel per pixel) and the token cells they touch (R8, one texel per cell), blended on top.

use eframe::egui_wgpu::wgpu;

use super::{Extent, PassDesc, QuadPass, TextureSpec};

/// The shader as built: the canvas prelude, then `shaders/mask_overlay.wgsl`.
pub const SOURCE: &str = canvas_shader!("mask_overlay.wgsl");

pub(crate) fn pass(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    uniform: &wgpu::Buffer,
    extent: Extent,
) -> QuadPass {
    let specs = [
        TextureSpec {
            label: "mask pixels",
            format: wgpu::TextureFormat::R8Unorm,
            per_cell: false,
            storage: false,
        },
        TextureSpec {
            label: "mask cells",
            format: wgpu::TextureFormat::R8Unorm,
            per_cell: true,
            storage: false,
        },
    ];
    QuadPass::new(
        device,
        format,
        uniform,
        extent,
        &PassDesc {
            label: "mask overlay",
            source: SOURCE,
            textures: &specs,
            blend: Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
        },
    )
}
