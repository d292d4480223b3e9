//! `arpg` end to end: PNGs with metadata, determinism across thread counts, edits that keep the
//! original, and one clear error line per kind of bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tokens;

fn arpg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arpg"))
}

/// Flags selecting the tiny reference weights.
fn tiny_model() -> Vec<String> {
    let t = common::tiny();
    vec![
        "--gpt".into(),
        t.join("tiny_gpt.pt").display().to_string(),
        "--vq".into(),
        t.join("tiny_vq.pt").display().to_string(),
        "--quiet".into(),
    ]
}

fn run(args: &[&str], extra: &[String]) -> Output {
    arpg().args(args).args(extra).output().expect("spawn arpg")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "arpg failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exit non-zero with a single `error:` line and no panic.
fn clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic reached the user: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error:"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "`{needle}` not in: {err}"
    );
}

/// The ARPG metadata JSON of a PNG.
fn metadata(path: &Path) -> serde_json::Value {
    let file = std::fs::File::open(path).expect("open png");
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("png");
    let info = reader.info();
    let text = info
        .compressed_latin1_text
        .iter()
        .find(|t| t.keyword == "arpg")
        .map(|t| t.get_text().expect("ztxt"))
        .or_else(|| {
            info.uncompressed_latin1_text
                .iter()
                .find(|t| t.keyword == "arpg")
                .map(|t| t.text.clone())
        })
        .expect("arpg chunk");
    serde_json::from_str(&text).expect("json")
}

fn dims(path: &Path) -> (u32, u32) {
    let img = image::open(path).expect("image");
    (img.width(), img.height())
}

fn generate(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let out = dir.join(name);
    ok(&run(
        &[
            "generate",
            "--class",
            "3",
            "--seed",
            seed,
            "--out",
            out.to_str().expect("utf8"),
        ],
        &tiny_model(),
    ));
    out
}

#[test]
fn generate_writes_a_png_with_grid_tokens_and_settings() {
    let dir = common::temp_dir("cli-gen");
    let out = generate(&dir, "g.png", "7");
    assert_eq!(dims(&out), (32, 32));
    let meta = metadata(&out);
    assert_eq!(meta["grid"], serde_json::json!([8, 8]));
    assert_eq!(tokens(&meta).len(), 64);
    assert_eq!(meta["settings"]["seed"], 7);
    assert_eq!(meta["class"], 3);
}

#[test]
fn same_seed_same_tokens_across_runs_and_thread_counts() {
    let dir = common::temp_dir("cli-det");
    let mut all = Vec::new();
    for threads in ["1", "2", "2"] {
        let out = dir.join(format!("t{threads}-{}.png", all.len()));
        let status = arpg()
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "generate",
                "--class",
                "5",
                "--seed",
                "11",
                "--out",
                out.to_str().expect("utf8"),
            ])
            .args(tiny_model())
            .output()
            .expect("spawn");
        ok(&status);
        all.push(tokens(&metadata(&out)));
    }
    assert_eq!(all[0], all[1], "1 vs 2 threads");
    assert_eq!(all[1], all[2], "two runs");
}

#[test]
fn inpaint_keeps_tokens_outside_the_mask() {
    let dir = common::temp_dir("cli-inpaint");
    let src = generate(&dir, "src.png", "1");
    // White square over the top-left 16x16 pixels = the top-left 4x4 tokens.
    let mut mask = image::GrayImage::new(32, 32);
    for y in 0..16 {
        for x in 0..16 {
            mask.put_pixel(x, y, image::Luma([255]));
        }
    }
    let mask_path = dir.join("mask.png");
    mask.save(&mask_path).expect("save mask");
    let out = dir.join("out.png");
    ok(&run(
        &[
            "inpaint",
            "--image",
            src.to_str().expect("utf8"),
            "--mask",
            mask_path.to_str().expect("utf8"),
            "--class",
            "2",
            "--seed",
            "4",
            "--out",
            out.to_str().expect("utf8"),
        ],
        &tiny_model(),
    ));
    let before = tokens(&metadata(&src));
    let after = tokens(&metadata(&out));
    let mut changed = 0;
    for i in 0..64 {
        let (r, c) = (i / 8, i % 8);
        if r < 4 && c < 4 {
            changed += usize::from(before[i] != after[i]);
        } else {
            assert_eq!(before[i], after[i], "token {i} outside the mask changed");
        }
    }
    assert!(changed > 0, "nothing was regenerated");
    // Pixels well outside the mask are the original pixels.
    let (a, b) = (
        image::open(&src).expect("a").to_rgb8(),
        image::open(&out).expect("b").to_rgb8(),
    );
    for y in 20..32 {
        for x in 0..32 {
            assert_eq!(a.get_pixel(x, y), b.get_pixel(x, y));
        }
    }
}

