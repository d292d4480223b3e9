//! The `arpg` PNG metadata: what it records, how it is found in a PNG (`tEXt`, `zTXt` or
//! `iTXt`, before or after the image data) and the digest of the pixels it describes.

use crate::canvas::TokenCanvas;
use crate::error::Result;
use crate::generator::Settings;
use crate::provenance::Provenance;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Cursor;

use super::{check_size, MAX_PIXELS};

/// Keyword of the metadata chunk.
pub const KEYWORD: &str = "arpg";

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
    /// The identity of the transformer that made the tokens (see
    /// [`crate::loader::transformer_identity`]); `None` when unknown (an encoded photo, an older
    /// PNG).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<String>,
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
            transformer: None,
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
            transformer: None,
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
