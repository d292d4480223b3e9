//! The tokenizer's convolutions in bf16 on AVX512-BF16 ([`Tier::Avx512Bf16`]), channels-last
//! and without im2col: an implicit GEMM. Mirrors `nn.Conv2d` (stride 1, groups 1, dilation 1,
//! with bias) as the VQ decoder uses it.
//!
//! - The input is [`Pairs`]: `(H + 2p, W + 2p)` pixels (a zero border of the padding `p`) of
//!   `ceil(C / 2)` bf16 pairs each, rounded to nearest even once, by whoever wrote it (the
//!   fused GroupNorm + SiLU, or [`Pairs::from_f32`] with nearest upsampling).
//! - The weight is [`PackedConv`]: `(O, KH, KW, C)` with channels padded to whole pairs, in the
//!   blocked layout of [`PackedBf16`], packed once at load.
//! - A register tile is up to 8 consecutive output pixels of one row x 2 blocks of 16 output
//!   channels (16 `vdpbf16ps` accumulators). For each kernel tap the tile reads the input
//!   pixels shifted by the tap, straight from `Pairs` (a pixel's channels are contiguous), so the
//!   taps are a sum of shifted 1x1 products and no patch matrix is written.
//! - Bias and an optional residual (the `ResnetBlock`'s skip, the `AttnBlock`'s input) are added
//!   as the tile is stored: `y` `(H, W, O)` f32, channels last.
//! - Tasks are (output row, panel of 32 channels), shared out over the rayon pool.

// Intrinsics need `unsafe`: loads and stores within the buffers `conv` checks, in functions
// compiled for the features `Tier::is_supported` checked at run time.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use half::bf16;
use rayon::prelude::*;

use super::bf16_gemm::{pack_pixel, PackedBf16, LANES};
use super::Tier;

/// Rows (output pixels) of one register tile (8 x 2 blocks measured fastest here: 6 x 4 and
/// 12 x 2 within 5%, 4 x 4 half as fast).
const MR: usize = 8;
/// Column blocks (16 output channels each) of one register tile.
const NB: usize = 2;

/// Channels-last activations as bf16 pairs with a zero border: pixel `(y, x)` of the image is
/// at `((y + pad) * (w + 2 pad) + x + pad) * cp` words.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pairs {
    pub(crate) data: Vec<u32>,
    /// Image rows and columns (without the border).
    pub(crate) h: usize,
    pub(crate) w: usize,
    /// Channels, and pairs per pixel (`ceil(c / 2)`).
    pub(crate) c: usize,
    pub(crate) cp: usize,
    /// Border width.
    pub(crate) pad: usize,
}

impl Pairs {
    /// An `h x w x c` buffer with a zero border of `pad`, reusing `data`'s allocation: the
    /// inside holds whatever `data` held (every writer fills it whole), so a reused buffer is
    /// not written twice.
    pub(crate) fn bordered(mut data: Vec<u32>, h: usize, w: usize, c: usize, pad: usize) -> Self {
        let cp = c.div_ceil(2);
        let stride = (w + 2 * pad) * cp;
        data.resize((h + 2 * pad) * stride, 0);
        if pad > 0 {
            let bottom = (h + pad) * stride;
            data[..pad * stride].fill(0);
            data[bottom..].fill(0);
            for row in data[pad * stride..bottom].chunks_exact_mut(stride) {
                row[..pad * cp].fill(0);
                row[(w + pad) * cp..].fill(0);
            }
        }
        Self {
            data,
            h,
            w,
            c,
            cp,
            pad,
        }
    }

