//! The weights of an [`Arpg`] as plain tensors, for engines that upload them elsewhere (the
//! wgpu transformer, `crate::gpu::arpg`). Fused projections come out fused (q/k/v, w1/w3,
//! to_k/to_v stacked along the output dimension, in that order), as the CPU multiplies them.

use candle_core::{Result, Tensor};

use super::{Arpg, Dense, FeedForward, Projection, RmsNorm};

/// One decoder block's weights. `qkv` is the self-decoder's fused `(3·dim, dim)` q/k/v, or the
/// cross-decoder's `to_q` `(dim, dim)`; `w13` is `(2·hidden, dim)` with w1's rows first.
#[derive(Debug)]
pub(crate) struct BlockWeights {
    pub attn_norm: Tensor,
    pub qkv: Tensor,
    pub proj: Tensor,
    pub ffn_norm: Tensor,
    pub w13: Tensor,
    pub w2: Tensor,
}

/// Every weight of the transformer, in the dtype it was loaded in (norms in the compute dtype),
/// plus the 2-D RoPE tables `(1 + grid², head_dim/2)` f32.
#[derive(Debug)]
pub(crate) struct ArpgWeights {
    pub embeddings: Tensor,
    pub self_dec: Vec<BlockWeights>,
    pub cross_dec: Vec<BlockWeights>,
    pub kv_norm: Tensor,
    pub to_kv: Tensor,
    pub norm: Tensor,
    pub head: Tensor,
    pub rope_cos: Tensor,
    pub rope_sin: Tensor,
}

fn plain(d: &Dense) -> Result<Tensor> {
    d.plain().ok_or_else(|| {
        candle_core::Error::Msg("a quantized layer has no plain weight to export".into())
    })
}

fn stacked(p: &Projection) -> Result<Tensor> {
    let parts = p.parts.iter().map(plain).collect::<Result<Vec<_>>>()?;
    match parts.as_slice() {
        [one] => Ok(one.clone()),
        _ => Tensor::cat(&parts, 0),
    }
}

fn norm(n: &RmsNorm) -> Tensor {
    n.weight.clone()
}

/// One block's weights, its attention's query (or q/k/v) projection given.
fn block(
    attn_norm: &RmsNorm,
    qkv: Tensor,
    proj: &Dense,
    ffn_norm: &RmsNorm,
    ffn: &FeedForward,
) -> Result<BlockWeights> {
    Ok(BlockWeights {
        attn_norm: norm(attn_norm),
        qkv,
        proj: plain(proj)?,
        ffn_norm: norm(ffn_norm),
        w13: stacked(&ffn.w13)?,
        w2: plain(&ffn.w2)?,
    })
}

impl Arpg {
    /// The weights (see [`ArpgWeights`]). Errors when a layer is quantized.
    pub(crate) fn weights(&self) -> Result<ArpgWeights> {
        let self_dec = self
            .self_dec
            .iter()
            .map(|b| {
                block(
                    &b.attn_norm,
                    stacked(&b.attn.qkv)?,
                    &b.attn.proj,
                    &b.ffn_norm,
                    &b.ffn,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let cross_dec = self
            .cross_dec
            .iter()
            .map(|b| {
                block(
                    &b.attn_norm,
                    plain(&b.attn.to_q)?,
                    &b.attn.proj,
                    &b.ffn_norm,
                    &b.ffn,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let (cos, sin) = self.rope.tables();
        Ok(ArpgWeights {
            embeddings: self.embeddings.embeddings().clone(),
            self_dec,
            cross_dec,
            kv_norm: norm(&self.kv_norm),
            to_kv: stacked(&self.to_kv)?,
            norm: norm(&self.norm),
            head: plain(&self.head)?,
            rope_cos: cos.clone(),
            rope_sin: sin.clone(),
        })
    }
}
