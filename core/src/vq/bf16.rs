//! The VQ decoder in bf16 on the CPU (AVX512-BF16): the same network as [`Decoder`], laid out
//! channels-last once and run on the implicit-GEMM convolution
//! ([`crate::kernels::bf16_conv`]) with GroupNorm + SiLU fused into the pass that writes the next
//! convolution's bf16 input ([`crate::kernels::group_norm`]). Mirrors `Decoder.forward` in
//! `vq_model.py` as the reference runs it in bf16: products of bf16-rounded activations and
//! weights, accumulated in f32; the residual stream, the norms' statistics and attention stay
//! in f32 here (the reference rounds them too, so this mode is at least as close to f32).
//!
//! f32 stays the exact mode; the difference between the two is measured in
//! `tests/vq_bf16.rs` and stated in the README.

use candle_core::{DType, Device, Result, Tensor};

use super::blocks::{attention_by_query_blocks, AttnBlock, Conv, ResnetBlock};
use super::{Decoder, Norm};
use crate::config::VQ_GROUPNORM_EPS;
use crate::kernels::bf16_conv::{conv, PackedConv, Pairs};
use crate::kernels::group_norm::GroupNorm;
use crate::kernels::Tier;

/// Activations `(h, w, c)` f32, channels-last.
struct Act {
    data: Vec<f32>,
    h: usize,
    w: usize,
    c: usize,
}

impl Act {
    fn dims(&self) -> (usize, usize, usize) {
        (self.h, self.w, self.c)
    }
}

/// A `ResnetBlock`'s packed weights.
#[derive(Debug)]
struct Res {
    norm1: GroupNorm,
    conv1: PackedConv,
    norm2: GroupNorm,
    conv2: PackedConv,
    nin_shortcut: Option<PackedConv>,
}

/// An `AttnBlock`'s packed weights.
#[derive(Debug)]
struct Attn {
    norm: GroupNorm,
    q: PackedConv,
    k: PackedConv,
    v: PackedConv,
    proj_out: PackedConv,
}

#[derive(Debug)]
struct Level {
    res: Vec<Res>,
    attn: Vec<Attn>,
    upsample: Option<PackedConv>,
}

/// [`Decoder`] packed for the bf16 kernels (built once per tokenizer, about half the f32
/// weights' memory).
#[derive(Debug)]
pub(crate) struct Bf16Decoder {
    conv_in: PackedConv,
    mid: (Res, Attn, Res),
    levels: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: PackedConv,
}

fn norm(n: &Norm) -> Result<GroupNorm> {
    Ok(GroupNorm {
        gamma: n.weight.to_dtype(DType::F32)?.to_vec1()?,
        beta: n.bias.to_dtype(DType::F32)?.to_vec1()?,
        groups: crate::config::VQ_GROUPS,
        eps: VQ_GROUPNORM_EPS,
    })
}

fn packed(c: &Conv) -> Result<PackedConv> {
    let (w, b, padding) = c
        .parts()
        .ok_or_else(|| candle_core::Error::Msg("bf16 decoder: a strided convolution".into()))?;
    let (o, i, k, k2) = w.dims4()?;
    if k != k2 || k % 2 == 0 || padding != (k - 1) / 2 {
        candle_core::bail!("bf16 decoder: a {k}x{k2} kernel with padding {padding}");
    }
    let w: Vec<f32> = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
    Ok(PackedConv::new(&w, &b, o, i, k))
}

fn res(r: &ResnetBlock) -> Result<Res> {
    Ok(Res {
        norm1: norm(&r.norm1)?,
        conv1: packed(&r.conv1)?,
        norm2: norm(&r.norm2)?,
        conv2: packed(&r.conv2)?,
        nin_shortcut: r.nin_shortcut.as_ref().map(packed).transpose()?,
    })
}

fn attn(a: &AttnBlock) -> Result<Attn> {
    Ok(Attn {
        norm: norm(&a.norm)?,
        q: packed(&a.q)?,
        k: packed(&a.k)?,
        v: packed(&a.v)?,
        proj_out: packed(&a.proj_out)?,
    })
}

/// The one tier these kernels run on.
const TIER: Tier = Tier::Avx512Bf16;

impl Bf16Decoder {
    /// Whether the bf16 decoder runs here: a CPU with AVX512-BF16 (detected at run time) whose
    /// kernel choice is that tier (`ARPG_KERNEL` may force a lower one).
    pub(crate) fn supported() -> bool {
        TIER.is_supported() && crate::kernels::choice() == crate::kernels::Choice::Kernel(TIER)
    }

    /// Packs `d`'s weights. Errors when the CPU lacks AVX512-BF16 (see
    /// [`Bf16Decoder::supported`]).
    pub(crate) fn new(d: &Decoder) -> Result<Self> {
        if !Self::supported() {
            candle_core::bail!(
                "the bf16 decoder needs the avx512-bf16 kernel tier (a CPU with AVX512-BF16, not \
                 forced lower by ARPG_KERNEL): decode in f32"
            );
        }
        Ok(Self {
            conv_in: packed(&d.conv_in)?,
            mid: (res(&d.mid.0)?, attn(&d.mid.1)?, res(&d.mid.2)?),
            levels: d
                .levels
                .iter()
                .map(|l| {
                    Ok(Level {
                        res: l.res.iter().map(res).collect::<Result<_>>()?,
                        attn: l.attn.iter().map(attn).collect::<Result<_>>()?,
                        upsample: l.upsample.as_ref().map(|u| packed(&u.conv)).transpose()?,
                    })
                })
                .collect::<Result<_>>()?,
            norm_out: norm(&d.norm_out)?,
            conv_out: packed(&d.conv_out)?,
        })
    }