    /// `x` `(h, w, c)` f32 channels-last, upsampled `up` times (nearest, as
    /// `F.interpolate(mode="nearest")` with an integer factor), rounded to bf16 pairs with a
    /// border of `pad`.
    pub(crate) fn from_f32(
        x: &[f32],
        (h, w, c): (usize, usize, usize),
        up: usize,
        pad: usize,
        reuse: Vec<u32>,
    ) -> Self {
        let up = up.max(1);
        let mut out = Self::bordered(reuse, h * up, w * up, c, pad);
        let (stride, cp, ow) = ((out.w + 2 * pad) * out.cp, out.cp, out.w);
        out.data
            .par_chunks_mut(stride)
            .skip(pad)
            .take(h * up)
            .enumerate()
            .for_each(|(oy, row)| {
                let src = &x[(oy / up) * w * c..(oy / up + 1) * w * c];
                let dst = &mut row[pad * cp..(pad + ow) * cp];
                let fast = Tier::Avx512Bf16.is_supported();
                for (ox, px) in dst.chunks_exact_mut(cp).enumerate() {
                    let s = &src[(ox / up) * c..(ox / up + 1) * c];
                    if fast {
                        // SAFETY: AVX512-BF16 was detected just above.
                        unsafe { super::bf16_gemm::round_row(s, px) }
                    } else {
                        pack_pixel(s, px);
                    }
                }
            });
        out
    }
}

/// A convolution's weight `(O, C, KH, KW)` re-laid out for [`conv`] (see the module docs),
/// with its f32 bias.
#[derive(Debug, Clone)]
pub(crate) struct PackedConv {
    w: PackedBf16,
    bias: Vec<f32>,
    o: usize,
    c: usize,
    k: usize,
}

impl PackedConv {
    /// Packs `weight` `(o, c, k, k)` row-major (f32, rounded to bf16 nearest even) and its
    /// `bias` `(o,)`. Panics if the slices are shorter than the shapes (an internal invariant:
    /// the caller has the checkpoint's shapes).
    pub(crate) fn new(weight: &[f32], bias: &[f32], o: usize, c: usize, k: usize) -> Self {
        assert!(
            weight.len() >= o * c * k * k && bias.len() >= o,
            "conv pack: weight or bias shorter than its shape"
        );
        let cpad = c.div_ceil(2) * 2;
        let kk = k * k;
        let mut rows = vec![bf16::ZERO; o * kk * cpad];
        for (oi, row) in rows.chunks_exact_mut(kk * cpad).enumerate() {
            for ci in 0..c {
                for t in 0..kk {
                    row[t * cpad + ci] = bf16::from_f32(weight[(oi * c + ci) * kk + t]);
                }
            }
        }
        Self {
            w: PackedBf16::new(&rows, o, kk * cpad),
            bias: bias[..o].to_vec(),
            o,
            c,
            k,
        }
    }

    /// Output channels.
    pub(crate) fn out_channels(&self) -> usize {
        self.o
    }
}

