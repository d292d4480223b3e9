//! Attention over the KV cache in one pass (inference on the CPU, no mask): for every batch row
//! and head, `softmax(q kᵀ / √D) v`, written straight into the `(B, m, H·D)` layout the output
//! projection reads. candle's path takes eight ops per layer (two batched matmuls, casts, scale,
//! softmax, a transpose copy), each with its own allocation and thread-pool round trip; at the
//! few queries of a sampling step that overhead, not arithmetic, is the cost.
//!
//! Mirrors `F.scaled_dot_product_attention` as the reference calls it in `Attention.forward`
//! (no mask, default scale).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

/// The op: `q` `(B, H, m, D)` f32, `k` and `v` `(B, H, L, D)` f32 or bf16 (a bf16 KV cache,
/// widened exactly as it is read) with unit stride along `D` (views of the cache are fine);
/// result `(B, m, H·D)` f32.
pub(crate) struct Attention;

/// Offset of row `(b, h, t)` in a 4-d layout with unit stride along the last dim.
fn rows(l: &Layout) -> candle_core::Result<(usize, [usize; 3])> {
    let st = l.stride();
    if st.len() != 4 || st[3] != 1 {
        candle_core::bail!("attention kernel: operands must be 4-d with unit stride along D");
    }
    Ok((l.start_offset(), [st[0], st[1], st[2]]))
}

/// `a · b`, 16 lanes of partial sums (one AVX-512 register where the caller is compiled for it).
#[inline(always)]
fn dot<T: Kv>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0f32; 16];
    let mut ac = a.chunks_exact(16);
    let mut bc = b.chunks_exact(16);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l].widen();
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y.widen())
        .sum();
    hsum16(acc) + tail
}

/// The sum of 16 lanes as a tree (8, 4, 2, 1): a chain of 15 scalar adds, which the strict
/// order of `Iterator::sum` would give, cost more than the products.
#[inline(always)]
fn hsum16(a: [f32; 16]) -> f32 {
    let mut b = [0f32; 8];
    for i in 0..8 {
        b[i] = a[i] + a[i + 8];
    }
    let mut c = [0f32; 4];
    for i in 0..4 {
        c[i] = b[i] + b[i + 4];
    }
    (c[0] + c[2]) + (c[1] + c[3])
}

/// Queries taken together over one pass of the keys and values: each key and value row read
/// from cache is used for this many queries.
const QUERY_BLOCK: usize = 4;

/// An element of the KV cache: f32, or bf16 widened exactly.
pub(super) trait Kv: Copy + Send + Sync {
    fn widen(self) -> f32;
}

impl Kv for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Kv for half::bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// One (batch row, head): its queries, keys and values, each a run of rows `stride` apart.
pub(super) struct Rows<'a, T> {
    q: &'a [f32],
    q_stride: usize,
    k: &'a [T],
    k_stride: usize,
    v: &'a [T],
    v_stride: usize,
}

pub(super) struct Dims {
    m: usize,
    len: usize,
    d: usize,
    scale: f32,
}

