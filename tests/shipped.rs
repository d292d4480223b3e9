//! The model shipped in `assets/` loads offline and generates every class.

use arpg_core::generator::{Generation, Request, Settings};
use arpg_core::{dataset, loader, shipped, vq};
use candle_core::{DType, Device, Tensor};

#[test]
fn shipped_model_generates_every_class_at_the_expected_size() {
    let arpg = loader::load_arpg(shipped::arpg_path(), None, DType::F32, &Device::Cpu)
        .expect("shipped ARPG in assets/");
    let vq =
        loader::load_vq(shipped::vq_path(), None, &Device::Cpu).expect("shipped VQ in assets/");
    assert_eq!(arpg.config, shipped::arpg_config());
    assert_eq!(vq.config(), &shipped::vq_config());
    let classes: Vec<usize> = (0..dataset::CLASS_NAMES.len()).collect();
    let settings = Settings {
        steps: 8,
        seed: 3,
        ..Settings::reference()
    };
    let grids = Generation::new(&arpg.model, &Request::new(classes.clone(), settings))
        .expect("request")
        .run()
        .expect("run");
    let g = arpg.config.grid_size();
    assert_eq!(grids.len(), classes.len());
    let flat: Vec<u32> = grids.iter().flatten().copied().collect();
    let tokens = Tensor::from_vec(flat, (classes.len(), g * g), &Device::Cpu).expect("tokens");
    let images = vq.decode(&tokens, (g, g)).expect("decode");
    assert_eq!(
        images.dims(),
        &[classes.len(), 3, shipped::IMAGE_SIZE, shipped::IMAGE_SIZE]
    );
    let rgb = vq::to_rgb8(&images).expect("rgb");
    // Images differ between classes (the model is conditional, not a constant).
    for a in 0..rgb.len() {
        for b in a + 1..rgb.len() {
            assert_ne!(rgb[a], rgb[b], "classes {a} and {b} gave the same image");
        }
    }
}

#[test]
fn shipped_assets_are_small() {
    let total: u64 = std::fs::read_dir(shipped::assets_dir())
        .expect("assets/")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(
        total <= 25_000_000,
        "assets/ holds {total} bytes, over the 25 MB budget"
    );
}
