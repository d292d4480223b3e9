//! From a file to a ready model: detect what a checkpoint holds, determine its config (official
//! presets from tensor shapes, otherwise a JSON config beside the weights or given explicitly),
//! validate every key and shape, then stream the weights into the model.

pub mod gguf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use crate::backend::Transformer;
use crate::checkpoint::Checkpoint;
use crate::config::{ArpgConfig, VqConfig};
use crate::error::{Error, Result};
use crate::generator::SamplingDefaults;
use crate::model::Arpg;
use crate::vq::VqModel;

/// What a checkpoint contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Arpg,
    Vq,
}

/// Tells an ARPG transformer from a VQ tokenizer by their keys.
pub fn detect_kind(ckpt: &Checkpoint) -> Result<ModelKind> {
    kind_of(&ckpt.shape_map(), ckpt.path())
}

/// [`detect_kind`] on a shape map.
pub fn kind_of(shapes: &ShapeMap, path: &Path) -> Result<ModelKind> {
    let has = |k: &str| shapes.contains_key(k);
    if has("embeddings.weight")
        || has("head.weight")
        || shapes.keys().any(|k| k.starts_with("layers.self_dec."))
    {
        Ok(ModelKind::Arpg)
    } else if has("quantize.embedding.weight")
        || has("encoder.conv_in.weight")
        || has("decoder.conv_out.weight")
    {
        Ok(ModelKind::Vq)
    } else {
        Err(Error::NoWeights {
            path: path.to_path_buf(),
            reason: "neither ARPG (`embeddings.weight`, `layers.*`) nor VQ (`encoder.*`, `quantize.*`) keys are present".into(),
        })
    }
}

/// Key → shape of every tensor in a checkpoint, the input of config detection.
pub type ShapeMap = BTreeMap<String, Vec<usize>>;

