//! `arpg eval`: the shipped model's evaluation table (see `arpg_core::eval`).

use anyhow::{bail, Result};
use arpg_app::{errln, outln};
use arpg_core::backend::Ids;
use arpg_core::canvas::TokenCanvas;
use arpg_core::dataset::CLASS_NAMES;
use arpg_core::eval::{frechet_distance, psnr, train_classifier, Classifier};
use arpg_core::generator::{Generation, KnownCells, OrderMode, Request};
use arpg_core::sampler::{stream, Rng};
use arpg_core::train::image_batch;
use arpg_core::Transformer;
use candle_core::{Device, Tensor};

use arpg_app::commands::SamplerArgs;
use arpg_core::edit::{Edit, EditPlan, MaskOptions, Source};
use arpg_core::order::Order;
use arpg_core::pair::ModelPair as Models;

mod seams;

use seams::seams;

/// Evaluation sizes.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Images per class for each measured set.
    #[arg(long, default_value_t = 50)]
    pub per_class: usize,
    /// Training steps of the judging classifier.
    #[arg(long, default_value_t = 2000)]
    pub classifier_steps: usize,
    /// Keep the trained judge in this directory and reuse it on later runs (it is seeded, so
    /// the table does not change; only the time to train it is saved).
    #[arg(long)]
    pub judge_cache: Option<std::path::PathBuf>,
    /// Measure only class-conditional generation (skip inpainting, outpainting and expansion):
    /// a quicker table for comparing sampling settings.
    #[arg(long)]
    pub generation_only: bool,
    /// Instead: the seams of outpainting (each side) and inpainting (a half mask), over six
    /// seeds: the mean colour step across the seam / the median step between neighbouring
    /// columns (rows for top and bottom) elsewhere in the image; 1 = no more visible than an
    /// ordinary column.
    #[arg(long)]
    pub seams: bool,
    /// Instead: how often the model quantized in this format (q8_0 or q4k) predicts the same
    /// greedy token as the exact model, teacher-forced on images the exact model generates
    /// (any ARPG checkpoint, the reference fixtures included).
    #[arg(long, value_name = "FORMAT")]
    pub agreement: Option<String>,
}

/// Class accuracy of the editing tasks, and the detail resolution expansion adds.
struct Editing {
    take: usize,
    inpaint_acc: f64,
    outpaint_acc: f64,
    take_x: usize,
    expand_acc: f64,
    bilinear_acc: f64,
    /// Mean gradient at 2x of the expansion, of a nearest and of a bilinear pixel upscale.
    detail: [f64; 3],
}

fn features(c: &Classifier, x: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(c.features(x)?.to_vec2()?)
}

/// Accuracy per class, in label order.
fn per_class(pred: &[u32], labels: &[usize], classes: usize) -> Vec<f64> {
    (0..classes)
        .map(|c| {
            let (hit, total) = pred
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == c)
                .fold((0, 0), |(h, t), (p, _)| {
                    (h + usize::from(*p as usize == c), t + 1)
                });
            hit as f64 / f64::from(total.max(1))
        })
        .collect()
}

fn accuracy(pred: &[u32], labels: &[usize]) -> f64 {
    pred.iter()
        .zip(labels)
        .filter(|(p, l)| **p as usize == **l)
        .count() as f64
        / labels.len().max(1) as f64
}

/// Decodes finished canvases to a `(B, 3, H, W)` image tensor.
fn decode_all(models: &Models, canvases: &[TokenCanvas]) -> Result<Tensor> {
    let mut images = Vec::new();
    for c in canvases {
        let t = Ids::new(c.tokens()?, 1)?;
        images.push(models.vq.decode(&t, (c.rows, c.cols))?);
    }
    Ok(Tensor::cat(&images, 0)?)
}

