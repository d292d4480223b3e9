//! The LlamaGen VQ tokenizer as ARPG uses it (FoundationVision/LlamaGen `tokenizer/tokenizer_image/
//! vq_model.py`, copied into hp-l33/ARPG as `models/vq_model.py`): a convolutional encoder, an
//! l2-normalised codebook, and a convolutional decoder. Images are `(B, 3, H, W)` in `[-1, 1]`.

#[cfg(target_arch = "x86_64")]
mod bf16;
mod blocks;
pub mod palette;
mod tiles;

pub use palette::Palette;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};
#[cfg(feature = "wgpu")]
pub(crate) use tiles::decode_tiled;
pub use tiles::Tiling;

use crate::config::{VqConfig, VQ_GROUPNORM_EPS, VQ_GROUPS};
pub(crate) use blocks::{conv, AttnBlock, Conv, Downsample, ResnetBlock, Upsample};

/// `Normalize`: GroupNorm with 32 groups, eps 1e-6. Keeps its affine weights, which other
/// engines (the wgpu decoder) upload.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
pub(crate) struct Norm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    inner: candle_nn::GroupNorm,
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }
}

fn group_norm(channels: usize, vb: VarBuilder) -> Result<Norm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    let inner = candle_nn::GroupNorm::new(
        weight.clone(),
        bias.clone(),
        channels,
        VQ_GROUPS,
        VQ_GROUPNORM_EPS,
    )?;
    Ok(Norm {
        weight,
        bias,
        inner,
    })
}

fn swish(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(x)
}

/// One encoder level: res blocks (each followed by attention at the last level), then downsample.
#[derive(Debug, Clone)]
struct EncoderLevel {
    res: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    downsample: Option<Downsample>,
}

/// Mirrors `Encoder`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv,
    levels: Vec<EncoderLevel>,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    norm_out: Norm,
    conv_out: Conv,
}

impl Encoder {
    pub fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.ch_mult.len();
        let conv_in = conv(cfg.in_channels, cfg.ch, 3, 1, vb.pp("conv_in"))?;
        let mut block_in = cfg.ch;
        let mut levels = Vec::with_capacity(n);
        for (i, m) in cfg.ch_mult.iter().enumerate() {
            let vb_l = vb.pp(format!("conv_blocks.{i}"));
            let out = cfg.ch * m;
            let mut res = Vec::new();
            let mut attn = Vec::new();
            for r in 0..cfg.num_res_blocks {
                res.push(ResnetBlock::new(
                    block_in,
                    out,
                    vb_l.pp(format!("res.{r}")),
                )?);
                block_in = out;
                if i == n - 1 {
                    attn.push(AttnBlock::new(out, vb_l.pp(format!("attn.{r}")))?);
                }
            }
            let downsample = (i != n - 1)
                .then(|| Downsample::new(out, vb_l.pp("downsample")))
                .transpose()?;
            levels.push(EncoderLevel {
                res,
                attn,
                downsample,
            });
        }
        Ok(Self {
            conv_in,
            levels,
            mid: (
                ResnetBlock::new(block_in, block_in, vb.pp("mid.0"))?,
                AttnBlock::new(block_in, vb.pp("mid.1"))?,
                ResnetBlock::new(block_in, block_in, vb.pp("mid.2"))?,
            ),
            norm_out: group_norm(block_in, vb.pp("norm_out"))?,
            conv_out: conv(block_in, cfg.z_channels, 3, 1, vb.pp("conv_out"))?,
        })
    }

    /// Mirrors `Encoder.forward`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for level in &self.levels {
            for (i, res) in level.res.iter().enumerate() {
                h = res.forward(&h)?;
                if let Some(attn) = level.attn.get(i) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(down) = &level.downsample {
                h = down.forward(&h)?;
            }
        }
        h = self.mid.0.forward(&h)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h)?;
        self.conv_out.forward(&swish(&self.norm_out.forward(&h)?)?)
    }
}

