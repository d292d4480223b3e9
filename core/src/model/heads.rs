//! Heads and attention of the transformer's blocks: the split into heads (with RoPE fused on
//! the CPU), scaled dot-product attention (the fused kernel at inference on the CPU, candle's ops
//! otherwise) and the causal mask of prefills and teacher forcing. Mirrors the reference's
//! `Attention.forward` around `F.scaled_dot_product_attention`.

use candle_core::{DType, Device, Result, Tensor, D};

use super::rope;

/// `(B, T, H*D)` -> `(B, H, T, D)`, contiguous.
pub(super) fn to_heads(x: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    x.reshape((b, t, n_head, c / n_head))?
        .transpose(1, 2)?
        .contiguous()
}

/// `(B, T, H*D)` -> rotated `(B, H, T, D)`: [`rope::apply`] after [`to_heads`], fused on the CPU.
pub(super) fn rope_heads(x: &Tensor, n_head: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if crate::kernels::fuses(x) && cos.dtype() == DType::F32 {
        x.apply_op3_no_bwd(
            &cos.contiguous()?,
            &sin.contiguous()?,
            &crate::kernels::RopeHeads(n_head),
        )
    } else {
        rope::apply(&to_heads(x, n_head)?, cos, sin)
    }
}

/// `(B, H, T, D)` -> `(B, T, H*D)`.
fn from_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * d))
}

/// Scaled dot-product attention, softmax in f32. `mask` is added to the scores (0 / -inf).
/// `fused` picks candle's fused softmax (no backward) for inference.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    fused: bool,
) -> Result<Tensor> {
    let dtype = q.dtype();
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = if fused {
        candle_nn::ops::softmax_last_dim(&scores)?
    } else {
        candle_nn::ops::softmax(&scores, D::Minus1)?
    };
    probs.to_dtype(dtype)?.matmul(v)
}

/// [`attention`] with the heads merged back: `(B, T, H*D)`. Inference without a mask on the
/// CPU takes the fused kernel ([`crate::kernels::Attention`]).
pub(super) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    fused: bool,
) -> Result<Tensor> {
    let kernel = fused
        && mask.is_none()
        && q.device().is_cpu()
        && q.dtype() == DType::F32
        && crate::kernels::choice() != crate::kernels::Choice::Candle;
    if kernel {
        q.apply_op3_no_bwd(k, v, &crate::kernels::Attention)
    } else {
        // A bf16 KV cache ([`super::Arpg::kv_dtype`]) widened for candle's path (prefill masks).
        let (k, v) = (k.to_dtype(q.dtype())?, v.to_dtype(q.dtype())?);
        from_heads(&attention(q, &k, &v, mask, fused)?)
    }
}

/// `(tq, tk)` additive mask: 0 where key `j <= i + offset`, -inf elsewhere (`offset`: slots
/// already cached before the first query).
pub(super) fn causal_mask(tq: usize, tk: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..tq)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j <= i + offset {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(data, (tq, tk), device)
}
