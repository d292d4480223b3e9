//! Fuzz target: image and mask import (`decode_image`, `decode_mask`): PNG / JPEG decoding under
//! the size limits, EXIF orientation, the `arpg` metadata check and the alpha/grey mask choice.

use std::path::Path;

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let _ = arpg_core::document::decode_image(data, Path::new("fuzz"));
        let _ = arpg_core::document::decode_mask(data, Path::new("fuzz"));
    });
}
