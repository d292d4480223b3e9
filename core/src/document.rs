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

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canvas::TokenCanvas;
use crate::error::{Error, Result};
use crate::generator::Settings;
use crate::provenance::Provenance;

/// Keyword of the metadata chunk.
pub const KEYWORD: &str = "arpg";
/// Largest image side (pixels) this build opens or writes.
pub const MAX_SIDE: usize = 8192;
/// Largest image area (pixels) this build opens or writes: 40 megapixels.
pub const MAX_PIXELS: usize = 40_000_000;
/// Largest image file read into memory (bytes).
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// Largest metadata text accepted (bytes, after decompression).
const MAX_TEXT_BYTES: usize = 16 << 20;

/// The JSON stored in a PNG (and written by `arpg encode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// `[rows, cols]` of the token grid.
    pub grid: [usize; 2],
    /// Raster-order tokens.
    pub tokens: Vec<u32>,
    #[serde(default)]
    pub class: Option<usize>,
    /// The sampler settings the image was made with (`None`: unknown, or not made by sampling;
    /// settings this build cannot read are dropped, never an error: the tokens still count).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub settings: Option<Settings>,
    /// How the image was made (task, order, batch place, forks); with `settings`, enough to
    /// regenerate a generated image (see [`crate::provenance::regenerate`]).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub provenance: Option<Provenance>,
    /// Pixels per token side.
    #[serde(default)]
    pub patch: usize,
    #[serde(default)]
    pub model: String,
    /// The identity of the tokenizer whose codes `tokens` are (see
    /// [`crate::vq::VqModel::identity`]): another tokenizer encodes the pixels again instead of
    /// using them. `None` in PNGs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// `[width, height]` of the image the tokens stand for, when it is not a whole number of
    /// tokens (the token grid covers it with less than one token of padding right and bottom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[usize; 2]>,
    /// SHA-256 of the pixels this metadata describes (see [`pixel_digest`]); set when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixels_sha256: Option<String>,
}

/// A field that reads as `None` when it does not parse (a foreign or future shape), so that one
/// unreadable field never costs the tokens.
fn lenient<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

impl Metadata {
    /// The metadata of a finished canvas (every cell decided).
    pub fn new(
        canvas: &TokenCanvas,
        class: Option<usize>,
        settings: Option<&Settings>,
        patch: usize,
        model: &str,
    ) -> Result<Self> {
        Ok(Self {
            grid: [canvas.rows, canvas.cols],
            tokens: canvas.tokens()?,
            class,
            settings: settings.cloned(),
            provenance: None,
            patch,
            model: model.to_string(),
            tokenizer: None,
            size: None,
            pixels_sha256: None,
        })
    }

    /// Metadata with no tokens (a 0x0 grid), to carry a class or settings alone.
    pub fn empty() -> Self {
        Self {
            grid: [0, 0],
            tokens: Vec::new(),
            class: None,
            settings: None,
            provenance: None,
            patch: 0,
            model: String::new(),
            tokenizer: None,
            size: None,
            pixels_sha256: None,
        }
    }

    /// Checks the grid against the tokens with checked arithmetic; the error says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [rows, cols] = self.grid;
        if rows == 0 || cols == 0 {
            return Err(format!(
                "the token grid is {rows}x{cols}: it must hold at least one token"
            ));
        }
        let cells = rows
            .checked_mul(cols)
            .filter(|&n| n <= MAX_PIXELS)
            .ok_or_else(|| {
                format!("the token grid {rows}x{cols} is larger than any image this build handles")
            })?;
        if self.tokens.len() != cells {
            return Err(format!(
                "{} tokens do not fill the {rows}x{cols} grid ({cells} cells)",
                self.tokens.len()
            ));
        }
        if let Some([w, h]) = self.size {
            if self.patch == 0 {
                return Err(format!(
                    "it gives a size ({w}x{h}) but no `patch` (pixels per token) to place it on \
                     the {rows}x{cols} grid"
                ));
            }
            let p = self.patch;
            if w == 0 || h == 0 || w.div_ceil(p) != cols || h.div_ceil(p) != rows {
                return Err(format!(
                    "size {w}x{h} does not fit the {rows}x{cols} grid of {p}px tokens"
                ));
            }
        }
        Ok(())
    }
}

/// What the `arpg` chunk of an opened PNG says about its pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataState {
    /// No `arpg` chunk (or not a PNG).
    Absent,
    /// The chunk's pixel digest matches the pixels: its tokens stand for them exactly.
    Verified,
    /// Written before pixel digests existed: the tokens are plausible but unproven; callers that
    /// hold a tokenizer check them against the pixels before trusting them.
    Unverified,
    /// The pixels were changed after the chunk was written (edited elsewhere): its tokens no
    /// longer describe them.
    Stale,
    /// A chunk is present but unreadable (the reason); it is ignored.
    Invalid(String),
}

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
            "the image has transparent pixels ({} wholly, {} partly): they are shown over              #{r:02x}{g:02x}{b:02x}",
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

