// Embedding lookup (`nn.Embedding`): row `ids[id_offset + r]` of the table (in the model's
// weight format, see arpg_weights.wgsl) → row r of y `[rows][dim]` f32. The fed tokens and the
// cross-decoder's mask-token queries both come through here.

struct Params {
    rows: u32,
    dim: u32,
    id_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let r = gid.y;
    if (c >= p.dim || r >= p.rows) {
        return;
    }
    y[r * p.dim + c] = weight_at(ids[p.id_offset + r] * p.dim + c);
}
