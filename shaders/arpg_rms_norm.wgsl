// RMSNorm (mirrors `RMSNorm.forward`: `x * rsqrt(mean(x²) + eps) * weight`, statistics in f32).
// One workgroup per row; x, y `[rows][dim]` f32, weight `[dim]` f32.

struct Params {
    dim: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wid.x * p.dim;
    var s = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid < h) {
            partial[lid] += partial[lid + h];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        y[base + i] = x[base + i] * inv * gamma[i];
    }
}
