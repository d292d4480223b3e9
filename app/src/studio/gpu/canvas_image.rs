//! Owns the pipeline of `shaders/canvas_image.wgsl`: the picture itself (RGBA8, one texel per
//! canvas pixel), opaque.

use eframe::egui_wgpu::wgpu;

use super::{Extent, PassDesc, QuadPass, TextureSpec};

/// The shader as built: the canvas prelude, then `shaders/canvas_image.wgsl`.
pub const SOURCE: &str = canvas_shader!("canvas_image.wgsl");

pub(crate) fn pass(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    uniform: &wgpu::Buffer,
    extent: Extent,
    storage: bool,
) -> QuadPass {
    let image = TextureSpec {
        label: "canvas image",
        format: wgpu::TextureFormat::Rgba8Unorm,
        per_cell: false,
        storage,
    };
    QuadPass::new(
        device,
        format,
        uniform,
        extent,
        &PassDesc {
            label: "canvas image",
            source: SOURCE,
            textures: &[image],
            blend: None,
        },
    )
}
