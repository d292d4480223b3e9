//! `dataset`: the shipped model's procedural dataset as PNG files and a contact sheet.

use anyhow::{bail, Context, Result};
use arpg_app::outln;
use std::process::ExitCode;

pub(super) fn export_dataset(
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