/// `out` `(m, d)` (zeroed) = softmax(q kᵀ · scale) v for one head, [`QUERY_BLOCK`] queries
/// per pass over the keys and values; `exp` is [`super::fused::exp`] (vectorised).
#[inline(always)]
fn head<T: Kv>(r: &Rows<T>, n: &Dims, out: &mut [f32]) {
    let (d, len) = (n.d, n.len);
    let mut p = vec![0f32; QUERY_BLOCK * len];
    let mut t0 = 0;
    while t0 < n.m {
        let qb = QUERY_BLOCK.min(n.m - t0);
        let q = |i: usize| &r.q[(t0 + i) * r.q_stride..(t0 + i) * r.q_stride + d];
        for j in 0..len {
            let kr = &r.k[j * r.k_stride..j * r.k_stride + d];
            for i in 0..qb {
                p[i * len + j] = dot(q(i), kr) * n.scale;
            }
        }
        let mut inv = [0f32; QUERY_BLOCK];
        for (i, row) in p.chunks_exact_mut(len).take(qb).enumerate() {
            // Lane-wise max and sum (16 lanes, then a tree), and the exponentials in a loop of
            // their own: a running scalar reduction would keep the loops from vectorising.
            let mut m16 = [f32::NEG_INFINITY; 16];
            for c in row.chunks(16) {
                for (m, x) in m16.iter_mut().zip(c) {
                    *m = m.max(*x);
                }
            }
            let max = m16.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            for x in row.iter_mut() {
                *x = super::fused::exp(*x - max);
            }
            let mut s16 = [0f32; 16];
            for c in row.chunks(16) {
                for (s, x) in s16.iter_mut().zip(c) {
                    *s += x;
                }
            }
            inv[i] = 1.0 / hsum16(s16);
        }
        let block = &mut out[t0 * d..(t0 + qb) * d];
        for j in 0..len {
            let vr = &r.v[j * r.v_stride..j * r.v_stride + d];
            for (i, o) in block.chunks_exact_mut(d).enumerate() {
                let w = p[i * len + j] * inv[i];
                for (oi, vi) in o.iter_mut().zip(vr) {
                    *oi += w * vi.widen();
                }
            }
        }
        t0 += qb;
    }
}

