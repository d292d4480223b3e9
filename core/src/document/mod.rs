//! Images on disk: the one import path for pictures and masks, and the `arpg` PNG metadata.
//!
//! Every image the CLI, the app and the tests read goes through [`import_image`] /
//! [`import_mask`] (or their in-memory forms [`decode_image`] / [`decode_mask`]):
//! - the declared size is checked against [`MAX_SIDE`] and [`MAX_PIXELS`] *before* any pixel
//!   buffer is allocated, and the decoder runs under byte limits;
//! - EXIF orientation is applied, so images are processed as viewers show them;
//! - a mask whose alpha channel varies is read from its alpha (opaque = regenerate), a wholly
//!   transparent mask is empty; otherwise its grey level is the mask (white = regenerate).
//!
//! PNGs written by ARPG Studio carry a text chunk with keyword `arpg` holding JSON ([`Metadata`]):
//! the token grid (the document's source of truth), the class, the sampler settings and a SHA-256
//! digest of the pixels it describes. It is found in `tEXt`, `zTXt` or `iTXt` chunks, before or
//! after the image data (image tools move and compress it). When the pixels no longer match the
//! digest (edited elsewhere) the metadata is reported stale and its tokens are not used.
//!
//! Outputs are written to a temporary file beside the target and renamed over it, so a failed
//! write never leaves a truncated file where the output was asked for.

use std::io::Cursor;
use std::path::Path;

use crate::error::{Error, Result};

mod metadata;
mod write;

pub use metadata::{pixel_digest, read_metadata, Metadata, MetadataState, KEYWORD};
pub use write::{regular_output, write_atomic, write_image, write_png};

/// Largest image side (pixels) this build opens or writes.
pub const MAX_SIDE: usize = 8192;
/// Largest image area (pixels) this build opens or writes: 40 megapixels.
pub const MAX_PIXELS: usize = 40_000_000;
/// Largest image file read into memory (bytes).
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// An RGB8 image, optionally with ARPG metadata.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB8, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// The `arpg` chunk when one was readable (also when stale: its class and settings stay
    /// meaningful; only its tokens are not).
    pub metadata: Option<Metadata>,
    pub metadata_state: MetadataState,
    /// Where the file's pixels were transparent (`None`: opaque everywhere). Their colour is
    /// replaced by the background they were composited over.
    pub transparency: Option<Transparency>,
}

/// The background transparent pixels are composited over unless the user chooses another:
/// white, as image viewers and canvas apps show transparency on export.
pub const DEFAULT_BACKGROUND: [u8; 3] = [255, 255, 255];

/// The transparent part of an imported image. A colour hidden under transparent pixels (a
/// cut-out, an object erased in an editor) is never shown: every pixel is composited over
/// `background`, and the wholly transparent ones are the area to fill when no mask is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transparency {
    /// One byte per pixel: 255 where the pixel was wholly transparent (alpha 0), else 0.
    pub clear: Vec<u8>,
    /// Pixels with alpha 0.
    pub clear_pixels: usize,
    /// Pixels with alpha strictly between 0 and 255.
    pub partial_pixels: usize,
    /// The colour they were composited over (RGB8).
    pub background: [u8; 3],
}

impl Transparency {
    /// The line said to the user when such an image is opened.
    pub fn notice(&self) -> String {
        let [r, g, b] = self.background;
        let mut s = format!(
            "the image has transparent pixels ({} wholly, {} partly): they are shown over \
             #{r:02x}{g:02x}{b:02x}",
            self.clear_pixels, self.partial_pixels
        );
        if self.clear_pixels > 0 {
            s.push_str(
                "; the wholly transparent area is what inpainting fills when no mask is given",
            );
        }
        s
    }
}

/// Parses a background colour: `RRGGBB` hex (with or without `#`), `white` or `black`.
pub fn parse_color(text: &str) -> std::result::Result<[u8; 3], String> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "white" => return Ok([255, 255, 255]),
        "black" => return Ok([0, 0, 0]),
        _ => {}
    }
    let hex = t.strip_prefix('#').unwrap_or(t);
    let channel = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    match (hex.len(), channel(0), channel(2), channel(4)) {
        (6, Some(r), Some(g), Some(b)) => Ok([r, g, b]),
        _ => Err(format!(
            "`{text}` is not a colour: give RRGGBB in hex (e.g. ffffff), white or black"
        )),
    }
}

