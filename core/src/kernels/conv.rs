//! 2-D convolution for the VQ tokenizer on the CPU (mirrors `nn.Conv2d` with bias, groups 1,
//! dilation 1): the input is laid out channels-last once, then im2col runs by tiles of output
//! pixels (each pixel's patch one row, `k_h` contiguous copies of `k_w · C` floats) and each tile
//! is multiplied by the weight (permuted to the same order) with the small-M kernels' register
//! tiles. candle's CPU conv rebuilds the flattened weight on every call and writes its
//! patch matrix with a stride of a whole tile per element, which cost more than the products.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::Tier;

/// Output pixels per tile: enough rows to amortise the weight's passes, few enough that a
/// thread's patch matrix stays about 1 MB.
const TILE: usize = 256;

/// The op: `x` `(B, C, H, W)`, `w` `(O, C, KH, KW)`, `bias` `(O,)`, all contiguous f32.
pub(crate) struct Conv2d {
    pub tier: Tier,
    pub padding: usize,
    pub stride: usize,
}

thread_local! {
    /// Each thread's patch matrix, kept between tiles and calls: a fresh one is fresh pages,
    /// and their faults cost as much as filling them.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "arpg-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = xl.shape().dims4()?;
        let (o, wc, kh, kw) = wl.shape().dims4()?;
        let f32s = |s, l| super::f32_operand(s, l, "conv");
        let (x, wt, bias) = (f32s(xs, xl)?, f32s(ws, wl)?, f32s(bs, bl)?);
        let (p, s) = (self.padding, self.stride.max(1));
        if wc != c || bias.len() != o || h + 2 * p < kh || w + 2 * p < kw {
            candle_core::bail!(
                "conv kernel: input {:?}, weight {:?}, bias {}",
                xl.dims(),
                wl.dims(),
                bias.len()
            );
        }
        if c * kh * kw == 0 || h * w == 0 {
            candle_core::bail!(
                "conv kernel: empty input {:?} or kernel {:?}",
                xl.dims(),
                wl.dims()
            );
        }
        let oh = (h + 2 * p - kh) / s + 1;
        let ow = (w + 2 * p - kw) / s + 1;
        let k = c * kh * kw;
        let pixels = oh * ow;
        let mut y = vec![0f32; b * o * pixels];
        if y.is_empty() {
            return Ok((CpuStorage::F32(y), Shape::from((b, o, oh, ow))));
        }
        // The weight in `(O, KH, KW, C)` order, matching the channels-last patches below.
        let mut wp = vec![0f32; o * k];
        for (oi, dst) in wp.chunks_exact_mut(k).enumerate() {
            for ci in 0..c {
                for d in 0..kh * kw {
                    dst[d * c + ci] = wt[(oi * c + ci) * kh * kw + d];
                }
            }
        }
        for bi in 0..b {
            // Channels last: a patch row is then `kh` runs of `kw * C` contiguous floats.
            let xb = &x[bi * c * h * w..(bi + 1) * c * h * w];
            let mut nhwc = vec![0f32; h * w * c];
            for (ci, plane) in xb.chunks_exact(h * w).enumerate() {
                for (i, v) in plane.iter().enumerate() {
                    nhwc[i * c + ci] = *v;
                }
            }
            // One task per tile of output pixels: its patches, its product, its columns of y.
            let tiles: Vec<(usize, Vec<f32>)> = (0..pixels.div_ceil(TILE))
                .into_par_iter()
                .map(|t| {
                    let p0 = t * TILE;
                    let n = TILE.min(pixels - p0);
                    let mut col = SCRATCH.with(|s| s.take());
                    col.clear();
                    col.resize(n * k, 0.0);
                    for (r, row) in col.chunks_exact_mut(k).enumerate() {
                        let (oy, ox) = ((p0 + r) / ow, (p0 + r) % ow);
                        let x0 = (ox * s) as isize - p as isize;
                        // The kernel columns that fall inside the image.
                        let dx0 = (-x0).max(0) as usize;
                        let dx1 = ((w as isize - x0).min(kw as isize)).max(0) as usize;
                        if dx0 >= dx1 {
                            continue;
                        }
                        let ix0 = (x0 + dx0 as isize) as usize;
                        for dy in 0..kh {
                            let iy = (oy * s + dy) as isize - p as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let src = (iy as usize * w + ix0) * c;
                            let len = (dx1 - dx0) * c;
                            let dst = (dy * kw + dx0) * c;
                            row[dst..dst + len].copy_from_slice(&nhwc[src..src + len]);
                        }
                    }
                    let yt = super::matmul_t_serial(self.tier, &col, n, k, &wp, o);
                    SCRATCH.with(|s| s.replace(col));
                    (p0, yt)
                })
                .collect();
            let yb = &mut y[bi * o * pixels..(bi + 1) * o * pixels];
            for (p0, yt) in tiles {
                let n = yt.len() / o;
                for (oi, (dst, src)) in yb
                    .chunks_exact_mut(pixels)
                    .zip(yt.chunks_exact(n))
                    .enumerate()
                {
                    for (d, v) in dst[p0..p0 + n].iter_mut().zip(src) {
                        *d = v + bias[oi];
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, o, oh, ow))))
    }
}
