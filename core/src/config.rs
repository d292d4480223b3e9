//! Model configurations: the ARPG transformer (`ModelArgs` in hp-l33/ARPG `models/arpg.py`) and the
//! LlamaGen VQ tokenizer (`ModelArgs` in `models/vq_model.py`), with the official presets.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of an ARPG transformer. Field names follow the reference `ModelArgs`, so a
/// reference config serialised to JSON deserialises here; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArpgConfig {
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub vocab_size: usize,
    pub num_classes: usize,
    /// Number of image tokens (grid_size²).
    pub block_size: usize,
    #[serde(default = "one")]
    pub cls_token_num: usize,
    #[serde(default = "default_multiple_of")]
    pub multiple_of: usize,
    #[serde(default)]
    pub ffn_dim_multiplier: Option<f64>,
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
}

fn one() -> usize {
    1
}
fn default_multiple_of() -> usize {
    256
}
fn default_rope_base() -> f64 {
    10000.0
}
fn default_norm_eps() -> f64 {
    1e-5
}

impl ArpgConfig {
    fn official(dim: usize, n_layer: usize, n_head: usize) -> Self {
        Self {
            dim,
            n_layer,
            n_head,
            vocab_size: 16384,
            num_classes: 1000,
            block_size: 256,
            cls_token_num: 1,
            multiple_of: 256,
            ffn_dim_multiplier: None,
            rope_base: 10000.0,
            norm_eps: 1e-5,
        }
    }

    /// ARPG-L, 320M parameters (`arpg_300m.pt`).
    pub fn arpg_l() -> Self {
        Self::official(1024, 24, 16)
    }

    /// ARPG-XL, 719M parameters (`arpg_700m.pt`).
    pub fn arpg_xl() -> Self {
        Self::official(1280, 36, 20)
    }

    /// ARPG-XXL, 1.3B parameters (`arpg_1b.pt`).
    pub fn arpg_xxl() -> Self {
        Self::official(1536, 48, 24)
    }

    /// The official presets with their names.
    pub fn presets() -> [(&'static str, Self); 3] {
        [
            ("ARPG-L", Self::arpg_l()),
            ("ARPG-XL", Self::arpg_xl()),
            ("ARPG-XXL", Self::arpg_xxl()),
        ]
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_head
    }

    /// SwiGLU width: `int(2 * 4 * dim / 3)`, optionally scaled, rounded up to `multiple_of`
    /// (`FeedForward.__init__`).
    pub fn ffn_hidden_dim(&self) -> usize {
        let mut hidden = 2 * 4 * self.dim / 3;
        if let Some(m) = self.ffn_dim_multiplier {
            hidden = (m * hidden as f64) as usize;
        }
        hidden.div_ceil(self.multiple_of) * self.multiple_of
    }

    pub fn n_self_layers(&self) -> usize {
        self.n_layer / 2
    }

    pub fn n_cross_layers(&self) -> usize {
        self.n_layer / 2
    }

    /// Side of the square token grid the RoPE table covers.
    pub fn grid_size(&self) -> usize {
        (self.block_size as f64).sqrt().round() as usize
    }

    /// Rows of the embedding table: V image tokens, mask, C classes, null class, drop token.
    pub fn embedding_rows(&self) -> usize {
        self.vocab_size + self.num_classes + 3
    }

    pub fn mask_token_id(&self) -> u32 {
        self.vocab_size as u32
    }

    /// Embedding row of class label `c`.
    pub fn class_token_id(&self, class: usize) -> u32 {
        (self.vocab_size + 1 + class) as u32
    }

    /// Embedding row of the "no class" condition used by the unconditional half of CFG.
    pub fn null_class_id(&self) -> u32 {
        (self.vocab_size + self.num_classes + 1) as u32
    }

    /// Checks the invariants the model code relies on.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.dim == 0 || self.n_head == 0 || !self.dim.is_multiple_of(self.n_head) {
            return fail(format!(
                "dim {} must be a positive multiple of n_head {}",
                self.dim, self.n_head
            ));
        }
        if !self.head_dim().is_multiple_of(4) {
            return fail(format!(
                "head_dim {} must be a multiple of 4 for 2-D RoPE",
                self.head_dim()
            ));
        }
        if self.n_layer < 2 || !self.n_layer.is_multiple_of(2) {
            return fail(format!("n_layer {} must be even and >= 2", self.n_layer));
        }
        let g = self.grid_size();
        if g == 0 || g * g != self.block_size {
            return fail(format!(
                "block_size {} must be a square number (the token grid is square)",
                self.block_size
            ));
        }
        if self.cls_token_num != 1 {
            return fail(format!(
                "cls_token_num {} is not supported (class-conditional models use 1)",
                self.cls_token_num
            ));
        }
        if self.vocab_size == 0 || self.num_classes == 0 || self.multiple_of == 0 {
            return fail("vocab_size, num_classes and multiple_of must be positive".into());
        }
        Ok(())
    }

    /// Every state-dict key of this config with its shape, in the reference's key order.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, h) = (self.dim, self.ffn_hidden_dim());
        let mut v = vec![(
            "embeddings.weight".to_string(),
            vec![self.embedding_rows(), d],
        )];
        let ffn = |v: &mut Vec<(String, Vec<usize>)>, p: &str| {
            v.push((format!("{p}.ffn.w1.weight"), vec![h, d]));
            v.push((format!("{p}.ffn.w3.weight"), vec![h, d]));
            v.push((format!("{p}.ffn.w2.weight"), vec![d, h]));
            v.push((format!("{p}.attn_norm.weight"), vec![d]));
            v.push((format!("{p}.ffn_norm.weight"), vec![d]));
        };
        for i in 0..self.n_self_layers() {
            let p = format!("layers.self_dec.{i}");
            for w in ["to_q", "to_k", "to_v", "proj"] {
                v.push((format!("{p}.attn.{w}.weight"), vec![d, d]));
            }
            ffn(&mut v, &p);
        }
        for i in 0..self.n_cross_layers() {
            let p = format!("layers.cross_dec.{i}");
            for w in ["to_q", "proj"] {
                v.push((format!("{p}.attn.{w}.weight"), vec![d, d]));
            }
            ffn(&mut v, &p);
        }
        v.push(("layers.norm.weight".into(), vec![d]));
        v.push(("layers.to_k.weight".into(), vec![d, d]));
        v.push(("layers.to_v.weight".into(), vec![d, d]));
        v.push(("norm.weight".into(), vec![d]));
        v.push(("head.weight".into(), vec![self.vocab_size, d]));
        v
    }

    pub fn num_params(&self) -> usize {
        self.expected_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Name of the official preset this config equals, if any.
    pub fn preset_name(&self) -> Option<&'static str> {
        Self::presets()
            .into_iter()
            .find(|(_, c)| c == self)
            .map(|(n, _)| n)
    }
}