/// Composites RGBA8 pixels over `background`; `None` when every pixel is opaque.
fn flatten_alpha(rgba: &[u8], background: [u8; 3]) -> (Vec<u8>, Option<Transparency>) {
    let n = rgba.len() / 4;
    let mut rgb = Vec::with_capacity(n * 3);
    let mut clear = vec![0u8; n];
    let (mut clear_pixels, mut partial_pixels) = (0, 0);
    for (i, px) in rgba.chunks_exact(4).enumerate() {
        let a = u32::from(px[3]);
        match a {
            255 => {}
            0 => {
                clear[i] = 255;
                clear_pixels += 1;
            }
            _ => partial_pixels += 1,
        }
        for c in 0..3 {
            // Straight (non-premultiplied) alpha, rounded to nearest.
            let v = u32::from(px[c]) * a + u32::from(background[c]) * (255 - a);
            rgb.push(((v + 127) / 255) as u8);
        }
    }
    let transparency = (clear_pixels + partial_pixels > 0).then_some(Transparency {
        clear,
        clear_pixels,
        partial_pixels,
        background,
    });
    (rgb, transparency)
}

impl Picture {
    /// A line for the user when the metadata is not used as it stands, `None` otherwise.
    pub fn metadata_warning(&self) -> Option<String> {
        match &self.metadata_state {
            MetadataState::Stale => Some(
                "the image was edited after ARPG Studio saved it (its pixels no longer match the \
                 stored tokens): the tokens are encoded again from the pixels"
                    .into(),
            ),
            MetadataState::Invalid(why) => {
                Some(format!("the image's `arpg` metadata is ignored: {why}"))
            }
            _ => None,
        }
    }
}

/// A mask: one byte per pixel, 255 = regenerate, 0 = keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub px: Vec<u8>,
    /// Whether the values came from the alpha channel.
    pub from_alpha: bool,
}

