//! The transformer's forwards as wgpu compute shaders, on Mesa's software Vulkan (lavapipe),
//! against the CPU engine: the teacher-forced forward (causal and not), the causal prefill, the
//! parallel step over a GPU KV cache, a forked cache, `predict`, weights in f32, f16 and bf16,
//! and the errors a GPU gives for what it cannot run.

mod common;
#[path = "common/lavapipe.rs"]
mod lavapipe;

use arpg_core::backend::{Ids, Logits};
use arpg_core::gpu::Gpu;
use arpg_core::sampler::Rng;
use arpg_core::{Arpg, Transformer};
use candle_core::{DType, Device};
use lavapipe::lavapipe;

fn shipped(dtype: DType) -> Arpg {
    arpg_core::loader::load_arpg(arpg_core::shipped::arpg_path(), None, dtype, &Device::Cpu)
        .expect("shipped transformer")
        .model
        .candle()
        .cloned()
        .expect("a candle model")
}

fn pair(dtype: DType) -> (Transformer, Transformer) {
    let model = shipped(dtype);
    let gpu = Gpu::open(lavapipe()).expect("lavapipe opens");
    let on_gpu = Transformer::on_gpu(model.clone(), &gpu).expect("the transformer uploads");
    (Transformer::from(model), on_gpu)
}

/// Largest difference, and the largest logit for scale.
fn diff(a: &Logits, b: &Logits) -> (f32, f32) {
    assert_eq!((a.batch, a.queries, a.vocab), (b.batch, b.queries, b.vocab));
    let d = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = a.data.iter().map(|x| x.abs()).fold(0f32, f32::max);
    (d, scale)
}

fn assert_close(what: &str, a: &Logits, b: &Logits, tol: f32) {
    let (d, scale) = diff(a, b);
    assert!(
        a.all_finite() && b.all_finite(),
        "{what}: non-finite logits"
    );
    assert!(scale > 0.1, "{what}: logits all near zero");
    assert!(
        d <= tol * scale.max(1.0),
        "{what}: largest difference {d} (logits up to {scale})"
    );
}