/// One decoder level (lowest resolution first).
#[derive(Debug, Clone)]
pub(crate) struct DecoderLevel {
    pub(crate) res: Vec<ResnetBlock>,
    pub(crate) attn: Vec<AttnBlock>,
    pub(crate) upsample: Option<Upsample>,
}

/// Mirrors `Decoder`. Its `conv_blocks.0` is the lowest-resolution level.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub(crate) conv_in: Conv,
    pub(crate) mid: (ResnetBlock, AttnBlock, ResnetBlock),
    pub(crate) levels: Vec<DecoderLevel>,
    pub(crate) norm_out: Norm,
    pub(crate) conv_out: Conv,
}

impl Decoder {
    pub fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        let mult = cfg.decoder_mult();
        let n = mult.len();
        let mut block_in = cfg.ch * mult[n - 1];
        let conv_in = conv(cfg.z_channels, block_in, 3, 1, vb.pp("conv_in"))?;
        let mid = (
            ResnetBlock::new(block_in, block_in, vb.pp("mid.0"))?,
            AttnBlock::new(block_in, vb.pp("mid.1"))?,
            ResnetBlock::new(block_in, block_in, vb.pp("mid.2"))?,
        );
        let mut levels = Vec::with_capacity(n);
        for j in 0..n {
            let level = n - 1 - j;
            let vb_l = vb.pp(format!("conv_blocks.{j}"));
            let out = cfg.ch * mult[level];
            let mut res = Vec::new();
            let mut attn = Vec::new();
            for r in 0..=cfg.num_res_blocks {
                res.push(ResnetBlock::new(
                    block_in,
                    out,
                    vb_l.pp(format!("res.{r}")),
                )?);
                block_in = out;
                if level == n - 1 {
                    attn.push(AttnBlock::new(out, vb_l.pp(format!("attn.{r}")))?);
                }
            }
            let upsample = (level != 0)
                .then(|| Upsample::new(out, vb_l.pp("upsample")))
                .transpose()?;
            levels.push(DecoderLevel {
                res,
                attn,
                upsample,
            });
        }
        Ok(Self {
            conv_in,
            mid,
            levels,
            norm_out: group_norm(block_in, vb.pp("norm_out"))?,
            conv_out: conv(block_in, cfg.out_channels, 3, 1, vb.pp("conv_out"))?,
        })
    }

    /// Mirrors `Decoder.forward`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid.0.forward(&h)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h)?;
        for level in &self.levels {
            for (i, res) in level.res.iter().enumerate() {
                h = res.forward(&h)?;
                if let Some(attn) = level.attn.get(i) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(up) = &level.upsample {
                h = up.forward(&h)?;
            }
        }
        self.conv_out.forward(&swish(&self.norm_out.forward(&h)?)?)
    }
}

/// `x / max(||x||, 1e-12)` along the last dim (`F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}

/// The LlamaGen VQ model: encoder, `quant_conv`, codebook, `post_quant_conv`, decoder.
#[derive(Debug, Clone)]
pub struct VqModel {
    cfg: VqConfig,
    encoder: Encoder,
    pub(crate) decoder: Decoder,
    quant_conv: Conv,
    pub(crate) post_quant_conv: Conv,
    /// Raw codebook, `(codebook_size, embed_dim)`.
    codebook: Tensor,
    /// l2-normalised rows, computed once.
    codebook_normed: Tensor,
    /// See [`VqModel::identity`].
    identity: String,
    /// The bf16 decoder when [`VqModel::set_decode_dtype`] asked for it.
    #[cfg(target_arch = "x86_64")]
    bf16: Option<std::sync::Arc<bf16::Bf16Decoder>>,
}

