//! Training of the shipped model: the VQ tokenizer and the ARPG transformer, on the procedural
//! dataset, with periodic checkpoints, resume and a loss log. Both use the same model code as
//! inference (`VqModel`, `Arpg::new_for_training`).
//!
//! Recipes: VQ with reconstruction (L1 + L2 + L1 of image gradients) + codebook + 0.25 ·
//! commitment losses (LlamaGen's, with an edge term in place of the perceptual/adversarial ones); ARPG with the reference recipe — a fresh random
//! order per sample, class dropout 0.1, AdamW (0.9, 0.95), cosine learning rate with warm-up.
//! Resume restores weights and the step (hence the learning-rate schedule); AdamW moments restart.
//! A run can start from trained weights (`TrainOptions::init`), for ARPG also from a shallower
//! model, whose blocks then sit among identity blocks of the deeper one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::config::{ArpgConfig, VqConfig};
use crate::dataset;
use crate::error::{Error, Result};
use crate::model::Arpg;
use crate::sampler::Rng;
use crate::vq::{self, VqModel};

/// Optimisation settings shared by both stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub seed: u64,
    /// Save a checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Image side in pixels.
    pub image_size: usize,
    /// Cycle over only this many images (a fixed "handful", for smoke tests); `None` = endless
    /// fresh samples.
    pub pool: Option<usize>,
    /// Fine-tuning: start a new run (step 0, fresh schedule) from these weights instead of a
    /// random initialisation; for ARPG also from a shallower model of the same width (depth
    /// growth, see `DepthGrowth`). Ignored when the run directory already has a checkpoint to
    /// resume.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// VQ only: the share of tokens decoded among another image's tokens (see `mosaic_rows`);
    /// 0 = plain reconstruction, as in the reference.
    #[serde(default)]
    pub mosaic: f64,
    /// VQ only: train the decoder (and `post_quant_conv`) alone; the encoder and the codebook
    /// stay as initialised, so every image keeps its tokens and a transformer trained on them
    /// stays valid. The encoder runs without gradients; the codebook and commitment terms,
    /// constant here, are logged as 0.
    #[serde(default)]
    pub decoder_only: bool,
}

impl TrainOptions {
    /// Index of the first image of `step`'s batch.
    fn batch_start(&self, step: usize) -> u64 {
        let start = (step * self.batch) as u64;
        match self.pool {
            Some(p) if p > 0 => start % p as u64,
            _ => start,
        }
    }
}

/// One logged step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    /// Stage-specific terms (VQ: rec, codebook, commit, usage; ARPG: accuracy).
    pub terms: Vec<(String, f64)>,
    pub lr: f64,
    pub seconds: f64,
}

/// Persistent progress of a training run, saved beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: usize,
    seconds: f64,
}

/// Cosine learning rate with linear warm-up, decaying to 10% of the peak.
pub fn learning_rate(step: usize, opts: &TrainOptions) -> f64 {
    if step < opts.warmup {
        return opts.lr * (step + 1) as f64 / opts.warmup as f64;
    }
    let t = (step - opts.warmup) as f64 / (opts.steps - opts.warmup).max(1) as f64;
    let min = 0.1 * opts.lr;
    min + 0.5 * (opts.lr - min) * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}

/// Where a variable's initial value comes from when a run starts from a file.
enum InitSource {
    /// This tensor of the file.
    Tensor(String),
    /// Zeros (the output projections of a block added by depth growth).
    Zeros,
    /// The random initialisation.
    Fresh,
}

