// The decoded image [3][H][W] (f32, about [-1, 1]) into the cells of an RGBA8 storage texture
// that `cells` marks (1 = write), converted with the CPU's rule: clamp(127.5 v + 128, 0, 255)
// truncated. The live preview writes the canvas texture this way, with no read-back.

struct Params {
    h: u32,
    w: u32,
    cols: u32,
    cell_px: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> planes: array<f32>;
@group(0) @binding(2) var<storage, read> cells: array<u32>;
@group(0) @binding(3) var out: texture_storage_2d<rgba8unorm, write>;

fn level(v: f32) -> f32 {
    return floor(clamp(v * 127.5 + 128.0, 0.0, 255.0)) / 255.0;
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    if (x >= p.w || y >= p.h) {
        return;
    }
    if (cells[(y / p.cell_px) * p.cols + x / p.cell_px] == 0u) {
        return;
    }
    let hw = p.h * p.w;
    let i = y * p.w + x;
    let rgb = vec4<f32>(level(planes[i]), level(planes[hw + i]), level(planes[2u * hw + i]), 1.0);
    textureStore(out, vec2<i32>(i32(x), i32(y)), rgb);
}
