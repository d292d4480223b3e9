//! The step machine and the zero-shot tasks on the tiny reference model.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use arpg_core::canvas::{CanvasJob, TokenCanvas};
use arpg_core::generator::{Generation, KnownCells, OrderMode, Request, Settings};
use arpg_core::reference::{FixtureSet, WeightFormat};
use arpg_core::sampler::Rng;
use arpg_core::Arpg;
use candle_core::{Device, Tensor};

fn model() -> Arpg {
    FixtureSet::open(common::tiny())
        .expect("set")
        .load_arpg(WeightFormat::Safetensors, &Device::Cpu)
        .expect("model")
}

/// Largest absolute difference between two logit rows.
fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Teacher-forced logit rows of one image: row k predicts cell `order[k]` after reading the
/// class and the cells before it in `order`.
fn teacher_logits(m: &Arpg, tokens: &[u32], class: usize, order: &[usize]) -> Vec<Vec<f32>> {
    let n = tokens.len();
    let dev = Device::Cpu;
    let order: Vec<u32> = order.iter().map(|&c| c as u32).collect();
    m.forward_teacher(
        &Tensor::from_vec(tokens.to_vec(), (1, n), &dev).expect("ids"),
        &Tensor::new(&[m.config().class_token_id(class)], &dev).expect("class"),
        &Tensor::from_vec(order, (1, n), &dev).expect("order"),
        true,
    )
    .expect("teacher")
    .to_vec3::<f32>()
    .expect("logits")
    .remove(0)
}

fn settings(seed: u64) -> Settings {
    Settings {
        steps: 8,
        cfg_scale: 2.0,
        seed,
        ..Settings::reference()
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
/// rows and the class slot line up in both paths), also across a snapshot and restore.
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
            ..Settings::reference()
        },
    );
    let mut g = Generation::new(&m, &req).expect("new");
    let mut stepped = Vec::new();
    while let Some(out) = g.step().expect("step") {
        stepped.push(out.logits.row(0, 0).to_vec());
        if stepped.len() == n / 2 {
            // A restore rebuilds the cache causally in generation order: still training's view.
            g = Generation::restore(&m, &g.snapshot()).expect("restore");
        }
    }
    let tokens = g.finished_tokens().expect("tokens").remove(0);
    let teacher = teacher_logits(&m, &tokens, 2, &g.orders()[0]);
    let worst = stepped
        .iter()
        .zip(&teacher)
        .map(|(a, b)| worst_diff(a, b))
        .fold(0f32, f32::max);
    // f32 rounding is ~1e-7 here; a query at a neighbouring cell already differs by ~1e-3.
    assert!(
        worst < 1e-5,
        "step logits differ from teacher forcing by {worst}"
    );
}

/// Known cells are read as training reads a sequence too: with cells known and one token per
/// step, each step's logits equal the teacher-forced logits of the order "known cells in raster
/// order, then the generation order".
#[test]
fn known_cells_are_read_as_a_sequence() {
    let m = model();
    let n = m.config().block_size;
    let base = Generation::new(&m, &Request::new(vec![6], settings(13)))
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
    // Many known cells, and a single one (the class slot must not see it either).
    for keep in [|c: usize| c.is_multiple_of(3), |c: usize| c == 5] {
        let known: Vec<Option<u32>> = (0..n).map(|c| keep(c).then_some(base[c])).collect();
        read_as_a_sequence(&m, &known);
    }
}

fn read_as_a_sequence(m: &Arpg, known: &[Option<u32>]) {
    let n = m.config().block_size;
    let k = known.iter().flatten().count();
    let request = Request {
        known: KnownCells::Shared(known.to_vec()),
        ..Request::new(
            vec![6],
            Settings {
                steps: n - k,
                cfg_scale: 1.0,
                seed: 5,
                ..Settings::reference()
            },
        )
    };
    let mut g = Generation::new(m, &request).expect("new");
    let mut stepped = Vec::new();
    while let Some(out) = g.step().expect("step") {
        stepped.push(out.logits.row(0, 0).to_vec());
    }
    let order: Vec<usize> = (0..n)
        .filter(|&c| known[c].is_some())
        .chain(g.orders()[0].iter().copied())
        .collect();
    let tokens = g.finished_tokens().expect("tokens").remove(0);
    let teacher = teacher_logits(m, &tokens, 6, &order);
    let worst = stepped
        .iter()
        .zip(&teacher[k..])
        .map(|(a, b)| worst_diff(a, b))
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "known cells read otherwise: {worst}");
}

