use arpg_core::kernels::{matmul_t, Tier};
use std::time::Instant;
fn main() {
    let tier = match std::env::args().nth(1).as_deref() {
        Some("avx2") => Tier::Avx2Fma,
        Some("portable") => Tier::Portable,
        _ => Tier::Avx512,
    };
    let hot = std::env::args().nth(2).is_some();
    for &(m, k, n) in &[
        (1usize, 1024usize, 3072usize),
        (4, 1024, 3072),
        (8, 1024, 3072),
        (8, 1024, 5632),
        (8, 2816, 1024),
        (16, 1024, 5632),
        (32, 1024, 5632),
        (8, 1024, 16384),
        (512, 1024, 3072),
    ] {
        let n = if hot { 128 } else { n };
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let copies = if hot {
            1
        } else {
            (256usize << 20) / (n * k * 4) + 1
        };
        let ws: Vec<Vec<f32>> = (0..copies).map(|_| w.clone()).collect();
        let reps = if hot { 2000 } else { 20 };
        let mut best = f64::INFINITY;
        let mut s = 0.0;
        for _ in 0..3 {
            let t = Instant::now();
            for r in 0..reps {
                let y = matmul_t(tier, &x, m, k, &ws[r % copies], n);
                s += y[0];
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let dt = best;
        println!(
            "m={m} k={k} n={n}: {:.3} ms, {:.1} GB/s, {:.1} GFLOP/s {s}",
            dt * 1e3,
            (n * k * 4) as f64 / dt / 1e9,
            2.0 * (m * n * k) as f64 / dt / 1e9
        );
    }
}
