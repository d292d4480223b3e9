//! `torch.save` zip archives: `data.pkl` read by our own pickle reader ([`super::pickle`]),
//! the weights dict chosen, each tensor record indexed (storage, element offset, shape,
//! strides), the `byteorder` record honoured.

use super::*;

impl Checkpoint {
    pub(super) fn open_zip(path: PathBuf, file: File) -> Result<Self> {
        let not = |reason: String| Error::NotACheckpoint {
            path: path.clone(),
            reason,
        };
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            not(format!(
                "the zip archive is damaged or truncated ({e}); download the file again"
            ))
        })?;
        let pkl_name = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| n.ends_with("data.pkl"))
            .map(|n| n.into_owned())
            .ok_or_else(|| not("zip archive without `data.pkl`: not a torch.save file".into()))?;
        let dir = pkl_name.trim_end_matches(".pkl").to_string();
        let pickle = {
            let mut entry = zip
                .by_name(&pkl_name)
                .map_err(|e| not(format!("cannot read `{pkl_name}`: {e}")))?;
            if entry.size() > MAX_PICKLE_BYTES {
                return Err(not(format!(
                    "`{pkl_name}` declares {} MiB: not a weights file",
                    entry.size() >> 20
                )));
            }
            let mut bytes = Vec::new();
            // Reading to the end verifies the entry's CRC before anything is parsed.
            entry.read_to_end(&mut bytes).map_err(|e| {
                not(format!(
                    "`{pkl_name}` is damaged ({e}); download the file again"
                ))
            })?;
            bytes
        };
        // torch.save records the byte order of the machine that wrote the file (absent in files
        // older than PyTorch 2.1, which were little-endian in practice).
        let byteorder_name = format!("{}byteorder", pkl_name.trim_end_matches("data.pkl"));
        let big_endian = match zip.by_name(&byteorder_name) {
            Ok(mut entry) => {
                let mut order = String::new();
                entry
                    .by_ref()
                    .take(64)
                    .read_to_string(&mut order)
                    .map_err(|e| not(format!("cannot read `{byteorder_name}`: {e}")))?;
                match order.trim() {
                    "little" => false,
                    "big" => true,
                    other => {
                        return Err(not(format!(
                            "unknown byte order `{other}` in `{byteorder_name}`"
                        )))
                    }
                }
            }
            Err(_) => false,
        };

        let index = index_pickle(&pickle, &dir).map_err(|e| match e {
            IndexError::Parse(why) => not(format!("cannot parse the pickled object: {why}")),
            IndexError::NotADict => Error::NoWeights {
                path: path.clone(),
                reason: "the top-level object is not a dict".into(),
            },
        })?;
        let (entries, unusable, stripped_prefixes) =
            strip_wrapper_prefixes(index.entries, index.unusable);
        let ckpt = Self {
            path,
            format: Format::PyTorchZip,
            entries,
            weights_key: index.weights_key,
            skipped: unusable.keys().cloned().collect(),
            unusable,
            stripped_prefixes,
            big_endian,
            zip: Mutex::new(Some(zip)),
        };
        ckpt.ensure_loadable()?;
        Ok(ckpt)
    }
}

/// Largest `data.pkl` accepted (the pickle holds names and shapes, not weights).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Why a pickle could not be indexed.
#[derive(Debug)]
pub enum IndexError {
    Parse(String),
    NotADict,
}

/// The tensors a `torch.save` pickle describes.
#[derive(Debug)]
pub struct PickleIndex {
    entries: BTreeMap<String, TensorEntry>,
    weights_key: Option<String>,
    unusable: BTreeMap<String, Unusable>,
}

