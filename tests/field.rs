//! Files users really bring (`shared/fixtures/field/`), each through the CLI where the user meets
//! it, with its right value; then a corpus of malformed inputs made from every fixture
//! (truncated, bit-flipped, resized), each of which must end in one clear error and no output.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/torch.rs"]
mod torch;

use std::path::{Path, PathBuf};
use std::process::Output;

use cli::{arpg, clean_error, field, ok, s};

use common::tokens;

/// Tiny reference model flags with the given transformer checkpoint.
fn tiny_with(gpt: &Path) -> Vec<String> {
    vec![
        "--gpt".into(),
        s(gpt).into(),
        "--vq".into(),
        s(&common::tiny().join("tiny_vq.pt")).into(),
        "--config".into(),
        s(&common::tiny().join("manifest.json")).into(),
        "--quiet".into(),
    ]
}

/// Runs `arpg ARGS --out OUT --quiet` on the shipped model; it must succeed. Returns stderr.
fn shipped(args: &[&str], out: &Path) -> String {
    let mut all = args.to_vec();
    all.extend(["--out", s(out), "--quiet"]);
    ok(&arpg(&all))
}

fn with(args: &[&str], extra: &[String]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    arpg(&all)
}

/// The `arpg` JSON of a PNG, wherever its chunk is.
fn metadata(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).expect("read png");
    let meta = arpg_core::document::read_metadata(&bytes)
        .expect("readable metadata")
        .expect("an arpg chunk");
    serde_json::to_value(meta).expect("json")
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).expect("image").to_rgb8()
}

fn generate_tokens(dir: &Path, gpt: &Path, name: &str) -> Vec<u64> {
    let out = dir.join(name);
    ok(&with(
        &["generate", "--class", "3", "--seed", "5", "--out", s(&out)],
        &tiny_with(gpt),
    ));
    tokens(&metadata(&out))
}

#[test]
fn wrapped_big_endian_and_padded_checkpoints_load_as_the_plain_one() {
    let dir = common::temp_dir("field-ckpt");
    let plain = generate_tokens(&dir, &common::tiny().join("tiny_gpt.pt"), "plain.png");
    for name in [
        "gpt_orig_mod_prefix.pt",
        "gpt_unused_transposed_extra.pt",
        "gpt_big_endian.pt",
    ] {
        let got = generate_tokens(&dir, &field().join(name), &format!("{name}.png"));
        assert_eq!(got, plain, "{name} does not generate what tiny_gpt.pt does");
    }

    // Stacked wrappers (DDP around torch.compile), here in a safetensors copy.
    let bytes = std::fs::read(common::tiny().join("gpt.safetensors")).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let renamed: serde_json::Map<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| {
            let k = if k == "__metadata__" {
                k
            } else {
                format!("module._orig_mod.{k}")
            };
            (k, v)
        })
        .collect();
    let head = serde_json::to_vec(&renamed).expect("json");
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(&bytes[8 + n..]);
    let stacked = dir.join("stacked.safetensors");
    std::fs::write(&stacked, out).expect("write");
    assert_eq!(generate_tokens(&dir, &stacked, "stacked.png"), plain);

    // `arpg info` says what it found.
    let info = |name: &str| {
        let o = arpg(&["info", s(&field().join(name))]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(info("gpt_orig_mod_prefix.pt").contains("`_orig_mod.` removed"));
    assert!(info("gpt_big_endian.pt").contains("big-endian"));
    assert!(info("gpt_unused_transposed_extra.pt").contains("non-contiguous"));
}

#[test]
fn a_non_finite_weight_is_named_and_nothing_is_written() {
    let dir = common::temp_dir("field-nan");
    let out = dir.join("out.png");
    std::fs::write(&out, b"the user's earlier file").expect("write");
    let o = with(
        &["generate", "--out", s(&out)],
        &tiny_with(&field().join("gpt_nan_in_head.pt")),
    );
    clean_error(&o, "head.weight");
    assert_eq!(
        std::fs::read(&out).expect("still there"),
        b"the user's earlier file",
        "a failed run touched the output"
    );
    let o = arpg(&["info", s(&field().join("gpt_nan_in_head.pt"))]);
    clean_error(&o, "head.weight");
    assert!(String::from_utf8_lossy(&o.stdout).contains("non-finite"));
}

/// Pixels where `keep` is true are equal in both images.
fn unchanged_where(a: &image::RgbImage, b: &image::RgbImage, keep: impl Fn(u32, u32) -> bool) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut compared = 0;
    for (x, y, p) in a.enumerate_pixels() {
        if keep(x, y) {
            assert_eq!(
                p,
                b.get_pixel(x, y),
                "pixel ({x}, {y}) outside the mask changed"
            );
            compared += 1;
        }
    }
    assert!(compared > 0);
}

