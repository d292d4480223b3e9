// Codebook lookup (get_codebook_entry, channel first): tokens [N] to the latent [E][N] from the
// l2-normalised codebook [V][E]. Tokens are checked against V on the host.

struct Params {
    n: u32,
    e: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> codebook: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let e = gid.y;
    if (i >= p.n || e >= p.e) {
        return;
    }
    z[e * p.n + i] = codebook[tokens[i] * p.e + e];
}
