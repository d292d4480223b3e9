//! Every broken checkpoint gets a clear error; nothing panics or loads partially.

mod common;
#[path = "common/torch.rs"]
mod torch;

use std::path::Path;

use arpg_core::checkpoint::Checkpoint;
use arpg_core::config::ArpgConfig;
use arpg_core::loader;
use arpg_core::reference::FixtureSet;
use arpg_core::Error;
use candle_core::{DType, Device};
use torch::{f32_bytes, stored, write_pt, write_safetensors, write_torch_save, Stored};

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

// ---- Checkpoints built by hand: pickle protocols 2, 4 and 5; 8-bit floats; other dtypes ----

fn values(ckpt: &Checkpoint, name: &str) -> Vec<f32> {
    ckpt.read(name, DType::F32, &Device::Cpu)
        .expect("read")
        .flatten_all()
        .expect("flatten")
        .to_vec1::<f32>()
        .expect("vec")
}

/// A small state dict with every kind of tensor record the reader distinguishes.
fn mixed_tensors() -> Vec<Stored> {
    let bf16: Vec<u8> = [9.0f32, 9.0, 0.5, -1.5, 2.0, 1024.0]
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let f16: Vec<u8> = [0.25f32, -3.0, 65504.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    vec![
        Stored {
            parameter: true,
            ..stored(
                "embed.weight",
                "FloatStorage",
                &[2, 3],
                f32_bytes(&[1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]),
            )
        },
        stored("head.bias", "HalfStorage", &[3], f16),
        // A view 2 elements into its storage: the offset is in elements, not bytes.
        Stored {
            offset: 2,
            ..stored("norm.weight", "BFloat16Storage", &[4], bf16)
        },
        stored(
            "fp8.weight",
            "Float8_e4m3fnStorage",
            &[2, 2],
            vec![0x38, 0x7e, 0x01, 0xb8],
        ),
        stored(
            "fp8_e5m2.weight",
            "Float8_e5m2Storage",
            &[2],
            vec![0x3c, 0x7b],
        ),
        stored("steps", "IntStorage", &[], 7i32.to_le_bytes().to_vec()),
    ]
}

#[test]
fn pickle_protocols_2_4_and_5_read_the_same() {
    let dir = common::temp_dir("protocols");
    let tensors = mixed_tensors();
    let mut seen = Vec::new();
    for proto in [2u8, 4, 5] {
        let path = dir.join(format!("p{proto}.pt"));
        write_torch_save(&path, proto, &tensors);
        let ckpt = Checkpoint::open(&path).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        assert_eq!(ckpt.weights_key(), Some("model"));
        assert_eq!(ckpt.skipped(), ["steps"], "protocol {proto}");
        let summary: Vec<(String, Vec<usize>, DType, &str)> = ckpt
            .entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.shape.clone(), e.dtype, e.stored_dtype_name()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("embed.weight".into(), vec![2, 3], DType::F32, "f32"),
                ("fp8.weight".into(), vec![2, 2], DType::BF16, "f8e4m3"),
                ("fp8_e5m2.weight".into(), vec![2], DType::BF16, "f8e5m2"),
                ("head.bias".into(), vec![3], DType::F16, "f16"),
                ("norm.weight".into(), vec![4], DType::BF16, "bf16"),
            ],
            "protocol {proto}"
        );
        assert_eq!(
            values(&ckpt, "embed.weight"),
            [1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]
        );
        assert_eq!(values(&ckpt, "head.bias"), [0.25, -3.0, 65504.0]);
        assert_eq!(values(&ckpt, "norm.weight"), [0.5, -1.5, 2.0, 1024.0]);
        assert_eq!(
            values(&ckpt, "fp8.weight"),
            [1.0, 448.0, 2f32.powi(-9), -1.0]
        );
        assert_eq!(values(&ckpt, "fp8_e5m2.weight"), [1.0, 57344.0]);
        let e = ckpt
            .read("steps", DType::F32, &Device::Cpu)
            .expect_err("int storage");
        assert!(
            matches!(&e, Error::UnusableTensor { key, .. } if key == "steps")
                && e.to_string().contains("torch.IntStorage"),
            "{e}"
        );
        seen.push((summary, ckpt.shape_map()));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn the_published_protocol_2_file_and_a_protocol_4_copy_read_identically() {
    let original = Checkpoint::open(common::tiny().join("tiny_gpt.pt")).expect("open");
    let names: Vec<String> = original.entries().keys().cloned().collect();
    let tensors: Vec<Stored> = names
        .iter()
        .map(|name| {
            let e = &original.entries()[name];
            assert_eq!(e.dtype, DType::F32);
            stored(
                name,
                "FloatStorage",
                &e.shape,
                f32_bytes(&values(&original, name)),
            )
        })
        .collect();
    let path = common::temp_dir("republished").join("tiny_gpt_p4.pt");
    write_torch_save(&path, 4, &tensors);
    let copy = Checkpoint::open(&path).expect("open copy");
    assert_eq!(copy.shape_map(), original.shape_map());
    assert!(copy.skipped().is_empty() && original.skipped().is_empty());
    for name in &names {
        let (a, b) = (values(&original, name), values(&copy, name));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}"
        );
    }
    // And the copy loads as the model the original is.
    loader::load_arpg(&path, Some(tiny_cfg()), DType::F32, &Device::Cpu).expect("load copy");
}

