// Shared by the transformer's kernels that read weights (`gpu::SHADERS` appends it to them):
// every weight is stored as 32-bit words, so one shader serves f32, f16 and bf16 weights with
// no optional feature (`shader-f16`) or capability. `WEIGHT` (an override constant, fixed when
// the pipeline is built): 0 = f32 (one element a word), 1 = f16, 2 = bf16 (two elements a word,
// element 2i in the low half). Values are widened to f32 exactly (`arpg_half.wgsl`); arithmetic
// is f32.

override WEIGHT: u32 = 0u;

fn weight_at(i: u32) -> f32 {
    if (WEIGHT == 0u) {
        return bitcast<f32>(w[i]);
    }
    let word = w[i >> 1u];
    let high = (i & 1u) == 1u;
    if (WEIGHT == 1u) {
        return f16_bits_to_f32(select(word & 0xffffu, word >> 16u, high));
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}
