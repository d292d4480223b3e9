//! Fuzz target: the `arpg` PNG metadata reader (`read_metadata`): tEXt / zTXt / iTXt chunks before
//! or after the image data, decompression limits, JSON parsing and validation.

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let _ = arpg_core::document::read_metadata(data);
    });
}
