//! Images on disk. PNGs written by ARPG Studio carry a `tEXt` chunk with keyword `arpg` holding
//! JSON: the token grid (the document's source of truth), the class and the sampler settings.
//! Reading such a PNG back returns its exact tokens, so repeated edits never re-encode pixels.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Keyword of the metadata chunk.
pub const KEYWORD: &str = "arpg";

/// The JSON stored in a PNG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// `[rows, cols]` of the token grid.
    pub grid: [usize; 2],
    /// Raster-order tokens.
    pub tokens: Vec<u32>,
    #[serde(default)]
    pub class: Option<usize>,
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Pixels per token side.
    #[serde(default)]
    pub patch: usize,
    #[serde(default)]
    pub model: String,
}

impl Metadata {
    /// The metadata of a finished canvas (every cell decided).
    pub fn new(
        canvas: &arpg_core::tasks::TokenCanvas,
        class: Option<usize>,
        settings: &arpg_core::generator::Settings,
        patch: usize,
        model: &str,
    ) -> Result<Self> {
        Ok(Self {
            grid: [canvas.rows, canvas.cols],
            tokens: canvas.tokens()?,
            class,
            settings: serde_json::to_value(settings)?,
            patch,
            model: model.to_string(),
        })
    }
}

/// Copies a `w x h` RGB8 image into `dst` (row width `dst_width` pixels) at pixel `(x0, y0)`.
pub fn paste(
    dst: &mut [u8],
    dst_width: usize,
    src: &[u8],
    w: usize,
    h: usize,
    x0: usize,
    y0: usize,
) {
    for y in 0..h {
        let d = ((y0 + y) * dst_width + x0) * 3;
        dst[d..d + w * 3].copy_from_slice(&src[y * w * 3..(y + 1) * w * 3]);
    }
}

/// An RGB8 image, optionally with ARPG metadata.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub metadata: Option<Metadata>,
}

/// Reads any supported image; PNG text chunks are searched for ARPG metadata.
pub fn read(path: &Path) -> Result<Picture> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let img = image::load_from_memory(&bytes)
        .with_context(|| {
            format!(
                "{} is not an image this build can read (PNG or JPEG)",
                path.display()
            )
        })?
        .to_rgb8();
    let metadata = if bytes.starts_with(b"\x89PNG") {
        read_metadata(&bytes)
    } else {
        None
    };
    Ok(Picture {
        width: img.width() as usize,
        height: img.height() as usize,
        rgb: img.into_raw(),
        metadata,
    })
}

fn read_metadata(bytes: &[u8]) -> Option<Metadata> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == KEYWORD)
        .map(|t| t.text.clone())
        .or_else(|| {
            info.compressed_latin1_text
                .iter()
                .find(|t| t.keyword == KEYWORD)
                .and_then(|t| t.get_text().ok())
        })?;
    let meta: Metadata = serde_json::from_str(&text).ok()?;
    (meta.tokens.len() == meta.grid[0] * meta.grid[1]).then_some(meta)
}

/// Writes an RGB8 PNG with optional metadata.
pub fn write(
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
    metadata: Option<&Metadata>,
) -> Result<()> {
    if rgb.len() != width * height * 3 {
        bail!("internal: {} bytes for a {width}x{height} image", rgb.len());
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    if let Some(m) = metadata {
        // Plain tEXt: every PNG reader lists it (the JSON is ASCII, a few KB at most).
        enc.add_text_chunk(KEYWORD.to_string(), serde_json::to_string(m)?)?;
    }
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

/// Reads a mask image as one byte per pixel (luma; white = regenerate).
pub fn read_mask(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let img = image::open(path)
        .with_context(|| {
            format!(
                "{} is not an image this build can read (PNG or JPEG)",
                path.display()
            )
        })?
        .to_luma8();
    Ok((img.width() as usize, img.height() as usize, img.into_raw()))
}

/// Centre crop of an RGB8 image to `w x h`.
pub fn crop(rgb: &[u8], width: usize, x0: usize, y0: usize, w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 3);
    for y in y0..y0 + h {
        out.extend_from_slice(&rgb[(y * width + x0) * 3..(y * width + x0 + w) * 3]);
    }
    out
}