/// The output pointer, shared by the tasks: each writes only its own (row, panel) block.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the tasks write disjoint (row, column-panel) blocks of `y`, and `conv` waits for all
// of them before `y` is used again.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `y = conv(x, W) + bias (+ residual)`, `(h, w, o)` f32 channels-last, written into `y`
/// (resized, every element overwritten; its allocation reused). `None` when this CPU or tier lacks AVX512-BF16. Panics when
/// the shapes disagree (internal invariant): `x`'s channels and border must be the weight's
/// (`pad = (k - 1) / 2`), and `residual` `(h, w, o)`.
pub(crate) fn conv(
    tier: Tier,
    x: &Pairs,
    pc: &PackedConv,
    residual: Option<&[f32]>,
    y: &mut Vec<f32>,
) -> Option<()> {
    if tier != Tier::Avx512Bf16 || !tier.is_supported() {
        return None;
    }
    let (h, w, o, k) = (x.h, x.w, pc.o, pc.k);
    assert!(
        x.c == pc.c && x.pad == (k - 1) / 2 && k % 2 == 1,
        "bf16 conv: input {}x{}x{} (border {}) for a {k}x{k} kernel over {} channels",
        x.h,
        x.w,
        x.c,
        x.pad,
        pc.c
    );
    assert!(residual.is_none_or(|r| r.len() == h * w * o));
    // Every element is written below: a reused buffer is not cleared first.
    y.resize(h * w * o, 0.0);
    if y.is_empty() {
        return Some(());
    }
    let cp = x.cp;
    let kp = pc.w.k().div_ceil(2);
    let stride = (w + 2 * x.pad) * cp;
    // Word offsets of the taps from a pixel's top-left neighbour.
    let taps: Vec<usize> = (0..k * k)
        .map(|t| (t / k) * stride + (t % k) * cp)
        .collect();
    let panel = NB * LANES;
    let panels = o.div_ceil(panel);
    let out = Out(y.as_mut_ptr());
    let res = residual.map(|r| Out(r.as_ptr().cast_mut()));
    let packed = pc.w.words();
    (0..h * panels).into_par_iter().for_each(|task| {
        let (oy, pi) = (task / panels, task % panels);
        let n0 = pi * panel;
        let cols = panel.min(o - n0);
        let wp = packed[n0 / LANES * kp * LANES..].as_ptr();
        let mut x0 = 0;
        while x0 < w {
            let mr = MR.min(w - x0);
            // SAFETY: AVX512-BF16 was checked above. The tile reads `mr` pixels from
            // `(oy, x0)` of the bordered input at every tap (inside it: the border is
            // `(k - 1) / 2`), `ceil(cols / 16)` blocks of `kp * 16` packed words at `n0`, the
            // bias and residual at those columns, and writes pixels `(oy, x0..x0 + mr)`,
            // columns `n0..n0 + cols` of `y` `(h, w, o)`: all inside the buffers sized above,
            // and no other task writes them.
            unsafe {
                let xp = x.data.as_ptr().add(oy * stride + x0 * cp);
                let at = (oy * w + x0) * o + n0;
                let args = Tile {
                    x: xp,
                    taps: &taps,
                    cp,
                    w: wp,
                    kp,
                    y: out.get().add(at),
                    ldy: o,
                    bias: pc.bias.as_ptr().add(n0),
                    residual: res.map_or(std::ptr::null(), |r| r.get().add(at).cast_const()),
                    cols,
                };
                match cols.div_ceil(LANES) {
                    1 => rows::<1>(mr, &args),
                    2 if NB > 2 => rows::<2>(mr, &args),
                    3 if NB > 3 => rows::<3>(mr, &args),
                    _ => rows::<NB>(mr, &args),
                }
            }
            x0 += mr;
        }
    });
    Some(())
}

/// [`tile`] for `mr` rows (at most [`MR`]) and `B` blocks.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn rows<const B: usize>(mr: usize, a: &Tile) {
    macro_rules! by_rows {
        ($($r:literal)*) => {
            match mr {
                $($r => tile::<$r, B>(a),)*
                _ => tile::<MR, B>(a),
            }
        };
    }
    by_rows!(1 2 3 4 5 6 7)
}

/// One register tile's operands (see [`tile`]).
struct Tile<'a> {
    /// The tile's first pixel's top-left neighbour in the bordered input; pixels `cp` apart.
    x: *const u32,
    taps: &'a [usize],
    cp: usize,
    /// The panel's first packed block; blocks `kp * 16` words apart.
    w: *const u32,
    kp: usize,
    /// The tile's first output; pixels `ldy` apart.
    y: *mut f32,
    ldy: usize,
    bias: *const f32,
    /// Null, or laid out as `y`.
    residual: *const f32,
    /// Valid columns of the panel.
    cols: usize,
}