#[test]
fn opcodes_that_need_out_of_band_data_are_named() {
    let dir = common::temp_dir("buffer");
    let path = dir.join("buffer.pt");
    // Protocol 5: a NEXT_BUFFER (0x97) needs buffers passed beside the pickle.
    write_pt(
        &path,
        b"\x80\x05\x95\x02\x00\x00\x00\x00\x00\x00\x00\x97.",
        &[],
    );
    let e = Checkpoint::open(&path).expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains("0x97") && msg.contains("NEXT_BUFFER"), "{msg}");
}

#[test]
fn fp8_safetensors_widen_exactly() {
    let dir = common::temp_dir("fp8");
    let path = dir.join("fp8.safetensors");
    write_safetensors(
        &path,
        &[
            (
                "a.weight",
                "F8_E4M3",
                vec![2, 3],
                vec![0x38, 0x7e, 0x01, 0xb8, 0x00, 0x78],
            ),
            ("b.weight", "F8_E5M2", vec![3], vec![0x3c, 0x7b, 0xfb]),
            ("c.bias", "F32", vec![1], f32_bytes(&[0.5])),
        ],
    );
    let ckpt = Checkpoint::open(&path).expect("open");
    assert_eq!(ckpt.dtype(), DType::BF16);
    assert_eq!(ckpt.stored_dtype_name(), "f8e4m3");
    assert_eq!(
        values(&ckpt, "a.weight"),
        [1.0, 448.0, 2f32.powi(-9), -1.0, 0.0, 256.0]
    );
    assert_eq!(values(&ckpt, "b.weight"), [1.0, 57344.0, -57344.0]);
    let native = ckpt.read_native("a.weight").expect("native");
    assert_eq!(native.dtype(), DType::BF16);
    assert_eq!(native.dims(), [2, 3]);
    assert!(ckpt.scan().is_empty());

    // An fp8 NaN (e4m3fn S.1111.111) is a damaged tensor, named.
    let nan = dir.join("nan.safetensors");
    write_safetensors(&nan, &[("a.weight", "F8_E4M3", vec![2], vec![0x38, 0x7f])]);
    let e = Checkpoint::open(&nan)
        .expect("open")
        .read("a.weight", DType::F32, &Device::Cpu)
        .expect_err("nan");
    assert!(matches!(e, Error::NonFinite(_)), "{e}");
    assert!(e.to_string().contains("`a.weight`"), "{e}");
}

