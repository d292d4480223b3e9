//! The only place that opens weight files.
//!
//! Two containers are read:
//! - PyTorch zip checkpoints (`torch.save`, as published: `arpg_300m.pt`, `vq_ds16_c2i.pt`, ...).
//!   The weights dict is the first of `"model"`, `"module"`, `"state_dict"` present at the top level
//!   (what the reference sampler looks for), or the top-level dict itself when it holds tensors.
//!   Optimizer states, step counters and pickled `argparse.Namespace` objects beside it are parsed
//!   as opaque pickle objects and never interpreted.
//! - safetensors files with the same key names.
//!
//! Wrapper prefixes that training tools add to every key (`_orig_mod.` from `torch.compile`,
//! `module.` from DDP / DataParallel, in any stack) are recognised and removed. A tensor is only
//! checked when it is read: an unused buffer stored in a layout we cannot read (a transposed
//! view, an integer dtype) does not make the file unusable. The pickle's `byteorder` record is
//! honoured (big-endian files are byte-swapped on read). Every tensor read is checked for
//! non-finite values (NaN, infinity), and the error names the tensor. The zip's CRC of every
//! entry read is verified, so a damaged download is an error, not silently different weights.
//!
//! Both are indexed first (names, shapes, dtypes, byte locations) and tensors are then streamed one
//! at a time on request, so building a model never holds two copies of its weights. Keys and shapes
//! are checked against the config before anything is built: a missing or mis-shaped tensor is an
//! error that names the file, the key and both shapes, never a silent partial load.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// Keys under which checkpoints store their weights, in the order the reference sampler tries them.
pub const WEIGHT_KEYS: [&str; 3] = ["model", "module", "state_dict"];

/// Prefixes that wrappers add to every key: `torch.compile` (`_orig_mod.`) and DDP /
/// `DataParallel` (`module.`). They stack (`module._orig_mod.`) and are removed in any order.
pub const WRAPPER_PREFIXES: [&str; 2] = ["_orig_mod.", "module."];

/// Container format of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    PyTorchZip,
    Safetensors,
}

/// Where a tensor's bytes are.
#[derive(Debug, Clone)]
enum Location {
    /// Entry of the zip archive plus byte offset inside it.
    Zip { entry: String, offset: u64 },
    /// Absolute byte offset in the file.
    File { offset: u64 },
}

/// One indexed tensor.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub shape: Vec<usize>,
    pub dtype: DType,
    location: Location,
    /// Why this tensor cannot be read (e.g. a non-contiguous view); reported only if it is read.
    unreadable: Option<String>,
}

impl TensorEntry {
    /// Byte size, `None` when the shape overflows.
    fn num_bytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
    }

    /// Why the tensor cannot be read, if it cannot.
    pub fn unreadable(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }
}

/// An opened, indexed checkpoint. Tensor data is read lazily.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    entries: BTreeMap<String, TensorEntry>,
    /// Top-level key the weights were found under (`None`: flat dict or safetensors).
    weights_key: Option<String>,
    /// Tensor-like entries that were not loaded (integer/bool storages).
    skipped: Vec<String>,
    /// Wrapper prefixes removed from every key, outermost first.
    stripped_prefixes: Vec<String>,
    /// The pickle's `byteorder` record said `big`: values are byte-swapped on read.
    big_endian: bool,
    zip: Mutex<Option<zip::ZipArchive<BufReader<File>>>>,
}

