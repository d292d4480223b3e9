//! `arpg bench`: speed and memory of the sampler's hot path, printed as a table. Speed does not
//! depend on weight values, so full-size configs run with random weights.

use arpg_app::outln;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arpg_core::generator::{Generation, Request, Settings};
use arpg_core::{Arpg, ArpgConfig};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

/// Peak resident set size of this process so far, in MiB (Linux; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Memory read bandwidth in GB/s: sums a 512 MiB buffer with `threads` threads, best of 3.
fn read_bandwidth(threads: usize) -> f64 {
    let data = vec![1.0f32; 128 << 20];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let chunk = data.len().div_ceil(threads);
        let total: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(chunk)
                // Eight independent lanes so the sum vectorises and is bound by memory, not by
                // the latency of one add chain.
                .map(|c| {
                    s.spawn(move || {
                        let lanes = c.chunks_exact(8).fold([0.0f32; 8], |mut acc, v| {
                            for (a, x) in acc.iter_mut().zip(v) {
                                *a += x;
                            }
                            acc
                        });
                        lanes.iter().sum::<f32>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (data.len() * 4) as f64 / best / 1e9
}

fn preset(name: &str) -> Result<(String, ArpgConfig)> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "l" | "arpg-l" => ("ARPG-L".into(), ArpgConfig::arpg_l()),
        "xl" | "arpg-xl" => ("ARPG-XL".into(), ArpgConfig::arpg_xl()),
        "xxl" | "arpg-xxl" => ("ARPG-XXL".into(), ArpgConfig::arpg_xxl()),
        "shipped" => ("shipped".into(), arpg_core::shipped::arpg_config()),
        _ => bail!("unknown preset `{name}` (L, XL, XXL or shipped)"),
    })
}

/// A model with random weights, built on plain tensors. Built on a `VarMap`'s variables, every
/// operation would be recorded for backpropagation and a forward pass would keep all its
/// intermediates alive (the VQ-16 tokenizer then peaked at 3.1 GB at 256x256 instead of what a
/// loaded checkpoint needs). The variables are created by a first build, then shared (not
/// copied) as detached tensors.
fn random_model<T>(
    dtype: DType,
    build: impl Fn(VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<(T, VarMap)> {
    random_model_on(dtype, &Device::Cpu, build)
}

/// [`random_model`] on `device`.
fn random_model_on<T>(
    dtype: DType,
    device: &Device,
    build: impl Fn(VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<(T, VarMap)> {
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, dtype, device))?;
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("internal: the variable map is poisoned"))?
        .iter()
        .map(|(name, var)| (name.clone(), var.as_detached_tensor()))
        .collect();
    let model = build(VarBuilder::from_tensors(tensors, dtype, device))?;
    Ok((model, varmap))
}

/// Writes an ARPG checkpoint with random weights (for loading and memory measurements).
pub fn write_random(name: &str, out: &Path) -> Result<()> {
    let vq16 = name.eq_ignore_ascii_case("vq-16");
    let (cfg, varmap) = if vq16 {
        let cfg = arpg_core::VqConfig::vq_16();
        (
            None,
            random_model(DType::F32, |vb| arpg_core::VqModel::new(&cfg, vb))?.1,
        )
    } else {
        let (_, cfg) = preset(name)?;
        (
            Some(cfg.clone()),
            random_model(DType::F32, |vb| Arpg::new(&cfg, vb))?.1,
        )
    };
    // Through a temporary file, so a full disk never leaves a truncated checkpoint.
    let out = &arpg_core::document::regular_output(out)?;
    let tmp = out.with_extension("safetensors.part");
    let saved = varmap
        .save(&tmp)
        .with_context(|| format!("writing {}", out.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))
        });
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let Some(cfg) = cfg else {
        // A tokenizer's config is read from its shapes.
        outln!("wrote {} (a VQ-16-shaped tokenizer)", out.display())?;
        return Ok(());
    };
    arpg_core::document::write_atomic(
        &out.with_extension("json"),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    outln!("wrote {} ({} parameters)", out.display(), cfg.num_params())?;
    Ok(())
}

/// Loads `gpt` and reports the load time and peak RSS; with `json`, one JSON object on the last
/// line (`model`, `dtype`, `load_s`, `weights_mib`, `peak_rss_mib`).
pub fn load(gpt: &Path, dtype: DType, json: bool) -> Result<()> {
    let before = peak_rss_mib();
    let t = Instant::now();
    let loaded = arpg_core::loader::load_arpg(gpt, None, dtype, &Device::Cpu)?;
    let secs = t.elapsed().as_secs_f64();
    let weights =
        loaded.config.num_params() as f64 * dtype.size_in_bytes() as f64 / (1 << 20) as f64;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "model": loaded.name,
                "dtype": dtype.as_str(),
                "load_s": secs,
                "weights_mib": weights,
                "peak_rss_mib": peak_rss_mib(),
            })
        )?;
        return Ok(());
    }
    outln!(
        "| model | weights (MiB) | load (s) | peak RSS before (MiB) | peak RSS after load (MiB) |"
    )?;
    outln!("|---|---|---|---|---|")?;
    outln!(
        "| {} | {weights:.0} | {secs:.2} | {before:.0} | {:.0} |",
        loaded.name,
        peak_rss_mib()
    )?;
    Ok(())
}