#[test]
fn steps_decide_the_scheduled_counts_in_random_orders() {
    let m = model();
    let mut gen = Generation::new(&m, &Request::new(vec![2, 2], settings(5))).expect("new");
    let n = m.config().block_size;
    let mut seen = vec![vec![false; n]; 2];
    let mut k = 0;
    while let Some(out) = gen.step().expect("step") {
        assert_eq!(out.cells[0].len(), gen.tokens_per_step()[k]);
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
    assert_eq!(decided, gen.tokens_per_step()[..k].iter().sum::<usize>());
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

/// Images with different known cells batch together (canvas windows): each is exactly what it
/// is alone with its own seed; a batch whose images differ in unknown count is refused.
#[test]
fn per_image_known_cells_batch_like_single_images() {
    use arpg_core::sampler::image_seed;
    let m = model();
    let n = m.config().block_size;
    let base = Generation::new(&m, &Request::new(vec![3], settings(4)))
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
    // Two masks with the same number of unknown cells, in different places.
    let a: Vec<Option<u32>> = (0..n).map(|c| (c >= n / 2).then(|| base[c])).collect();
    let b: Vec<Option<u32>> = (0..n).map(|c| (c % 2 == 1).then(|| base[c])).collect();
    let batch = Generation::new(
        &m,
        &Request {
            known: KnownCells::PerImage(vec![a.clone(), b.clone()]),
            ..Request::new(vec![3, 3], settings(9))
        },
    )
    .expect("new")
    .run()
    .expect("run");
    for (i, known) in [a, b].into_iter().enumerate() {
        let mut own = settings(9);
        own.seed = image_seed(9, i as u64);
        let alone = Generation::new(
            &m,
            &Request {
                known: KnownCells::Shared(known.clone()),
                ..Request::new(vec![3], own)
            },
        )
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
        assert_eq!(batch[i], alone, "image {i}");
        for (c, k) in known.iter().enumerate() {
            if let Some(t) = k {
                assert_eq!(batch[i][c], *t, "known cell {c} of image {i} kept");
            }
        }
    }
    let uneven: Vec<Option<u32>> = (0..n).map(|c| (c > 0).then(|| base[c])).collect();
    let mixed = Request {
        known: KnownCells::PerImage(vec![uneven, vec![None; n]]),
        ..Request::new(vec![3, 3], settings(9))
    };
    assert!(Generation::new(&m, &mixed).is_err());
}

/// A canvas job generates non-overlapping windows with as many known cells together (a wave):
/// an expansion runs in fewer waves than windows, keeps every lattice token, and one window at a
/// time (`with_max_wave(1)`) gives the same kind of result.
#[test]
fn expansion_runs_in_waves_of_non_overlapping_windows() {
    let m = model();
    let g = m.config().grid_size();
    let base = Generation::new(&m, &Request::new(vec![2], settings(6)))
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
    let small = TokenCanvas::from_tokens(g, g, &base).expect("canvas");
    // Four grids per side: enough room for waves of several windows.
    let spread = small.spread(2).spread(2);
    let mut job =
        CanvasJob::new(&m, spread.clone(), Some(2), settings(7), OrderMode::Random).expect("job");
    let (mut waves, mut widest) = (0, 0);
    while let Some(step) = job.step().expect("step") {
        if step.step == 0 {
            waves += 1;
            widest = widest.max(step.windows.len());
            for (i, &a) in step.windows.iter().enumerate() {
                for &b in &step.windows[i + 1..] {
                    let apart =
                        a.0 + g <= b.0 || b.0 + g <= a.0 || a.1 + g <= b.1 || b.1 + g <= a.1;
                    assert!(apart, "windows {a:?} and {b:?} of one wave overlap");
                }
            }
        }
    }
    let windows = job.windows_done();
    let out = job.canvas().tokens().expect("every cell filled");
    assert!(
        widest > 1 && waves < windows,
        "{waves} waves for {windows} windows"
    );
    for (c, t) in spread.cells.iter().enumerate() {
        if let Some(t) = t {
            assert_eq!(out[c], *t, "lattice cell {c} kept");
        }
    }
    let one_by_one = CanvasJob::new(&m, spread, Some(2), settings(7), OrderMode::Random)
        .expect("job")
        .with_max_wave(1)
        .run()
        .expect("run");
    assert_eq!(one_by_one.unknown_count(), 0);
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
    let snap: arpg_core::generator::State = serde_json::from_str(&json).expect("parse");
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
    // A damaged snapshot is refused, not a panic.
    let mut bad = snap.clone();
    bad.probs[0].pop();
    assert!(Generation::restore(&m, &bad).is_err());
    let mut bad = snap.clone();
    bad.pending[0][0].1 = 0;
    assert!(Generation::restore(&m, &bad).is_err());
    let mut bad = snap.clone();
    bad.settings.polish = usize::MAX;
    assert!(Generation::restore(&m, &bad).is_err());
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

/// The revisits ask [`Arpg::predict`], which must read a context as training does: its logits
/// for the next cell of an order equal the teacher-forced ones. A cache rebuilt with
/// [`Arpg::prefill`] must hold the same keys and values as training's causal pass, so one more
/// token and a query through [`Arpg::step`] give the teacher's next row too.
#[test]
fn predict_and_prefill_read_a_context_as_training_does() {
    let m = model();
    let n = m.config().block_size;
    let dev = Device::Cpu;
    let mut rng = Rng::new(77);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let tokens: Vec<u32> = (0..n)
        .map(|_| rng.below(m.config().vocab_size) as u32)
        .collect();
    let class = m.config().class_token_id(3);
    let teacher = teacher_logits(&m, &tokens, 3, &order);
    let k = n / 2;
    let context = |cells: &[usize]| {
        let ids: Vec<u32> = std::iter::once(class)
            .chain(cells.iter().map(|&c| tokens[c]))
            .collect();
        let rows: Vec<u32> = std::iter::once(0)
            .chain(cells.iter().map(|&c| c as u32 + 1))
            .collect();
        let len = ids.len();
        (
            Tensor::from_vec(ids, (1, len), &dev).expect("ids"),
            Tensor::from_vec(rows, (1, len), &dev).expect("rows"),
        )
    };
    let (ids, rows) = context(&order[..k]);
    // Two queries: the first is the order's next cell; each query sees the whole context.
    let queries = [order[k] as u32 + 1, order[k + 1] as u32 + 1];
    let predicted = m
        .predict(&ids, &rows, &Tensor::new(&[queries], &dev).expect("q"))
        .expect("predict")
        .to_vec3::<f32>()
        .expect("logits");
    assert!(worst_diff(&predicted[0][0], &teacher[k]) < 1e-5);
    // The same context read both ways (the reference's inference) is another distribution.
    let both_ways = m
        .forward(
            &ids,
            &rows,
            &Tensor::new(&[[queries[0]]], &dev).expect("q"),
            false,
        )
        .expect("forward")
        .to_vec3::<f32>()
        .expect("logits");
    assert!(worst_diff(&both_ways[0][0], &teacher[k]) > 1e-3);

    let mut cache = m.new_cache(1, 1 + n).expect("cache");
    m.prefill(&mut cache, &ids, &rows).expect("prefill");
    let (next, next_row) = context(&order[k..k + 1]);
    let stepped = m
        .step(
            &mut cache,
            &next.narrow(1, 1, 1).expect("token"),
            &next_row.narrow(1, 1, 1).expect("row"),
            &Tensor::new(&[[queries[1]]], &dev).expect("q"),
        )
        .expect("step")
        .expect("logits")
        .to_vec3::<f32>()
        .expect("logits");
    assert!(worst_diff(&stepped[0][0], &teacher[k + 1]) < 1e-5);
}

/// Why settling exists: with only the class token to read, every query gets the same answer,
/// wherever its cell is (attention over one key is that key). One decided token is enough for
/// positions to matter.
#[test]
fn the_first_step_cannot_tell_cells_apart() {
    let m = model();
    let dev = Device::Cpu;
    let class = m.config().class_token_id(1);
    let n = m.config().block_size as u32;
    let ask = |ids: &[u32], rows: &[u32]| {
        m.predict(
            &Tensor::from_vec(ids.to_vec(), (1, ids.len()), &dev).expect("ids"),
            &Tensor::from_vec(rows.to_vec(), (1, rows.len()), &dev).expect("rows"),
            &Tensor::new(&[[1u32, n / 2, n]], &dev).expect("q"),
        )
        .expect("predict")
        .to_vec3::<f32>()
        .expect("logits")
    };
    let alone = ask(&[class], &[0]);
    assert!(worst_diff(&alone[0][0], &alone[0][1]) < 1e-5);
    assert!(worst_diff(&alone[0][0], &alone[0][2]) < 1e-5);
    let one_token = ask(&[class, 5], &[0, 3]);
    assert!(worst_diff(&one_token[0][0], &one_token[0][1]) > 1e-4);
}

fn revisiting(seed: u64) -> Settings {
    Settings {
        settle: 4,
        polish: 1,
        ..settings(seed)
    }
}

#[test]
fn settling_and_polishing_revise_generated_cells_only_and_replay() {
    let m = model();
    let g = m.config().grid_size();
    let n = g * g;
    // Inpainting: the left column is known, fewer cells than `settle` (an edit that knows at
    // least that many is not settled: its first cells already have that much context).
    let base = Generation::new(&m, &Request::new(vec![5], settings(2)))
        .expect("new")
        .run()
        .expect("run")
        .remove(0);
    let known: Vec<Option<u32>> = (0..n).map(|c| (c % g == 0).then_some(base[c])).collect();
    let request = Request {
        known: KnownCells::Shared(known.clone()),
        ..Request::new(
            vec![5, 6],
            Settings {
                settle: g + 2,
                ..revisiting(8)
            },
        )
    };
    let mut plenty = request.clone();
    plenty.known = KnownCells::Shared((0..n).map(|c| (c % g < g / 2).then_some(base[c])).collect());
    let mut unsettled = Generation::new(&m, &plenty).expect("new");
    while let Some(out) = unsettled.step().expect("step") {
        if out.step < unsettled.tokens_per_step().len() {
            assert!(
                out.revised.iter().all(Vec::is_empty),
                "an edit knowing 32 cells was settled"
            );
        }
    }
    let mut gen = Generation::new(&m, &request).expect("new");
    let main_steps = gen.tokens_per_step().len();
    assert_eq!(gen.total_steps(), main_steps + 4, "one pass of four groups");
    let mut settled_at = Vec::new();
    let mut polished = vec![std::collections::HashSet::new(); 2];
    while let Some(out) = gen.step().expect("step") {
        for (i, revised) in out.revised.iter().enumerate() {
            for &(cell, token, prob) in revised {
                assert!(known[cell].is_none(), "known cell {cell} was revised");
                assert_eq!(gen.tokens()[i][cell], Some(token));
                assert!(prob > 0.0);
                if out.step >= main_steps {
                    polished[i].insert(cell);
                }
            }
        }
        if out.step < main_steps && !out.revised[0].is_empty() {
            let decided: usize = gen.tokens_per_step()[..out.step].iter().sum();
            for (i, revised) in out.revised.iter().enumerate() {
                let cells: Vec<usize> = revised.iter().map(|r| r.0).collect();
                assert_eq!(cells, gen.orders()[i][..decided].to_vec());
            }
            assert!(decided >= g + 2);
            settled_at.push(out.step);
        } else if out.step >= main_steps {
            assert!(
                out.cells.iter().all(Vec::is_empty),
                "polishing decides nothing new"
            );
        }
    }
    assert_eq!(settled_at.len(), 1, "settled once: {settled_at:?}");
    assert!(gen.is_done());
    let tokens = gen.finished_tokens().expect("tokens");
    for grid in &tokens {
        for c in 0..n {
            if let Some(t) = known[c] {
                assert_eq!(grid[c], t, "known token {c} changed");
            }
        }
    }
    let again = Generation::new(&m, &request)
        .expect("new")
        .run()
        .expect("run");
    assert_eq!(again, tokens, "same request, same tokens");

    // A snapshot taken after settling resumes without settling again.
    let mut gen = Generation::new(&m, &Request::new(vec![7], revisiting(4))).expect("new");
    while gen.steps_done() < gen.tokens_per_step().len() - 1 {
        gen.step().expect("step");
    }
    let snap = gen.snapshot();
    assert!(snap.settled);
    let mut resumed = Generation::restore(&m, &snap).expect("restore");
    let out = resumed.step().expect("step").expect("a step is left");
    assert!(out.revised[0].is_empty(), "settled twice");
    assert_eq!(resumed.run().expect("run")[0].len(), n);
}

#[test]
fn absurd_revisits_are_rejected() {
    let m = model();
    for s in [
        Settings {
            settle: 100_000,
            ..settings(0)
        },
        Settings {
            polish: 1000,
            ..settings(0)
        },
    ] {
        assert!(Generation::new(&m, &Request::new(vec![1], s)).is_err());
    }
}

#[test]
fn a_step_whose_logits_are_not_finite_stops_the_generation() {
    // Weights built directly (the checkpoint reader would refuse the NaN at load).
    let set = FixtureSet::open(common::tiny()).expect("set");
    let cfg = set.arpg_config().expect("config");
    let dev = Device::Cpu;
    let mut weights =
        candle_core::safetensors::load(common::tiny().join("gpt.safetensors"), &dev).expect("load");
    let head = weights.get("head.weight").expect("head").clone();
    let nan = (head.ones_like().expect("ones") * f64::NAN).expect("nan");
    weights.insert("head.weight".into(), nan);
    let vb = candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, &dev);
    let m = Arpg::new(&cfg, vb).expect("model");
    let request = Request::new(vec![1], Settings::reference());
    let mut g = Generation::new(&m, &request).expect("new");
    let err = g.step().expect_err("NaN logits must stop the generation");
    assert!(
        matches!(err, arpg_core::Error::NonFinite(_)),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("not finite"), "{err}");
}