#[test]
fn outpaint_grows_the_canvas_and_keeps_the_original_cells() {
    let dir = common::temp_dir("cli-outpaint");
    let src = generate(&dir, "src.png", "2");
    let out = dir.join("wide.png");
    // 30 px snaps up to 8 tokens of 4 px.
    ok(&run(
        &[
            "outpaint",
            "--image",
            src.to_str().expect("utf8"),
            "--right",
            "30",
            "--seed",
            "3",
            "--out",
            out.to_str().expect("utf8"),
        ],
        &tiny_model(),
    ));
    assert_eq!(dims(&out), (64, 32));
    let meta = metadata(&out);
    assert_eq!(meta["grid"], serde_json::json!([8, 16]));
    let (before, after) = (tokens(&metadata(&src)), tokens(&meta));
    for r in 0..8 {
        for c in 0..8 {
            assert_eq!(after[r * 16 + c], before[r * 8 + c]);
        }
    }
    assert_eq!(meta["class"], 3, "the class comes from the source PNG");
}

#[test]
fn expand_encode_and_decode_round_trip() {
    let dir = common::temp_dir("cli-expand");
    let src = generate(&dir, "src.png", "3");
    let big = dir.join("big.png");
    ok(&run(
        &[
            "expand",
            "--image",
            src.to_str().expect("utf8"),
            "--seed",
            "1",
            "--out",
            big.to_str().expect("utf8"),
        ],
        &tiny_model(),
    ));
    assert_eq!(dims(&big), (64, 64));
    let (small, large) = (tokens(&metadata(&src)), tokens(&metadata(&big)));
    for r in 0..8 {
        for c in 0..8 {
            assert_eq!(
                large[(2 * r) * 16 + 2 * c],
                small[r * 8 + c],
                "lattice token moved"
            );
        }
    }
    let json = dir.join("t.json");
    ok(&run(
        &[
            "encode",
            "--image",
            src.to_str().expect("utf8"),
            "--out",
            json.to_str().expect("utf8"),
        ],
        &tiny_model(),
    ));
    let back = dir.join("back.png");
    ok(&run(
        &[
            "decode",
            "--tokens",
            json.to_str().expect("utf8"),
            "--out",
            back.to_str().expect("utf8"),
        ],
        &tiny_model(),
    ));
    assert_eq!(
        tokens(&metadata(&back)),
        small,
        "PNG tokens survive encode/decode"
    );
    assert_eq!(
        image::open(&back).expect("b").to_rgb8(),
        image::open(&src).expect("a").to_rgb8()
    );
}

