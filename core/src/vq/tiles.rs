//! Encoding and decoding large canvases in overlapping tiles. The tokenizer's convolutions see a
//! few latent cells around each output, but its mid-block attention sees the whole image, so its
//! time grows with the square of the area. Above [`Tiling::threshold`] latent cells, the canvas
//! is cut into tiles of [`Tiling::tile`] cells per side overlapping by [`Tiling::overlap`]:
//! decoded tiles are blended with linear ramps across each overlap, and each token is taken from
//! the tile whose centre is nearest. Attention then spans one tile, so the result differs from
//! the whole-canvas pass slightly (tested: `tests/tiles.rs`) and time grows linearly with area.

use candle_core::{Result, Tensor};

use super::{from_rgb8, to_rgb8, VqModel};

/// How a canvas is cut into tiles (sizes in latent cells, one per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Cells per tile side.
    pub tile: usize,
    /// Cells shared by neighbouring tiles.
    pub overlap: usize,
    /// Canvases with at most this many cells are processed whole.
    pub threshold: usize,
}

impl Default for Tiling {
    /// Tiles of 64 cells with 16 shared; canvases up to 96x96 cells whole (for VQ-16, 1536 px).
    fn default() -> Self {
        Self {
            tile: 64,
            overlap: 16,
            threshold: 96 * 96,
        }
    }
}

impl Tiling {
    /// The tiles' first cells along an axis of `len` cells: evenly spread, every cell covered,
    /// neighbours sharing at least `overlap` cells.
    pub fn starts(&self, len: usize) -> Vec<usize> {
        if len <= self.tile {
            return vec![0];
        }
        let step = self.tile.saturating_sub(self.overlap).max(1);
        let n = (len - self.tile).div_ceil(step) + 1;
        // Spread the tiles evenly from 0 to len - tile.
        (0..n).map(|i| i * (len - self.tile) / (n - 1)).collect()
    }

    /// Whether a `rows x cols` canvas is tiled.
    pub fn applies(&self, rows: usize, cols: usize) -> bool {
        rows * cols > self.threshold && (rows > self.tile || cols > self.tile)
    }
}

/// For each cell along an axis, the tile (index into `starts`) whose centre is nearest.
fn owners(starts: &[usize], tile: usize, len: usize) -> Vec<usize> {
    (0..len)
        .map(|x| {
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (j, &s) in starts.iter().enumerate() {
                if x >= s && x < s + tile {
                    let d = (x as f64 + 0.5 - (s as f64 + tile as f64 / 2.0)).abs();
                    if d < best_d {
                        best_d = d;
                        best = j;
                    }
                }
            }
            best
        })
        .collect()
}

/// Blend weight of pixel `x` of a tile starting at pixel `s` of `len` pixels along an axis whose
/// canvas has `total` pixels: 1 inside, ramping down across `ramp` pixels towards an edge shared
/// with a neighbour (canvas edges keep weight 1).
fn weight(x: usize, s: usize, len: usize, total: usize, ramp: usize) -> f32 {
    let mut w = 1.0f32;
    if ramp > 0 {
        if s > 0 {
            w = w.min((x as f32 + 0.5) / ramp as f32);
        }
        if s + len < total {
            w = w.min((len - x) as f32 / ramp as f32 - 0.5 / ramp as f32);
        }
    }
    w.clamp(1e-3, 1.0)
}

impl VqModel {
    /// Tokens `rows x cols` (raster order) → RGB8 pixels `cols·p x rows·p`, in tiles when the
    /// canvas is above the tiling threshold (see the module docs).
    pub fn decode_rgb8(
        &self,
        tokens: &[u32],
        rows: usize,
        cols: usize,
        t: Tiling,
    ) -> Result<Vec<u8>> {
        if tokens.len() != rows * cols {
            candle_core::bail!("{} tokens do not fill a {rows}x{cols} grid", tokens.len());
        }
        let whole = |tokens: Vec<u32>, r: usize, c: usize| -> Result<Vec<u8>> {
            let ids = Tensor::from_vec(tokens, (1, r * c), self.device())?;
            Ok(to_rgb8(&self.decode(&ids, (r, c))?)?.remove(0))
        };
        decode_tiled(tokens, rows, cols, self.config().downsample(), t, whole)
    }

