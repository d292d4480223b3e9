//! Tiled encode and decode of large canvases against the whole-canvas pass, on a canvas where
//! both fit: the shipped tokenizer on a 256x256 photo (64x64 cells) in tiles of 32 sharing 8.

mod common;

use arpg_core::vq::Tiling;
use arpg_core::{loader, shipped};
use candle_core::Device;

use common::field_photo as photo;

/// Mean absolute difference in 8-bit levels.
fn mad(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn tiled_encode_and_decode_match_the_whole_canvas_pass() {
    let vq = loader::load_vq(shipped::vq_path(), None, &Device::Cpu).expect("shipped VQ");
    let p = vq.config().downsample();
    let (rows, cols) = (64, 64);
    let rgb = photo(cols * p, rows * p);
    let whole = Tiling {
        threshold: usize::MAX,
        ..Tiling::default()
    };
    let tiled = Tiling {
        tile: 32,
        overlap: 8,
        threshold: 0,
    };
    assert!(tiled.applies(rows, cols) && !whole.applies(rows, cols));
    // Encoding: the tiled tokens reconstruct the photo as well as the whole pass's (a token is
    // the nearest code, so near-ties flip between the two; measured: 65% identical tokens,
    // reconstruction error 31.9 vs 32.5 levels).
    let a = vq
        .encode_rgb8(&rgb, cols * p, rows * p, whole)
        .expect("encode");
    let b = vq
        .encode_rgb8(&rgb, cols * p, rows * p, tiled)
        .expect("encode tiled");
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
    let recon_a = vq.decode_rgb8(&a, rows, cols, whole).expect("decode");
    let recon_b = vq.decode_rgb8(&b, rows, cols, whole).expect("decode");
    let (err_a, err_b) = (mad(&recon_a, &rgb), mad(&recon_b, &rgb));
    assert!(same > 0.5, "only {same:.3} of the tokens agree");
    assert!(
        err_b <= 1.05 * err_a,
        "tiled tokens reconstruct worse: {err_b:.2} vs {err_a:.2}"
    );
    // Decoding the same tokens: the tiles differ from the whole pass by less than the tokenizer
    // differs from the photo (measured: 16.3 against 32.5 levels).
    let tiled_px = vq.decode_rgb8(&a, rows, cols, tiled).expect("decode tiled");
    let diff = mad(&tiled_px, &recon_a);
    assert!(
        diff < 0.6 * err_a,
        "tiled decode differs by {diff:.2} levels (tokenizer error {err_a:.2})"
    );
    // Below the threshold nothing changes.
    let small = Tiling {
        threshold: rows * cols,
        ..tiled
    };
    assert_eq!(
        vq.decode_rgb8(&a, rows, cols, small).expect("decode"),
        recon_a
    );
}

/// The in-context preview palette holds each code as decoded among copies of itself: a uniform
/// 3x3 grid of a code decodes to exactly its tile in the middle.
#[test]
fn the_in_context_palette_is_the_code_among_itself() {
    use arpg_core::vq::Palette;
    let vq = loader::load_vq(shipped::vq_path(), None, &Device::Cpu).expect("shipped VQ");
    let p = vq.config().downsample();
    let palette = Palette::compute_in_context(&vq, 256).expect("palette");
    let alone = Palette::compute(&vq, 256).expect("palette");
    assert_eq!(palette.codes(), vq.config().codebook_size);
    for code in [0u32, 17, 511, 1023] {
        let grid = vq
            .decode_rgb8(&[code; 9], 3, 3, Tiling::default())
            .expect("decode");
        let middle: Vec<u8> = (p..2 * p)
            .flat_map(|y| grid[(y * 3 * p + p) * 3..(y * 3 * p + 2 * p) * 3].to_vec())
            .collect();
        assert_eq!(palette.tile(code), middle.as_slice(), "code {code}");
    }
    assert_ne!(palette.tiles, alone.tiles, "a code alone decodes otherwise");
}
