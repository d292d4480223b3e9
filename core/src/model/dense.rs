//! `Dense`: a linear map without bias (the reference's `nn.Linear(..., bias=False)`),
//! `y = x Wᵀ` with `W` `(out, in)`.
//!
//! Four paths, one interface: on the CPU our small-M kernels ([`crate::kernels`]) read f32,
//! f16 or bf16 weights once per call for all rows; bf16 weights on an AVX512-BF16 CPU are
//! packed at load for the blocked bf16 product; a quantized weight (q8_0, q4k) goes through
//! candle's `QMatMul`; every other device, and training (which needs a backward pass), takes
//! candle's matmul.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};

use crate::kernels::{self, Choice};

/// From this many rows on, candle's blocked GEMM (the `gemm` crate) beats our register tiles:
/// the product is bound by arithmetic, not by reading the weights (batch 16 with CFG, prefills).
/// Measured on ARPG-L at batch 16: 0.288 images/s through candle's path, 0.256 through ours.
const LARGE_M: usize = 64;

#[derive(Debug, Clone)]
enum Weight {
    Plain(Tensor),
    Quantized(QMatMul),
    /// bf16 weights on a CPU our kernels run at the AVX512-BF16 tier: packed once at load for
    /// the blocked product ([`kernels::bf16_gemm`]), which beats the row layout's dot products
    /// at every row count (ARPG-L bf16 batch 1: 2.26 against 2.50 s an image; batch 16: 0.63
    /// against 0.47 images/s, paired runs). The row layout is not kept (one copy of the
    /// weights); [`Dense::plain`] rebuilds it when asked.
    #[cfg(target_arch = "x86_64")]
    Packed(std::sync::Arc<kernels::bf16_gemm::PackedBf16>),
}

#[derive(Debug, Clone)]
pub(crate) struct Dense {
    weight: Weight,
    /// Training: always candle's differentiable matmul.
    trainable: bool,
}

impl Dense {
    /// `weight` `(out, in)`. `trainable` keeps the product differentiable.
    pub(crate) fn new(weight: Tensor, trainable: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        if !trainable {
            if let Some(p) = pack(&weight) {
                return Self {
                    weight: Weight::Packed(p),
                    trainable,
                };
            }
        }
        Self {
            weight: Weight::Plain(weight),
            trainable,
        }
    }

    /// `x` `(.., in)` -> `(.., out)` in `x`'s dtype. On the CPU activations are f32 whatever the
    /// weights' dtype.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(target_arch = "x86_64")]
        let unpacked;
        let w = match &self.weight {
            Weight::Quantized(q) => {
                return q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
            }
            #[cfg(target_arch = "x86_64")]
            Weight::Packed(p) if kernels::choice() == Choice::Kernel(kernels::Tier::Avx512Bf16) => {
                return x
                    .to_dtype(DType::F32)?
                    .contiguous()?
                    .apply_op1_no_bwd(&kernels::LinearPacked(p.clone()))?
                    .to_dtype(x.dtype());
            }
            // Another path was forced after loading (`kernels::set_choice`, tests): the row
            // layout again, for this call.
            #[cfg(target_arch = "x86_64")]
            Weight::Packed(_) => {
                unpacked = self
                    .plain()
                    .ok_or_else(|| candle_core::Error::Msg("packed weight lost".into()))?;
                &unpacked
            }
            Weight::Plain(w) => w,
        };
        let rows = x.elem_count() / w.dim(1)?.max(1);
        if !self.trainable
            && w.device().is_cpu()
            && kernels::takes(w.dtype())
            // Reduced-precision weights stay on the kernels (candle would need an f32 copy of
            // each weight per call).
            && (rows < LARGE_M || w.dtype() != DType::F32)
        {
            if let Choice::Kernel(tier) = kernels::choice() {
                let xf = x.to_dtype(DType::F32)?.contiguous()?;
                return xf
                    .apply_op2_no_bwd(w, &kernels::Linear(tier))?
                    .to_dtype(x.dtype());
            }
        }
        // candle's path; it multiplies like dtypes only (and not bf16 on the CPU), so
        // reduced-precision weights are widened for the call.
        let w = w.to_dtype(x.dtype())?;
        candle_nn::Linear::new(w, None).forward(x)
    }

    /// The plain `(out, in)` weight (rebuilt from a packed one); `None` when it is quantized.
    pub(crate) fn plain(&self) -> Option<Tensor> {
        match &self.weight {
            Weight::Plain(w) => Some(w.clone()),
            Weight::Quantized(_) => None,
            #[cfg(target_arch = "x86_64")]
            Weight::Packed(p) => {
                let (n, k) = (p.n(), p.k());
                Tensor::from_vec(p.unpack(), (n, k), &candle_core::Device::Cpu).ok()
            }
        }
    }

    /// Replaces the weight by its quantized form (`q8_0`, `q4k`, ...). Weights whose input size
    /// the format's block does not divide stay as they are; returns whether it was quantized.
    pub(crate) fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        if matches!(self.weight, Weight::Quantized(_)) {
            return Ok(false);
        }
        let Some(w) = self.plain() else {
            return Ok(false);
        };
        let k = w.dim(1)?;
        if k % dtype.block_size() != 0 {
            return Ok(false);
        }
        let q = QTensor::quantize(&w.to_dtype(DType::F32)?, dtype)?;
        self.weight = Weight::Quantized(QMatMul::from_qtensor(q)?);
        Ok(true)
    }
}

/// The packed form of a bf16 CPU weight, when our kernels run at the AVX512-BF16 tier.
#[cfg(target_arch = "x86_64")]
fn pack(w: &Tensor) -> Option<std::sync::Arc<kernels::bf16_gemm::PackedBf16>> {
    if w.dtype() != DType::BF16
        || !w.device().is_cpu()
        || kernels::choice() != Choice::Kernel(kernels::Tier::Avx512Bf16)
    {
        return None;
    }
    let (n, k) = w.dims2().ok()?;
    let values = w.flatten_all().ok()?.to_vec1::<half::bf16>().ok()?;
    Some(std::sync::Arc::new(kernels::bf16_gemm::PackedBf16::new(
        &values, n, k,
    )))
}
