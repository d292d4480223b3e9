// The VQ decoder's convolutions (1x1 and 3x3, stride 1, zero padding), optionally reading a
// nearest-upsampled input (Upsample's interpolation fused into the conv that follows it) and
// adding a residual (ResnetBlock and AttnBlock outputs). Tensors are f32, [C][H][W], batch 1.
// Each invocation computes 4 output channels of one pixel: the weights are uploaded as
// [cin][k][k][cout rounded up to 4] so those 4 are one vec4 load, and each input value read
// serves 4 products; accumulation is f32.

struct Params {
    cin: u32,
    cout: u32,
    // Output height and width (the upsampled size when `upsample` is 1).
    h: u32,
    w: u32,
    k: u32,
    pad: u32,
    // 1: the input is h/2 x w/2 and is read nearest-upsampled.
    upsample: u32,
    // 1: add `res` ([cout][h][w]) to the result.
    residual: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>; // [cin][k][k][cout/4]
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;


@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ox = gid.x;
    let oy = gid.y;
    let co0 = gid.z * 4u;
    if (ox >= p.w || oy >= p.h || co0 >= p.cout) {
        return;
    }
    let ih = p.h >> p.upsample;
    let iw = p.w >> p.upsample;
    let kk = p.k * p.k;
    let quads = (p.cout + 3u) / 4u;
    let n = min(4u, p.cout - co0);
    var acc = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin; ci++) {
        let plane = ci * ih * iw;
        for (var ky = 0u; ky < p.k; ky++) {
            let yy = i32(oy) + i32(ky) - i32(p.pad);
            if (yy < 0 || yy >= i32(p.h)) {
                continue;
            }
            let row = plane + (u32(yy) >> p.upsample) * iw;
            for (var kx = 0u; kx < p.k; kx++) {
                let xx = i32(ox) + i32(kx) - i32(p.pad);
                if (xx < 0 || xx >= i32(p.w)) {
                    continue;
                }
                let v = x[row + (u32(xx) >> p.upsample)];
                acc += weight[(ci * kk + ky * p.k + kx) * quads + gid.z] * v;
            }
        }
    }
    let hw = p.h * p.w;
    let at = oy * p.w + ox;
    for (var j = 0u; j < n; j++) {
        let o = (co0 + j) * hw + at;
        var v = acc[j] + bias[co0 + j];
        if (p.residual == 1u) {
            v += res[o];
        }
        y[o] = v;
    }
}