/// `R` pixels x `B` blocks of 16 channels: for every tap and channel pair, `B` packed weight
/// vectors and one broadcast pair per pixel feed `R * B` `vdpbf16ps` accumulators.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const R: usize, const B: usize>(a: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); B]; R];
    for (ti, &off) in a.taps.iter().enumerate() {
        let xt = a.x.add(off);
        let wt = a.w.add(ti * a.cp * LANES);
        for c2 in 0..a.cp {
            let mut wv = [_mm512_setzero_si512(); B];
            #[allow(clippy::needless_range_loop)]
            for j in 0..B {
                wv[j] = _mm512_loadu_si512(wt.add((j * a.kp + c2) * LANES) as *const __m512i);
            }
            for r in 0..R {
                let xb = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *xt.add(r * a.cp + c2) as i32,
                ));
                for j in 0..B {
                    let wb = std::mem::transmute::<__m512i, __m512bh>(wv[j]);
                    acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xb, wb);
                }
            }
        }
    }
    for j in 0..B {
        let left = a.cols.saturating_sub(j * LANES).min(LANES);
        if left == 0 {
            break;
        }
        let mask = if left == LANES {
            u16::MAX
        } else {
            ((1u32 << left) - 1) as u16
        };
        let bias = _mm512_maskz_loadu_ps(mask, a.bias.add(j * LANES));
        for (r, row) in acc.iter().enumerate() {
            let at = r * a.ldy + j * LANES;
            let mut v = _mm512_add_ps(row[j], bias);
            if !a.residual.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, a.residual.add(at)));
            }
            _mm512_mask_storeu_ps(a.y.add(at), mask, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against plain arithmetic (f64 sums) on the same bf16-rounded values, for 1x1 and 3x3
    /// kernels, odd channel counts, partial tiles and panels, upsampling and a residual.
    #[test]
    fn matches_plain_arithmetic_on_bf16_values() {
        if !Tier::Avx512Bf16.is_supported() {
            return;
        }
        let mut next = super::super::test_values(7);
        let round = |v: f32| f64::from(bf16::from_f32(v).to_f32());
        // (h, w, c, o, k, up, residual)
        for (h, w, c, o, k, up, with_res) in [
            (1, 1, 1, 1, 1, 1, false),
            (3, 7, 5, 3, 3, 1, true),
            (4, 5, 6, 70, 3, 2, false),
            (5, 13, 33, 130, 3, 1, true),
            (6, 9, 20, 64, 1, 1, true),
        ] {
            let x: Vec<f32> = (0..h * w * c).map(|_| next()).collect();
            let wt: Vec<f32> = (0..o * c * k * k).map(|_| next()).collect();
            let bias: Vec<f32> = (0..o).map(|_| next()).collect();
            let (oh, ow) = (h * up, w * up);
            let residual: Vec<f32> = (0..oh * ow * o).map(|_| next()).collect();
            let pc = PackedConv::new(&wt, &bias, o, c, k);
            let xp = Pairs::from_f32(&x, (h, w, c), up, (k - 1) / 2, Vec::new());
            let mut y = Vec::new();
            conv(
                Tier::Avx512Bf16,
                &xp,
                &pc,
                with_res.then_some(&residual[..]),
                &mut y,
            )
            .expect("the tier runs here");
            let p = (k - 1) / 2;
            for oy in 0..oh {
                for ox in 0..ow {
                    for oi in 0..o {
                        let mut want = f64::from(bias[oi]);
                        if with_res {
                            want += f64::from(residual[(oy * ow + ox) * o + oi]);
                        }
                        for dy in 0..k {
                            for dx in 0..k {
                                let (iy, ix) = (oy + dy, ox + dx);
                                if iy < p || ix < p || iy - p >= oh || ix - p >= ow {
                                    continue;
                                }
                                let (sy, sx) = ((iy - p) / up, (ix - p) / up);
                                for ci in 0..c {
                                    want += round(x[(sy * w + sx) * c + ci])
                                        * round(wt[((oi * c + ci) * k + dy) * k + dx]);
                                }
                            }
                        }
                        let got = f64::from(y[(oy * ow + ox) * o + oi]);
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "({h}, {w}, {c}, {o}, {k}, up {up}) at ({oy}, {ox}, {oi}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