/// Inpaints `image` with a grey-level `mask` into `out`; pixels where the mask is black must be
/// `shown` (the image as displayed) exactly.
fn inpaint_keeps_unmasked(image: &Path, mask: &Path, shown: &image::RgbImage, out: &Path) {
    let m = image::open(mask).expect("mask").to_luma8();
    assert_eq!(m.dimensions(), shown.dimensions());
    shipped(&["inpaint", "--image", s(image), "--mask", s(mask)], out);
    unchanged_where(shown, &rgb(out), |x, y| m.get_pixel(x, y).0[0] == 0);
}

#[test]
fn a_mask_in_the_alpha_channel_is_the_mask() {
    let dir = common::temp_dir("field-alpha");
    let out = dir.join("out.png");
    let mask_path = field().join("mask_in_alpha_channel.png");
    shipped(
        &[
            "inpaint",
            "--image",
            s(&field().join("photo_32x32.png")),
            "--mask",
            s(&mask_path),
            "--seed",
            "1",
        ],
        &out,
    );
    let alpha = image::open(&mask_path).expect("mask").to_rgba8();
    let (a, b) = (rgb(&field().join("photo_32x32.png")), rgb(&out));
    unchanged_where(&a, &b, |x, y| alpha.get_pixel(x, y).0[3] == 0);
    let regenerated = a
        .enumerate_pixels()
        .filter(|(x, y, p)| alpha.get_pixel(*x, *y).0[3] == 255 && *p != b.get_pixel(*x, *y))
        .count();
    assert!(regenerated > 0, "nothing inside the mask was regenerated");

    // A wholly transparent mask (nothing painted) regenerates nothing, whatever its colour.
    let empty = dir.join("empty.png");
    image::RgbaImage::from_pixel(32, 32, image::Rgba([255, 255, 255, 0]))
        .save(&empty)
        .expect("save");
    let o = arpg(&[
        "inpaint",
        "--image",
        s(&field().join("photo_32x32.png")),
        "--mask",
        s(&empty),
        "--out",
        s(&dir.join("none.png")),
    ]);
    clean_error(&o, "covers no");
}

#[cfg(unix)]
#[test]
fn an_output_replacing_a_file_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::temp_dir("field-mode");
    let out = dir.join("shared.png");
    std::fs::write(&out, b"old").expect("write");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    shipped(&["generate", "--class", "1"], &out);
    let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the output's mode changed to {mode:o}");
    assert!(rgb(&out).width() > 0);
}

