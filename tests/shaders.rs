//! Every WGSL file in `shaders/` parses and validates with naga (CPU only, no GPU needed).

use std::path::PathBuf;

#[test]
fn every_shader_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("read");
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for entry_point in ["vs_main", "fs_main"] {
            assert!(
                module.entry_points.iter().any(|e| e.name == entry_point),
                "{}: no {entry_point}",
                path.display()
            );
        }
        count += 1;
    }
    assert_eq!(count, 3, "expected the three canvas shaders");
}
