// The mask overlay: a translucent tint over painted pixels, a crisp outline where the mask ends,
// and a faint fill of the token cells the mask touches (what will actually be regenerated).

// One byte per pixel: 255 = masked.
@group(0) @binding(1) var mask_tex: texture_2d<f32>;
// One byte per token cell: 255 = the cell will be regenerated.
@group(0) @binding(2) var cells_tex: texture_2d<f32>;

fn masked(px: vec2<i32>) -> f32 {
    let p = clamp(px, vec2(0), vec2<i32>(view.size.xy) - 1);
    return textureLoad(mask_tex, p, 0).r;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let px = vec2<i32>(floor(in.uv * view.size.xy));
    let cell = vec2<i32>(floor(in.uv * view.size.zw));
    let m = masked(px);
    let in_cell = textureLoad(cells_tex, clamp(cell, vec2(0), vec2<i32>(view.size.zw) - 1), 0).r;
    // Outline: a masked pixel with an unmasked 4-neighbour.
    let edge = m * (1.0 - min(min(masked(px + vec2(1, 0)), masked(px - vec2(1, 0))),
                              min(masked(px + vec2(0, 1)), masked(px - vec2(0, 1)))));
    let tint = vec4(1.0, 0.25, 0.45, 1.0);
    let alpha = max(max(0.40 * m, 0.15 * in_cell), 0.9 * edge);
    // Premultiplied alpha.
    return vec4(tint.rgb * alpha, alpha);
}
