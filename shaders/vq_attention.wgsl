// The VQ mid-block attention (AttnBlock): softmax(q k^T / sqrt(C)) v over the N = h*w
// positions, single head, computed for a block of query rows at a time so the scores take
// rows x N floats. q, k, v, out are f32 [C][N] (the 1x1 convs' layout); scores [rows][N].
// Three entry points, dispatched in order for each block: `scores`, `softmax`, `weighted`.

struct Params {
    c: u32,
    n: u32,
    // First query row of this block, and how many rows it has.
    row0: u32,
    rows: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> s: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// s[i][j] = scale * sum_c q[c][row0 + i] k[c][j]
@compute @workgroup_size(64, 4, 1)
fn scores(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    if (j >= p.n || i >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var c = 0u; c < p.c; c++) {
        acc += q[c * p.n + p.row0 + i] * k[c * p.n + j];
    }
    s[i * p.n + j] = acc * p.scale;
}

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// Row-wise softmax of s in place, one workgroup per row.
@compute @workgroup_size(256, 1, 1)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wid.x * p.n;
    var m = -3.4028235e38;
    for (var j = lid; j < p.n; j += WG) {
        m = max(m, s[base + j]);
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st / 2u) {
        if (lid < st) {
            partial[lid] = max(partial[lid], partial[lid + st]);
        }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        let e = exp(s[base + j] - row_max);
        s[base + j] = e;
        sum += e;
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st / 2u) {
        if (lid < st) {
            partial[lid] += partial[lid + st];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / partial[0];
    for (var j = lid; j < p.n; j += WG) {
        s[base + j] *= inv;
    }
}

// out[c][row0 + i] = sum_j s[i][j] v[c][j]
@compute @workgroup_size(64, 4, 1)
fn weighted(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let c = gid.y;
    if (i >= p.rows || c >= p.c) {
        return;
    }
    var acc = 0.0;
    for (var j = 0u; j < p.n; j++) {
        acc += s[i * p.n + j] * v[c * p.n + j];
    }
    out[c * p.n + p.row0 + i] = acc;
}
