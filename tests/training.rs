//! Training smoke tests: a few steps on a handful of images make the loss fall, and a run
//! resumes from its checkpoint.

mod common;

use arpg_core::config::{ArpgConfig, VqConfig};
use arpg_core::loader;
use arpg_core::train::{train_arpg, train_vq, StepLog, TrainOptions};
use candle_core::{Device, Tensor};

fn opts(steps: usize, batch: usize, size: usize) -> TrainOptions {
    TrainOptions {
        steps,
        batch,
        lr: 3e-3,
        warmup: 2,
        weight_decay: 0.0,
        seed: 5,
        checkpoint_every: 10,
        image_size: size,
        pool: Some(batch),
        init: None,
        mosaic: 0.0,
        decoder_only: false,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// A two-level tokenizer (2x downsampling) small enough to train in seconds.
fn tiny_vq() -> VqConfig {
    VqConfig {
        ch: 32,
        ch_mult: vec![1, 1],
        decoder_ch_mult: None,
        num_res_blocks: 1,
        z_channels: 32,
        codebook_size: 64,
        codebook_embed_dim: 8,
        in_channels: 3,
        out_channels: 3,
    }
}

#[test]
fn vq_loss_falls_on_a_handful_of_images_and_resumes() {
    let cfg = tiny_vq();
    let dir = common::temp_dir("train-vq");
    let mut losses = Vec::new();
    train_vq(
        &cfg,
        &opts(30, 4, 16),
        &dir,
        &Device::Cpu,
        &mut |r: &StepLog| {
            losses.push(r.loss);
            true
        },
    )
    .expect("train");
    assert_eq!(losses.len(), 30);
    let (first, last) = (mean(&losses[..5]), mean(&losses[25..]));
    assert!(
        last < 0.7 * first,
        "VQ loss did not fall: {first} -> {last}"
    );
    // The checkpoint is a loadable VQ, and a longer run resumes at step 30.
    assert!(loader::load_vq(dir.join("vq.safetensors"), None, &Device::Cpu).is_ok());
    let mut steps = Vec::new();
    train_vq(
        &cfg,
        &opts(32, 4, 16),
        &dir,
        &Device::Cpu,
        &mut |r: &StepLog| {
            steps.push(r.step);
            true
        },
    )
    .expect("resume");
    assert_eq!(steps, vec![31, 32]);

    // Fine-tuning: a new run initialised from those weights starts at step 1 with the trained
    // loss, not the random-initialisation one.
    let tuned = common::temp_dir("train-vq-init");
    let mut init_losses = Vec::new();
    let mut init_steps = Vec::new();
    let mut init_rec = Vec::new();
    let init = TrainOptions {
        init: Some(dir.join("vq.safetensors")),
        ..opts(3, 4, 16)
    };
    train_vq(&cfg, &init, &tuned, &Device::Cpu, &mut |r: &StepLog| {
        init_losses.push(r.loss);
        init_steps.push(r.step);
        init_rec.push(r.terms[0].1);
        true
    })
    .expect("fine-tune");
    assert_eq!(init_steps, vec![1, 2, 3]);
    assert!(
        init_losses[0] < 0.7 * losses[0],
        "fine-tuning did not start from the trained weights: {} vs fresh {}",
        init_losses[0],
        losses[0]
    );
    // Decoder-only fine-tuning keeps every image's tokens (encoder and codebook untouched) and
    // changes what the tokens decode to.
    let decoder_dir = common::temp_dir("train-vq-decoder");
    let decoder_only = TrainOptions {
        decoder_only: true,
        ..init.clone()
    };
    let mut decoder_rec = Vec::new();
    train_vq(
        &cfg,
        &decoder_only,
        &decoder_dir,
        &Device::Cpu,
        &mut |r: &StepLog| {
            decoder_rec.push(r.terms[0].1);
            true
        },
    )
    .expect("decoder-only fine-tune");
    // Its first step reconstructs exactly as the full fine-tune's first step (same weights and
    // batch): it encodes and decodes with the trained codebook, not the random initialisation's.
    assert!(
        (decoder_rec[0] - init_rec[0]).abs() < 1e-3 * init_rec[0],
        "decoder-only first reconstruction {} vs full fine-tune {}",
        decoder_rec[0],
        init_rec[0]
    );
    let before = loader::load_vq(dir.join("vq.safetensors"), None, &Device::Cpu).expect("vq");
    let after =
        loader::load_vq(decoder_dir.join("vq.safetensors"), None, &Device::Cpu).expect("vq");
    let (x, _) = arpg_core::train::image_batch(100, 4, 9, 16, &Device::Cpu).expect("images");
    let tokens = before.encode(&x).expect("encode");
    assert_eq!(
        tokens.to_vec2::<u32>().expect("tokens"),
        after
            .encode(&x)
            .expect("encode")
            .to_vec2::<u32>()
            .expect("tokens")
    );
    let moved = common::max_abs_diff(
        &before.decode(&tokens, (8, 8)).expect("decode"),
        &after.decode(&tokens, (8, 8)).expect("decode"),
    );
    assert!(moved > 1e-3, "the decoder did not train: {moved}");

    // Weights of another config are refused, not loaded halfway.
    let other = VqConfig {
        codebook_size: 32,
        ..cfg.clone()
    };
    let err = train_vq(
        &other,
        &init,
        &common::temp_dir("train-vq-init-bad"),
        &Device::Cpu,
        &mut |_: &StepLog| true,
    )
    .expect_err("a checkpoint of another shape must be refused");
    assert!(err.to_string().contains("shape"), "{err}");
}

#[test]
fn arpg_loss_falls_on_a_handful_of_images() {
    let vq = loader::load_vq(common::tiny().join("tiny_vq.pt"), None, &Device::Cpu).expect("vq");
    let cfg = ArpgConfig {
        dim: 32,
        n_layer: 2,
        n_head: 2,
        vocab_size: 512,
        num_classes: 10,
        block_size: 64,
        cls_token_num: 1,
        multiple_of: 32,
        ffn_dim_multiplier: None,
        rope_base: 10000.0,
        norm_eps: 1e-5,
    };
    let dir = common::temp_dir("train-arpg");
    let mut losses = Vec::new();
    let model = train_arpg(
        &cfg,
        &vq,
        &opts(40, 4, 32),
        &dir,
        &Device::Cpu,
        &mut |r: &StepLog| {
            losses.push(r.loss);
            true
        },
    )
    .expect("train");
    let (first, last) = (mean(&losses[..5]), mean(&losses[35..]));
    assert!(
        last < first - 0.5,
        "ARPG loss did not fall: {first} -> {last}"
    );
    assert_eq!(model.config(), &cfg);
    // What was trained loads back through the public loader with its config beside it.
    let loaded = loader::load_arpg(
        dir.join("arpg.safetensors"),
        None,
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .expect("load");
    assert_eq!(loaded.config, cfg);

    // Depth growth: a run of a deeper model of the same width starts from those weights, and
    // (before any update: learning rate 0) computes exactly what the shallow model computes.
    let deep_cfg = ArpgConfig {
        n_layer: 6,
        ..cfg.clone()
    };
    let grow = TrainOptions {
        init: Some(dir.join("arpg.safetensors")),
        lr: 0.0,
        ..opts(1, 4, 32)
    };
    let deep_dir = common::temp_dir("train-arpg-grow");
    let deep = train_arpg(
        &deep_cfg,
        &vq,
        &grow,
        &deep_dir,
        &Device::Cpu,
        &mut |_: &StepLog| true,
    )
    .expect("grow");
    assert_eq!(deep.config().n_self_layers(), 3);
    let ids = Tensor::from_vec(
        (0..128u32).map(|i| (i * 37) % 512).collect(),
        (2, 64),
        &Device::Cpu,
    )
    .expect("ids");
    let orders = Tensor::from_vec(
        (0..128u32).map(|i| (i * 23 + i / 64) % 64).collect(),
        (2, 64),
        &Device::Cpu,
    )
    .expect("orders");
    let classes = Tensor::new(&[3u32, 10], &Device::Cpu).expect("classes");
    let shallow = loaded
        .model
        .candle()
        .expect("a candle model")
        .forward_teacher(&ids, &classes, &orders, true)
        .expect("shallow forward");
    let grown = deep
        .forward_teacher(&ids, &classes, &orders, true)
        .expect("deep forward");
    let diff = (shallow - grown)
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("diff");
    assert!(diff < 1e-4, "the grown model differs by {diff}");
    // A checkpoint deeper than the model is refused.
    let err = train_arpg(
        &cfg,
        &vq,
        &TrainOptions {
            init: Some(deep_dir.join("arpg.safetensors")),
            ..opts(1, 4, 32)
        },
        &common::temp_dir("train-arpg-shrink"),
        &Device::Cpu,
        &mut |_: &StepLog| true,
    )
    .expect_err("a deeper checkpoint must be refused");
    assert!(err.to_string().contains("more than"), "{err}");
}

#[test]
fn vq_mosaic_moves_whole_token_patches_between_images() {
    use arpg_core::sampler::Rng;
    use arpg_core::train::mosaic_rows;
    use arpg_core::vq::VqModel;
    use candle_nn::{VarBuilder, VarMap};

    let cfg = tiny_vq();
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vq = VqModel::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &dev),
    )
    .expect("vq");
    let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev).expect("images");
    let swapped = Tensor::cat(
        &[
            x.narrow(0, 1, 1).expect("b1"),
            x.narrow(0, 0, 1).expect("b0"),
        ],
        0,
    )
    .expect("swap");
    let cells = 16;
    // Every cell taken from the other image: the mosaic is the swapped batch, in pixels and in
    // what the decoder draws.
    let rows: Vec<u32> = (0..2 * cells as u32)
        .map(|r| (r + cells as u32) % (2 * cells as u32))
        .collect();
    let rows = Tensor::from_vec(rows, 2 * cells, &dev).expect("rows");
    let target = vq.mosaic_target(&x, &rows).expect("target");
    let diff = common::max_abs_diff;
    assert_eq!(diff(&target, &swapped), 0.0);
    let (mixed, ..) = vq.forward_train(&x, Some(&rows)).expect("mosaic decode");
    let (plain, ..) = vq.forward_train(&swapped, None).expect("plain decode");
    assert!(diff(&mixed, &plain) < 1e-5, "{}", diff(&mixed, &plain));

    // A partial mosaic keeps each cell in place, takes it from another image at about the asked
    // share, and moves exactly that cell's 2x2 pixel patch.
    let rows = mosaic_rows(8, cells, 0.25, &mut Rng::new(3));
    assert_eq!(
        mosaic_rows(8, cells, 0.0, &mut Rng::new(3)),
        (0..8 * cells as u32).collect::<Vec<_>>()
    );
    let moved = rows
        .iter()
        .enumerate()
        .filter(|(i, &r)| r as usize != *i)
        .count();
    assert!((16..=48).contains(&moved), "{moved} of 128 cells moved");
    assert!(rows
        .iter()
        .enumerate()
        .all(|(i, &r)| r as usize % cells == i % cells));
    let x = Tensor::randn(0f32, 1.0, (8, 3, 8, 8), &dev).expect("images");
    let rows_t = Tensor::from_vec(rows.clone(), 8 * cells, &dev).expect("rows");
    let target = vq.mosaic_target(&x, &rows_t).expect("target");
    let (i, &r) = rows
        .iter()
        .enumerate()
        .find(|(i, &r)| r as usize != *i)
        .expect("a moved cell");
    let (cell, src) = (i % cells, r as usize / cells);
    let (ty, tx) = (cell / 4 * 2, cell % 4 * 2);
    let patch = |t: &Tensor, b: usize| {
        t.narrow(0, b, 1)
            .and_then(|t| t.narrow(2, ty, 2))
            .and_then(|t| t.narrow(3, tx, 2))
            .expect("patch")
    };
    assert_eq!(diff(&patch(&target, i / cells), &patch(&x, src)), 0.0);
}