fn image_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Checks a declared image size against the limits, with checked arithmetic.
pub fn check_size(width: usize, height: usize) -> std::result::Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!(
            "the image is {width}x{height} pixels: it holds no pixel"
        ));
    }
    let area = width.checked_mul(height);
    if width > MAX_SIDE || height > MAX_SIDE || area.is_none_or(|a| a > MAX_PIXELS) {
        return Err(format!(
            "the image is {width}x{height} pixels, more than this build handles (at most \
             {MAX_SIDE} px per side and {} megapixels): scale it down first",
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(image_error(
            path,
            format!(
                "the file is {} MiB, more than the {} MiB this build opens",
                meta.len() >> 20,
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Decodes an image with size limits checked before allocation and EXIF orientation applied.
fn decode_dynamic(bytes: &[u8], source: &Path) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let unreadable = |e: image::ImageError| {
        image_error(
            source,
            format!("not an image this build can read (PNG, JPEG or WebP): {e}"),
        )
    };
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(source, e.to_string()))?;
    // The declared size is checked below, by us, so the message can state it; the byte limit
    // guards every allocation the decoder makes.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((MAX_PIXELS as u64) * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => image_error(
            source,
            format!(
                "the image declares a size above the limits (at most {MAX_SIDE} px per side and \
                 {} megapixels): scale it down first",
                MAX_PIXELS / 1_000_000
            ),
        ),
        e => unreadable(e),
    })?;
    let (w, h) = decoder.dimensions();
    check_size(w as usize, h as usize).map_err(|why| image_error(source, why))?;
    // A damaged EXIF block only loses the orientation, as in every viewer.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Reads an image file (PNG, JPEG or WebP) for editing: RGB8 as displayed, with its `arpg`
/// metadata; transparent pixels are composited over [`DEFAULT_BACKGROUND`].
pub fn import_image(path: &Path) -> Result<Picture> {
    import_image_over(path, DEFAULT_BACKGROUND)
}

/// [`import_image`] with transparent pixels composited over `background` (RGB8).
pub fn import_image_over(path: &Path, background: [u8; 3]) -> Result<Picture> {
    let bytes = read_file(path)?;
    decode_image_over(&bytes, path, background)
}

/// [`import_image`] on bytes already in memory; `source` names them in errors.
pub fn decode_image(bytes: &[u8], source: &Path) -> Result<Picture> {
    decode_image_over(bytes, source, DEFAULT_BACKGROUND)
}

/// [`decode_image`] with transparent pixels composited over `background` (RGB8).
pub fn decode_image_over(bytes: &[u8], source: &Path, background: [u8; 3]) -> Result<Picture> {
    let img = decode_dynamic(bytes, source)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (rgb, transparency) = if img.color().has_alpha() {
        flatten_alpha(img.to_rgba8().as_raw(), background)
    } else {
        (img.to_rgb8().into_raw(), None)
    };
    let (metadata, metadata_state) = if bytes.starts_with(b"\x89PNG") {
        match read_metadata(bytes) {
            Ok(None) => (None, MetadataState::Absent),
            Err(why) => (None, MetadataState::Invalid(why)),
            Ok(Some(m)) => {
                let state = check_metadata(&m, width, height, &rgb);
                (Some(m), state)
            }
        }
    } else {
        (None, MetadataState::Absent)
    };
    Ok(Picture {
        width,
        height,
        rgb,
        metadata,
        metadata_state,
        transparency,
    })
}

fn check_metadata(m: &Metadata, width: usize, height: usize, rgb: &[u8]) -> MetadataState {
    if let Err(why) = m.validate() {
        return MetadataState::Invalid(why);
    }
    let p = m.patch;
    let fits = p > 0 && m.grid[0] == height.div_ceil(p) && m.grid[1] == width.div_ceil(p);
    if !fits {
        return MetadataState::Invalid(format!(
            "its {}x{} grid of {p}px tokens does not cover the {width}x{height} image",
            m.grid[0], m.grid[1]
        ));
    }
    match &m.pixels_sha256 {
        Some(d) if *d == pixel_digest(width, height, rgb) => MetadataState::Verified,
        Some(_) => MetadataState::Stale,
        None => MetadataState::Unverified,
    }
}

/// Reads a mask image: alpha when its alpha channel varies (opaque = regenerate; a wholly
/// transparent mask is empty), otherwise its grey level (white = regenerate). EXIF orientation is applied, as for the image.
pub fn import_mask(path: &Path) -> Result<Mask> {
    let bytes = read_file(path)?;
    decode_mask(&bytes, path)
}

/// [`import_mask`] on bytes already in memory.
pub fn decode_mask(bytes: &[u8], source: &Path) -> Result<Mask> {
    let img = decode_dynamic(bytes, source)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if img.color().has_alpha() {
        let alpha: Vec<u8> = img.to_rgba8().pixels().map(|p| p.0[3]).collect();
        let varies = alpha.iter().any(|&a| a != alpha[0]);
        // A wholly transparent layer is one where nothing was painted.
        if varies || alpha[0] == 0 {
            return Ok(Mask {
                width,
                height,
                px: alpha,
                from_alpha: true,
            });
        }
    }
    Ok(Mask {
        width,
        height,
        px: img.to_luma8().into_raw(),
        from_alpha: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_without_overflow() {
        assert!(check_size(0, 10).is_err());
        assert!(check_size(usize::MAX, usize::MAX).is_err());
        assert!(check_size(12000, 12000).is_err());
        assert!(check_size(1000, 700).is_ok());
    }

    #[test]
    fn metadata_validation_catches_bad_grids() {
        let mut m = Metadata {
            grid: [2, 2],
            tokens: vec![1, 2, 3, 4],
            class: None,
            settings: None,
            provenance: None,
            patch: 4,
            model: String::new(),
            tokenizer: None,
            transformer: None,
            size: None,
            pixels_sha256: None,
        };
        assert!(m.validate().is_ok());
        m.grid = [usize::MAX, 2];
        assert!(m.validate().is_err());
        m.grid = [0, 0];
        assert!(m.validate().is_err());
        m.grid = [2, 2];
        m.size = Some([7, 8]);
        assert!(m.validate().is_ok());
        m.size = Some([9, 8]);
        assert!(m.validate().is_err());
    }
}