/// Times full generations of `presets` and prints one table row per (preset, dtype, CFG).
pub fn run(presets: &[String], dtypes: &[String], steps: usize, repeats: usize) -> Result<()> {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Rows are timed first; the bandwidth buffer would otherwise inflate the peak RSS column.
    let mut rows = Vec::new();
    let mut header = String::new();
    header.push_str("| model | params | dtype | CFG rows | weights (MB) | floor/step (ms) | step (ms) | x floor | tokens/s | image (s) | peak RSS (MiB) |\n");
    header.push_str("|---|---|---|---|---|---|---|---|---|---|---|");
    for name in presets {
        let (label, cfg) = preset(name)?;
        for dt in dtypes {
            let dtype = arpg_core::pair::dtype(dt)?;
            let (model, varmap) = random_model(dtype, |vb| Arpg::new(&cfg, vb))?;
            drop(varmap);
            let bytes = cfg.num_params() as f64 * dtype.size_in_bytes() as f64;
            for cfg_scale in [4.0, 1.0] {
                let settings = Settings {
                    steps: steps.min(cfg.block_size),
                    cfg_scale,
                    seed: 1,
                    ..Settings::reference()
                };
                let mut best = f64::INFINITY;
                let mut n_steps = 0;
                for _ in 0..repeats.max(1) {
                    let mut gen =
                        Generation::new(&model, &Request::new(vec![1], settings.clone()))?;
                    let t = Instant::now();
                    while gen.step()?.is_some() {}
                    best = best.min(t.elapsed().as_secs_f64());
                    n_steps = gen.total_steps();
                }
                rows.push(Row {
                    label: label.clone(),
                    params: cfg.num_params(),
                    dtype: dt.clone(),
                    cfg_rows: if cfg_scale != 1.0 { 2 } else { 1 },
                    bytes,
                    step_ms: best / n_steps as f64 * 1e3,
                    tokens_per_s: cfg.block_size as f64 / best,
                    image_s: best,
                    peak_rss: peak_rss_mib(),
                });
            }
        }
    }
    let bw = read_bandwidth(threads);
    outln!("memory read bandwidth: {bw:.1} GB/s ({threads} threads); floor = weight bytes / bandwidth\n")?;
    outln!("{header}")?;
    for r in rows {
        let floor_ms = r.bytes / (bw * 1e9) * 1e3;
        outln!(
            "| {} | {:.0}M | {} | {} | {:.0} | {floor_ms:.1} | {:.1} | {:.2} | {:.0} | {:.2} | {:.0} |",
            r.label,
            r.params as f64 / 1e6,
            r.dtype,
            r.cfg_rows,
            r.bytes / 1e6,
            r.step_ms,
            r.step_ms / floor_ms,
            r.tokens_per_s,
            r.image_s,
            r.peak_rss
        )?;
    }
    Ok(())
}

/// One configuration of `arpg bench --model` (the interface scripts call).
pub struct One<'a> {
    pub model: &'a str,
    pub batch: usize,
    pub steps: usize,
    pub dtype: &'a str,
    pub device: &'a str,
    pub quant: Option<&'a str>,
    pub repeats: usize,
}

