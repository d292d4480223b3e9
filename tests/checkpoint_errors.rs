//! Every broken checkpoint gets a clear error; nothing panics or loads partially.

mod common;

use arpg_core::config::ArpgConfig;
use arpg_core::loader;
use arpg_core::reference::FixtureSet;
use arpg_core::Error;
use candle_core::{DType, Device};

fn tiny_cfg() -> ArpgConfig {
    FixtureSet::open(common::tiny())
        .expect("set")
        .arpg_config()
        .expect("config")
}

fn load(path: &std::path::Path) -> Error {
    loader::load_arpg(path, Some(tiny_cfg()), DType::F32, &Device::Cpu).expect_err("must fail")
}

#[test]
fn missing_key_is_named() {
    match load(&common::layouts().join("bad_gpt_missing_key.pt")) {
        Error::MissingKeys { missing, path, .. } => {
            assert_eq!(missing.len(), 1);
            assert!(missing[0].ends_with(".weight"), "{missing:?}");
            assert!(path.ends_with("bad_gpt_missing_key.pt"));
        }
        e => panic!("expected MissingKeys, got {e}"),
    }
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let e = load(&common::layouts().join("bad_gpt_wrong_shape.pt"));
    match &e {
        Error::WrongShape {
            key,
            expected,
            found,
            ..
        } => {
            assert!(key.ends_with("to_q.weight"), "{key}");
            assert_eq!(expected, &vec![64, 64]);
            assert_eq!(found, &vec![64, 63]);
        }
        e => panic!("expected WrongShape, got {e}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("[64, 63]")
            && msg.contains("[64, 64]")
            && msg.contains("bad_gpt_wrong_shape.pt"),
        "{msg}"
    );
}

#[test]
fn truncated_file_is_reported() {
    let e = load(&common::layouts().join("bad_gpt_truncated.pt"));
    assert!(matches!(e, Error::NotACheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn plain_bytes_are_not_a_checkpoint() {
    let e = load(&common::layouts().join("bad_not_a_checkpoint.pt"));
    assert!(matches!(e, Error::NotACheckpoint { .. }), "{e}");
}

#[test]
fn optimizer_only_file_has_no_weights() {
    let e = load(&common::layouts().join("bad_no_weights.pt"));
    assert!(matches!(e, Error::NoWeights { .. }), "{e}");
    assert!(e.to_string().contains("no weights found"), "{e}");
}

#[test]
fn legacy_pickle_empty_and_missing_files() {
    let dir = common::temp_dir("legacy");
    let legacy = dir.join("legacy.pt");
    std::fs::write(
        &legacy,
        [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20],
    )
    .expect("write");
    let e = load(&legacy);
    assert!(e.to_string().contains("legacy"), "{e}");
    let empty = dir.join("empty.pt");
    std::fs::write(&empty, b"").expect("write");
    assert!(matches!(load(&empty), Error::NotACheckpoint { .. }));
    assert!(matches!(load(&dir.join("absent.pt")), Error::Io { .. }));
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = common::temp_dir("st");
    let bytes = std::fs::read(common::tiny().join("gpt.safetensors")).expect("read");
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = load(&cut);
    assert!(matches!(e, Error::NotACheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}
