// The canvas image: the current picture (preview tiles while generating, the VQ decode once
// done), drawn as a textured quad over the canvas rectangle with nearest-neighbour sampling so
// that token cells stay crisp at any zoom.

struct View {
    // Canvas rectangle in clip space: (left, top, right, bottom).
    rect: vec4<f32>,
    // Canvas size in pixels (x, y) and in token cells (z, w).
    size: vec4<f32>,
    // Seconds since start (x), highlight strength of the latest step (y), show grid (z), unused (w).
    params: vec4<f32>,
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var image_tex: texture_2d<f32>;

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

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let px = vec2<i32>(floor(in.uv * view.size.xy));
    let texel = textureLoad(image_tex, clamp(px, vec2(0), vec2<i32>(view.size.xy) - 1), 0);
    return vec4(texel.rgb, 1.0);
}
