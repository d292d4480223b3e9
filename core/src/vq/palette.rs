//! The per-code preview palette: each codebook entry decoded once on its own into a small RGB
//! patch. Any partial token grid then renders instantly by pasting patches, which is what the live
//! viewer shows after every step instead of running the VQ decoder.

use candle_core::Tensor;

use super::{to_rgb8, VqModel};
use crate::error::{Error, Result};

/// One `patch x patch` RGB8 tile per code.
#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    pub patch: usize,
    /// `codes * patch * patch * 3` bytes, code-major.
    pub tiles: Vec<u8>,
}

const MAGIC: &[u8; 8] = b"ARPGPAL1";

impl Palette {
    /// Decodes every code as a 1x1 latent, `batch` codes at a time.
    pub fn compute(vq: &VqModel, batch: usize) -> Result<Self> {
        Self::compute_with(vq, batch, false, &mut |_, _| true)?
            .ok_or_else(|| Error::Internal("palette computation stopped".into()))
    }

    /// Decodes every code in the middle of a 3x3 latent of itself, `batch` codes at a time, and
    /// keeps the middle tile: the code as it looks among similar codes (a sky among sky), not
    /// alone, where the decoder's edge handling shifts its colours.
    pub fn compute_in_context(vq: &VqModel, batch: usize) -> Result<Self> {
        Self::compute_with(vq, batch, true, &mut |_, _| true)?
            .ok_or_else(|| Error::Internal("palette computation stopped".into()))
    }

    /// [`Palette::compute`] (or [`Palette::compute_in_context`] when `in_context`), calling
    /// `go(done, total)` (codes) before each batch; `Ok(None)` when it returns `false` (stopped:
    /// the app computes large palettes in the background and drops them when the model changes).
    pub fn compute_with(
        vq: &VqModel,
        batch: usize,
        in_context: bool,
        go: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Option<Self>> {
        Self::decode_uniform(vq, batch, if in_context { 3 } else { 1 }, go)
    }

    /// Each code decoded as a `side x side` latent of itself; its middle tile kept.
    fn decode_uniform(
        vq: &VqModel,
        batch: usize,
        side: usize,
        go: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Option<Self>> {
        let codes = vq.config().codebook_size;
        let p = vq.config().downsample();
        let (cells, w, mid) = (side * side, side * p, side / 2 * p);
        let mut tiles = Vec::with_capacity(codes * p * p * 3);
        let mut start = 0;
        while start < codes {
            if !go(start, codes) {
                return Ok(None);
            }
            let n = batch.max(1).min(codes - start);
            let ids: Vec<u32> = (start as u32..(start + n) as u32)
                .flat_map(|c| std::iter::repeat_n(c, cells))
                .collect();
            let ids = Tensor::from_vec(ids, (n, cells), vq.device())?;
            for rgb in to_rgb8(&vq.decode(&ids, (side, side))?)? {
                for y in mid..mid + p {
                    tiles.extend_from_slice(&rgb[(y * w + mid) * 3..(y * w + mid + p) * 3]);
                }
            }
            start += n;
        }
        Ok(Some(Self { patch: p, tiles }))
    }

    pub fn codes(&self) -> usize {
        self.tiles.len() / (self.patch * self.patch * 3)
    }

    /// The tile of `code`.
    pub fn tile(&self, code: u32) -> &[u8] {
        let size = self.patch * self.patch * 3;
        let start = (code as usize).min(self.codes().saturating_sub(1)) * size;
        &self.tiles[start..start + size]
    }

    /// Mean colour of `code`'s tile.
    pub fn mean(&self, code: u32) -> [u8; 3] {
        let t = self.tile(code);
        let n = (t.len() / 3) as u32;
        let mut s = [0u32; 3];
        for px in t.chunks_exact(3) {
            for k in 0..3 {
                s[k] += px[k] as u32;
            }
        }
        s.map(|v| (v / n.max(1)) as u8)
    }

    /// Renders a grid (`None` cells drawn as a quiet grey check) as interleaved RGB8 of
    /// `(rows * patch) x (cols * patch)` pixels.
    pub fn render(&self, cells: &[Option<u32>], rows: usize, cols: usize) -> Vec<u8> {
        let p = self.patch;
        let width = cols * p;
        let mut out = vec![0u8; rows * p * width * 3];
        for r in 0..rows {
            for c in 0..cols {
                for y in 0..p {
                    let row = &mut out[((r * p + y) * width + c * p) * 3
                        ..((r * p + y) * width + (c + 1) * p) * 3];
                    match cells.get(r * cols + c).copied().flatten() {
                        Some(code) => {
                            row.copy_from_slice(&self.tile(code)[y * p * 3..(y + 1) * p * 3])
                        }
                        None => {
                            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                                let v = if ((x + y) / 2) % 2 == 0 { 70 } else { 90 };
                                px.copy_from_slice(&[v, v, v]);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Serialises for the on-disk cache.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&(self.patch as u32).to_le_bytes());
        v.extend_from_slice(&self.tiles);
        v
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::InvalidRequest("not a palette cache file".into());
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad());
        }
        let patch = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let tiles = bytes[12..].to_vec();
        if patch == 0 || tiles.is_empty() || !tiles.len().is_multiple_of(patch * patch * 3) {
            return Err(bad());
        }
        Ok(Self { patch, tiles })
    }
}
