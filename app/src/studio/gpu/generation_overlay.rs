//! Owns the pipeline of `shaders/generation_overlay.wgsl`: undecided cells, the latest step's
//! cells, and the optional token grid.

use eframe::egui_wgpu::wgpu;

use super::{quad_pipeline, texture, texture_entry, uniform_entry, Extent};

pub const SOURCE: &str = include_str!("../../../../shaders/generation_overlay.wgsl");

pub struct GenerationPass {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    state: wgpu::Texture,
    bind_group: wgpu::BindGroup,
}

impl GenerationPass {
    pub fn new(
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
        uniform: &wgpu::Buffer,
        extent: Extent,
    ) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("generation overlay"),
            entries: &[uniform_entry(), texture_entry(1)],
        });
        let pipeline = quad_pipeline(
            device,
            "generation overlay",
            SOURCE,
            &layout,
            format,
            Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
        );
        let (state, bind_group) = Self::bind(device, &layout, uniform, extent);
        Self {
            pipeline,
            layout,
            state,
            bind_group,
        }
    }

    fn bind(
        device: &wgpu::Device,
        layout: &wgpu::BindGroupLayout,
        uniform: &wgpu::Buffer,
        e: Extent,
    ) -> (wgpu::Texture, wgpu::BindGroup) {
        let state = texture(
            device,
            "cell state",
            e.cols,
            e.rows,
            wgpu::TextureFormat::Rgba8Unorm,
        );
        let view = state.create_view(&Default::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("generation overlay"),
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
        (state, bind_group)
    }

    pub fn resize(&mut self, device: &wgpu::Device, uniform: &wgpu::Buffer, extent: Extent) {
        (self.state, self.bind_group) = Self::bind(device, &self.layout, uniform, extent);
    }

    pub fn texture(&self) -> &wgpu::Texture {
        &self.state
    }

    pub fn draw(&self, pass: &mut wgpu::RenderPass<'static>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}
