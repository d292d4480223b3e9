//! The x86-64 tiers: AVX-512F (16 lanes, tiles of up to 4 x 4) and AVX2 + FMA (8 lanes, tiles of
//! up to 4 x 2). bf16 weights are widened by a 16-bit shift, f16 weights by F16C: exact.

// Intrinsics need `unsafe`: pointer loads within slices whose lengths `tile` checks, in
// functions compiled for features `Tier::is_supported` checked at run time.
#![allow(unsafe_code)]

use std::any::TypeId;
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{Tier, Weight, MR};

/// Calls `$m::tile_<kind>::<MR, NR>` with the run-time sizes turned into constants.
macro_rules! dispatch {
    ($m:ident, $kind:expr, $mr:expr, $nr:expr, $x:expr, $w:expr, $k:expr, $out:expr, $wide:literal) => {{
        macro_rules! rows {
            ($f:ident) => {
                match ($mr, $nr == $wide) {
                    (1, true) => $m::$f::<1, $wide>($x, $w, $k, $out),
                    (2, true) => $m::$f::<2, $wide>($x, $w, $k, $out),
                    (3, true) => $m::$f::<3, $wide>($x, $w, $k, $out),
                    (4, true) => $m::$f::<4, $wide>($x, $w, $k, $out),
                    (5, true) => $m::$f::<5, $wide>($x, $w, $k, $out),
                    (6, true) => $m::$f::<6, $wide>($x, $w, $k, $out),
                    (7, true) => $m::$f::<7, $wide>($x, $w, $k, $out),
                    (_, true) => $m::$f::<8, $wide>($x, $w, $k, $out),
                    (1, false) => $m::$f::<1, 1>($x, $w, $k, $out),
                    (2, false) => $m::$f::<2, 1>($x, $w, $k, $out),
                    (3, false) => $m::$f::<3, 1>($x, $w, $k, $out),
                    (4, false) => $m::$f::<4, 1>($x, $w, $k, $out),
                    (5, false) => $m::$f::<5, 1>($x, $w, $k, $out),
                    (6, false) => $m::$f::<6, 1>($x, $w, $k, $out),
                    (7, false) => $m::$f::<7, 1>($x, $w, $k, $out),
                    _ => $m::$f::<8, 1>($x, $w, $k, $out),
                }
            };
        }
        match $kind {
            0 => rows!(tile_f32),
            1 => rows!(tile_bf16),
            _ => rows!(tile_f16),
        }
    }};
}

/// `out[r][j] = x[r] · w[j]` for `mr` (1..=8) rows of `x` (`packed` is the tile's packed
/// copy, see `pack`) and `nr` rows of `w` (1, or the tier's
/// tile width), each of length `k`.
#[allow(clippy::too_many_arguments)] // One call site; the shapes of one tile.
pub(super) fn tile<W: Weight>(
    tier: Tier,
    x: &[f32],
    packed: &[f32],
    mr: usize,
    w: &[W],
    nr: usize,
    k: usize,
    out: &mut [[f32; 4]; MR],
) {
    assert!(
        (1..=MR).contains(&mr)
            && (nr == 1 || nr == super::tile_cols(tier))
            && x.len() >= mr * k
            && packed.len() >= mr * (k / super::lanes(tier) * super::lanes(tier))
            && w.len() >= nr * k,
        "x86 tile: shapes out of range"
    );
    let kind = if TypeId::of::<W>() == TypeId::of::<f32>() {
        0
    } else if TypeId::of::<W>() == TypeId::of::<bf16>() {
        1
    } else if TypeId::of::<W>() == TypeId::of::<f16>() {
        2
    } else {
        super::portable::tile(x, mr, w, nr, k, out);
        return;
    };
    let wp = w.as_ptr() as *const u8;
    let xp = packed.as_ptr();
    // SAFETY: `Tier::is_supported` was checked when the tier was chosen (`Choice::parse`,
    // `set_choice`, `Tier::detect`); the loads stay within `mr * k` floats of `x` and `nr * k`
    // elements of `w`, checked above.
    unsafe {
        match tier {
            Tier::Avx512 => dispatch!(avx512, kind, mr, nr, xp, wp, k, out, 2),
            _ => dispatch!(avx2, kind, mr, nr, xp, wp, k, out, 2),
        }
    }
    // Tails the vector loop left (k not a multiple of the lanes): scalar.
    let lanes = if tier == Tier::Avx512 { 16 } else { 8 };
    let body = k / lanes * lanes;
    if body < k {
        for r in 0..mr {
            for j in 0..nr {
                let mut s = 0f32;
                for t in body..k {
                    s += x[r * k + t] * w[j * k + t].to_f32();
                }
                out[r][j] += s;
            }
        }
    }
}

