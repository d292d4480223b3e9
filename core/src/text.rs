//! Text files users bring (token JSON, configs beside checkpoints, `classes.txt`): UTF-8 with or
//! without a byte order mark (Windows tools write one; RFC 8259 lets a JSON reader ignore it), or
//! UTF-16 with its byte order mark. Line ends may be LF or CRLF (JSON parsers and `str::lines`
//! accept both). Anything else is an error that says which encoding was found.

use std::path::Path;

use crate::error::{Error, Result};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes a text file's bytes (see the module doc); the error says what the bytes are.
pub fn decode(bytes: &[u8]) -> std::result::Result<String, String> {
    let utf16 = |bytes: &[u8], unit: fn([u8; 2]) -> u16, name: &str| {
        if !bytes.len().is_multiple_of(2) {
            return Err(format!(
                "{name} text with an odd number of bytes (truncated?)"
            ));
        }
        let units: Vec<u16> = bytes.chunks_exact(2).map(|b| unit([b[0], b[1]])).collect();
        String::from_utf16(&units).map_err(|_| format!("invalid {name} text"))
    };
    match bytes {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes, "UTF-16 (little-endian)"),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes, "UTF-16 (big-endian)"),
        _ => {
            let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
            // No text file holds a NUL; UTF-16 without a byte order mark is ASCII with every
            // other byte zero (which is valid UTF-8, so it must be caught before decoding).
            if let Some(at) = body.iter().position(|&b| b == 0) {
                return Err(if at < 2 {
                    "UTF-16 text without a byte order mark: save it as UTF-8".to_string()
                } else {
                    format!("not a text file (a NUL byte at offset {at})")
                });
            }
            String::from_utf8(body.to_vec()).map_err(|e| {
                let at = e.utf8_error().valid_up_to();
                format!("not UTF-8 text (invalid byte at offset {at}): save it as UTF-8")
            })
        }
    }
}

/// Reads a text file (see the module doc), at most `max_bytes` long.
pub fn read(path: &Path, max_bytes: u64) -> Result<String> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > max_bytes {
        return Err(Error::InvalidRequest(format!(
            "{}: {} MiB is too large for a text file of this kind (at most {} MiB)",
            path.display(),
            len >> 20,
            max_bytes >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes).map_err(|why| Error::InvalidRequest(format!("{}: {why}", path.display())))
}

/// The largest config or class list read (bytes).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn byte_order_marks_are_read_and_other_encodings_named() {
        assert_eq!(
            decode(b"\xEF\xBB\xBF{\"a\": 1}\r\n").expect("utf8 bom"),
            "{\"a\": 1}\r\n"
        );
        assert_eq!(decode(b"{}").expect("plain"), "{}");
        let le: Vec<u8> = [0xFF, 0xFE, b'{', 0, b'}', 0].to_vec();
        assert_eq!(decode(&le).expect("utf16le"), "{}");
        let be: Vec<u8> = [0xFE, 0xFF, 0, b'{', 0, b'}'].to_vec();
        assert_eq!(decode(&be).expect("utf16be"), "{}");
        assert!(decode(&[b'{', 0, b'}', 0])
            .expect_err("utf16 without bom")
            .contains("UTF-16"));
        assert!(decode(b"caf\xE9")
            .expect_err("latin-1")
            .contains("not UTF-8"));
    }
}
