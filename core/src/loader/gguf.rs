//! Quantized ARPG checkpoints as GGUF files (the format of llama.cpp and of candle's quantized
//! tensors): `arpg convert --quant q8_0|q4k` writes one, [`crate::loader::load_arpg`] reads one.
//!
//! Tensors keep the reference's state-dict names. Every linear weight (`(out, in)`, not the
//! embedding table) is stored quantized when the format's block divides its input size; the
//! embeddings, norms and any other weight are stored in f32. Metadata: `general.architecture`
//! = `arpg`, `arpg.config` (the [`ArpgConfig`] as JSON, so the file needs nothing beside it),
//! `arpg.quant` (`q8_0` or `q4k`) and `arpg.sampling` (the recommended sampler settings of the
//! JSON beside the input, if any; a JSON beside the `.gguf` file wins).
//!
//! Loading dequantizes to build the model (in f32) and quantizes the linear layers again with
//! the same format. For q8_0 that is exact (a block's scale is its largest magnitude / 127,
//! which the dequantized block reproduces), so a converted file computes what quantizing on load
//! does; q4k's search for scales may pick other ones the second time (a small extra error).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::checkpoint::Checkpoint;
use crate::config::ArpgConfig;
use crate::error::{Error, Result};
use crate::generator::SamplingDefaults;
use crate::loader::{self, LoadedArpg, ModelKind};
use crate::Arpg;

/// A metadata object as a JSON string.
fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))
}

const ARCH: &str = "arpg";

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The format's name as the CLI spells it.
fn quant_name(q: GgmlDType) -> &'static str {
    match q {
        GgmlDType::Q4K => "q4k",
        _ => "q8_0",
    }
}

/// Whether the tensor `name` of `shape` is stored quantized in `q`.
fn quantizes(name: &str, shape: &[usize], q: GgmlDType) -> bool {
    matches!(shape, [_, k] if name != "embeddings.weight" && k % q.block_size() == 0)
}

/// Writes the ARPG checkpoint `input` (`.pt` or `.safetensors`, official or ours) as a quantized
/// GGUF file `out`, through a temporary file. Returns `(quantized, total)` tensor counts.
pub fn convert_arpg(
    input: &Path,
    explicit: Option<ArpgConfig>,
    out: &Path,
    q: GgmlDType,
) -> Result<(usize, usize)> {
    let ckpt = Checkpoint::open(input)?;
    if loader::detect_kind(&ckpt)? != ModelKind::Arpg {
        return Err(Error::InvalidRequest(format!(
            "{}: only ARPG transformers are quantized (the tokenizer stays exact)",
            input.display()
        )));
    }
    let (config, name) = loader::arpg_config(&ckpt, explicit)?;
    config.validate()?;
    let expected = config.expected_shapes();
    ckpt.validate(&expected, &name)?;
    let device = Device::Cpu;
    let mut tensors = Vec::with_capacity(expected.len());
    let mut quantized = 0;
    for (key, shape) in &expected {
        let t = ckpt.read(key, DType::F32, &device)?;
        let dtype = if quantizes(key, shape, q) {
            quantized += 1;
            q
        } else {
            GgmlDType::F32
        };
        tensors.push((key.clone(), QTensor::quantize(&t, dtype)?));
    }
    let sampling = loader::sampling_beside(input)?;
    let metadata = [
        (
            "general.architecture",
            gguf_file::Value::String(ARCH.into()),
        ),
        ("arpg.config", gguf_file::Value::String(to_json(&config)?)),
        ("arpg.quant", gguf_file::Value::String(quant_name(q).into())),
        (
            "arpg.sampling",
            gguf_file::Value::String(to_json(&sampling)?),
        ),
    ];
    let io = |err| Error::Io {
        path: out.to_path_buf(),
        err,
    };
    let out = &crate::document::regular_output(out)?;
    let tmp = out.with_extension("gguf.tmp");
    let write = || -> Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let meta: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut f, &meta, &refs)?;
        std::io::Write::flush(&mut f).map_err(io)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok((quantized, tensors.len()))
}

