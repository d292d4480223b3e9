// GroupNorm (mean and variance of each group in two passes over it, as the reference computes
// them), the affine weights, and optionally SiLU (`nonlinearity` after `Normalize`).
// One workgroup per group; tensors f32 [C][H][W], batch 1.

struct Params {
    c: u32,
    hw: u32,
    groups: u32,
    silu: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// The sum of every invocation's `v`, returned to all of them.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cg = p.c / p.groups;
    let n = cg * p.hw;
    let base = wid.x * n;
    var s = 0.0;
    for (var i = lid; i < n; i += WG) {
        s += x[base + i];
    }
    let mean = workgroup_sum(lid, s) / f32(n);
    var q = 0.0;
    for (var i = lid; i < n; i += WG) {
        let d = x[base + i] - mean;
        q += d * d;
    }
    let inv = inverseSqrt(workgroup_sum(lid, q) / f32(n) + p.eps);
    for (var i = lid; i < n; i += WG) {
        let c = wid.x * cg + i / p.hw;
        var v = (x[base + i] - mean) * inv * gamma[c] + beta[c];
        if (p.silu == 1u) {
            v = v / (1.0 + exp(-v));
        }
        y[base + i] = v;
    }
}