#[test]
fn fp8_with_scales_is_refused_naming_a_scale() {
    let dir = common::temp_dir("fp8-scaled");
    let st = dir.join("scaled.safetensors");
    write_safetensors(
        &st,
        &[
            ("x.weight", "F8_E4M3", vec![2], vec![0x38, 0x38]),
            ("x.weight_scale", "F32", vec![1], f32_bytes(&[0.01])),
        ],
    );
    let e = Checkpoint::open(&st).expect_err("scaled fp8");
    assert!(matches!(e, Error::NotACheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("`x.weight_scale`"), "{e}");

    let pt = dir.join("scaled.pt");
    write_torch_save(
        &pt,
        4,
        &[
            stored("x.weight", "Float8_e4m3fnStorage", &[2], vec![0x38, 0x38]),
            stored("x.scale_inv", "FloatStorage", &[1], f32_bytes(&[2.0])),
        ],
    );
    let e = Checkpoint::open(&pt).expect_err("scaled fp8");
    assert!(e.to_string().contains("`x.scale_inv`"), "{e}");

    // Without fp8 weights a `scale` in a name means nothing special.
    let plain = dir.join("plain.safetensors");
    write_safetensors(
        &plain,
        &[
            ("x.weight", "F32", vec![1], f32_bytes(&[1.0])),
            ("x.scale", "F32", vec![1], f32_bytes(&[2.0])),
        ],
    );
    Checkpoint::open(&plain).expect("no fp8: opens");
}

/// The tiny model's tensors, as `(name, shape, f32 bytes)`.
fn tiny_tensors() -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let ckpt = Checkpoint::open(common::tiny().join("gpt.safetensors")).expect("open");
    ckpt.entries()
        .iter()
        .map(|(name, e)| {
            (
                name.clone(),
                e.shape.clone(),
                f32_bytes(&values(&ckpt, name)),
            )
        })
        .collect()
}

/// The tiny model as safetensors, with `replace` (if any) stored as 2-byte `dtype` elements and
/// an `extra` tensor `(name, dtype)` of 4 2-byte elements.
fn write_tiny_with(path: &Path, replace: Option<(&str, &str)>, extra: Option<(&str, &str)>) {
    let tensors = tiny_tensors();
    let mut out: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            if let Some((_, dtype)) = replace.filter(|(r, _)| r == name) {
                let n: usize = shape.iter().product();
                (name.as_str(), dtype, shape.clone(), vec![0u8; 2 * n])
            } else {
                (name.as_str(), "F32", shape.clone(), bytes.clone())
            }
        })
        .collect();
    if let Some((name, dtype)) = extra {
        out.push((name, dtype, vec![4], vec![0u8; 8]));
    }
    write_safetensors(path, &out);
}

#[test]
fn a_needed_tensor_of_another_dtype_is_named_with_its_dtype() {
    let dir = common::temp_dir("i16");
    let path = dir.join("i16_head.safetensors");
    write_tiny_with(&path, Some(("head.weight", "I16")), None);
    let e = load(&path);
    assert!(
        matches!(&e, Error::UnusableTensor { key, .. } if key == "head.weight"),
        "expected one error naming head.weight, got {e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("`head.weight` is stored as I16") && !msg.contains("missing"),
        "{msg}"
    );
    let ckpt = Checkpoint::open(&path).expect("opens: only loading needs it");
    assert_eq!(ckpt.skipped(), ["head.weight"]);
    let e = ckpt
        .read("head.weight", DType::F32, &Device::Cpu)
        .expect_err("read");
    assert!(e.to_string().contains("I16"), "{e}");
    // Its shape is still indexed, so config detection sees the model the file holds.
    let shape = ckpt
        .shape_map()
        .remove("head.weight")
        .expect("indexed shape");
    let expected = vec![("head.weight".to_string(), shape)];
    let e = ckpt.validate(&expected, "test").expect_err("validate");
    assert!(matches!(e, Error::UnusableTensor { .. }), "{e}");
}

#[test]
fn an_unneeded_tensor_of_another_dtype_does_not_stop_a_load() {
    let dir = common::temp_dir("i16-extra");
    let path = dir.join("i16_extra.safetensors");
    write_tiny_with(&path, None, Some(("step_counter", "I16")));
    let ckpt = Checkpoint::open(&path).expect("open");
    assert_eq!(ckpt.skipped(), ["step_counter"]);
    assert_eq!(ckpt.dtype(), DType::F32);
    loader::load_arpg(&path, Some(tiny_cfg()), DType::F32, &Device::Cpu).expect("loads");
}

#[test]
fn a_file_of_only_other_dtypes_says_which() {
    let dir = common::temp_dir("only-ints");
    let path = dir.join("ints.safetensors");
    write_safetensors(
        &path,
        &[
            ("a", "I16", vec![2], vec![0; 4]),
            ("b", "BOOL", vec![2], vec![0; 2]),
            ("c", "I16", vec![1], vec![0; 2]),
        ],
    );
    let e = Checkpoint::open(&path).expect_err("no weights");
    assert!(matches!(e, Error::NoWeights { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("I16 (2)") && msg.contains("BOOL (1)"), "{msg}");
}
