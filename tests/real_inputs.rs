//! Real inputs III: files, environments and outputs users really bring, each through the CLI
//! where the user meets it (the hub's environment is in `tests/hub.rs`; protocol-4/5 pickles
//! and 8-bit float weights at the end of this file and in `tests/checkpoint_errors.rs`).

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/torch.rs"]
mod torch;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cli::{arpg, clean_error, field, ok, s};
use common::tokens;

/// This file's own small inputs.
fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

fn metadata(path: &Path) -> arpg_core::document::Metadata {
    let bytes = std::fs::read(path).expect("read png");
    arpg_core::document::read_metadata(&bytes)
        .expect("readable metadata")
        .expect("an arpg chunk")
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).expect("image").to_rgb8()
}

/// The tokens of a token JSON written by `arpg encode`.
fn json_tokens(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json")
}

/// Tiny reference model flags with the given transformer and tokenizer checkpoints.
fn tiny_flags(gpt: &Path, vq: &Path) -> Vec<String> {
    let manifest = common::tiny().join("manifest.json");
    [
        "--gpt",
        s(gpt),
        "--vq",
        s(vq),
        "--config",
        s(&manifest),
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

/// Tiny reference model flags (its transformer, the given tokenizer).
fn tiny_with_vq(vq: &Path) -> Vec<String> {
    tiny_flags(&common::tiny().join("tiny_gpt.pt"), vq)
}

fn with(args: &[&str], extra: &[String]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    arpg(&all)
}

// ---------------------------------------------------------------------------------------------
// 1. Standard output closed or full.

#[test]
fn a_closed_or_full_standard_output_never_panics() {
    let dir = common::temp_dir("stdout");
    let gpt = common::tiny().join("tiny_gpt.pt");
    let png = dir.join("closed.png");
    for args in [
        vec!["info", s(&gpt)],
        vec!["generate", "--class", "1", "--seed", "3", "--out", s(&png)],
    ] {
        // The reader goes away before the first line is written (`arpg ... | head -0`).
        let mut child = Command::new(env!("CARGO_BIN_EXE_arpg"))
            .args(&args)
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    }
    assert!(
        png.is_file(),
        "the image is written before its line is printed"
    );

    // A full device: one error line, exit 1, never a panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_arpg"))
        .args(["info", s(&gpt)])
        .stdout(Stdio::from(full))
        .output()
        .expect("spawn");
    clean_error(&out, "standard output");
}

// ---------------------------------------------------------------------------------------------
// 3. File names that are not UTF-8.

#[cfg(unix)]
#[test]
fn batch_names_keep_the_bytes_of_a_name_that_is_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = common::temp_dir("latin1-names");
    // "café" and "cafè" in Latin-1: both are U+FFFD when read lossily.
    let names: [&[u8]; 2] = [b"caf\xe9", b"caf\xe8"];
    for (seed, name) in names.iter().enumerate() {
        let mut file = name.to_vec();
        file.extend_from_slice(b".png");
        let out = Command::new(env!("CARGO_BIN_EXE_arpg"))
            .args(["generate", "--batch", "2", "--seed"])
            .arg(seed.to_string())
            .arg("--out")
            .arg(dir.join(OsStr::from_bytes(&file)))
            .arg("--quiet")
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .expect("spawn");
        ok(&out);
    }
    let mut found: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    found.sort();
    let mut expected: Vec<Vec<u8>> = names
        .iter()
        .flat_map(|n| (0..2).map(move |i| [*n, format!("_{i}.png").as_bytes()].concat()))
        .collect();
    expected.sort();
    assert_eq!(found, expected, "four images, none overwritten");
    // The second batch did not replace the first: different seeds, different images.
    let first = dir.join(OsStr::from_bytes(b"caf\xe9_0.png"));
    let second = dir.join(OsStr::from_bytes(b"caf\xe8_0.png"));
    assert_ne!(
        tokens(&serde_json::to_value(metadata(&first)).expect("json")),
        tokens(&serde_json::to_value(metadata(&second)).expect("json"))
    );
}

// ---------------------------------------------------------------------------------------------
// 6. JSON written by Windows tools.

fn utf16le(text: &str, bom: bool) -> Vec<u8> {
    let mut b = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
    b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    b
}

#[test]
fn json_with_a_byte_order_mark_crlf_or_utf16_is_read() {
    let dir = common::temp_dir("bom-json");
    let plain = dir.join("tokens.json");
    ok(&arpg(&[
        "encode",
        "--image",
        s(&field().join("photo_32x32.png")),
        "--out",
        s(&plain),
        "--quiet",
    ]));
    let value = json_tokens(&plain);
    let crlf = serde_json::to_string_pretty(&value)
        .expect("json")
        .replace('\n', "\r\n");
    let bom = dir.join("bom.json");
    std::fs::write(&bom, [b"\xEF\xBB\xBF".as_slice(), crlf.as_bytes()].concat()).expect("write");
    let utf16 = dir.join("utf16.json");
    std::fs::write(&utf16, utf16le(&crlf, true)).expect("write");
    let decoded: Vec<image::RgbImage> = [&plain, &bom, &utf16]
        .iter()
        .enumerate()
        .map(|(i, json)| {
            let out = dir.join(format!("decoded-{i}.png"));
            ok(&arpg(&[
                "decode",
                "--tokens",
                s(json),
                "--out",
                s(&out),
                "--quiet",
            ]));
            rgb(&out)
        })
        .collect();
    assert_eq!(decoded[0], decoded[1], "BOM + CRLF");
    assert_eq!(decoded[0], decoded[2], "UTF-16 with a BOM");
    // UTF-16 without its byte order mark is named, not "line 1 column 1".
    let bare = dir.join("bare16.json");
    std::fs::write(&bare, utf16le(&crlf, false)).expect("write");
    let out = dir.join("never.png");
    clean_error(
        &arpg(&["decode", "--tokens", s(&bare), "--out", s(&out), "--quiet"]),
        "UTF-16",
    );
    assert!(!out.exists());

    // A config beside a checkpoint, saved with a BOM: the same model, the same tokens.
    let tiny = common::tiny();
    let manifest = std::fs::read(tiny.join("manifest.json")).expect("manifest");
    let with_bom = dir.join("manifest.json");
    std::fs::write(&with_bom, [b"\xEF\xBB\xBF".as_slice(), &manifest].concat()).expect("write");
    let run = |config: &Path, name: &str| {
        let out = dir.join(name);
        ok(&arpg(&[
            "generate",
            "--gpt",
            s(&tiny.join("tiny_gpt.pt")),
            "--vq",
            s(&tiny.join("tiny_vq.pt")),
            "--config",
            s(config),
            "--class",
            "2",
            "--seed",
            "4",
            "--out",
            s(&out),
            "--quiet",
        ]));
        metadata(&out).tokens
    };
    assert_eq!(
        run(&tiny.join("manifest.json"), "plain.png"),
        run(&with_bom, "bom.png")
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A PNG made by one model, edited with another.

/// The tiny tokenizer with its codebook rows reversed: the same shapes, other codes.
fn reversed_tokenizer(dir: &Path) -> PathBuf {
    use candle_core::{Device, Tensor};
    let tiny = common::tiny();
    let mut tensors =
        candle_core::safetensors::load(tiny.join("vq.safetensors"), &Device::Cpu).expect("vq");
    let key = "quantize.embedding.weight";
    let cb = tensors.get(key).expect("codebook").clone();
    let n = cb.dim(0).expect("rows") as u32;
    let rev = Tensor::from_vec((0..n).rev().collect::<Vec<u32>>(), n as usize, &Device::Cpu)
        .expect("index");
    tensors.insert(key.into(), cb.index_select(&rev, 0).expect("reverse"));
    let path = dir.join("vq_reversed.safetensors");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    path
}

/// `arpg encode` of `image` with the tiny transformer and `vq`: (tokens, tokenizer, stderr).
fn encode_with(image: &Path, vq: &Path, out: &Path) -> (Vec<u64>, String, String) {
    let err = ok(&with(
        &["encode", "--image", s(image), "--out", s(out)],
        &tiny_with_vq(vq),
    ));
    let v = json_tokens(out);
    let id = v["tokenizer"]
        .as_str()
        .expect("a tokenizer identity")
        .to_string();
    (tokens(&v), id, err)
}

#[test]
fn tokens_made_by_another_tokenizer_are_never_used_by_this_one() {
    let dir = common::temp_dir("other-tokenizer");
    let tiny = common::tiny();
    let vq = tiny.join("tiny_vq.pt");
    let other = reversed_tokenizer(&dir);
    let made = dir.join("made.png");
    ok(&with(
        &["generate", "--class", "3", "--seed", "5", "--out", s(&made)],
        &tiny_with_vq(&vq),
    ));
    let meta = metadata(&made);
    let stored: Vec<u64> = meta.tokens.iter().map(|&t| t as u64).collect();
    let made_by = meta
        .tokenizer
        .clone()
        .expect("the PNG records its tokenizer");

    // The same pixels with no metadata: what encoding them afresh gives.
    let pixels_only = dir.join("pixels.png");
    rgb(&made).save(&pixels_only).expect("save");
    let (fresh_other, other_id, _) = encode_with(&pixels_only, &other, &dir.join("p.json"));
    assert_ne!(other_id, made_by, "two tokenizers, two identities");

    // Its own tokenizer keeps the stored tokens; the other encodes the pixels again.
    let (same, id, err) = encode_with(&made, &vq, &dir.join("same.json"));
    assert_eq!((same, id), (stored.clone(), made_by.clone()), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let (again, id, err) = encode_with(&made, &other, &dir.join("other.json"));
    assert!(err.contains("another tokenizer"), "{err}");
    assert_eq!((again, id), (fresh_other.clone(), other_id.clone()));

    // A PNG from before identities were recorded is checked by decoding.
    let mut old = meta.clone();
    old.tokenizer = None;
    let legacy = dir.join("legacy.png");
    let img = rgb(&made);
    let (w, h) = (img.width() as usize, img.height() as usize);
    arpg_core::document::write_png(&legacy, w, h, img.as_raw(), Some(&old)).expect("write");
    let (same, _, err) = encode_with(&legacy, &vq, &dir.join("legacy-same.json"));
    assert_eq!(
        same, stored,
        "its own tokenizer decodes the tokens to the pixels: {err}"
    );
    let (again, _, err) = encode_with(&legacy, &other, &dir.join("legacy-other.json"));
    assert!(err.contains("warning"), "{err}");
    assert_eq!(again, fresh_other);

    // A token JSON of one tokenizer is never decoded by another.
    let out = dir.join("never.png");
    let o = with(
        &[
            "decode",
            "--tokens",
            s(&dir.join("same.json")),
            "--out",
            s(&out),
        ],
        &tiny_with_vq(&other),
    );
    clean_error(&o, "another tokenizer");
    assert!(!out.exists());

    // The transformer is recorded too: the same weights in another format are the same model
    // (the image regenerates, silently); a quantized copy is another, and `--from` says so.
    let made_by = meta
        .transformer
        .clone()
        .expect("the PNG records its transformer");
    let st = tiny.join("gpt.safetensors");
    let again = dir.join("again.png");
    let regen = |extra: &[&str]| {
        let mut args = vec!["generate", "--from", s(&made), "--out", s(&again)];
        args.extend_from_slice(extra);
        ok(&with(&args, &tiny_flags(&st, &vq)))
    };
    let err = regen(&[]);
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(metadata(&again).tokens, meta.tokens);
    assert_eq!(
        metadata(&again).transformer.as_deref(),
        Some(made_by.as_str())
    );
    let err = regen(&["--quant", "q8_0"]);
    assert!(err.contains("another transformer"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 8. Transparent pixels.

/// Straight alpha over `bg`, rounded as the importer does.
fn over(c: u8, a: u8, bg: u8) -> u8 {
    ((u32::from(c) * u32::from(a) + u32::from(bg) * (255 - u32::from(a)) + 127) / 255) as u8
}

/// The field photo with a wholly transparent left quarter hiding pure red and a band of
/// half-transparent pixels beside it (a cut-out, as an editor exports it).
fn cut_out(dir: &Path) -> (PathBuf, image::RgbaImage) {
    let mut img = image::open(field().join("photo_32x32.png"))
        .expect("photo")
        .to_rgba8();
    for (x, _, p) in img.enumerate_pixels_mut() {
        if x < 8 {
            *p = image::Rgba([255, 0, 0, 0]);
        } else if x < 12 {
            p.0[3] = 128;
        }
    }
    let path = dir.join("cut-out.png");
    img.save(&path).expect("save");
    (path, img)
}

#[test]
fn transparent_pixels_never_show_their_hidden_colour() {
    let dir = common::temp_dir("transparent");
    let (path, src) = cut_out(&dir);
    for (flag, bg) in [(None, 255u8), (Some("000000"), 0u8)] {
        let extra: Vec<&str> = flag.map(|c| vec!["--background", c]).unwrap_or_default();
        // Outpainting keeps every original pixel away from the new border: the hidden red
        // must not be among them.
        let out = dir.join(format!("outpaint-{bg}.png"));
        let mut args = vec![
            "outpaint",
            "--image",
            s(&path),
            "--right",
            "8",
            "--out",
            s(&out),
        ];
        args.extend(&extra);
        let err = ok(&arpg(&args));
        assert!(err.contains("transparent"), "a notice: {err}");
        let img = rgb(&out);
        for y in 0..32 {
            for x in 0..12 {
                let p = src.get_pixel(x, y).0;
                let want = [
                    over(p[0], p[3], bg),
                    over(p[1], p[3], bg),
                    over(p[2], p[3], bg),
                ];
                assert_eq!(img.get_pixel(x, y).0, want, "({x}, {y}) over {bg}");
            }
        }
        // No mask given: the wholly transparent area is what inpainting fills, and every
        // other pixel is the picture composited over the background.
        let out = dir.join(format!("inpaint-{bg}.png"));
        let mut args = vec![
            "inpaint",
            "--image",
            s(&path),
            "--seed",
            "1",
            "--out",
            s(&out),
            "--quiet",
        ];
        args.extend(&extra);
        ok(&arpg(&args));
        let img = rgb(&out);
        let mut filled = 0;
        for (x, y, p) in img.enumerate_pixels() {
            let q = src.get_pixel(x, y).0;
            let want = [
                over(q[0], q[3], bg),
                over(q[1], q[3], bg),
                over(q[2], q[3], bg),
            ];
            if x >= 8 {
                assert_eq!(p.0, want, "({x}, {y}) kept");
            } else if p.0 != want {
                filled += 1;
            }
        }
        assert!(
            filled > 32,
            "the transparent quarter was regenerated ({filled} pixels)"
        );
    }
    // An opaque picture and no mask: nothing to fill, said clearly.
    let out = dir.join("never.png");
    clean_error(
        &arpg(&[
            "inpaint",
            "--image",
            s(&field().join("photo_32x32.png")),
            "--out",
            s(&out),
        ]),
        "--mask",
    );
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// 9. A full or tiny disk.

#[cfg(unix)]
#[test]
fn a_full_disk_is_one_error_and_leaves_no_empty_file() {
    let dir = common::temp_dir("full-disk");
    let ds = dir.join("dataset");
    // A file size limit of 512 bytes stands for a disk that fills up: every write past it fails
    // (the signal it would raise is ignored, so the write returns the error).
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_arpg"))
        .args([
            "dataset",
            "--out",
            s(&ds),
            "--per-class",
            "2",
            "--size",
            "64",
            "--sheet",
        ])
        .arg(dir.join("sheet.png"))
        .output()
        .expect("spawn");
    clean_error(&out, "");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for f in &files {
        let len = std::fs::metadata(f).expect("meta").len();
        assert!(len > 0, "an empty file was left: {}", f.display());
        assert!(
            !f.to_string_lossy().ends_with(".part"),
            "a temporary file was left: {}",
            f.display()
        );
        // What was written is whole.
        image::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

/// An output that is a device or a symbolic link: written into (a full device is one error),
/// never replaced by a regular file.
#[cfg(unix)]
#[test]
fn an_output_that_is_a_device_or_a_link_is_written_through() {
    use std::os::unix::fs::FileTypeExt;
    let dir = common::temp_dir("device-out");
    let photo = field().join("photo_32x32.png");
    let encode = |out: &Path| arpg(&["encode", "--image", s(&photo), "--out", s(out), "--quiet"]);
    // Our own device nodes (root only), so a regression never replaces the system's.
    let full = dir.join("full.json");
    let null = dir.join("null.json");
    let made = |p: &Path, minor: &str| {
        Command::new("mknod")
            .arg(p)
            .args(["c", "1", minor])
            .status()
            .is_ok_and(|s| s.success())
    };
    if made(&full, "7") && made(&null, "3") {
        clean_error(&encode(&full), "No space left on device");
        ok(&encode(&null));
        for p in [&full, &null] {
            let kind = std::fs::symlink_metadata(p).expect("meta").file_type();
            assert!(kind.is_char_device(), "{} was replaced", p.display());
        }
    } else {
        eprintln!("not root: the device part of this test is skipped");
    }
    // A symbolic link: its target gets the output, the link stays.
    let target = dir.join("target.json");
    std::fs::write(&target, "old").expect("write");
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    ok(&encode(&link));
    assert!(std::fs::symlink_metadata(&link)
        .expect("meta")
        .file_type()
        .is_symlink());
    assert!(
        json_tokens(&target)["tokens"].is_array(),
        "the target holds the output"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. WebP pictures.

#[test]
fn webp_pictures_are_read_lossless_and_lossy_with_alpha() {
    let dir = common::temp_dir("webp");
    // Lossless: the same pixels as the PNG, so the same tokens.
    let png = field().join("photo_32x32.png");
    let photo = rgb(&png);
    let webp = dir.join("photo.webp");
    {
        let f = std::fs::File::create(&webp).expect("create");
        image::codecs::webp::WebPEncoder::new_lossless(f)
            .encode(photo.as_raw(), 32, 32, image::ExtendedColorType::Rgb8)
            .expect("encode webp");
    }
    let encode = |image: &Path, name: &str| {
        let out = dir.join(name);
        ok(&arpg(&[
            "encode",
            "--image",
            s(image),
            "--out",
            s(&out),
            "--quiet",
        ]));
        tokens(&json_tokens(&out))
    };
    assert_eq!(encode(&webp, "webp.json"), encode(&png, "png.json"));

    // Lossy with an alpha channel (a browser's "Save image as"): read, its transparent quarter
    // filled when no mask is given, its other pixels kept over white.
    let lossy = data().join("photo_alpha_lossy.webp");
    let src = image::open(&lossy).expect("webp").to_rgba8();
    assert!(
        src.pixels().any(|p| p.0[3] == 0),
        "the fixture has transparency"
    );
    let out = dir.join("lossy-inpainted.png");
    let err = ok(&arpg(&[
        "inpaint",
        "--image",
        s(&lossy),
        "--seed",
        "2",
        "--out",
        s(&out),
    ]));
    assert!(err.contains("transparent"), "{err}");
    let img = rgb(&out);
    for (x, y, p) in img.enumerate_pixels() {
        let q = src.get_pixel(x, y).0;
        if q[3] > 0 {
            let want = [
                over(q[0], q[3], 255),
                over(q[1], q[3], 255),
                over(q[2], q[3], 255),
            ];
            assert_eq!(p.0, want, "({x}, {y})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Checkpoints pickled with protocol 4 or 5, and 5. 8-bit float weights.

/// The tiny transformer's tensors: `(name, shape, f32 values)`.
fn tiny_gpt_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use arpg_core::checkpoint::Checkpoint;
    let ckpt = Checkpoint::open(common::tiny().join("tiny_gpt.pt")).expect("open");
    ckpt.entries()
        .iter()
        .map(|(name, e)| {
            let v = ckpt
                .read(name, candle_core::DType::F32, &candle_core::Device::Cpu)
                .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                .expect("read");
            (name.clone(), e.shape.clone(), v)
        })
        .collect()
}

/// The tokens `arpg generate` makes with the tiny transformer at `gpt` (class 3, seed 5).
fn tiny_tokens(dir: &Path, gpt: &Path, name: &str) -> Vec<u32> {
    let out = dir.join(name);
    let vq = common::tiny().join("tiny_vq.pt");
    let args = ["generate", "--class", "3", "--seed", "5", "--out", s(&out)];
    ok(&with(&args, &tiny_flags(gpt, &vq)));
    metadata(&out).tokens
}

#[test]
fn checkpoints_pickled_with_protocol_4_or_5_load_as_the_published_one() {
    let dir = common::temp_dir("protocols");
    let tensors: Vec<torch::Stored> = tiny_gpt_tensors()
        .iter()
        .map(|(name, shape, v)| torch::stored(name, "FloatStorage", shape, torch::f32_bytes(v)))
        .collect();
    let want = tiny_tokens(&dir, &common::tiny().join("tiny_gpt.pt"), "published.png");
    for proto in [4u8, 5] {
        let path = dir.join(format!("tiny_gpt_p{proto}.pt"));
        torch::write_torch_save(&path, proto, &tensors);
        let manifest = common::tiny().join("manifest.json");
        let info = ok(&arpg(&["info", s(&path), "--config", s(&manifest)]));
        assert!(!info.contains("error"), "{info}");
        assert_eq!(
            tiny_tokens(&dir, &path, &format!("p{proto}.png")),
            want,
            "protocol {proto}"
        );
    }
}

/// The nearest e5m2 value of `x` (the high byte of its f16, rounded to nearest even).
fn e5m2(x: f32) -> u8 {
    let h = half::f16::from_f32(x).to_bits();
    let (hi, lo) = (h >> 8, h & 0xff);
    let up = lo > 0x80 || (lo == 0x80 && hi & 1 == 1);
    (hi + u16::from(up)) as u8
}

fn e5m2_to_f32(b: u8) -> f32 {
    half::f16::from_bits(u16::from(b) << 8).to_f32()
}

#[test]
fn fp8_weights_load_widened_and_scaled_or_unknown_dtypes_are_named() {
    let dir = common::temp_dir("fp8-cli");
    let tensors = tiny_gpt_tensors();
    // Every weight in e5m2, and the same values widened to f32: the same model.
    let fp8: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, shape, v)| {
            (
                n.clone(),
                shape.clone(),
                v.iter().map(|&x| e5m2(x)).collect(),
            )
        })
        .collect();
    let as_st = |entries: Vec<(&str, &str, Vec<usize>, Vec<u8>)>, name: &str| {
        let path = dir.join(name);
        torch::write_safetensors(&path, &entries);
        path
    };
    let fp8_path = as_st(
        fp8.iter()
            .map(|(n, sh, b)| (n.as_str(), "F8_E5M2", sh.clone(), b.clone()))
            .collect(),
        "gpt_fp8.safetensors",
    );
    let wide_path = as_st(
        fp8.iter()
            .map(|(n, sh, b)| {
                let v: Vec<f32> = b.iter().map(|&x| e5m2_to_f32(x)).collect();
                (n.as_str(), "F32", sh.clone(), torch::f32_bytes(&v))
            })
            .collect(),
        "gpt_widened.safetensors",
    );
    assert_eq!(
        tiny_tokens(&dir, &fp8_path, "fp8.png"),
        tiny_tokens(&dir, &wide_path, "wide.png"),
        "fp8 weights are their exact values, widened"
    );
    let manifest = common::tiny().join("manifest.json");
    let info = arpg(&["info", s(&fp8_path), "--config", s(&manifest)]);
    ok(&info);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("f8e5m2"), "{info}");

    // A scale beside fp8 weights is refused by name, never loaded without it.
    let mut scaled: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = fp8
        .iter()
        .map(|(n, sh, b)| (n.as_str(), "F8_E5M2", sh.clone(), b.clone()))
        .collect();
    scaled.push((
        "head.weight_scale",
        "F32",
        vec![1],
        torch::f32_bytes(&[0.5]),
    ));
    let scaled = as_st(scaled, "gpt_scaled.safetensors");
    let out = dir.join("never.png");
    let vq = common::tiny().join("tiny_vq.pt");
    let generate = |gpt: &Path| with(&["generate", "--out", s(&out)], &tiny_flags(gpt, &vq));
    clean_error(&generate(&scaled), "head.weight_scale");
    // A needed tensor of a dtype that cannot be weights: one error naming both.
    let i16: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, sh, v)| {
            if n == "head.weight" {
                (n.as_str(), "I16", sh.clone(), vec![0u8; 2 * v.len()])
            } else {
                (n.as_str(), "F32", sh.clone(), torch::f32_bytes(v))
            }
        })
        .collect();
    let i16 = as_st(i16, "gpt_i16.safetensors");
    let o = generate(&i16);
    clean_error(&o, "head.weight");
    clean_error(&o, "I16");
    assert!(!out.exists());
    // Nor is it dropped from a converted copy.
    let copy = dir.join("copy.safetensors");
    let o = arpg(&["convert", s(&i16), "--out", s(&copy)]);
    clean_error(&o, "head.weight");
    assert!(!copy.exists());
    // Integers that could be read as numbers are not weights either.
    let u8s: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, sh, v)| {
            if n == "head.weight" {
                (n.as_str(), "U8", sh.clone(), vec![1u8; v.len()])
            } else {
                (n.as_str(), "F32", sh.clone(), torch::f32_bytes(v))
            }
        })
        .collect();
    let o = generate(&as_st(u8s, "gpt_u8.safetensors"));
    clean_error(&o, "head.weight");
    clean_error(&o, "integers");
}
