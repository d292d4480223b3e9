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

fn f32s(s: &CpuStorage) -> candle_core::Result<&[f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("attention kernel: operands must be f32"),
    }
}

#[inline]
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
        let (q, k, v) = (f32s(qs)?, f32s(ks)?, f32s(vs)?);
        let (qo, qst) = rows(ql)?;
        let (ko, kst) = rows(kl)?;
        let (vo, vst) = rows(vl)?;
        let scale = 1.0 / (d as f32).sqrt();
        // One task per (batch row, head); each writes its head's columns of every query row.
        let heads: Vec<Vec<f32>> = (0..b * h)
            .into_par_iter()
            .map(|bh| {
                let (bi, hi) = (bh / h, bh % h);
                let mut out = vec![0f32; m * d];
                let mut p = vec![0f32; len];
                for t in 0..m {
                    let qa = qo + bi * qst[0] + hi * qst[1] + t * qst[2];
                    let qr = &q[qa..qa + d];
                    let mut max = f32::NEG_INFINITY;
                    for (j, pj) in p.iter_mut().enumerate() {
                        let ka = ko + bi * kst[0] + hi * kst[1] + j * kst[2];
                        *pj = dot(qr, &k[ka..ka + d]) * scale;
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
                        let va = vo + bi * vst[0] + hi * vst[1] + j * vst[2];
                        for (oi, vi) in o.iter_mut().zip(&v[va..va + d]) {
                            *oi += w * vi;
                        }
                    }
                }
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
