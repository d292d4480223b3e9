//! The only place that opens weight files.
//!
//! Two containers are read:
//! - PyTorch zip checkpoints (`torch.save`, as published: `arpg_300m.pt`, `vq_ds16_c2i.pt`, ...).
//!   Their `data.pkl` is read by our own pickle reader ([`pickle`]), protocols 2 to 5 (protocol 4
//!   is what `torch.save` needs above 4 GB; some trainers pass the highest, 5). It never imports
//!   or calls anything the pickle names: calls are recorded, and only tensor records
//!   (`torch._utils._rebuild_tensor_v2`, possibly inside `_rebuild_parameter` or
//!   `torch._tensor._rebuild_from_type_v2`) and `collections.OrderedDict` are interpreted.
//!   The weights dict is the first of `"model"`, `"module"`, `"state_dict"` present at the top level
//!   (what the reference sampler looks for), or the top-level dict itself when it holds tensors.
//!   Optimizer states, step counters and pickled `argparse.Namespace` objects beside it are parsed
//!   as opaque pickle objects and never interpreted.
//! - safetensors files with the same key names.
//!
//! Wrapper prefixes that training tools add to every key (`_orig_mod.` from `torch.compile`,
//! `module.` from DDP / DataParallel, in any stack) are recognised and removed. A tensor is only
//! checked when it is read: an unused buffer stored in a layout we cannot read (a transposed
//! view) does not make the file unusable. The pickle's `byteorder` record is honoured
//! (big-endian files are byte-swapped on read). Every tensor read is checked for non-finite
//! values (NaN, infinity), and the error names the tensor. The zip's CRC of every entry read is
//! verified, so a damaged download is an error, not silently different weights.
//!
//! Element types: f32, f64, f16 and bf16 load as stored (and, as before, the integer types
//! candle represents: u8, u32, i32, i64). 8-bit floats (`F8_E4M3`, `F8_E5M2`, torch's
//! `float8_e4m3fn`, `float8_e5m2` and their `fnuz` variants) are widened exactly to bf16 when
//! read; [`Checkpoint::dtype`] reports bf16 for them and [`Checkpoint::stored_dtype_name`] the
//! stored format. A file with 8-bit weights and scale tensors beside them (`weight_scale`,
//! `scale_inv`, ...: scaled fp8 quantization) is refused when opened, because loading the
//! weights without their scales would give wrong results silently. Tensors of any other element
//! type (i16, i8, bool, complex, 4-bit floats, ...) are listed in [`Checkpoint::skipped`] and
//! are an error naming the tensor and its type only if the model needs one of them.
//!
//! Both are indexed first (names, shapes, dtypes, byte locations) and tensors are then streamed one
//! at a time on request, so building a model never holds two copies of its weights. Keys and shapes
//! are checked against the config before anything is built: a missing or mis-shaped tensor is an
//! error that names the file, the key and both shapes, never a silent partial load.

mod fp8;
mod pickle;
mod safetensors;
mod torch;

pub use torch::{index_pickle, IndexError, PickleIndex};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use fp8::F8;
use pickle::{Unpickled, Value};

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

/// How a tensor's elements are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// As the dtype it reads as.
    Native(DType),
    /// 8-bit floats, widened to bf16 when read (candle has no e5m2 dtype, and its e4m3 one has
    /// few kernels, so the stored format is kept apart from the dtype the tensor reads as).
    F8(F8),
}

impl Stored {
    fn size_in_bytes(self) -> usize {
        match self {
            Stored::Native(d) => d.size_in_bytes(),
            Stored::F8(_) => 1,
        }
    }

    /// The dtype a tensor stored this way reads as.
    fn reads_as(self) -> DType {
        match self {
            Stored::Native(d) => d,
            Stored::F8(_) => DType::BF16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stored::Native(d) => d.as_str(),
            Stored::F8(f) => f.name(),
        }
    }
}

/// One indexed tensor.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub shape: Vec<usize>,
    /// The dtype the tensor reads as (bf16 for 8-bit floats, which are widened).
    pub dtype: DType,
    stored: Stored,
    location: Location,
    /// Why this tensor cannot be read (e.g. a non-contiguous view); reported only if it is read.
    unreadable: Option<String>,
}

impl TensorEntry {
    fn new(shape: Vec<usize>, stored: Stored, location: Location) -> Self {
        Self {
            shape,
            dtype: stored.reads_as(),
            stored,
            location,
            unreadable: None,
        }
    }

