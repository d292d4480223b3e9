//! The canvas on the GPU: three passes drawn by an `egui_wgpu` paint callback, one module per
//! shader in `shaders/`. Resources live in egui's `callback_resources`; each frame's callback
//! carries the view uniform and only the texture regions that changed since the last frame.

/// A canvas shader's source as built: `shaders/canvas_prelude.wgsl` (the `View` uniform at
/// binding 0, `VertexOut` and the quad's `vs_main`) followed by the shader's own file. WGSL has no
/// include, so the owning module prepends the prelude; the naga test validates the result.
macro_rules! canvas_shader {
    ($file:literal) => {
        concat!(
            include_str!("../../../../shaders/canvas_prelude.wgsl"),
            include_str!(concat!("../../../../shaders/", $file))
        )
    };
}

mod canvas_image;
mod generation_overlay;
mod mask_overlay;

/// Every canvas shader as built (name, WGSL source), for validation.
pub const SHADERS: [(&str, &str); 3] = [
    ("canvas_image", canvas_image::SOURCE),
    ("generation_overlay", generation_overlay::SOURCE),
    ("mask_overlay", mask_overlay::SOURCE),
];

use eframe::egui_wgpu::{self, wgpu};

/// Uniform shared by the three shaders (`struct View` in each WGSL file).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniform {
    /// Canvas rectangle in clip space: left, top, right, bottom.
    pub rect: [f32; 4],
    /// Canvas size in pixels (x, y) and in token cells (z, w).
    pub size: [f32; 4],
    /// Time, highlight strength, show grid, the generation overlay's map (0 none, 1 confidence,
    /// 2 order).
    pub params: [f32; 4],
}

const _: () = assert!(std::mem::size_of::<ViewUniform>() == 48);

/// Which texture an upload goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// RGBA8, canvas pixels.
    Image,
    /// R8, canvas pixels.
    Mask,
    /// R8, token cells.
    MaskCells,
    /// RGBA8, token cells.
    State,
}

/// Texture writes queued by the UI thread for the next painted frame, in order.
#[derive(Debug, Clone, Default)]
pub struct PendingUploads(std::sync::Arc<std::sync::Mutex<Vec<Upload>>>);

impl PendingUploads {
    pub fn extend(&self, uploads: Vec<Upload>) {
        // A poisoned lock only means a panic elsewhere; the queue itself is still whole.
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(uploads);
    }

    fn take(&self) -> Vec<Upload> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A rectangle of texels to write.
#[derive(Debug, Clone)]
pub struct Upload {
    pub target: Target,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub bytes: Vec<u8>,
}

/// Texture sizes: pixels and cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub width: u32,
    pub height: u32,
    pub rows: u32,
    pub cols: u32,
}

pub(crate) fn texture(
    device: &wgpu::Device,
    label: &str,
    w: u32,
    h: u32,
    format: wgpu::TextureFormat,
    storage: bool,
) -> wgpu::Texture {
    let mut usage = wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST;
    if storage {
        usage |= wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC;
    }
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d {
            width: w.max(1),
            height: h.max(1),
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage,
        view_formats: &[],
    })
}

pub(crate) fn texture_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        count: None,
    }
}

pub(crate) fn uniform_entry() -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A full-quad pipeline for `source` with one bind group layout and premultiplied blending.
fn quad_pipeline(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    layout: &wgpu::BindGroupLayout,
    format: wgpu::TextureFormat,
    blend: Option<wgpu::BlendState>,
) -> wgpu::RenderPipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some(label),
        layout: Some(&pipeline_layout),
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs_main"),
            buffers: &[],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        },
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs_main"),
            targets: &[Some(wgpu::ColorTargetState {
                format,
                blend,
                write_mask: wgpu::ColorWrites::ALL,
            })],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        }),
        multiview_mask: None,
        cache: None,
    })
}

/// One texture a pass reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextureSpec {
    pub label: &'static str,
    pub format: wgpu::TextureFormat,
    /// One texel per token cell (otherwise one per canvas pixel).
    pub per_cell: bool,
    /// Also written by compute shaders (the live preview's decoder).
    pub storage: bool,
}

/// What a pass is: its shader, the textures it reads and how it blends.
pub(crate) struct PassDesc<'a> {
    pub label: &'a str,
    pub source: &'a str,
    pub textures: &'a [TextureSpec],
    pub blend: Option<wgpu::BlendState>,
}

/// A full-canvas quad drawn by one shader reading the view uniform and some textures.
pub(crate) struct QuadPass {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    specs: Vec<TextureSpec>,
    textures: Vec<wgpu::Texture>,
    bind_group: wgpu::BindGroup,
}

impl QuadPass {
    pub fn new(
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
        uniform: &wgpu::Buffer,
        extent: Extent,
        desc: &PassDesc,
    ) -> Self {
        let (label, specs) = (desc.label, desc.textures);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = std::iter::once(uniform_entry())
            .chain((0..specs.len()).map(|i| texture_entry(i as u32 + 1)))
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline = quad_pipeline(device, label, desc.source, &layout, format, desc.blend);
        let (textures, bind_group) = Self::bind(device, &layout, uniform, extent, specs);
        Self {
            pipeline,
            layout,
            specs: specs.to_vec(),
            textures,
            bind_group,
        }
    }

