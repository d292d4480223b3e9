//! GroupNorm (+ SiLU) over channels-last activations, writing the bf16 pairs the next
//! convolution reads ([`super::bf16_conv::Pairs`]). Mirrors `Normalize` (`nn.GroupNorm(32, C,
//! eps=1e-6, affine=True)`) followed by `nonlinearity` (`x * sigmoid(x)`) in `vq_model.py`.
//!
//! Statistics are summed per channel in f32 along one image row, then in f64 over rows and
//! channels of a group; the variance is the biased one, as PyTorch's. The normalised value is
//! `x * scale + shift` per channel (the group's `1 / sqrt(var + eps)` folded into the affine
//! weight), SiLU uses a polynomial `exp` ([`super::fused::exp`], relative error about 2e-7,
//! far below bf16's 4e-3),
//! and each value is rounded to bf16 nearest even.

use rayon::prelude::*;

use super::bf16_conv::Pairs;
use super::fused::{exp, LN2_HI, LN2_LO};

/// GroupNorm's affine weight and bias `(C,)`, its group count and eps.
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) groups: usize,
    pub(crate) eps: f64,
}

impl GroupNorm {
    /// Normalises `x` `(h, w, c)` f32 channels-last (SiLU after it when `silu`), as bf16 pairs
    /// with a zero border of `pad`, reusing `reuse`'s allocation. Panics if `c` is not the
    /// norm's channel count or not a multiple of its groups (internal invariants: the config
    /// validated both).
    pub(crate) fn to_pairs(
        &self,
        x: &[f32],
        (h, w, c): (usize, usize, usize),
        silu: bool,
        pad: usize,
        reuse: Vec<u32>,
    ) -> Pairs {
        assert!(
            c == self.gamma.len() && c.is_multiple_of(self.groups) && x.len() == h * w * c,
            "group norm: {c} channels, {} groups, {} values for {h}x{w}",
            self.groups,
            x.len()
        );
        let (scale, shift) = self.affine(x, c);
        let mut out = Pairs::bordered(reuse, h, w, c, pad);
        let cp = out.cp;
        let stride = (w + 2 * pad) * cp;
        out.data
            .par_chunks_mut(stride)
            .skip(pad)
            .take(h)
            .zip(x.par_chunks(w * c))
            .for_each_init(Vec::new, |buf: &mut Vec<f32>, (row, src)| {
                let dst = &mut row[pad * cp..(pad + w) * cp];
                if c.is_multiple_of(2) {
                    normalise_pack(src, dst, &scale, &shift, silu);
                } else {
                    buf.clear();
                    buf.extend_from_slice(src);
                    normalise_row(buf, &scale, &shift, silu);
                    for (px, o) in buf.chunks_exact(c).zip(dst.chunks_exact_mut(cp)) {
                        super::bf16_gemm::pack_pixel(px, o);
                    }
                }
            });
        out
    }

    /// Per-channel `(scale, shift)` with `norm(x) = x * scale + shift`.
    fn affine(&self, x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
        // Per-channel sums of one row of pixels (at most a few hundred values) in f32, rows
        // added in f64.
        // The partial sums are collected and added in order, so the result does not depend on
        // how the pool split the work.
        let row = (x.len() / c).clamp(1, 256) * c;
        let partial: Vec<(Vec<f32>, Vec<f32>)> = x
            .par_chunks(row)
            .map(|chunk| {
                let (mut s, mut q) = (vec![0f32; c], vec![0f32; c]);
                for px in chunk.chunks_exact(c) {
                    for ((s, q), v) in s.iter_mut().zip(q.iter_mut()).zip(px) {
                        *s += v;
                        *q += v * v;
                    }
                }
                (s, q)
            })
            .collect();
        let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
        for (rs, rq) in &partial {
            for i in 0..c {
                sum[i] += f64::from(rs[i]);
                sq[i] += f64::from(rq[i]);
            }
        }
        let per = c / self.groups;
        let n = (x.len() / c * per).max(1) as f64;
        let (mut scale, mut shift) = (vec![0f32; c], vec![0f32; c]);
        for g in 0..self.groups {
            let r = g * per..(g + 1) * per;
            let mean = sum[r.clone()].iter().sum::<f64>() / n;
            let var = (sq[r.clone()].iter().sum::<f64>() / n - mean * mean).max(0.0);
            let rstd = 1.0 / (var + self.eps).sqrt();
            for i in r {
                let a = f64::from(self.gamma[i]) * rstd;
                scale[i] = a as f32;
                shift[i] = (f64::from(self.beta[i]) - mean * a) as f32;
            }
        }
        (scale, shift)
    }
}

/// `v * scale + shift` per channel, then SiLU when asked, in place over one row of pixels.
fn normalise_row(buf: &mut [f32], scale: &[f32], shift: &[f32], silu: bool) {
    for px in buf.chunks_exact_mut(scale.len()) {
        for ((v, a), b) in px.iter_mut().zip(scale).zip(shift) {
            *v = activate(*v * a + b, silu);
        }
    }
}

/// [`normalise_row`] of a row of pixels with an even channel count, written as bf16 pairs.
fn normalise_pack(src: &[f32], dst: &mut [u32], scale: &[f32], shift: &[f32], silu: bool) {
    #[cfg(target_arch = "x86_64")]
    if scale.len().is_multiple_of(32) && super::Tier::Avx512Bf16.is_supported() {
        // SAFETY: AVX512-BF16 was detected on this CPU just above; `normalise_pack_bf16`
        // checks the slices' lengths.
        #[allow(unsafe_code)]
        unsafe {
            return normalise_pack_bf16(src, dst, scale, shift, silu);
        }
    }
    let c = scale.len();
    for (px, out) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c / 2)) {
        for (i, o) in out.iter_mut().enumerate() {
            let lo = activate(px[2 * i] * scale[2 * i] + shift[2 * i], silu);
            let hi = activate(px[2 * i + 1] * scale[2 * i + 1] + shift[2 * i + 1], silu);
            *o = round_bf16(lo) | (round_bf16(hi) << 16);
        }
    }
}