    /// Byte size in the file, `None` when the shape overflows.
    fn num_bytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.stored.size_in_bytes(), |n, &d| n.checked_mul(d))
    }

    /// The element type as stored in the file: the dtype's name (`f32`, `bf16`, ...), or
    /// `f8e4m3`, `f8e5m2`, `f8e4m3fnuz`, `f8e5m2fnuz` for 8-bit floats read as bf16.
    pub fn stored_dtype_name(&self) -> &'static str {
        self.stored.name()
    }

    /// Why the tensor cannot be read, if it cannot.
    pub fn unreadable(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }
}

/// A tensor that is indexed by name and shape but can never be loaded as weights.
#[derive(Debug, Clone)]
struct Unusable {
    /// `None` when the tensor record is too malformed to give one.
    shape: Option<Vec<usize>>,
    why: Why,
}

#[derive(Debug, Clone)]
enum Why {
    /// An element type we do not load (`I16`, `BOOL`, `torch.IntStorage`, ...), as the file
    /// spells it.
    Dtype(String),
    /// A pickled tensor record that does not have the layout torch writes.
    Malformed(String),
}

impl Unusable {
    /// Completes "tensor `name` ...".
    fn reason(&self) -> String {
        match &self.why {
            Why::Dtype(d) => format!(
                "is stored as {d}, which cannot be loaded as model weights; convert the \
                 checkpoint to f32, f16 or bf16"
            ),
            Why::Malformed(m) => format!("has a malformed tensor record ({m})"),
        }
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
    /// Tensors that can never be loaded (other element types, malformed records), by name.
    unusable: BTreeMap<String, Unusable>,
    /// The names of `unusable`, for [`Self::skipped`].
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

    /// Refuses files that have no loadable weights, or 8-bit weights that need scales.
    fn ensure_loadable(&self) -> Result<()> {
        if self.entries.is_empty() {
            let reason = if self.unusable.is_empty() {
                format!(
                    "no floating-point tensors at the top level or under {}",
                    WEIGHT_KEYS.map(|k| format!("\"{k}\"")).join(", ")
                )
            } else {
                let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
                for u in self.unusable.values() {
                    let kind = match &u.why {
                        Why::Dtype(d) => d.clone(),
                        Why::Malformed(_) => "malformed tensor records".to_string(),
                    };
                    *kinds.entry(kind).or_default() += 1;
                }
                let kinds: Vec<String> = kinds
                    .into_iter()
                    .map(|(kind, n)| format!("{kind} ({n})"))
                    .collect();
                format!(
                    "its only tensors cannot be loaded as model weights: {}",
                    kinds.join(", ")
                )
            };
            return Err(Error::NoWeights {
                path: self.path.clone(),
                reason,
            });
        }
        // Scaled fp8 stores `weight * scale` as (fp8 weight, scale); without its scale a weight
        // is off by an arbitrary factor, so such files are refused rather than loaded wrong.
        let has_fp8 = self
            .entries
            .values()
            .any(|e| matches!(e.stored, Stored::F8(_)));
        let scale = self.entries.keys().chain(self.unusable.keys()).find(|k| {
            let last = k.rsplit('.').next().unwrap_or(k);
            last.to_ascii_lowercase().contains("scale")
        });
        if let (true, Some(scale)) = (has_fp8, scale) {
            return Err(Error::NotACheckpoint {
                path: self.path.clone(),
                reason: format!(
                    "it holds 8-bit float weights with scale tensors beside them (e.g. \
                     `{scale}`): scaled fp8 quantization is not supported; use a bf16, f16 or \
                     f32 copy of the model"
                ),
            });
        }
        Ok(())
    }

    /// The error for a tensor that is indexed but can never be loaded, if `name` is one.
    fn unusable_error(&self, name: &str) -> Option<Error> {
        self.unusable.get(name).map(|u| Error::UnusableTensor {
            path: self.path.clone(),
            key: name.to_string(),
            reason: u.reason(),
        })
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

    /// Tensors that cannot be loaded as weights (other element types, malformed records): not
    /// an error unless the model needs one of them.
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

    /// Key → shape of every indexed tensor, including those that cannot be loaded (so that
    /// config detection sees the model the file holds, and loading it names the bad tensor).
    pub fn shape_map(&self) -> BTreeMap<String, Vec<usize>> {
        let unusable = self
            .unusable
            .iter()
            .filter_map(|(k, u)| Some((k.clone(), u.shape.clone()?)));
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.shape.clone()))
            .chain(unusable)
            .collect()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The dtype most of the stored weights have, as they read (bf16 for 8-bit floats, which
    /// widen to it exactly; [`Self::stored_dtype_name`] names the stored format).
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

    /// The element type most of the stored weights have, as stored: [`Self::dtype`]'s name,
    /// except `f8e4m3` / `f8e5m2` / `f8e4m3fnuz` / `f8e5m2fnuz` for 8-bit floats.
    pub fn stored_dtype_name(&self) -> &'static str {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for e in self.entries.values() {
            let slot = counts.entry(e.stored.name()).or_default();
            *slot = slot.saturating_add(e.num_bytes().unwrap_or(0));
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or(DType::F32.as_str(), |(name, _)| name)
    }

    /// Checks that every expected key exists with its shape and a loadable element type. Extra
    /// keys are ignored.
    pub fn validate(&self, expected: &[(String, Vec<usize>)], model: &str) -> Result<()> {
        // A needed tensor of the wrong element type is named as such, not as missing.
        if let Some(e) = expected.iter().find_map(|(k, _)| self.unusable_error(k)) {
            return Err(e);
        }
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

    /// Reads one tensor in the dtype it reads as (its stored dtype; bf16 for 8-bit floats), on
    /// the CPU.
    pub fn read_native(&self, name: &str) -> Result<Tensor> {
        let dtype = self.entries.get(name).map_or(DType::F32, |e| e.dtype);
        self.read(name, dtype, &Device::Cpu)
    }

    /// Reads one tensor, converted to `dtype`, on `device`.
    pub fn read(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let Some(entry) = self.entries.get(name) else {
            return Err(self
                .unusable_error(name)
                .unwrap_or_else(|| Error::MissingKeys {
                    path: self.path.clone(),
                    model: "requested".into(),
                    missing: vec![name.to_string()],
                }));
        };
        let damaged = |reason: String| Error::NotACheckpoint {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {reason}"),
        };
        if let Some(why) = &entry.unreadable {
            return Err(damaged(why.clone()));
        }
        if dtype.is_float() && !entry.dtype.is_float() {
            return Err(Error::UnusableTensor {
                path: self.path.clone(),
                key: name.to_string(),
                reason: format!(
                    "is stored as {} (integers), which cannot be loaded as model weights; \
                     convert the checkpoint to f32, f16 or bf16",
                    entry.dtype.as_str()
                ),
            });
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
            let width = entry.stored.size_in_bytes();
            if width > 1 {
                bytes.chunks_exact_mut(width).for_each(<[u8]>::reverse);
            }
        }
        let non_finite = match entry.stored {
            Stored::Native(d) => count_non_finite(&bytes, d),
            Stored::F8(f) => f.count_non_finite(&bytes),
        };
        if non_finite > 0 {
            return Err(Error::NonFinite(format!(
                "{}: tensor `{name}` holds {non_finite} non-finite value(s) (NaN or infinity): the \
                 checkpoint is damaged; use another copy",
                self.path.display()
            )));
        }
        let t = match entry.stored {
            Stored::Native(d) => Tensor::from_raw_buffer(&bytes, d, &entry.shape, &Device::Cpu)?,
            Stored::F8(f) => Tensor::from_vec(
                f.widen_to_bf16(&bytes),
                entry.shape.as_slice(),
                &Device::Cpu,
            )?,
        };
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

/// Removes wrapper prefixes shared by every loadable key (see [`WRAPPER_PREFIXES`]), in any
/// stack, from every key (the unusable tensors come from the same wrapped `state_dict`).
#[allow(clippy::type_complexity)]
fn strip_wrapper_prefixes(
    mut entries: BTreeMap<String, TensorEntry>,
    mut unusable: BTreeMap<String, Unusable>,
) -> (
    BTreeMap<String, TensorEntry>,
    BTreeMap<String, Unusable>,
    Vec<String>,
) {
    fn strip<V>(map: BTreeMap<String, V>, prefix: &str) -> BTreeMap<String, V> {
        map.into_iter()
            .map(|(k, v)| match k.strip_prefix(prefix) {
                Some(rest) => (rest.to_string(), v),
                None => (k, v),
            })
            .collect()
    }
    let mut stripped = Vec::new();
    while let Some(prefix) = WRAPPER_PREFIXES
        .iter()
        .find(|p| !entries.is_empty() && entries.keys().all(|k| k.starts_with(*p)))
    {
        stripped.push(prefix.to_string());
        entries = strip(entries, prefix);
        unusable = strip(unusable, prefix);
    }
    (entries, unusable, stripped)
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
