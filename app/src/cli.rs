//! Argument parsing and the subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use arpg_core::checkpoint::Checkpoint;
use arpg_core::loader::{self, ModelKind};
use arpg_core::reference::{self, WeightFormat};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "arpg", version, about = "ARPG Studio: randomized parallel autoregressive image generation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what a checkpoint holds: model, config, parameter count and dtype.
    Info {
        /// An ARPG (`arpg_300m.pt`, ...) or VQ (`vq_ds16_c2i.pt`) checkpoint, `.pt` or `.safetensors`.
        file: PathBuf,
        /// Config JSON for a custom ARPG checkpoint (presets are recognised from shapes).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check this implementation against a reference fixture directory.
    CheckReference {
        /// Directory with `manifest.json`, `cases.safetensors` and the weights.
        dir: PathBuf,
        /// Load the `.safetensors` weights instead of the `.pt` files.
        #[arg(long)]
        safetensors: bool,
        /// Device: cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { file, config } => info(&file, config.as_deref()),
        Command::CheckReference {
            dir,
            safetensors,
            device,
        } => check_reference(&dir, safetensors, &device),
    }
}

/// Parses `cpu`, `cuda[:N]` or `metal[:N]`.
pub fn device(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => (k, n.parse::<usize>().with_context(|| format!("bad device ordinal in `{name}`"))?),
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(ordinal).with_context(|| "CUDA is not available in this build or on this machine"),
        "metal" => Device::new_metal(ordinal).with_context(|| "Metal is not available in this build or on this machine"),
        _ => bail!("unknown device `{name}` (expected cpu, cuda or metal)"),
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn info(file: &std::path::Path, config: Option<&std::path::Path>) -> Result<ExitCode> {
    let ckpt = Checkpoint::open(file)?;
    let stored: usize = ckpt.entries().values().map(|e| e.shape.iter().product::<usize>()).sum();
    println!("file:       {}", file.display());
    println!(
        "format:     {:?}{}",
        ckpt.format(),
        ckpt.weights_key().map(|k| format!(" (weights under \"{k}\")")).unwrap_or_default()
    );
    println!("dtype:      {}", ckpt.dtype().as_str());
    match loader::detect_kind(&ckpt)? {
        ModelKind::Arpg => {
            let explicit = config
                .map(|p| loader::config_from_json(p, "gpt"))
                .transpose()?;
            let (cfg, name) = loader::arpg_config(&ckpt, explicit)?;
            ckpt.validate(&cfg.expected_shapes(), &name)?;
            println!("model:      {name}");
            println!(
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
            );
            println!("parameters: {} ({})", human(cfg.num_params()), cfg.num_params());
        }
        ModelKind::Vq => {
            let cfg = loader::vq_config(&ckpt, None)?;
            ckpt.validate(&cfg.expected_shapes(), "VQ")?;
            let name = if cfg == arpg_core::VqConfig::vq_16() { "VQ-16 (LlamaGen)" } else { "custom VQ" };
            println!("model:      {name}");
            println!(
                "config:     ch {}, ch_mult {:?}, {} res blocks, z {}, codebook {} x {}, downsample {}",
                cfg.ch,
                cfg.ch_mult,
                cfg.num_res_blocks,
                cfg.z_channels,
                cfg.codebook_size,
                cfg.codebook_embed_dim,
                cfg.downsample()
            );
            println!("parameters: {} ({})", human(cfg.num_params()), cfg.num_params());
        }
    }
    println!("stored:     {} tensors, {} values", ckpt.entries().len(), human(stored));
    if !ckpt.skipped().is_empty() {
        println!("skipped:    {} non-float tensor(s): {}", ckpt.skipped().len(), ckpt.skipped().join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_reference(dir: &std::path::Path, safetensors: bool, device_name: &str) -> Result<ExitCode> {
    let device = device(device_name)?;
    let format = if safetensors { WeightFormat::Safetensors } else { WeightFormat::Pt };
    let results = reference::check_reference(dir, format, &device)
        .with_context(|| format!("checking against {}", dir.display()))?;
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        println!("{r}");
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    let _ = DType::F32;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
