//! Argument parsing and the subcommands.

use arpg_app::{errln, outln};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use arpg_core::checkpoint::Checkpoint;
use arpg_core::loader::{self, ModelKind};
use arpg_core::reference::{self, WeightFormat};
use clap::{Parser, Subcommand};

use arpg_app::run::{self, MaskArgs, ModelArgs, SamplerArgs};

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
    /// Print what a checkpoint holds: model, config, parameter count and dtype.
    Info {
        /// An ARPG (`arpg_300m.pt`, ...) or VQ (`vq_ds16_c2i.pt`) checkpoint, `.pt` or `.safetensors`.
        file: PathBuf,
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
        /// Instead: write a random checkpoint of the first preset to this `.safetensors` file.
        #[arg(long)]
        write_random: Option<PathBuf>,
        /// Instead: load this checkpoint and report load time and peak memory.
        #[arg(long)]
        load: Option<PathBuf>,
        /// Instead: the tokenizer's encode/decode seconds and peak memory by image size (the
        /// shipped tokenizer and a VQ-16-shaped one with random weights; one process per row).
        #[arg(long)]
        scale: bool,
        /// One row of `--scale` (`shipped|vq-16:WxH`), printed as JSON.
        #[arg(long, hide = true)]
        scale_row: Option<String>,
        /// One configuration, for scripts: arpg-l, arpg-xl, arpg-xxl or shipped (with --json).
        #[arg(long)]
        model: Option<String>,
        /// Images per batch (with --model).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// cpu, cuda[:N] or metal[:N] (with --model).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Quantized linear layers: q8_0 or q4k (with --model; candle's quantized matmul).
        #[arg(long)]
        quant: Option<String>,
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
        /// Device: cpu, cuda or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// Optimisation flags of both training stages.
#[cfg(feature = "train")]
#[derive(clap::Args, Debug)]
struct TrainArgs {
    #[arg(long, default_value_t = 6000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Model config JSON (default: the shipped model's config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop after this many steps of this invocation (the run can be resumed).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Fine-tune: start from the weights in this `.safetensors` file with a fresh step count and
    /// learning-rate schedule. Same config, or (for `train`) a deeper one of the same width: the
    /// file's blocks spread over each stack and the added blocks start as identities. Ignored
    /// when `OUT` already holds a run to resume.
    #[arg(long)]
    init: Option<PathBuf>,
    /// `train-vq` only: share of tokens decoded among another image's tokens, so that each
    /// code carries its own patch (0 = plain reconstruction, as in the reference).
    #[arg(long, default_value_t = 0.0)]
    mosaic: f64,
    /// `train-vq` only: train the decoder alone; the encoder and codebook keep the `--init`
    /// weights, so every image keeps its tokens (a transformer trained on them stays valid).
    #[arg(long)]
    decoder_only: bool,
    #[arg(long)]
    quiet: bool,
}

#[cfg(feature = "train")]
impl TrainArgs {
    fn options(&self) -> Result<arpg_core::train::TrainOptions> {
        if self.steps == 0
            || self.batch == 0
            || self.checkpoint_every == 0
            || !(self.lr > 0.0 && self.lr < 1.0)
            || !(0.0..1.0).contains(&self.mosaic)
        {
            bail!(
                "--steps, --batch and --checkpoint-every must be positive, --lr within (0, 1) \
                 and --mosaic within [0, 1)"
            );
        }
        if self.decoder_only && self.init.is_none() {
            bail!("--decoder-only fine-tunes a trained tokenizer: give its weights with --init");
        }
        Ok(arpg_core::train::TrainOptions {
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup.min(self.steps - 1),
            weight_decay: self.weight_decay,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            image_size: self.size,
            pool: None,
            init: self.init.clone(),
            mosaic: self.mosaic,
            decoder_only: self.decoder_only,
        })
    }
}

/// A progress bar over training steps that stops after `max_steps` of this invocation.
#[cfg(feature = "train")]
fn train_progress(
    opts: &TrainArgs,
    name: &'static str,
) -> impl FnMut(&arpg_core::train::StepLog) -> bool {
    let bar = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(opts.steps as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(name);
    let mut done = 0usize;
    let max = opts.max_steps.unwrap_or(usize::MAX);
    move |row| {
        done += 1;
        bar.set_position(row.step as u64);
        let terms: Vec<String> = row
            .terms
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        bar.set_message(format!("loss {:.4} {}", row.loss, terms.join(" ")));
        done < max
    }
}

#[cfg(feature = "train")]
fn train_vq(out: &std::path::Path, args: &TrainArgs) -> Result<ExitCode> {
    let cfg = match &args.config {
        Some(p) => loader::config_from_json(p, "vq")?,
        None => arpg_core::shipped::vq_config(),
    };
    let opts = args.options()?;
    arpg_core::train::train_vq(
        &cfg,
        &opts,
        out,
        &candle_core::Device::Cpu,
        &mut train_progress(args, "train-vq"),
    )?;
    outln!("VQ checkpoint in {}", out.display())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "train")]
fn train_arpg(
    out: &std::path::Path,
    vq: Option<&std::path::Path>,
    args: &TrainArgs,
) -> Result<ExitCode> {
    let cfg = match &args.config {
        Some(p) => loader::config_from_json(p, "gpt")?,
        None => arpg_core::shipped::arpg_config(),
    };
    let vq_path = vq
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| out.join("vq.safetensors"));
    let vq = loader::load_vq(&vq_path, None, &candle_core::Device::Cpu)
        .with_context(|| "train the tokenizer first with `arpg train-vq`")?;
    let opts = args.options()?;
    arpg_core::train::train_arpg(
        &cfg,
        &vq,
        &opts,
        out,
        &candle_core::Device::Cpu,
        &mut train_progress(args, "train"),
    )?;
    outln!("ARPG checkpoint in {}", out.display())?;
    Ok(ExitCode::SUCCESS)
}