/// One register tile: `MR x NR` accumulators of `$lanes` floats over `k`, weights loaded by
/// `$load` (element size `$size` bytes), reduced horizontally at the end.
macro_rules! tile_fn {
    ($name:ident, $feat:literal, $lanes:literal, $size:literal, $zero:ident, $loadx:ident, $fma:ident, $hsum:ident, $load:ident) => {
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $name<const R: usize, const C: usize>(
            x: *const f32,
            w: *const u8,
            k: usize,
            out: &mut [[f32; 4]; super::MR],
        ) {
            // Flat arrays indexed by constants after unrolling, so LLVM keeps them in registers
            // (nested arrays walked by iterators were spilled to the stack).
            let mut acc = [$zero(); 32];
            let body = k / $lanes * $lanes;
            let mut i = 0;
            while i < body {
                let mut xv = [$zero(); 8];
                #[allow(clippy::needless_range_loop)]
                for r in 0..R {
                    xv[r] = $loadx(x.add(i * R + r * $lanes));
                }
                #[allow(clippy::needless_range_loop)]
                for j in 0..C {
                    let wv = $load(w.add((j * k + i) * $size));
                    // The next tile's rows, at the same offset: each row is a page of its own
                    // and the hardware prefetcher restarts at every page.
                    _mm_prefetch::<_MM_HINT_T1>(
                        w.wrapping_add(((j + C) * k + i) * $size) as *const i8
                    );
                    for r in 0..R {
                        acc[r * C + j] = $fma(xv[r], wv, acc[r * C + j]);
                    }
                }
                i += $lanes;
            }
            for r in 0..R {
                for j in 0..C {
                    out[r][j] = $hsum(acc[r * C + j]);
                }
            }
        }
    };
}