/// Hyper-parameters of the LlamaGen VQ tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqConfig {
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    /// Decoder levels, when they differ from the encoder's (the reference has both fields).
    #[serde(default)]
    pub decoder_ch_mult: Option<Vec<usize>>,
    pub num_res_blocks: usize,
    pub z_channels: usize,
    pub codebook_size: usize,
    pub codebook_embed_dim: usize,
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
}

fn three() -> usize {
    3
}

/// GroupNorm groups in every VQ block (`Normalize` in `vq_model.py`).
pub const VQ_GROUPS: usize = 32;
pub const VQ_GROUPNORM_EPS: f64 = 1e-6;

impl VqConfig {
    /// VQ-16 as built by the official code (`vq_ds16_c2i.pt`): ch 128, 2 res blocks per level.
    pub fn vq_16() -> Self {
        Self {
            ch: 128,
            ch_mult: vec![1, 1, 2, 2, 4],
            decoder_ch_mult: None,
            num_res_blocks: 2,
            z_channels: 256,
            codebook_size: 16384,
            codebook_embed_dim: 8,
            in_channels: 3,
            out_channels: 3,
        }
    }

    pub fn decoder_mult(&self) -> &[usize] {
        self.decoder_ch_mult.as_deref().unwrap_or(&self.ch_mult)
    }

    /// Pixels per token side: 2^(levels - 1).
    pub fn downsample(&self) -> usize {
        1 << (self.ch_mult.len().saturating_sub(1))
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.ch_mult.is_empty() || self.decoder_mult().len() != self.ch_mult.len() {
            return fail(
                "ch_mult must be non-empty and encoder/decoder must have the same number of levels"
                    .into(),
            );
        }
        let widths = std::iter::once(self.ch)
            .chain(self.ch_mult.iter().map(|m| m * self.ch))
            .chain(self.decoder_mult().iter().map(|m| m * self.ch));
        for w in widths {
            if w == 0 || w % VQ_GROUPS != 0 {
                return fail(format!("channel width {w} must be a positive multiple of {VQ_GROUPS} (GroupNorm groups)"));
            }
        }
        if self.num_res_blocks == 0 || self.codebook_size == 0 || self.codebook_embed_dim == 0 {
            return fail(
                "num_res_blocks, codebook_size and codebook_embed_dim must be positive".into(),
            );
        }
        Ok(())
    }