/// [`normalise_pack`] for channel counts in multiples of 32, 32 channels a step: two vectors
/// of 16 normalised (and SiLU'd: [`exp`]'s polynomial, scaled by `vscalefps`), rounded
/// together to 32 bf16 in order by `vcvtne2ps2bf16`, which is the pair layout.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(unsafe_code)]
unsafe fn normalise_pack_bf16(
    src: &[f32],
    dst: &mut [u32],
    scale: &[f32],
    shift: &[f32],
    silu: bool,
) {
    use std::arch::x86_64::*;
    let c = scale.len();
    assert!(shift.len() == c && c.is_multiple_of(32) && dst.len() * 2 >= src.len());
    let one = _mm512_set1_ps(1.0);
    let act = |t: __m512| -> __m512 {
        if !silu {
            return t;
        }
        // e^-t = 2^n p(r), -t = n ln 2 + r.
        let x = _mm512_min_ps(
            _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), t), _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(88.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for k in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(k));
        }
        let e = _mm512_scalef_ps(p, n);
        _mm512_div_ps(t, _mm512_add_ps(one, e))
    };
    for (px, out) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c / 2)) {
        for k in (0..c).step_by(32) {
            let lo = _mm512_fmadd_ps(
                _mm512_loadu_ps(px.as_ptr().add(k)),
                _mm512_loadu_ps(scale.as_ptr().add(k)),
                _mm512_loadu_ps(shift.as_ptr().add(k)),
            );
            let hi = _mm512_fmadd_ps(
                _mm512_loadu_ps(px.as_ptr().add(k + 16)),
                _mm512_loadu_ps(scale.as_ptr().add(k + 16)),
                _mm512_loadu_ps(shift.as_ptr().add(k + 16)),
            );
            let v = _mm512_cvtne2ps_pbh(act(hi), act(lo));
            _mm512_storeu_si512(
                out.as_mut_ptr().add(k / 2).cast(),
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
    }
}

#[inline(always)]
fn activate(t: f32, silu: bool) -> f32 {
    if silu {
        t / (1.0 + exp(-t))
    } else {
        t
    }
}

/// `v` rounded to bf16 (nearest even), as the low 16 bits; NaN stays NaN.
#[inline(always)]
fn round_bf16(v: f32) -> u32 {
    let b = v.to_bits();
    if v.is_nan() {
        return (b >> 16) | 0x40;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn exp_is_close_to_the_library_exp() {
        for i in -870..=880 {
            let x = i as f32 * 0.1;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 1e-6 * want,
                "exp({x}) = {got}, library {want}"
            );
        }
    }

    #[test]
    fn rounding_matches_the_half_crate() {
        for v in [0.0f32, -1.5, 1.0 / 3.0, 65504.0, 1e-30, -7.123_456, 3.0e38] {
            assert_eq!(round_bf16(v), u32::from(bf16::from_f32(v).to_bits()), "{v}");
        }
    }

    /// Against a plain two-pass GroupNorm + SiLU in f64, rounded to bf16, with odd channels per
    /// pixel row and a border.
    #[test]
    fn matches_a_plain_group_norm_and_silu() {
        // 64 channels take the AVX512-BF16 path where the CPU has it, 8 the plain one, 9 (odd) the per-pixel one.
        for (c, groups) in [(8, 4), (9, 3), (64, 32)] {
            check_group_norm(3, 5, c, groups);
        }
    }

    fn check_group_norm(h: usize, w: usize, c: usize, groups: usize) {
        let x: Vec<f32> = (0..h * w * c)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.07 + (i % c) as f32)
            .collect();
        let gn = GroupNorm {
            gamma: (0..c).map(|i| 0.5 + i as f32 * 0.1).collect(),
            beta: (0..c).map(|i| i as f32 * -0.2).collect(),
            groups,
            eps: 1e-6,
        };
        for silu in [false, true] {
            let out = gn.to_pairs(&x, (h, w, c), silu, 1, Vec::new());
            let per = c / groups;
            for g in 0..groups {
                let vals: Vec<f64> = (0..h * w)
                    .flat_map(|p| (0..per).map(move |j| p * c + g * per + j))
                    .map(|i| f64::from(x[i]))
                    .collect();
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
                for p in 0..h * w {
                    for j in 0..per {
                        let ch = g * per + j;
                        let v = (f64::from(x[p * c + ch]) - mean) / (var + 1e-6).sqrt()
                            * f64::from(gn.gamma[ch])
                            + f64::from(gn.beta[ch]);
                        let want = if silu { v / (1.0 + (-v).exp()) } else { v };
                        let (y, xx) = (p / w, p % w);
                        let word = out.data[((y + 1) * (w + 2) + xx + 1) * out.cp + ch / 2];
                        let got = bf16::from_bits((word >> (16 * (ch % 2))) as u16).to_f32();
                        assert!(
                            (f64::from(got) - want).abs() <= 8e-3 * (1.0 + want.abs()),
                            "{c} channels, silu {silu}, pixel {p}, channel {ch}: {got} vs {want}"
                        );
                    }
                }
            }
            // The border stays zero.
            assert!(out.data[..(w + 2) * out.cp].iter().all(|&v| v == 0));
        }
    }
}
