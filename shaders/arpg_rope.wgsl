// 2-D RoPE (mirrors `apply_rotary_emb`: interleaved pairs (2i, 2i+1) of each head turned by the
// table row of the token's cell) and the KV cache write of a projection's output.
// src `[rows][..]` (row stride `stride`) holds q at column `q_col`, k at `k_col`, v at `v_col`
// (`NONE`: absent); row r is token `r % m` of batch row `r / m`. q is rotated in place; k is
// rotated and v copied into the cache `[batch][heads][cap][head_dim]` at slot `len + r % m`, in
// the cache's format (`arpg_kv.wgsl`).
// One invocation per (token, rotation pair of all heads).

struct Params {
    rows: u32,
    m: u32,
    stride: u32,
    q_col: u32,
    k_col: u32,
    v_col: u32,
    heads: u32,
    head_dim: u32,
    cap: u32,
    len: u32,
    row_offset: u32,
    _pad: u32,
}

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> src: array<f32>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read> rope_rows: array<u32>;
@group(0) @binding(5) var<storage, read_write> cache_k: array<u32>;
@group(0) @binding(6) var<storage, read_write> cache_v: array<u32>;

// Elements `i` and `i + 1` (i even) of a cache.
fn store_k(i: u32, a: f32, b: f32) {
    if (KV == 0u) {
        cache_k[i] = bitcast<u32>(a);
        cache_k[i + 1u] = bitcast<u32>(b);
    } else {
        cache_k[i / 2u] = kv_pack(a, b);
    }
}

fn store_v(i: u32, a: f32, b: f32) {
    if (KV == 0u) {
        cache_v[i] = bitcast<u32>(a);
        cache_v[i + 1u] = bitcast<u32>(b);
    } else {
        cache_v[i / 2u] = kv_pack(a, b);
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.head_dim / 2u;
    let j = gid.x;
    let r = gid.y;
    if (j >= p.heads * half || r >= p.rows) {
        return;
    }
    let h = j / half;
    let jj = j % half;
    let t = rope_rows[p.row_offset + r] * half + jj;
    let c = cos_t[t];
    let s = sin_t[t];
    let col = h * p.head_dim + 2u * jj;
    let base = r * p.stride;
    if (p.q_col != NONE) {
        let i = base + p.q_col + col;
        let a = src[i];
        let b = src[i + 1u];
        src[i] = a * c - b * s;
        src[i + 1u] = b * c + a * s;
    }
    let slot = ((r / p.m * p.heads + h) * p.cap + p.len + r % p.m) * p.head_dim + 2u * jj;
    if (p.k_col != NONE) {
        let i = base + p.k_col + col;
        let a = src[i];
        let b = src[i + 1u];
        store_k(slot, a * c - b * s, b * c + a * s);
    }
    if (p.v_col != NONE) {
        let i = base + p.v_col + col;
        store_v(slot, src[i], src[i + 1u]);
    }
}
