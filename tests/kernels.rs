//! The CPU kernels against plain arithmetic and against candle's path, at every tier this CPU
//! supports. In its own test binary: it switches the process-wide kernel choice.

mod common;

use arpg_core::kernels::{self, matmul_t, Choice, Tier, Weight};
use arpg_core::loader;
use arpg_core::reference::FixtureSet;
use arpg_core::Arpg;
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

/// A deterministic pseudo-random stream in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `y[i][j] = Σ x[i][t] w[j][t]` in f64.
fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                .sum();
        }
    }
    y
}

/// Largest error relative to the sum of |terms| (the scale rounding errors grow with).
#[allow(clippy::too_many_arguments)] // One product: its result, expectation, operands and shapes.
fn check(
    tier: Tier,
    what: &str,
    yt: &[f32],
    want: &[f64],
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mag: f64 = (0..k)
                .map(|t| (x[i * k + t] as f64 * w[j * k + t] as f64).abs())
                .sum();
            let got = yt[j * m + i] as f64;
            let err = (got - want[i * n + j]).abs() / mag.max(1e-6);
            assert!(
                err < 1e-5,
                "{} {what} m={m} k={k} n={n} at ({i}, {j}): {got} vs {}",
                tier.name(),
                want[i * n + j]
            );
        }
    }
}

/// The product with `w` rounded to a reduced-precision type against the f32 product of the same
/// rounded values.
#[allow(clippy::too_many_arguments)] // One product: its operands, shapes and weight type.
fn reduced<W: Weight>(
    tier: Tier,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    round: fn(f32) -> W,
    what: &str,
) {
    let wr: Vec<W> = w.iter().map(|v| round(*v)).collect();
    let wf: Vec<f32> = wr.iter().map(|v| v.to_f32()).collect();
    let want = reference(x, m, k, &wf, n);
    check(
        tier,
        what,
        &matmul_t(tier, x, m, k, &wr, n),
        &want,
        x,
        &wf,
        m,
        k,
        n,
    );
}

#[test]
fn products_match_plain_arithmetic_at_every_tier_and_weight_dtype() {
    // Shapes that exercise every tile size, the lane tails (k not a multiple of 8 or 16) and
    // the column tails (odd n).
    let shapes = [
        (1, 16, 1),
        (3, 37, 5),
        (8, 64, 7),
        (9, 130, 33),
        (20, 1024, 19),
        (2, 2816, 64),
    ];
    for tier in Tier::supported() {
        for &(m, k, n) in &shapes {
            let x = values(m * k, 1 + m as u64);
            let w = values(n * k, 100 + k as u64);
            let want = reference(&x, m, k, &w, n);
            check(
                tier,
                "f32",
                &matmul_t(tier, &x, m, k, &w, n),
                &want,
                &x,
                &w,
                m,
                k,
                n,
            );

            // Reduced-precision weights: compared with the f32 product of the same rounded values.
            if tier == Tier::Avx512Bf16 {
                // bf16 dot products: the activations are rounded to bf16 too.
                let xr: Vec<f32> = x.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
                let wr: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
                let wf: Vec<f32> = wr.iter().map(|v| v.to_f32()).collect();
                let want = reference(&xr, m, k, &wf, n);
                let got = matmul_t(tier, &x, m, k, &wr, n);
                check(tier, "bf16 dot", &got, &want, &xr, &wf, m, k, n);
            } else {
                reduced(tier, &x, m, k, &w, n, bf16::from_f32, "bf16");
            }
            reduced(tier, &x, m, k, &w, n, f16::from_f32, "f16");
        }
    }
}