mod avx512 {
    use super::*;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_f32(p: *const u8) -> __m512 {
        _mm512_loadu_ps(p as *const f32)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_bf16(p: *const u8) -> __m512 {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn load_f16(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn loadx(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn hsum(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }

    tile_fn!(
        tile_f32,
        "avx512f",
        16,
        4,
        _mm512_setzero_ps,
        loadx,
        _mm512_fmadd_ps,
        hsum,
        load_f32
    );
    tile_fn!(
        tile_bf16,
        "avx512f",
        16,
        2,
        _mm512_setzero_ps,
        loadx,
        _mm512_fmadd_ps,
        hsum,
        load_bf16
    );
    tile_fn!(
        tile_f16,
        "avx512f,f16c",
        16,
        2,
        _mm512_setzero_ps,
        loadx,
        _mm512_fmadd_ps,
        hsum,
        load_f16
    );
}

mod avx2 {
    use super::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_f32(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_bf16(p: *const u8) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn loadx(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    tile_fn!(
        tile_f32,
        "avx2,fma",
        8,
        4,
        _mm256_setzero_ps,
        loadx,
        _mm256_fmadd_ps,
        hsum,
        load_f32
    );
    tile_fn!(
        tile_bf16,
        "avx2,fma",
        8,
        2,
        _mm256_setzero_ps,
        loadx,
        _mm256_fmadd_ps,
        hsum,
        load_bf16
    );
    tile_fn!(
        tile_f16,
        "avx2,fma,f16c",
        8,
        2,
        _mm256_setzero_ps,
        loadx,
        _mm256_fmadd_ps,
        hsum,
        load_f16
    );
}

/// bf16 elements of one `vdpbf16ps` step (a 512-bit register of pairs).
const DOT_LANES: usize = 32;

/// Rows of x a bf16 dot tile holds (8 x 2 accumulators, as the AVX-512 f32 tiles).
const DOT_ROWS: usize = 8;

/// The product of f32 activations with bf16 weights on AVX512-BF16 ([`Tier::Avx512Bf16`]): the
/// activations are rounded to bf16 once per product (round to nearest even) and packed per row
/// tile, zero-padded to whole register steps; each tile multiplies them with the weights by
/// `vdpbf16ps`, accumulating in f32.
pub(super) struct Bf16Dot<'a> {
    /// Per row tile of up to [`DOT_ROWS`] rows, per step of [`DOT_LANES`] columns, each row's
    /// step in turn (bf16 bits).
    packed: Vec<u16>,
    /// The weights' bits, `(n, k)` row-major.
    w: &'a [u16],
    m: usize,
    k: usize,
}

impl<'a> Bf16Dot<'a> {
    /// The dot-product path, when the tier is [`Tier::Avx512Bf16`] (and the CPU has it) and the
    /// weights are bf16.
    pub(super) fn new<W: Weight>(
        tier: Tier,
        x: &[f32],
        m: usize,
        k: usize,
        w: &'a [W],
    ) -> Option<Self> {
        if tier != Tier::Avx512Bf16
            || !tier.is_supported()
            || TypeId::of::<W>() != TypeId::of::<bf16>()
        {
            return None;
        }
        // SAFETY: `W` is `bf16` (checked above), a 2-byte `repr(transparent)` wrapper of `u16`.
        let w = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u16, w.len()) };
        let steps = k.div_ceil(DOT_LANES);
        let mut packed = Vec::with_capacity(m * steps * DOT_LANES);
        let mut r0 = 0;
        while r0 < m {
            let mr = DOT_ROWS.min(m - r0);
            for s in 0..steps {
                for r in r0..r0 + mr {
                    let row = &x[r * k..(r + 1) * k];
                    for t in s * DOT_LANES..(s + 1) * DOT_LANES {
                        packed.push(row.get(t).map_or(0, |v| bf16::from_f32(*v).to_bits()));
                    }
                }
            }
            r0 += mr;
        }
        Some(Self { packed, w, m, k })
    }

    /// Weight rows `n0..n0 + nc` against every row tile; `out` is `(nc, m)`.
    pub(super) fn chunk(&self, n0: usize, nc: usize, out: &mut [f32]) {
        let (m, k) = (self.m, self.k);
        let stride = k.div_ceil(DOT_LANES) * DOT_LANES;
        assert!(
            self.w.len() >= (n0 + nc) * k && out.len() >= nc * m && self.packed.len() >= m * stride,
            "bf16 dot: shapes out of range"
        );
        let mut tile = [[0f32; 4]; super::MR];
        let mut r0 = 0;
        while r0 < m {
            let mr = DOT_ROWS.min(m - r0);
            let xp = self.packed[r0 * stride..].as_ptr();
            let mut j0 = 0;
            while j0 < nc {
                let cols = if nc - j0 >= 2 { 2 } else { 1 };
                let wp = self.w[(n0 + j0) * k..].as_ptr();
                // SAFETY: `Tier::Avx512Bf16.is_supported()` was checked in `new`; the tile reads
                // `mr` packed rows of `stride` elements from `xp` and `cols` rows of `k` weights
                // from `wp` (the tail by a masked load), all within the slices checked above.
                unsafe {
                    macro_rules! rows {
                        ($c:literal) => {
                            match mr {
                                1 => dot::tile::<1, $c>(xp, wp, k, &mut tile),
                                2 => dot::tile::<2, $c>(xp, wp, k, &mut tile),
                                3 => dot::tile::<3, $c>(xp, wp, k, &mut tile),
                                4 => dot::tile::<4, $c>(xp, wp, k, &mut tile),
                                5 => dot::tile::<5, $c>(xp, wp, k, &mut tile),
                                6 => dot::tile::<6, $c>(xp, wp, k, &mut tile),
                                7 => dot::tile::<7, $c>(xp, wp, k, &mut tile),
                                _ => dot::tile::<8, $c>(xp, wp, k, &mut tile),
                            }
                        };
                    }
                    if cols == 2 {
                        rows!(2)
                    } else {
                        rows!(1)
                    }
                }
                for (j, o) in out[j0 * m..(j0 + cols) * m].chunks_exact_mut(m).enumerate() {
                    for r in 0..mr {
                        o[r0 + r] = tile[r][j];
                    }
                }
                j0 += cols;
            }
            r0 += mr;
        }
    }
}

mod dot {
    use super::*;

    /// `out[r][j] = Σ x[r] · w[j]` over `k` for `R` packed rows (`x`: per step of 32, each
    /// row's 32 bf16 in turn, zero-padded) and `C` weight rows of `k` bf16 (`w`, rows `k`
    /// apart; the last step's tail loaded under a mask).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn tile<const R: usize, const C: usize>(
        x: *const u16,
        w: *const u16,
        k: usize,
        out: &mut [[f32; 4]; super::super::MR],
    ) {
        let mut acc = [_mm512_setzero_ps(); 16];
        let steps = k.div_ceil(DOT_LANES);
        let tail = k - (steps.saturating_sub(1)) * DOT_LANES;
        for s in 0..steps {
            let i = s * DOT_LANES;
            let mut wv = [_mm512_setzero_si512(); 2];
            #[allow(clippy::needless_range_loop)]
            for j in 0..C {
                let p = w.add(j * k + i);
                wv[j] = if s + 1 < steps || tail == DOT_LANES {
                    _mm512_loadu_si512(p as *const __m512i)
                } else {
                    _mm512_maskz_loadu_epi16(((1u64 << tail) - 1) as u32, p as *const i16)
                };
                _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add((j + C) * k + i) as *const i8);
            }
            for r in 0..R {
                let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                    x.add(i * R + r * DOT_LANES) as *const __m512i,
                ));
                for j in 0..C {
                    let wb: __m512bh = std::mem::transmute(wv[j]);
                    acc[r * C + j] = _mm512_dpbf16_ps(acc[r * C + j], xv, wb);
                }
            }
        }
        for r in 0..R {
            for j in 0..C {
                out[r][j] = _mm512_reduce_add_ps(acc[r * C + j]);
            }
        }
    }
}