/// The CPU code path the linear layers take: our kernels at the tier detected at run time (or
/// forced by `ARPG_KERNEL`; the bf16 dot products only serve bf16 weights), or candle's matmul;
/// quantized weights go through candle's `QMatMul`.
fn kernel(device: &candle_core::Device, quant: Option<&str>, dtype: &str) -> String {
    use arpg_core::kernels::{choice, Choice, Tier};
    if !device.is_cpu() {
        return "candle (gpu)".into();
    }
    match (quant, choice()) {
        (Some(q), _) => format!("candle qmatmul ({q})"),
        (None, Choice::Kernel(Tier::Avx512Bf16)) if dtype != "bf16" => Tier::Avx512.name().into(),
        (None, c) => c.name().into(),
    }
}

/// Dense matmul throughput of this device in FLOP/s (f32, 1024 x 1024 x 1024, best of 3).
fn gemm_flops(device: &candle_core::Device) -> Result<f64> {
    let a = candle_core::Tensor::rand(-1f32, 1f32, (1024, 1024), device)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let c = a.matmul(&a)?;
        std::hint::black_box(c.sum_all()?.to_scalar::<f32>()?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * 1024f64.powi(3) / best)
}

/// `arpg bench --model M [--json]`: one configuration, guided (CFG 4.5) as the reference's
/// benchmark runs it. Prints a table row, or one JSON object on the last line with `--json`.
pub fn one(o: &One<'_>, json: bool) -> Result<()> {
    if o.batch == 0 || o.batch > 256 {
        bail!("--batch {} must be within 1..=256", o.batch);
    }
    let (label, cfg) = preset(o.model)?;
    let dtype = arpg_core::pair::dtype(o.dtype)?;
    let backend = arpg_core::Backend::parse(o.device)?;
    let device = backend.candle_device()?;
    let (mut model, varmap) = random_model_on(dtype, &device, |vb| Arpg::new(&cfg, vb))?;
    drop(varmap);
    if let Some(q) = o.quant {
        model.quantize(arpg_core::loader::quant(q)?)?;
    }
    // On wgpu the weights are uploaded once and the CPU copy kept (the engine's fallback).
    let (model, kernel_name) = match backend {
        arpg_core::Backend::Wgpu(index) => {
            let gpu = arpg_core::gpu::Gpu::open_named(index)?;
            let name = format!("wgpu ({})", gpu.adapter().name);
            (arpg_core::Transformer::on_gpu(model, &gpu)?, name)
        }
        _ => (
            arpg_core::Transformer::from(model),
            kernel(&device, o.quant, o.dtype),
        ),
    };
    let on_wgpu = matches!(backend, arpg_core::Backend::Wgpu(_));
    // The random initialisation's temporaries are not the sampler's: the peak is measured from
    // here (Linux: writing 5 to clear_refs resets VmHWM to the current RSS; elsewhere it stays
    // the process's peak).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let settings = Settings {
        steps: o.steps.min(cfg.block_size),
        cfg_scale: 4.5,
        seed: 1,
        ..Settings::reference()
    };
    let mut best = f64::INFINITY;
    let mut step_ms = Vec::new();
    let mut first_step_s = 0.0;
    for _ in 0..o.repeats.max(1) {
        let mut gen = Generation::new(&model, &Request::new(vec![1; o.batch], settings.clone()))?;
        let mut times = Vec::new();
        let t = Instant::now();
        loop {
            let s = Instant::now();
            if gen.step()?.is_none() {
                break;
            }
            times.push(s.elapsed().as_secs_f64() * 1e3);
        }
        let total = t.elapsed().as_secs_f64();
        if total < best {
            best = total;
            first_step_s = times.first().copied().unwrap_or(0.0) / 1e3;
            step_ms = times;
        }
    }
    let peak = peak_rss_mib();
    step_ms.sort_by(|a, b| a.total_cmp(b));
    let median = step_ms.get(step_ms.len() / 2).copied().unwrap_or(0.0);
    let steps_run = step_ms.len().max(1) as f64;
    // Floors: the weights read once per step at the measured bandwidth, and the model's FLOPs at
    // the measured GEMM throughput: every cell is fed once through the self-decoder half and
    // queried once through the cross-decoder half and the head, so each cell of each CFG half
    // costs one pass over the parameters (2 FLOPs per parameter).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Bytes a weight takes: the dtype's, or the quantized block's share (embeddings and norms
    // are not quantized but are not read whole per step either).
    let per_weight = match o.quant {
        Some(q) => {
            let q = arpg_core::loader::quant(q)?;
            q.type_size() as f64 / q.block_size() as f64
        }
        None => dtype.size_in_bytes() as f64,
    };
    let bytes = cfg.num_params() as f64 * per_weight;
    // K and V of every self-decoder layer plus the shared cross K/V, both CFG halves, in the
    // cache's dtype.
    let kv_mib = ((cfg.n_self_layers() + 1) * 2 * (2 * o.batch) * (cfg.block_size + 1) * cfg.dim)
        as f64
        * model.kv_dtype().size_in_bytes() as f64
        / (1024.0 * 1024.0);
    let bandwidth_floor = if device.is_cpu() && !on_wgpu {
        steps_run * bytes / (read_bandwidth(threads) * 1e9)
    } else {
        0.0
    };
    let flops = 2.0 * cfg.num_params() as f64 * (2 * o.batch) as f64 * cfg.block_size as f64;
    // No floor is measured for a wgpu device (its peak is not known here).
    let flops_floor = if on_wgpu {
        0.0
    } else {
        flops / gemm_flops(&device)?
    };
    let floor = bandwidth_floor.max(flops_floor) / o.batch as f64;
    let seconds_per_image = best / o.batch as f64;
    let row = serde_json::json!({
        "model": label,
        "batch": o.batch,
        "steps": steps_run as usize,
        "dtype": o.dtype,
        "device": o.device,
        "seconds_per_image": seconds_per_image,
        "images_per_s": o.batch as f64 / best,
        "step_ms_median": median,
        "peak_rss_mib": peak,
        "floor_s": floor,
        "kernel": kernel_name,
        "weights_mib": bytes / (1024.0 * 1024.0),
        "kv_cache_mib": kv_mib,
    });
    if json {
        outln!("{row}")?;
    } else {
        // The rest of an image's time: the tokenizer (and, for the shipped model, when the
        // first preview and the full image appear).
        let (tok, side) = if label == "shipped" {
            ("shipped", cfg.grid_size() * 4)
        } else {
            ("vq-16", 256)
        };
        let decoder = if on_wgpu {
            backend
        } else {
            arpg_core::Backend::Cpu
        };
        let (_, _, encode_s, decode_s) = tokenizer_times_on(tok, side, side, decoder, DType::F32)?;
        outln!("| model | batch | dtype | device | image (s) | images/s | step median (ms) | floor/image (s) | peak RSS (MiB) | kernel |")?;
        outln!("|---|---|---|---|---|---|---|---|---|---|")?;
        outln!(
            "| {label} | {} | {} | {} | {seconds_per_image:.2} | {:.3} | {median:.1} | {floor:.2} | {peak:.0} | {} |",
            o.batch,
            o.dtype,
            o.device,
            o.batch as f64 / best,
            kernel_name
        )?;
        outln!()?;
        outln!("| {tok} tokenizer, {side}x{side} | seconds per image |")?;
        outln!("|---|---|")?;
        outln!("| encode | {encode_s:.3} |")?;
        outln!("| decode | {decode_s:.3} |")?;
        if label == "shipped" {
            outln!("| first preview (first step) | {first_step_s:.3} |")?;
            outln!(
                "| full image (all steps + decode) | {:.3} |",
                seconds_per_image + decode_s
            )?;
        }
    }
    Ok(())
}

