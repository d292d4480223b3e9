//! Helpers of the tests that run the `arpg` binary (included by the app crate's test targets
//! only: `CARGO_BIN_EXE_arpg` exists there).
// Each test target uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `shared/fixtures/field` beside the checkout.
pub fn field() -> PathBuf {
    let dir = crate::common::fixtures().join("../field");
    assert!(
        dir.join("README.md").is_file(),
        "field fixtures not found at {}",
        dir.display()
    );
    dir
}

pub fn arpg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arpg"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("spawn arpg")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

pub fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "arpg failed:\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// Exit code 1, exactly one `error:` line, no panic; `needle` in it.
pub fn clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic reached the user: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "`{needle}` not in: {err}"
    );
}
