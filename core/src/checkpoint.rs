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
}

impl TensorEntry {
    fn num_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
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
        let object = {
            let entry = zip
                .by_name(&pkl_name)
                .map_err(|e| not(format!("cannot read `{pkl_name}`: {e}")))?;
            let mut reader = BufReader::new(entry);
            let mut stack = Stack::empty();
            stack
                .read_loop(&mut reader)
                .and_then(|_| stack.finalize())
                .map_err(|e| not(format!("cannot parse the pickled object: {e}")))?
        };

        let Object::Dict(top) = object else {
            return Err(Error::NoWeights {
                path,
                reason: "the top-level object is not a dict".into(),
            });
        };
        let (weights_key, dict) = select_weights(top);
        let mut entries = BTreeMap::new();
        let mut skipped = Vec::new();
        for (name, value) in dict {
            let Object::Unicode(name) = name else {
                continue;
            };
            match value.into_tensor_info(Object::Unicode(name.clone()), Path::new(&dir)) {
                Ok(Some(info)) => {
                    let layout = &info.layout;
                    if !layout.is_contiguous() {
                        return Err(not(format!(
                            "tensor `{name}` is stored non-contiguously, which is not supported"
                        )));
                    }
                    entries.insert(
                        name,
                        TensorEntry {
                            shape: layout.dims().to_vec(),
                            dtype: info.dtype,
                            location: Location::Zip {
                                entry: info.path,
                                offset: layout.start_offset() as u64,
                            },
                        },
                    );
                }
                Ok(None) => {}
                // Storages candle cannot represent (int32, bool, ...): never model weights.
                Err(_) => skipped.push(name),
            }
        }
        let ckpt = Self {
            path,
            format: Format::PyTorchZip,
            entries,
            weights_key,
            skipped,
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
            };
            if end < begin || (end - begin) as usize != entry.num_bytes() {
                return Err(bad("data_offsets do not match its shape and dtype"));
            }
            if data_start + end > len {
                return Err(bad(
                    "data lies past the end of the file (truncated download?)",
                ));
            }
            entries.insert(name, entry);
        }
        let ckpt = Self {
            path,
            format: Format::Safetensors,
            entries,
            weights_key: None,
            skipped,
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
            counts.entry(e.dtype.as_str()).or_insert((0, e.dtype)).0 += e.num_bytes();
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
        let mut bytes = vec![0u8; entry.num_bytes()];
        let io = |e: std::io::Error| Error::io(&self.path, e);
        match &entry.location {
            Location::File { offset } => {
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
                let mut r = zip.by_name(zname).map_err(|e| Error::NotACheckpoint {
                    path: self.path.clone(),
                    reason: format!("tensor `{name}`: cannot open `{zname}`: {e}"),
                })?;
                std::io::copy(&mut r.by_ref().take(*offset), &mut std::io::sink()).map_err(io)?;
                r.read_exact(&mut bytes)
                    .map_err(|e| Error::NotACheckpoint {
                        path: self.path.clone(),
                        reason: format!("tensor `{name}`: data is shorter than its shape ({e})"),
                    })?;
            }
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
