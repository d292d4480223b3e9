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