fn perm(n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

#[test]
fn every_forward_on_wgpu_gives_the_cpus_logits() {
    let (cpu, gpu) = pair(DType::F32);
    let cfg = cpu.config().clone();
    let (v, cells) = (cfg.vocab_size, cfg.grid_size() * cfg.grid_size());
    let mut rng = Rng::new(7);
    let b = 2;
    let ids = Ids::new((0..b * cells).map(|_| rng.below(v) as u32).collect(), b).expect("ids");
    let orders = Ids::new((0..b).flat_map(|_| perm(cells, &mut rng)).collect(), b).expect("orders");
    let classes = [v as u32 + 1, v as u32 + 4];
    for causal in [true, false] {
        let want = cpu
            .forward_teacher(&ids, &classes, &orders, causal)
            .expect("cpu");
        let got = gpu
            .forward_teacher(&ids, &classes, &orders, causal)
            .expect("gpu");
        assert_close(
            &format!("teacher forcing, causal {causal}"),
            &want,
            &got,
            1e-4,
        );
    }

    // A generation's calls: a causal prefill of the class and known cells, then parallel steps,
    // then a fork of the cache that goes on alone.
    let rows_of = |cells: &[u32]| -> Vec<u32> { cells.iter().map(|c| c + 1).collect() };
    let order = perm(cells, &mut rng);
    let mut caches = (
        cpu.new_cache(b, cells + 1).expect("cpu cache"),
        gpu.new_cache(b, cells + 1).expect("gpu cache"),
    );
    let mut prefix = vec![v as u32 + 2];
    prefix.extend((0..5).map(|_| rng.below(v) as u32));
    let mut prow = vec![0];
    prow.extend(rows_of(&order[..5]));
    let dup = |x: &[u32]| Ids::new([x, x].concat(), b).expect("ids");
    cpu.prefill(&mut caches.0, &dup(&prefix), &dup(&prow))
        .expect("cpu prefill");
    gpu.prefill(&mut caches.1, &dup(&prefix), &dup(&prow))
        .expect("gpu prefill");
    assert_eq!(caches.1.len(), 6);
    let mut at = 5;
    let mut fork = None;
    for (step, (fed, asked)) in [(1, 3), (3, 4), (4, 9)].into_iter().enumerate() {
        let toks: Vec<u32> = (0..fed).map(|_| rng.below(v) as u32).collect();
        let rows = rows_of(&order[at..at + fed]);
        let query = rows_of(&order[at + fed..at + fed + asked]);
        at += fed;
        let want = cpu
            .step(&mut caches.0, &dup(&toks), &dup(&rows), &dup(&query))
            .expect("cpu step");
        let got = gpu
            .step(&mut caches.1, &dup(&toks), &dup(&rows), &dup(&query))
            .expect("gpu step");
        assert_close(&format!("step {step}"), &want, &got, 1e-4);
        if step == 1 {
            fork = Some((
                caches.0.deep_clone().expect("cpu fork"),
                caches.1.deep_clone().expect("gpu fork"),
                toks.clone(),
                rows.clone(),
                query.clone(),
            ));
        }
    }
    // The fork still holds the cache as it was after step 1: fed again from there, it agrees.
    let (mut fc, mut fg, toks, rows, query) = fork.expect("forked");
    let want = cpu
        .step(&mut fc, &dup(&toks[..1]), &dup(&rows[..1]), &dup(&query))
        .expect("cpu");
    let got = gpu
        .step(&mut fg, &dup(&toks[..1]), &dup(&rows[..1]), &dup(&query))
        .expect("gpu");
    assert_close("a forked cache", &want, &got, 1e-4);

    let ctx: Vec<u32> = std::iter::once(v as u32 + 3)
        .chain((0..10).map(|_| rng.below(v) as u32))
        .collect();
    let mut crow = vec![0];
    crow.extend(rows_of(&order[..10]));
    let query = rows_of(&order[10..30]);
    let want = cpu
        .predict(&dup(&ctx), &dup(&crow), &dup(&query))
        .expect("cpu predict");
    let got = gpu
        .predict(&dup(&ctx), &dup(&crow), &dup(&query))
        .expect("gpu predict");
    assert_close("predict", &want, &got, 1e-4);
    assert!(gpu.take_fault().is_none());
}

#[test]
fn reduced_precision_weights_on_wgpu_match_the_cpu_in_the_same_dtype() {
    for dtype in [DType::F16, DType::BF16] {
        let (_, gpu) = pair(dtype);
        // The CPU reference: f32 weights rounded to the same 16 bits (the CPU's own bf16 path
        // rounds activations to bf16 as well where the CPU has AVX512-BF16; the GPU does not).
        let cfg = gpu.config().clone();
        let rounded: std::collections::HashMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(arpg_core::shipped::arpg_path(), &Device::Cpu)
                .expect("shipped weights")
                .into_iter()
                .map(|(k, t)| {
                    let r = t.to_dtype(dtype).and_then(|t| t.to_dtype(DType::F32));
                    (k, r.expect("rounds"))
                })
                .collect();
        let cpu = Transformer::from(
            Arpg::new(
                &cfg,
                candle_nn::VarBuilder::from_tensors(rounded, DType::F32, &Device::Cpu),
            )
            .expect("rounded model"),
        );
        let (v, cells) = (cfg.vocab_size, cfg.grid_size() * cfg.grid_size());
        let mut rng = Rng::new(3);
        let ids = Ids::new((0..cells).map(|_| rng.below(v) as u32).collect(), 1).expect("ids");
        let orders = Ids::new(perm(cells, &mut rng), 1).expect("orders");
        let classes = [v as u32 + 2];
        let want = cpu
            .forward_teacher(&ids, &classes, &orders, true)
            .expect("cpu");
        let got = gpu
            .forward_teacher(&ids, &classes, &orders, true)
            .expect("gpu");
        // Both widen the same 16-bit weights exactly and compute in f32; the GPU keeps its KV
        // cache in the weights' format (rounded to 16 bits, as candle's GPU path does), the CPU
        // in f32: logits within 2% of their range. The f32 cache is checked to 1e-4 above.
        assert_close(&format!("{dtype:?} weights"), &want, &got, 2e-2);
    }
}

#[test]
fn what_wgpu_cannot_run_is_a_clear_error() {
    let (_, gpu) = pair(DType::F32);
    let cfg = gpu.config().clone();
    // A quantized transformer is refused at upload.
    let mut q = shipped(DType::F32);
    q.quantize(candle_core::quantized::GgmlDType::Q8_0)
        .expect("quantizes");
    let err = Transformer::on_gpu(q, &Gpu::open(lavapipe()).expect("lavapipe"))
        .expect_err("quantized weights refused")
        .to_string();
    assert!(err.contains("--quant"), "{err}");
    // Ids outside the embedding table or the RoPE table are errors, not silent clamps.
    let mut cache = gpu.new_cache(1, 4).expect("cache");
    let bad = Ids::new(vec![cfg.embedding_rows() as u32], 1).expect("ids");
    let row = Ids::new(vec![0], 1).expect("rows");
    assert!(gpu.step(&mut cache, &bad, &row, &row).is_err());
    let far = Ids::new(vec![(cfg.grid_size() * cfg.grid_size() + 1) as u32], 1).expect("rows");
    assert!(gpu.step(&mut cache, &row, &row, &far).is_err());
    // A feed past the cache's capacity.
    let five = Ids::new(vec![1; 5], 1).expect("ids");
    assert!(gpu.prefill(&mut cache, &five, &five).is_err());
    assert!(
        gpu.take_fault().is_none(),
        "input errors are not GPU faults"
    );
}

/// The shipped model at its recommended settings (settling and polishing included), 8 images of
/// 8 seeds (one batch: each batch image is the single image of its own seed), whole generations
/// on wgpu and on the CPU: the same tokens for at least 99% of the cells (a float tie may flip
/// a draw, and the rest of that image may follow it).
#[test]
fn the_shipped_model_generates_the_cpus_tokens_on_wgpu() {
    use arpg_core::generator::{Generation, Request, Settings};
    let loaded = arpg_core::loader::load_arpg(
        arpg_core::shipped::arpg_path(),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .expect("shipped ARPG");
    let settings = loaded
        .sampling
        .apply(&Settings::default())
        .expect("recommended settings");
    assert!(settings.settle > 0 && settings.polish > 0, "{settings:?}");
    let (cpu, gpu) = pair(DType::F32);
    let classes: Vec<usize> = (0..8).map(|i| i % cpu.config().num_classes).collect();
    let request = Request::new(
        classes,
        Settings {
            seed: 1000,
            ..settings
        },
    );
    let run = |m: &Transformer| {
        Generation::new(m, &request)
            .expect("request")
            .run()
            .expect("run")
    };
    let (want, got) = (run(&cpu), run(&gpu));
    assert_eq!((want.len(), got.len()), (8, 8));
    let total: usize = want.iter().map(Vec::len).sum();
    let same: usize = want
        .iter()
        .zip(&got)
        .map(|(w, g)| w.iter().zip(g).filter(|(a, b)| a == b).count())
        .sum();
    assert!(
        same * 100 >= total * 99,
        "{same} of {total} cells agree between wgpu and the CPU"
    );
    assert!(gpu.take_fault().is_none());
}
