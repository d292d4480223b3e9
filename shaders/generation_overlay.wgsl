// The generation overlay: cells not decided yet get a quiet diagonal hatch, cells decided in the
// latest step glow briefly, an optional map colours each decided cell by what the run recorded
// about it (its token's probability, or the step it was decided at), and an optional grid marks
// token boundaries.

// One texel per token cell: r = 1 undecided, g = 1 decided in the latest step, b = the
// probability of its token, a = 0 nothing recorded, else 1/255 + the step scaled to the run.
// view.params: time, highlight strength, grid on, map (0 none, 1 confidence, 2 order).
@group(0) @binding(1) var state_tex: texture_2d<f32>;

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let cells = view.size.zw;
    let cell = vec2<i32>(floor(in.uv * cells));
    let state = textureLoad(state_tex, clamp(cell, vec2(0), vec2<i32>(cells) - 1), 0);
    // Position inside the cell, 0..1.
    let f = fract(in.uv * cells);
    var color = vec4(0.0);
    if (state.r > 0.5) {
        // Undecided: dark veil with a thin diagonal hatch.
        let hatch = step(0.85, fract((f.x + f.y) * 2.0));
        let a = 0.55 + 0.2 * hatch;
        color = vec4(vec3(0.08, 0.09, 0.11) * a, a);
    }
    let mode = view.params.w;
    if (mode > 0.5 && state.a > 0.0) {
        // A translucent wash so the image stays readable under the map.
        var tint = vec3(0.0);
        if (mode < 1.5) {
            // Confidence: red (unlikely) through yellow to green (likely).
            let p = state.b;
            tint = mix(mix(vec3(0.9, 0.1, 0.1), vec3(0.95, 0.85, 0.1), clamp(p * 2.0, 0.0, 1.0)),
                vec3(0.1, 0.8, 0.2), clamp(p * 2.0 - 1.0, 0.0, 1.0));
        } else {
            // Order: deep blue for the first step through teal to yellow for the last.
            let t = clamp((state.a * 255.0 - 1.0) / 254.0, 0.0, 1.0);
            tint = mix(mix(vec3(0.15, 0.1, 0.6), vec3(0.1, 0.65, 0.6), clamp(t * 2.0, 0.0, 1.0)),
                vec3(0.98, 0.9, 0.15), clamp(t * 2.0 - 1.0, 0.0, 1.0));
        }
        let a = 0.6;
        color = vec4(tint * a, a);
    }
    if (state.g > 0.5) {
        // Decided in the latest step: a bright rim that fades with params.y.
        let rim = 1.0 - step(0.12, min(min(f.x, f.y), min(1.0 - f.x, 1.0 - f.y)));
        let a = view.params.y * (0.25 + 0.6 * rim);
        color = vec4(vec3(1.0, 0.85, 0.3) * a, a);
    }
    if (view.params.z > 0.5) {
        let line = 1.0 - step(0.03, min(min(f.x, f.y), min(1.0 - f.x, 1.0 - f.y)));
        let a = max(color.a, 0.35 * line);
        color = vec4(mix(color.rgb, vec3(0.35), 0.35 * line), a);
    }
    return color;
}
