// `y = x Wᵀ` (or `y += x Wᵀ`, the residual stream's update): x `[m][k]` f32 (row stride
// `x_stride`), W `[n][k]` in the model's weight format (see arpg_weights.wgsl), y `[m][n]` f32
// (row stride `y_stride`). Mirrors `nn.Linear(bias=False)`. Tiles of 32 x 32 outputs per
// workgroup through workgroup memory, k in steps of 32; each invocation owns 2 x 2 outputs.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    x_stride: u32,
    y_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const T: u32 = 32u;
var<workgroup> xs: array<array<f32, 33>, 32>;
var<workgroup> ws: array<array<f32, 33>, 32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * T;
    let col0 = wid.x * T;
    let li = lid.y * 16u + lid.x;
    var a00 = 0.0;
    var a01 = 0.0;
    var a10 = 0.0;
    var a11 = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += T) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let r = idx / T;
            let c = idx % T;
            let gk = k0 + c;
            var xv = 0.0;
            if (row0 + r < p.m && gk < p.k) {
                xv = x[(row0 + r) * p.x_stride + gk];
            }
            xs[r][c] = xv;
            var wv = 0.0;
            if (col0 + r < p.n && gk < p.k) {
                wv = weight_at((col0 + r) * p.k + gk);
            }
            ws[r][c] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            let x0 = xs[lid.y][kk];
            let x1 = xs[lid.y + 16u][kk];
            let w0 = ws[lid.x][kk];
            let w1 = ws[lid.x + 16u][kk];
            a00 += x0 * w0;
            a01 += x0 * w1;
            a10 += x1 * w0;
            a11 += x1 * w1;
        }
        workgroupBarrier();
    }
    let r0 = row0 + lid.y;
    let c0 = col0 + lid.x;
    store(r0, c0, a00);
    store(r0, c0 + 16u, a01);
    store(r0 + 16u, c0, a10);
    store(r0 + 16u, c0 + 16u, a11);
}

fn store(r: u32, c: u32, v: f32) {
    if (r < p.m && c < p.n) {
        let i = r * p.y_stride + c;
        if (p.accumulate == 1u) {
            y[i] = y[i] + v;
        } else {
            y[i] = v;
        }
    }
}