/// A candle error's message without the backtrace it may carry.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn not_ours(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotACheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a GGUF file written by [`convert_arpg`]: checks its architecture, config and every
/// key and shape (missing or unexpected keys are an error, nothing is loaded partially), builds
/// the model on `device` with the non-quantized weights in `dtype`, and quantizes its linear
/// layers in the file's format.
pub fn load_arpg(path: &Path, dtype: DType, device: &Device) -> Result<LoadedArpg> {
    let io = |err| Error::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    // candle's reader divides by the header's alignment: a corrupt header must not abort.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        gguf_file::Content::read(&mut f)
    }))
    .map_err(|_| not_ours(path, "not a GGUF file (corrupt header)"))?;
    let content =
        read.map_err(|e| not_ours(path, format!("not a GGUF file ({})", first_line(&e))))?;
    let text = |key: &str| -> Result<String> {
        match content.metadata.get(key) {
            Some(gguf_file::Value::String(s)) => Ok(s.clone()),
            _ => Err(not_ours(
                path,
                format!("GGUF without `{key}`: not written by `arpg convert --quant`"),
            )),
        }
    };
    if text("general.architecture")? != ARCH {
        return Err(not_ours(
            path,
            "a GGUF file of another architecture, not ARPG",
        ));
    }
    let config: ArpgConfig = serde_json::from_str(&text("arpg.config")?)
        .map_err(|e| not_ours(path, format!("bad `arpg.config`: {e}")))?;
    config.validate()?;
    let q = super::quant(&text("arpg.quant")?)?;
    let expected: HashMap<String, Vec<usize>> = config.expected_shapes().into_iter().collect();
    let missing: Vec<String> = expected
        .keys()
        .filter(|k| !content.tensor_infos.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingKeys {
            path: path.to_path_buf(),
            model: "quantized ARPG".into(),
            missing,
        });
    }
    if let Some(extra) = content
        .tensor_infos
        .keys()
        .find(|k| !expected.contains_key(*k))
    {
        return Err(not_ours(path, format!("unexpected tensor `{extra}`")));
    }
    let mut tensors = HashMap::with_capacity(expected.len());
    for (key, shape) in &expected {
        // The header's shape first: a corrupt one must not size an allocation.
        let info = content
            .tensor_infos
            .get(key)
            .map(|i| i.shape.dims().to_vec());
        if info.as_deref() != Some(shape.as_slice()) {
            return Err(not_ours(
                path,
                format!("`{key}` has shape {info:?}, the config says {shape:?}"),
            ));
        }
        let t = content
            .tensor(&mut f, key, &Device::Cpu)
            .map_err(|e| not_ours(path, format!("`{key}` cannot be read: {}", first_line(&e))))?;
        if t.shape().dims() != shape.as_slice() {
            return Err(not_ours(
                path,
                format!(
                    "`{key}` has shape {:?}, the config says {shape:?}",
                    t.shape().dims()
                ),
            ));
        }
        let t: Tensor = t.dequantize(&Device::Cpu)?;
        tensors.insert(key.clone(), t.to_device(device)?);
    }
    // Built in f32 whatever `dtype` asks: the quantized layers are quantized again from the
    // dequantized values, which for q8_0 gives back the file's blocks exactly only from f32.
    let _ = dtype;
    let head = tensors
        .get("head.weight")
        .ok_or_else(|| Error::Internal("head.weight was checked above".into()))?;
    let identity = loader::transformer_identity(&config, head)?;
    let mut model = Arpg::new(
        &config,
        VarBuilder::from_tensors(tensors, DType::F32, device),
    )?;
    model.quantize(q)?;
    let beside = loader::sampling_beside(path)?;
    let sampling = if beside != SamplingDefaults::default() {
        beside
    } else {
        match content.metadata.get("arpg.sampling") {
            Some(gguf_file::Value::String(s)) => serde_json::from_str(s)
                .map_err(|e| not_ours(path, format!("bad `arpg.sampling`: {e}")))?,
            _ => beside,
        }
    };
    sampling.apply(&crate::generator::Settings::default())?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("ARPG");
    Ok(LoadedArpg {
        model: model.into(),
        config,
        name: format!("{stem} ({})", quant_name(q)),
        file_dtype: DType::F32,
        sampling,
        identity,
    })
}