/// How the blocks of a shallower ARPG checkpoint map onto a deeper model of the same width
/// (progressive stacking): the file's blocks keep their order, spread evenly over each stack,
/// and every added block starts as an identity — fresh weights with its attention and
/// feed-forward output projections at zero, so the deeper model computes exactly what the
/// file's model computed and training starts from its loss.
#[derive(Debug, Default)]
struct DepthGrowth {
    /// For each stack (`self_dec`, `cross_dec`): the file's block index of each new block.
    stacks: Vec<(&'static str, Vec<Option<usize>>)>,
}

impl DepthGrowth {
    fn source(&self, name: &str) -> InitSource {
        for (stack, map) in &self.stacks {
            let prefix = format!("layers.{stack}.");
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some((index, param)) = rest.split_once('.') else {
                continue;
            };
            let Some(slot) = index.parse::<usize>().ok().and_then(|i| map.get(i)) else {
                continue;
            };
            return match slot {
                Some(old) => InitSource::Tensor(format!("{prefix}{old}.{param}")),
                None if param == "attn.proj.weight" || param == "ffn.w2.weight" => {
                    InitSource::Zeros
                }
                None => InitSource::Fresh,
            };
        }
        InitSource::Tensor(name.to_string())
    }
}

/// Reads how many blocks each stack of the checkpoint `init` has; when the model `cfg` has more,
/// plans the growth, otherwise (same depth) maps every name to itself.
fn depth_growth(init: &Path, cfg: &ArpgConfig) -> Result<DepthGrowth> {
    let names: Vec<String> = candle_core::safetensors::load(init, &Device::Cpu)?
        .into_keys()
        .collect();
    let mut stacks = Vec::new();
    for (stack, want) in [
        ("self_dec", cfg.n_self_layers()),
        ("cross_dec", cfg.n_cross_layers()),
    ] {
        let prefix = format!("layers.{stack}.");
        let have = names
            .iter()
            .filter_map(|n| {
                n.strip_prefix(&prefix)?
                    .split_once('.')?
                    .0
                    .parse::<usize>()
                    .ok()
            })
            .map(|i| i + 1)
            .max()
            .unwrap_or(0);
        if have > want {
            return Err(Error::Config(format!(
                "initial weights {}: {have} {stack} blocks, more than the model's {want}",
                init.display()
            )));
        }
        stacks.push((stack, grown_stack(have, want)));
    }
    Ok(DepthGrowth { stacks })
}

/// New block `j` of `want` takes old block `i` of `have` when `j = floor((i + 1) * want / have) - 1`
/// (the old blocks spread evenly, the last one last); the rest are new (`None`).
fn grown_stack(have: usize, want: usize) -> Vec<Option<usize>> {
    let mut map = vec![None; want];
    for i in 0..have {
        map[(i + 1) * want / have - 1] = Some(i);
    }
    map
}

/// A batch of dataset images as `(B, 3, S, S)` in `[-1, 1]` plus labels.
pub fn image_batch(
    start: u64,
    n: usize,
    seed: u64,
    size: usize,
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    let (images, labels) = dataset::batch(start, n, seed, size);
    let t = images
        .iter()
        .map(|rgb| vq::from_rgb8(rgb, size, size, device))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((Tensor::cat(&t, 0)?, labels))
}

/// Output directory layout of a run.
struct RunFiles {
    weights: PathBuf,
    state: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl RunFiles {
    fn new(dir: &Path, stem: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self {
            weights: dir.join(format!("{stem}.safetensors")),
            state: dir.join(format!("{stem}.state.json")),
            config: dir.join(format!("{stem}.json")),
            log: dir.join(format!("{stem}.loss.csv")),
        })
    }

    /// Resumes the run in this directory, or starts one: from `init` when given (each variable
    /// of the model takes what `source` names for it), else from the random initialisation.
    fn load_state(
        &self,
        varmap: &mut VarMap,
        init: Option<&Path>,
        source: &dyn Fn(&str) -> InitSource,
    ) -> Result<TrainState> {
        if self.weights.is_file() && self.state.is_file() {
            varmap.load(&self.weights)?;
            let text =
                std::fs::read_to_string(&self.state).map_err(|e| Error::io(&self.state, e))?;
            return serde_json::from_str(&text).map_err(|e| Error::Json {
                context: self.state.display().to_string(),
                err: e,
            });
        }
        if let Some(init) = init {
            let tensors = candle_core::safetensors::load(init, &candle_core::Device::Cpu)?;
            let vars = varmap
                .data()
                .lock()
                .map_err(|_| Error::Config("poisoned variable map".into()))?;
            for (name, var) in vars.iter() {
                let from = match source(name) {
                    InitSource::Fresh => continue,
                    InitSource::Zeros => {
                        var.set(&var.zeros_like()?)?;
                        continue;
                    }
                    InitSource::Tensor(from) => from,
                };
                // Every other variable must be in the file: a partial load would train a
                // half-random model without saying so.
                let t = tensors.get(&from).ok_or_else(|| {
                    Error::Config(format!(
                        "initial weights {}: no tensor `{from}` (is it a checkpoint of this model?)",
                        init.display()
                    ))
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::Config(format!(
                        "initial weights {}: `{from}` has shape {:?}, the model expects {:?} for `{name}`",
                        init.display(),
                        t.dims(),
                        var.dims()
                    )));
                }
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            }
        }
        Ok(TrainState {
            step: 0,
            seconds: 0.0,
        })
    }