impl VqModel {
    pub fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // Reference init: uniform(-1/n, 1/n) (then normalised); ignored when loading weights.
        let bound = 1.0 / cfg.codebook_size as f64;
        let codebook = vb.get_with_hints(
            (cfg.codebook_size, cfg.codebook_embed_dim),
            "quantize.embedding.weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            quant_conv: conv(
                cfg.z_channels,
                cfg.codebook_embed_dim,
                1,
                0,
                vb.pp("quant_conv"),
            )?,
            post_quant_conv: conv(
                cfg.codebook_embed_dim,
                cfg.z_channels,
                1,
                0,
                vb.pp("post_quant_conv"),
            )?,
            codebook_normed: l2_normalize(&codebook)?,
            identity: identity(cfg, &codebook)?,
            codebook,
            #[cfg(target_arch = "x86_64")]
            bf16: None,
        })
    }

    /// Whether this process can decode in bf16: a CPU with AVX512-BF16 (detected at run time)
    /// whose kernel tier is not forced lower (`ARPG_KERNEL`).
    pub fn bf16_decode_supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        return bf16::Bf16Decoder::supported();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The decoder's compute dtype on the CPU: `F32` (exact, the default) or `BF16` (products
    /// of bf16-rounded activations and weights with f32 sums, as the reference's bf16 runs; the
    /// weights are packed now, about half the decoder's f32 size). Errors: another dtype, or
    /// bf16 where it cannot run ([`VqModel::bf16_decode_supported`]) or for a tokenizer on
    /// another device than the CPU. The encoder and training always compute in f32.
    pub fn set_decode_dtype(&mut self, dtype: DType) -> Result<()> {
        match dtype {
            DType::F32 => {
                #[cfg(target_arch = "x86_64")]
                {
                    self.bf16 = None;
                }
                Ok(())
            }
            #[cfg(target_arch = "x86_64")]
            DType::BF16 if !self.device().is_cpu() => candle_core::bail!(
                "the bf16 decoder is a CPU mode; this tokenizer is on {:?}",
                self.device().location()
            ),
            #[cfg(target_arch = "x86_64")]
            DType::BF16 => {
                if self.bf16.is_none() {
                    self.bf16 = Some(std::sync::Arc::new(bf16::Bf16Decoder::new(&self.decoder)?));
                }
                Ok(())
            }
            #[cfg(not(target_arch = "x86_64"))]
            DType::BF16 => candle_core::bail!(
                "the bf16 decoder needs an x86-64 CPU with AVX512-BF16: decode in f32"
            ),
            d => candle_core::bail!("the tokenizer decodes in f32 or bf16, not {}", d.as_str()),
        }
    }

    /// See [`VqModel::set_decode_dtype`].
    pub fn decode_dtype(&self) -> DType {
        #[cfg(target_arch = "x86_64")]
        if self.bf16.is_some() {
            return DType::BF16;
        }
        DType::F32
    }

    /// The tokenizer's identity: 16 hex digits of a SHA-256 of its config and codebook (what a
    /// token means), computed once at load. PNG metadata records it, so tokens are only reused
    /// by the tokenizer that made them; the preview cache is keyed by it.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn config(&self) -> &VqConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.codebook.device()
    }

    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// l2-normalised codebook rows `(codebook_size, embed_dim)`.
    pub fn codebook_normed(&self) -> &Tensor {
        &self.codebook_normed
    }

    /// Encoder output before `quant_conv`, `(B, z_channels, h, w)`.
    pub fn encoder_out(&self, image: &Tensor) -> Result<Tensor> {
        self.encoder.forward(image)
    }

    /// Pre-quantization latent (`quant_conv` of the encoder output), `(B, embed_dim, h, w)`.
    pub fn latent(&self, image: &Tensor) -> Result<Tensor> {
        self.quant_conv.forward(&self.encoder.forward(image)?)
    }

    /// Nearest codebook rows of a latent (mirrors `VectorQuantizer.forward`): both sides
    /// l2-normalised, distance `|z|² + |e|² - 2 z·e`, first index on ties. Returns `(B, h*w)` u32
    /// indices in raster order.
    pub fn quantize(&self, latent: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = latent.dims4()?;
        let z = latent.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let z = l2_normalize(&z)?;
        let e = &self.codebook_normed;
        let d = z
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_add(&e.sqr()?.sum(1)?.unsqueeze(0)?)?
            .sub(&(z.matmul(&e.t()?)? * 2.0)?)?;
        d.argmin(1)?.reshape((b, h * w))
    }

    /// Training forward (mirrors `VQModel.forward` with `VectorQuantizer` in training mode):
    /// returns the reconstruction, the codebook loss `mean((z_q - sg(z))²)`, the commitment term
    /// `mean((sg(z_q) - z)²)` (unscaled) and the chosen indices. The codebook is normalised from
    /// the live variable, and gradients pass the quantizer straight through.
    ///
    /// `mosaic` (not in the reference) reassembles the quantized latents before decoding: row
    /// `b * h * w + p` of the decoder's input is row `mosaic[b * h * w + p]` of the batch's
    /// `(B * h * w)` token rows, so a decoded cell may sit among cells of other images (see
    /// `mosaic_target`).
    pub fn forward_train(
        &self,
        image: &Tensor,
        mosaic: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let latent = self.latent(image)?;
        let (b, c, h, w) = latent.dims4()?;
        let z = l2_normalize(&latent.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?)?;
        let e = l2_normalize(&self.codebook)?;
        let zd = z.detach();
        let d = zd
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_add(&e.detach().sqr()?.sum(1)?.unsqueeze(0)?)?
            .sub(&(zd.matmul(&e.detach().t()?)? * 2.0)?)?;
        let idx = d.argmin(1)?;
        let zq = e.index_select(&idx, 0)?;
        let codebook_loss = (&zq - &zd)?.sqr()?.mean_all()?;
        let commit_loss = (zq.detach() - &z)?.sqr()?.mean_all()?;
        let st = (&z + (&zq - &z)?.detach())?;
        let st = match mosaic {
            Some(rows) => st.index_select(rows, 0)?,
            None => st,
        };
        let st = st
            .reshape((b, h, w, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let recon = self.decoder.forward(&self.post_quant_conv.forward(&st)?)?;
        Ok((recon, codebook_loss, commit_loss, idx.reshape((b, h * w))?))
    }

    /// The pixels a mosaic decode should give: each token's `s x s` patch of `image` (`(B, 3, H,
    /// W)`) moved as `forward_train` moves its latent row.
    pub fn mosaic_target(&self, image: &Tensor, mosaic: &Tensor) -> Result<Tensor> {
        let s = self.cfg.downsample();
        let (b, c, hh, ww) = image.dims4()?;
        let (h, w) = (hh / s, ww / s);
        let patches = image
            .reshape((b, c, h, s, w, s))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * h * w, c * s * s))?
            .index_select(mosaic, 0)?;
        patches
            .reshape((b, h, w, c, s, s))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, c, hh, ww))
    }

    /// `encode(image) -> tokens`: `(B, 3, H, W)` in `[-1, 1]` to `(B, H/s * W/s)` u32.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        self.quantize(&self.latent(image)?)
    }

    /// Codebook lookup (mirrors `get_codebook_entry` with `channel_first`): `(B, h*w)` tokens to a
    /// `(B, embed_dim, h, w)` latent.
    pub fn lookup(&self, tokens: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let (b, n) = tokens.dims2()?;
        if n != grid.0 * grid.1 {
            candle_core::bail!("{n} tokens do not fill a {}x{} grid", grid.0, grid.1);
        }
        let flat = tokens.flatten_all()?.to_dtype(DType::U32)?;
        self.codebook_normed
            .index_select(&flat, 0)?
            .reshape((b, grid.0, grid.1, self.cfg.codebook_embed_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// `decode(tokens, grid)`: raster-order tokens `(B, rows*cols)` to images `(B, 3, H, W)` in
    /// about `[-1, 1]` (mirrors `decode_code`).
    pub fn decode(&self, tokens: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let q = self.lookup(tokens, grid)?;
        let z = self.post_quant_conv.forward(&q)?;
        #[cfg(target_arch = "x86_64")]
        if let Some(d) = &self.bf16 {
            return d.forward(&z)?.to_device(z.device());
        }
        self.decoder.forward(&z)
    }
}

/// Images `(B, 3, H, W)` in `[-1, 1]` to 8-bit RGB, as the official sampler converts them:
/// `clamp(127.5 x + 128, 0, 255)` truncated. Returns one interleaved `H*W*3` buffer per image.
///
/// Errors when a value is not finite: clamping would turn NaN into a silently black pixel.
pub fn to_rgb8(images: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (b, _, h, w) = images.dims4()?;
    let x = images.to_dtype(DType::F32)?.contiguous()?;
    (0..b)
        .map(|i| rgb8_from_planes(&x.get(i)?.flatten_all()?.to_vec1::<f32>()?, h, w))
        .collect()
}

/// One decoded image as planes `[3][h][w]` (about `[-1, 1]`) to interleaved RGB8, the rule of
/// [`to_rgb8`] (every engine's decode ends here). Errors on a non-finite value.
pub fn rgb8_from_planes(planes: &[f32], h: usize, w: usize) -> Result<Vec<u8>> {
    let hw = h * w;
    if planes.len() != 3 * hw {
        candle_core::bail!("{} values are not a 3x{h}x{w} image", planes.len());
    }
    if planes.iter().any(|v| !v.is_finite()) {
        candle_core::bail!(
            "the decoded image holds non-finite values (NaN or infinity): the tokenizer's \
             weights are broken; no image was written"
        );
    }
    Ok((0..hw * 3)
        .map(|i| (planes[(i % 3) * hw + i / 3] * 127.5 + 128.0).clamp(0.0, 255.0) as u8)
        .collect())
}

/// Interleaved 8-bit RGB `(H*W*3)` to a `(1, 3, H, W)` f32 image in `[-1, 1]`.
pub fn from_rgb8(rgb: &[u8], height: usize, width: usize, device: &Device) -> Result<Tensor> {
    if rgb.len() != height * width * 3 {
        candle_core::bail!("{} bytes are not a {width}x{height} RGB image", rgb.len());
    }
    let data: Vec<f32> = rgb.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    Tensor::from_vec(data, (height, width, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()
}

/// 1x1 / 3x3 convolution with bias.
pub(crate) fn conv_cfg(padding: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    }
}

/// See [`VqModel::identity`]: the config's shape fields and the codebook's f32 values
/// (little-endian), so the same tokenizer has the same identity whatever file or dtype it was
/// loaded from.
fn identity(cfg: &VqConfig, codebook: &Tensor) -> Result<String> {
    let header: Vec<u8> = [
        cfg.codebook_size,
        cfg.codebook_embed_dim,
        cfg.downsample(),
        cfg.z_channels,
    ]
    .iter()
    .flat_map(|&v| (v as u64).to_le_bytes())
    .collect();
    crate::identity::of(&header, codebook).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_image_with_nan_is_an_error_not_a_black_pixel() -> Result<()> {
        let dev = Device::Cpu;
        let ok = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev)?;
        assert_eq!(to_rgb8(&ok)?[0], vec![128u8; 12]);
        let mut values = vec![0f32; 12];
        values[5] = f32::NAN;
        let bad = Tensor::from_vec(values, (1, 3, 2, 2), &dev)?;
        let err = to_rgb8(&bad).expect_err("NaN must not become a pixel");
        assert!(err.to_string().contains("non-finite"), "{err}");
        Ok(())
    }
}