fn done(out: &std::path::Path, quiet: bool) -> Result<ExitCode> {
    if !quiet {
        outln!("wrote {}", out.display())?;
    }
    Ok(ExitCode::SUCCESS)
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
                run::regenerate(&models, &from, class, &out, model.quiet)?;
                return done(&out, model.quiet);
            }
            let class = models.class(class.as_deref().unwrap_or("0"))?;
            for path in run::generate(&models, class, batch, &sampler, &out, model.quiet)? {
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
            run::inpaint(
                &models,
                &image,
                mask.as_deref(),
                class,
                &sampler,
                &mask_opts,
                &out,
                model.quiet,
            )?;
            done(&out, model.quiet)
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
            run::outpaint(
                &models,
                &image,
                [left, right, top, bottom],
                class,
                &sampler,
                &out,
                model.quiet,
            )?;
            done(&out, model.quiet)
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
            run::expand(&models, &image, class, &sampler, &out, model.quiet)?;
            done(&out, model.quiet)
        }
        Command::Encode { image, out, model } => {
            run::encode(&model.load()?, &image, &out)?;
            done(&out, model.quiet)
        }
        Command::Decode { tokens, out, model } => {
            run::decode(&model.load()?, &tokens, &out)?;
            done(&out, model.quiet)
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
        Command::Info { file, config } => info(&file, config.as_deref()),
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
        } => {
            if let Some(model) = model {
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
                anyhow::bail!("--json needs --model (arpg-l, arpg-xl, arpg-xxl or shipped)");
            } else if let Some(spec) = scale_row {
                crate::bench::scale_row(&spec)?;
            } else if scale {
                crate::bench::scale_table()?;
            } else if let Some(out) = write_random {
                crate::bench::write_random(&preset[0], &out)?;
            } else if let Some(path) = load {
                crate::bench::load(&path, candle_core::DType::F32)?;
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

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn convert_quantized(input: &std::path::Path, out: &std::path::Path, q: &str) -> Result<ExitCode> {
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

fn convert(input: &std::path::Path, out: &std::path::Path, dtype: &str) -> Result<ExitCode> {
    let dtype = arpg_core::pair::dtype(dtype)?;
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "{}: the output must be a `.safetensors` file",
            out.display()
        );
    }
    let ckpt = Checkpoint::open(input)?;
    // Only ARPG or VQ weights are converted; every tensor is read before anything is written.
    loader::detect_kind(&ckpt)?;
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

fn info(file: &std::path::Path, config: Option<&std::path::Path>) -> Result<ExitCode> {
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

fn check_reference(
    dir: &std::path::Path,
    safetensors: bool,
    device_name: &str,
) -> Result<ExitCode> {
    let device = arpg_core::pair::device(device_name)?;
    let format = if safetensors {
        WeightFormat::Safetensors
    } else {
        WeightFormat::Pt
    };
    let results = reference::check_reference(dir, format, &device)
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

fn export_dataset(
    out: &std::path::Path,
    per_class: u64,
    seed: u64,
    size: usize,
    sheet: Option<&std::path::Path>,
) -> Result<ExitCode> {
    use arpg_core::dataset::{render, CLASS_NAMES};
    if !(8..=1024).contains(&size) {
        bail!("--size {size} must be within 8..=1024 pixels");
    }
    let cols = per_class.min(16) as u32;
    let mut grid = image::RgbImage::new(cols * size as u32, CLASS_NAMES.len() as u32 * size as u32);
    for (class, name) in CLASS_NAMES.iter().enumerate() {
        let dir = out.join(format!("{class}_{name}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for i in 0..per_class {
            let rgb = render(class, i, seed, size);
            let img =
                image::RgbImage::from_raw(size as u32, size as u32, rgb).context("image size")?;
            arpg_core::document::write_image(
                &dir.join(format!("{i:05}.png")),
                size,
                size,
                img.as_raw(),
            )?;
            if (i as u32) < cols {
                image::imageops::replace(
                    &mut grid,
                    &img,
                    (i as u32 * size as u32) as i64,
                    (class * size) as i64,
                );
            }
        }
    }
    if let Some(sheet) = sheet {
        let (w, h) = (grid.width() as usize, grid.height() as usize);
        arpg_core::document::write_image(sheet, w, h, grid.as_raw())?;
    }
    outln!(
        "wrote {} images to {}",
        per_class * CLASS_NAMES.len() as u64,
        out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