    fn bind(
        device: &wgpu::Device,
        layout: &wgpu::BindGroupLayout,
        uniform: &wgpu::Buffer,
        e: Extent,
        specs: &[TextureSpec],
    ) -> (Vec<wgpu::Texture>, wgpu::BindGroup) {
        let textures: Vec<wgpu::Texture> = specs
            .iter()
            .map(|s| {
                let (w, h) = if s.per_cell {
                    (e.cols, e.rows)
                } else {
                    (e.width, e.height)
                };
                texture(device, s.label, w, h, s.format, s.storage)
            })
            .collect();
        let views: Vec<wgpu::TextureView> = textures
            .iter()
            .map(|t| t.create_view(&Default::default()))
            .collect();
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        })
        .chain(views.iter().enumerate().map(|(i, v)| wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: wgpu::BindingResource::TextureView(v),
        }))
        .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout,
            entries: &entries,
        });
        (textures, bind_group)
    }

    /// Recreates the textures for a new canvas size.
    pub fn resize(&mut self, device: &wgpu::Device, uniform: &wgpu::Buffer, extent: Extent) {
        (self.textures, self.bind_group) =
            Self::bind(device, &self.layout, uniform, extent, &self.specs);
    }

    pub fn texture(&self, i: usize) -> &wgpu::Texture {
        &self.textures[i]
    }

    pub fn draw(&self, pass: &mut wgpu::RenderPass<'static>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}

/// The canvas image's texture as the live preview's decoder sees it: set by the renderer
/// whenever it (re)creates the texture, read by the preview thread, which writes decoded cells
/// into it with compute shaders (no read-back). Empty where the adapter cannot write RGBA8
/// storage textures (then previews go through the CPU mirror).
#[derive(Debug, Clone, Default)]
pub struct GpuCanvas(std::sync::Arc<std::sync::Mutex<Option<wgpu::Texture>>>);

impl GpuCanvas {
    /// The current canvas image texture, if the GPU may write it.
    pub fn texture(&self) -> Option<wgpu::Texture> {
        self.0.lock().ok().and_then(|t| t.clone())
    }

    fn set(&self, texture: Option<wgpu::Texture>) {
        if let Ok(mut t) = self.0.lock() {
            *t = texture;
        }
    }
}

/// Everything the canvas needs on the GPU.
pub struct CanvasResources {
    uniform: wgpu::Buffer,
    extent: Extent,
    /// Where the live preview writes (see [`GpuCanvas`]), when the adapter allows.
    target: Option<GpuCanvas>,
    image: QuadPass,
    mask: QuadPass,
    generation: QuadPass,
}

impl CanvasResources {
    /// Registers the resources with eframe's wgpu renderer.
    pub fn install(render_state: &egui_wgpu::RenderState, target: &GpuCanvas) {
        let device = &render_state.device;
        // Compute may write the image texture where RGBA8 storage textures are supported.
        let storage = render_state.adapter.get_info().backend != wgpu::Backend::Gl
            && render_state
                .adapter
                .get_texture_format_features(wgpu::TextureFormat::Rgba8Unorm)
                .allowed_usages
                .contains(wgpu::TextureUsages::STORAGE_BINDING);
        let format = render_state.target_format;
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("canvas view"),
            size: std::mem::size_of::<ViewUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let extent = Extent {
            width: 1,
            height: 1,
            rows: 1,
            cols: 1,
        };
        let res = Self {
            image: canvas_image::pass(device, format, &uniform, extent, storage),
            target: storage.then(|| target.clone()),
            mask: mask_overlay::pass(device, format, &uniform, extent),
            generation: generation_overlay::pass(device, format, &uniform, extent),
            uniform,
            extent,
        };
        if let Some(t) = &res.target {
            t.set(Some(res.image.texture(0).clone()));
        }
        render_state.renderer.write().callback_resources.insert(res);
    }

    fn resize(&mut self, device: &wgpu::Device, extent: Extent) {
        self.image.resize(device, &self.uniform, extent);
        self.mask.resize(device, &self.uniform, extent);
        self.generation.resize(device, &self.uniform, extent);
        self.extent = extent;
        if let Some(t) = &self.target {
            t.set(Some(self.image.texture(0).clone()));
        }
    }

    fn write(&self, queue: &wgpu::Queue, u: &Upload) {
        let (texture, bpp) = match u.target {
            Target::Image => (self.image.texture(0), 4),
            Target::Mask => (self.mask.texture(0), 1),
            Target::MaskCells => (self.mask.texture(1), 1),
            Target::State => (self.generation.texture(0), 4),
        };
        let size = texture.size();
        if u.w == 0
            || u.h == 0
            || u.x + u.w > size.width
            || u.y + u.h > size.height
            || u.bytes.len() != (u.w * u.h * bpp) as usize
        {
            return;
        }
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: u.x,
                    y: u.y,
                    z: 0,
                },
                aspect: wgpu::TextureAspect::All,
            },
            &u.bytes,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(u.w * bpp),
                rows_per_image: Some(u.h),
            },
            wgpu::Extent3d {
                width: u.w,
                height: u.h,
                depth_or_array_layers: 1,
            },
        );
    }
}

/// One frame's paint callback.
pub struct CanvasCallback {
    pub view: ViewUniform,
    pub extent: Extent,
    /// Texture writes not yet applied. Shared with the app and drained when the GPU prepares a
    /// frame: a frame that runs without being painted (a test stepping the UI, a hidden window)
    /// keeps them for the next one that is.
    pub uploads: PendingUploads,
    pub show_mask: bool,
    pub show_generation: bool,
}

impl egui_wgpu::CallbackTrait for CanvasCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<CanvasResources>() else {
            return Vec::new();
        };
        if res.extent != self.extent {
            res.resize(device, self.extent);
        }
        queue.write_buffer(&res.uniform, 0, bytemuck::bytes_of(&self.view));
        for u in self.uploads.take() {
            res.write(queue, &u);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<CanvasResources>() else {
            return;
        };
        res.image.draw(pass);
        if self.show_generation {
            res.generation.draw(pass);
        }
        if self.show_mask {
            res.mask.draw(pass);
        }
    }
}

use eframe::egui;
