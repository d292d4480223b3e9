//! Owns the pipeline of `shaders/canvas_image.wgsl`: the picture itself.

use eframe::egui_wgpu::wgpu;

use super::{quad_pipeline, texture, texture_entry, uniform_entry, Extent};

pub const SOURCE: &str = include_str!("../../../../shaders/canvas_image.wgsl");

pub struct ImagePass {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    texture: wgpu::Texture,
    bind_group: wgpu::BindGroup,
}

impl ImagePass {
    pub fn new(
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
        uniform: &wgpu::Buffer,
        extent: Extent,
    ) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("canvas image"),
            entries: &[uniform_entry(), texture_entry(1)],
        });
        // The picture is opaque: no blending.
        let pipeline = quad_pipeline(device, "canvas image", SOURCE, &layout, format, None);
        let (texture, bind_group) = Self::bind(device, &layout, uniform, extent);
        Self {
            pipeline,
            layout,
            texture,
            bind_group,
        }
    }

    fn bind(
        device: &wgpu::Device,
        layout: &wgpu::BindGroupLayout,
        uniform: &wgpu::Buffer,
        e: Extent,
    ) -> (wgpu::Texture, wgpu::BindGroup) {
        let tex = texture(
            device,
            "canvas image",
            e.width,
            e.height,
            wgpu::TextureFormat::Rgba8Unorm,
        );
        let view = tex.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("canvas image"),
            layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
            ],
        });
        (tex, bind_group)
    }

    pub fn resize(&mut self, device: &wgpu::Device, uniform: &wgpu::Buffer, extent: Extent) {
        (self.texture, self.bind_group) = Self::bind(device, &self.layout, uniform, extent);
    }

    pub fn texture(&self) -> &wgpu::Texture {
        &self.texture
    }

    pub fn draw(&self, pass: &mut wgpu::RenderPass<'static>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}