    /// Writes weights then state through temporary files, so an interruption never leaves a
    /// half-written checkpoint.
    fn save(&self, varmap: &VarMap, state: &TrainState, config: &impl Serialize) -> Result<()> {
        let tmp = self.weights.with_extension("safetensors.tmp");
        varmap.save(&tmp)?;
        std::fs::rename(&tmp, &self.weights).map_err(|e| Error::io(&self.weights, e))?;
        let write_json = |path: &Path, v: &dyn erased::Json| -> Result<()> {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, v.to_json()).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        };
        write_json(&self.state, state)?;
        write_json(&self.config, config)?;
        Ok(())
    }

    /// After a step: logs every 10th step, and checkpoints every `checkpoint_every` steps, at the
    /// last step, and when the caller stops the run.
    fn record(
        &self,
        varmap: &VarMap,
        state: &TrainState,
        opts: &TrainOptions,
        row: &StepLog,
        stopping: bool,
        config: &impl Serialize,
    ) -> Result<()> {
        if state.step.is_multiple_of(10) {
            self.append_log(row)?;
        }
        if state.step.is_multiple_of(opts.checkpoint_every) || state.step == opts.steps || stopping
        {
            self.save(varmap, state, config)?;
        }
        Ok(())
    }

    fn append_log(&self, row: &StepLog) -> Result<()> {
        let new = !self.log.is_file();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(&self.log, e))?;
        if new {
            let names: Vec<&str> = row.terms.iter().map(|(n, _)| n.as_str()).collect();
            writeln!(f, "step,loss,{},lr,seconds", names.join(","))
                .map_err(|e| Error::io(&self.log, e))?;
        }
        let terms: Vec<String> = row.terms.iter().map(|(_, v)| format!("{v:.6}")).collect();
        writeln!(
            f,
            "{},{:.6},{},{:.3e},{:.1}",
            row.step,
            row.loss,
            terms.join(","),
            row.lr,
            row.seconds
        )
        .map_err(|e| Error::io(&self.log, e))
    }
}

mod erased {
    /// Serialises any config/state to pretty JSON.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default()
        }
    }
}

fn adamw(varmap: &VarMap, opts: &TrainOptions) -> Result<AdamW> {
    adamw_over(varmap.all_vars(), opts)
}

fn adamw_over(vars: Vec<candle_core::Var>, opts: &TrainOptions) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr: opts.lr,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: opts.weight_decay,
        },
    )?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Mean absolute horizontal and vertical neighbour difference of a `(B, C, H, W)` residual.
fn gradient_l1(diff: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = diff.dims4()?;
    let dx = (diff.narrow(3, 1, w - 1)? - diff.narrow(3, 0, w - 1)?)?;
    let dy = (diff.narrow(2, 1, h - 1)? - diff.narrow(2, 0, h - 1)?)?;
    Ok((dx.abs()?.mean_all()? + dy.abs()?.mean_all()?)?)
}

/// Decoder rows for a token mosaic (not in the reference): each of the `batch * cells` token
/// rows stays with probability `1 - share`, else it is swapped for the same cell of another
/// image of the batch. Decoding such a mosaic, the decoder cannot take a token's colour from its
/// neighbours, so each code has to carry its own patch; identical patches then get the same code
/// wherever they are, which is what makes the token sequences learnable for a small transformer
/// (without it, flat codes decoded on their own missed their patch's colour by 24/255).
pub fn mosaic_rows(batch: usize, cells: usize, share: f64, rng: &mut Rng) -> Vec<u32> {
    (0..batch * cells)
        .map(|row| {
            let (b, cell) = (row / cells, row % cells);
            if batch < 2 || rng.next_f64() >= share {
                return row as u32;
            }
            let other = (b + 1 + rng.below(batch - 1)) % batch;
            (other * cells + cell) as u32
        })
        .collect()
}