#[test]
fn bad_inputs_get_one_clear_error_line() {
    let dir = common::temp_dir("cli-bad");
    let src = generate(&dir, "src.png", "1");
    let s = src.to_str().expect("utf8");
    let out = dir.join("x.png");
    let o = out.to_str().expect("utf8");
    let text = dir.join("not-an-image.png");
    std::fs::write(&text, "hello").expect("write");
    let small_mask = dir.join("small.png");
    image::GrayImage::new(8, 8).save(&small_mask).expect("save");
    let m = tiny_model();
    clean_error(
        &run(
            &[
                "generate",
                "--class",
                "3",
                "--out",
                o,
                "--gpt",
                "/nonexistent.pt",
            ],
            &m[2..],
        ),
        "does not exist",
    );
    clean_error(
        &run(
            &[
                "inpaint",
                "--image",
                text.to_str().expect("utf8"),
                "--mask",
                s,
                "--out",
                o,
            ],
            &m,
        ),
        "not an image",
    );
    clean_error(
        &run(
            &[
                "inpaint",
                "--image",
                s,
                "--mask",
                small_mask.to_str().expect("utf8"),
                "--out",
                o,
            ],
            &m,
        ),
        "same size",
    );
    clean_error(
        &run(&["generate", "--class", "10", "--out", o], &m),
        "out of range",
    );
    clean_error(
        &run(
            &["generate", "--class", "3", "--steps", "0", "--out", o],
            &m,
        ),
        "at least 1",
    );
    clean_error(
        &run(
            &["generate", "--class", "3", "--steps", "65", "--out", o],
            &m,
        ),
        "exceeds",
    );
    clean_error(
        &run(
            &["generate", "--class", "3", "--device", "tpu", "--out", o],
            &m,
        ),
        "unknown device",
    );
    clean_error(
        &run(&["generate", "--class", "3", "--cfg=-1", "--out", o], &m),
        "cfg",
    );
    clean_error(
        &run(
            &["generate", "--class", "3", "--polish", "1000", "--out", o],
            &m,
        ),
        "polish",
    );
    clean_error(
        &run(&["info", text.to_str().expect("utf8")], &[]),
        "not a readable checkpoint",
    );
    clean_error(
        &run(
            &[
                "info",
                common::layouts()
                    .join("bad_gpt_truncated.pt")
                    .to_str()
                    .expect("utf8"),
            ],
            &[],
        ),
        "truncated",
    );
    assert!(!out.exists(), "no output on failure");
}

#[test]
fn check_reference_and_info_commands() {
    let out = run(
        &["check-reference", common::tiny().to_str().expect("utf8")],
        &[],
    );
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS  gen_a_tokens"), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    let out = run(
        &[
            "info",
            common::tiny().join("tiny_gpt.pt").to_str().expect("utf8"),
        ],
        &[],
    );
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4 heads") && text.contains("271808"),
        "{text}"
    );
}

#[test]
fn convert_rewrites_a_checkpoint_that_loads_and_computes_the_same() {
    let dir = common::temp_dir("cli-convert");
    let tiny = common::tiny();
    let pt = tiny.join("tiny_gpt.pt");
    let config = tiny.join("manifest.json");
    let convert_to = |input: &Path, out: &Path, dtype: &str| {
        let args = [
            "convert",
            input.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
            "--dtype",
            dtype,
        ];
        run(&args, &[])
    };
    let convert = |dtype: &str| {
        let out = dir.join(format!("gpt_{dtype}.safetensors"));
        ok(&convert_to(&pt, &out, dtype));
        out
    };
    let (f32_file, f16_file) = (convert("f32"), convert("f16"));
    let out = run(
        &[
            "info",
            f16_file.to_str().expect("utf8"),
            "--config",
            config.to_str().expect("utf8"),
        ],
        &[],
    );
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("f16") && text.contains("271808"), "{text}");
    // The f32 rewrite is exact: the same seed draws the same tokens as the pickle.
    let from_pt = metadata(&generate(&dir, "pt.png", "4"));
    let converted = dir.join("converted.png");
    let mut flags = tiny_model();
    flags[1] = f32_file.display().to_string();
    flags.extend(["--config".into(), config.display().to_string()]);
    let args = ["generate", "--class", "3", "--seed", "4", "--out"];
    ok(&run(
        &args,
        &[&[converted.display().to_string()], &flags[..]].concat(),
    ));
    assert_eq!(tokens(&metadata(&converted)), tokens(&from_pt));
    // The output must be a safetensors file; nothing is written otherwise.
    let bad = dir.join("gpt.pt");
    clean_error(&convert_to(&pt, &bad, "f16"), ".safetensors");
    assert!(!bad.exists());
    // A missing input is reported as missing.
    let missing = dir.join("missing.pt");
    clean_error(
        &convert_to(&missing, &dir.join("m.safetensors"), "f16"),
        "missing.pt",
    );
}

