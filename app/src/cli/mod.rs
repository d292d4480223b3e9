//! Argument parsing and the subcommands.

use arpg_app::{errln, outln};
use arpg_core::pair::ModelPair;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use arpg_app::commands::{self, MaskArgs, ModelArgs, SamplerArgs};

mod dataset;
mod inspect;
#[cfg(feature = "train")]
mod train;

use dataset::export_dataset;
use inspect::{check_reference, convert, convert_quantized, info};
#[cfg(feature = "train")]
use train::{train_arpg, train_vq, TrainArgs};

#[derive(Parser, Debug)]
#[command(
    name = "arpg",
    version,
    about = "ARPG Studio: randomized parallel autoregressive image generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate images of a class.
    Generate {
        /// Class index (or, for the shipped model, its name) [default: 0, or the class of
        /// --from].
        #[arg(long)]
        class: Option<String>,
        /// Generate again the image this PNG's metadata describes: its settings, seed, order
        /// and forks (sampler flags are ignored; --class overrides its class).
        #[arg(long, value_name = "PNG", conflicts_with = "batch")]
        from: Option<PathBuf>,
        /// Number of images (written as OUT_0.png, OUT_1.png, ... when above 1).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value = "sample.png")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampler: SamplerArgs,
    },
    /// Regenerate the masked part of an image; everything else is kept exactly.
    Inpaint {
        #[arg(long)]
        image: PathBuf,
        /// Same size as the image (as displayed). White = regenerate, black = keep; when the
        /// mask's alpha channel varies, alpha is the mask (opaque = regenerate). Without it, the
        /// image's wholly transparent pixels are the area to fill.
        #[arg(long)]
        mask: Option<PathBuf>,
        /// Class (default: the one stored in the image, else unconditional).
        #[arg(long)]
        class: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        mask_opts: MaskArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampler: SamplerArgs,
    },
    /// Extend the canvas by N pixels (snapped up to whole tokens) and fill it.
    Outpaint {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 0)]
        left: usize,
        #[arg(long, default_value_t = 0)]
        right: usize,
        #[arg(long, default_value_t = 0)]
        top: usize,
        #[arg(long, default_value_t = 0)]
        bottom: usize,
        #[arg(long)]
        class: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampler: SamplerArgs,
    },
    /// Double the resolution: existing tokens become context on a grid twice as fine.
    Expand {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        class: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampler: SamplerArgs,
    },
    /// Encode an image to a token JSON.
    Encode {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode a token JSON to a PNG.
    Decode {
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Download official checkpoints into the model hub's cache (`HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, default `~/.cache/huggingface/hub`; `HF_ENDPOINT` selects the server,
    /// `HF_HUB_OFFLINE=1` forbids requests), resuming a partial download and
    /// verifying the result; files already in the cache are used as they are. Prints each path.
    Fetch {
        /// arpg-l, arpg-xl, arpg-xxl, vq-16.
        names: Vec<String>,
        /// All four.
        #[arg(long)]
        all: bool,
        /// Resolve from the cache only, making no request (also when HF_HUB_OFFLINE=1).
        #[arg(long)]
        offline: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Print what a checkpoint holds: model, config, parameter count and dtype; or, with
    /// `--devices`, the devices `--device` can name.
    Info {
        /// An ARPG (`arpg_300m.pt`, ...) or VQ (`vq_ds16_c2i.pt`) checkpoint, `.pt` or
        /// `.safetensors` (or `--devices` instead).
        #[arg(required_unless_present = "devices")]
        file: Option<PathBuf>,
        /// List the devices instead: the CPU and every wgpu adapter (`wgpu:N`), software ones
        /// included.
        #[arg(long)]
        devices: bool,
        /// Config JSON for a custom ARPG checkpoint (presets are recognised from shapes).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Rewrite a checkpoint (`.pt` or `.safetensors`) as `.safetensors` in another dtype, e.g.
    /// an official `arpg_300m.pt` as f16: half the size, and no pickle to parse on every start.
    /// A config JSON beside the input (`<stem>.json`) is copied beside the output. With
    /// `--quant`, an ARPG transformer is written as a quantized `.gguf` file instead (linear
    /// layers in q8_0 or q4k; load it with `--gpt FILE.gguf`).
    Convert {
        /// The checkpoint to read.
        input: PathBuf,
        /// The `.safetensors` file to write (`.gguf` with --quant).
        #[arg(long)]
        out: PathBuf,
        /// f32, f16 or bf16.
        #[arg(long, default_value = "f16")]
        dtype: String,
        /// Quantize the linear layers: q8_0 or q4k (writes GGUF).
        #[arg(long, value_name = "FORMAT")]
        quant: Option<String>,
    },
    /// Export the procedural training dataset as PNGs in `OUT/<class index>_<class name>/`.
    Dataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        per_class: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image side in pixels.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Also write a contact sheet (one row per class) to this PNG.
        #[arg(long)]
        sheet: Option<PathBuf>,
    },
    #[cfg(feature = "train")]
    /// Train the VQ tokenizer of the shipped model (resumes from `OUT/vq.safetensors`).
    TrainVq {
        #[arg(long, default_value = "runs/shipped")]
        out: PathBuf,
        #[command(flatten)]
        opts: TrainArgs,
    },
    #[cfg(feature = "train")]
    /// Train the ARPG transformer of the shipped model on the tokens of a trained VQ (resumes
    /// from `OUT/arpg.safetensors`).
    Train {
        #[arg(long, default_value = "runs/shipped")]
        out: PathBuf,
        /// The trained tokenizer (default: `OUT/vq.safetensors`).
        #[arg(long)]
        vq: Option<PathBuf>,
        #[command(flatten)]
        opts: TrainArgs,
    },
    #[cfg(feature = "train")]
    /// Evaluate a model trained on the procedural dataset (the shipped one by default).
    Eval {
        #[command(flatten)]
        eval: crate::evaluate::EvalArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampler: SamplerArgs,
    },
    /// Benchmark the sampler (random weights) and print a table.
    Bench {
        /// Presets: L, XL, XXL, shipped.
        #[arg(long, value_delimiter = ',', default_value = "L")]
        preset: Vec<String>,
        /// Compute dtypes: f32, f16, bf16.
        #[arg(long, value_delimiter = ',', default_value = "f32")]
        dtype: Vec<String>,
        #[arg(long, default_value_t = 64)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        /// Instead: write a random checkpoint of the first preset (or `vq-16`: a VQ-16-shaped
        /// tokenizer) to this `.safetensors` file.
        #[arg(long)]
        write_random: Option<PathBuf>,
        /// Instead: load this checkpoint (in the first --dtype) and report load time and peak
        /// memory (with --json: `load_s`, `peak_rss_mib` on the last line).
        #[arg(long)]
        load: Option<PathBuf>,
        /// Instead: the tokenizer's encode/decode seconds and peak memory by image size (the
        /// shipped tokenizer and a VQ-16-shaped one with random weights; one process per row).
        #[arg(long)]
        scale: bool,
        /// One row of `--scale` (`shipped|vq-16:WxH`), printed as JSON.
        #[arg(long, hide = true)]
        scale_row: Option<String>,
        /// One configuration, for scripts: arpg-l, arpg-xl, arpg-xxl or shipped (with --json);
        /// vq-16: the tokenizer's encode and decode of one 256x256 image.
        #[arg(long)]
        model: Option<String>,
        /// Images per batch (with --model).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// cpu, cuda[:N], metal[:N] or wgpu[:N] (with --model: the transformer there, and on
        /// wgpu the decoder too, their set-up untimed); with --model vq-16, cpu or wgpu[:N].
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Quantized linear layers: q8_0 or q4k (with --model; candle's quantized matmul).
        #[arg(long)]
        quant: Option<String>,
        /// Instead: time the app's worker headless (load until Generate is possible, first
        /// step, image) against the same run through the core, for --gpt/--vq (default: the
        /// shipped model) and --steps.
        #[arg(long)]
        app: bool,
        /// The transformer for --app (default: the shipped one).
        #[arg(long, requires = "app")]
        gpt: Option<PathBuf>,
        /// The tokenizer for --app (default: the shipped one).
        #[arg(long, requires = "app")]
        vq: Option<PathBuf>,
        /// Print one JSON object on the last line (with --model): seconds_per_image,
        /// images_per_s, step_ms_median, peak_rss_mib, floor_s, kernel.
        #[arg(long)]
        json: bool,
    },
    /// Check this implementation against a reference fixture directory.
    CheckReference {
        /// Directory with `manifest.json`, `cases.safetensors` and the weights.
        dir: PathBuf,
        /// Load the `.safetensors` weights instead of the `.pt` files.
        #[arg(long)]
        safetensors: bool,
        /// Device: cpu, cuda[:N], metal[:N] or wgpu[:N] (the transformer and decode cases on
        /// that GPU; the encoder's on the CPU).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// Ends a command that wrote `out`: a GPU fault met on the way (the CPU took over) is said, then
/// the output's name.
fn done(models: &ModelPair, out: &std::path::Path, quiet: bool) -> Result<ExitCode> {
    gpu_fault(models);
    if !quiet {
        outln!("wrote {}", out.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Says once why the GPU decoder stopped, if it did (decoding went on on the CPU).
fn gpu_fault(models: &ModelPair) {
    if let Some(fault) = models.vq.take_fault() {
        errln!("warning: {fault}");
    }
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    // Images are written as PNG (the only format that carries the tokens): say so before any
    // work rather than write PNG bytes under another extension.
    match &cli.command {
        Command::Generate { out, .. }
        | Command::Inpaint { out, .. }
        | Command::Outpaint { out, .. }
        | Command::Expand { out, .. }
        | Command::Decode { out, .. } => png_output(out)?,
        _ => {}
    }
    match cli.command {
        Command::Generate {
            class,
            from,
            batch,
            out,
            model,
            sampler,
        } => {
            let models = model.load()?;
            if let Some(from) = from {
                let class = class.map(|c| models.class(&c)).transpose()?;
                commands::regenerate(&models, &from, class, &out, model.quiet)?;
                return done(&models, &out, model.quiet);
            }
            let class = models.class(class.as_deref().unwrap_or("0"))?;
            let written = commands::generate(&models, class, batch, &sampler, &out, model.quiet)?;
            gpu_fault(&models);
            for path in written {
                if !model.quiet {
                    outln!("wrote {}", path.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inpaint {
            image,
            mask,
            class,
            out,
            mask_opts,
            model,
            sampler,
        } => {
            let models = model.load()?;
            let class = class.map(|c| models.class(&c)).transpose()?;
            commands::inpaint(
                &models,
                &image,
                mask.as_deref(),
                class,
                &sampler,
                &mask_opts,
                &out,
                model.quiet,
            )?;
            done(&models, &out, model.quiet)
        }
        Command::Outpaint {
            image,
            left,
            right,
            top,
            bottom,
            class,
            out,
            model,
            sampler,
        } => {
            let models = model.load()?;
            let class = class.map(|c| models.class(&c)).transpose()?;
            commands::outpaint(
                &models,
                &image,
                [left, right, top, bottom],
                class,
                &sampler,
                &out,
                model.quiet,
            )?;
            done(&models, &out, model.quiet)
        }
        Command::Expand {
            image,
            class,
            out,
            model,
            sampler,
        } => {
            let models = model.load()?;
            let class = class.map(|c| models.class(&c)).transpose()?;
            commands::expand(&models, &image, class, &sampler, &out, model.quiet)?;
            done(&models, &out, model.quiet)
        }
        Command::Encode { image, out, model } => {
            let models = model.load()?;
            commands::encode(&models, &image, &out)?;
            done(&models, &out, model.quiet)
        }
        Command::Decode { tokens, out, model } => {
            let models = model.load()?;
            commands::decode(&models, &tokens, &out)?;
            done(&models, &out, model.quiet)
        }
        Command::Fetch {
            names,
            all,
            offline,
            quiet,
        } => {
            for path in arpg_app::hub::fetch_cli(&names, all, offline, quiet)? {
                outln!("{}", path.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info {
            file,
            config,
            devices,
        } => match file {
            Some(file) if !devices => info(&file, config.as_deref()),
            _ => inspect::devices(),
        },
        Command::Convert {
            input,
            out,
            dtype,
            quant,
        } => match quant {
            Some(q) => convert_quantized(&input, &out, &q),
            None => convert(&input, &out, &dtype),
        },
        Command::Dataset {
            out,
            per_class,
            seed,
            size,
            sheet,
        } => export_dataset(&out, per_class, seed, size, sheet.as_deref()),
        #[cfg(feature = "train")]
        Command::TrainVq { out, opts } => train_vq(&out, &opts),
        #[cfg(feature = "train")]
        Command::Train { out, vq, opts } => train_arpg(&out, vq.as_deref(), &opts),
        #[cfg(feature = "train")]
        Command::Eval {
            eval,
            model,
            sampler,
        } => {
            crate::evaluate::run(&model.load()?, &eval, &sampler)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            preset,
            dtype,
            steps,
            repeats,
            write_random,
            load,
            scale,
            scale_row,
            model,
            batch,
            device,
            quant,
            json,
            app,
            gpt,
            vq,
        } => {
            if app {
                return bench_app(gpt, vq, &dtype, &device, steps, json);
            }
            if model.as_deref() == Some("vq-16") {
                crate::bench::tokenizer_one(
                    dtype.first().map_or("f32", String::as_str),
                    &device,
                    json,
                )?;
            } else if let Some(path) = load {
                let d = arpg_core::pair::dtype(dtype.first().map_or("f32", String::as_str))?;
                crate::bench::load(&path, d, json)?;
            } else if let Some(model) = model {
                let one = crate::bench::One {
                    model: &model,
                    batch,
                    steps,
                    dtype: dtype.first().map_or("f32", String::as_str),
                    device: &device,
                    quant: quant.as_deref(),
                    repeats,
                };
                crate::bench::one(&one, json)?;
            } else if json {
                anyhow::bail!(
                    "--json needs --model (arpg-l, arpg-xl, arpg-xxl, shipped or vq-16) or --load"
                );
            } else if let Some(spec) = scale_row {
                crate::bench::scale_row(&spec)?;
            } else if scale {
                crate::bench::scale_table()?;
            } else if let Some(out) = write_random {
                crate::bench::write_random(&preset[0], &out)?;
            } else {
                crate::bench::run(&preset, &dtype, steps, repeats)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckReference {
            dir,
            safetensors,
            device,
        } => check_reference(&dir, safetensors, &device),
    }
}

/// Checks that an image output is named `.png`.
fn png_output(out: &std::path::Path) -> Result<()> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if ext.as_deref() != Some("png") {
        anyhow::bail!(
            "{}: images are written as PNG (the format that carries their tokens and settings): \
             name the output `.png`",
            out.display()
        );
    }
    Ok(())
}

/// `arpg bench --app`: the app's worker measured headless (see `arpg_app::studio::measure`).
#[cfg(feature = "studio")]
fn bench_app(
    gpt: Option<PathBuf>,
    vq: Option<PathBuf>,
    dtype: &[String],
    device: &str,
    steps: usize,
    json: bool,
) -> Result<ExitCode> {
    let spec = arpg_core::pair::ModelSpec {
        gpt,
        vq,
        device: device.to_string(),
        dtype: dtype.first().cloned().unwrap_or_else(|| "f32".into()),
        ..arpg_core::pair::ModelSpec::shipped()
    };
    let t = arpg_app::studio::measure::measure(spec, steps)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "load_s": t.load_s,
                "first_step_s": t.first_step_s,
                "image_s": t.image_s,
                "direct_s": t.direct_s,
                "app_over_direct": t.image_s / t.direct_s,
                "live_decode": t.live_decode,
            })
        )?;
    } else {
        outln!("| load until Generate (s) | first step (s) | image in the app (s) | same run direct (s) | app / direct | live decode |")?;
        outln!("|---|---|---|---|---|---|")?;
        outln!(
            "| {:.2} | {:.3} | {:.2} | {:.2} | {:.2} | {} |",
            t.load_s,
            t.first_step_s,
            t.image_s,
            t.direct_s,
            t.image_s / t.direct_s,
            t.live_decode
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Without the app there is no worker to measure.
#[cfg(not(feature = "studio"))]
fn bench_app(
    _gpt: Option<PathBuf>,
    _vq: Option<PathBuf>,
    _dtype: &[String],
    _device: &str,
    _steps: usize,
    _json: bool,
) -> Result<ExitCode> {
    anyhow::bail!(
        "this build has no app (built without the `studio` feature): --app is not available"
    )
}
