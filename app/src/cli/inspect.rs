//! `info`, `convert` and `check-reference`: what a checkpoint holds, rewriting it, and the
//! comparison with the reference's outputs.

use anyhow::{bail, Context, Result};
use arpg_app::{errln, outln};
use arpg_core::checkpoint::Checkpoint;
use arpg_core::loader::{self, ModelKind};
use arpg_core::reference::{self, WeightFormat};
use std::process::ExitCode;

pub(super) fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub(super) fn convert_quantized(
    input: &std::path::Path,
    out: &std::path::Path,
    q: &str,
) -> Result<ExitCode> {
    let format = arpg_core::loader::quant(q)?;
    if !arpg_core::loader::gguf::is_gguf(out) {
        bail!(
            "{}: with --quant the output must be a `.gguf` file",
            out.display()
        );
    }
    let (quantized, total) = arpg_core::loader::gguf::convert_arpg(input, None, out, format)?;
    outln!(
        "{total} tensors written to {} ({quantized} linear layers in {q}, the rest in f32)",
        out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn convert(
    input: &std::path::Path,
    out: &std::path::Path,
    dtype: &str,
) -> Result<ExitCode> {
    let dtype = arpg_core::pair::dtype(dtype)?;
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "{}: the output must be a `.safetensors` file",
            out.display()
        );
    }
    let out = &arpg_core::document::regular_output(out)?;
    let ckpt = Checkpoint::open(input)?;
    // Only ARPG or VQ weights are converted; every tensor is read before anything is written.
    // A tensor the model needs in an element type that cannot be weights is an error (as when
    // loading), never dropped from the copy.
    match loader::detect_kind(&ckpt)? {
        ModelKind::Arpg => {
            if let Ok((config, name)) = loader::arpg_config(&ckpt, None) {
                ckpt.validate(&config.expected_shapes(), &name)?;
            }
        }
        ModelKind::Vq => {
            if let Ok(config) = loader::vq_config(&ckpt, None) {
                ckpt.validate(&config.expected_shapes(), "VQ")?;
            }
        }
    }
    // Without a config to say which tensors are weights, a weight or bias by name is one.
    if let Some(name) = ckpt
        .skipped()
        .iter()
        .find(|n| n.ends_with(".weight") || n.ends_with(".bias"))
    {
        bail!(
            "{}: tensor `{name}` is stored in an element type that cannot be model weights, so \
             the copy would lose it; nothing was written",
            input.display()
        );
    }
    for name in ckpt.skipped() {
        errln!("note: `{name}` is not converted: its element type cannot be model weights");
    }
    let device = candle_core::Device::Cpu;
    // A tensor stored in a layout that cannot be read (an unused transposed buffer) is left out,
    // as the model loader leaves it unread.
    for (name, entry) in ckpt.entries() {
        if let Some(why) = entry.unreadable() {
            errln!("note: `{name}` is not converted: {why}");
        }
    }
    let tensors = ckpt
        .entries()
        .iter()
        .filter(|(_, entry)| entry.unreadable().is_none())
        .map(|(name, _)| Ok((name.clone(), ckpt.read(name, dtype, &device)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    // Through a temporary file, so a failure never leaves a truncated checkpoint behind.
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    let config = input.with_extension("json");
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b);
    // Converting in place keeps its config JSON where it is (copying a file onto itself
    // would truncate it).
    if config.is_file() && !same(&config, &out.with_extension("json")) {
        std::fs::copy(&config, out.with_extension("json"))
            .with_context(|| format!("copying {}", config.display()))?;
    }
    outln!(
        "{} tensors written to {} as {}",
        tensors.len(),
        out.display(),
        dtype.as_str()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `arpg info --devices`: what `--device` can name on this machine.
pub(super) fn devices() -> Result<ExitCode> {
    outln!(
        "cpu        the CPU ({})",
        arpg_core::kernels::Tier::detect().name()
    )?;
    if cfg!(feature = "cuda") {
        outln!("cuda[:N]   CUDA (this build links it)")?;
    }
    if cfg!(feature = "metal") {
        outln!("metal[:N]  Metal (this build links it)")?;
    }
    let adapters = arpg_core::gpu::adapters();
    if adapters.is_empty() {
        outln!("(wgpu found no adapter: no Vulkan, Metal or DX12 driver)")?;
    }
    for a in adapters {
        outln!(
            "wgpu:{:<4}  {} ({}, {}){}",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            if a.software {
                ": software, slower than the CPU"
            } else {
                ""
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn info(file: &std::path::Path, config: Option<&std::path::Path>) -> Result<ExitCode> {
    let ckpt = Checkpoint::open(file)?;
    let stored: usize = ckpt
        .entries()
        .values()
        .map(|e| e.shape.iter().product::<usize>())
        .sum();
    outln!("file:       {}", file.display())?;
    outln!(
        "format:     {:?}{}",
        ckpt.format(),
        ckpt.weights_key()
            .map(|k| format!(" (weights under \"{k}\")"))
            .unwrap_or_default()
    )?;
    let stored_dtype = ckpt.stored_dtype_name();
    if stored_dtype == ckpt.dtype().as_str() {
        outln!("dtype:      {stored_dtype}")?;
    } else {
        outln!(
            "dtype:      {stored_dtype} (8-bit floats, widened exactly to {} on load)",
            ckpt.dtype().as_str()
        )?;
    }
    let expected: Vec<(String, Vec<usize>)> = match loader::detect_kind(&ckpt)? {
        ModelKind::Arpg => {
            let explicit = config
                .map(|p| loader::config_from_json(p, "gpt"))
                .transpose()?;
            let (cfg, name) = loader::arpg_config(&ckpt, explicit)?;
            let expected = cfg.expected_shapes();
            ckpt.validate(&expected, &name)?;
            outln!("model:      {name}")?;
            outln!(
                "config:     dim {}, {} layers ({} self + {} cross), {} heads, FFN {}, vocabulary {}, {} classes, {}x{} grid",
                cfg.dim,
                cfg.n_layer,
                cfg.n_self_layers(),
                cfg.n_cross_layers(),
                cfg.n_head,
                cfg.ffn_hidden_dim(),
                cfg.vocab_size,
                cfg.num_classes,
                cfg.grid_size(),
                cfg.grid_size()
            )?;
            outln!(
                "parameters: {} ({})",
                human(cfg.num_params()),
                cfg.num_params()
            )?;
            let sampling = loader::sampling_beside(file)?;
            if !sampling.is_empty() {
                // What every sampler flag left unset takes for this model.
                outln!(
                    "sampling:   {} (recommended in the config JSON)",
                    serde_json::to_string(&sampling)?
                )?;
            }
            expected
        }
        ModelKind::Vq => {
            let cfg = loader::vq_config(&ckpt, None)?;
            let expected = cfg.expected_shapes();
            ckpt.validate(&expected, "VQ")?;
            let name = if cfg == arpg_core::VqConfig::vq_16() {
                "VQ-16 (LlamaGen)"
            } else {
                "custom VQ"
            };
            outln!("model:      {name}")?;
            outln!(
                "config:     ch {}, ch_mult {:?}, {} res blocks, z {}, codebook {} x {}, downsample {}",
                cfg.ch,
                cfg.ch_mult,
                cfg.num_res_blocks,
                cfg.z_channels,
                cfg.codebook_size,
                cfg.codebook_embed_dim,
                cfg.downsample()
            )?;
            outln!(
                "parameters: {} ({})",
                human(cfg.num_params()),
                cfg.num_params()
            )?;
            expected
        }
    };
    outln!(
        "stored:     {} tensors, {} values",
        ckpt.entries().len(),
        human(stored)
    )?;
    if !ckpt.stripped_prefixes().is_empty() {
        outln!(
            "prefixes:   {} removed from every key (a wrapped model's checkpoint)",
            ckpt.stripped_prefixes()
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" then ")
        )?;
    }
    outln!(
        "byte order: {}",
        if ckpt.big_endian() {
            "big-endian (values are byte-swapped on load)"
        } else {
            "little-endian"
        }
    )?;
    let problems = ckpt.scan();
    // Problems in tensors the model never reads are reported but do not stop a load.
    let mut fatal: Vec<&str> = Vec::new();
    if problems.is_empty() {
        outln!("values:     every tensor read, all finite")?;
    }
    for (name, why) in &problems {
        let read = expected.iter().any(|(k, _)| k == name);
        if read {
            fatal.push(name);
        }
        let role = if read {
            "read by the model"
        } else {
            "never read by the model: ignored"
        };
        outln!("problem:    `{name}` ({role}): {why}")?;
    }
    if !ckpt.skipped().is_empty() {
        outln!(
            "skipped:    {} non-float tensor(s): {}",
            ckpt.skipped().len(),
            ckpt.skipped().join(", ")
        )?;
    }
    if !fatal.is_empty() {
        anyhow::bail!(
            "{} tensor(s) the model reads cannot be used ({}): the checkpoint will not load",
            fatal.len(),
            fatal.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn check_reference(
    dir: &std::path::Path,
    safetensors: bool,
    device_name: &str,
) -> Result<ExitCode> {
    let backend = arpg_core::Backend::parse(device_name)?;
    let format = if safetensors {
        WeightFormat::Safetensors
    } else {
        WeightFormat::Pt
    };
    let results = reference::check_reference(dir, format, backend)
        .with_context(|| format!("checking against {}", dir.display()))?;
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        outln!("{r}")?;
    }
    outln!("{} passed, {} failed", results.len() - failed, failed)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