#[test]
fn metadata_is_found_wherever_it_is_and_stale_metadata_is_not_used() {
    let dir = common::temp_dir("field-meta");
    let original = metadata(&field().join("metadata_original.png"));
    let encode = |name: &str| {
        let out = dir.join(format!("{name}.json"));
        let err = shipped(&["encode", "--image", s(&field().join(name))], &out);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).expect("json")).expect("json");
        (json, err)
    };
    // Moved after the image data and compressed: same tokens, same class.
    let (moved, _) = encode("metadata_after_image_data.png");
    assert_eq!(tokens(&moved), tokens(&original));
    assert_eq!(moved["class"], original["class"]);
    // Edited elsewhere: the user is told and the pixels are encoded again.
    let (stale, err) = encode("metadata_stale_after_edit.png");
    assert!(
        err.contains("warning:") && err.contains("encoded again"),
        "{err}"
    );
    assert_ne!(tokens(&stale), tokens(&original));

    // Files written now carry a digest of their pixels: a copy with the chunk moved after the
    // image data as zTXt keeps its tokens; the same copy with pixels changed does not.
    let src = dir.join("src.png");
    ok(&with(
        &["generate", "--class", "1", "--seed", "2", "--out", s(&src)],
        &tiny_with(&common::tiny().join("tiny_gpt.pt")),
    ));
    let meta = metadata(&src);
    assert!(meta["pixels_sha256"].is_string());
    let json = serde_json::to_string(&meta).expect("json");
    let copy_with = |pixels: &image::RgbImage, path: &Path| {
        let file = std::fs::File::create(path).expect("create");
        let mut enc = png::Encoder::new(file, pixels.width(), pixels.height());
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().expect("header");
        w.write_image_data(pixels.as_raw()).expect("data");
        w.write_text_chunk(&png::text_metadata::ZTXtChunk::new("arpg", json.clone()))
            .expect("ztxt");
        w.finish().expect("finish");
    };
    let mut pixels = rgb(&src);
    let moved = dir.join("moved.png");
    copy_with(&pixels, &moved);
    let tiny = tiny_with(&common::tiny().join("tiny_gpt.pt"));
    let out = dir.join("moved.json");
    let err = ok(&with(
        &["encode", "--image", s(&moved), "--out", s(&out)],
        &tiny,
    ));
    assert!(!err.contains("warning"), "{err}");
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("json")).expect("json");
    assert_eq!(tokens(&got), tokens(&meta));
    for y in 0..8 {
        for x in 0..8 {
            pixels.put_pixel(x, y, image::Rgb([255, 0, 0]));
        }
    }
    let edited = dir.join("edited.png");
    copy_with(&pixels, &edited);
    let err = ok(&with(
        &["encode", "--image", s(&edited), "--out", s(&out)],
        &tiny,
    ));
    assert!(err.contains("edited after"), "{err}");
}

#[test]
fn exif_orientation_is_applied_everywhere_images_are_read() {
    let dir = common::temp_dir("field-exif");
    let photo = field().join("photo_exif_rotated.jpg");
    let mask_path = field().join("mask_for_exif_rotated_as_displayed.png");
    // As displayed: the stored pixels turned 90 degrees clockwise (EXIF orientation 6).
    let stored = rgb(&photo);
    let shown = image::imageops::rotate90(&stored);
    assert_ne!(stored.dimensions(), shown.dimensions());
    inpaint_keeps_unmasked(&photo, &mask_path, &shown, &dir.join("inpainted.png"));

    // Outpainting extends the side the user sees; the original is kept beyond the blended band
    // of two tokens (8 px for the shipped model) along its border with the new content.
    let out = dir.join("outpainted.png");
    shipped(&["outpaint", "--image", s(&photo), "--right", "8"], &out);
    let o = rgb(&out);
    assert_eq!(o.dimensions(), (shown.width() + 8, shown.height()));
    let keep = shown.width() - 8;
    let left = image::imageops::crop_imm(&o, 0, 0, keep, shown.height()).to_image();
    assert_eq!(
        left,
        image::imageops::crop_imm(&shown, 0, 0, keep, shown.height()).to_image()
    );
}