/// One measured configuration.
struct Row {
    label: String,
    params: usize,
    dtype: String,
    cfg_rows: usize,
    bytes: f64,
    step_ms: f64,
    tokens_per_s: f64,
    image_s: f64,
    peak_rss: f64,
}

/// Image sizes of the `--scale` table, `(width, height)`.
const SCALE_SIZES: [(usize, usize); 4] = [(256, 256), (512, 512), (1024, 1024), (1000, 700)];

/// Memory available to a new process, in MiB (Linux `MemAvailable`; `None` elsewhere).
fn available_mib() -> Option<f64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|kib| kib / 1024.0)
}

/// `arpg bench --scale`: encode and decode seconds and peak RSS of the tokenizers by image size.
/// Each row runs in its own process, so its peak memory is its own. A row whose memory,
/// extrapolated by area from the tokenizer's previous row, would exceed the memory available is
/// skipped rather than run into the out-of-memory killer.
pub fn scale_table() -> Result<()> {
    let exe = std::env::current_exe().context("locating the arpg executable")?;
    outln!("| tokenizer | image | encode s | decode s | peak RSS MiB |")?;
    outln!("|---|---|---|---|---|")?;
    for tokenizer in ["shipped", "vq-16"] {
        // (pixels, peak RSS MiB) of the previous row.
        let mut previous: Option<(f64, f64)> = None;
        for (w, h) in SCALE_SIZES {
            let spec = format!("{tokenizer}:{w}x{h}");
            let pixels = (w * h) as f64;
            let predicted = previous.map(|(px, mib)| mib * pixels / px);
            if let (Some(need), Some(free)) = (predicted, available_mib()) {
                if need > 0.8 * free {
                    outln!(
                        "| {tokenizer} | {w}x{h} | skipped: needs about {:.0} GiB, {:.0} GiB \
                         available | | |",
                        need / 1024.0,
                        free / 1024.0
                    )?;
                    continue;
                }
            }
            let out = std::process::Command::new(&exe)
                .args(["bench", "--scale-row", &spec])
                .output()
                .with_context(|| format!("running the {spec} row"))?;
            let row = if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                let v: serde_json::Value = serde_json::from_str(text.trim())
                    .with_context(|| format!("row {spec} printed {text}"))?;
                if let Some(mib) = v["peak_rss_mib"].as_f64() {
                    previous = Some((pixels, mib));
                }
                format!(
                    "{:.2} | {:.2} | {:.0}",
                    v["encode_s"].as_f64().unwrap_or(f64::NAN),
                    v["decode_s"].as_f64().unwrap_or(f64::NAN),
                    v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
                )
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                format!("failed: {} | | ", err.lines().last().unwrap_or("no output"))
            };
            outln!("| {tokenizer} | {w}x{h} | {row} |")?;
        }
    }
    Ok(())
}

