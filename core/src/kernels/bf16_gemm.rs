//! The blocked bf16 product for many rows on AVX512-BF16 ([`Tier::Avx512Bf16`]): `y = x Wᵀ`
//! with `x` `(m, k)` f32 activations rounded to bf16 once per product, `W` `(n, k)` bf16
//! weights packed once at load ([`PackedBf16`]), f32 accumulation, `y` `(m, n)` f32 written in
//! place (no transpose).
//!
//! The register tile is up to 8 rows x 3 blocks of 16 columns (24 accumulators): each step of
//! two k-elements loads 3 blocks of packed weights (16 columns x a pair each) and broadcasts one
//! pair of each row, then `vdpbf16ps` adds both products to every accumulator — an outer
//! product, no horizontal sums. The weights of one panel of 48 columns are read once per row
//! tile from L2; panels are shared out over the rayon pool.
//!
//! The small-M path ([`super::x86::Bf16Dot`]) reads the weights in their row layout; this one
//! serves batches (many rows), where the product is bound by arithmetic.

// Intrinsics need `unsafe`: loads and stores within the slices `gemm` checks, in functions
// compiled for the features `Tier::is_supported` checked at run time.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use half::bf16;
use rayon::prelude::*;

use super::Tier;

/// Columns of one block (a 512-bit register of f32).
pub(crate) const LANES: usize = 16;
/// Column blocks of one register tile.
const NB: usize = 3;
/// Rows of one register tile.
const MR: usize = 8;

/// bf16 weights `(n, k)` re-laid out for [`gemm`]: per block of 16 columns, per pair of
/// k-elements, the 16 columns' pairs in turn (one `u32` each, element 2p in the low half);
/// columns and k zero-padded to whole blocks and pairs.
#[derive(Debug, Clone)]
pub(crate) struct PackedBf16 {
    data: Vec<u32>,
    n: usize,
    k: usize,
}

impl PackedBf16 {
    /// Packs `w` `(n, k)` row-major. Panics if `w` is shorter than `n * k` (an internal
    /// invariant: the caller has the weight's shape).
    pub(crate) fn new(w: &[bf16], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "bf16 pack: weight shorter than its shape");
        let kp = k.div_ceil(2);
        let blocks = n.div_ceil(LANES);
        let mut data = vec![0u32; blocks * kp * LANES];
        data.par_chunks_mut(kp * LANES)
            .enumerate()
            .for_each(|(b, block)| {
                for l in 0..LANES.min(n - b * LANES) {
                    let row = &w[(b * LANES + l) * k..(b * LANES + l + 1) * k];
                    for p in 0..kp {
                        let lo = row[2 * p].to_bits();
                        let hi = row.get(2 * p + 1).map_or(0, |v| v.to_bits());
                        block[p * LANES + l] = u32::from(lo) | (u32::from(hi) << 16);
                    }
                }
            });
        Self { data, n, k }
    }

    /// The weights back in their `(n, k)` row layout.
    pub(crate) fn unpack(&self) -> Vec<bf16> {
        let kp = self.k.div_ceil(2);
        let mut out = vec![bf16::ZERO; self.n * self.k];
        for (row, dst) in out.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let (b, l) = (row / LANES, row % LANES);
            for (t, v) in dst.iter_mut().enumerate() {
                let word = self.data[(b * kp + t / 2) * LANES + l];
                *v = bf16::from_bits((word >> (16 * (t % 2))) as u16);
            }
        }
        out
    }

    /// The packed words (see the type's docs).
    pub(crate) fn words(&self) -> &[u32] {
        &self.data
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    pub(crate) fn k(&self) -> usize {
        self.k
    }
}

/// `x` `(m, k)` rounded to bf16 (nearest even), as pairs along k (zero-padded).
fn pairs(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; m * kp];
    out.par_chunks_mut(kp).enumerate().for_each(|(r, row)| {
        let src = &x[r * k..(r + 1) * k];
        // SAFETY: `gemm` runs only where AVX512-BF16 was detected (its first check).
        unsafe { round_row(src, row) }
    });
    out
}

/// One row of f32 as bf16 pairs: 32 values a step by `vcvtne2ps2bf16` (round to nearest even,
/// the pair layout in order), the tail as [`pack_pixel`] does.
///
/// # Safety
/// The CPU must have AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn round_row(src: &[f32], dst: &mut [u32]) {
    let whole = (src.len() / 32).min(dst.len() / 16);
    for i in 0..whole {
        let lo = _mm512_loadu_ps(src.as_ptr().add(32 * i));
        let hi = _mm512_loadu_ps(src.as_ptr().add(32 * i + 16));
        let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(dst.as_mut_ptr().add(16 * i).cast(), v);
    }
    pack_pixel(&src[32 * whole..], &mut dst[16 * whole..]);
}