#[test]
fn sizes_that_are_not_whole_tokens_lose_no_pixel() {
    let dir = common::temp_dir("field-odd");
    let photo = field().join("photo_33x47.png");
    let mask_path = field().join("mask_33x47.png");
    let src = rgb(&photo);
    let out = dir.join("inpainted.png");
    inpaint_keeps_unmasked(&photo, &mask_path, &src, &out);

    // The inpainted file reopens with its own tokens (the grid covers it with padding).
    let json = dir.join("t.json");
    let err = shipped(&["encode", "--image", s(&out)], &json);
    assert!(!err.contains("warning"), "{err}");
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("json");
    assert_eq!(tokens(&t), tokens(&metadata(&out)));
    assert_eq!(t["size"], serde_json::json!([33, 47]));
    // ... and decodes back to 33x47.
    let back = dir.join("back.png");
    shipped(&["decode", "--tokens", s(&json)], &back);
    assert_eq!(rgb(&back).dimensions(), (33, 47));

    // Outpainting keeps every pixel of the image beyond the blended band of two tokens (8 px)
    // along its border with the new content; expansion doubles its exact size.
    let out = dir.join("outpainted.png");
    shipped(&["outpaint", "--image", s(&photo), "--left", "4"], &out);
    let o = rgb(&out);
    assert_eq!(o.dimensions(), (37, 47));
    assert_eq!(
        image::imageops::crop_imm(&o, 12, 0, 25, 47).to_image(),
        image::imageops::crop_imm(&src, 8, 0, 25, 47).to_image(),
        "the image's own pixels changed beyond the band"
    );
    let out = dir.join("expanded.png");
    shipped(&["expand", "--image", s(&photo)], &out);
    assert_eq!(rgb(&out).dimensions(), (66, 94));
}

