//! Inputs the fuzz harness (`tests/fuzz/`) found crashing the readers, replayed: each must come
//! back as a value or an error, never a panic or an abort.

use std::path::{Path, PathBuf};

fn regressions(prefix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fuzz/regressions")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn metadata_inputs_that_declared_huge_images_are_read_without_allocating_them() {
    let files = regressions("metadata-");
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        // Declared sizes above the limits are an error; the point is that this returns at all.
        let _ = arpg_core::document::read_metadata(&bytes);
        let _ = arpg_core::document::decode_image(&bytes, &f);
    }
}

#[test]
fn pickles_that_make_the_parser_panic_are_read_without_panicking() {
    let files = regressions("checkpoint-");
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        // The harness's first byte selects the route: even = a bare pickle.
        // (Found with overflow checks on, where the pickle reader formerly used, candle's,
        // panicked decoding LONG1.)
        if bytes.first().is_some_and(|b| b % 2 == 0) {
            let _ = arpg_core::checkpoint::index_pickle(&bytes[1..], "archive/data");
        }
    }
}
