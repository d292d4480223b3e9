//! `Dense`: a linear map without bias (the reference's `nn.Linear(..., bias=False)`),
//! `y = x Wᵀ` with `W` `(out, in)`.
//!
//! Three paths, one interface: on the CPU our small-M kernels ([`crate::kernels`]) read f32,
//! f16 or bf16 weights once per call for all rows; a quantized weight (q8_0, q4k) goes through
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
        Self {
            weight: Weight::Plain(weight),
            trainable,
        }
    }

    /// `x` `(.., in)` -> `(.., out)` in `x`'s dtype. On the CPU activations are f32 whatever the
    /// weights' dtype.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Quantized(q) => q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
            Weight::Plain(w) => {
                let rows = x.elem_count() / w.dim(1)?.max(1);
                if !self.trainable
                    && w.device().is_cpu()
                    && kernels::takes(w.dtype())
                    // Reduced-precision weights stay on the kernels (candle would need an f32
                    // copy of each weight per call).
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
        }
    }

    /// The plain `(out, in)` weight; `None` when it is quantized.
    #[cfg(feature = "wgpu")]
    pub(crate) fn plain(&self) -> Option<&Tensor> {
        match &self.weight {
            Weight::Plain(w) => Some(w),
            Weight::Quantized(_) => None,
        }
    }

    /// Replaces the weight by its quantized form (`q8_0`, `q4k`, ...). Weights whose input size
    /// the format's block does not divide stay as they are; returns whether it was quantized.
    pub(crate) fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        let Weight::Plain(w) = &self.weight else {
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