pub fn run(models: &Models, args: &EvalArgs, sampler: &SamplerArgs) -> Result<()> {
    if args.seams {
        return seams(models, sampler);
    }
    if let Some(format) = &args.agreement {
        return agreement(models, format, args.per_class.clamp(1, 16));
    }
    let classes = models.arpg.config.num_classes;
    if classes != CLASS_NAMES.len() {
        bail!(
            "`arpg eval` measures models trained on the procedural dataset ({} classes)",
            CLASS_NAMES.len()
        );
    }
    let device = Device::Cpu;
    let p = models.patch();
    let g = models.grid();
    let size = g * p;
    let n = args.per_class * classes;
    errln!(
        "training the judging classifier ({} steps)…",
        args.classifier_steps
    );
    let judge = train_classifier(
        classes,
        size,
        args.classifier_steps,
        777,
        args.judge_cache.as_deref(),
        &device,
    )?;

    let (real_a, labels_a) = image_batch(0, n, 1000, size, &device)?;
    let (real_b, _) = image_batch(0, n, 2000, size, &device)?;
    let real_pred = judge.predict(&real_a)?;
    let judge_acc = accuracy(&real_pred, &labels_a);
    let feats_a = features(&judge, &real_a)?;
    let floor = frechet_distance(&features(&judge, &real_b)?, &feats_a);

    // VQ reconstruction.
    let tokens_a = models.vq.model().encode(&real_a)?;
    let recon = models.vq.model().decode(&tokens_a, (g, g))?;
    let rec_psnr = psnr(&recon, &real_a)?;
    // The ceiling for generated images: how well the judge recognises VQ reconstructions.
    let recon_pred = judge.predict(&recon)?;
    let recon_acc = accuracy(&recon_pred, &labels_a);

    // Class-conditional generation at the given settings.
    errln!("generating {n} images…");
    let settings = sampler.settings(g * g, &models.arpg.sampling)?;
    let mut generated = Vec::new();
    let mut gen_labels = Vec::new();
    for class in 0..classes {
        let mut s = settings.clone();
        s.seed = Rng::stream(settings.seed, stream::EVAL_CLASS, class as u64).next_u64();
        let req = Request {
            classes: vec![Some(class); args.per_class],
            settings: s,
            order: OrderMode::Random,
            known: KnownCells::Nothing,
        };
        for tokens in Generation::new(&models.arpg.model, &req)?.run()? {
            generated.push(TokenCanvas::from_tokens(g, g, &tokens)?);
            gen_labels.push(class);
        }
    }
    let gen_images = decode_all(models, &generated)?;
    let gen_pred = judge.predict(&gen_images)?;
    let gen_acc = accuracy(&gen_pred, &gen_labels);
    let fd = frechet_distance(&features(&judge, &gen_images)?, &feats_a);

    let editing = if args.generation_only {
        None
    } else {
        Some(editing(
            models,
            &settings,
            &tokens_a.to_vec2::<u32>()?,
            &labels_a,
            &recon,
            &judge,
        )?)
    };

    outln!("| metric | value |")?;
    outln!("|---|---|")?;
    outln!(
        "| judge accuracy on held-out real images | {:.1}% |",
        100.0 * judge_acc
    )?;
    outln!(
        "| class accuracy of generated images ({n}, {} steps, CFG {}) | {:.1}% |",
        settings.steps,
        settings.cfg_scale,
        100.0 * gen_acc
    )?;
    outln!("| Fréchet distance generated ↔ real (judge features) | {fd:.3} |")?;
    outln!("| Fréchet distance real ↔ real (floor) | {floor:.3} |")?;
    outln!("| VQ reconstruction PSNR on held-out images | {rec_psnr:.2} dB |")?;
    outln!(
        "| judge accuracy on VQ reconstructions of real images (ceiling) | {:.1}% |",
        100.0 * recon_acc
    )?;
    if let Some(e) = &editing {
        outln!(
            "| inpainting accuracy (half the tokens, {} images) | {:.1}% |",
            e.take,
            100.0 * e.inpaint_acc
        )?;
        outln!(
            "| outpainting accuracy (new grid beside a real image, {} images) | {:.1}% |",
            e.take,
            100.0 * e.outpaint_acc
        )?;
        outln!(
            "| resolution expansion ({} images): accuracy after 2x downscale | {:.1}% (bilinear pixel upscale: {:.1}%) |",
            e.take_x,
            100.0 * e.expand_acc,
            100.0 * e.bilinear_acc
        )?;
        outln!(
            "| resolution expansion: detail (mean gradient at 2x) | {:.4} (nearest upscale {:.4}, bilinear {:.4}) |",
            e.detail[0], e.detail[1], e.detail[2]
        )?;
    }
    outln!()?;
    outln!("| class | real | VQ reconstruction | generated | most often mistaken for |")?;
    outln!("|---|---|---|---|---|")?;
    let rows = [
        per_class(&real_pred, &labels_a, classes),
        per_class(&recon_pred, &labels_a, classes),
        per_class(&gen_pred, &gen_labels, classes),
    ];
    for (c, name) in CLASS_NAMES.iter().enumerate() {
        let mut wrong = vec![0usize; classes];
        for (p, _) in gen_pred
            .iter()
            .zip(&gen_labels)
            .filter(|(p, l)| **l == c && **p as usize != c)
        {
            wrong[*p as usize] += 1;
        }
        let confused = match (0..classes).max_by_key(|&k| wrong[k]) {
            Some(k) if wrong[k] > 0 => format!("{} ({})", CLASS_NAMES[k], wrong[k]),
            _ => "—".to_string(),
        };
        outln!(
            "| {c} {name} | {:.0}% | {:.0}% | {:.0}% | {confused} |",
            100.0 * rows[0][c],
            100.0 * rows[1][c],
            100.0 * rows[2][c]
        )?;
    }
    Ok(())
}

