//! The VQ decoder as a list of dispatches over activation slots: a mirror of
//! `VQModel.decode_code` (codebook lookup, `post_quant_conv`, `Decoder.forward`) that
//! [`super::vq_decoder::VqDecoder`] records once, with the weights each dispatch binds.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::vq::{AttnBlock, Conv, Norm, ResnetBlock, VqModel};

/// Activation buffers: enough for the attention block (input, q, k, v, output).
pub(super) const SLOTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pipe {
    Conv,
    Norm,
    Lookup,
    Scores,
    Softmax,
    Weighted,
    ToTexture,
}

pub(super) const PIPES: [(Pipe, &str, &str); 7] = [
    (Pipe::Conv, "vq_conv", "main"),
    (Pipe::Norm, "vq_group_norm", "main"),
    (Pipe::Lookup, "vq_lookup", "main"),
    (Pipe::Scores, "vq_attention", "scores"),
    (Pipe::Softmax, "vq_attention", "softmax"),
    (Pipe::Weighted, "vq_attention", "weighted"),
    (Pipe::ToTexture, "vq_to_texture", "main"),
];

/// A buffer an op binds: an activation slot, an uploaded weight, or a fixed buffer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Buf {
    Slot(usize),
    Weight(usize),
    Scores,
    Tokens,
}

/// One dispatch: what it computes (sizes relative to the tile) and what it binds.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Lookup {
        e: usize,
    },
    Conv {
        cin: usize,
        cout: usize,
        k: usize,
        pad: usize,
        /// Output resolution in multiples of the latent grid.
        scale: usize,
        upsample: bool,
        residual: bool,
    },
    Norm {
        c: usize,
        scale: usize,
        silu: bool,
    },
    /// One block of query rows of an attention at the latent resolution.
    Scores {
        c: usize,
        block: usize,
    },
    Softmax {
        block: usize,
    },
    Weighted {
        c: usize,
        block: usize,
    },
}

pub(super) struct Planned {
    pub(super) kind: Kind,
    pub(super) pipe: Pipe,
    pub(super) binds: Vec<(u32, Buf)>,
}