/// Trains (or resumes) the VQ tokenizer in `dir` (`vq.safetensors`, `vq.json`, `vq.loss.csv`).
/// `on_step` sees every step's log; return `false` from it to stop after a checkpoint.
pub fn train_vq(
    cfg: &VqConfig,
    opts: &TrainOptions,
    dir: &Path,
    device: &Device,
    on_step: &mut dyn FnMut(&StepLog) -> bool,
) -> Result<VqModel> {
    cfg.validate()?;
    let files = RunFiles::new(dir, "vq")?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = VqModel::new(cfg, vb)?;
    let same = |name: &str| InitSource::Tensor(name.to_string());
    let mut state = files.load_state(&mut varmap, opts.init.as_deref(), &same)?;
    // Decoder-only training encodes and looks up with the frozen codebook, whose normalised
    // copy `VqModel::new` computes: build it again now that the weights are loaded.
    let model = if opts.decoder_only {
        VqModel::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?
    } else {
        model
    };
    let mut opt = if opts.decoder_only {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the weights' lock was poisoned".into()))?;
        let decoder = data
            .iter()
            .filter(|(name, _)| {
                name.starts_with("decoder.") || name.starts_with("post_quant_conv.")
            })
            .map(|(_, v)| v.clone())
            .collect();
        drop(data);
        adamw_over(decoder, opts)?
    } else {
        adamw(&varmap, opts)?
    };
    let mut usage = vec![0u64; cfg.codebook_size];
    let started = Instant::now();
    let base_seconds = state.seconds;
    while state.step < opts.steps {
        let lr = learning_rate(state.step, opts);
        opt.set_learning_rate(lr);
        let (x, _) = image_batch(
            opts.batch_start(state.step),
            opts.batch,
            opts.seed,
            opts.image_size,
            device,
        )?;
        let mosaic = if opts.mosaic > 0.0 {
            let (b, _, hh, ww) = x.dims4()?;
            let cells = (hh / cfg.downsample()) * (ww / cfg.downsample());
            let mut rng = Rng::stream(
                opts.seed,
                crate::sampler::stream::TRAIN_MOSAIC,
                state.step as u64,
            );
            let rows = mosaic_rows(b, cells, opts.mosaic, &mut rng);
            Some(Tensor::from_vec(rows, b * cells, device)?)
        } else {
            None
        };
        let (recon, codebook, commit, idx) = if opts.decoder_only {
            // Only the decoder trains: tokens come from the fixed encoder without a graph, and
            // the codebook and commitment terms (constant here) are not computed.
            let idx = model.encode(&x)?;
            let tokens = match &mosaic {
                Some(rows) => idx
                    .flatten_all()?
                    .index_select(rows, 0)?
                    .reshape(idx.shape())?,
                None => idx.clone(),
            };
            let (_, _, hh, ww) = x.dims4()?;
            let grid = (hh / cfg.downsample(), ww / cfg.downsample());
            let zero = Tensor::zeros((), DType::F32, device)?;
            (model.decode(&tokens, grid)?, zero.clone(), zero, idx)
        } else {
            model.forward_train(&x, mosaic.as_ref())?
        };
        let x = match &mosaic {
            Some(rows) => model.mosaic_target(&x, rows)?,
            None => x,
        };
        let diff = (&recon - &x)?;
        let rec = (diff.abs()?.mean_all()? + diff.sqr()?.mean_all()?)?;
        // Edges: L1 between neighbouring-pixel differences, a cheap stand-in for the perceptual
        // loss that keeps stripes and grout lines sharp instead of averaged away.
        let rec = (rec + gradient_l1(&diff)?)?;
        let loss = ((&rec + &codebook)? + (&commit * 0.25)?)?;
        opt.backward_step(&loss)?;
        for i in idx.flatten_all()?.to_vec1::<u32>()? {
            usage[i as usize] = state.step as u64 + 1;
        }
        state.step += 1;
        state.seconds = base_seconds + started.elapsed().as_secs_f64();
        // Codes used within the last 100 steps.
        let recent = usage
            .iter()
            .filter(|&&s| s + 100 > state.step as u64 && s > 0)
            .count();
        let row = StepLog {
            step: state.step,
            loss: scalar(&loss)?,
            terms: vec![
                ("rec".into(), scalar(&rec)?),
                ("codebook".into(), scalar(&codebook)?),
                ("commit".into(), scalar(&commit)?),
                ("usage".into(), recent as f64 / cfg.codebook_size as f64),
            ],
            lr,
            seconds: state.seconds,
        };
        let keep_going = on_step(&row);
        files.record(&varmap, &state, opts, &row, !keep_going, cfg)?;
        if !keep_going {
            break;
        }
    }
    // Reload as an inference model (normalised codebook computed from the final weights).
    let ckpt = crate::checkpoint::Checkpoint::open(&files.weights)?;
    Ok(VqModel::new(cfg, ckpt.var_builder(DType::F32, device))?)
}

