//! Every canvas shader and every engine compute shader validates with naga as it is built (the
//! prelude prepended by its owning module), on the CPU, no GPU needed; and every WGSL file in
//! `shaders/` is one of them or a prelude, so none escapes validation.

use std::path::PathBuf;

use arpg_app::studio::gpu::SHADERS;

fn validate(name: &str, source: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    module
}

#[test]
fn every_compute_shader_validates_with_its_entry_points() {
    for (name, source) in arpg_core::gpu::SHADERS {
        let module = validate(name, source);
        let computes = module
            .entry_points
            .iter()
            .filter(|e| e.stage == naga::ShaderStage::Compute)
            .count();
        let want = if name == "vq_attention" { 3 } else { 1 };
        assert_eq!(computes, want, "{name}: compute entry points");
        // The transformer's kernels that read weights take the `WEIGHT` format constant, those
        // that write or read the KV cache the `KV` one.
        let has = |c: &str| {
            module
                .overrides
                .iter()
                .any(|(_, o)| o.name.as_deref() == Some(c))
        };
        let reads_weights = name == "arpg_matmul" || name == "arpg_embed";
        let uses_cache = name == "arpg_rope" || name == "arpg_attention";
        assert_eq!(has("WEIGHT"), reads_weights, "{name}: the WEIGHT override");
        assert_eq!(has("KV"), uses_cache, "{name}: the KV override");
    }
}

#[test]
fn every_shader_validates_as_built() {
    for (name, source) in SHADERS {
        let module = validate(name, source);
        for entry_point in ["vs_main", "fs_main"] {
            assert!(
                module.entry_points.iter().any(|e| e.name == entry_point),
                "{name}: no {entry_point}"
            );
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    for entry in std::fs::read_dir(&dir).expect("shaders dir") {
        let path = entry.expect("entry").path();
        let Some(stem) = path
            .extension()
            .filter(|e| *e == "wgsl")
            .and_then(|_| path.file_stem())
            .and_then(|s| s.to_str())
        else {
            continue;
        };
        assert!(
            stem == "canvas_prelude"
                || ["arpg_weights", "arpg_half", "arpg_kv"].contains(&stem)
                || SHADERS.iter().any(|(n, _)| *n == stem)
                || arpg_core::gpu::SHADERS.iter().any(|(n, _)| *n == stem),
            "{} is not built by any module, so it is never validated",
            path.display()
        );
    }
}