/// `arpg generate --class 0 --quiet ARGS` on the shipped model, run in `dir`.
fn generate_shipped(dir: &Path, args: &[&str]) {
    ok(&arpg()
        .current_dir(dir)
        .args(["generate", "--class", "0", "--quiet"])
        .args(args)
        .output()
        .expect("spawn"));
}

#[test]
fn generate_works_with_no_flags_on_the_shipped_model() {
    let dir = common::temp_dir("cli-shipped");
    let out = dir.join("x.png");
    generate_shipped(&dir, &["--out", out.to_str().expect("utf8")]);
    let meta = metadata(&out);
    assert_eq!(meta["grid"], serde_json::json!([8, 8]));
    assert_eq!(dims(&out), (32, 32));
    // Unset flags take the shipped model's recommended sampling (its JSON's `sampling`) ...
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(arpg_core::shipped::arpg_path().with_extension("json"))
            .expect("assets/arpg.json"),
    )
    .expect("json");
    for (key, value) in config["sampling"].as_object().expect("a `sampling` object") {
        assert_eq!(&meta["settings"][key.as_str()], value, "recommended {key}");
    }
    // ... and an explicit flag wins over the recommendation.
    let flagged = dir.join("flagged.png");
    let flagged_arg = flagged.to_str().expect("utf8");
    generate_shipped(&dir, &["--cfg-schedule", "linear", "--out", flagged_arg]);
    assert_eq!(metadata(&flagged)["settings"]["cfg_schedule"], "linear");
    // And with no flags at all (writes sample.png in the working directory).
    generate_shipped(&dir, &[]);
    assert!(dir.join("sample.png").is_file());
}

/// Every image of a batch records its own seed and place, and `generate --from` makes exactly
/// its tokens again from its metadata alone (shipped model, recommended settings with polishing,
/// near-known order).
#[test]
fn every_batch_image_regenerates_from_its_own_metadata() {
    let dir = common::temp_dir("cli-batch-regen");
    let out = dir.join("b.png");
    let out_arg = out.to_str().expect("utf8");
    generate_shipped(
        &dir,
        &[
            "--batch",
            "3",
            "--seed",
            "42",
            "--order",
            "near-known",
            "--out",
            out_arg,
        ],
    );
    let mut seeds = Vec::new();
    for i in 0..3 {
        let image = dir.join(format!("b_{i}.png"));
        let meta = metadata(&image);
        assert_eq!(meta["provenance"]["batch"]["seed"], 42);
        assert_eq!(meta["provenance"]["batch"]["index"], i);
        assert_eq!(meta["provenance"]["order"], "near-known");
        seeds.push(meta["settings"]["seed"].as_u64().expect("seed"));
        let again = dir.join(format!("again_{i}.png"));
        ok(&arpg()
            .args(["generate", "--quiet", "--from"])
            .args([image.to_str().expect("utf8"), "--out"])
            .arg(again.to_str().expect("utf8"))
            .output()
            .expect("spawn"));
        assert_eq!(tokens(&metadata(&again)), tokens(&meta), "image {i}");
        assert_eq!(metadata(&again)["settings"], meta["settings"]);
    }
    assert_eq!(
        seeds[0], 42,
        "image 0 is the single image of the batch's seed"
    );
    assert!(seeds[1] != seeds[2] && seeds[1] != 42);
    // The single image of seed 42 is image 0 of the batch.
    let single = dir.join("single.png");
    generate_shipped(
        &dir,
        &[
            "--seed",
            "42",
            "--order",
            "near-known",
            "--out",
            single.to_str().expect("utf8"),
        ],
    );
    assert_eq!(
        tokens(&metadata(&single)),
        tokens(&metadata(&dir.join("b_0.png")))
    );
    // An image without settings cannot be regenerated, and says why.
    let plain = dir.join("plain.png");
    image::RgbImage::new(32, 32).save(&plain).expect("png");
    clean_error(
        &arpg()
            .args(["generate", "--from", plain.to_str().expect("utf8"), "--out"])
            .arg(dir.join("x.png").to_str().expect("utf8"))
            .output()
            .expect("spawn"),
        "no ARPG metadata",
    );
}