    /// `z` `(B, z_channels, h, w)` (the `post_quant_conv` output) → images `(B, 3, H, W)` f32 on
    /// the CPU. Mirrors `Decoder.forward`.
    pub(crate) fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = z.dims4()?;
        let nhwc = z
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        let mut images = Vec::with_capacity(b);
        for i in 0..b {
            let x = Act {
                data: nhwc.get(i)?.flatten_all()?.to_vec1()?,
                h,
                w,
                c,
            };
            let y = self.forward_one(x)?;
            let dims = y.dims();
            images.push(Tensor::from_vec(y.data, dims, &Device::Cpu)?);
        }
        Tensor::stack(&images, 0)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    fn forward_one(&self, z: Act) -> Result<Act> {
        let mut s = Scratch::default();
        let p = s.pairs(&z, 1, 1);
        let mut x = s.conv(&p, &self.conv_in, None)?;
        s.give_pairs(p);
        x = s.res(&self.mid.0, x)?;
        x = s.attn(&self.mid.1, x)?;
        x = s.res(&self.mid.2, x)?;
        for level in &self.levels {
            for (i, r) in level.res.iter().enumerate() {
                x = s.res(r, x)?;
                if let Some(a) = level.attn.get(i) {
                    x = s.attn(a, x)?;
                }
            }
            if let Some(up) = &level.upsample {
                let p = s.pairs(&x, 2, 1);
                s.give(x);
                x = s.conv(&p, up, None)?;
                s.give_pairs(p);
            }
        }
        let p = s.norm(&x, &self.norm_out, true, 1);
        s.give(x);
        s.conv(&p, &self.conv_out, None)
    }
}

/// Buffers handed back between layers, so that each layer's output reuses a finished one's
/// pages (fresh pages cost a fault each, as much as writing them).
#[derive(Default)]
struct Scratch {
    f32s: Vec<Vec<f32>>,
    pairs: Vec<Vec<u32>>,
}

impl Scratch {
    fn give(&mut self, a: Act) {
        self.f32s.push(a.data);
    }

    fn give_pairs(&mut self, p: Pairs) {
        self.pairs.push(p.data);
    }

    fn pairs(&mut self, x: &Act, up: usize, pad: usize) -> Pairs {
        Pairs::from_f32(
            &x.data,
            x.dims(),
            up,
            pad,
            self.pairs.pop().unwrap_or_default(),
        )
    }

    fn norm(&mut self, x: &Act, n: &GroupNorm, silu: bool, pad: usize) -> Pairs {
        n.to_pairs(
            &x.data,
            x.dims(),
            silu,
            pad,
            self.pairs.pop().unwrap_or_default(),
        )
    }

    fn conv(&mut self, x: &Pairs, pc: &PackedConv, residual: Option<&Act>) -> Result<Act> {
        let mut y = self.f32s.pop().unwrap_or_default();
        conv(TIER, x, pc, residual.map(|r| &r.data[..]), &mut y).ok_or_else(|| {
            candle_core::Error::Msg("the bf16 decoder ran on a CPU without AVX512-BF16".into())
        })?;
        Ok(Act {
            data: y,
            h: x.h,
            w: x.w,
            c: pc.out_channels(),
        })
    }

    /// `ResnetBlock.forward`: `skip(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
    fn res(&mut self, r: &Res, x: Act) -> Result<Act> {
        let p = self.norm(&x, &r.norm1, true, 1);
        let h = self.conv(&p, &r.conv1, None)?;
        self.give_pairs(p);
        let p = self.norm(&h, &r.norm2, true, 1);
        self.give(h);
        let skip = match &r.nin_shortcut {
            Some(nin) => {
                let xp = self.pairs(&x, 1, 0);
                let s = self.conv(&xp, nin, None)?;
                self.give_pairs(xp);
                self.give(x);
                s
            }
            None => x,
        };
        let out = self.conv(&p, &r.conv2, Some(&skip))?;
        self.give_pairs(p);
        self.give(skip);
        Ok(out)
    }

    /// `AttnBlock.forward`: `x + proj_out(attention(q, k, v))` over the `h·w` positions, the
    /// projections in bf16, the scores and softmax in f32.
    fn attn(&mut self, a: &Attn, x: Act) -> Result<Act> {
        let p = self.norm(&x, &a.norm, false, 0);
        let n = x.h * x.w;
        let mut qkv = Vec::with_capacity(3);
        for pc in [&a.q, &a.k, &a.v] {
            let t = self.conv(&p, pc, None)?;
            qkv.push(Tensor::from_vec(t.data, (1, n, t.c), &Device::Cpu)?);
        }
        self.give_pairs(p);
        let out =
            attention_by_query_blocks(&qkv[0], &qkv[1], &qkv[2], super::blocks::SCORE_BLOCK_BYTES)?;
        let out = Act {
            data: out.flatten_all()?.to_vec1()?,
            h: x.h,
            w: x.w,
            c: x.c,
        };
        let op = self.pairs(&out, 1, 0);
        let y = self.conv(&op, &a.proj_out, Some(&x))?;
        self.give_pairs(op);
        self.give(x);
        Ok(y)
    }
}
