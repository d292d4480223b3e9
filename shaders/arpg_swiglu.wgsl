// The SwiGLU gate of `FeedForward.forward`: `silu(w1 x) * (w3 x)`. h `[rows][2·hidden]` holds
// the fused w1/w3 product (w1's columns first); g `[rows][hidden]` f32.

struct Params {
    rows: u32,
    hidden: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let r = gid.y;
    if (c >= p.hidden || r >= p.rows) {
        return;
    }
    let a = h[r * 2u * p.hidden + c];
    let b = h[r * 2u * p.hidden + p.hidden + c];
    g[r * p.hidden + c] = a / (1.0 + exp(-a)) * b;
}
