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

/// The op: `q` `(B, H, m, D)`, `k` and `v` `(B, H, L, D)` f32 with unit stride along `D` (views of
/// the cache are fine); result `(B, m, H·D)` f32.
pub(crate) struct Attention;

/// Offset of row `(b, h, t)` in a 4-d layout with unit stride along the last dim.
fn rows(l: &Layout) -> candle_core::Result<(usize, [usize; 3])> {
    let st = l.stride();
    if st.len() != 4 || st[3] != 1 {
        candle_core::bail!("attention kernel: operands must be 4-d with unit stride along D");
    }
    Ok((l.start_offset(), [st[0], st[1], st[2]]))
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ac = a.chunks_exact(8);
    let mut bc = b.chunks_exact(8);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// One (batch row, head): its queries, keys and values, each a run of rows `stride` apart.
struct Rows<'a> {
    q: &'a [f32],
    q_stride: usize,
    k: &'a [f32],
    k_stride: usize,
    v: &'a [f32],
    v_stride: usize,
}

struct Dims {
    m: usize,
    len: usize,
    d: usize,
    scale: f32,
}

/// `out` `(m, d)` = softmax(q kᵀ · scale) v for one head.
#[inline(always)]
fn head(r: &Rows, n: &Dims, out: &mut [f32]) {
    let d = n.d;
    let mut p = vec![0f32; n.len];
    for t in 0..n.m {
        let qr = &r.q[t * r.q_stride..t * r.q_stride + d];
        let mut max = f32::NEG_INFINITY;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = dot(qr, &r.k[j * r.k_stride..j * r.k_stride + d]) * n.scale;
            max = max.max(*pj);
        }
        let mut sum = 0f32;
        for pj in p.iter_mut() {
            *pj = (*pj - max).exp();
            sum += *pj;
        }
        let o = &mut out[t * d..(t + 1) * d];
        for (j, pj) in p.iter().enumerate() {
            let w = pj / sum;
            for (oi, vi) in o.iter_mut().zip(&r.v[j * r.v_stride..j * r.v_stride + d]) {
                *oi += w * vi;
            }
        }
    }
}

/// [`head`] compiled for the tier's vector width (the loops are plain Rust; the compiler
/// vectorises them for the features enabled where `head` is inlined).
#[allow(unsafe_code)] // Calls of functions compiled for features the CPU was checked to have.
fn head_dispatch(tier: super::Tier, r: &Rows, n: &Dims, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(r: &Rows, n: &Dims, out: &mut [f32]) {
            head(r, n, out)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(r: &Rows, n: &Dims, out: &mut [f32]) {
            head(r, n, out)
        }
        // SAFETY: `usable` checks the tier against the CPU (`Tier::is_supported`).
        unsafe {
            match tier.usable().base() {
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
        let f32s = |s| super::f32_storage(s, "attention");
        let (q, k, v) = (f32s(qs)?, f32s(ks)?, f32s(vs)?);
        let (qo, qst) = rows(ql)?;
        let (ko, kst) = rows(kl)?;
        let (vo, vst) = rows(vl)?;
        let scale = 1.0 / (d as f32).sqrt();
        let tier = super::choice_tier();
        let dims = Dims { m, len, d, scale };
        // One task per (batch row, head); each writes its head's columns of every query row.
        let heads: Vec<Vec<f32>> = (0..b * h)
            .into_par_iter()
            .map(|bh| {
                let (bi, hi) = (bh / h, bh % h);
                let at = |o: usize, st: [usize; 3]| o + bi * st[0] + hi * st[1];
                let (qa, ka, va) = (at(qo, qst), at(ko, kst), at(vo, vst));
                let rows = Rows {
                    q: &q[qa..],
                    q_stride: qst[2],
                    k: &k[ka..],
                    k_stride: kst[2],
                    v: &v[va..],
                    v_stride: vst[2],
                };
                let mut out = vec![0f32; m * d];
                head_dispatch(tier, &rows, &dims, &mut out);
                out
            })
            .collect();
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
