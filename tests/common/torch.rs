//! Checkpoints built by hand, as `torch.save` and safetensors write them: pickles of protocol
//! 2, 4 and 5, any storage class, safetensors of any dtype. Shared by the checkpoint tests and
//! the CLI tests of the files users bring.
// Each test target uses its own subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// One tensor of a hand-built checkpoint: its storage holds `data`, the tensor is the
/// contiguous view of `shape` starting `offset` elements into it.
pub struct Stored {
    pub name: String,
    pub class: &'static str,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub data: Vec<u8>,
    /// Pickled as `torch.nn.Parameter` (`_rebuild_parameter` around the tensor).
    pub parameter: bool,
}

pub fn stored(name: &str, class: &'static str, shape: &[usize], data: Vec<u8>) -> Stored {
    Stored {
        name: name.to_string(),
        class,
        shape: shape.to_vec(),
        offset: 0,
        data,
        parameter: false,
    }
}

/// Writes pickles the way CPython's pickler does for `torch.save`, in protocol 2 (`GLOBAL`,
/// `BINPUT`, `BINUNICODE`) or 4 / 5 (one `FRAME`, `SHORT_BINUNICODE`, `STACK_GLOBAL`,
/// `MEMOIZE`), memoizing strings and globals and fetching repeats with `BINGET`.
pub struct Pickler {
    proto: u8,
    out: Vec<u8>,
    next_memo: usize,
    memo: HashMap<String, usize>,
}

impl Pickler {
    pub fn new(proto: u8) -> Self {
        Self {
            proto,
            out: Vec::new(),
            next_memo: 0,
            memo: HashMap::new(),
        }
    }