/// One row of [`scale_table`]: `spec` is `shipped:WxH` or `vq-16:WxH`; prints one JSON object.
/// `--model vq-16`: the VQ-16-shaped tokenizer (random weights) encoding and decoding one
/// 256x256 image; `dtype` is the decoder's (f32, or bf16 on a CPU with AVX512-BF16; the encoder
/// computes in f32); with `json`, one JSON object on the last line (`decode_s`, `encode_s` per
/// image, `peak_rss_mib`).
pub fn tokenizer_one(dtype: &str, device: &str, json: bool) -> Result<()> {
    let d = arpg_core::pair::dtype(dtype)?;
    if d != DType::F32 && d != DType::BF16 {
        bail!("--dtype {dtype}: the tokenizer decodes in f32 or bf16");
    }
    let backend = arpg_core::Backend::parse(device)?;
    if d != DType::F32 && backend != arpg_core::Backend::Cpu {
        bail!("the decoder computes in f32 on {backend}; --dtype {dtype} is a CPU mode");
    }
    let (w, h, encode_s, decode_s) = tokenizer_times_on("vq-16", 256, 256, backend, d)?;
    if json {
        let mut row = tokenizer_json("vq-16", w, h, encode_s, decode_s);
        row["model"] = "vq-16".into();
        row["dtype"] = dtype.into();
        row["device"] = backend.to_string().into();
        outln!("{row}")?;
    } else {
        outln!("| tokenizer | image | dtype | device | encode s | decode s | peak RSS MiB |")?;
        outln!("|---|---|---|---|---|---|---|")?;
        outln!(
            "| vq-16 | {w}x{h} | {dtype} | {backend} | {encode_s:.3} | {decode_s:.3} | {:.0} |",
            peak_rss_mib()
        )?;
    }
    Ok(())
}

