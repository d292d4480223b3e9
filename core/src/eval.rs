//! Evaluation of the shipped model (`arpg eval`): a small classifier trained on real dataset
//! samples judges generated images (class accuracy) and provides features for a Fréchet distance
//! between generated and real samples, next to the same distance between two real sets (the
//! floor). Also VQ reconstruction PSNR, and class accuracy after inpainting and outpainting.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Linear, Optimizer, VarBuilder, VarMap};

use crate::error::Result;
use crate::sampler::Rng;
use crate::train::image_batch;

/// Version of the judge's architecture and training, part of its cache key.
const JUDGE_VERSION: u32 = 3;

/// A small CNN: three 3x3 conv stages with 2x2 max pooling, then the whole `(S/8)²` map (so
/// the layout — sky above, ground below — counts, not only the textures) into a 64-wide feature
/// layer and a linear classifier. Max rather than average pooling: averaging over a stripe or
/// check period erases exactly the pattern that tells stripes, checks and plaid apart.
pub struct Classifier {
    convs: Vec<Conv2d>,
    feature: Linear,
    head: Linear,
}

impl Classifier {
    /// A classifier of `size x size` images.
    pub fn new(classes: usize, size: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let widths = [3, 32, 64, 96];
        let convs = (0..3)
            .map(|i| candle_nn::conv2d(widths[i], widths[i + 1], 3, cfg, vb.pp(format!("conv{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            convs,
            feature: candle_nn::linear(96 * (size / 8).pow(2), 64, vb.pp("feature"))?,
            head: candle_nn::linear(64, classes, vb.pp("head"))?,
        })
    }

    /// 64-d features of `(B, 3, H, W)` images in `[-1, 1]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.relu()?.max_pool2d(2)?;
        }
        let h = h.flatten_from(1)?;
        Ok(self.feature.forward(&h)?.relu()?)
    }

    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.features(x)?)?)
    }

    /// Predicted class of each image.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        Ok(self.logits(x)?.argmax(1)?.to_vec1()?)
    }
}

/// A 3x3 box blur per channel.
fn box_blur(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let kernel = Tensor::full(1.0f32 / 9.0, (c, 1, 3, 3), x.device())?;
    Ok(x.conv2d(&kernel, 1, 1, 1, c)?)
}

/// Shifts the colour of every `token x token` block of `x` (per channel, by up to ±`amount`)
/// from a seeded stream: the blocky colour error a tokenizer's codes leave on a flat region.
fn token_jitter(x: &Tensor, token: usize, amount: f32, rng: &mut Rng) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (th, tw) = (h.div_ceil(token), w.div_ceil(token));
    let shifts: Vec<f32> = (0..b * c * th * tw)
        .map(|_| (2.0 * rng.next_f64() as f32 - 1.0) * amount)
        .collect();
    let shifts = Tensor::from_vec(shifts, (b, c, th, tw), x.device())?
        .upsample_nearest2d(th * token, tw * token)?
        .narrow(2, 0, h)?
        .narrow(3, 0, w)?;
    Ok((x + shifts)?)
}

/// Re-initialises every variable from `seed` (candle's CPU initialisers cannot be seeded), so the
/// judge — and with it the whole `arpg eval` table — is the same on every run: weights uniform in
/// `±1/sqrt(fan_in)`, biases zero.
fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| {
        crate::error::Error::Config("the classifier's variables are poisoned".into())
    })?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values = if dims.len() == 1 {
            vec![0f32; n]
        } else {
            let bound = 1.0 / ((n / dims[0]) as f64).sqrt();
            let mut rng = Rng::stream(seed, crate::sampler::stream::JUDGE_INIT, i as u64);
            (0..n)
                .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                .collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

/// Trains the classifier on freshly rendered samples (seed stream disjoint from evaluation's).
/// Three quarters of the batches are softened (box blur, 2x down-and-up sampling, or per-token
/// colour shifts of up to ±0.1 on blocks of a token, 4x4 px at 32 px) so that the judge looks
/// at structure rather than at the crispness and exact flat colours a tokenizer cannot keep.
///
/// With `cache`, the trained weights are kept in that directory (one file per judge version,
/// dataset version, classes, size, steps and seed) and reused by later runs — the judge is
/// deterministic, so this only saves time.
pub fn train_classifier(
    classes: usize,
    size: usize,
    steps: usize,
    seed: u64,
    cache: Option<&std::path::Path>,
    device: &Device,
) -> Result<Classifier> {
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = Classifier::new(classes, size, vb)?;
    let cached = cache.map(|dir| {
        dir.join(format!(
            "judge{JUDGE_VERSION}-data{}-{classes}c-{size}px-{steps}steps-seed{seed}.safetensors",
            crate::dataset::VERSION
        ))
    });
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        varmap.load(path)?;
        return Ok(model);
    }
    seeded_init(&varmap, seed)?;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 2e-3,
            ..Default::default()
        },
    )?;
    let batch = 32;
    for step in 0..steps {
        // Cosine decay to a tenth of the peak rate.
        let t = step as f64 / steps.max(1) as f64;
        opt.set_learning_rate(2e-4 + 0.5 * 1.8e-3 * (1.0 + (std::f64::consts::PI * t).cos()));
        let (x, labels) = image_batch((step * batch) as u64, batch, seed, size, device)?;
        let x = match step % 4 {
            1 => box_blur(&x)?,
            2 => x.avg_pool2d(2)?.upsample_nearest2d(size, size)?,
            3 => token_jitter(
                &x,
                (size / 8).max(1),
                0.1,
                &mut Rng::stream(seed, crate::sampler::stream::JUDGE_STEP, step as u64),
            )?,
            _ => x,
        };
        let y = Tensor::from_vec(
            labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            batch,
            device,
        )?;
        let loss = candle_nn::loss::cross_entropy(&model.logits(&x)?, &y)?;
        opt.backward_step(&loss)?;
    }
    if let Some(path) = cached {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
        }
        varmap.save(&path)?;
    }
    Ok(model)
}