#[test]
fn eval_prints_its_table_and_generation_only_skips_the_edits() {
    let out = arpg()
        .args([
            "eval",
            "--per-class",
            "1",
            "--classifier-steps",
            "4",
            "--steps",
            "4",
            "--generation-only",
            "--quiet",
        ])
        .output()
        .expect("spawn");
    ok(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| class accuracy of generated images (10, 4 steps"),
        "{table}"
    );
    assert!(table.contains("| 9 mountains |"), "{table}");
    assert!(!table.contains("inpainting"), "{table}");
}

/// A 1000-class model takes ImageNet class names on the command line (the name shown or a
/// synonym); an unknown name lists the closest ones. The model: the tiny reference config with
/// 1000 classes and random weights, beside the tiny tokenizer.
#[test]
fn imagenet_class_names_on_the_command_line() {
    let dir = common::temp_dir("cli-imagenet");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::tiny().join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let mut config = manifest["gpt"]["config"].clone();
    config["num_classes"] = serde_json::json!(1000);
    let config_path = dir.join("gpt1000.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let cfg: arpg_core::ArpgConfig = serde_json::from_value(config).expect("config");
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &varmap,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    arpg_core::Arpg::new(&cfg, vb).expect("model");
    let gpt = dir.join("gpt1000.safetensors");
    varmap.save(&gpt).expect("save");
    let model = [
        "--gpt".to_string(),
        gpt.display().to_string(),
        "--config".into(),
        config_path.display().to_string(),
        "--vq".into(),
        common::tiny().join("tiny_vq.pt").display().to_string(),
        "--quiet".into(),
        "--steps".into(),
        "2".into(),
    ];
    for (name, class) in [("golden retriever", 207), ("tabby cat", 281), ("207", 207)] {
        let out = dir.join(format!("{class}.png"));
        ok(&run(
            &[
                "generate",
                "--class",
                name,
                "--out",
                out.to_str().expect("utf8"),
            ],
            &model,
        ));
        assert_eq!(metadata(&out)["class"], class, "{name}");
    }
    let typo = run(
        &[
            "generate",
            "--class",
            "golden retreiver",
            "--out",
            dir.join("x.png").to_str().expect("utf8"),
        ],
        &model,
    );
    clean_error(&typo, "\"golden retriever\" (207)");
    clean_error(
        &run(
            &[
                "generate",
                "--class",
                "crane",
                "--out",
                dir.join("y.png").to_str().expect("utf8"),
            ],
            &model,
        ),
        "several classes",
    );
}

/// `arpg bench --model M --json`: the interface scripts call prints one JSON object with the
/// agreed fields on its last line, and the kernel path it ran; a bad `--quant` is one clear error.
#[test]
fn bench_prints_one_json_object_for_scripts() {
    let out = arpg()
        .args([
            "bench", "--model", "shipped", "--steps", "4", "--batch", "2", "--json",
        ])
        .output()
        .expect("spawn");
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().expect("a line");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    for key in [
        "seconds_per_image",
        "images_per_s",
        "step_ms_median",
        "peak_rss_mib",
        "floor_s",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert!(
        v["kernel"].as_str().is_some_and(|k| [
            "avx512-bf16",
            "avx512",
            "avx2-fma",
            "portable",
            "candle"
        ]
        .contains(&k)),
        "{v}"
    );
    assert_eq!(v["batch"], 2);
    clean_error(
        &arpg()
            .args(["bench", "--model", "shipped", "--quant", "q3", "--json"])
            .output()
            .expect("spawn"),
        "unknown quantization",
    );
    // The load benchmark: load time and peak memory, in the asked dtype.
    let gpt = common::tiny().join("gpt.safetensors");
    let out = arpg()
        .args(["bench", "--load"])
        .arg(&gpt)
        .args(["--dtype", "bf16", "--json"])
        .output()
        .expect("spawn");
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a line")).expect("JSON on the last line");
    assert!(v["load_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(v["peak_rss_mib"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert_eq!(v["dtype"], "bf16");
    // The app's worker measured headless against the same run through the core.
    let out = arpg()
        .args(["bench", "--app", "--steps", "4", "--json"])
        .output()
        .expect("spawn");
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a line")).expect("JSON on the last line");
    for key in [
        "load_s",
        "first_step_s",
        "image_s",
        "direct_s",
        "app_over_direct",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert!(v["first_step_s"].as_f64() <= v["image_s"].as_f64(), "{v}");
}

#[test]
fn quantized_mode_runs_end_to_end_and_a_converted_file_computes_the_same() {
    let dir = common::temp_dir("cli-quant");
    let assets = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets");
    let shipped = assets.join("arpg.safetensors");
    let q8 = dir.join("shipped_q8.gguf");
    let convert = |input: &Path, out: &Path, q: &str| {
        run(
            &[
                "convert",
                input.to_str().expect("utf8"),
                "--out",
                out.to_str().expect("utf8"),
                "--quant",
                q,
            ],
            &[],
        )
    };
    ok(&convert(&shipped, &q8, "q8_0"));
    let size = |p: &Path| std::fs::metadata(p).expect("size").len();
    assert!(size(&q8) * 3 < size(&shipped), "q8_0 file is not smaller");
    // Quantizing on load and loading the converted file give the same image.
    let on_load = dir.join("on_load.png");
    let from_file = dir.join("from_file.png");
    let gen = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate", "--class", "2", "--seed", "5", "--quiet", "--out",
        ];
        args.push(out.to_str().expect("utf8"));
        args.extend_from_slice(extra);
        ok(&run(&args, &[]));
    };
    gen(&on_load, &["--quant", "q8_0"]);
    gen(&from_file, &["--gpt", q8.to_str().expect("utf8")]);
    let (a, b) = (tokens(&metadata(&on_load)), tokens(&metadata(&from_file)));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    // q4k runs too.
    let q4 = dir.join("shipped_q4.gguf");
    ok(&convert(&shipped, &q4, "q4k"));
    gen(&dir.join("q4.png"), &["--gpt", q4.to_str().expect("utf8")]);
    // Bad input: one clear line, nothing written.
    clean_error(
        &convert(&shipped, &dir.join("x.gguf"), "q3"),
        "unknown quantization",
    );
    clean_error(
        &convert(&shipped, &dir.join("x.safetensors"), "q8_0"),
        ".gguf",
    );
    clean_error(
        &convert(&assets.join("vq.safetensors"), &dir.join("vq.gguf"), "q8_0"),
        "only ARPG",
    );
    assert!(!dir.join("x.gguf").exists() && !dir.join("vq.gguf").exists());
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").expect("write");
    let out = run(
        &[
            "generate",
            "--gpt",
            junk.to_str().expect("utf8"),
            "--quiet",
            "--out",
        ],
        &[dir.join("j.png").display().to_string()],
    );
    clean_error(&out, "junk.gguf");
    let out = run(
        &["generate", "--quant", "q5", "--quiet", "--out"],
        &[dir.join("k.png").display().to_string()],
    );
    clean_error(&out, "unknown quantization");
}

#[test]
fn bench_reports_the_kernel_it_ran_and_arpg_kernel_forces_one() {
    let bench = |kernel: &str, extra: &[&str]| {
        let mut cmd = arpg();
        cmd.env("ARPG_KERNEL", kernel)
            .args(["bench", "--model", "shipped", "--steps", "2", "--json"]);
        cmd.args(extra);
        let out = cmd.output().expect("spawn");
        ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().expect("a line").to_string();
        serde_json::from_str::<serde_json::Value>(&last).expect("json")
    };
    assert_eq!(bench("portable", &[])["kernel"], "portable");
    assert_eq!(bench("candle", &[])["kernel"], "candle");
    let q = bench("auto", &["--quant", "q8_0"]);
    assert!(q["kernel"].as_str().expect("str").contains("q8_0"), "{q}");
    assert!(q["seconds_per_image"].as_f64().expect("f64") > 0.0);
}