#[test]
fn an_ordinary_photo_is_inpainted_by_region_and_huge_declarations_are_refused() {
    let dir = common::temp_dir("field-photo");
    let photo = field().join("photo_1000x700.jpg");
    let mask_path = field().join("mask_1000x700.png");
    // By default a large image is inpainted around its mask at the model's resolution: the
    // output keeps the input's size and every pixel outside the mask.
    let out = dir.join("region.png");
    inpaint_keeps_unmasked(&photo, &mask_path, &rgb(&photo), &out);
    // The whole photo at the working size, when asked for.
    let out = dir.join("full.png");
    let err = shipped(
        &[
            "inpaint",
            "--image",
            s(&photo),
            "--mask",
            s(&mask_path),
            "--region",
            "full",
        ],
        &out,
    );
    assert!(err.contains("scaled down to 128x90"), "{err}");
    assert_eq!(rgb(&out).dimensions(), (128, 90));

    for (cmd, input, file, out, needle) in [
        (
            "encode",
            "--image",
            "declares_12000x12000.png",
            "big.json",
            "12000x12000",
        ),
        (
            "decode",
            "--tokens",
            "tokens_grid_overflow.json",
            "big.png",
            "4294967296x4294967296",
        ),
        // An image output under another extension would hold PNG bytes: refused up front.
        (
            "decode",
            "--tokens",
            "tokens_grid_overflow.json",
            "big.jpg",
            "name the output `.png`",
        ),
    ] {
        let out = dir.join(out);
        let o = arpg(&[cmd, input, s(&field().join(file)), "--out", s(&out)]);
        clean_error(&o, needle);
        assert!(!out.exists());
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus: malformed inputs made from every fixture.

/// One malformed input: what it is, the command line, and the output that must not appear.
struct Case {
    what: String,
    args: Vec<String>,
    out: PathBuf,
}

fn truncations(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    // Cuts into the data (a PNG cut only in its closing chunk still holds every pixel).
    [0, 7, bytes.len() / 3, bytes.len() / 2, bytes.len() * 3 / 4]
        .into_iter()
        .map(|n| (format!("truncated to {n} bytes"), bytes[..n].to_vec()))
        .collect()
}

/// Bit flips inside the pickle and the second to fourth largest storages (the zip's CRC must
/// catch each flip in a storage that is read). The largest storage is skipped: in the tiny VQ it
/// is the `quantize.codebook_used` buffer, which no model reads and which is therefore, by
/// design, never validated.
fn zip_bit_flips(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("zip");
    let mut entries = Vec::new();
    for i in 0..zip.len() {
        let f = zip.by_index(i).expect("entry");
        let name = f.name().expect("entry name").to_string();
        let start = f.data_start().expect("data start") as usize;
        if name.ends_with(".pkl") {
            entries.push((u64::MAX, name, start, f.size() as usize));
        } else if name.contains("/data/") {
            entries.push((f.size(), name, start, f.size() as usize));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries
        .into_iter()
        .enumerate()
        // Index 0 is the pickle (sorted first), index 1 the largest storage.
        .filter(|(i, _)| *i != 1)
        .take(4)
        .map(|(_, (_, name, start, size))| {
            let mut b = bytes.to_vec();
            b[start + size / 2] ^= 0x10;
            (format!("bit flipped in `{name}`"), b)
        })
        .collect()
}

/// Bit flips in a PNG's chunks (their CRCs must catch them).
fn png_bit_flips(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    // IHDR's width, IHDR's CRC, the middle of the file (image data).
    [18, 30, bytes.len() / 2]
        .into_iter()
        .map(|at| {
            let mut b = bytes.to_vec();
            b[at] ^= 0x04;
            (format!("bit flipped at byte {at}"), b)
        })
        .collect()
}

#[test]
fn malformed_inputs_end_in_one_clear_error_and_no_output() {
    let dir = common::temp_dir("field-corpus");
    let tiny = common::tiny();
    let mut cases: Vec<Case> = Vec::new();
    let mut n = 0;
    let mut file = |name: &str, bytes: &[u8]| {
        n += 1;
        let p = dir.join(format!("{n:03}-{name}"));
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let out_for = |i: usize, ext: &str| dir.join(format!("out-{i}.{ext}"));

    // Checkpoints: each of the fixture checkpoints, as the transformer or as the tokenizer.
    let vq = s(&tiny.join("tiny_vq.pt")).to_string();
    let gpt = s(&tiny.join("tiny_gpt.pt")).to_string();
    let manifest = s(&tiny.join("manifest.json")).to_string();
    // The newer encodings: the tiny transformer pickled with protocol 5, and in 8-bit floats.
    let published =
        arpg_core::checkpoint::Checkpoint::open(tiny.join("tiny_gpt.pt")).expect("open");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = published
        .entries()
        .iter()
        .map(|(name, e)| {
            let t = published
                .read(name, candle_core::DType::F32, &candle_core::Device::Cpu)
                .expect("read");
            let v = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values");
            (name.clone(), e.shape.clone(), v)
        })
        .collect();
    let p5 = dir.join("tiny_gpt_p5.pt");
    let stored: Vec<torch::Stored> = tensors
        .iter()
        .map(|(n, sh, v)| torch::stored(n, "FloatStorage", sh, torch::f32_bytes(v)))
        .collect();
    torch::write_torch_save(&p5, 5, &stored);
    let fp8 = dir.join("tiny_gpt_fp8.safetensors");
    let fp8_tensors: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, sh, v)| {
            // Any byte pattern but NaN's is a valid e4m3 weight.
            let bytes = v.iter().map(|x| (x.to_bits() >> 24) as u8 & 0x77).collect();
            (n.as_str(), "F8_E4M3", sh.clone(), bytes)
        })
        .collect();
    torch::write_safetensors(&fp8, &fp8_tensors);
    let fp8_bytes = std::fs::read(&fp8).expect("read");
    for (source, role) in [
        (tiny.join("tiny_gpt.pt"), "--gpt"),
        (field().join("gpt_orig_mod_prefix.pt"), "--gpt"),
        (field().join("gpt_big_endian.pt"), "--gpt"),
        (p5.clone(), "--gpt"),
        (tiny.join("tiny_vq.pt"), "--vq"),
    ] {
        let bytes = std::fs::read(&source).expect("read");
        let mut variants = truncations(&bytes);
        variants.extend(zip_bit_flips(&bytes));
        for (what, b) in variants {
            let p = file("ckpt.pt", &b);
            let out = out_for(cases.len(), "png");
            let (g, v) = if role == "--gpt" {
                (s(&p).to_string(), vq.clone())
            } else {
                (gpt.clone(), s(&p).to_string())
            };
            cases.push(Case {
                what: format!("{} {what}", source.display()),
                args: vec![
                    "generate".into(),
                    "--gpt".into(),
                    g,
                    "--vq".into(),
                    v,
                    "--config".into(),
                    manifest.clone(),
                    "--out".into(),
                    s(&out).into(),
                    "--quiet".into(),
                ],
                out,
            });
        }
    }
    // A safetensors copy whose header declares another shape for one tensor ("resized").
    let st = std::fs::read(tiny.join("gpt.safetensors")).expect("read");
    let hn = u64::from_le_bytes(st[..8].try_into().expect("8")) as usize;
    let header = String::from_utf8(st[8..8 + hn].to_vec()).expect("utf8");
    let resized = header.replacen("\"shape\":[", "\"shape\":[2,", 1);
    let mut b = (resized.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(resized.as_bytes());
    b.extend_from_slice(&st[8 + hn..]);
    let mut st_variants = vec![("with a resized tensor".to_string(), b)];
    st_variants.extend(truncations(&st).into_iter().skip(1));
    st_variants.extend(
        truncations(&fp8_bytes)
            .into_iter()
            .skip(1)
            .map(|(what, b)| (format!("in 8-bit floats, {what}"), b)),
    );
    for (what, b) in st_variants {
        let p = file("gpt.safetensors", &b);
        let out = out_for(cases.len(), "png");
        cases.push(Case {
            what: format!("gpt.safetensors {what}"),
            args: [
                "generate",
                "--gpt",
                s(&p),
                "--vq",
                &vq,
                "--config",
                &manifest,
                "--out",
                s(&out),
                "--quiet",
            ]
            .map(String::from)
            .to_vec(),
            out,
        });
    }

    // Images and masks: truncated and bit-flipped PNGs, truncated JPEGs, masks of another size.
    let photo = field().join("photo_32x32.png");
    let mask = field().join("mask_in_alpha_channel.png");
    let inpaint = |image: &Path, mask: &Path, out: &Path| -> Vec<String> {
        [
            "inpaint",
            "--image",
            s(image),
            "--mask",
            s(mask),
            "--out",
            s(out),
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    for source in [
        field().join("photo_32x32.png"),
        field().join("metadata_original.png"),
        field().join("photo_33x47.png"),
    ] {
        let bytes = std::fs::read(&source).expect("read");
        let mut variants = truncations(&bytes);
        variants.extend(png_bit_flips(&bytes));
        for (what, b) in variants {
            let p = file("image.png", &b);
            let out = out_for(cases.len(), "png");
            // The mask of the image's own size where there is one; any error comes first.
            let m = if source.ends_with("photo_33x47.png") {
                field().join("mask_33x47.png")
            } else {
                mask.clone()
            };
            cases.push(Case {
                what: format!("image {} {what}", source.display()),
                args: inpaint(&p, &m, &out),
                out,
            });
        }
    }
    let jpeg = std::fs::read(field().join("photo_exif_rotated.jpg")).expect("read");
    for (what, b) in truncations(&jpeg).into_iter().take(3) {
        let p = file("photo.jpg", &b);
        let out = out_for(cases.len(), "png");
        cases.push(Case {
            what: format!("jpeg {what}"),
            args: [
                "outpaint",
                "--image",
                s(&p),
                "--right",
                "8",
                "--out",
                s(&out),
                "--quiet",
            ]
            .map(String::from)
            .to_vec(),
            out,
        });
    }
    // WebP (lossy, with alpha): truncated.
    let webp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/photo_alpha_lossy.webp");
    let webp = std::fs::read(webp).expect("read");
    for (what, b) in truncations(&webp) {
        let p = file("image.webp", &b);
        let out = out_for(cases.len(), "png");
        cases.push(Case {
            what: format!("webp {what}"),
            args: inpaint(&p, &mask, &out),
            out,
        });
    }
    let mask_bytes = std::fs::read(&mask).expect("read");
    let mut mask_variants = truncations(&mask_bytes);
    mask_variants.extend(png_bit_flips(&mask_bytes));
    for (what, b) in mask_variants {
        let p = file("mask.png", &b);
        let out = out_for(cases.len(), "png");
        cases.push(Case {
            what: format!("mask {what}"),
            args: inpaint(&photo, &p, &out),
            out,
        });
    }
    for (w, h) in [(31, 32), (32, 33), (64, 64)] {
        let p = dir.join(format!("mask-{w}x{h}.png"));
        image::GrayImage::from_pixel(w, h, image::Luma([255]))
            .save(&p)
            .expect("save");
        let out = out_for(cases.len(), "png");
        cases.push(Case {
            what: format!("mask resized to {w}x{h}"),
            args: inpaint(&photo, &p, &out),
            out,
        });
    }

    // Token JSON: truncated, and every kind of impossible grid.
    let good = serde_json::json!({"grid": [8, 8], "tokens": vec![5u32; 64], "patch": 4});
    let good_text = good.to_string();
    let mut jsons: Vec<(String, String)> = truncations(good_text.as_bytes())
        .into_iter()
        .map(|(w, b)| (w, String::from_utf8_lossy(&b).into_owned()))
        .collect();
    for (what, j) in [
        (
            "a 0x0 grid",
            serde_json::json!({"grid": [0, 0], "tokens": []}),
        ),
        (
            "a grid whose product overflows",
            serde_json::json!({"grid": [usize::MAX, 2], "tokens": []}),
        ),
        (
            "a grid of 2^32 x 2^32",
            serde_json::json!({"grid": [1u64 << 32, 1u64 << 32], "tokens": []}),
        ),
        (
            "a grid larger than its tokens",
            serde_json::json!({"grid": [9, 8], "tokens": vec![5u32; 64]}),
        ),
        (
            "a token outside the codebook",
            serde_json::json!({"grid": [1, 1], "tokens": [1u32 << 31]}),
        ),
        (
            "a negative grid",
            serde_json::json!({"grid": [-8, 8], "tokens": vec![5u32; 64]}),
        ),
        (
            "a size that does not fit the grid",
            serde_json::json!({"grid": [8, 8], "tokens": vec![5u32; 64], "patch": 4, "size": [100, 7]}),
        ),
        (
            "a grid decoding to a huge image",
            serde_json::json!({"grid": [4096, 1], "tokens": vec![5u32; 4096]}),
        ),
    ] {
        jsons.push((what.to_string(), j.to_string()));
    }
    // The same after a byte order mark (Windows tools write one): still one clear error each.
    let with_bom: Vec<(String, String)> = jsons
        .iter()
        .map(|(what, text)| {
            (
                format!("{what}, after a byte order mark"),
                format!("\u{feff}{text}"),
            )
        })
        .collect();
    jsons.extend(with_bom);
    for (what, text) in jsons {
        let p = file("tokens.json", text.as_bytes());
        let out = out_for(cases.len(), "png");
        cases.push(Case {
            what: format!("token JSON: {what}"),
            args: ["decode", "--tokens", s(&p), "--out", s(&out), "--quiet"]
                .map(String::from)
                .to_vec(),
            out,
        });
    }

    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let o = arpg(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        let errors = err.lines().filter(|l| l.starts_with("error:")).count();
        if o.status.code() != Some(1) || errors != 1 || err.contains("panicked") {
            failures.push(format!(
                "{}: exit {:?}, stderr: {err}",
                case.what,
                o.status.code()
            ));
        } else if case.out.exists() {
            failures.push(format!("{}: an output was written", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed inputs were mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Nothing half-written is left beside the outputs either.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_canvas_written_by_arpg_keeps_its_size_and_tokens_above_the_working_size() {
    let dir = common::temp_dir("field-own-canvas");
    // A 160x160 canvas (above the shipped model's 128 px working size), written by `decode`.
    let photo = dir.join("photo.png");
    image::imageops::resize(
        &rgb(&field().join("photo_1000x700.jpg")),
        160,
        160,
        image::imageops::FilterType::Triangle,
    )
    .save(&photo)
    .expect("save");
    let json = dir.join("tokens.json");
    shipped(&["encode", "--image", s(&photo), "--max-side", "0"], &json);
    let canvas = dir.join("canvas.png");
    shipped(&["decode", "--tokens", s(&json)], &canvas);
    // Reopened, it is neither scaled nor encoded again: its tokens come back exactly.
    let again = dir.join("again.json");
    let err = shipped(&["encode", "--image", s(&canvas)], &again);
    assert!(!err.contains("scaled"), "{err}");
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).expect("json")).expect("json")
    };
    assert_eq!(read(&again)["grid"], serde_json::json!([40, 40]));
    assert_eq!(tokens(&read(&again)), tokens(&read(&json)));
}
