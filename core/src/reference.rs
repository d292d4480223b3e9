//! Runs a reference fixture set (a directory laid out like `shared/fixtures/reference/tiny/`:
//! `manifest.json`, `cases.safetensors`, weights as `.pt` and `.safetensors`) against this crate
//! and reports, per case, the largest error and the tolerance it was held to.
//!
//! Everything is read from the manifest (configs, case settings, tolerances), so any set with that
//! layout works: other widths, depths, vocabularies, grids, VQ depths, `logit_cols` subsets.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::backend::{Backend, Ids, Tokenizer, Transformer};
use crate::checkpoint::Checkpoint;
use crate::config::{ArpgConfig, VqConfig};
use crate::error::{Error, Result};
use crate::generator::{Generation, KnownCells, OrderMode, Request, Settings};
use crate::loader;
use crate::model::rope::RopeTable;
use crate::model::Arpg;
use crate::schedule::{self, CfgSchedule, Schedule};
use crate::vq::VqModel;

/// Which weight files to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Pt,
    Safetensors,
}

/// Outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    /// Largest absolute difference (or mismatch count for exact cases).
    pub max_err: f64,
    pub tolerance: String,
    pub note: String,
}

impl std::fmt::Display for CaseResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {:<28} max_err {:<10.3e} tol {}{}",
            if self.passed { "PASS" } else { "FAIL" },
            self.name,
            self.max_err,
            self.tolerance,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", self.note)
            }
        )
    }
}

/// Absolute/relative tolerance: `|a - b| <= atol + rtol * |b|`.
#[derive(Debug, Clone, Copy)]
struct Tol {
    atol: f64,
    rtol: f64,
}

impl Tol {
    fn from_manifest(m: &Value, key: &str, default: (f64, f64)) -> Self {
        let t = &m["suggested_tolerances"][key];
        Self {
            atol: t["atol"].as_f64().unwrap_or(default.0),
            rtol: t["rtol"].as_f64().unwrap_or(default.1),
        }
    }

    fn describe(&self) -> String {
        format!("atol {:.0e} rtol {:.0e}", self.atol, self.rtol)
    }
}

/// Max |a - b| and whether every element is within `tol`.
fn compare(ours: &Tensor, theirs: &Tensor, tol: Tol) -> Result<(f64, bool)> {
    if ours.dims() != theirs.dims() {
        return Err(Error::InvalidRequest(format!(
            "shape {:?} differs from the reference {:?}",
            ours.dims(),
            theirs.dims()
        )));
    }
    let a = ours.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = theirs
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut max = 0f64;
    let mut ok = true;
    for (x, y) in a.iter().zip(&b) {
        let d = (x - y).abs();
        max = max.max(d);
        ok &= d <= tol.atol + tol.rtol * y.abs();
    }
    Ok((max, ok))
}

/// A fixture set: its manifest and cases.
pub struct FixtureSet {
    dir: PathBuf,
    manifest: Value,
    cases: Checkpoint,
    /// Stored logit columns, if the set keeps only a subset.
    logit_cols: Option<Tensor>,
}

