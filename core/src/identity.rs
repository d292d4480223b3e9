//! Model identities: 16 hex digits of a SHA-256 of what makes a model what it is (see
//! [`crate::vq::VqModel::identity`] and [`crate::loader::transformer_identity`]). PNG metadata,
//! the preview cache and every "is this the same model" check compare them.

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use crate::error::Result;

/// The identity of `header` (a description of the model's shape) followed by the values of
/// `tensor` as little-endian f32, whatever its dtype.
pub fn of(header: &[u8], tensor: &Tensor) -> Result<String> {
    let mut h = Sha256::new();
    h.update(header);
    let values = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    // Hashed in blocks: one call per value would cost more than the digest itself at load.
    let mut block = Vec::with_capacity(4 * 4096);
    for chunk in values.chunks(4096) {
        block.clear();
        block.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        h.update(&block);
    }
    Ok(hex(&h.finalize()))
}

/// The identity of a text (e.g. another identity with what was done to the model).
pub fn of_text(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