/// Finds and parses the `arpg` chunk of a PNG: `tEXt`, `zTXt` or `iTXt`, before or after the
/// image data. `Ok(None)`: no such chunk; `Err`: a chunk (or the PNG) that cannot be read.
pub fn read_metadata(bytes: &[u8]) -> std::result::Result<Option<Metadata>, String> {
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_PIXELS * 8,
        },
    );
    decoder.set_ignore_text_chunk(false);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut text = find_text(reader.info())?;
    if text.is_none() {
        // Chunks after the image data are only seen once the reader has passed it; `finish`
        // skips the image data without decoding it into a buffer of the declared size.
        let (w, h) = (reader.info().width as usize, reader.info().height as usize);
        check_size(w, h)?;
        reader.finish().map_err(|e| e.to_string())?;
        text = find_text(reader.info())?;
    }
    let Some(text) = text else {
        return Ok(None);
    };
    // A byte order mark is not part of the JSON (RFC 8259 lets readers ignore it).
    let json = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let meta: Metadata =
        serde_json::from_str(json).map_err(|e| format!("its JSON is not valid: {e}"))?;
    meta.validate()?;
    Ok(Some(meta))
}

fn find_text(info: &png::Info) -> std::result::Result<Option<String>, String> {
    if let Some(t) = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == KEYWORD)
    {
        return Ok(Some(t.text.clone()));
    }
    if let Some(t) = info
        .compressed_latin1_text
        .iter()
        .find(|t| t.keyword == KEYWORD)
    {
        let mut t = t.clone();
        t.decompress_text_with_limit(MAX_TEXT_BYTES)
            .map_err(|e| format!("its zTXt chunk cannot be decompressed: {e}"))?;
        return t.get_text().map(Some).map_err(|e| e.to_string());
    }
    if let Some(t) = info.utf8_text.iter().find(|t| t.keyword == KEYWORD) {
        let mut t = t.clone();
        t.decompress_text_with_limit(MAX_TEXT_BYTES)
            .map_err(|e| format!("its iTXt chunk cannot be decompressed: {e}"))?;
        return t.get_text().map(Some).map_err(|e| e.to_string());
    }
    Ok(None)
}

/// SHA-256 (hex) of an RGB8 image: width and height as little-endian u32, then the pixels.
pub fn pixel_digest(width: usize, height: usize, rgb: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update((width as u32).to_le_bytes());
    h.update((height as u32).to_le_bytes());
    h.update(rgb);
    format!("{:x}", h.finalize())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, renamed over the
/// target once complete: a failed write leaves no truncated file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".arpg-").suffix(".part");
    // A new file gets the permissions any new file gets (0666 less the umask), not the
    // temporary file's private 0600; a replaced file keeps its own.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
    if let Ok(existing) = std::fs::metadata(path) {
        // Best effort: the content is what matters; a mode we cannot copy stays the default.
        let _ = tmp.as_file().set_permissions(existing.permissions());
    }
    // The temporary file's own name in the message would only confuse: the target is named.
    let plain = |e: std::io::Error| {
        Error::io(
            path,
            e.raw_os_error()
                .map_or_else(|| e.kind().into(), std::io::Error::from_raw_os_error),
        )
    };
    tmp.write_all(bytes).map_err(plain)?;
    tmp.as_file().sync_all().map_err(plain)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes an RGB8 PNG with optional metadata (its pixel digest set to these pixels), atomically.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
    metadata: Option<&Metadata>,
) -> Result<()> {
    check_size(width, height).map_err(|why| image_error(path, why))?;
    if rgb.len() != width * height * 3 {
        return Err(Error::Internal(format!(
            "{} bytes for a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    let mut bytes = Vec::new();
    {
        let png_err = |e: png::EncodingError| image_error(path, e.to_string());
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(m) = metadata {
            let mut m = m.clone();
            m.pixels_sha256 = Some(pixel_digest(width, height, rgb));
            let p = m.patch.max(1);
            let whole = width.div_ceil(p) * p == width && height.div_ceil(p) * p == height;
            m.size = (!whole).then_some([width, height]);
            let json = serde_json::to_string(&m).map_err(|e| Error::Json {
                context: "metadata".into(),
                err: e,
            })?;
            // Plain tEXt: every PNG reader lists it (the JSON is ASCII, a few KB at most).
            enc.add_text_chunk(KEYWORD.to_string(), json)
                .map_err(png_err)?;
        }
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    write_atomic(path, &bytes)
}

/// Writes an RGB8 image in the format its extension names (PNG, JPEG or WebP; PNG when it names
/// none), atomically (see [`write_atomic`]): a full disk is an error, never an empty file.
pub fn write_image(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let format = match image::ImageFormat::from_path(path) {
        Ok(image::ImageFormat::Png) | Err(_) => return write_png(path, width, height, rgb, None),
        Ok(f) => f,
    };
    check_size(width, height).map_err(|why| image_error(path, why))?;
    let img =
        image::RgbImage::from_raw(width as u32, height as u32, rgb.to_vec()).ok_or_else(|| {
            Error::Internal(format!(
                "{} bytes for a {width}x{height} RGB image",
                rgb.len()
            ))
        })?;
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .map_err(|e| image_error(path, e.to_string()))?;
    write_atomic(path, bytes.get_ref())
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
