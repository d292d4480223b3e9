//! Small fused ops of the inference step on the CPU, each replacing a chain of candle ops (and
//! their allocations and thread-pool round trips) that costs more than its arithmetic at the
//! few rows of a sampling step.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::{f32_operand, f32_storage};

/// The residual sum `a + b` of two contiguous f32 tensors of one shape, on the rayon pool that
/// runs the other kernels. candle's own elementwise ops at this size go to its separate thread
/// pool, whose workers spin after each call and took cycles from ours on two cores (8% of a
/// batch-16 step).
pub(crate) struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "arpg-add"
    }

    fn cpu_fwd(
        &self,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if al.dims() != bl.dims() {
            candle_core::bail!("add kernel: shapes {:?} and {:?}", al.dims(), bl.dims());
        }
        let (a, b) = (f32_operand(as_, al, "add")?, f32_operand(bs, bl, "add")?);
        let mut y = vec![0f32; a.len()];
        const CHUNK: usize = 16 * 1024;
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(y, (a, b))| {
                for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
                    *y = a + b;
                }
            });
        Ok((CpuStorage::F32(y), al.shape().clone()))
    }
}

/// `a + b` by [`Add`] where the fused ops apply (see [`super::fuses`]), else candle's add.
pub(crate) fn add(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    if super::fuses(a) && super::fuses(b) && a.dims() == b.dims() {
        return a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &Add);
    }
    a + b
}

/// SwiGLU's gate (mirrors `F.silu(w1(x)) * w3(x)` in the reference's `FeedForward.forward`):
/// `h` `(.., 2F)` contiguous f32, the fused `w1`/`w3` projection, gives `(.., F)` =
/// `silu(h[.., :F]) * h[.., F:]`. One pass instead of a narrow, a strided SiLU and a product;
/// `exp` is [`exp`]'s polynomial (relative error about 2e-7), so the loop vectorises.
pub(crate) struct SwiGlu;

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "arpg-swiglu"
    }

    fn cpu_fwd(&self, hs: &CpuStorage, hl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let two_f = *hl.dims().last().unwrap_or(&0);
        let h = f32_operand(hs, hl, "swiglu")?;
        if two_f == 0 || !two_f.is_multiple_of(2) {
            candle_core::bail!("swiglu kernel: last dim {two_f} is not two halves");
        }
        let f = two_f / 2;
        let mut y = vec![0f32; h.len() / 2];
        let tier = super::choice_tier();
        y.par_chunks_mut(f)
            .zip(h.par_chunks(two_f))
            .for_each(|(yr, hr)| gate_dispatch(tier, hr, yr));
        let mut dims = hl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = f;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// One row of [`SwiGlu`], compiled for the tier's vector width.
#[allow(unsafe_code)] // Calls of functions compiled for features the CPU was checked to have.
fn gate_dispatch(tier: super::Tier, h: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(h: &[f32], y: &mut [f32]) {
            gate(h, y)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(h: &[f32], y: &mut [f32]) {
            gate(h, y)
        }
        // SAFETY: `usable` checks the tier against the CPU (`Tier::is_supported`).
        unsafe {
            match tier.usable().base() {
                super::Tier::Avx512 | super::Tier::Avx512Bf16 => avx512(h, y),
                super::Tier::Avx2Fma => avx2(h, y),
                super::Tier::Portable => gate(h, y),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = tier;
        gate(h, y);
    }
}

#[inline(always)]
fn gate(h: &[f32], y: &mut [f32]) {
    let (a, b) = h.split_at(y.len());
    for ((o, a), b) in y.iter_mut().zip(a).zip(b) {
        *o = a / (1.0 + exp(-a)) * b;
    }
}

/// `e^x` in f32 without branches (so that loops calling it vectorise): `2^n · p(r)` with
/// `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`, `p` the degree-6 Taylor polynomial; `x` clamped to
/// `[-87, 88]`, where `e^x` leaves f32's normal range. Relative error about 2e-7.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

/// `ln 2` split so that `n · LN2_HI` is exact for the `n` of [`exp`].
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// SwiGLU's gate and the residual sum against plain arithmetic (f64), on every tier this CPU
    /// has, with a row length that is not a multiple of the vector width.
    #[test]
    fn swiglu_and_add_match_plain_arithmetic() -> candle_core::Result<()> {
        let mut next = super::super::test_values(5);
        let (rows, f) = (3, 37);
        let h: Vec<f32> = (0..rows * 2 * f).map(|_| next() * 20.0).collect();
        let b: Vec<f32> = (0..rows * f).map(|_| next()).collect();
        let ht = Tensor::from_vec(h.clone(), (rows, 2 * f), &Device::Cpu)?;
        let bt = Tensor::from_vec(b.clone(), (rows, f), &Device::Cpu)?;
        for tier in super::super::Tier::supported() {
            let mut y = vec![0f32; rows * f];
            for (yr, hr) in y.chunks_exact_mut(f).zip(h.chunks_exact(2 * f)) {
                gate_dispatch(tier, hr, yr);
            }
            for r in 0..rows {
                for i in 0..f {
                    let a = f64::from(h[r * 2 * f + i]);
                    let want = a / (1.0 + (-a).exp()) * f64::from(h[r * 2 * f + f + i]);
                    let got = f64::from(y[r * f + i]);
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{tier:?} ({r}, {i}): {got} vs {want}"
                    );
                }
            }
        }
        let gated = ht.apply_op1_no_bwd(&SwiGlu)?;
        assert_eq!(gated.dims(), &[rows, f]);
        let sum = add(&gated, &bt)?.flatten_all()?.to_vec1::<f32>()?;
        let g = gated.flatten_all()?.to_vec1::<f32>()?;
        for i in 0..rows * f {
            assert_eq!(sum[i], g[i] + b[i]);
        }
        Ok(())
    }
}