/// Inpainting, outpainting and resolution expansion of real images, judged.
fn editing(
    models: &Models,
    settings: &arpg_core::generator::Settings,
    real_tokens: &[Vec<u32>],
    labels_a: &[usize],
    recon: &Tensor,
    judge: &Classifier,
) -> Result<Editing> {
    let classes = models.arpg.config.num_classes;
    let g = models.grid();
    let size = g * models.patch();
    // Inpainting: half of each real image's tokens forgotten (a random half), regenerated with
    // its own class; outpainting: a full grid generated to the right of each real image.
    errln!("inpainting and outpainting…");
    let take = labels_a.len().min(10 * classes);
    let mut inpainted = Vec::new();
    let mut outpainted = Vec::new();
    for (i, tokens) in real_tokens.iter().take(take).enumerate() {
        let class = labels_a[i];
        let mut rng = Rng::stream(settings.seed, stream::EVAL_EDIT, i as u64);
        let mut cells: Vec<usize> = (0..g * g).collect();
        rng.shuffle(&mut cells);
        // The forgotten half as a pixel mask (whole cells), through the edit pipeline.
        let p = models.patch();
        let mut mask = vec![0u8; size * size];
        for &c in &cells[..g * g / 2] {
            let (r0, c0) = ((c / g) * p, (c % g) * p);
            for y in r0..r0 + p {
                mask[y * size + c0..y * size + c0 + p].fill(255);
            }
        }
        let canvas = TokenCanvas::from_tokens(g, g, tokens)?;
        let source = Source {
            canvas: &canvas,
            rgb: None,
            size: [size, size],
            patch: p,
        };
        let mut s = settings.clone();
        s.seed = rng.next_u64();
        s.steps = s.steps.min(g * g / 2);
        let inpaint = Edit::Inpaint {
            mask,
            options: MaskOptions::default(),
        };
        inpainted.push(fill(models, &inpaint.plan(source)?, class, &s)?);
        let wide = fill(
            models,
            &Edit::Outpaint {
                cells: [0, g, 0, 0],
            }
            .plan(source)?,
            class,
            &s,
        )?;
        let all = wide.tokens()?;
        let right: Vec<u32> = (0..g * g)
            .map(|k| all[(k / g) * 2 * g + g + k % g])
            .collect();
        outpainted.push(TokenCanvas::from_tokens(g, g, &right)?);
    }
    let inpaint_acc = accuracy(
        &judge.predict(&decode_all(models, &inpainted)?)?,
        &labels_a[..take],
    );
    let outpaint_acc = accuracy(
        &judge.predict(&decode_all(models, &outpainted)?)?,
        &labels_a[..take],
    );

    // Resolution expansion vs. the baseline of upscaling the decoded pixels: both judged after a
    // 2x box downscale (does it still show its class?), and their detail (mean gradient).
    errln!("resolution expansion…");
    let take_x = take.min(3 * classes);
    let mut expanded = Vec::new();
    for (i, tokens) in real_tokens.iter().take(take_x).enumerate() {
        let mut s = settings.clone();
        s.seed = Rng::stream(settings.seed, stream::EVAL_EXPAND, i as u64).next_u64();
        let canvas = TokenCanvas::from_tokens(g, g, tokens)?;
        let source = Source {
            canvas: &canvas,
            rgb: None,
            size: [size, size],
            patch: models.patch(),
        };
        let plan = Edit::Expand.plan(source)?;
        s.steps = s.steps.min(plan.unknown());
        expanded.push(fill(models, &plan, labels_a[i], &s)?);
    }
    let big = decode_all(models, &expanded)?;
    let small = recon.narrow(0, 0, take_x)?;
    let nearest = small.upsample_nearest2d(2 * size, 2 * size)?;
    let bilinear = bilinear_up2(&small)?;
    let labels_x = &labels_a[..take_x];
    let expand_acc = accuracy(&judge.predict(&big.avg_pool2d(2)?)?, labels_x);
    let bilinear_acc = accuracy(&judge.predict(&bilinear.avg_pool2d(2)?)?, labels_x);

    Ok(Editing {
        take,
        inpaint_acc,
        outpaint_acc,
        take_x,
        expand_acc,
        bilinear_acc,
        detail: [
            mean_gradient(&big)?,
            mean_gradient(&nearest)?,
            mean_gradient(&bilinear)?,
        ],
    })
}

/// Mean absolute horizontal + vertical difference of neighbouring pixels (a detail measure).
fn mean_gradient(x: &Tensor) -> Result<f64> {
    let (_, _, h, w) = x.dims4()?;
    let dx = (x.narrow(3, 1, w - 1)? - x.narrow(3, 0, w - 1)?)?
        .abs()?
        .mean_all()?;
    let dy = (x.narrow(2, 1, h - 1)? - x.narrow(2, 0, h - 1)?)?
        .abs()?
        .mean_all()?;
    Ok((dx.to_scalar::<f32>()? + dy.to_scalar::<f32>()?) as f64 / 2.0)
}