impl FixtureSet {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mpath = dir.join("manifest.json");
        let text = crate::text::read(&mpath, crate::text::MAX_CONFIG_BYTES)?;
        let manifest: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            context: mpath.display().to_string(),
            err: e,
        })?;
        let cases = Checkpoint::open(dir.join("cases.safetensors"))?;
        let logit_cols = if cases.contains("logit_cols") {
            Some(cases.read_native("logit_cols")?.to_dtype(DType::U32)?)
        } else {
            None
        };
        Ok(Self {
            dir,
            manifest,
            cases,
            logit_cols,
        })
    }

    pub fn manifest(&self) -> &Value {
        &self.manifest
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.cases.read_native(name)
    }

    fn has(&self, name: &str) -> bool {
        self.cases.contains(name)
    }

    fn weights_path(&self, section: &str, format: WeightFormat) -> PathBuf {
        let key = match format {
            WeightFormat::Pt => "checkpoint_pt",
            WeightFormat::Safetensors => "checkpoint_safetensors",
        };
        let fallback = match (section, format) {
            ("gpt", WeightFormat::Pt) => "tiny_gpt.pt",
            ("gpt", WeightFormat::Safetensors) => "gpt.safetensors",
            (_, WeightFormat::Pt) => "tiny_vq.pt",
            (_, WeightFormat::Safetensors) => "vq.safetensors",
        };
        self.dir
            .join(self.manifest[section][key].as_str().unwrap_or(fallback))
    }

    pub fn arpg_config(&self) -> Result<ArpgConfig> {
        loader::config_from_json(&self.dir.join("manifest.json"), "gpt")
    }

    pub fn vq_config(&self) -> Result<VqConfig> {
        loader::config_from_json(&self.dir.join("manifest.json"), "vq")
    }

    /// The candle model on `device` (tests of its layers).
    pub fn load_arpg(&self, format: WeightFormat, device: &Device) -> Result<Arpg> {
        let cfg = self.arpg_config()?;
        let loaded = loader::load_arpg(
            self.weights_path("gpt", format),
            Some(cfg),
            DType::F32,
            device,
        )?;
        loaded
            .model
            .candle()
            .cloned()
            .ok_or_else(|| Error::Internal("the loader made no candle model".into()))
    }

    /// The transformer on `backend` (what [`FixtureSet::run`] checks).
    pub fn load_transformer(&self, format: WeightFormat, backend: Backend) -> Result<Transformer> {
        let cfg = self.arpg_config()?;
        let model = loader::load_arpg(
            self.weights_path("gpt", format),
            Some(cfg),
            DType::F32,
            &backend.candle_device()?,
        )?
        .model;
        match backend {
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(index) => {
                let gpu = crate::gpu::Gpu::open_named(index)?;
                let cpu = model
                    .candle()
                    .cloned()
                    .ok_or_else(|| Error::Internal("the loader made no candle model".into()))?;
                Transformer::on_gpu(cpu, &gpu)
            }
            _ => Ok(model),
        }
    }

    /// The tokenizer on `backend` (its decoder on the GPU for `wgpu[:N]`; an error when that
    /// GPU cannot be used: a check never falls back).
    pub fn load_tokenizer(&self, format: WeightFormat, backend: Backend) -> Result<Tokenizer> {
        let vq = self.load_vq(format, &backend.candle_device()?)?;
        match backend {
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(index) => {
                let gpu = crate::gpu::Gpu::open_named(index)?;
                Tokenizer::on_gpu(vq, &gpu)
            }
            _ => Ok(vq.into()),
        }
    }

    pub fn load_vq(&self, format: WeightFormat, device: &Device) -> Result<VqModel> {
        let cfg = self.vq_config()?;
        loader::load_vq(self.weights_path("vq", format), Some(cfg), device)
    }

    /// Keeps only the stored logit columns of `(…, V)` logits.
    fn select_cols(&self, logits: &Tensor) -> Result<Tensor> {
        match &self.logit_cols {
            Some(cols) => Ok(logits.index_select(cols, logits.rank() - 1)?),
            None => Ok(logits.clone()),
        }
    }

    /// Runs every case present in the set on `backend` (the tokenizer's encoder on the candle
    /// model, whichever the backend).
    pub fn run(&self, format: WeightFormat, backend: Backend) -> Result<Vec<CaseResult>> {
        let mut results = Vec::new();
        results.extend(self.schedule_cases()?);
        let model = self.load_transformer(format, backend)?;
        results.push(self.rope_case(&model)?);
        results.extend(self.teacher_forced_cases(&model)?);
        for run in ["a", "b", "c", "d", "e", "f"] {
            if self.has(&format!("gen_{run}_tokens")) {
                results.extend(self.greedy_case(&model, run)?);
            }
        }
        let on = model.device_name();
        if on != "CPU" {
            for r in results
                .iter_mut()
                .filter(|r| r.name.contains("logits") || r.name.ends_with("_tokens"))
            {
                r.note = format!("computed on {on}");
            }
        }
        let vq = self.load_tokenizer(format, backend)?;
        results.extend(self.vq_cases(&vq)?);
        Ok(results)
    }

    fn schedule_cases(&self) -> Result<Vec<CaseResult>> {
        let Some(list) = self.manifest["cases"]["schedule"].as_object() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, spec) in list {
            let kind: Schedule = spec["kind"].as_str().unwrap_or("arccos").parse()?;
            let n = spec["seq_len"].as_u64().unwrap_or(0) as usize;
            let t = spec["num_iter"].as_u64().unwrap_or(0) as usize;
            let expected: Vec<i64> = self.tensor(name)?.to_vec1()?;
            let ours = schedule::num_pred(kind, n, t)?;
            let mismatches = ours
                .iter()
                .zip(&expected)
                .filter(|(a, b)| **a as i64 != **b)
                .count()
                + ours.len().abs_diff(expected.len());
            out.push(CaseResult {
                name: name.clone(),
                passed: mismatches == 0,
                max_err: mismatches as f64,
                tolerance: "exact".into(),
                note: String::new(),
            });
        }
        Ok(out)
    }

    fn rope_case(&self, model: &Transformer) -> Result<CaseResult> {
        let expected = self.tensor("rope_freqs_cis")?;
        let cfg = model.config();
        let rope = RopeTable::new(cfg.grid_size(), cfg.head_dim(), cfg.rope_base, &Device::Cpu)?;
        let rows = rope.rows();
        let idx = Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((1, rows))?;
        let (cos, sin) = rope.gather(&idx)?;
        let ours = Tensor::stack(
            &[cos.squeeze(0)?.squeeze(0)?, sin.squeeze(0)?.squeeze(0)?],
            2,
        )?;
        let tol = Tol {
            atol: 1e-6,
            rtol: 0.0,
        };
        let (err, ok) = compare(&ours.to_device(&Device::Cpu)?, &expected, tol)?;
        Ok(CaseResult {
            name: "rope_freqs_cis".into(),
            passed: ok,
            max_err: err,
            tolerance: tol.describe(),
            note: String::new(),
        })
    }

    fn teacher_forced_cases(&self, model: &Transformer) -> Result<Vec<CaseResult>> {
        let tol = Tol::from_manifest(&self.manifest, "transformer_logits", (1e-5, 1e-4));
        let ids = Ids::from_tensor(&self.tensor("tf_ids")?)?;
        let classes: Vec<u32> = self
            .tensor("tf_classes")?
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1()?;
        let class_ids: Vec<u32> = classes
            .iter()
            .map(|&c| c + model.config().vocab_size as u32 + 1)
            .collect();
        let orders = Ids::from_tensor(&self.tensor("tf_orders")?)?;
        let mut out = Vec::new();
        for (name, causal) in [("tf_causal_logits", true), ("tf_eval_logits", false)] {
            if !self.has(name) {
                continue;
            }
            let logits = model.forward_teacher(&ids, &class_ids, &orders, causal)?;
            let ours = self.select_cols(&logits.to_tensor()?)?;
            let (err, ok) = compare(&ours, &self.tensor(name)?, tol)?;
            out.push(CaseResult {
                name: name.into(),
                passed: ok,
                max_err: err,
                tolerance: tol.describe(),
                note: String::new(),
            });
        }
        Ok(out)
    }

    /// Greedy generation with the stored order, through the sampler's step machine.
    fn greedy_case(&self, model: &Transformer, run: &str) -> Result<Vec<CaseResult>> {
        let spec = &self.manifest["cases"]["generate_greedy"][run];
        let tol = Tol::from_manifest(&self.manifest, "transformer_logits", (1e-5, 1e-4));
        let t = |s: &str| self.tensor(&format!("gen_{run}_{s}"));
        let classes: Vec<i64> = t("classes")?.to_vec1()?;
        let order: Vec<i64> = t("order")?.to_vec1()?;
        let num_pred: Vec<i64> = t("num_pred")?.to_vec1()?;
        let cfg_expected: Vec<f64> = t("cfg_scale")?.to_dtype(DType::F64)?.to_vec1()?;
        let step_logits = t("step_logits")?;
        let tokens_expected: Vec<Vec<i64>> = t("tokens")?.to_vec2()?;
        let gap: Vec<Vec<f32>> = t("top2_gap")?.to_vec2()?;
        let settings = Settings {
            steps: spec["num_iter"].as_u64().unwrap_or(num_pred.len() as u64) as usize,
            schedule: spec["sample_schedule"]
                .as_str()
                .unwrap_or("arccos")
                .parse()?,
            cfg_scale: spec["guidance_scale"].as_f64().unwrap_or(1.0),
            cfg_schedule: spec["cfg_schedule"]
                .as_str()
                .unwrap_or("linear")
                .parse::<CfgSchedule>()?,
            temperature: spec["temperature"].as_f64().unwrap_or(1.0),
            top_k: spec["top_k"].as_u64().unwrap_or(1) as usize,
            top_p: spec["top_p"].as_f64().unwrap_or(1.0),
            seed: 0,
            // The reference has neither revisit.
            settle: 0,
            polish: 0,
        };
        let request = Request {
            classes: classes.iter().map(|&c| Some(c as usize)).collect(),
            settings,
            order: OrderMode::Fixed(order.iter().map(|&c| c as usize).collect()),
            known: KnownCells::Nothing,
        };
        let mut gen = Generation::new(model, &request)?;
        let counts_ok = gen
            .tokens_per_step()
            .iter()
            .map(|&c| c as i64)
            .eq(num_pred.iter().copied());

        // Run every step; compare each step's raw logits until the first token differs.
        let b = classes.len();
        let mut logit_err = 0f64;
        let mut logits_ok = true;
        let mut cfg_err = 0f64;
        let mut offset = 0usize;
        let mut diverged = false;
        let mut near_tie = false;
        while let Some(out) = gen.step()? {
            cfg_err = cfg_err.max(
                (out.cfg_scale - cfg_expected.get(out.step).copied().unwrap_or(f64::NAN)).abs(),
            );
            let n = out.cells[0].len();
            if !diverged {
                let theirs = step_logits.narrow(1, offset, n)?;
                let ours = self.select_cols(&out.logits.to_tensor()?)?;
                let (e, ok) = compare(&ours, &theirs, tol)?;
                logit_err = logit_err.max(e);
                logits_ok &= ok;
                for i in 0..b {
                    for (j, (&cell, &tok)) in out.cells[i].iter().zip(&out.tokens[i]).enumerate() {
                        if tok as i64 != tokens_expected[i][cell] {
                            diverged = true;
                            // A flip is legitimate only where the reference's top-2 gap is within
                            // twice our combined-logit error (scale ≤ g, so bound it generously).
                            let bound = 2.0 * (1.0 + 2.0 * out.cfg_scale.abs()) * e.max(tol.atol);
                            near_tie |= (gap[i][offset + j] as f64) <= bound;
                        }
                    }
                }
            }
            offset += n;
        }
        let tokens = gen.finished_tokens()?;
        let mismatches: usize = tokens
            .iter()
            .zip(&tokens_expected)
            .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| **x as i64 != **y).count())
            .sum();
        let tokens_ok = mismatches == 0 || near_tie;
        let name = |s: &str| format!("gen_{run}_{s}");
        Ok(vec![
            CaseResult {
                name: name("num_pred"),
                passed: counts_ok,
                max_err: if counts_ok { 0.0 } else { 1.0 },
                tolerance: "exact".into(),
                note: String::new(),
            },
            CaseResult {
                name: name("cfg_scale"),
                passed: cfg_err <= 1e-12,
                max_err: cfg_err,
                tolerance: "1e-12".into(),
                note: String::new(),
            },
            CaseResult {
                name: name("step_logits"),
                passed: logits_ok,
                max_err: logit_err,
                tolerance: tol.describe(),
                note: if diverged {
                    "compared up to the first differing token".into()
                } else {
                    String::new()
                },
            },
            CaseResult {
                name: name("tokens"),
                passed: tokens_ok,
                max_err: mismatches as f64,
                tolerance: "exact".into(),
                note: if mismatches > 0 && near_tie {
                    "first difference is a near-tie".into()
                } else {
                    String::new()
                },
            },
        ])
    }

    fn vq_cases(&self, tokenizer: &Tokenizer) -> Result<Vec<CaseResult>> {
        let vq = tokenizer.model();
        let dev = vq.device().clone();
        let img_tol = Tol::from_manifest(&self.manifest, "vq_image", (1e-4, 1e-4));
        let lat_tol = Tol::from_manifest(&self.manifest, "vq_latent", (2e-5, 1e-4));
        let on_gpu = !matches!(tokenizer, Tokenizer::Candle(_));
        let mut out = Vec::new();
        let mut push = |name: &str, r: (f64, bool), tol: &Tol| {
            let note = match (on_gpu, name == "vq_decode_image") {
                (false, _) => String::new(),
                (true, true) => format!("decoded on {} (wgpu)", tokenizer.decoder_device()),
                (true, false) => "the encoder runs on the CPU".into(),
            };
            out.push(CaseResult {
                name: name.into(),
                passed: r.1,
                max_err: r.0,
                tolerance: tol.describe(),
                note,
            })
        };
        if self.has("vq_decode_tokens") {
            let tokens = Ids::from_tensor(&self.tensor("vq_decode_tokens")?)?;
            let expected = self.tensor("vq_decode_image")?;
            let grid = self.manifest["cases"]["vq_decode"]["shape_arg"]
                .as_array()
                .and_then(|a| Some((a.get(2)?.as_u64()? as usize, a.get(3)?.as_u64()? as usize)))
                .unwrap_or_else(|| {
                    let side = (tokens.len as f64).sqrt() as usize;
                    (side, side)
                });
            let image = tokenizer.decode(&tokens, grid)?;
            push(
                "vq_decode_image",
                compare(&image, &expected, img_tol)?,
                &img_tol,
            );
        }
        if self.has("vq_encode_image") {
            let image = self.tensor("vq_encode_image")?.to_device(&dev)?;
            let enc = vq.encoder_out(&image)?;
            if self.has("vq_encode_encoder_out") {
                let r = compare(
                    &enc.to_device(&Device::Cpu)?,
                    &self.tensor("vq_encode_encoder_out")?,
                    lat_tol,
                )?;
                push("vq_encode_encoder_out", r, &lat_tol);
            }
            let latent = vq.latent(&image)?;
            let r = compare(
                &latent.to_device(&Device::Cpu)?,
                &self.tensor("vq_encode_latent")?,
                lat_tol,
            )?;
            push("vq_encode_latent", r, &lat_tol);
            let idx: Vec<Vec<u32>> = vq.quantize(&latent)?.to_device(&Device::Cpu)?.to_vec2()?;
            let expected: Vec<Vec<i64>> = self.tensor("vq_encode_indices")?.to_vec2()?;
            let gaps: Option<Vec<Vec<f32>>> = if self.has("vq_encode_dist_gap") {
                Some(self.tensor("vq_encode_dist_gap")?.to_vec2()?)
            } else {
                None
            };
            let mut hard = 0usize;
            let mut ties = 0usize;
            for (i, (a, b)) in idx.iter().zip(&expected).enumerate() {
                for (j, (x, y)) in a.iter().zip(b).enumerate() {
                    if *x as i64 != *y {
                        match &gaps {
                            Some(g) if g[i][j] <= 1e-5 => ties += 1,
                            _ => hard += 1,
                        }
                    }
                }
            }
            out.push(CaseResult {
                name: "vq_encode_indices".into(),
                passed: hard == 0,
                max_err: (hard + ties) as f64,
                tolerance: "exact where gap > 1e-5".into(),
                note: if ties > 0 {
                    format!("{ties} near-tie(s)")
                } else {
                    String::new()
                },
            });
            if self.has("vq_encode_quant") {
                let expected = self.tensor("vq_encode_quant")?;
                let (_, _, h, w) = expected.dims4()?;
                let tokens = Tensor::new(idx, &dev)?;
                let quant = vq.lookup(&tokens, (h, w))?.to_device(&Device::Cpu)?;
                let r = compare(&quant, &expected, lat_tol)?;
                out.push(CaseResult {
                    name: "vq_encode_quant".into(),
                    passed: r.1,
                    max_err: r.0,
                    tolerance: lat_tol.describe(),
                    note: String::new(),
                });
            }
        }
        Ok(out)
    }
}

/// Runs a fixture directory end to end.
pub fn check_reference(
    dir: impl AsRef<Path>,
    format: WeightFormat,
    backend: Backend,
) -> Result<Vec<CaseResult>> {
    FixtureSet::open(dir)?.run(format, backend)
}
