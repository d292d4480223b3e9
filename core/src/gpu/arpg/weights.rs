//! How the transformer's weights are stored on the GPU: 32-bit words the shaders widen exactly
//! (`shaders/arpg_weights.wgsl`), and the KV cache's element format, which follows them.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// How the weights are stored on the GPU (the dtype the model was loaded in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
}

impl WeightFormat {
    pub(super) fn of(dtype: DType) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(Self::F32),
            DType::F16 => Ok(Self::F16),
            DType::BF16 => Ok(Self::Bf16),
            d => Err(Error::InvalidRequest(format!(
                "wgpu takes f32, f16 or bf16 weights, not {d:?}"
            ))),
        }
    }

    /// Bytes of one element (of the weights, and of the KV cache, which takes their format).
    pub(super) fn bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The `WEIGHT` and `KV` override constants of `arpg_weights.wgsl` and `arpg_kv.wgsl`.
    pub(super) fn code(self) -> f64 {
        match self {
            Self::F32 => 0.0,
            Self::F16 => 1.0,
            Self::Bf16 => 2.0,
        }
    }
}

/// `t` as the 32-bit words the shaders read: f32 bits, or two 16-bit values a word (element 2i
/// in the low half).
pub(super) fn words(t: &Tensor, format: WeightFormat) -> Result<Vec<u32>> {
    let flat = t.flatten_all()?;
    let pack = |halves: Vec<u16>| -> Vec<u32> {
        halves
            .chunks(2)
            .map(|c| u32::from(c[0]) | (u32::from(c.get(1).copied().unwrap_or(0)) << 16))
            .collect()
    };
    Ok(match format {
        WeightFormat::F32 => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect(),
        WeightFormat::F16 => pack(
            flat.to_dtype(DType::F16)?
                .to_vec1::<half::f16>()?
                .into_iter()
                .map(half::f16::to_bits)
                .collect(),
        ),
        WeightFormat::Bf16 => pack(
            flat.to_dtype(DType::BF16)?
                .to_vec1::<half::bf16>()?
                .into_iter()
                .map(half::bf16::to_bits)
                .collect(),
        ),
    })
}