/// 2x bilinear upscale (the smooth pixel baseline).
fn bilinear_up2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let (h2, w2) = (2 * h, 2 * w);
    let mut out = vec![0f32; b * c * h2 * w2];
    for bc in 0..b * c {
        let plane = &data[bc * h * w..(bc + 1) * h * w];
        for y in 0..h2 {
            let fy = ((y as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (h - 1) as f32);
            let (y0, ty) = (fy.floor() as usize, fy.fract());
            let y1 = (y0 + 1).min(h - 1);
            for xx in 0..w2 {
                let fx = ((xx as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (w - 1) as f32);
                let (x0, tx) = (fx.floor() as usize, fx.fract());
                let x1 = (x0 + 1).min(w - 1);
                let top = plane[y0 * w + x0] * (1.0 - tx) + plane[y0 * w + x1] * tx;
                let bot = plane[y1 * w + x0] * (1.0 - tx) + plane[y1 * w + x1] * tx;
                out[bc * h2 * w2 + y * w2 + xx] = top * (1.0 - ty) + bot * ty;
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, c, h2, w2), x.device())?)
}

/// Runs an edit plan's canvas job to the end (random order) and returns the filled canvas; the
/// evaluation judges decoded tokens, so there is no composite.
fn fill(
    models: &Models,
    plan: &EditPlan,
    class: usize,
    settings: &arpg_core::generator::Settings,
) -> Result<TokenCanvas> {
    let job = plan.job(
        &models.arpg.model,
        Some(class),
        settings.clone(),
        Order::Random,
    )?;
    Ok(job.run()?)
}

/// `arpg eval --agreement FORMAT`: `n` images of the exact model (classes in turn, seed 0,
/// product defaults), each read again teacher-forced in a random order by the exact model and
/// by its quantized copy; prints the share of cells where both models' most likely token is the
/// same, and the share where the quantized model's greedy token is the one the image has.
fn agreement(models: &Models, format: &str, n: usize) -> Result<()> {
    let q = arpg_core::loader::quant(format)?;
    let exact = &models.arpg.model;
    let mut quantized = exact.clone();
    let (done, total) = quantized.quantize(q)?;
    let cfg = exact.config();
    let classes: Vec<usize> = (0..n).map(|i| i % cfg.num_classes).collect();
    let settings = arpg_core::generator::Settings {
        seed: 0,
        ..Default::default()
    };
    let tokens = Generation::new(exact, &Request::new(classes.clone(), settings))?.run()?;
    let cells = cfg.block_size;
    let mut rng = Rng::stream(0, stream::EVAL_AGREE, 0);
    let mut orders = Vec::with_capacity(n * cells);
    for _ in 0..n {
        let mut o: Vec<u32> = (0..cells as u32).collect();
        rng.shuffle(&mut o);
        orders.extend(o);
    }
    let ids = Ids::new(tokens.concat(), n)?;
    let orders = Ids::new(orders, n)?;
    let class_ids: Vec<u32> = classes.iter().map(|c| cfg.class_token_id(*c)).collect();
    let greedy = |m: &Transformer| -> Result<Vec<u32>> {
        let logits = m.forward_teacher(&ids, &class_ids, &orders, true)?;
        Ok(logits
            .to_tensor()?
            .argmax(candle_core::D::Minus1)?
            .flatten_all()?
            .to_vec1::<u32>()?)
    };
    let (a, b) = (greedy(exact)?, greedy(&quantized)?);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // Row k of image i predicts cell orders[i][k]: the image's own token there.
    let order_v = &orders.data;
    let truth: Vec<u32> = order_v
        .iter()
        .enumerate()
        .map(|(i, c)| tokens[i / cells][*c as usize])
        .collect();
    let hit = |p: &[u32]| p.iter().zip(&truth).filter(|(x, y)| x == y).count() as f64;
    let total_cells = (n * cells) as f64;
    outln!(
        "| {} ({done} of {total} linear layers in {format}) | |",
        models.arpg.name
    )?;
    outln!("|---|---|")?;
    outln!(
        "| greedy tokens equal to the exact model's | {:.1}% |",
        100.0 * same as f64 / total_cells
    )?;
    outln!(
        "| exact model's greedy token = the image's | {:.1}% |",
        100.0 * hit(&a) / total_cells
    )?;
    outln!(
        "| quantized model's greedy token = the image's | {:.1}% |",
        100.0 * hit(&b) / total_cells
    )?;
    outln!("| cells compared | {} ({n} images) |", n * cells)?;
    Ok(())
}