/// Records the decoder as a list of dispatches over activation slots.
pub(super) struct Planner {
    pub(super) plan: Vec<Planned>,
    pub(super) weights: Vec<Vec<f32>>,
    pub(super) live: [bool; SLOTS],
    /// Largest `channels x scale²` of any activation (floats per latent cell).
    pub(super) per_cell: usize,
    /// Whether the weights are copied to the host (`false`: a pass that only sizes the
    /// activations, its weights left empty).
    copy_weights: bool,
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Planner {
    fn take(&mut self, c: usize, scale: usize) -> Result<usize> {
        self.per_cell = self.per_cell.max(c * scale * scale);
        let i =
            self.live.iter().position(|l| !l).ok_or_else(|| {
                Error::Internal("the GPU decoder ran out of activation slots".into())
            })?;
        self.live[i] = true;
        Ok(i)
    }

    fn release(&mut self, slot: usize) {
        self.live[slot] = false;
    }

    fn weight(&mut self, t: &Tensor) -> Result<Buf> {
        self.weights.push(if self.copy_weights {
            host(t)?
        } else {
            Vec::new()
        });
        Ok(Buf::Weight(self.weights.len() - 1))
    }

    /// `conv(x)` (+ `res`) into a new slot; `scale` is the output resolution.
    fn conv(
        &mut self,
        conv: &Conv,
        x: usize,
        scale: usize,
        upsample: bool,
        res: Option<usize>,
    ) -> Result<usize> {
        let (w, b, pad) = conv
            .parts()
            .ok_or_else(|| Error::Internal("a decoder convolution with stride 2".into()))?;
        let (cout, cin, k, _) = w.dims4()?;
        // [cout][cin][k][k] → [cin][k][k][cout rounded up to 4] (the shader's vec4 loads).
        let quads = cout.div_ceil(4) * 4;
        let taps = cin * k * k;
        let mut packed = Vec::new();
        if self.copy_weights {
            let src = host(w)?;
            packed = vec![0f32; taps * quads];
            for co in 0..cout {
                for t in 0..taps {
                    packed[t * quads + co] = src[co * taps + t];
                }
            }
        }
        self.weights.push(packed);
        let w = Buf::Weight(self.weights.len() - 1);
        let b = self.weight(b)?;
        let out = self.take(cout, scale)?;
        self.plan.push(Planned {
            kind: Kind::Conv {
                cin,
                cout,
                k,
                pad,
                scale,
                upsample,
                residual: res.is_some(),
            },
            pipe: Pipe::Conv,
            binds: vec![
                (1, Buf::Slot(x)),
                (2, w),
                (3, b),
                (4, Buf::Slot(res.unwrap_or(x))),
                (5, Buf::Slot(out)),
            ],
        });
        Ok(out)
    }

    fn norm(&mut self, norm: &Norm, x: usize, scale: usize, silu: bool) -> Result<usize> {
        let c = norm.weight.dim(0)?;
        let (g, b) = (self.weight(&norm.weight)?, self.weight(&norm.bias)?);
        let out = self.take(c, scale)?;
        self.plan.push(Planned {
            kind: Kind::Norm { c, scale, silu },
            pipe: Pipe::Norm,
            binds: vec![(1, Buf::Slot(x)), (2, g), (3, b), (4, Buf::Slot(out))],
        });
        Ok(out)
    }

    /// Mirrors `ResnetBlock.forward`; consumes `x`.
    fn resnet(&mut self, block: &ResnetBlock, x: usize, scale: usize) -> Result<usize> {
        let t1 = self.norm(&block.norm1, x, scale, true)?;
        let t2 = self.conv(&block.conv1, t1, scale, false, None)?;
        self.release(t1);
        let t1 = self.norm(&block.norm2, t2, scale, true)?;
        self.release(t2);
        let shortcut = match &block.nin_shortcut {
            Some(s) => Some(self.conv(s, x, scale, false, None)?),
            None => None,
        };
        let out = self.conv(&block.conv2, t1, scale, false, Some(shortcut.unwrap_or(x)))?;
        self.release(t1);
        if let Some(s) = shortcut {
            self.release(s);
        }
        self.release(x);
        Ok(out)
    }

    /// Mirrors `AttnBlock.forward` (at the latent resolution, where the decoder has its
    /// attention); consumes `x`. `blocks` blocks of query rows.
    fn attention(&mut self, block: &AttnBlock, x: usize, blocks: usize) -> Result<usize> {
        let h = self.norm(&block.norm, x, 1, false)?;
        let q = self.conv(&block.q, h, 1, false, None)?;
        let k = self.conv(&block.k, h, 1, false, None)?;
        let v = self.conv(&block.v, h, 1, false, None)?;
        self.release(h);
        let c = block.norm.weight.dim(0)?;
        let o = self.take(c, 1)?;
        for b in 0..blocks {
            self.plan.push(Planned {
                kind: Kind::Scores { c, block: b },
                pipe: Pipe::Scores,
                binds: vec![(1, Buf::Slot(q)), (2, Buf::Slot(k)), (4, Buf::Scores)],
            });
            self.plan.push(Planned {
                kind: Kind::Softmax { block: b },
                pipe: Pipe::Softmax,
                binds: vec![(4, Buf::Scores)],
            });
            self.plan.push(Planned {
                kind: Kind::Weighted { c, block: b },
                pipe: Pipe::Weighted,
                binds: vec![(3, Buf::Slot(v)), (4, Buf::Scores), (5, Buf::Slot(o))],
            });
        }
        for s in [q, k, v] {
            self.release(s);
        }
        let out = self.conv(&block.proj_out, o, 1, false, Some(x))?;
        self.release(o);
        self.release(x);
        Ok(out)
    }
}

impl Planner {
    /// The dispatches of `decode_code` (mirrors `VQModel.decode_code` and `Decoder.forward`),
    /// with `blocks` blocks of query rows per attention; `copy_weights: false` only sizes the
    /// activations.
    pub(super) fn decoder(vq: &VqModel, blocks: usize, copy_weights: bool) -> Result<Planner> {
        let dec = &vq.decoder;
        let mut pl = Planner {
            plan: Vec::new(),
            weights: Vec::new(),
            live: [false; SLOTS],
            per_cell: 0,
            copy_weights,
        };
        let e = vq.config().codebook_embed_dim;
        let codebook = pl.weight(vq.codebook_normed())?;
        let z = pl.take(e, 1)?;
        pl.plan.push(Planned {
            kind: Kind::Lookup { e },
            pipe: Pipe::Lookup,
            binds: vec![(1, Buf::Tokens), (2, codebook), (3, Buf::Slot(z))],
        });
        let h = pl.conv(&vq.post_quant_conv, z, 1, false, None)?;
        pl.release(z);
        let mut x = pl.conv(&dec.conv_in, h, 1, false, None)?;
        pl.release(h);
        x = pl.resnet(&dec.mid.0, x, 1)?;
        x = pl.attention(&dec.mid.1, x, blocks)?;
        x = pl.resnet(&dec.mid.2, x, 1)?;
        let mut scale = 1;
        for level in &dec.levels {
            for (i, res) in level.res.iter().enumerate() {
                x = pl.resnet(res, x, scale)?;
                if let Some(attn) = level.attn.get(i) {
                    if scale != 1 {
                        return Err(Error::Internal(
                            "decoder attention above the latent resolution".into(),
                        ));
                    }
                    x = pl.attention(attn, x, blocks)?;
                }
            }
            if let Some(up) = &level.upsample {
                scale *= 2;
                let y = pl.conv(&up.conv, x, scale, true, None)?;
                pl.release(x);
                x = y;
            }
        }
        let t = pl.norm(&dec.norm_out, x, scale, true)?;
        pl.release(x);
        let out = pl.conv(&dec.conv_out, t, scale, false, None)?;
        pl.release(t);
        let _ = out;
        Ok(pl)
    }
}
