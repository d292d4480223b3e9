//! The model shipped in `assets/`: its configs and where it lives.

use std::path::PathBuf;

use crate::config::{ArpgConfig, VqConfig};

/// Image side of the shipped model, in pixels.
pub const IMAGE_SIZE: usize = 32;

/// The shipped tokenizer: LlamaGen's VQ architecture, 3 levels (4x downsampling), 1024 codes.
pub fn vq_config() -> VqConfig {
    VqConfig {
        ch: 32,
        ch_mult: vec![1, 1, 2],
        decoder_ch_mult: None,
        num_res_blocks: 1,
        z_channels: 32,
        codebook_size: 1024,
        codebook_embed_dim: 8,
        in_channels: 3,
        out_channels: 3,
    }
}

/// The shipped transformer: 8 layers (4 self + 4 cross), dim 192 with 6 heads, on an 8x8 grid of
/// 1024 codes.
pub fn arpg_config() -> ArpgConfig {
    ArpgConfig {
        dim: 192,
        n_layer: 8,
        n_head: 6,
        vocab_size: 1024,
        num_classes: crate::dataset::CLASS_NAMES.len(),
        block_size: 64,
        cls_token_num: 1,
        multiple_of: 32,
        ffn_dim_multiplier: None,
        rope_base: 10000.0,
        norm_eps: 1e-5,
    }
}

/// `assets/` of the workspace this binary was built from, or `ARPG_ASSETS` when set.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("ARPG_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets"))
}

pub fn arpg_path() -> PathBuf {
    assets_dir().join("arpg.safetensors")
}

pub fn vq_path() -> PathBuf {
    assets_dir().join("vq.safetensors")
}