/// Highest `i` + 1 among keys `{prefix}{i}.…`.
fn count_indexed(shapes: &ShapeMap, prefix: &str) -> usize {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn dim(shapes: &ShapeMap, path: &Path, key: &str, axis: usize, model: &str) -> Result<usize> {
    shapes
        .get(key)
        .and_then(|s| s.get(axis).copied())
        .ok_or_else(|| Error::MissingKeys {
            path: path.to_path_buf(),
            model: model.into(),
            missing: vec![key.to_string()],
        })
}

/// Reads a config of type `T` from JSON: the object itself, or under `config`, `<section>.config`
/// or `<section>` (so a fixture `manifest.json` works too).
pub fn config_from_json<T: DeserializeOwned>(path: &Path, section: &str) -> Result<T> {
    let text = crate::text::read(path, crate::text::MAX_CONFIG_BYTES)?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        context: path.display().to_string(),
        err: e,
    })?;
    let candidates = [
        value.get(section).and_then(|s| s.get("config")),
        value.get(section),
        value.get("config"),
        Some(&value),
    ];
    // The reason reported is the first candidate's: the most specific place a config was put.
    let mut first_err = None;
    for c in candidates.into_iter().flatten() {
        match serde_json::from_value::<T>(c.clone()) {
            Ok(cfg) => return Ok(cfg),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(Error::Config(format!(
        "{}: no {section} config found ({})",
        path.display(),
        first_err.map_or_else(String::new, |e| e.to_string())
    )))
}

/// `<stem>.json`, `config.json` and a fixture `manifest.json` beside the weights.
fn configs_beside(path: &Path) -> Vec<PathBuf> {
    let mut v = vec![path.with_extension("json")];
    if let Some(dir) = path.parent() {
        v.push(dir.join("config.json"));
        v.push(dir.join("manifest.json"));
    }
    v.into_iter().filter(|p| p.is_file()).collect()
}

/// The ARPG config of a checkpoint: `explicit` if given, else an official preset matching the
/// shapes, else a JSON config beside the file. Returns the config and a display name.
pub fn arpg_config(
    ckpt: &Checkpoint,
    explicit: Option<ArpgConfig>,
) -> Result<(ArpgConfig, String)> {
    arpg_config_from_shapes(&ckpt.shape_map(), ckpt.path(), explicit)
}

/// [`arpg_config`] on a shape map; `path` locates config files beside the weights.
pub fn arpg_config_from_shapes(
    shapes: &ShapeMap,
    path: &Path,
    explicit: Option<ArpgConfig>,
) -> Result<(ArpgConfig, String)> {
    if let Some(cfg) = explicit {
        let name = cfg.preset_name().unwrap_or("custom ARPG").to_string();
        return Ok((cfg, name));
    }
    let m = "ARPG";
    let rows = dim(shapes, path, "embeddings.weight", 0, m)?;
    let width = dim(shapes, path, "embeddings.weight", 1, m)?;
    let vocab = dim(shapes, path, "head.weight", 0, m)?;
    let n_layer = 2 * count_indexed(shapes, "layers.self_dec.");
    for (name, cfg) in ArpgConfig::presets() {
        if cfg.dim == width
            && cfg.n_layer == n_layer
            && cfg.vocab_size == vocab
            && cfg.embedding_rows() == rows
        {
            return Ok((cfg, name.to_string()));
        }
    }
    // A config beside the file that does not parse is named with its reason: telling the user
    // to put a JSON where one already is would not help.
    let mut unreadable = Vec::new();
    for json in configs_beside(path) {
        match config_from_json::<ArpgConfig>(&json, "gpt") {
            Ok(cfg) => {
                let file = json.file_name().map_or_else(
                    || json.display().to_string(),
                    |f| f.to_string_lossy().into_owned(),
                );
                return Ok((cfg, format!("custom ARPG ({file})")));
            }
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    if let Some(why) = unreadable.first() {
        return Err(Error::Config(format!(
            "{}: an ARPG transformer that matches no official preset, and the config JSON \
             beside it cannot be used: {why}",
            path.display()
        )));
    }
    Err(Error::Config(format!(
        "{}: an ARPG transformer (dim {width}, {n_layer} layers, vocabulary {vocab}) that matches no official preset; \
         its head count cannot be read from the weights, so put its config JSON beside it as `{}` or pass one explicitly",
        path.display(),
        path.with_extension("json").display()
    )))
}

/// The VQ config of a checkpoint: `explicit` if given, else read off the tensor shapes.
pub fn vq_config(ckpt: &Checkpoint, explicit: Option<VqConfig>) -> Result<VqConfig> {
    match explicit {
        Some(cfg) => Ok(cfg),
        None => vq_config_from_shapes(&ckpt.shape_map(), ckpt.path()),
    }
}

/// [`vq_config`] on a shape map.
pub fn vq_config_from_shapes(shapes: &ShapeMap, path: &Path) -> Result<VqConfig> {
    let m = "VQ";
    let ch = dim(shapes, path, "encoder.conv_in.weight", 0, m)?;
    let in_channels = dim(shapes, path, "encoder.conv_in.weight", 1, m)?;
    let levels = count_indexed(shapes, "encoder.conv_blocks.");
    let num_res_blocks = count_indexed(shapes, "encoder.conv_blocks.0.res.");
    if levels == 0 || num_res_blocks == 0 || ch == 0 {
        return Err(Error::MissingKeys {
            path: path.to_path_buf(),
            model: m.into(),
            missing: vec!["encoder.conv_blocks.0.res.0.*".into()],
        });
    }
    let ch_mult = (0..levels)
        .map(|i| {
            dim(
                shapes,
                path,
                &format!("encoder.conv_blocks.{i}.res.0.conv1.weight"),
                0,
                m,
            )
            .map(|c| c / ch)
        })
        .collect::<Result<Vec<_>>>()?;
    let dec_levels = count_indexed(shapes, "decoder.conv_blocks.");
    let decoder_ch_mult = (0..dec_levels)
        .rev()
        .map(|j| {
            dim(
                shapes,
                path,
                &format!("decoder.conv_blocks.{j}.res.0.conv1.weight"),
                0,
                m,
            )
            .map(|c| c / ch)
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = VqConfig {
        ch,
        decoder_ch_mult: (decoder_ch_mult != ch_mult).then_some(decoder_ch_mult),
        ch_mult,
        num_res_blocks,
        z_channels: dim(shapes, path, "encoder.conv_out.weight", 0, m)?,
        codebook_size: dim(shapes, path, "quantize.embedding.weight", 0, m)?,
        codebook_embed_dim: dim(shapes, path, "quantize.embedding.weight", 1, m)?,
        in_channels,
        out_channels: dim(shapes, path, "decoder.conv_out.weight", 0, m)?,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A loaded ARPG transformer with what is known about its file.
#[derive(Debug, Clone)]
pub struct LoadedArpg {
    pub model: Transformer,
    pub config: ArpgConfig,
    pub name: String,
    /// dtype stored in the file (the model computes in `model.dtype()`).
    pub file_dtype: DType,
    /// Sampler settings recommended by the JSON beside the weights (empty for official
    /// checkpoints, which use the reference's defaults).
    pub sampling: SamplingDefaults,
    /// The transformer's identity (see [`transformer_identity`]), computed once at load.
    pub identity: String,
}

/// A transformer's identity: 16 hex digits of a SHA-256 of its config and its head's weights
/// (as f32, whatever the file stores). Two trainings, or a quantized copy, differ in their head;
/// the same weights saved as `.pt` or `.safetensors` have the same identity. Hashing the head
/// alone (vocabulary x width: 64 MiB for ARPG-L) keeps it to tens of milliseconds at load, where
/// a digest of every weight would cost most of a second. Quantizing on load gives another
/// identity ([`with_quant`]).
pub fn transformer_identity(config: &ArpgConfig, head: &Tensor) -> Result<String> {
    let header = serde_json::to_vec(config).map_err(|e| Error::Json {
        context: "config".into(),
        err: e,
    })?;
    crate::identity::of(&header, head)
}

/// The identity of a transformer quantized on load to `quant` from one of identity `identity`.
pub fn with_quant(identity: &str, quant: &str) -> String {
    crate::identity::of_text(&format!("{identity}+{quant}"))
}

/// The `"sampling"` object of the first JSON config beside `path` that has one. A malformed one
/// is an error rather than silently ignored.
pub fn sampling_beside(path: &Path) -> Result<SamplingDefaults> {
    for json in configs_beside(path) {
        let text = crate::text::read(&json, crate::text::MAX_CONFIG_BYTES)?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            context: json.display().to_string(),
            err: e,
        })?;
        if let Some(v) = value.get("sampling") {
            let d: SamplingDefaults =
                serde_json::from_value(v.clone()).map_err(|e| Error::Json {
                    context: format!("{}: `sampling`", json.display()),
                    err: e,
                })?;
            d.apply(&crate::generator::Settings::default())?;
            return Ok(d);
        }
    }
    Ok(SamplingDefaults::default())
}

/// Opens, validates and loads an ARPG checkpoint (`.pt`, `.safetensors`, or a quantized `.gguf`
/// written by [`gguf::convert_arpg`]), computing in `dtype`.
pub fn load_arpg(
    path: impl AsRef<Path>,
    explicit: Option<ArpgConfig>,
    dtype: DType,
    device: &Device,
) -> Result<LoadedArpg> {
    if gguf::is_gguf(path.as_ref()) {
        return gguf::load_arpg(path.as_ref(), dtype, device);
    }
    let ckpt = Checkpoint::open(path)?;
    if detect_kind(&ckpt)? != ModelKind::Arpg {
        return Err(Error::Config(format!(
            "{}: this is a VQ tokenizer checkpoint, not an ARPG transformer",
            ckpt.path().display()
        )));
    }
    let (config, name) = arpg_config(&ckpt, explicit)?;
    config.validate()?;
    ckpt.validate(&config.expected_shapes(), &name)?;
    let file_dtype = ckpt.dtype();
    let sampling = sampling_beside(ckpt.path())?;
    let identity = transformer_identity(
        &config,
        &ckpt.read("head.weight", DType::F32, &Device::Cpu)?,
    )?;
    let model = Arpg::new(&config, ckpt.var_builder(dtype, device))?.into();
    Ok(LoadedArpg {
        model,
        config,
        name,
        file_dtype,
        sampling,
        identity,
    })
}

/// Opens, validates and loads a VQ checkpoint, computing in f32 (its decoder may then be
/// switched to bf16: [`VqModel::set_decode_dtype`]).
pub fn load_vq(
    path: impl AsRef<Path>,
    explicit: Option<VqConfig>,
    device: &Device,
) -> Result<VqModel> {
    let ckpt = Checkpoint::open(path)?;
    if detect_kind(&ckpt)? != ModelKind::Vq {
        return Err(Error::Config(format!(
            "{}: this is an ARPG transformer checkpoint, not a VQ tokenizer",
            ckpt.path().display()
        )));
    }
    let config = vq_config(&ckpt, explicit)?;
    config.validate()?;
    ckpt.validate(&config.expected_shapes(), "VQ")?;
    Ok(VqModel::new(&config, ckpt.var_builder(DType::F32, device))?)
}

/// Parses a quantized format: `q8_0` (8-bit blocks of 32 with an f16 scale, 8.5 bits a weight)
/// or `q4k` (4-bit super-blocks of 256, 4.5 bits a weight), candle's `GgmlDType` of the same
/// name.
pub fn quant(name: &str) -> Result<candle_core::quantized::GgmlDType> {
    use candle_core::quantized::GgmlDType;
    Ok(match name.to_ascii_lowercase().as_str() {
        "q8_0" | "q8" => GgmlDType::Q8_0,
        "q4k" | "q4_k" => GgmlDType::Q4K,
        q => {
            return Err(Error::InvalidRequest(format!(
                "unknown quantization `{q}` (expected q8_0 or q4k)"
            )))
        }
    })
}
