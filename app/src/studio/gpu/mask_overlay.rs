//! Owns the pipeline of `shaders/mask_overlay.wgsl`: tint, outline and touched token cells.

use eframe::egui_wgpu::wgpu;

use super::{quad_pipeline, texture, texture_entry, uniform_entry, Extent};

pub const SOURCE: &str = include_str!("../../../../shaders/mask_overlay.wgsl");

pub struct MaskPass {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    mask: wgpu::Texture,
    cells: wgpu::Texture,
    bind_group: wgpu::BindGroup,
}

impl MaskPass {
    pub fn new(
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
        uniform: &wgpu::Buffer,
        extent: Extent,
    ) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("mask overlay"),
            entries: &[uniform_entry(), texture_entry(1), texture_entry(2)],
        });
        let pipeline = quad_pipeline(
            device,
            "mask overlay",
            SOURCE,
            &layout,
            format,
            Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
        );
        let (mask, cells, bind_group) = Self::bind(device, &layout, uniform, extent);
        Self {
            pipeline,
            layout,
            mask,
            cells,
            bind_group,
        }
    }

    fn bind(
        device: &wgpu::Device,
        layout: &wgpu::BindGroupLayout,
        uniform: &wgpu::Buffer,
        e: Extent,
    ) -> (wgpu::Texture, wgpu::Texture, wgpu::BindGroup) {
        let mask = texture(
            device,
            "mask pixels",
            e.width,
            e.height,
            wgpu::TextureFormat::R8Unorm,
        );
        let cells = texture(
            device,
            "mask cells",
            e.cols,
            e.rows,
            wgpu::TextureFormat::R8Unorm,
        );
        let (mv, cv) = (
            mask.create_view(&Default::default()),
            cells.create_view(&Default::default()),
        );
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("mask overlay"),
            layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&mv),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&cv),
                },
            ],
        });
        (mask, cells, bind_group)
    }

    pub fn resize(&mut self, device: &wgpu::Device, uniform: &wgpu::Buffer, extent: Extent) {
        (self.mask, self.cells, self.bind_group) =
            Self::bind(device, &self.layout, uniform, extent);
    }

    pub fn mask_texture(&self) -> &wgpu::Texture {
        &self.mask
    }

    pub fn cells_texture(&self) -> &wgpu::Texture {
        &self.cells
    }

    pub fn draw(&self, pass: &mut wgpu::RenderPass<'static>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}
