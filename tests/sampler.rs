//! The step machine and the zero-shot tasks on the tiny reference model.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use arpg_core::generator::{Generation, OrderMode, Request, Settings};
use arpg_core::reference::{FixtureSet, WeightFormat};
use arpg_core::sampler::Rng;
use arpg_core::tasks::{CanvasJob, TokenCanvas};
use arpg_core::Arpg;
use candle_core::{Device, Tensor};

fn model() -> Arpg {
    FixtureSet::open(common::tiny())
        .expect("set")
        .load_arpg(WeightFormat::Safetensors, &Device::Cpu)
        .expect("model")
}

fn settings(seed: u64) -> Settings {
    Settings {
        steps: 8,
        cfg_scale: 2.0,
        seed,
        ..Settings::default()
    }
}

#[test]
fn same_request_gives_identical_tokens() {
    let m = model();
    let req = Request::new(vec![1, 4, 7], settings(42));
    let a = Generation::new(&m, &req).expect("new").run().expect("run");
    let b = Generation::new(&m, &req).expect("new").run().expect("run");
    assert_eq!(a, b);
    let c = Generation::new(&m, &Request::new(vec![1, 4, 7], settings(43)))
        .expect("new")
        .run()
        .expect("run");
    assert_ne!(a, c, "another seed should give another image");
}

/// Sampling one token per step asks the model exactly what training asked it: each step's
/// logits equal the teacher-forced logits of the same order and tokens (the KV cache, the RoPE
/// rows and the class slot line up in both paths).
#[test]
fn one_token_per_step_matches_teacher_forcing() {
    let m = model();
    let n = m.config().block_size;
    let req = Request::new(
        vec![2],
        Settings {
            steps: n,
            cfg_scale: 1.0,
            seed: 9,
            ..Settings::default()
        },
    );
    let mut g = Generation::new(&m, &req).expect("new");
    let mut stepped = Vec::new();
    while let Some(out) = g.step().expect("step") {
        stepped.push(out.logits.to_vec3::<f32>().expect("logits")[0][0].clone());
    }
    let order: Vec<u32> = g.orders()[0].iter().map(|&c| c as u32).collect();
    let tokens = g.finished_tokens().expect("tokens")[0].clone();
    let dev = Device::Cpu;
    let teacher = m
        .forward_teacher(
            &Tensor::from_vec(tokens, (1, n), &dev).expect("ids"),
            &Tensor::new(&[m.config().class_token_id(2)], &dev).expect("class"),
            &Tensor::from_vec(order, (1, n), &dev).expect("order"),
            true,
        )
        .expect("teacher")
        .to_vec3::<f32>()
        .expect("logits");
    let worst = stepped
        .iter()
        .zip(&teacher[0])
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    // f32 rounding is ~1e-7 here; a query at a neighbouring cell already differs by ~1e-3.
    assert!(
        worst < 1e-5,
        "step logits differ from teacher forcing by {worst}"
    );
}

#[test]
fn steps_decide_the_scheduled_counts_in_random_orders() {
    let m = model();
    let mut gen = Generation::new(&m, &Request::new(vec![2, 2], settings(5))).expect("new");
    let n = m.config().block_size;
    let mut seen = vec![vec![false; n]; 2];
    let mut k = 0;
    while let Some(out) = gen.step().expect("step") {
        assert_eq!(out.cells[0].len(), gen.counts()[k]);
        for (i, cells) in out.cells.iter().enumerate() {
            for &c in cells {
                assert!(!seen[i][c], "cell {c} decided twice");
                seen[i][c] = true;
            }
        }
        k += 1;
    }
    assert!(seen.iter().all(|s| s.iter().all(|&v| v)));
    // Each image has its own random order.
    assert_ne!(gen.orders()[0], gen.orders()[1]);
}