/// [`head`] compiled for the tier's vector width (the loops are plain Rust; the compiler
/// vectorises them for the features enabled where `head` is inlined).
#[allow(unsafe_code)] // Calls of functions compiled for features the CPU was checked to have.
fn head_dispatch<T: x86::Wide>(tier: super::Tier, r: &Rows<T>, n: &Dims, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<T: Kv>(r: &Rows<T>, n: &Dims, out: &mut [f32]) {
            head(r, n, out)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<T: Kv>(r: &Rows<T>, n: &Dims, out: &mut [f32]) {
            head(r, n, out)
        }
        // SAFETY: `usable` checks the tier against the CPU (`Tier::is_supported`).
        unsafe {
            match tier.usable().base() {
                super::Tier::Avx512 | super::Tier::Avx512Bf16 if n.d == x86::HEAD_DIM => {
                    x86::head64(r, n, out)
                }
                super::Tier::Avx512 | super::Tier::Avx512Bf16 => avx512(r, n, out),
                super::Tier::Avx2Fma => avx2(r, n, out),
                super::Tier::Portable => head(r, n, out),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = tier;
        head(r, n, out);
    }
}

/// Elsewhere every [`Kv`] goes through [`head`].
#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(crate) trait Wide: super::Kv {}
    impl Wide for f32 {}
    impl Wide for half::bf16 {}
}

/// [`head`] for heads of 64 in AVX-512 registers (every ARPG preset's head size).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Dims, Kv, Rows, QUERY_BLOCK};

    pub(super) const HEAD_DIM: usize = 64;

    /// A [`Kv`] element loaded 16 at a time into f32 lanes.
    pub(crate) trait Wide: Kv {
        /// # Safety
        /// AVX-512F; `p` points at 16 readable elements.
        unsafe fn load16(p: *const Self) -> __m512;
    }

    impl Wide for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            _mm512_loadu_ps(p)
        }
    }

    impl Wide for half::bf16 {
        /// bf16 is the high half of an f32: widen to 32 bits and shift.
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }

    /// [`super::head`] with `d = 64`: each block of [`QUERY_BLOCK`] queries sits in 16
    /// registers while the keys stream past (a score is four FMAs and one reduction); after
    /// the softmax, the block's 4 x 64 sums sit in 16 more while the values stream past once.
    /// Rows past the block's end are computed from a zero query and not stored.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `n.d` must be 64 and `r`'s slices hold `n.m` queries and
    /// `n.len` keys and values (as `head` reads them).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn head64<T: Wide>(r: &Rows<T>, n: &Dims, out: &mut [f32]) {
        let len = n.len;
        let mut p = vec![0f32; QUERY_BLOCK * len];
        let mut t0 = 0;
        while t0 < n.m {
            let qb = QUERY_BLOCK.min(n.m - t0);
            let mut q = [[_mm512_setzero_ps(); 4]; QUERY_BLOCK];
            let scale = _mm512_set1_ps(n.scale);
            for (i, qi) in q.iter_mut().enumerate().take(qb) {
                let row = r.q[(t0 + i) * r.q_stride..][..HEAD_DIM].as_ptr();
                for (c, v) in qi.iter_mut().enumerate() {
                    *v = _mm512_mul_ps(_mm512_loadu_ps(row.add(16 * c)), scale);
                }
            }
            for j in 0..len {
                let kr = r.k[j * r.k_stride..][..HEAD_DIM].as_ptr();
                let k = [0, 1, 2, 3].map(|c| T::load16(kr.add(16 * c)));
                for (i, qi) in q.iter().enumerate() {
                    let mut s = _mm512_mul_ps(qi[0], k[0]);
                    s = _mm512_fmadd_ps(qi[1], k[1], s);
                    s = _mm512_fmadd_ps(qi[2], k[2], s);
                    s = _mm512_fmadd_ps(qi[3], k[3], s);
                    *p.get_unchecked_mut(i * len + j) = _mm512_reduce_add_ps(s);
                }
            }
            let mut inv = [0f32; QUERY_BLOCK];
            for (i, row) in p.chunks_exact_mut(len).enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                for x in row.iter_mut() {
                    *x = crate::kernels::fused::exp(*x - max);
                }
                let mut s16 = [0f32; 16];
                for c in row.chunks(16) {
                    for (s, x) in s16.iter_mut().zip(c) {
                        *s += x;
                    }
                }
                inv[i] = 1.0 / super::hsum16(s16);
            }
            let mut acc = [[_mm512_setzero_ps(); 4]; QUERY_BLOCK];
            for j in 0..len {
                let vr = r.v[j * r.v_stride..][..HEAD_DIM].as_ptr();
                let v = [0, 1, 2, 3].map(|c| T::load16(vr.add(16 * c)));
                for (i, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*p.get_unchecked(i * len + j));
                    for c in 0..4 {
                        a[c] = _mm512_fmadd_ps(w, v[c], a[c]);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(qb) {
                let o = out[(t0 + i) * HEAD_DIM..][..HEAD_DIM].as_mut_ptr();
                let w = _mm512_set1_ps(inv[i]);
                for (c, v) in a.iter().enumerate() {
                    _mm512_storeu_ps(o.add(16 * c), _mm512_mul_ps(*v, w));
                }
            }
            t0 += qb;
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "arpg-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, m, d) = ql.shape().dims4()?;
        let (kb, kh, len, kd) = kl.shape().dims4()?;
        if (kb, kh, kd) != (b, h, d) || vl.shape().dims4()? != (b, h, len, d) || len == 0 {
            candle_core::bail!(
                "attention kernel: q {:?}, k {:?}, v {:?} do not match",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        let q = super::f32_storage(qs, "attention")?;
        let (qo, qst) = rows(ql)?;
        let (ko, kst) = rows(kl)?;
        let (vo, vst) = rows(vl)?;
        let scale = 1.0 / (d as f32).sqrt();
        let tier = super::choice_tier();
        let dims = Dims { m, len, d, scale };
        // One task per (batch row, head); each writes its head's columns of every query row.
        fn heads<T: x86::Wide>(
            tier: super::Tier,
            dims: &Dims,
            h: usize,
            q: (&[f32], usize, [usize; 3]),
            k: (&[T], usize, [usize; 3]),
            v: (&[T], usize, [usize; 3]),
            b: usize,
        ) -> Vec<Vec<f32>> {
            (0..b * h)
                .into_par_iter()
                .map(|bh| {
                    let (bi, hi) = (bh / h, bh % h);
                    let at = |o: usize, st: [usize; 3]| o + bi * st[0] + hi * st[1];
                    let rows = Rows {
                        q: &q.0[at(q.1, q.2)..],
                        q_stride: q.2[2],
                        k: &k.0[at(k.1, k.2)..],
                        k_stride: k.2[2],
                        v: &v.0[at(v.1, v.2)..],
                        v_stride: v.2[2],
                    };
                    let mut out = vec![0f32; dims.m * dims.d];
                    head_dispatch(tier, &rows, dims, &mut out);
                    out
                })
                .collect()
        }
        let heads = match (ks, vs) {
            (CpuStorage::F32(k), CpuStorage::F32(v)) => {
                heads(tier, &dims, h, (q, qo, qst), (k, ko, kst), (v, vo, vst), b)
            }
            (CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                heads(tier, &dims, h, (q, qo, qst), (k, ko, kst), (v, vo, vst), b)
            }
            _ => candle_core::bail!("attention kernel: keys and values must both be f32 or bf16"),
        };
        let mut y = vec![0f32; b * m * h * d];
        for (bh, head) in heads.iter().enumerate() {
            let (bi, hi) = (bh / h, bh % h);
            for t in 0..m {
                let at = (bi * m + t) * h * d + hi * d;
                y[at..at + d].copy_from_slice(&head[t * d..(t + 1) * d]);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, m, h * d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads of 64 on every tier, from an f32 and a bf16 cache, against plain arithmetic (f64
    /// softmax), for query counts around the block size and key counts around the 16-lane
    /// chunks.
    #[test]
    fn heads_of_64_match_plain_arithmetic() {
        let mut next = super::super::test_values(3);
        let d = 64;
        for (m, len) in [(1, 1), (3, 17), (4, 16), (9, 40), (5, 257)] {
            let q: Vec<f32> = (0..m * d).map(|_| next() * 4.0).collect();
            let k: Vec<f32> = (0..len * d).map(|_| next() * 4.0).collect();
            let v: Vec<f32> = (0..len * d).map(|_| next()).collect();
            // The same keys and values as a bf16 cache (the plain arithmetic below uses the
            // rounded values).
            let k: Vec<f32> = k
                .iter()
                .map(|x| half::bf16::from_f32(*x).to_f32())
                .collect();
            let v: Vec<f32> = v
                .iter()
                .map(|x| half::bf16::from_f32(*x).to_f32())
                .collect();
            let (kb, vb): (Vec<half::bf16>, Vec<half::bf16>) = (
                k.iter().map(|x| half::bf16::from_f32(*x)).collect(),
                v.iter().map(|x| half::bf16::from_f32(*x)).collect(),
            );
            let rows = Rows {
                q: &q,
                q_stride: d,
                k: &k,
                k_stride: d,
                v: &v,
                v_stride: d,
            };
            let rows_bf16 = Rows {
                q: &q,
                q_stride: d,
                k: &kb,
                k_stride: d,
                v: &vb,
                v_stride: d,
            };
            let dims = Dims {
                m,
                len,
                d,
                scale: 0.125,
            };
            for (tier, bf16) in super::super::Tier::supported()
                .into_iter()
                .flat_map(|t| [(t, false), (t, true)])
            {
                let mut out = vec![0f32; m * d];
                if bf16 {
                    head_dispatch(tier, &rows_bf16, &dims, &mut out);
                } else {
                    head_dispatch(tier, &rows, &dims, &mut out);
                }
                for t in 0..m {
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            (0..d)
                                .map(|c| f64::from(q[t * d + c]) * f64::from(k[j * d + c]))
                                .sum::<f64>()
                                * 0.125
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 =
                            (0..len).map(|j| e[j] / sum * f64::from(v[j * d + c])).sum();
                        let got = f64::from(out[t * d + c]);
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{tier:?} bf16 {bf16} ({m}, {len}) at ({t}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
