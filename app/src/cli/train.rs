//! `train-vq`, `train` and `dataset`: the shipped model's training runs and its dataset.

use anyhow::{bail, Context, Result};
use arpg_app::outln;
use arpg_core::loader;
use std::path::PathBuf;
use std::process::ExitCode;

/// Optimisation flags of both training stages.
#[cfg(feature = "train")]
#[derive(clap::Args, Debug)]
pub(super) struct TrainArgs {
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
pub(super) fn train_progress(
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
pub(super) fn train_vq(out: &std::path::Path, args: &TrainArgs) -> Result<ExitCode> {
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
pub(super) fn train_arpg(
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
