// The KV cache's element format (`gpu::SHADERS` appends it to the kernels that write and read
// the cache): `KV` (an override constant, fixed when the pipeline is built) 0 = f32 (one element
// a word), 1 = f16, 2 = bf16 (two elements a word, element 2i in the low half; rounded to
// nearest even when written, widened exactly when read). The 16-bit formats follow the
// weights' dtype, as candle's GPU path keeps its cache in the weights' dtype.

override KV: u32 = 0u;

// Two consecutive elements as one word (16-bit formats only).
fn kv_pack(a: f32, b: f32) -> u32 {
    if (KV == 1u) {
        return f32_to_f16_bits(a) | (f32_to_f16_bits(b) << 16u);
    }
    return f32_to_bf16_bits(a) | (f32_to_bf16_bits(b) << 16u);
}

// Element `high` (0 or 1) of a word of a 16-bit format.
fn kv_unpack(word: u32, high: bool) -> f32 {
    if (KV == 1u) {
        return f16_bits_to_f32(select(word & 0xffffu, word >> 16u, high));
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}
