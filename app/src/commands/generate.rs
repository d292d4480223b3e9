//! `generate` (a batch, or again from a PNG's metadata) and writing a finished canvas as a PNG.

use crate::errln;
use anyhow::{bail, Context, Result};
use arpg_core::canvas::TokenCanvas;
use arpg_core::document;
use arpg_core::generator::Settings;
use arpg_core::order::Order;
use arpg_core::pair::ModelPair;
use arpg_core::pixels;
use arpg_core::provenance::Task;
use arpg_core::provenance::{self, Provenance};
use arpg_core::run::{Made, Run};
use std::path::{Path, PathBuf};

use super::args::SamplerArgs;

/// Writes a finished canvas as a PNG with its metadata, decoding it unless its pixels are
/// given, cropped to `size` (`[width, height]`, at most the canvas's pixels) when given;
/// `transformer`: the identity of the transformer that made its tokens, when one did.
#[allow(clippy::too_many_arguments)] // one per metadata field
pub fn save(
    models: &ModelPair,
    path: &Path,
    canvas: &TokenCanvas,
    class: Option<usize>,
    settings: Option<&Settings>,
    provenance: Option<Provenance>,
    rgb: Option<Vec<u8>>,
    size: Option<[usize; 2]>,
    transformer: Option<&str>,
) -> Result<()> {
    let rgb = match rgb {
        Some(rgb) => rgb,
        None => models.decode(canvas)?,
    };
    let p = models.patch();
    let (pw, ph) = (canvas.cols * p, canvas.rows * p);
    let [w, h] = size.unwrap_or([pw, ph]);
    let rgb = if [w, h] == [pw, ph] {
        rgb
    } else {
        pixels::crop(&rgb, pw, 3, (0, 0), (w, h))
    };
    let mut meta = models.metadata(canvas, class, settings)?;
    meta.provenance = provenance;
    meta.transformer = transformer.map(str::to_string);
    document::write_png(path, w, h, &rgb, Some(&meta))?;
    Ok(())
}

pub(super) fn progress(total: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// `generate`: a batch of images of `class` from scratch. Image i is the single image of
/// `image_seed(seed, i)`: its PNG records that seed and its place in the batch.
pub fn generate(
    models: &ModelPair,
    class: usize,
    batch: usize,
    sampler: &SamplerArgs,
    out: &Path,
    quiet: bool,
) -> Result<Vec<PathBuf>> {
    if batch == 0 || batch > 64 {
        bail!("--batch {batch} must be within 1..=64");
    }
    let g = models.grid();
    let settings = sampler.settings(g * g, &models.arpg.sampling)?;
    let run = Run::generate(models, Some(class), settings, sampler.order()?, None, batch)?;
    let mut written = Vec::new();
    for (i, made) in run_to_end(models, run, quiet, "generate")?
        .iter()
        .enumerate()
    {
        let path = if batch == 1 {
            out.to_path_buf()
        } else {
            numbered(out, i)
        };
        made.write_png(models, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// `generate --from PNG`: the image a PNG's metadata describes, generated again (its class,
/// settings, order and forks; `--class` overrides the class).
pub fn regenerate(
    models: &ModelPair,
    from: &Path,
    class: Option<usize>,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let meta = document::read_metadata(&bytes)
        .map_err(|why| anyhow::anyhow!("{}: {why}", from.display()))?
        .with_context(|| format!("{} has no ARPG metadata to regenerate from", from.display()))?;
    let settings = meta.settings.clone().with_context(|| {
        format!(
            "{} records no sampler settings (an encoded photo, or written by another program)",
            from.display()
        )
    })?;
    let prov = meta
        .provenance
        .clone()
        .unwrap_or_else(|| Provenance::new(Task::Generate, Order::Random));
    let class = class.or(meta.class);
    if let Some(made_by) = meta
        .transformer
        .as_deref()
        .filter(|id| *id != models.arpg.identity)
    {
        errln!(
            "warning: {} was made by another transformer ({made_by}; the loaded one is {}): \
             the same settings make another image",
            from.display(),
            models.arpg.identity
        );
    }
    let gen = provenance::regenerate(&models.arpg.model, class, &settings, &prov)?;
    let run = Run::generation(gen, vec![class], prov, models.grid());
    run_to_end(models, run, quiet, "generate")?
        .first()
        .context("the regenerated run made no image")?
        .write_png(models, out)?;
    Ok(())
}

/// The CLI's one loop over a run: steps it with a progress bar over its cells (the window and
/// step in the message), then finishes it.
pub(super) fn run_to_end(
    models: &ModelPair,
    mut run: Run,
    quiet: bool,
    what: &str,
) -> Result<Vec<Made>> {
    let total = run.unknown() as u64;
    let bar = progress(total, quiet, what);
    while let Some(p) = run.step()? {
        bar.set_position(total.saturating_sub(p.remaining as u64));
        let windows = match p.windows {
            Some((first, 1)) => format!("window {} ", first + 1),
            Some((first, n)) => format!("windows {}-{} ", first + 1, first + n),
            None => String::new(),
        };
        bar.set_message(format!("{windows}step {}/{}", p.step + 1, p.total_steps));
    }
    bar.finish_and_clear();
    Ok(run.finish(models)?.0)
}

/// `out.png` → `out_3.png`. Built from the name's bytes (`OsStr`), never lossily: two names
/// that differ only in bytes that are not UTF-8 (a Latin-1 name) keep differing.
fn numbered(path: &Path, i: usize) -> PathBuf {
    let mut name = path
        .file_stem()
        .map_or_else(|| std::ffi::OsString::from("out"), |s| s.to_os_string());
    name.push(format!("_{i}."));
    name.push(path.extension().unwrap_or(std::ffi::OsStr::new("png")));
    path.with_file_name(name)
}