impl Checkpoint {
    /// Opens and indexes a checkpoint (`.pt`/`.pth` zip or `.safetensors`), reading no tensor data.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut magic = [0u8; 9];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(&path, e))?;
        let magic = &magic[..n];
        let not = |reason: &str| Error::NotACheckpoint {
            path: path.clone(),
            reason: reason.to_string(),
        };
        if magic.starts_with(b"PK\x03\x04") {
            Self::open_zip(path, file)
        } else if magic.len() >= 2 && magic[0] == 0x80 && (2..=5).contains(&magic[1]) {
            Err(not("this is a legacy (pre-zip) PyTorch pickle; re-save it with a current `torch.save` or convert it to .safetensors"))
        } else if magic.len() == 9 && magic[8] == b'{' {
            Self::open_safetensors(path, file, len)
        } else if n < 8 {
            Err(not("the file is empty or too short"))
        } else {
            Err(not(
                "expected a PyTorch zip checkpoint (.pt) or a .safetensors file",
            ))
        }
    }

    fn open_zip(path: PathBuf, file: File) -> Result<Self> {
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
        let (entries, stripped_prefixes) = strip_wrapper_prefixes(index.entries);
        let ckpt = Self {
            path,
            format: Format::PyTorchZip,
            entries,
            weights_key: index.weights_key,
            skipped: index.skipped,
            stripped_prefixes,
            big_endian,
            zip: Mutex::new(Some(zip)),
        };
        ckpt.ensure_not_empty()?;
        Ok(ckpt)
    }

    fn open_safetensors(path: PathBuf, mut file: File, len: u64) -> Result<Self> {
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
        let mut skipped = Vec::new();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let bad = |what: &str| not(format!("tensor `{name}`: {what}"));
            let dtype = match info["dtype"].as_str() {
                Some("F32") => DType::F32,
                Some("F16") => DType::F16,
                Some("BF16") => DType::BF16,
                Some("F64") => DType::F64,
                Some("I64") => DType::I64,
                Some("I32") => DType::I32,
                Some("U32") => DType::U32,
                Some("U8") => DType::U8,
                Some(_) => {
                    skipped.push(name);
                    continue;
                }
                None => return Err(bad("missing dtype")),
            };
            let shape = info["shape"]
                .as_array()
                .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                .ok_or_else(|| bad("invalid shape"))?;
            let offsets: Option<Vec<u64>> = info["data_offsets"]
                .as_array()
                .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
            let Some([begin, end]) = offsets
                .as_deref()
                .and_then(|o| <[u64; 2]>::try_from(o).ok())
            else {
                return Err(bad("invalid data_offsets"));
            };
            let entry = TensorEntry {
                shape,
                dtype,
                location: Location::File {
                    offset: data_start + begin,
                },
                unreadable: None,
            };
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
        let (entries, stripped_prefixes) = strip_wrapper_prefixes(entries);
        let ckpt = Self {
            path,
            format: Format::Safetensors,
            entries,
            weights_key: None,
            skipped,
            stripped_prefixes,
            big_endian: false,
            zip: Mutex::new(None),
        };
        ckpt.ensure_not_empty()?;
        Ok(ckpt)
    }

    fn ensure_not_empty(&self) -> Result<()> {
        if self.entries.is_empty() {
            return Err(Error::NoWeights {
                path: self.path.clone(),
                reason: format!(
                    "no floating-point tensors at the top level or under {}",
                    WEIGHT_KEYS.map(|k| format!("\"{k}\"")).join(", ")
                ),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn weights_key(&self) -> Option<&str> {
        self.weights_key.as_deref()
    }

    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Wrapper prefixes removed from every key (`_orig_mod.`, `module.`), outermost first.
    pub fn stripped_prefixes(&self) -> &[String] {
        &self.stripped_prefixes
    }

    /// Whether the file was written on a big-endian machine (values are swapped on read).
    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    /// Reads every tensor and lists those holding non-finite values, with their count, and
    /// those that cannot be read, with the reason (`arpg info`'s full check).
    pub fn scan(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (name, entry) in &self.entries {
            if let Some(why) = entry.unreadable() {
                problems.push((name.clone(), format!("unreadable: {why}")));
                continue;
            }
            if let Err(e) = self.read_native(name) {
                problems.push((name.clone(), e.to_string()));
            }
        }
        problems
    }

    pub fn entries(&self) -> &BTreeMap<String, TensorEntry> {
        &self.entries
    }

    /// Key → shape of every indexed tensor.
    pub fn shape_map(&self) -> BTreeMap<String, Vec<usize>> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.shape.clone()))
            .collect()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The dtype most of the stored weights have.
    pub fn dtype(&self) -> DType {
        let mut counts: BTreeMap<&'static str, (usize, DType)> = BTreeMap::new();
        for e in self.entries.values() {
            let n = e.num_bytes().unwrap_or(0);
            let slot = counts.entry(e.dtype.as_str()).or_insert((0, e.dtype));
            slot.0 = slot.0.saturating_add(n);
        }
        counts
            .into_values()
            .max_by_key(|(n, _)| *n)
            .map_or(DType::F32, |(_, d)| d)
    }

    /// Checks that every expected key exists with its shape. Extra keys are ignored.
    pub fn validate(&self, expected: &[(String, Vec<usize>)], model: &str) -> Result<()> {
        let missing: Vec<String> = expected
            .iter()
            .filter(|(k, _)| !self.entries.contains_key(k))
            .map(|(k, _)| k.clone())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingKeys {
                path: self.path.clone(),
                model: model.to_string(),
                missing,
            });
        }
        for (key, shape) in expected {
            let found = &self.entries[key].shape;
            if found != shape {
                return Err(Error::WrongShape {
                    path: self.path.clone(),
                    model: model.to_string(),
                    key: key.clone(),
                    expected: shape.clone(),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// Reads one tensor in its stored dtype, on the CPU.
    pub fn read_native(&self, name: &str) -> Result<Tensor> {
        let dtype = self.entries.get(name).map_or(DType::F32, |e| e.dtype);
        self.read(name, dtype, &Device::Cpu)
    }

    /// Reads one tensor, converted to `dtype`, on `device`.
    pub fn read(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| Error::MissingKeys {
            path: self.path.clone(),
            model: "requested".into(),
            missing: vec![name.to_string()],
        })?;
        let damaged = |reason: String| Error::NotACheckpoint {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {reason}"),
        };
        if let Some(why) = &entry.unreadable {
            return Err(damaged(why.clone()));
        }
        let num_bytes = entry
            .num_bytes()
            .ok_or_else(|| damaged(format!("shape {:?} overflows", entry.shape)))?;
        let io = |e: std::io::Error| Error::io(&self.path, e);
        let mut bytes;
        match &entry.location {
            Location::File { offset } => {
                bytes = vec![0u8; num_bytes];
                let mut f = File::open(&self.path).map_err(io)?;
                f.seek(SeekFrom::Start(*offset)).map_err(io)?;
                f.read_exact(&mut bytes).map_err(io)?;
            }
            Location::Zip {
                entry: zname,
                offset,
            } => {
                let mut guard = self
                    .zip
                    .lock()
                    .map_err(|_| Error::Config("checkpoint reader poisoned".into()))?;
                let zip = guard
                    .as_mut()
                    .ok_or_else(|| Error::Config("zip reader missing".into()))?;
                let mut r = zip
                    .by_name(zname)
                    .map_err(|e| damaged(format!("cannot open `{zname}`: {e}")))?;
                // The storage's declared size bounds the read before anything is allocated.
                if (*offset as u128) + (num_bytes as u128) > r.size() as u128 {
                    return Err(damaged(format!(
                        "its shape {:?} needs {num_bytes} bytes at offset {offset}, but its \
                         storage `{zname}` holds {}",
                        entry.shape,
                        r.size()
                    )));
                }
                bytes = vec![0u8; num_bytes];
                let broken = |e: std::io::Error| {
                    damaged(format!(
                        "its storage `{zname}` is damaged ({e}); download the file again"
                    ))
                };
                std::io::copy(&mut r.by_ref().take(*offset), &mut std::io::sink())
                    .map_err(broken)?;
                r.read_exact(&mut bytes).map_err(broken)?;
                // Reading the storage to its end verifies its CRC.
                std::io::copy(&mut r, &mut std::io::sink()).map_err(broken)?;
            }
        }
        if self.big_endian {
            let width = entry.dtype.size_in_bytes();
            if width > 1 {
                bytes.chunks_exact_mut(width).for_each(<[u8]>::reverse);
            }
        }
        let non_finite = count_non_finite(&bytes, entry.dtype);
        if non_finite > 0 {
            return Err(Error::NonFinite(format!(
                "{}: tensor `{name}` holds {non_finite} non-finite value(s) (NaN or infinity): the \
                 checkpoint is damaged; use another copy",
                self.path.display()
            )));
        }
        let t = Tensor::from_raw_buffer(&bytes, entry.dtype, &entry.shape, &Device::Cpu)?;
        drop(bytes);
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    /// A `VarBuilder` that streams tensors from this checkpoint on demand.
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

impl candle_nn::var_builder::SimpleBackend for Checkpoint {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(found) = self.shape(name) {
            if found != s.dims() {
                candle_core::bail!(
                    "{}: tensor `{name}` has shape {found:?}, expected {:?}",
                    self.path.display(),
                    s.dims()
                );
            }
        }
        self.read(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
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
    skipped: Vec<String>,
}

/// Parses a `data.pkl` and indexes the tensors of its weights dict (`dir`: the archive folder of
/// the storages). Never panics on malformed input: candle's pickle reader indexes into tuples
/// it assumes well-formed, so their arity is checked first and any remaining panic is caught.
pub fn index_pickle(pickle: &[u8], dir: &str) -> std::result::Result<PickleIndex, IndexError> {
    let parsed = std::panic::catch_unwind(|| {
        let mut stack = Stack::empty();
        let mut reader = pickle;
        stack
            .read_loop(&mut reader)
            .and_then(|_| stack.finalize())
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|_| Err("malformed pickle".to_string()))
    .map_err(IndexError::Parse)?;
    let Object::Dict(top) = parsed else {
        return Err(IndexError::NotADict);
    };
    let (weights_key, dict) = select_weights(top);
    let mut entries = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, value) in dict {
        let Object::Unicode(name) = name else {
            continue;
        };
        if !well_formed_tensor(&value) {
            continue;
        }
        let info = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            value.into_tensor_info(Object::Unicode(name.clone()), Path::new(dir))
        }))
        .unwrap_or_else(|_| Err(candle_core::Error::Msg("malformed tensor record".into())));
        match info {
            Ok(Some(info)) => {
                let layout = &info.layout;
                let unreadable = (!layout.is_contiguous()).then(|| {
                    "it is stored as a non-contiguous view (e.g. a transpose); save it \
                         with `.contiguous()`"
                        .to_string()
                });
                // candle's layout offset for a pickled tensor is in bytes.
                let offset = layout.start_offset();
                entries.insert(
                    name,
                    TensorEntry {
                        shape: layout.dims().to_vec(),
                        dtype: info.dtype,
                        location: Location::Zip {
                            entry: info.path,
                            offset: offset as u64,
                        },
                        unreadable,
                    },
                );
            }
            Ok(None) => {}
            // Storages candle cannot represent (int32, bool, ...): never model weights.
            Err(_) => skipped.push(name),
        }
    }
    Ok(PickleIndex {
        entries,
        weights_key,
        skipped,
    })
}

/// Whether a pickled value has the arity candle's tensor rebuild expects (it indexes the
/// tuples without checking). Values that are not tensor records pass: candle skips them.
fn well_formed_tensor(value: &Object) -> bool {
    fn tuple_len(o: &Object) -> Option<usize> {
        match o {
            Object::Tuple(t) => Some(t.len()),
            _ => None,
        }
    }
    fn rebuild_ok(args: &Object) -> bool {
        match args {
            Object::Tuple(a) if a.len() >= 4 => match &a[0] {
                Object::PersistentLoad(s) => tuple_len(s).is_some_and(|n| n >= 5),
                _ => true,
            },
            Object::Tuple(_) => false,
            _ => true,
        }
    }
    let Object::Reduce { callable, args } = value else {
        return true;
    };
    match callable.as_ref() {
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._tensor" && class_name == "_rebuild_from_type_v2" => {
            match args.as_ref() {
                Object::Tuple(a) if a.len() >= 3 => match (&a[0], &a[2]) {
                    (Object::Class { .. }, inner) => rebuild_ok(inner),
                    _ => true,
                },
                Object::Tuple(_) => false,
                _ => true,
            }
        }
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_parameter" => {
            match args.as_ref() {
                Object::Tuple(a) if !a.is_empty() => match &a[0] {
                    Object::Reduce { args, .. } => rebuild_ok(args),
                    _ => true,
                },
                Object::Tuple(_) => false,
                _ => true,
            }
        }
        _ => rebuild_ok(args),
    }
}

/// Removes wrapper prefixes shared by every key (see [`WRAPPER_PREFIXES`]), in any stack.
fn strip_wrapper_prefixes(
    mut entries: BTreeMap<String, TensorEntry>,
) -> (BTreeMap<String, TensorEntry>, Vec<String>) {
    let mut stripped = Vec::new();
    while let Some(prefix) = WRAPPER_PREFIXES
        .iter()
        .find(|p| !entries.is_empty() && entries.keys().all(|k| k.starts_with(*p)))
    {
        stripped.push(prefix.to_string());
        entries = entries
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect();
    }
    (entries, stripped)
}

/// Picks the weights dict out of a checkpoint's top-level dict.
fn select_weights(mut top: Vec<(Object, Object)>) -> (Option<String>, Vec<(Object, Object)>) {
    let found = WEIGHT_KEYS.iter().find_map(|wanted| {
        top.iter()
            .position(|(k, v)| {
                matches!(k, Object::Unicode(s) if s == wanted) && matches!(v, Object::Dict(_))
            })
            .map(|pos| (*wanted, pos))
    });
    match found {
        Some((key, pos)) => match top.swap_remove(pos).1 {
            Object::Dict(d) => (Some(key.to_string()), d),
            _ => (None, Vec::new()),
        },
        None => (None, top),
    }
}

/// Counts NaN and infinite values of a little-endian float buffer (0 for integer dtypes).
fn count_non_finite(bytes: &[u8], dtype: DType) -> usize {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .filter(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000)
            .count(),
        DType::F64 => bytes
            .chunks_exact(8)
            .filter(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_le_bytes(a) & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
            })
            .count(),
        DType::F16 => bytes
            .chunks_exact(2)
            .filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00)
            .count(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80)
            .count(),
        _ => 0,
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