/// Mean and covariance (f64) of `(N, D)` features.
fn moments(features: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let n = features.len();
    let d = features.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; d];
    for f in features {
        for (m, &v) in mean.iter_mut().zip(f) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = vec![0f64; d * d];
    for f in features {
        for i in 0..d {
            let a = f[i] as f64 - mean[i];
            for j in 0..d {
                cov[i * d + j] += a * (f[j] as f64 - mean[j]) / (n.max(2) - 1) as f64;
            }
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors of a symmetric `d x d` matrix (cyclic Jacobi).
fn symmetric_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0f64; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// Fréchet distance between two feature sets:
/// `|μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½)`.
pub fn frechet_distance(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (m1, s1) = moments(a);
    let (m2, s2) = moments(b);
    let d = m1.len();
    let (w, v) = symmetric_eigen(s1.clone(), d);
    // Σ1^½ = V diag(√w) Vᵀ
    let mut root = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            root[i * d + j] = (0..d)
                .map(|k| v[i * d + k] * w[k].max(0.0).sqrt() * v[j * d + k])
                .sum();
        }
    }
    let inner = matmul(&matmul(&root, &s2, d), &root, d);
    let sym: Vec<f64> = (0..d * d)
        .map(|i| 0.5 * (inner[i] + inner[(i % d) * d + i / d]))
        .collect();
    let (wi, _) = symmetric_eigen(sym, d);
    let tr_sqrt: f64 = wi.iter().map(|x| x.max(0.0).sqrt()).sum();
    let mean_term: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y).powi(2)).sum();
    let trace: f64 = (0..d).map(|i| s1[i * d + i] + s2[i * d + i]).sum();
    mean_term + trace - 2.0 * tr_sqrt
}

/// Peak signal-to-noise ratio of two images in `[-1, 1]`, in dB (8-bit peak).
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    let mse = ((a - b)? * 127.5)?
        .sqr()?
        .mean_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frechet_distance_is_zero_for_identical_sets_and_grows_with_shift() {
        let mut rng = crate::sampler::Rng::new(1);
        let a: Vec<Vec<f32>> = (0..400)
            .map(|_| (0..4).map(|_| rng.next_f64() as f32).collect())
            .collect();
        assert!(frechet_distance(&a, &a).abs() < 1e-9);
        let shifted: Vec<Vec<f32>> = a
            .iter()
            .map(|v| v.iter().map(|x| x + 1.0).collect())
            .collect();
        assert!((frechet_distance(&a, &shifted) - 4.0).abs() < 1e-6);
    }

    #[test]
    fn the_judge_is_the_same_on_every_run() {
        let device = Device::Cpu;
        let (x, _) = image_batch(5000, 20, 3, 16, &device).expect("test");
        // Four steps: one batch of each augmentation.
        let a = train_classifier(10, 16, 4, 7, None, &device).expect("test");
        let b = train_classifier(10, 16, 4, 7, None, &device).expect("test");
        let fa: Vec<Vec<f32>> = a.features(&x).expect("test").to_vec2().expect("test");
        let fb: Vec<Vec<f32>> = b.features(&x).expect("test").to_vec2().expect("test");
        assert_eq!(fa, fb);
        let c = train_classifier(10, 16, 4, 8, None, &device).expect("test");
        let fc: Vec<Vec<f32>> = c.features(&x).expect("test").to_vec2().expect("test");
        assert_ne!(fa, fc, "another seed gives another judge");
    }

    #[test]
    fn token_jitter_shifts_whole_tokens_within_its_amount() {
        let device = Device::Cpu;
        let (x, _) = image_batch(0, 2, 3, 16, &device).expect("test");
        let y = token_jitter(&x, 4, 0.1, &mut Rng::stream(1, 2, 3)).expect("test");
        let again = token_jitter(&x, 4, 0.1, &mut Rng::stream(1, 2, 3)).expect("test");
        let shift = (&y - &x).expect("test");
        let d: Vec<Vec<Vec<Vec<f32>>>> = (0..2)
            .map(|b| shift.get(b).expect("test").to_vec3().expect("test"))
            .collect();
        let mut distinct = Vec::new();
        for image in &d {
            for channel in image {
                for (r, row) in channel.iter().enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        assert!(v.abs() <= 0.1 + 1e-6, "shift {v} beyond the amount");
                        let corner = channel[r / 4 * 4][c / 4 * 4];
                        assert!((v - corner).abs() < 1e-6, "not constant over a token");
                    }
                }
                distinct.push(channel[0][0]);
            }
        }
        distinct.dedup();
        assert!(distinct.len() > 1, "every token shifted alike");
        let same: Vec<f32> = (&again - &y)
            .expect("test")
            .abs()
            .expect("test")
            .flatten_all()
            .expect("test")
            .to_vec1()
            .expect("test");
        assert!(same.iter().all(|v| *v == 0.0), "same stream, same shifts");
    }
}
