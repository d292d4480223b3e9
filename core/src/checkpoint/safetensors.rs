//! safetensors files: the JSON header indexed (dtype, shape, byte range of every tensor), each
//! range checked against the file before anything is read.

use super::*;

impl Checkpoint {
    pub(super) fn open_safetensors(path: PathBuf, mut file: File, len: u64) -> Result<Self> {
        let not = |reason: String| Error::NotACheckpoint {
            path: path.clone(),
            reason,
        };
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&path, e))?;
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(|e| Error::io(&path, e))?;
        let header_len = u64::from_le_bytes(n);
        if header_len > len.saturating_sub(8) || header_len > 100_000_000 {
            return Err(not(
                "safetensors header length exceeds the file: truncated or not safetensors".into(),
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| Error::io(&path, e))?;
        let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| not(format!("invalid safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        let mut entries = BTreeMap::new();
        let mut unusable = BTreeMap::new();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let bad = |what: &str| not(format!("tensor `{name}`: {what}"));
            let shape: Option<Vec<usize>> = info["shape"]
                .as_array()
                .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
            let stored = match info["dtype"].as_str() {
                Some("F32") => Stored::Native(DType::F32),
                Some("F16") => Stored::Native(DType::F16),
                Some("BF16") => Stored::Native(DType::BF16),
                Some("F64") => Stored::Native(DType::F64),
                Some("I64") => Stored::Native(DType::I64),
                Some("I32") => Stored::Native(DType::I32),
                Some("U32") => Stored::Native(DType::U32),
                Some("U8") => Stored::Native(DType::U8),
                Some("F8_E4M3") => Stored::F8(F8::E4M3Fn),
                Some("F8_E5M2") => Stored::F8(F8::E5M2),
                // Kept by name, so that a model that needs it gets an error naming the type.
                Some(other) => {
                    let why = Why::Dtype(other.to_string());
                    unusable.insert(name, Unusable { shape, why });
                    continue;
                }
                None => return Err(bad("missing dtype")),
            };
            let shape = shape.ok_or_else(|| bad("invalid shape"))?;
            let offsets: Option<Vec<u64>> = info["data_offsets"]
                .as_array()
                .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
            let Some([begin, end]) = offsets
                .as_deref()
                .and_then(|o| <[u64; 2]>::try_from(o).ok())
            else {
                return Err(bad("invalid data_offsets"));
            };
            let entry = TensorEntry::new(
                shape,
                stored,
                Location::File {
                    offset: data_start + begin,
                },
            );
            if end < begin || Some((end - begin) as usize) != entry.num_bytes() {
                return Err(bad("data_offsets do not match its shape and dtype"));
            }
            if data_start.saturating_add(end) > len {
                return Err(bad(
                    "data lies past the end of the file (truncated download?)",
                ));
            }
            entries.insert(name, entry);
        }
        let (entries, unusable, stripped_prefixes) = strip_wrapper_prefixes(entries, unusable);
        let ckpt = Self {
            path,
            format: Format::Safetensors,
            entries,
            weights_key: None,
            skipped: unusable.keys().cloned().collect(),
            unusable,
            stripped_prefixes,
            big_endian: false,
            zip: Mutex::new(None),
        };
        ckpt.ensure_loadable()?;
        Ok(ckpt)
    }
}
