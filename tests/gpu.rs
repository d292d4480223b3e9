//! The engine's wgpu path on Mesa's software Vulkan (lavapipe), named explicitly: the tokenizer's
//! decoder as compute shaders against the CPU decode of the same tokens, `check-reference` on
//! wgpu (the transformer's cases and the decode), `arpg decode --device wgpu:N`, `arpg bench` on
//! wgpu, and the faults that fall back to the CPU (the transformer's forwards themselves:
//! `gpu_transformer.rs`).
//! A VQ-16-shaped decode of 256² costs minutes on lavapipe, so it is decoded here at 2x3 tokens.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/lavapipe.rs"]
mod lavapipe;
#[path = "common/texture.rs"]
mod texture;

use arpg_core::gpu::Gpu;
use arpg_core::reference::{check_reference, WeightFormat};
use arpg_core::sampler::Rng;
use arpg_core::{Backend, Tokenizer, VqConfig, VqModel};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use cli::{arpg, ok, s};

use lavapipe::lavapipe;

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// Mean and largest difference in 8-bit levels.
fn level_diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    (sum as f64 / a.len() as f64, max)
}

fn assert_gpu_matches_cpu(vq: VqModel, grids: &[(usize, usize)]) {
    let gpu = Gpu::open(lavapipe()).expect("lavapipe opens");
    let cpu = Tokenizer::from(vq.clone());
    let on_gpu = Tokenizer::on_gpu(vq, &gpu).expect("the decoder builds on lavapipe");
    let vocab = cpu.config().codebook_size;
    for (i, &(rows, cols)) in grids.iter().enumerate() {
        let tokens = random_tokens(rows * cols, vocab, i as u64);
        let want = cpu.decode_rgb8(&tokens, rows, cols).expect("cpu decode");
        let got = on_gpu.decode_rgb8(&tokens, rows, cols).expect("gpu decode");
        assert!(on_gpu.take_fault().is_none(), "the GPU decoder fell back");
        let (mean, max) = level_diff(&want, &got);
        assert!(
            mean <= 1.0,
            "{rows}x{cols}: mean difference {mean} levels (max {max}) from the CPU decode"
        );
    }
}

#[test]
fn the_shipped_tokenizer_decodes_on_wgpu_as_on_the_cpu() {
    let vq = arpg_core::loader::load_vq(arpg_core::shipped::vq_path(), None, &Device::Cpu)
        .expect("shipped tokenizer");
    // Square, wide and tall grids, and one cell.
    assert_gpu_matches_cpu(vq, &[(8, 8), (8, 13), (11, 8), (1, 1)]);
}