/// Parses a `data.pkl` and indexes the tensors of its weights dict (`dir`: the archive folder of
/// the storages). Never panics and never runs code, whatever the input (see [`pickle`]).
pub fn index_pickle(pickle: &[u8], dir: &str) -> std::result::Result<PickleIndex, IndexError> {
    let unpickled = pickle::load(pickle).map_err(|e| IndexError::Parse(e.to_string()))?;
    let top = unpickled
        .dict(unpickled.root())
        .ok_or(IndexError::NotADict)?;
    let (weights_key, dict) = select_weights(&unpickled, top);
    let mut entries = BTreeMap::new();
    let mut unusable = BTreeMap::new();
    for (name, value) in dict {
        let Value::Str(name) = name else {
            continue;
        };
        let name = name.to_string();
        // Values that are not tensors (step counters, nested dicts) are not indexed.
        let Some(record) = tensor_record(&unpickled, value, 0) else {
            continue;
        };
        let record = match record {
            Ok(r) => r,
            Err(why) => {
                let why = Why::Malformed(why);
                unusable.insert(name, Unusable { shape: None, why });
                continue;
            }
        };
        match record.entry(dir) {
            Ok(entry) => {
                unusable.remove(&name);
                entries.insert(name, entry);
            }
            Err(why) => {
                entries.remove(&name);
                let shape = Some(record.size);
                unusable.insert(name, Unusable { shape, why });
            }
        }
    }
    Ok(PickleIndex {
        entries,
        weights_key,
        unusable,
    })
}

/// The arguments of a `torch._utils._rebuild_tensor_v2` call.
struct TensorRecord {
    /// `module.name` of the storage class (`torch.FloatStorage`, ...).
    storage_module: String,
    storage_class: String,
    /// The storage's archive entry name under `data/`.
    key: String,
    /// In elements of the storage, as torch counts it.
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRecord {
    /// The index entry, or why it cannot be loaded (an element type we do not read).
    fn entry(&self, dir: &str) -> std::result::Result<TensorEntry, Why> {
        let stored = match (self.storage_module.as_str(), self.storage_class.as_str()) {
            ("torch", "FloatStorage") => Stored::Native(DType::F32),
            ("torch", "DoubleStorage") => Stored::Native(DType::F64),
            ("torch", "HalfStorage") => Stored::Native(DType::F16),
            ("torch", "BFloat16Storage") => Stored::Native(DType::BF16),
            ("torch", "ByteStorage") => Stored::Native(DType::U8),
            ("torch", "LongStorage") => Stored::Native(DType::I64),
            ("torch", "Float8_e4m3fnStorage") => Stored::F8(F8::E4M3Fn),
            ("torch", "Float8_e5m2Storage") => Stored::F8(F8::E5M2),
            ("torch", "Float8_e4m3fnuzStorage") => Stored::F8(F8::E4M3FnUz),
            ("torch", "Float8_e5m2fnuzStorage") => Stored::F8(F8::E5M2FnUz),
            (module, class) => return Err(Why::Dtype(format!("{module}.{class}"))),
        };
        let offset = self
            .offset
            .checked_mul(stored.size_in_bytes())
            .ok_or_else(|| Why::Malformed("its storage offset overflows".into()))?;
        let mut entry = TensorEntry::new(
            self.size.clone(),
            stored,
            Location::Zip {
                entry: format!("{dir}/{}", self.key),
                offset: offset as u64,
            },
        );
        entry.unreadable = (!is_contiguous(&self.size, &self.stride)).then(|| {
            "it is stored as a non-contiguous view (e.g. a transpose); save it with \
             `.contiguous()`"
                .to_string()
        });
        Ok(entry)
    }
}

/// Whether `stride` lays `size` out densely in row-major order (dimensions of size 1 may have
/// any stride, as torch allows).
fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    if size.len() != stride.len() {
        return false;
    }
    let mut expected = 1usize;
    for (&dim, &st) in size.iter().zip(stride).rev() {
        if dim > 1 && st != expected {
            return false;
        }
        expected = expected.saturating_mul(dim);
    }
    true
}

/// Deepest nesting of rebuild calls followed (a parameter wrapping a subclass wrapping a
/// tensor is 2).
const MAX_REBUILD_DEPTH: usize = 4;

