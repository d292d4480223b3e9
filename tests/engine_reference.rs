//! The engine against the official PyTorch reference fixtures.

mod common;

use arpg_core::backend::Ids;
use arpg_core::checkpoint::Checkpoint;
use arpg_core::loader::{self, ModelKind};
use arpg_core::reference::{check_reference, FixtureSet, WeightFormat};
use arpg_core::{Backend, Error};
use candle_core::{DType, Device, Tensor};

fn assert_all_pass(format: WeightFormat) {
    let results = check_reference(common::tiny(), format, Backend::Cpu).expect("fixture set runs");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.to_string())
        .collect();
    assert!(
        results.len() > 40,
        "expected every case to run, got {}",
        results.len()
    );
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn every_case_passes_from_pt_files() {
    assert_all_pass(WeightFormat::Pt);
}

#[test]
fn every_case_passes_from_safetensors_files() {
    assert_all_pass(WeightFormat::Safetensors);
}

/// Causal teacher-forced logits of the tiny set for a model loaded from `path` in `dtype`.
fn tf_logits(path: &std::path::Path, dtype: DType) -> (Tensor, Tensor) {
    let set = FixtureSet::open(common::tiny()).expect("set");
    let cfg = set.arpg_config().expect("config");
    let model = loader::load_arpg(path, Some(cfg.clone()), dtype, &Device::Cpu)
        .expect("loads")
        .model;
    let cases = Checkpoint::open(common::tiny().join("cases.safetensors")).expect("cases");
    let ids = cases.read_native("tf_ids").expect("ids");
    let classes = cases
        .read_native("tf_classes")
        .expect("classes")
        .to_dtype(DType::U32)
        .expect("u32");
    let class_ids = (classes.to_dtype(DType::F32).expect("f32") + (cfg.vocab_size + 1) as f64)
        .expect("shift")
        .to_dtype(DType::U32)
        .expect("u32");
    let orders = cases.read_native("tf_orders").expect("orders");
    let ids = Ids::from_tensor(&ids).expect("ids");
    let class_ids: Vec<u32> = class_ids.to_vec1().expect("class ids");
    let orders = Ids::from_tensor(&orders).expect("orders");
    let ours = model
        .forward_teacher(&ids, &class_ids, &orders, true)
        .expect("forward");
    (
        ours.to_tensor().expect("tensor"),
        cases.read_native("tf_causal_logits").expect("expected"),
    )
}

use common::max_abs_diff;

#[test]
fn every_real_world_layout_loads_the_same_weights() {
    for name in [
        "gpt_flat.pt",
        "gpt_module_key.pt",
        "gpt_state_dict_key.pt",
        "gpt_training_checkpoint.pt",
    ] {
        let (ours, expected) = tf_logits(&common::layouts().join(name), DType::F32);
        assert!(max_abs_diff(&ours, &expected) < 1e-5, "{name}");
    }
    let vq_a = loader::load_vq(
        common::layouts().join("vq_training_checkpoint.pt"),
        None,
        &Device::Cpu,
    )
    .expect("vq");
    let vq_b = loader::load_vq(common::tiny().join("tiny_vq.pt"), None, &Device::Cpu).expect("vq");
    assert_eq!(max_abs_diff(vq_a.codebook(), vq_b.codebook()), 0.0);
}

#[test]
fn bf16_checkpoint_gives_logits_within_bf16_rounding() {
    let (ours, expected) = tf_logits(&common::layouts().join("gpt_bf16.pt"), DType::F32);
    let err = max_abs_diff(&ours, &expected);
    // bf16 weights carry ~3 significant digits; logits are O(0.7).
    assert!(err < 0.05, "bf16 weights: max error {err}");
    assert!(err > 0.0, "bf16 rounding should be visible");
    // Computing in f16 stays close too.
    let (ours16, _) = tf_logits(&common::tiny().join("tiny_gpt.pt"), DType::F16);
    assert!(max_abs_diff(&ours16, &expected) < 0.05);
}

#[test]
fn checkpoint_kinds_are_detected() {
    let gpt = Checkpoint::open(common::tiny().join("tiny_gpt.pt")).expect("open");
    let vq = Checkpoint::open(common::tiny().join("vq.safetensors")).expect("open");
    assert_eq!(loader::detect_kind(&gpt).expect("kind"), ModelKind::Arpg);
    assert_eq!(loader::detect_kind(&vq).expect("kind"), ModelKind::Vq);
    // Loading the wrong kind is a clear error, not a crash.
    let err = loader::load_vq(common::tiny().join("tiny_gpt.pt"), None, &Device::Cpu)
        .expect_err("wrong kind");
    assert!(err.to_string().contains("not a VQ tokenizer"), "{err}");
}

#[test]
fn tiny_config_comes_from_the_manifest_beside_the_weights() {
    let ckpt = Checkpoint::open(common::tiny().join("tiny_gpt.pt")).expect("open");
    let (cfg, name) = loader::arpg_config(&ckpt, None).expect("config");
    assert_eq!(
        (cfg.dim, cfg.n_head, cfg.n_layer, cfg.block_size),
        (64, 4, 4, 64)
    );
    assert!(name.contains("manifest.json"), "{name}");
    // Without any config beside it, the error says how to provide one.
    let ckpt = Checkpoint::open(common::layouts().join("gpt_flat.pt")).expect("open");
    match loader::arpg_config(&ckpt, None) {
        Err(Error::Config(msg)) => assert!(msg.contains("config JSON"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}
