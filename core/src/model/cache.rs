//! The KV cache of incremental decoding, allocated once for the whole sequence and written in
//! place (the reference grows it with `torch.cat` every step).

use candle_core::{DType, Device, Result, Tensor};

/// Keys and values of every self-decoder layer plus the one shared cross-decoder K/V, each
/// `(B, H, capacity, head_dim)`. Slots `0..len` are filled.
/// Not `Clone`: clones would share the buffers written in place; use [`KvCache::deep_clone`].
#[derive(Debug)]
pub struct KvCache {
    pub(crate) self_kv: Vec<(Tensor, Tensor)>,
    pub(crate) cross_kv: (Tensor, Tensor),
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub(crate) fn new(
        n_self_layers: usize,
        shape: (usize, usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let pair = || -> Result<(Tensor, Tensor)> {
            Ok((
                Tensor::zeros(shape, dtype, device)?,
                Tensor::zeros(shape, dtype, device)?,
            ))
        };
        Ok(Self {
            self_kv: (0..n_self_layers).map(|_| pair()).collect::<Result<_>>()?,
            cross_kv: pair()?,
            len: 0,
            capacity: shape.2,
        })
    }

    /// Filled slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> usize {
        self.cross_kv.0.dims()[0]
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// Writes `k`, `v` `(B, H, m, D)` at slots `len..len+m` of `pair` (converted to the cache's
    /// dtype) and returns views of slots `0..len+m`. No copy of the cached part is made.
    pub(crate) fn append(
        pair: &(Tensor, Tensor),
        len: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let m = k.dim(2)?;
        let dtype = pair.0.dtype();
        pair.0
            .slice_set(&k.to_dtype(dtype)?.contiguous()?, 2, len)?;
        pair.1
            .slice_set(&v.to_dtype(dtype)?.contiguous()?, 2, len)?;
        Ok((pair.0.narrow(2, 0, len + m)?, pair.1.narrow(2, 0, len + m)?))
    }

    /// A deep copy (for forking a generation): the copy's buffers are independent.
    pub fn deep_clone(&self) -> Result<Self> {
        let copy =
            |(k, v): &(Tensor, Tensor)| -> Result<(Tensor, Tensor)> { Ok((k.copy()?, v.copy()?)) };
        Ok(Self {
            self_kv: self.self_kv.iter().map(copy).collect::<Result<_>>()?,
            cross_kv: copy(&self.cross_kv)?,
            len: self.len,
            capacity: self.capacity,
        })
    }
}
