//! What crosses the engine seam ([`crate::backend`]) on the host: token ids and RoPE rows in,
//! logits out. Every engine (candle's, the wgpu transformer) takes and returns these, so the
//! sampler never sees an engine's own tensors.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// A `(batch, len)` grid of ids or RoPE rows on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Ids {
    pub data: Vec<u32>,
    pub batch: usize,
    pub len: usize,
}

impl Ids {
    /// `data` read as `batch` rows; an error when it does not divide.
    pub fn new(data: Vec<u32>, batch: usize) -> Result<Self> {
        if batch == 0 || !data.len().is_multiple_of(batch) {
            return Err(Error::Internal(format!(
                "{} ids do not make {batch} equal rows",
                data.len()
            )));
        }
        let len = data.len() / batch;
        Ok(Self { data, batch, len })
    }

    /// A host tensor's values (`(B, T)`, any integer dtype) as ids.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (batch, len) = t.dims2()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1()?;
        Ok(Self { data, batch, len })
    }

    pub(crate) fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.data.clone(),
            (self.batch, self.len),
            device,
        )?)
    }
}

/// Logits on the host: `(batch, queries, vocab)` f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub batch: usize,
    pub queries: usize,
    pub vocab: usize,
}

impl Logits {
    pub(crate) fn from_tensor(t: &Tensor) -> Result<Self> {
        let (batch, queries, vocab) = t.dims3()?;
        let data = t
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        Ok(Self {
            data,
            batch,
            queries,
            vocab,
        })
    }

    /// The logits of query `q` of batch row `b`.
    pub fn row(&self, b: usize, q: usize) -> &[f32] {
        let start = (b * self.queries + q) * self.vocab;
        &self.data[start..start + self.vocab]
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|l| l.is_finite())
    }

    /// The logits as a `(batch, queries, vocab)` tensor on the CPU.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.data.clone(),
            (self.batch, self.queries, self.vocab),
            &Device::Cpu,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ids_must_fill_equal_rows() {
        assert!(Ids::new(vec![1, 2, 3], 2).is_err());
        assert!(Ids::new(vec![1, 2], 0).is_err());
        let ids = Ids::new(vec![1, 2, 3, 4, 5, 6], 2).expect("2 rows");
        assert_eq!((ids.batch, ids.len), (2, 3));
    }

    #[test]
    fn logits_rows_index_batch_then_query() {
        let t = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .and_then(|t| t.reshape((2, 3, 4)))
            .expect("tensor");
        let l = Logits::from_tensor(&t).expect("logits");
        assert_eq!(l.row(1, 2), &[20.0, 21.0, 22.0, 23.0]);
        assert_eq!(l.row(0, 1), &[4.0, 5.0, 6.0, 7.0]);
        assert!(l.all_finite());
        assert_eq!(
            l.to_tensor().expect("back").to_vec3::<f32>().expect("vec"),
            t.to_vec3::<f32>().expect("vec")
        );
    }
}
