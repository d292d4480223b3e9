//! 2-D rotary position embedding (`precompute_freqs_cis_2d` and `apply_rotary_emb` in
//! hp-l33/ARPG `models/arpg.py`).
//!
//! Row 0 of the table is the class slot and is all zeros: rotating by it maps a vector to zero, so
//! the class token's query and key are zero vectors (its value is not). Row `1 + y*grid + x` is
//! cell (y, x). Pair `j < head_dim/4` turns by `y * f_j`, pair `head_dim/4 + j` by `x * f_j`, with
//! pairs interleaved as elements (2i, 2i+1) of a head.

use candle_core::{DType, Device, Result, Tensor, D};

/// The cos/sin table, `(1 + grid², head_dim/2)` each, in f32.
#[derive(Debug, Clone)]
pub struct RopeTable {
    cos: Tensor,
    sin: Tensor,
    grid: usize,
}

impl RopeTable {
    /// Mirrors `precompute_freqs_cis_2d(grid_size, head_dim, base, cls_token_num=1)`, computed in
    /// f32 in the reference's operation order.
    pub fn new(grid: usize, head_dim: usize, base: f64, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let quarter = half / 2;
        let freqs: Vec<f32> = (0..quarter)
            .map(|j| 1.0f32 / (base as f32).powf((2 * j) as f32 / half as f32))
            .collect();
        let rows = 1 + grid * grid;
        let mut cos = vec![0f32; rows * half];
        let mut sin = vec![0f32; rows * half];
        for y in 0..grid {
            for x in 0..grid {
                let row = 1 + y * grid + x;
                for (j, f) in freqs.iter().enumerate() {
                    for (pair, t) in [(j, y), (quarter + j, x)] {
                        let angle = t as f32 * f;
                        cos[row * half + pair] = angle.cos();
                        sin[row * half + pair] = angle.sin();
                    }
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (rows, half), device)?,
            sin: Tensor::from_vec(sin, (rows, half), device)?,
            grid,
        })
    }

    /// The cos and sin tables, `(rows, head_dim/2)` f32 each.
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    pub fn grid(&self) -> usize {
        self.grid
    }

    /// Number of rows (class slot + cells).
    pub fn rows(&self) -> usize {
        1 + self.grid * self.grid
    }

    /// cos/sin rows for a `(B, T)` u32 tensor of table rows: `(B, 1, T, head_dim/2)` each, ready to
    /// broadcast over heads.
    pub fn gather(&self, rows: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = rows.dims2()?;
        let flat = rows.flatten_all()?;
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, 1, t, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, 1, t, half))?;
        Ok((cos, sin))
    }
}

/// Mirrors `apply_rotary_emb`: rotates interleaved pairs of `x` `(B, H, T, head_dim)` in f32 and
/// casts back to `x`'s dtype. Built from differentiable ops so training can use it too.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let (b, h, t, d) = x.dims4()?;
    let xs = x.to_dtype(DType::F32)?.reshape((b, h, t, d / 2, 2))?;
    let a = xs.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
    let bb = xs.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
    let y0 = (a.broadcast_mul(cos)? - bb.broadcast_mul(sin)?)?;
    let y1 = (bb.broadcast_mul(cos)? + a.broadcast_mul(sin)?)?;
    Tensor::stack(&[y0, y1], D::Minus1)?
        .reshape((b, h, t, d))?
        .to_dtype(dtype)
}