/// `src` as bf16 pairs, nearest even (the last pair zero-padded when its length is odd): one
/// pixel's channels, or the tail of a row.
pub(crate) fn pack_pixel(src: &[f32], dst: &mut [u32]) {
    for (p, o) in dst.iter_mut().enumerate() {
        let lo = bf16::from_f32(src[2 * p]).to_bits();
        let hi = src
            .get(2 * p + 1)
            .map_or(0, |v| bf16::from_f32(*v).to_bits());
        *o = u32::from(lo) | (u32::from(hi) << 16);
    }
}

/// The output pointer, shared by the tasks: each writes only its own columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the tasks write disjoint column ranges of `y` (one panel each), and `gemm` waits for
// all of them before `y` is used again.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `y = x Wᵀ` `(m, n)` (see the module docs); `None` when this CPU or tier lacks AVX512-BF16.
/// Panics if `x` is shorter than `m * k` or `k` is not the packed weight's.
pub(crate) fn gemm(tier: Tier, x: &[f32], m: usize, k: usize, w: &PackedBf16) -> Option<Vec<f32>> {
    if tier != Tier::Avx512Bf16 || !tier.is_supported() {
        return None;
    }
    assert!(
        x.len() >= m * k && k == w.k,
        "bf16 gemm: shapes out of range"
    );
    let n = w.n;
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return Some(y);
    }
    let xq = pairs(x, m, k);
    let kp = k.div_ceil(2);
    let panel = NB * LANES;
    let out = Out(y.as_mut_ptr());
    (0..n.div_ceil(panel)).into_par_iter().for_each(|pi| {
        let n0 = pi * panel;
        let cols = panel.min(n - n0);
        let wp = w.data[n0 / LANES * kp * LANES..].as_ptr();
        let mut r0 = 0;
        while r0 < m {
            let mr = MR.min(m - r0);
            // SAFETY: AVX512-BF16 was checked above. The tile reads `mr` rows of `kp` pairs
            // from `xq` at row `r0`, `ceil(cols / 16)` blocks of `kp * 16` words from the
            // packed weights at `n0`, and writes rows `r0..r0 + mr`, columns `n0..n0 + cols`
            // of `y` (`m x n`): all inside the buffers sized above, and no other task writes
            // these columns.
            unsafe {
                let xp = xq.as_ptr().add(r0 * kp);
                let yp = out.get().add(r0 * n + n0);
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match mr {
                            $($r => tile::<$r>(xp, kp, wp, yp, n, cols),)*
                            _ => tile::<MR>(xp, kp, wp, yp, n, cols),
                        }
                    };
                }
                rows!(1 2 3 4 5 6 7);
            }
            r0 += mr;
        }
    });
    Some(y)
}

/// One register tile: `R` rows (`x`: rows `kp` pairs apart) against up to three blocks of 16
/// columns (`w`: blocks `kp * 16` words apart), written to `y` (rows `ldy` apart), only the
/// first `cols` columns.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile<const R: usize>(
    x: *const u32,
    kp: usize,
    w: *const u32,
    y: *mut f32,
    ldy: usize,
    cols: usize,
) {
    let blocks = cols.div_ceil(LANES);
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    macro_rules! steps {
        ($nb:literal) => {
            for p in 0..kp {
                let mut wv = [_mm512_setzero_si512(); $nb];
                #[allow(clippy::needless_range_loop)]
                for j in 0..$nb {
                    wv[j] = _mm512_loadu_si512(w.add((j * kp + p) * LANES) as *const __m512i);
                }
                for r in 0..R {
                    let xb = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        *x.add(r * kp + p) as i32,
                    ));
                    for j in 0..$nb {
                        let wb = std::mem::transmute::<__m512i, __m512bh>(wv[j]);
                        acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xb, wb);
                    }
                }
            }
        };
    }
    match blocks {
        1 => steps!(1),
        2 => steps!(2),
        _ => steps!(3),
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate().take(blocks) {
            let left = cols - j * LANES;
            let p = y.add(r * ldy + j * LANES);
            if left >= LANES {
                _mm512_storeu_ps(p, *v);
            } else {
                _mm512_mask_storeu_ps(p, ((1u32 << left) - 1) as u16, *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against plain arithmetic on the same bf16-rounded values (f64 sums), for shapes with
    /// partial tiles, odd k and partial column blocks.
    #[test]
    fn matches_plain_arithmetic_on_bf16_values() {
        if !Tier::Avx512Bf16.is_supported() {
            return;
        }
        let mut next = super::super::test_values(1);
        for (m, k, n) in [
            (1, 2, 1),
            (3, 7, 5),
            (8, 64, 48),
            (19, 33, 50),
            (33, 130, 97),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<bf16> = (0..n * k).map(|_| bf16::from_f32(next())).collect();
            let p = PackedBf16::new(&w, n, k);
            assert_eq!(
                p.unpack(),
                w,
                "({m}, {k}, {n}): unpack gives the weights back"
            );
            let y = gemm(Tier::Avx512Bf16, &x, m, k, &p).expect("the tier runs here");
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|t| {
                            f64::from(bf16::from_f32(x[i * k + t]).to_f32())
                                * f64::from(w[j * k + t].to_f32())
                        })
                        .sum();
                    let got = f64::from(y[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "({m}, {k}, {n}) at ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
