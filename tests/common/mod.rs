//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `shared/fixtures/reference` beside the checkout (override with `ARPG_FIXTURES`).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("ARPG_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/reference")
        });
    assert!(
        dir.join("tiny/manifest.json").is_file(),
        "reference fixtures not found at {} (set ARPG_FIXTURES)",
        dir.display()
    );
    dir
}

pub fn tiny() -> PathBuf {
    fixtures().join("tiny")
}

pub fn layouts() -> PathBuf {
    tiny().join("layouts")
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arpg-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Largest absolute elementwise difference of two tensors of one shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar")
}

/// The `tokens` array of an `arpg` metadata JSON.
pub fn tokens(meta: &serde_json::Value) -> Vec<u64> {
    meta["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("u64"))
        .collect()
}

/// The field photo (`shared/fixtures/field/photo_1000x700.jpg`) resized to `width x height`,
/// RGB8.
pub fn field_photo(width: usize, height: usize) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/field/photo_1000x700.jpg");
    let pic = arpg_core::document::import_image(&path).expect("field photo");
    arpg_core::pixels::resize::<image::Rgb<u8>>(pic.rgb, (pic.width, pic.height), (width, height))
        .expect("resize")
}