#[test]
fn a_vq16_shaped_tokenizer_decodes_on_wgpu_as_on_the_cpu() {
    let varmap = VarMap::new();
    let vq = VqModel::new(
        &VqConfig::vq_16(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("a VQ-16-shaped tokenizer with random weights");
    assert_gpu_matches_cpu(vq, &[(2, 3)]);
}

/// A canvas wider than the GPU decoder's pass but one the CPU decodes whole: the final decode
/// is the CPU's (the same tokens make the same image on every device), and the live preview
/// tiles it on the GPU within a few levels.
#[test]
fn a_canvas_wider_than_the_gpu_pass_decodes_as_on_the_cpu() {
    let vq = arpg_core::loader::load_vq(arpg_core::shipped::vq_path(), None, &Device::Cpu)
        .expect("shipped tokenizer");
    let gpu = Gpu::open(lavapipe()).expect("lavapipe opens");
    let decoder = arpg_core::gpu::vq_decoder::VqDecoder::new(&vq, &gpu).expect("builds");
    let cols = decoder.max_tile() + 5;
    let tokens = random_tokens(8 * cols, vq.config().codebook_size, 7);
    let on_gpu = Tokenizer::on_gpu(vq.clone(), &gpu).expect("builds");
    let want = Tokenizer::from(vq)
        .decode_rgb8(&tokens, 8, cols)
        .expect("cpu decode");
    let got = on_gpu.decode_rgb8(&tokens, 8, cols).expect("final decode");
    assert_eq!(got, want, "the final decode differs from the CPU's");
    let preview = on_gpu
        .preview_rgb8(&tokens, 8, cols)
        .expect("tiled preview");
    let (mean, _) = level_diff(&want, &preview);
    assert!(
        mean <= 3.0,
        "tiled preview differs by {mean} levels on average"
    );
    assert!(on_gpu.take_fault().is_none());
}

#[test]
fn check_reference_passes_with_the_transformer_and_decoder_on_wgpu() {
    let results = check_reference(
        common::tiny(),
        WeightFormat::Safetensors,
        Backend::Wgpu(Some(lavapipe())),
    )
    .expect("fixture set runs");
    let decode = results
        .iter()
        .find(|r| r.name == "vq_decode_image")
        .expect("the set has a decode case");
    assert!(decode.note.contains("wgpu"), "{decode}");
    // The transformer's cases ran on the GPU too.
    for name in [
        "tf_causal_logits",
        "tf_eval_logits",
        "gen_a_step_logits",
        "gen_a_tokens",
    ] {
        let case = results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("the set has {name}"));
        assert!(case.note.contains("llvmpipe"), "{case}");
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.to_string())
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

/// Token JSON of a generated image (seeded), then its decode by the CLI on the CPU and on
/// lavapipe.
#[test]
fn arpg_decode_on_wgpu_writes_what_the_cpu_writes() {
    let dir = common::temp_dir("gpu-decode");
    let png = dir.join("g.png");
    let json = dir.join("t.json");
    ok(&arpg(&[
        "generate",
        "--class",
        "3",
        "--seed",
        "5",
        "--quiet",
        "--out",
        s(&png),
    ]));
    ok(&arpg(&["encode", "--image", s(&png), "--out", s(&json)]));
    let cpu = dir.join("cpu.png");
    let gpu_png = dir.join("gpu.png");
    ok(&arpg(&[
        "decode",
        "--tokens",
        s(&json),
        "--out",
        s(&cpu),
        "--device",
        "cpu",
    ]));
    let device = format!("wgpu:{}", lavapipe());
    let err = ok(&arpg(&[
        "decode",
        "--tokens",
        s(&json),
        "--out",
        s(&gpu_png),
        "--device",
        &device,
    ]));
    assert!(
        err.contains("llvmpipe"),
        "the note names the adapter: {err}"
    );
    let read = |p: &std::path::Path| image::open(p).expect("png").to_rgb8().into_raw();
    let (mean, max) = level_diff(&read(&cpu), &read(&gpu_png));
    assert!(mean <= 1.0, "mean {mean}, max {max}");
}

/// An adapter index this machine lacks is a mistyped flag: one error line, exit 1, nothing
/// written (a GPU that exists but fails falls back to the CPU instead).
#[test]
fn an_adapter_index_this_machine_lacks_is_one_error() {
    let dir = common::temp_dir("gpu-missing");
    let png = dir.join("g.png");
    let json = dir.join("t.json");
    ok(&arpg(&[
        "generate",
        "--class",
        "1",
        "--seed",
        "2",
        "--quiet",
        "--out",
        s(&png),
    ]));
    ok(&arpg(&["encode", "--image", s(&png), "--out", s(&json)]));
    let out = dir.join("d.png");
    let res = arpg(&[
        "decode",
        "--tokens",
        s(&json),
        "--out",
        s(&out),
        "--device",
        "wgpu:99",
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{err}");
    assert!(err.contains("there is no adapter wgpu:99"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    assert!(!out.exists());
    assert!(Backend::parse("wgpu:x").is_err());
    assert!(Gpu::open(99).is_err());
    // The transformer's benchmark on an adapter the machine lacks, or quantized on wgpu: one
    // clear error each.
    let bench = arpg(&[
        "bench", "--model", "shipped", "--device", "wgpu:99", "--steps", "2",
    ]);
    assert!(!bench.status.success());
    let quantized = arpg(&[
        "bench", "--model", "shipped", "--device", "wgpu", "--quant", "q8_0", "--steps", "2",
    ]);
    let err = String::from_utf8_lossy(&quantized.stderr);
    assert!(
        !quantized.status.success() && err.contains("--quant"),
        "{err}"
    );
}

/// `arpg bench --model M --device wgpu:N --json` times the transformer on that GPU and names it.
#[test]
fn the_transformer_benchmark_runs_on_wgpu() {
    let n = lavapipe().to_string();
    let res = arpg(&[
        "bench",
        "--model",
        "shipped",
        "--device",
        &format!("wgpu:{n}"),
        "--steps",
        "2",
        "--batch",
        "2",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let row: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a JSON line")).expect("JSON");
    assert!(
        row["kernel"]
            .as_str()
            .is_some_and(|k| k.contains("llvmpipe")),
        "{row}"
    );
    assert_eq!(row["steps"], 2);
    assert!(
        row["images_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{row}"
    );
}

/// The live preview's path: the decode written into the marked cells of an RGBA8 storage
/// texture with nothing read back, equal to the CPU decode there and untouched elsewhere.
#[test]
fn a_decode_written_into_a_texture_matches_the_cpu_in_the_marked_cells() {
    let vq = arpg_core::loader::load_vq(arpg_core::shipped::vq_path(), None, &Device::Cpu)
        .expect("shipped tokenizer");
    let gpu = Gpu::open(lavapipe()).expect("lavapipe opens");
    let (rows, cols) = (8, 10);
    let p = vq.config().downsample();
    let tokens = random_tokens(rows * cols, vq.config().codebook_size, 11);
    let cells: Vec<bool> = (0..rows * cols).map(|i| i % 3 != 0).collect();
    let want = Tokenizer::from(vq.clone())
        .decode_rgb8(&tokens, rows, cols)
        .expect("cpu decode");
    let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: (cols * p) as u32,
            height: (rows * p) as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let tokenizer = Tokenizer::on_gpu(vq, &gpu).expect("builds");
    let done = tokenizer
        .decode_to_texture(&tokens, rows, cols, &cells, &texture, &gpu)
        .expect("written");
    assert!(done, "the decoder is on this device and the canvas fits");
    let got = texture::read_rgba(&gpu, &texture);
    let w = cols * p;
    let (mut diff, mut n) = (0u64, 0u64);
    for y in 0..rows * p {
        for x in 0..w {
            let cell = (y / p) * cols + x / p;
            let t = &got[(y * w + x) * 4..(y * w + x) * 4 + 4];
            if cells[cell] {
                for k in 0..3 {
                    diff += t[k].abs_diff(want[(y * w + x) * 3 + k]) as u64;
                    n += 1;
                }
                assert_eq!(t[3], 255);
            } else {
                assert_eq!(t, &[0, 0, 0, 0], "an unmarked cell was written");
            }
        }
    }
    let mean = diff as f64 / n as f64;
    assert!(
        mean <= 1.0,
        "mean difference {mean} levels in the written cells"
    );
    // Another device's texture is not written (the caller decodes on the host instead).
    let other = Gpu::open(lavapipe()).expect("a second device");
    assert!(!tokenizer
        .decode_to_texture(&tokens, rows, cols, &cells, &texture, &other)
        .expect("not an error"));
}
