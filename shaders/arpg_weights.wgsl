// Shared by the transformer's kernels that read weights (prepended by `gpu/arpg.rs`): every
// weight is stored as 32-bit words, so one shader serves f32, f16 and bf16 weights without the
// optional `shader-f16` feature. `WEIGHT` (an override constant, fixed when the pipeline is
// built): 0 = f32 (one element a word), 1 = f16, 2 = bf16 (two elements a word, element 2i in
// the low half). Values are widened to f32 exactly; arithmetic is f32.

override WEIGHT: u32 = 0u;

fn weight_at(i: u32) -> f32 {
    if (WEIGHT == 0u) {
        return bitcast<f32>(w[i]);
    }
    let word = w[i >> 1u];
    let high = (i & 1u) == 1u;
    if (WEIGHT == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}