#[test]
fn cancel_keeps_the_decided_tokens_and_stops_within_one_step() {
    let m = model();
    let mut gen = Generation::new(&m, &Request::new(vec![3], settings(9))).expect("new");
    let cancel = AtomicBool::new(false);
    let k = 3;
    let mut steps = 0;
    let finished = gen
        .run_until(&cancel, |_| {
            steps += 1;
            if steps == k {
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .expect("run");
    assert!(!finished);
    assert_eq!(steps, k);
    assert_eq!(gen.steps_done(), k);
    let decided = gen.tokens()[0].iter().filter(|t| t.is_some()).count();
    assert_eq!(decided, gen.counts()[..k].iter().sum::<usize>());
}

#[test]
fn fork_shares_the_past_and_not_the_future() {
    let m = model();
    let mut gen = Generation::new(&m, &Request::new(vec![6], settings(1))).expect("new");
    for _ in 0..3 {
        gen.step().expect("step");
    }
    let before = gen.tokens()[0].clone();
    let fork = gen.fork(777).expect("fork");
    let a = gen.run().expect("run");
    let b = fork.run().expect("run");
    for (cell, t) in before.iter().enumerate() {
        if let Some(t) = t {
            assert_eq!(a[0][cell], *t);
            assert_eq!(b[0][cell], *t);
        }
    }
    assert_ne!(a, b);
}

#[test]
fn inpainting_keeps_known_tokens_and_generates_exactly_the_unknown() {
    let m = model();
    let g = m.config().grid_size();
    let n = g * g;
    let base = Generation::new(&m, &Request::new(vec![0], settings(3)))
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
    let mut rng = Rng::new(1234);
    for trial in 0..5 {
        let mask: Vec<bool> = (0..n)
            .map(|_| rng.next_f64() < 0.3 + 0.1 * trial as f64)
            .collect();
        let unknown = mask.iter().filter(|&&m| m).count();
        if unknown == 0 {
            continue;
        }
        let canvas = TokenCanvas::from_tokens(g, g, &base)
            .expect("canvas")
            .with_unknown(&mask)
            .expect("mask");
        let mut job =
            CanvasJob::new(&m, canvas, Some(5), settings(trial), OrderMode::Random).expect("job");
        let mut generated = 0;
        while let Some(step) = job.step().expect("step") {
            for &(r, c, _, _) in &step.cells {
                assert!(mask[r * g + c], "known cell ({r}, {c}) was sampled");
                generated += 1;
            }
        }
        assert_eq!(generated, unknown);
        let out = job.canvas().tokens().expect("full");
        for i in 0..n {
            if !mask[i] {
                assert_eq!(out[i], base[i], "known token {i} changed");
            }
        }
    }
}

#[test]
fn outpainting_four_times_the_grid_fills_everything_and_keeps_the_original() {
    let m = model();
    let g = m.config().grid_size();
    let base = Generation::new(&m, &Request::new(vec![8], settings(11)))
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
    let canvas = TokenCanvas::from_tokens(g, g, &base)
        .expect("canvas")
        .extended(0, 3 * g, 0, 0);
    assert_eq!((canvas.rows, canvas.cols), (g, 4 * g));
    let out = CanvasJob::new(&m, canvas, Some(8), settings(12), OrderMode::Random)
        .expect("job")
        .run()
        .expect("run");
    let tokens = out.tokens().expect("every cell filled");
    for r in 0..g {
        for c in 0..g {
            assert_eq!(tokens[r * 4 * g + c], base[r * g + c]);
        }
    }
}

#[test]
fn priority_order_decides_high_priority_cells_first() {
    let m = model();
    let n = m.config().block_size;
    let levels: Vec<u8> = (0..n).map(|c| if c < n / 2 { 1 } else { 0 }).collect();
    let req = Request {
        order: OrderMode::Priority(levels),
        ..Request::new(vec![1], settings(2))
    };
    let gen = Generation::new(&m, &req).expect("new");
    let order = &gen.orders()[0];
    assert!(order[..n / 2].iter().all(|&c| c < n / 2));
    assert!(order[n / 2..].iter().all(|&c| c >= n / 2));
}

#[test]
fn bad_requests_are_rejected() {
    let m = model();
    assert!(
        Generation::new(&m, &Request::new(vec![10], settings(0))).is_err(),
        "class out of range"
    );
    assert!(
        Generation::new(&m, &Request::new(vec![], settings(0))).is_err(),
        "no image"
    );
    let mut s = settings(0);
    s.steps = 0;
    assert!(
        Generation::new(&m, &Request::new(vec![1], s)).is_err(),
        "zero steps"
    );
    let mut s = settings(0);
    s.temperature = f64::NAN;
    assert!(
        Generation::new(&m, &Request::new(vec![1], s)).is_err(),
        "NaN temperature"
    );
    let full = TokenCanvas::from_tokens(8, 8, &[1; 64]).expect("canvas");
    assert!(
        CanvasJob::new(&m, full, Some(1), settings(0), OrderMode::Random).is_err(),
        "nothing unknown"
    );
}

#[test]
fn snapshot_restores_decided_tokens_and_replays_deterministically() {
    let m = model();
    let mut gen = Generation::new(&m, &Request::new(vec![4, 9], settings(21))).expect("new");
    for _ in 0..3 {
        gen.step().expect("step");
    }
    let snap = gen.snapshot();
    // Serialisable (pause, save, resume).
    let json = serde_json::to_string(&snap).expect("json");
    let snap: arpg_core::generator::Snapshot = serde_json::from_str(&json).expect("parse");
    let a = Generation::restore(&m, &snap)
        .expect("restore")
        .run()
        .expect("run");
    let b = Generation::restore(&m, &snap)
        .expect("restore")
        .run()
        .expect("run");
    assert_eq!(a, b, "two restores of one snapshot differ");
    for (i, grid) in snap.tokens.iter().enumerate() {
        for (cell, t) in grid.iter().enumerate() {
            if let Some(t) = t {
                assert_eq!(a[i][cell], *t, "decided token changed on resume");
            }
        }
    }
    // A snapshot taken before the first step restores to exactly the uninterrupted run.
    let fresh = Generation::new(&m, &Request::new(vec![4, 9], settings(21))).expect("new");
    let snap0 = fresh.snapshot();
    let direct = fresh.run().expect("run");
    assert_eq!(
        Generation::restore(&m, &snap0)
            .expect("restore")
            .run()
            .expect("run"),
        direct
    );
}
