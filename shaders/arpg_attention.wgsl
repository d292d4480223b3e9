// Scaled dot-product attention of query rows over a KV cache (mirrors the attention of
// `Attention.forward` / `CrossAttention.forward`: softmax of q·k / sqrt(head_dim) in f32, then
// the weighted sum of v), heads merged back into `[rows][heads·head_dim]`. The cache is read in
// its format (`arpg_kv.wgsl`).
// One workgroup per (query row, head). Query row r is query `r % nq` of batch row `r / nq`, read
// from q (row stride `q_stride`, head h at column h·head_dim). It sees cache slots
// `0..keys`, and with `causal` only slots `j <= r % nq + offset`. Keys are taken in blocks of
// 256 with a running maximum (online softmax), so the cache may be any length.

struct Params {
    rows: u32,
    nq: u32,
    q_stride: u32,
    heads: u32,
    head_dim: u32,
    cap: u32,
    keys: u32,
    causal: u32,
    offset: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> cache_k: array<u32>;
@group(0) @binding(3) var<storage, read> cache_v: array<u32>;

// Element `i` of a cache, in its format (`arpg_kv.wgsl`).
fn k_at(i: u32) -> f32 {
    if (KV == 0u) {
        return bitcast<f32>(cache_k[i]);
    }
    return kv_unpack(cache_k[i >> 1u], (i & 1u) == 1u);
}

fn v_at(i: u32) -> f32 {
    if (KV == 0u) {
        return bitcast<f32>(cache_v[i]);
    }
    return kv_unpack(cache_v[i >> 1u], (i & 1u) == 1u);
}
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const BLOCK: u32 = 256u;
const MAX_HEAD_DIM: u32 = 256u;
var<workgroup> qv: array<f32, 256>;
var<workgroup> scores: array<f32, 256>;
var<workgroup> partial: array<f32, 64>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let m = partial[0];
    workgroupBarrier();
    return m;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
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

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x;
    let h = wid.y;
    let d = p.head_dim;
    let b = r / p.nq;
    let i = r % p.nq;
    for (var e = lid; e < d; e += WG) {
        qv[e] = q[r * p.q_stride + h * d + e];
    }
    workgroupBarrier();
    var limit = p.keys;
    if (p.causal == 1u) {
        limit = min(limit, i + p.offset + 1u);
    }
    let head = (b * p.heads + h) * p.cap;
    var run_max = -3.4e38;
    var run_sum = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var k0 = 0u; k0 < limit; k0 += BLOCK) {
        let n = min(BLOCK, limit - k0);
        var local_max = -3.4e38;
        for (var j = lid; j < n; j += WG) {
            let kb = (head + k0 + j) * d;
            var s = 0.0;
            for (var e = 0u; e < d; e++) {
                s += qv[e] * k_at(kb + e);
            }
            s = s * p.scale;
            scores[j] = s;
            local_max = max(local_max, s);
        }
        let block_max = reduce_max(lid, local_max);
        let new_max = max(run_max, block_max);
        let correction = exp(run_max - new_max);
        var local_sum = 0.0;
        for (var j = lid; j < n; j += WG) {
            let e = exp(scores[j] - new_max);
            scores[j] = e;
            local_sum += e;
        }
        let block_sum = reduce_sum(lid, local_sum);
        run_sum = run_sum * correction + block_sum;
        for (var t = 0u; t < 4u; t++) {
            let e = lid + t * WG;
            if (e < d) {
                var s = acc[t] * correction;
                for (var j = 0u; j < n; j++) {
                    s += scores[j] * v_at((head + k0 + j) * d + e);
                }
                acc[t] = s;
            }
        }
        run_max = new_max;
        workgroupBarrier();
    }
    for (var t = 0u; t < 4u; t++) {
        let e = lid + t * WG;
        if (e < d) {
            var v = 0.0;
            if (run_sum > 0.0) {
                v = acc[t] / run_sum;
            }
            out[r * p.heads * d + h * d + e] = v;
        }
    }
}
