//! The portable tier: plain Rust, eight independent partial sums per dot product so the compiler
//! can vectorise it on any target.

use super::{Weight, MR};

const LANES: usize = 8;

/// `out[r][j] = x[r] · w[j]` for `mr` rows of `x` and `nr` rows of `w`, each of length `k`.
pub(super) fn tile<W: Weight>(
    x: &[f32],
    mr: usize,
    w: &[W],
    nr: usize,
    k: usize,
    out: &mut [[f32; 4]; MR],
) {
    for r in 0..mr {
        let xr = &x[r * k..(r + 1) * k];
        for j in 0..nr {
            let wj = &w[j * k..(j + 1) * k];
            let mut acc = [0f32; LANES];
            let mut xc = xr.chunks_exact(LANES);
            let mut wc = wj.chunks_exact(LANES);
            for (xv, wv) in (&mut xc).zip(&mut wc) {
                for l in 0..LANES {
                    acc[l] += xv[l] * wv[l].to_f32();
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (a, b) in xc.remainder().iter().zip(wc.remainder()) {
                s += a * b.to_f32();
            }
            out[r][j] = s;
        }
    }
}