/// Logits of three incremental steps (the sampler's path: KV cache, fused attention, head) and
/// of a teacher-forced forward, on the tiny reference model loaded in `dtype`.
fn logits(model: &Arpg) -> Vec<Tensor> {
    let cfg = model.config();
    let dev = Device::Cpu;
    let mut cache = model.new_cache(2, cfg.block_size + 1).expect("cache");
    let class = cfg.class_token_id(3);
    let mut out = Vec::new();
    let mut fed: Vec<(Vec<u32>, Vec<u32>)> = vec![(vec![class, class], vec![0, 0])];
    for step in 0..3u32 {
        let (ids, rows) = fed.last().cloned().expect("fed");
        let m = ids.len() / 2;
        let ids = Tensor::from_vec(ids, (2, m), &dev).expect("ids");
        let rows = Tensor::from_vec(rows, (2, m), &dev).expect("rows");
        let q: Vec<u32> = (0..6)
            .map(|i| 1 + (step * 6 + i) % cfg.block_size as u32)
            .collect();
        let query = Tensor::from_vec([q.clone(), q.clone()].concat(), (2, 6), &dev).expect("q");
        let l = model
            .step(&mut cache, &ids, &rows, &query)
            .expect("step")
            .expect("logits");
        out.push(l);
        // Feed the queried cells with tokens 0..6 next.
        let toks: Vec<u32> = (0..6)
            .map(|t| (t * 7 + step) % cfg.vocab_size as u32)
            .collect();
        fed.push(([toks.clone(), toks].concat(), [q.clone(), q].concat()));
    }
    let ids = Tensor::from_vec((0..16u32).collect::<Vec<_>>(), (1, 16), &dev).expect("ids");
    let rows = Tensor::from_vec((0..16u32).collect::<Vec<_>>(), (1, 16), &dev).expect("rows");
    let q = Tensor::from_vec((1..17u32).collect::<Vec<_>>(), (1, 16), &dev).expect("q");
    out.push(model.predict(&ids, &rows, &q).expect("predict"));
    out
}

/// Parity is ~3e-7 of the largest logit (summation order); a 1% error in the attention scale
/// shows as 1e-4. bf16 dot products (bf16 weights on AVX512-BF16) round the activations too.
#[test]
fn model_logits_match_candle_path_at_every_tier() {
    let set = FixtureSet::open(common::tiny()).expect("set");
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let cfg = set.arpg_config().expect("config");
        let path = common::tiny().join("gpt.safetensors");
        let model = loader::load_arpg(&path, Some(cfg), dtype, &Device::Cpu)
            .expect("tiny model")
            .model
            .candle()
            .cloned()
            .expect("a candle model");
        kernels::set_choice(Choice::Candle).expect("candle");
        let want = logits(&model);
        for tier in Tier::supported() {
            kernels::set_choice(Choice::Kernel(tier)).expect("tier");
            let got = logits(&model);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let scale = w
                    .abs()
                    .expect("abs")
                    .max_all()
                    .expect("max")
                    .to_scalar::<f32>()
                    .expect("s");
                let diff = common::max_abs_diff(g, w);
                // bf16 dot products round the activations to bf16 (8 significant bits): about
                // 3e-3 of the largest logit. Every other path keeps f32 arithmetic.
                let tolerance = if dtype == DType::BF16 && tier == Tier::Avx512Bf16 {
                    1e-2
                } else {
                    1e-5
                };
                assert!(
                    diff <= tolerance * scale.max(1e-3),
                    "{dtype:?} {}: call {i} differs from candle by {diff} (logits up to {scale})",
                    tier.name()
                );
            }
        }
    }
    kernels::set_choice(Choice::Kernel(Tier::detect())).expect("reset");
}

#[test]
fn kernel_names_parse_and_unsupported_tiers_are_refused() {
    assert_eq!(Choice::parse("candle"), Ok(Choice::Candle));
    assert_eq!(
        Choice::parse("portable"),
        Ok(Choice::Kernel(Tier::Portable))
    );
    assert_eq!(Choice::parse(""), Ok(Choice::Kernel(Tier::detect())));
    assert!(Choice::parse("avx1024").is_err());
    for tier in Tier::ALL {
        assert_eq!(
            Choice::parse(tier.name()).is_ok(),
            tier.is_supported(),
            "{}",
            tier.name()
        );
    }
}
