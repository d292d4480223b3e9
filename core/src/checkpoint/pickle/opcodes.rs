//! Opcode arguments and names of the pickle reader: long integers, and the opcodes it refuses.

use super::Value;

/// A little-endian two's-complement integer (LONG1 / LONG4).
pub(super) fn long_le(bytes: &[u8]) -> Value {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    // Wider than 8 bytes fits only when the extra bytes merely repeat the sign.
    let (low, high) = bytes.split_at(bytes.len().min(8));
    if high.iter().any(|&b| b != fill) {
        return Value::BigInt;
    }
    let mut a = [fill; 8];
    a[..low.len()].copy_from_slice(low);
    let v = i64::from_le_bytes(a);
    if (v < 0) != negative {
        return Value::BigInt;
    }
    Value::Int(v)
}

/// Names of the opcodes Python knows that this reader refuses: they either need code execution
/// (`INST`, `OBJ`, the extension registry), out-of-band buffers, or escape decoding that torch
/// never writes.
pub(super) fn unsupported_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'P' => "PERSID",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}