/// The tensor record of a pickled value: `None` when the value is not a tensor, an error when
/// it is one whose record does not have the layout torch writes.
fn tensor_record(
    u: &Unpickled,
    value: &Value,
    depth: usize,
) -> Option<std::result::Result<TensorRecord, String>> {
    let (callable, args) = u.call(value)?;
    rebuild_call(u, callable, args, depth)
}

/// Interprets `callable(*args)` when `callable` is one of torch's tensor rebuild functions.
fn rebuild_call(
    u: &Unpickled,
    callable: &Value,
    args: &Value,
    depth: usize,
) -> Option<std::result::Result<TensorRecord, String>> {
    let (module, name) = u.global(callable)?;
    if depth > MAX_REBUILD_DEPTH {
        return Some(Err("rebuild calls nested too deeply".into()));
    }
    let args = u.tuple(args);
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(rebuild_tensor_v2(u, args)),
        // `_rebuild_parameter(data, requires_grad, backward_hooks[, state])`.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            let data = args.and_then(<[Value]>::first);
            Some(
                data.and_then(|d| tensor_record(u, d, depth + 1))
                    .unwrap_or_else(|| Err("a parameter without tensor data".into())),
            )
        }
        // `_rebuild_from_type_v2(func, type, args, state)`: a tensor subclass built by
        // `func(*args)`.
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let (Some(func), Some(inner)) =
                (args.and_then(|a| a.first()), args.and_then(|a| a.get(2)))
            else {
                return Some(Err("a tensor subclass record without its arguments".into()));
            };
            Some(
                rebuild_call(u, func, inner, depth + 1)
                    .unwrap_or_else(|| Err("a tensor subclass not built from a tensor".into())),
            )
        }
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
/// [, metadata])`, where `storage` is the persistent id
/// `('storage', storage_class, key, location, numel)`.
fn rebuild_tensor_v2(
    u: &Unpickled,
    args: Option<&[Value]>,
) -> std::result::Result<TensorRecord, String> {
    let Some([storage, offset, size, stride, ..]) = args else {
        return Err("fewer than 4 rebuild arguments".into());
    };
    let pid = u
        .persistent_id(storage)
        .and_then(|pid| u.tuple(pid))
        .ok_or("its storage is not a persistent reference")?;
    let [kind, class, key, _location, _numel, ..] = pid else {
        return Err("its storage reference has fewer than 5 fields".into());
    };
    if !matches!(kind, Value::Str(k) if &**k == "storage") {
        return Err("its persistent reference is not a storage".into());
    }
    let (storage_module, storage_class) =
        u.global(class).ok_or("its storage class is not a name")?;
    let Value::Str(key) = key else {
        return Err("its storage key is not a string".into());
    };
    let index = |v: &Value| match v {
        Value::Int(i) => usize::try_from(*i).ok(),
        _ => None,
    };
    let dims = |v: &Value| -> Option<Vec<usize>> { u.tuple(v)?.iter().map(index).collect() };
    Ok(TensorRecord {
        storage_module: storage_module.to_string(),
        storage_class: storage_class.to_string(),
        key: key.to_string(),
        offset: index(offset).ok_or("its storage offset is not a non-negative integer")?,
        size: dims(size).ok_or("its size is not a tuple of non-negative integers")?,
        stride: dims(stride).ok_or("its stride is not a tuple of non-negative integers")?,
    })
}

/// Picks the weights dict out of a checkpoint's top-level dict.
fn select_weights<'u>(
    u: &'u Unpickled,
    top: &'u [(Value, Value)],
) -> (Option<String>, &'u [(Value, Value)]) {
    for wanted in WEIGHT_KEYS {
        // A repeated key takes its last value, as in Python.
        let found = top
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == wanted));
        if let Some(dict) = found.and_then(|(_, v)| u.dict(v)) {
            return (Some(wanted.to_string()), dict);
        }
    }
    (None, top)
}