pub fn scale_row(spec: &str) -> Result<()> {
    let (tokenizer, size) = spec
        .split_once(':')
        .with_context(|| format!("`{spec}`: expected TOKENIZER:WxH"))?;
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .with_context(|| format!("`{size}`: expected WxH"))?;
    let (w, h, encode_s, decode_s) = tokenizer_times(tokenizer, w, h)?;
    outln!("{}", tokenizer_json(tokenizer, w, h, encode_s, decode_s))?;
    Ok(())
}

/// One tokenizer measurement as JSON (what `--scale` rows and `--model vq-16` print).
fn tokenizer_json(
    tokenizer: &str,
    w: usize,
    h: usize,
    encode_s: f64,
    decode_s: f64,
) -> serde_json::Value {
    serde_json::json!({
        "tokenizer": tokenizer,
        "width": w,
        "height": h,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "peak_rss_mib": peak_rss_mib(),
    })
}

/// Encode and decode seconds of one `w x h` image (snapped up to whole tokens) through the
/// product's path: `shipped` (the shipped tokenizer) or `vq-16` (random weights). Returns the
/// snapped size and the two times.
fn tokenizer_times(tokenizer: &str, w: usize, h: usize) -> Result<(usize, usize, f64, f64)> {
    tokenizer_times_on(tokenizer, w, h, arpg_core::Backend::Cpu, DType::F32)
}

/// [`tokenizer_times`] with the decoder on `backend`, in `decode_dtype` on the CPU (packed
/// before the clock starts, as at load). The decoder runs once before the timed decode (as the
/// reference's script warms up; on `wgpu` pipelines and weights are set up once per model, not
/// per image); the encoder always runs on the CPU.
fn tokenizer_times_on(
    tokenizer: &str,
    w: usize,
    h: usize,
    backend: arpg_core::Backend,
    decode_dtype: DType,
) -> Result<(usize, usize, f64, f64)> {
    let dev = Device::Cpu;
    let mut vq = match tokenizer {
        "shipped" => arpg_core::loader::load_vq(arpg_core::shipped::vq_path(), None, &dev)?,
        "vq-16" => {
            let cfg = arpg_core::VqConfig::vq_16();
            random_model(DType::F32, |vb| arpg_core::VqModel::new(&cfg, vb))?.0
        }
        other => bail!("unknown tokenizer `{other}` (shipped or vq-16)"),
    };
    vq.set_decode_dtype(decode_dtype)?;
    let p = vq.config().downsample();
    let (w, h) = (w.div_ceil(p) * p, h.div_ceil(p) * p);
    // Random pixels through the product's path (tiles above the threshold, see `Tiling`).
    let mut rng = arpg_core::sampler::Rng::new(1);
    let rgb: Vec<u8> = (0..w * h * 3).map(|_| rng.below(256) as u8).collect();
    let tokenizer = on_backend(vq, backend)?;
    let t = Instant::now();
    let tokens = tokenizer.encode_rgb8(&rgb, w, h)?;
    let encode_s = t.elapsed().as_secs_f64();
    // One decode before the clock (as the reference's script warms up): buffers, the thread
    // pool, and on a GPU its pipelines.
    tokenizer.decode_rgb8(&tokens, h / p, w / p)?;
    let t = Instant::now();
    let decoded = tokenizer.decode_rgb8(&tokens, h / p, w / p)?;
    std::hint::black_box(decoded.len());
    let decode_s = t.elapsed().as_secs_f64();
    if let Some(fault) = tokenizer.take_fault() {
        bail!("the GPU decoder failed: {fault}");
    }
    Ok((w, h, encode_s, decode_s))
}

/// The tokenizer on `backend`; an error when a GPU was asked for and cannot be used (a
/// benchmark never falls back).
fn on_backend(vq: arpg_core::VqModel, backend: arpg_core::Backend) -> Result<arpg_core::Tokenizer> {
    match backend {
        arpg_core::Backend::Cpu => Ok(vq.into()),
        arpg_core::Backend::Wgpu(index) => {
            let gpu = arpg_core::gpu::Gpu::open_named(index)?;
            Ok(arpg_core::Tokenizer::on_gpu(vq, &gpu)?)
        }
        other => bail!("the tokenizer benchmark runs on cpu or wgpu[:N], not {other}"),
    }
}
