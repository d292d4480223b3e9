// The canvas image: the current picture (preview tiles while generating, the VQ decode once
// done), drawn as a textured quad over the canvas rectangle with nearest-neighbour sampling so
// that token cells stay crisp at any zoom.

@group(0) @binding(1) var image_tex: texture_2d<f32>;

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let px = vec2<i32>(floor(in.uv * view.size.xy));
    let texel = textureLoad(image_tex, clamp(px, vec2(0), vec2<i32>(view.size.xy) - 1), 0);
    return vec4(texel.rgb, 1.0);
}