    /// Every state-dict key with its shape (the `codebook_used` buffer is optional and not listed).
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        let conv = |v: &mut Vec<(String, Vec<usize>)>, p: &str, o: usize, i: usize, k: usize| {
            v.push((format!("{p}.weight"), vec![o, i, k, k]));
            v.push((format!("{p}.bias"), vec![o]));
        };
        let norm = |v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
            v.push((format!("{p}.weight"), vec![c]));
            v.push((format!("{p}.bias"), vec![c]));
        };
        let res = |v: &mut Vec<(String, Vec<usize>)>, p: &str, i: usize, o: usize| {
            norm(v, &format!("{p}.norm1"), i);
            conv(v, &format!("{p}.conv1"), o, i, 3);
            norm(v, &format!("{p}.norm2"), o);
            conv(v, &format!("{p}.conv2"), o, o, 3);
            if i != o {
                conv(v, &format!("{p}.nin_shortcut"), o, i, 1);
            }
        };
        let attn = |v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
            norm(v, &format!("{p}.norm"), c);
            for n in ["q", "k", "v", "proj_out"] {
                conv(v, &format!("{p}.{n}"), c, c, 1);
            }
        };
        let mid = |v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
            res(v, &format!("{p}.mid.0"), c, c);
            attn(v, &format!("{p}.mid.1"), c);
            res(v, &format!("{p}.mid.2"), c, c);
        };
        let levels = self.ch_mult.len();
        // Encoder.
        conv(&mut v, "encoder.conv_in", self.ch, self.in_channels, 3);
        let mut block_in = self.ch;
        for (i, m) in self.ch_mult.iter().enumerate() {
            let out = self.ch * m;
            for r in 0..self.num_res_blocks {
                res(
                    &mut v,
                    &format!("encoder.conv_blocks.{i}.res.{r}"),
                    block_in,
                    out,
                );
                block_in = out;
            }
            if i == levels - 1 {
                for r in 0..self.num_res_blocks {
                    attn(&mut v, &format!("encoder.conv_blocks.{i}.attn.{r}"), out);
                }
            } else {
                conv(
                    &mut v,
                    &format!("encoder.conv_blocks.{i}.downsample.conv"),
                    out,
                    out,
                    3,
                );
            }
        }
        mid(&mut v, "encoder", block_in);
        norm(&mut v, "encoder.norm_out", block_in);
        conv(&mut v, "encoder.conv_out", self.z_channels, block_in, 3);
        // Decoder: conv_blocks.0 is the lowest resolution.
        let dm = self.decoder_mult();
        let mut block_in = self.ch * dm[levels - 1];
        conv(&mut v, "decoder.conv_in", block_in, self.z_channels, 3);
        mid(&mut v, "decoder", block_in);
        for j in 0..levels {
            let level = levels - 1 - j;
            let out = self.ch * dm[level];
            for r in 0..=self.num_res_blocks {
                res(
                    &mut v,
                    &format!("decoder.conv_blocks.{j}.res.{r}"),
                    block_in,
                    out,
                );
                block_in = out;
            }
            if level == levels - 1 {
                for r in 0..=self.num_res_blocks {
                    attn(&mut v, &format!("decoder.conv_blocks.{j}.attn.{r}"), out);
                }
            }
            if level != 0 {
                conv(
                    &mut v,
                    &format!("decoder.conv_blocks.{j}.upsample.conv"),
                    out,
                    out,
                    3,
                );
            }
        }
        norm(&mut v, "decoder.norm_out", block_in);
        conv(&mut v, "decoder.conv_out", self.out_channels, block_in, 3);
        // Quantizer and the 1x1 convs around it.
        v.push((
            "quantize.embedding.weight".into(),
            vec![self.codebook_size, self.codebook_embed_dim],
        ));
        conv(
            &mut v,
            "quant_conv",
            self.codebook_embed_dim,
            self.z_channels,
            1,
        );
        conv(
            &mut v,
            "post_quant_conv",
            self.z_channels,
            self.codebook_embed_dim,
            1,
        );
        v
    }

    pub fn num_params(&self) -> usize {
        self.expected_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}
