//! Small fused ops of the inference step on the CPU, each replacing a chain of candle ops (and
//! their allocations and thread-pool round trips) that costs more than its arithmetic at the
//! few rows of a sampling step.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape};

use super::{f32_operand, f32_storage};

/// `RMSNorm` (mirrors the reference's `RMSNorm.forward`): `x / sqrt(mean(x²) + eps) * weight`
/// over the last dim. `x` `(.., D)` contiguous f32, `weight` `(D,)` f32.
pub(crate) struct RmsNorm(pub f32);

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "arpg-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = *xl.dims().last().unwrap_or(&0);
        let (x, w) = (
            f32_operand(xs, xl, "rms norm")?,
            f32_operand(ws, wl, "rms norm")?,
        );
        if d == 0 || w.len() != d {
            candle_core::bail!("rms norm kernel: {d} features, weight of {}", w.len());
        }
        let mut y = vec![0f32; x.len()];
        for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let r = 1.0 / (ms + self.0).sqrt();
            for ((yi, xi), wi) in yr.iter_mut().zip(xr).zip(w) {
                *yi = xi * r * wi;
            }
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
}

/// Splits `x` `(B, T, H·D)` into heads and rotates them (mirrors `apply_rotary_emb` after the
/// reference's `view(B, T, H, D)`): result `(B, H, T, D)` contiguous f32. Interleaved pairs
/// `(x[2i], x[2i+1])` turn by the angle whose cos/sin are `(B, 1, T, D/2)`. `x` may be a view
/// (one part of a fused projection): only its last dim must have unit stride.
pub(crate) struct RopeHeads(pub usize);

impl CustomOp3 for RopeHeads {
    fn name(&self) -> &'static str {
        "arpg-rope-heads"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = self.0;
        let (b, t, c) = xl.shape().dims3()?;
        let st = xl.stride();
        if st[2] != 1 || h == 0 || !c.is_multiple_of(h) || !(c / h).is_multiple_of(2) {
            candle_core::bail!("rope kernel: bad input layout {:?} / {h} heads", xl.dims());
        }
        let d = c / h;
        let half = d / 2;
        let (cos, sin) = (f32_operand(cs, cl, "rope")?, f32_operand(ss, sl, "rope")?);
        if cos.len() != b * t * half || sin.len() != cos.len() {
            candle_core::bail!("rope kernel: cos/sin do not cover ({b}, 1, {t}, {half})");
        }
        let x = f32_storage(xs, "rope")?;
        let o = xl.start_offset();
        let mut y = vec![0f32; b * h * t * d];
        for bi in 0..b {
            for ti in 0..t {
                let row = o + bi * st[0] + ti * st[1];
                let ang = (bi * t + ti) * half;
                let (cr, sr) = (&cos[ang..ang + half], &sin[ang..ang + half]);
                for hi in 0..h {
                    let xr = &x[row + hi * d..row + (hi + 1) * d];
                    let at = ((bi * h + hi) * t + ti) * d;
                    let yr = &mut y[at..at + d];
                    for i in 0..half {
                        let (a, bb) = (xr[2 * i], xr[2 * i + 1]);
                        yr[2 * i] = a * cr[i] - bb * sr[i];
                        yr[2 * i + 1] = bb * cr[i] + a * sr[i];
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, h, t, d))))
    }
}
