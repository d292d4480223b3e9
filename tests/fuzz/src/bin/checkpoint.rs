//! Fuzz target: checkpoint files (`Checkpoint::open` + `read_native` of every tensor) and raw
//! `torch.save` pickles (`index_pickle`).
//!
//! The first input byte picks the route, because the zip CRC rejects most mutations of a whole
//! `.pt` file: even = the rest is a `data.pkl` pickle; odd = the rest is a checkpoint file
//! (`.pt` zip or `.safetensors`), written to one temp file per process and opened by path.

use std::path::PathBuf;

fn main() {
    let path: PathBuf =
        std::env::temp_dir().join(format!("arpg-fuzz-checkpoint-{}.bin", std::process::id()));
    // `fuzz_nohook!`, as the other targets: a panic that escapes, or an abort, is a crash. (The
    // pickle reader is arpg-core's own and catches no panics: it must return errors.)
    afl::fuzz_nohook!(|data: &[u8]| {
        let Some((&route, rest)) = data.split_first() else {
            return;
        };
        if route % 2 == 0 {
            let _ = arpg_core::checkpoint::index_pickle(rest, "archive/data");
        } else {
            if std::fs::write(&path, rest).is_err() {
                return;
            }
            if let Ok(ckpt) = arpg_core::checkpoint::Checkpoint::open(&path) {
                for name in ckpt.entries().keys() {
                    let _ = ckpt.read_native(name);
                }
            }
        }
    });
    let _ = std::fs::remove_file(&path);
}
