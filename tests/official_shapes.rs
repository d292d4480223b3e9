//! The official checkpoints' key → shape maps are recognised as ARPG-L/XL/XXL and VQ-16.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use arpg_core::config::{ArpgConfig, VqConfig};
use arpg_core::loader::{self, ModelKind, ShapeMap};

fn official() -> serde_json::Value {
    let text =
        std::fs::read_to_string(common::fixtures().join("official_shapes.json")).expect("read");
    serde_json::from_str(&text).expect("json")
}

fn shape_map(v: &serde_json::Value) -> ShapeMap {
    v["state_dict"]
        .as_object()
        .expect("state_dict")
        .iter()
        .map(|(k, s)| (k.clone(), serde_json::from_value(s.clone()).expect("shape")))
        .collect()
}

#[test]
fn arpg_presets_are_recognised_from_shapes() {
    let j = official();
    let file = Path::new("/nonexistent/arpg.pt");
    for (name, preset) in ArpgConfig::presets() {
        let shapes = shape_map(&j[name]);
        assert_eq!(
            loader::kind_of(&shapes, file).expect("kind"),
            ModelKind::Arpg
        );
        let (cfg, detected) = loader::arpg_config_from_shapes(&shapes, file, None).expect("detect");
        assert_eq!(detected, name);
        assert_eq!(cfg, preset);
        let expected: BTreeMap<String, Vec<usize>> = cfg.expected_shapes().into_iter().collect();
        assert_eq!(expected, shapes, "{name}: key/shape map");
        assert_eq!(
            cfg.num_params() as u64,
            j[name]["num_params"].as_u64().expect("n"),
            "{name}"
        );
    }
}

#[test]
fn vq16_is_recognised_from_shapes() {
    let j = official();
    let file = Path::new("/nonexistent/vq.pt");
    let mut shapes = shape_map(&j["VQ-16"]);
    assert_eq!(loader::kind_of(&shapes, file).expect("kind"), ModelKind::Vq);
    let cfg = loader::vq_config_from_shapes(&shapes, file).expect("detect");
    assert_eq!(cfg, VqConfig::vq_16());
    // `quantize.codebook_used` is training bookkeeping: present in the file, not a parameter.
    assert_eq!(shapes.remove("quantize.codebook_used"), Some(vec![65536]));
    let expected: BTreeMap<String, Vec<usize>> = cfg.expected_shapes().into_iter().collect();
    assert_eq!(expected, shapes);
    assert_eq!(
        cfg.num_params() as u64 + 65536,
        j["VQ-16"]["num_params"].as_u64().expect("n")
    );
}