    /// RGB8 pixels `width x height` (whole tokens) → tokens, raster order, in tiles when the
    /// canvas is above the tiling threshold: each token comes from the tile whose centre is
    /// nearest (see the module docs).
    pub fn encode_rgb8(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        t: Tiling,
    ) -> Result<Vec<u32>> {
        let p = self.config().downsample();
        if !width.is_multiple_of(p) || !height.is_multiple_of(p) || rgb.len() != width * height * 3
        {
            candle_core::bail!("a {width}x{height} RGB image of whole {p}px tokens is needed");
        }
        let (rows, cols) = (height / p, width / p);
        let whole = |px: &[u8], w: usize, h: usize| -> Result<Vec<u32>> {
            let image = from_rgb8(px, h, w, self.device())?;
            self.encode(&image)?.flatten_all()?.to_vec1()
        };
        if !t.applies(rows, cols) {
            return whole(rgb, width, height);
        }
        let (tr, tc) = (t.tile.min(rows), t.tile.min(cols));
        let (rs, cs) = (t.starts(rows), t.starts(cols));
        let (own_r, own_c) = (owners(&rs, tr, rows), owners(&cs, tc, cols));
        let mut tokens = vec![0u32; rows * cols];
        for (i, &r0) in rs.iter().enumerate() {
            for (j, &c0) in cs.iter().enumerate() {
                let crop = crate::pixels::crop(rgb, width, 3, (c0 * p, r0 * p), (tc * p, tr * p));
                let sub = whole(&crop, tc * p, tr * p)?;
                for r in r0..r0 + tr {
                    for c in c0..c0 + tc {
                        if own_r[r] == i && own_c[c] == j {
                            tokens[r * cols + c] = sub[(r - r0) * tc + c - c0];
                        }
                    }
                }
            }
        }
        Ok(tokens)
    }
}

/// Tokens `rows x cols` → RGB8 `cols·p x rows·p` through `whole` (one engine's decode of a
/// grid no larger than a tile): whole when `t` does not apply, else tile by tile, blended with
/// linear ramps across the overlaps. Every engine's decoder tiles here.
pub(crate) fn decode_tiled<E>(
    tokens: &[u32],
    rows: usize,
    cols: usize,
    p: usize,
    t: Tiling,
    mut whole: impl FnMut(Vec<u32>, usize, usize) -> std::result::Result<Vec<u8>, E>,
) -> std::result::Result<Vec<u8>, E> {
    if !t.applies(rows, cols) {
        return whole(tokens.to_vec(), rows, cols);
    }
    let (w, h) = (cols * p, rows * p);
    let mut sum = vec![0f32; w * h * 3];
    let mut weights = vec![0f32; w * h];
    let ramp = t.overlap * p;
    let (tr, tc) = (t.tile.min(rows), t.tile.min(cols));
    for &r0 in &t.starts(rows) {
        for &c0 in &t.starts(cols) {
            let sub: Vec<u32> = (0..tr * tc)
                .map(|i| tokens[(r0 + i / tc) * cols + c0 + i % tc])
                .collect();
            let px = whole(sub, tr, tc)?;
            let (tw, th) = (tc * p, tr * p);
            for y in 0..th {
                let wy = weight(y, r0 * p, th, h, ramp);
                for x in 0..tw {
                    let wgt = wy * weight(x, c0 * p, tw, w, ramp);
                    let d = (r0 * p + y) * w + c0 * p + x;
                    weights[d] += wgt;
                    for k in 0..3 {
                        sum[d * 3 + k] += wgt * px[(y * tw + x) * 3 + k] as f32;
                    }
                }
            }
        }
    }
    Ok(sum
        .iter()
        .enumerate()
        .map(|(i, &s)| (s / weights[i / 3]).round().clamp(0.0, 255.0) as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_cell_and_share_the_overlap() {
        let t = Tiling {
            tile: 64,
            overlap: 16,
            threshold: 0,
        };
        for len in [64, 65, 100, 112, 113, 300] {
            let s = t.starts(len);
            assert_eq!(s[0], 0);
            assert_eq!(s.last().copied().map(|x| x + 64), Some(len));
            for w in s.windows(2) {
                assert!(w[1] > w[0] && w[0] + 64 >= w[1] + 16, "{len}: {s:?}");
            }
            let own = owners(&s, 64, len);
            assert!(own
                .iter()
                .enumerate()
                .all(|(x, &j)| x >= s[j] && x < s[j] + 64));
        }
        assert_eq!(t.starts(40), vec![0]);
    }
}
