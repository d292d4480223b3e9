//! Building blocks of the VQ encoder/decoder (`ResnetBlock`, `AttnBlock`, `Downsample`,
//! `Upsample` in `vq_model.py`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use super::{conv_cfg, group_norm, swish, Norm};

/// A biased convolution with `k x k` kernel and the given padding, stride 1.
pub(crate) fn conv(
    inp: usize,
    out: usize,
    k: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv> {
    Ok(Conv::new(
        candle_nn::conv2d(inp, out, k, conv_cfg(padding, 1), vb)?,
        padding,
        1,
    ))
}

/// Mirrors `ResnetBlock` (no conv shortcut: a 1x1 `nin_shortcut` when channels change).
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock {
    pub(crate) norm1: Norm,
    pub(crate) conv1: Conv,
    pub(crate) norm2: Norm,
    pub(crate) conv2: Conv,
    pub(crate) nin_shortcut: Option<Conv>,
}

impl ResnetBlock {
    pub(crate) fn new(inp: usize, out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(inp, vb.pp("norm1"))?,
            conv1: conv(inp, out, 3, 1, vb.pp("conv1"))?,
            norm2: group_norm(out, vb.pp("norm2"))?,
            conv2: conv(out, out, 3, 1, vb.pp("conv2"))?,
            nin_shortcut: (inp != out)
                .then(|| conv(inp, out, 1, 0, vb.pp("nin_shortcut")))
                .transpose()?,
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&swish(&self.norm1.forward(x)?)?)?;
        let h = self.conv2.forward(&swish(&self.norm2.forward(&h)?)?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Mirrors `AttnBlock`: single-head attention over the h*w positions, scale `1/sqrt(C)`.
#[derive(Debug, Clone)]
pub(crate) struct AttnBlock {
    pub(crate) norm: Norm,
    pub(crate) q: Conv,
    pub(crate) k: Conv,
    pub(crate) v: Conv,
    pub(crate) proj_out: Conv,
}

impl AttnBlock {
    pub(crate) fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(c, vb.pp("norm"))?,
            q: conv(c, c, 1, 0, vb.pp("q"))?,
            k: conv(c, c, 1, 0, vb.pp("k"))?,
            v: conv(c, c, 1, 0, vb.pp("v"))?,
            proj_out: conv(c, c, 1, 0, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = self.norm.forward(x)?;
        // (B, C, H, W) -> (B, HW, C)
        let flat = |t: Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous();
        let q = flat(self.q.forward(&hn)?)?;
        let k = flat(self.k.forward(&hn)?)?;
        let v = flat(self.v.forward(&hn)?)?;
        let out = attention_by_query_blocks(&q, &k, &v, SCORE_BLOCK_BYTES)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + self.proj_out.forward(&out)?
    }
}

/// Bytes of one block of attention scores: the tokenizer's memory no longer grows with the
/// square of the image area (a 1000x700 photo asked for 7.6 GB in one product).
pub(crate) const SCORE_BLOCK_BYTES: usize = 32 << 20;

/// `softmax(q kᵀ / sqrt(C)) v` for `q, k, v` of shape `(B, N, C)`, computed for blocks of query
/// rows so that each block's `(B, rows, N)` scores take at most `block_bytes`. Each row's result
/// is the one the full product gives (a row's softmax only reads its own scores).
pub(crate) fn attention_by_query_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    block_bytes: usize,
) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let scale = 1.0 / (c as f64).sqrt();
    let kt = k.t()?;
    let row_bytes = b
        .saturating_mul(n)
        .saturating_mul(q.dtype().size_in_bytes())
        .max(1);
    let rows = (block_bytes / row_bytes).clamp(1, n.max(1));
    let mut outs = Vec::with_capacity(n.div_ceil(rows));
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        let scores = (q.narrow(1, start, len)?.matmul(&kt)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(v)?);
        start += len;
    }
    Tensor::cat(&outs, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    #[test]
    fn attention_by_blocks_equals_the_full_product() -> Result<()> {
        let dev = Device::Cpu;
        let (b, n, c) = (2, 37, 8);
        let q = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (c as f64).sqrt()))?;
        let full = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
        // Blocks of 5 query rows (the last one shorter), and one row at a time.
        for block_bytes in [b * n * 4 * 5, 1] {
            let blocked = attention_by_query_blocks(&q, &k, &v, block_bytes)?;
            let diff = (blocked - &full)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "max difference {diff}");
        }
        Ok(())
    }
}

/// Mirrors `Downsample` (with conv): pad right and bottom by one zero, 3x3 conv, stride 2.
#[derive(Debug, Clone)]
pub(crate) struct Downsample {
    conv: Conv,
}

impl Downsample {
    pub(crate) fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv::new(
                candle_nn::conv2d(c, c, 3, conv_cfg(0, 2), vb.pp("conv"))?,
                0,
                2,
            ),
        })
    }
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        self.conv.forward(&x)
    }
}

/// Mirrors `Upsample` (with conv): nearest x2, then a 3x3 conv.
#[derive(Debug, Clone)]
pub(crate) struct Upsample {
    pub(crate) conv: Conv,
}

impl Upsample {
    pub(crate) fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv(c, c, 3, 1, vb.pp("conv"))?,
        })
    }
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        self.conv.forward(&x.upsample_nearest2d(h * 2, w * 2)?)
    }
}

/// `nn.Conv2d` with bias: candle's layer, run by the CPU kernel ([`crate::kernels::Conv2d`])
/// at inference on the CPU.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    inner: Conv2d,
    padding: usize,
    stride: usize,
}

impl Conv {
    pub(crate) fn new(inner: Conv2d, padding: usize, stride: usize) -> Self {
        Self {
            inner,
            padding,
            stride,
        }
    }

    /// Weight `(out, in, k, k)`, bias `(out,)` and padding (stride 1 only; the decoder's
    /// convolutions), for other engines to upload.
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    pub(crate) fn parts(&self) -> Option<(&Tensor, &Tensor, usize)> {
        (self.stride == 1).then_some(())?;
        Some((self.inner.weight(), self.inner.bias()?, self.padding))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(bias) = self.inner.bias() {
            if crate::kernels::fuses(x) && !self.inner.weight().track_op() {
                let op = crate::kernels::Conv2d {
                    tier: crate::kernels::choice_tier(),
                    padding: self.padding,
                    stride: self.stride,
                };
                return x.contiguous()?.apply_op3_no_bwd(
                    &self.inner.weight().contiguous()?,
                    &bias.contiguous()?,
                    &op,
                );
            }
        }
        self.inner.forward(x)
    }
}
