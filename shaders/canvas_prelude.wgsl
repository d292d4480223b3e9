// The prelude every canvas shader is built with (WGSL has no include: the module that owns a
// shader prepends this file to it, and the naga test validates each shader as built): the view
// uniform at binding 0 and the quad every canvas pass draws over the canvas rectangle.

struct View {
    // Canvas rectangle in clip space: (left, top, right, bottom).
    rect: vec4<f32>,
    // Canvas size in pixels (x, y) and in token cells (z, w).
    size: vec4<f32>,
    // Seconds since start (x), highlight strength of the latest step (y), show grid (z), the
    // generation overlay's map (w: 0 none, 1 confidence, 2 order).
    params: vec4<f32>,
};

@group(0) @binding(0) var<uniform> view: View;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// A quad as two triangles from the vertex index; uv (0,0) is the canvas's top-left pixel.
@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VertexOut {
    var corners = array<vec2<f32>, 6>(
        vec2(0.0, 0.0), vec2(1.0, 0.0), vec2(0.0, 1.0),
        vec2(0.0, 1.0), vec2(1.0, 0.0), vec2(1.0, 1.0),
    );
    let uv = corners[i];
    var out: VertexOut;
    out.position = vec4(mix(view.rect.x, view.rect.z, uv.x), mix(view.rect.y, view.rect.w, uv.y), 0.0, 1.0);
    out.uv = uv;
    return out;
}