/// Trains (or resumes) the ARPG transformer on tokens of `vq` in `dir` (`arpg.safetensors`,
/// `arpg.json`, `arpg.loss.csv`). Images are rendered and encoded on the fly, so no sample is seen
/// twice.
pub fn train_arpg(
    cfg: &ArpgConfig,
    vq: &VqModel,
    opts: &TrainOptions,
    dir: &Path,
    device: &Device,
    on_step: &mut dyn FnMut(&StepLog) -> bool,
) -> Result<Arpg> {
    cfg.validate()?;
    let grid = opts.image_size / vq.config().downsample();
    if grid * grid != cfg.block_size || vq.config().codebook_size != cfg.vocab_size {
        return Err(Error::Config(format!(
            "the transformer (block_size {}, vocabulary {}) does not match the tokenizer ({grid}x{grid} tokens of {}px images, codebook {})",
            cfg.block_size,
            cfg.vocab_size,
            opts.image_size,
            vq.config().codebook_size
        )));
    }
    let files = RunFiles::new(dir, "arpg")?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = Arpg::new_for_training(cfg, vb)?;
    let source = match &opts.init {
        Some(init) => depth_growth(init, cfg)?,
        None => DepthGrowth::default(),
    };
    let mut state = files.load_state(&mut varmap, opts.init.as_deref(), &|n| source.source(n))?;
    let mut opt = adamw(&varmap, opts)?;
    let started = Instant::now();
    let base_seconds = state.seconds;
    let n = cfg.block_size;
    // A different image stream than the VQ's.
    let data_seed = opts.seed ^ 0xA5A5_5A5A;
    while state.step < opts.steps {
        let lr = learning_rate(state.step, opts);
        opt.set_learning_rate(lr);
        let mut rng = Rng::stream(
            opts.seed,
            crate::sampler::stream::TRAIN_STEP,
            state.step as u64,
        );
        let (x, labels) = image_batch(
            opts.batch_start(state.step),
            opts.batch,
            data_seed,
            opts.image_size,
            device,
        )?;
        let ids = vq.encode(&x)?;
        // Class dropout 0.1 (the null class trains the unconditional half of CFG).
        let class_ids: Vec<u32> = labels
            .iter()
            .map(|&c| {
                if rng.next_f64() < 0.1 {
                    cfg.null_class_id()
                } else {
                    cfg.class_token_id(c)
                }
            })
            .collect();
        let orders: Vec<u32> = (0..opts.batch)
            .flat_map(|_| {
                let mut o: Vec<u32> = (0..n as u32).collect();
                rng.shuffle(&mut o);
                o
            })
            .collect();
        let class_ids = Tensor::from_vec(class_ids, opts.batch, device)?;
        let orders = Tensor::from_vec(orders, (opts.batch, n), device)?;
        let logits = model.forward_teacher(&ids, &class_ids, &orders, true)?;
        let targets = ids.gather(&orders, 1)?;
        let flat = logits.reshape((opts.batch * n, cfg.vocab_size))?;
        let loss = candle_nn::loss::cross_entropy(&flat, &targets.flatten_all()?)?;
        opt.backward_step(&loss)?;
        let acc = scalar(
            &flat
                .argmax(1)?
                .eq(&targets.flatten_all()?)?
                .to_dtype(DType::F32)?
                .mean_all()?,
        )?;
        state.step += 1;
        state.seconds = base_seconds + started.elapsed().as_secs_f64();
        let row = StepLog {
            step: state.step,
            loss: scalar(&loss)?,
            terms: vec![("accuracy".into(), acc)],
            lr,
            seconds: state.seconds,
        };
        let keep_going = on_step(&row);
        files.record(&varmap, &state, opts, &row, !keep_going, cfg)?;
        if !keep_going {
            break;
        }
    }
    let ckpt = crate::checkpoint::Checkpoint::open(&files.weights)?;
    Ok(Arpg::new(cfg, ckpt.var_builder(DType::F32, device))?)
}
