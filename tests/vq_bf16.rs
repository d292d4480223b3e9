//! The VQ decoder's bf16 mode (`VqModel::set_decode_dtype`) against the exact f32 decoder: the
//! shipped tokenizer on a real photo, and a VQ-16-shaped tokenizer (its 512/256/128-channel
//! levels, attention at the lowest level) with random weights. On a CPU without AVX512-BF16
//! the mode is refused with a message.

mod common;

use arpg_core::{loader, shipped, VqConfig, VqModel};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use common::field_photo as photo;

/// `(mean absolute difference, largest difference)` in 8-bit levels, and PSNR in dB.
fn compare(a: &[u8], b: &[u8]) -> (f64, u8, f64) {
    assert_eq!(a.len(), b.len());
    let diffs: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let mad = diffs.iter().map(|&d| d as f64).sum::<f64>() / a.len() as f64;
    let mse = diffs.iter().map(|&d| (d as f64).powi(2)).sum::<f64>() / a.len() as f64;
    let psnr = 10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10();
    (mad, diffs.iter().copied().max().unwrap_or(0), psnr)
}

#[test]
fn the_bf16_decoder_is_refused_or_close_to_f32_on_the_shipped_tokenizer() {
    let mut vq = loader::load_vq(shipped::vq_path(), None, &Device::Cpu).expect("shipped VQ");
    if !VqModel::bf16_decode_supported() {
        let err = vq
            .set_decode_dtype(DType::BF16)
            .expect_err("no AVX512-BF16: the mode is refused");
        assert!(err.to_string().contains("AVX512-BF16"), "{err}");
        assert_eq!(vq.decode_dtype(), DType::F32);
        return;
    }
    let p = vq.config().downsample();
    let (rows, cols) = (32, 32);
    let rgb = photo(cols * p, rows * p);
    let tokens = vq
        .encode_rgb8(&rgb, cols * p, rows * p, Default::default())
        .expect("encode");
    let exact = vq
        .decode_rgb8(&tokens, rows, cols, Default::default())
        .expect("f32 decode");
    vq.set_decode_dtype(DType::BF16).expect("bf16 mode");
    assert_eq!(vq.decode_dtype(), DType::BF16);
    let fast = vq
        .decode_rgb8(&tokens, rows, cols, Default::default())
        .expect("bf16 decode");
    let (mad, max, psnr) = compare(&exact, &fast);
    eprintln!(
        "shipped tokenizer, bf16 against f32: mean {mad:.3} levels, max {max}, PSNR {psnr:.1} dB"
    );
    assert!(
        mad <= 0.75 && psnr >= 45.0,
        "mean {mad}, max {max}, PSNR {psnr}"
    );
    // Back to f32: the exact decode again, bit for bit.
    vq.set_decode_dtype(DType::F32).expect("f32 mode");
    let again = vq
        .decode_rgb8(&tokens, rows, cols, Default::default())
        .expect("f32 decode");
    assert_eq!(again, exact);
    let err = vq
        .set_decode_dtype(DType::F16)
        .expect_err("f16 is not a decode mode");
    assert!(err.to_string().contains("f32 or bf16"), "{err}");
}

#[test]
fn the_bf16_decoder_follows_f32_on_a_vq16_shaped_tokenizer() {
    if !VqModel::bf16_decode_supported() {
        return;
    }
    let cfg = VqConfig::vq_16();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let mut vq = VqModel::new(&cfg, vb).expect("random VQ-16");
    // A 4x3 grid (64x48 pixels): every level, the attention blocks and a non-square canvas.
    let (rows, cols) = (3, 4);
    let ids: Vec<u32> = (0..rows * cols).map(|i| (i * 977 % 16384) as u32).collect();
    let tokens = Tensor::from_vec(ids, (1, rows * cols), &Device::Cpu).expect("ids");
    let exact = vq.decode(&tokens, (rows, cols)).expect("f32 decode");
    vq.set_decode_dtype(DType::BF16).expect("bf16 mode");
    let fast = vq.decode(&tokens, (rows, cols)).expect("bf16 decode");
    assert_eq!(exact.dims(), fast.dims());
    assert_eq!(fast.dims(), &[1, 3, rows * 16, cols * 16]);
    let norm = |t: &Tensor| -> f64 {
        t.sqr()
            .and_then(|s| s.sum_all())
            .and_then(|s| s.to_scalar::<f32>())
            .expect("norm") as f64
    };
    let rel = (norm(&(&fast - &exact).expect("diff")) / norm(&exact)).sqrt();
    eprintln!("VQ-16 shape, random weights, bf16 against f32: relative L2 error {rel:.4}");
    assert!(rel > 0.0 && rel < 0.03, "relative error {rel}");
}
