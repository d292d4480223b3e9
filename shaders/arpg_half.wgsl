// 16-bit floats by bit arithmetic, for the transformer's kernels (`gpu::SHADERS` appends it to
// those that store or read 16-bit values): no device capability needed (`pack2x16float` and
// `unpack2x16float` ask for one some backends lack).

// IEEE half → single, exactly (normals, subnormals, infinities, NaN), by bit arithmetic: no
// device capability needed (`unpack2x16float` asks for one some backends lack).
fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let mant = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: mant x 2^-24.
        return bitcast<f32>(sign | bitcast<u32>(f32(mant) * 5.9604645e-8));
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (mant << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (mant << 13u));
}

// Single → IEEE half bits, rounded to nearest even (subnormals, overflow to infinity, NaN kept).
fn f32_to_f16_bits(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 16u) & 0x8000u;
    let biased = (x >> 23u) & 0xffu;
    var m = x & 0x7fffffu;
    if (biased == 0xffu) {
        return sign | 0x7c00u | select(0u, 0x200u, m != 0u);
    }
    let e = i32(biased) - 112;
    if (e >= 31) {
        return sign | 0x7c00u;
    }
    if (e <= 0) {
        if (e < -10) {
            return sign;
        }
        m = m | 0x800000u;
        let shift = u32(14 - e);
        var h = m >> shift;
        let rest = m & ((1u << shift) - 1u);
        let halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (h & 1u) == 1u)) {
            h += 1u;
        }
        return sign | h;
    }
    var h = (u32(e) << 10u) | (m >> 13u);
    let rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
        h += 1u;
    }
    return sign | h;
}

// Single → bf16 bits, rounded to nearest even (NaN kept a quiet NaN).
fn f32_to_bf16_bits(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return ((x >> 16u) & 0x8000u) | 0x7fc0u;
    }
    return (x + 0x7fffu + ((x >> 16u) & 1u)) >> 16u;
}
