//! A pickle reader for `torch.save`'s `data.pkl`, protocols 2 to 5, that never executes code.
//!
//! Python's unpickler imports and calls whatever the stream names; this one only records what
//! it would have called. A `GLOBAL` becomes a name, `REDUCE` / `NEWOBJ` become an opaque call
//! record (callable + arguments), and a persistent id (how torch refers to its storages) stays
//! the value it was pickled as. The one call that is interpreted is `collections.OrderedDict()`,
//! which becomes an empty dict for the following `SETITEMS` to fill, because that is how every
//! `state_dict` is pickled. Tensor records are recognised later, by the checkpoint indexer.
//!
//! Objects live in one arena and values refer to them by index, for three reasons: the memo
//! and `DUP` share an object in O(1) (no deep copies of a big dict), mutation after memoization
//! is seen through every reference (as in Python), and dropping the result never recurses, so
//! neither a deeply nested nor a self-referencing input can overflow the stack.
//!
//! Every length is checked against the bytes left before anything is allocated, and the
//! number of values created is capped, so a malformed input is an error, never a panic or an
//! allocation larger than a small multiple of the input.

mod opcodes;

use opcodes::{long_le, unsupported_name};
use std::collections::HashMap;
use std::rc::Rc;

/// Most values (stack pushes, arena objects and memo entries together) one pickle may create.
/// A weights pickle needs a few dozen per tensor; this allows hundreds of thousands of tensors
/// while bounding memory to well under a gigabyte whatever the input.
const MAX_VALUES: usize = 1 << 24;

/// Highest pickle protocol this reader knows (Python 3.8+ writes up to 5).
const HIGHEST_PROTOCOL: u8 = 5;

/// A pickled value. Containers and other objects are indices into [`Unpickled`]'s arena.
#[derive(Debug, Clone)]
pub(super) enum Value {
    None,
    Bool,
    Int(i64),
    /// An integer outside `i64` (never a size or an offset of a readable tensor).
    BigInt,
    Float,
    Str(Rc<str>),
    /// `bytes` / `bytearray`; the content is never needed, so it is not kept.
    Bytes,
    Obj(usize),
}

/// An object of the arena.
#[derive(Debug)]
pub(super) enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Items in insertion order; a repeated key keeps both (readers take the last).
    Dict(Vec<(Value, Value)>),
    /// `set` / `frozenset`; members are never needed.
    Set,
    /// A `module.name` reference (`GLOBAL`, `STACK_GLOBAL`), never imported.
    Global {
        module: String,
        name: String,
    },
    /// What `REDUCE` / `NEWOBJ` would have returned: `callable(*args)`, not called.
    Call {
        callable: Value,
        args: Value,
    },
    /// A persistent id (`BINPERSID`): torch's reference to a storage.
    PersistentId(Value),
}

/// The result of reading a pickle: the top-level value and the objects it refers to.
#[derive(Debug)]
pub(super) struct Unpickled {
    objects: Vec<Obj>,
    root: Value,
}

impl Unpickled {
    pub(super) fn root(&self) -> &Value {
        &self.root
    }

    fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objects.get(*i),
            _ => None,
        }
    }

    pub(super) fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.obj(v)? {
            Obj::Dict(items) => Some(items),
            _ => None,
        }
    }

    pub(super) fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match self.obj(v)? {
            Obj::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// `(module, name)` of a global reference.
    pub(super) fn global(&self, v: &Value) -> Option<(&str, &str)> {
        match self.obj(v)? {
            Obj::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// `(callable, args)` of a call record.
    pub(super) fn call(&self, v: &Value) -> Option<(&Value, &Value)> {
        match self.obj(v)? {
            Obj::Call { callable, args } => Some((callable, args)),
            _ => None,
        }
    }

    pub(super) fn persistent_id(&self, v: &Value) -> Option<&Value> {
        match self.obj(v)? {
            Obj::PersistentId(pid) => Some(pid),
            _ => None,
        }
    }
}

/// Why a pickle could not be read. `pos` is the byte offset of the opcode.
#[derive(Debug, thiserror::Error)]
pub(super) enum PickleError {
    #[error("opcode 0x{op:02x} ({name}) at byte {pos} is not supported in a checkpoint")]
    Unsupported {
        op: u8,
        name: &'static str,
        pos: usize,
    },
    #[error("unknown opcode 0x{op:02x} at byte {pos}")]
    Unknown { op: u8, pos: usize },
    #[error("{what} at byte {pos}")]
    Malformed { what: String, pos: usize },
    #[error("the pickle ends without a STOP opcode (truncated)")]
    NoStop,
}

/// Reads one pickle from `input`. Bytes after its STOP are ignored, as Python does.
pub(super) fn load(input: &[u8]) -> Result<Unpickled, PickleError> {
    let mut m = Machine {
        input,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
        created: 0,
    };
    let root = m.run()?;
    Ok(Unpickled {
        objects: m.objects,
        root,
    })
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Where the opcode being executed starts (for error messages).
    op_pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each open MARK (Python's "metastack").
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Obj>,
    /// Values created so far, against [`MAX_VALUES`].
    created: usize,
}

impl<'a> Machine<'a> {
    fn err<T>(&self, what: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError::Malformed {
            what: what.into(),
            pos: self.op_pos,
        })
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.op_pos = self.pos;
            let Some(&op) = self.input.get(self.pos) else {
                return Err(PickleError::NoStop);
            };
            self.pos += 1;
            match op {
                // Framing and protocol.
                0x80 => {
                    let proto = self.byte()?;
                    if proto > HIGHEST_PROTOCOL {
                        return self.err(format!(
                            "pickle protocol {proto} is newer than {HIGHEST_PROTOCOL}"
                        ));
                    }
                }
                // FRAME: frames only group opcodes for buffered reading; the length is not needed.
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),

                // Stack manipulation.
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top)?;
                }

                // Scalars.
                b'N' => self.push(Value::None)?,
                0x88 | 0x89 => self.push(Value::Bool)?,
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = usize::from(self.byte()?);
                    let bytes = self.take(n)?;
                    self.push(long_le(bytes))?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array()?);
                    let Ok(n) = usize::try_from(n) else {
                        return self.err("LONG4 with a negative length");
                    };
                    let bytes = self.take(n)?;
                    self.push(long_le(bytes))?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                b'I' => {
                    let line = self.line()?;
                    // Protocol 0 spells booleans as INT 00 / 01.
                    let v = match line {
                        b"00" | b"01" => Value::Bool,
                        _ => self.decimal(line)?,
                    };
                    self.push(v)?;
                }
                b'L' => {
                    let line = self.line()?;
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    let v = self.decimal(digits)?;
                    self.push(v)?;
                }
                b'F' => {
                    let line = self.line()?;
                    if std::str::from_utf8(line)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .is_none()
                    {
                        return self.err("FLOAT with an invalid number");
                    }
                    self.push(Value::Float)?;
                }

                // Strings and bytes.
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?);
                    self.push_str(n as usize)?;
                }
                0x8c => {
                    let n = self.byte()?;
                    self.push_str(usize::from(n))?;
                }
                0x8d => {
                    let n = self.len8()?;
                    self.push_str(n)?;
                }
                // BINSTRING: Python 2 `str`, which Python 3 decodes to `str` too.
                b'T' => {
                    let n = i32::from_le_bytes(self.array()?);
                    let Ok(n) = usize::try_from(n) else {
                        return self.err("BINSTRING with a negative length");
                    };
                    self.push_str(n)?;
                }
                b'U' => {
                    let n = self.byte()?;
                    self.push_str(usize::from(n))?;
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.array()?);
                    self.take(n as usize)?;
                    self.push(Value::Bytes)?;
                }
                b'C' => {
                    let n = self.byte()?;
                    self.take(usize::from(n))?;
                    self.push(Value::Bytes)?;
                }
                0x8e | 0x96 => {
                    let n = self.len8()?;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }

                // Containers.
                b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let floor = self.floor();
                    if self.stack.len() < floor + n {
                        return self.err(format!("TUPLE{n} with fewer than {n} items"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_obj(Obj::Tuple(items))?;
                }
                b']' => self.push_obj(Obj::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.extend_top(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items)?;
                }
                b'}' => self.push_obj(Obj::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Obj::Dict(pairs))?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items_top(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items_top(pairs)?;
                }
                0x8f => self.push_obj(Obj::Set)?,
                0x90 => {
                    self.pop_mark()?;
                    match self.top_obj()? {
                        Some(Obj::Set | Obj::Call { .. }) => {}
                        _ => return self.err("ADDITEMS on something that is not a set"),
                    }
                }
                0x91 => {
                    self.pop_mark()?;
                    self.push_obj(Obj::Set)?;
                }

                // Names and calls: recorded, never resolved or executed.
                b'c' => {
                    let module = String::from_utf8_lossy(self.line()?).into_owned();
                    let name = String::from_utf8_lossy(self.line()?).into_owned();
                    self.push_obj(Obj::Global { module, name })?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return self.err("STACK_GLOBAL with a module or name that is not a string");
                    };
                    self.push_obj(Obj::Global {
                        module: module.to_string(),
                        name: name.to_string(),
                    })?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let is_ordered_dict = matches!(
                        self.obj(&callable),
                        Some(Obj::Global { module, name })
                            if module == "collections" && name == "OrderedDict"
                    );
                    if is_ordered_dict {
                        // Its items follow as SETITEMS (OrderedDict's __reduce__).
                        self.push_obj(Obj::Dict(Vec::new()))?;
                    } else {
                        self.push_obj(Obj::Call { callable, args })?;
                    }
                }
                0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push_obj(Obj::Call { callable, args })?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push_obj(Obj::Call { callable, args })?;
                }
                // BUILD sets an object's state (`__setstate__` / `__dict__`); no object read
                // here has state that matters (a state_dict's `_metadata` is not needed).
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_obj(Obj::PersistentId(pid))?;
                }

                // Memo.
                b'q' => {
                    let i = self.byte()?;
                    self.memo_put(u32::from(i))?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let Ok(i) = u32::try_from(self.memo.len()) else {
                        return self.err("memo full");
                    };
                    self.memo_put(i)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let i = self.memo_index(line)?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.byte()?;
                    self.memo_get(u32::from(i))?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_get(i)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let i = self.memo_index(line)?;
                    self.memo_get(i)?;
                }

                op => {
                    return Err(match unsupported_name(op) {
                        Some(name) => PickleError::Unsupported {
                            op,
                            name,
                            pos: self.op_pos,
                        },
                        None => PickleError::Unknown {
                            op,
                            pos: self.op_pos,
                        },
                    })
                }
            }
        }
    }

    // ---- Input ----

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let input: &'a [u8] = self.input;
        match self
            .pos
            .checked_add(n)
            .and_then(|end| input.get(self.pos..end))
        {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => self.err(format!(
                "an argument of {n} byte(s) runs past the end of the pickle ({} left)",
                input.len().saturating_sub(self.pos)
            )),
        }
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(bytes);
        Ok(a)
    }

    /// An 8-byte length; anything past the input is caught by [`Self::take`].
    fn len8(&mut self) -> Result<usize, PickleError> {
        let n = u64::from_le_bytes(self.array()?);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A newline-terminated argument of the text opcodes, without its newline.
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("a text argument without its newline");
        };
        let line = self.take(n + 1)?;
        Ok(&line[..n])
    }

    fn decimal(&self, digits: &[u8]) -> Result<Value, PickleError> {
        let text = std::str::from_utf8(digits).unwrap_or_default().trim();
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Value::Int(v));
        }
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Value::BigInt)
        } else {
            self.err("an integer that is not a decimal number")
        }
    }

    fn memo_index(&self, line: &[u8]) -> Result<u32, PickleError> {
        match std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()) {
            Some(i) => Ok(i),
            None => self.err("a memo index that is not a number"),
        }
    }

    // ---- Stack ----

    /// Height of the stack at the innermost open MARK: nothing below it may be popped.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn count(&mut self) -> Result<(), PickleError> {
        self.created += 1;
        if self.created > MAX_VALUES {
            return self.err(format!(
                "more than {MAX_VALUES} values: not a weights pickle"
            ));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        self.count()?;
        self.stack.push(v);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> Result<(), PickleError> {
        self.count()?;
        self.objects.push(obj);
        self.push(Value::Obj(self.objects.len() - 1))
    }

    fn push_str(&mut self, n: usize) -> Result<(), PickleError> {
        let bytes = self.take(n)?;
        let s: Rc<str> = String::from_utf8_lossy(bytes).into();
        self.push(Value::Str(s))
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        if self.stack.len() > self.floor() {
            if let Some(v) = self.stack.pop() {
                return Ok(v);
            }
        }
        self.err("an opcode needs more values than the stack holds")
    }

    fn top(&self) -> Result<&Value, PickleError> {
        match self.stack.last() {
            Some(v) if self.stack.len() > self.floor() => Ok(v),
            _ => self.err("an opcode needs a value but the stack is empty"),
        }
    }

    /// The object on top of the stack (`None` when the top is not an object).
    fn top_obj(&mut self) -> Result<Option<&mut Obj>, PickleError> {
        let i = match self.top()? {
            Value::Obj(i) => *i,
            _ => return Ok(None),
        };
        Ok(self.objects.get_mut(i))
    }

    fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objects.get(*i),
            _ => None,
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        match self.marks.pop() {
            // The stack never shrinks below an open mark, so `m` is within it.
            Some(m) if m <= self.stack.len() => Ok(self.stack.split_off(m)),
            _ => self.err("an opcode needs a MARK but none is open"),
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return self.err("a dict with an odd number of keys and values");
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    /// APPEND / APPENDS: onto a list; an opaque object's `append` is not run.
    fn extend_top(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self.top_obj()? {
            Some(Obj::List(list)) => {
                list.extend(items);
                Ok(())
            }
            Some(Obj::Call { .. }) => Ok(()),
            _ => self.err("APPEND onto something that is not a list"),
        }
    }

    /// SETITEM / SETITEMS: into a dict; an opaque object's `__setitem__` is not run.
    fn set_items_top(&mut self, pairs: Vec<(Value, Value)>) -> Result<(), PickleError> {
        match self.top_obj()? {
            Some(Obj::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            Some(Obj::Call { .. }) => Ok(()),
            _ => self.err("SETITEM into something that is not a dict"),
        }
    }

    fn memo_put(&mut self, i: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        if self.memo.insert(i, v).is_none() {
            self.count()?;
        }
        Ok(())
    }

    fn memo_get(&mut self, i: u32) -> Result<(), PickleError> {
        match self.memo.get(&i) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo entry {i} is read before it is written")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_int(bytes: &[u8]) -> Option<i64> {
        match load(bytes).expect("load").root {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn integers_of_every_width() {
        assert_eq!(root_int(b"\x80\x02J\xff\xff\xff\xff."), Some(-1));
        assert_eq!(root_int(b"\x80\x02M\x34\x12."), Some(0x1234));
        assert_eq!(root_int(b"\x80\x02\x8a\x00."), Some(0));
        assert_eq!(root_int(b"\x80\x02\x8a\x01\xff."), Some(-1));
        assert_eq!(
            root_int(b"\x80\x02\x8a\x05\x00\x00\x00\x00\x01."),
            Some(1 << 32)
        );
        // 2^63 needs a ninth byte for its sign and does not fit an i64.
        let big = b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.";
        assert!(matches!(load(big).expect("load").root, Value::BigInt));
        assert_eq!(root_int(b"I-42\n."), Some(-42));
        assert_eq!(root_int(b"L7L\n."), Some(7));
    }

    #[test]
    fn memoized_dict_is_shared_and_filled_later() {
        // {} MEMOIZE, then MARK 'a' 1 SETITEMS, then a tuple of it and its memo copy.
        let p = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01aK\x01u\
                  h\x00\x86.";
        let u = load(p).expect("load");
        let t = u.tuple(u.root()).expect("tuple");
        let (a, b) = (u.dict(&t[0]).expect("dict"), u.dict(&t[1]).expect("dict"));
        assert_eq!(a.len(), 1);
        assert_eq!(
            b.len(),
            1,
            "the memo refers to the same dict, filled after MEMOIZE"
        );
    }

    #[test]
    fn ordered_dict_is_an_empty_dict_and_calls_are_records() {
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)R(X\x01\x00\x00\x00kcm\nf\n)Ru.";
        let u = load(p).expect("load");
        let d = u.dict(u.root()).expect("dict");
        assert_eq!(d.len(), 1);
        let (callable, _) = u.call(&d[0].1).expect("call record");
        assert_eq!(u.global(callable), Some(("m", "f")));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: [&[u8]; 12] = [
            b"",
            b"\x80\x02",
            b"\x80\x06N.",
            b"\x80\x04\x95\x01",
            b"X\xff\xff\xff\xffabc.",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff.",
            b"\x8b\xff\xff\xff\xff.",
            b"t.",
            b"0.",
            b"h\x05.",
            b"N\x86.",
            b"(N}u.",
        ];
        for c in cases {
            assert!(load(c).is_err(), "{c:?}");
        }
    }

    #[test]
    fn refused_opcodes_are_named() {
        let e = load(b"\x80\x05\x97.").expect_err("buffer").to_string();
        assert!(e.contains("0x97") && e.contains("NEXT_BUFFER"), "{e}");
        let e = load(b"P0\n.").expect_err("persid").to_string();
        assert!(e.contains("PERSID"), "{e}");
        let e = load(b"\xff").expect_err("unknown").to_string();
        assert!(e.contains("unknown opcode 0xff"), "{e}");
    }

    #[test]
    fn deep_nesting_and_cycles_are_harmless() {
        // 100k nested single-item lists, then a list that contains itself.
        let mut p = b"\x80\x04".to_vec();
        for _ in 0..100_000 {
            p.extend_from_slice(b"]");
        }
        for _ in 0..99_999 {
            p.extend_from_slice(b"a");
        }
        p.extend_from_slice(b"\x94h\x00a.");
        let u = load(&p).expect("load");
        drop(u);
    }
}