    pub fn op(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub fn memoize(&mut self) -> usize {
        let i = self.next_memo;
        self.next_memo += 1;
        if self.proto >= 4 {
            self.op(&[0x94]);
        } else if i < 256 {
            self.op(&[b'q', i as u8]);
        } else {
            self.op(b"r");
            self.op(&(i as u32).to_le_bytes());
        }
        i
    }

    pub fn get(&mut self, i: usize) {
        if i < 256 {
            self.op(&[b'h', i as u8]);
        } else {
            self.op(b"j");
            self.op(&(i as u32).to_le_bytes());
        }
    }

    pub fn str(&mut self, s: &str) {
        if let Some(&i) = self.memo.get(&format!("s:{s}")) {
            return self.get(i);
        }
        if self.proto >= 4 && s.len() < 256 {
            self.op(&[0x8c, s.len() as u8]);
        } else {
            self.op(b"X");
            self.op(&(s.len() as u32).to_le_bytes());
        }
        self.op(s.as_bytes());
        let i = self.memoize();
        self.memo.insert(format!("s:{s}"), i);
    }

    pub fn global(&mut self, module: &str, name: &str) {
        let key = format!("g:{module}.{name}");
        if let Some(&i) = self.memo.get(&key) {
            return self.get(i);
        }
        if self.proto >= 4 {
            self.str(module);
            self.str(name);
            self.op(&[0x93]);
        } else {
            self.op(format!("c{module}\n{name}\n").as_bytes());
        }
        let i = self.memoize();
        self.memo.insert(key, i);
    }

    pub fn int(&mut self, v: usize) {
        if v < 256 {
            self.op(&[b'K', v as u8]);
        } else if v < 65536 {
            self.op(b"M");
            self.op(&(v as u16).to_le_bytes());
        } else if v < (1 << 31) {
            self.op(b"J");
            self.op(&(v as i32).to_le_bytes());
        } else {
            // LONG1 with 8 bytes plus a zero sign byte, as Python writes 2^63 and up.
            self.op(&[0x8a, 9]);
            self.op(&(v as u64).to_le_bytes());
            self.op(&[0]);
        }
    }

    pub fn int_tuple(&mut self, values: &[usize]) {
        match values.len() {
            0 => self.op(b")"),
            n @ 1..=3 => {
                values.iter().for_each(|&v| self.int(v));
                self.op(&[0x84 + n as u8]);
            }
            _ => {
                self.op(b"(");
                values.iter().for_each(|&v| self.int(v));
                self.op(b"t");
            }
        }
        self.memoize();
    }

    pub fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b")R");
        self.memoize();
    }

    /// `torch._utils._rebuild_tensor_v2(('storage', class, key, 'cpu', numel), offset, size,
    /// stride, False, OrderedDict())`.
    pub fn tensor(&mut self, t: &Stored, key: &str, numel: usize) {
        if t.parameter {
            self.global("torch._utils", "_rebuild_parameter");
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b"((");
        self.str("storage");
        self.global("torch", t.class);
        self.str(key);
        self.str("cpu");
        self.int(numel);
        self.op(b"t");
        self.memoize();
        self.op(b"Q");
        self.int(t.offset);
        self.int_tuple(&t.shape);
        let mut stride = vec![1; t.shape.len()];
        for i in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * t.shape[i + 1];
        }
        self.int_tuple(&stride);
        self.op(&[0x89]);
        self.empty_ordered_dict();
        self.op(b"t");
        self.memoize();
        self.op(b"R");
        self.memoize();
        if t.parameter {
            // (tensor, requires_grad, backward_hooks)
            self.op(&[0x88]);
            self.empty_ordered_dict();
            self.op(&[0x87]);
            self.memoize();
            self.op(b"R");
            self.memoize();
        }
    }

    /// `{'model': OrderedDict(name -> tensor), 'step': 1000, 'lr': 0.1, 'note': b'..'}`.
    pub fn torch_save(mut self, tensors: &[Stored], element_sizes: &[usize]) -> Vec<u8> {
        self.op(b"}");
        self.memoize();
        self.op(b"(");
        self.str("model");
        self.empty_ordered_dict();
        self.op(b"(");
        for (i, (t, size)) in tensors.iter().zip(element_sizes).enumerate() {
            self.str(&t.name);
            self.tensor(t, &i.to_string(), t.data.len() / size);
        }
        self.op(b"u");
        self.str("step");
        self.int(1000);
        self.str("lr");
        self.op(b"G");
        self.op(&0.1f64.to_be_bytes());
        self.str("note");
        self.op(&[b'C', 2, b'o', b'k']);
        self.memoize();
        self.op(b"u.");
        let body = self.out;
        let mut out = vec![0x80, self.proto];
        if self.proto >= 4 {
            out.push(0x95);
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(&body);
        out
    }
}

pub fn element_size(class: &str) -> usize {
    match class {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        _ => 1,
    }
}

/// A `torch.save` zip: `archive/data.pkl`, `archive/byteorder`, `archive/data/<i>`.
pub fn write_pt(path: &Path, pickle: &[u8], storages: &[&[u8]]) {
    let file = std::fs::File::create(path).expect("create");
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut put = |name: &str, bytes: &[u8]| {
        zip.start_file(name, opts).expect("start");
        zip.write_all(bytes).expect("write");
    };
    put("archive/data.pkl", pickle);
    put("archive/byteorder", b"little");
    for (i, s) in storages.iter().enumerate() {
        put(&format!("archive/data/{i}"), s);
    }
    zip.finish().expect("finish");
}

pub fn write_torch_save(path: &Path, proto: u8, tensors: &[Stored]) {
    let sizes: Vec<usize> = tensors.iter().map(|t| element_size(t.class)).collect();
    let pickle = Pickler::new(proto).torch_save(tensors, &sizes);
    let storages: Vec<&[u8]> = tensors.iter().map(|t| t.data.as_slice()).collect();
    write_pt(path, &pickle, &storages);
}

/// A safetensors file of `(name, dtype, shape, bytes)`.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).expect("json");
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    std::fs::write(path, out).expect("write");
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
