//! `arpg eval --seams`: how visible the seams of outpainting and inpainting are, and how far the
//! live preview is from the final decode.

use anyhow::Result;
use arpg_app::commands::SamplerArgs;
use arpg_app::outln;
use arpg_core::canvas::TokenCanvas;
use arpg_core::edit::{Edit, MaskOptions, Source};
use arpg_core::generator::{Generation, Request};
use arpg_core::order::Order;
use arpg_core::pair::ModelPair as Models;

/// Seeds of the seam measurement.
const SEAM_SEEDS: u64 = 6;

/// `arpg eval --seams`: see [`EvalArgs::seams`]. Each seed generates a class-0 image, then
/// extends it by one grid on each side and inpaints its right half, through the edit pipeline.
pub(super) fn seams(models: &Models, sampler: &SamplerArgs) -> Result<()> {
    let (g, p) = (models.grid(), models.patch());
    let side = g * p;
    let cases: [(&str, Option<[usize; 4]>); 5] = [
        ("outpaint right", Some([0, g, 0, 0])),
        ("outpaint left", Some([g, 0, 0, 0])),
        ("outpaint bottom", Some([0, 0, 0, g])),
        ("outpaint top", Some([0, 0, g, 0])),
        ("inpaint right half", None),
    ];
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    // The most visible line within two tokens of the seam (levelling spreads a step over them).
    let mut near: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut control = [Vec::new(), Vec::new()];
    // One class-0 generation per seed, kept step by step (the live preview replays it), and
    // the decode of its result.
    let mut runs = Vec::new();
    for seed in 0..SEAM_SEEDS {
        let mut settings = sampler.settings(g * g, &models.arpg.sampling)?;
        settings.seed = seed;
        let mut gen = Generation::new(&models.arpg.model, &Request::new(vec![0], settings))?;
        let mut states = Vec::new();
        while gen.step()?.is_some() {
            states.push(TokenCanvas {
                rows: g,
                cols: g,
                cells: gen.tokens()[0].clone(),
            });
        }
        let canvas = TokenCanvas::from_tokens(g, g, &gen.finished_tokens()?.remove(0))?;
        let rgb = models.decode(&canvas)?;
        runs.push((states, canvas, rgb));
    }
    for (seed, (_, canvas, rgb)) in runs.iter().enumerate() {
        let mut settings = sampler.settings(g * g, &models.arpg.sampling)?;
        settings.seed = seed as u64;
        let source = Source {
            canvas,
            rgb: Some(rgb),
            size: [side, side],
            patch: p,
        };
        // Control: the same measures on the unedited image's middle lines (no seam at all).
        for vertical in [true, false] {
            control[0].push(seam_ratio(rgb, side, side, vertical, side / 2));
            control[1].push(worst_line_near(rgb, side, side, vertical, side / 2, 2 * p));
        }
        for (k, (_, sides)) in cases.iter().enumerate() {
            let (edit, seam) = match sides {
                Some(cells) => (Edit::Outpaint { cells: *cells }, None),
                None => {
                    let mask: Vec<u8> = (0..side * side)
                        .map(|i| if i % side >= side / 2 { 255 } else { 0 })
                        .collect();
                    let edit = Edit::Inpaint {
                        mask,
                        options: MaskOptions::default(),
                    };
                    (edit, Some(side / 2))
                }
            };
            let plan = edit.plan(source)?;
            let mut s = settings.clone();
            s.steps = s.steps.min(plan.unknown());
            let job = plan.job(&models.arpg.model, Some(0), s, Order::Random)?;
            let filled = job.run()?;
            let done = plan.finish(filled.clone(), models.decode(&filled)?)?;
            let (w, h) = (filled.cols * p, filled.rows * p);
            // The seam: between column x0 - 1 and x0 (rows for top and bottom).
            let (vertical, x0) = match sides {
                Some([l, _, 0, 0]) if *l > 0 => (true, l * p),
                Some([0, _, 0, 0]) => (true, side),
                Some([_, _, t, _]) if *t > 0 => (false, t * p),
                Some(_) => (false, side),
                None => (true, seam.unwrap_or(side / 2)),
            };
            rows[k].push(seam_ratio(&done.rgb, w, h, vertical, x0));
            near[k].push(worst_line_near(&done.rgb, w, h, vertical, x0, 2 * p));
        }
    }
    outln!(
        "| seam (class 0, {SEAM_SEEDS} seeds) | median ratio | per seed | worst line within two \
         tokens (median) |"
    )?;
    outln!("|---|---|---|---|")?;
    let (mut all, mut all_near) = (Vec::new(), Vec::new());
    for (((name, _), r), n) in cases.iter().zip(&rows).zip(&near) {
        all.extend(r.iter().copied());
        all_near.extend(n.iter().copied());
        let each: Vec<String> = r.iter().map(|v| format!("{v:.1}")).collect();
        outln!(
            "| {name} | {:.2} | {} | {:.2} |",
            median(r),
            each.join(" "),
            median(n)
        )?;
    }
    outln!("| all | {:.2} | | {:.2} |", median(&all), median(&all_near))?;
    outln!(
        "| no seam (the unedited image's middle lines) | {:.2} | | {:.2} |",
        median(&control[0]),
        median(&control[1])
    )?;
    // The live preview against the final decode: once every token is decided, and averaged
    // over the steps (each step's decided cells only), for tiles alone and for a decode of the
    // partial canvas (unknown cells filled from their nearest decided ones) every k steps, with
    // tiles for the cells decided since.
    let alone = arpg_core::vq::Palette::compute(models.vq.model(), 256)?;
    let in_context = arpg_core::vq::Palette::compute_in_context(models.vq.model(), 256)?;
    const POLICIES: [(&str, usize); 5] = [
        ("codes decoded alone (tiles)", 0),
        ("codes decoded among themselves (3x3 tiles)", 0),
        ("partial canvas decoded every step", 1),
        ("partial canvas decoded every 4th step, tiles between", 4),
        ("partial canvas decoded every 16th step, tiles between", 16),
    ];
    let mut at_end = vec![Vec::new(); POLICIES.len()];
    let mut during = vec![Vec::new(); POLICIES.len()];
    let patch_err = |a: &[u8], b: &[u8], cells: &[usize], cols: usize| -> f64 {
        let w = cols * p;
        let mut sum = 0u64;
        for &i in cells {
            let (r, c) = (i / cols, i % cols);
            for y in r * p..(r + 1) * p {
                for x in c * p..(c + 1) * p {
                    for k in 0..3 {
                        let j = (y * w + x) * 3 + k;
                        sum += a[j].abs_diff(b[j]) as u64;
                    }
                }
            }
        }
        sum as f64 / (cells.len() * p * p * 3).max(1) as f64
    };
    for (states, _, decoded) in &runs {
        for (k, &(_, every)) in POLICIES.iter().enumerate() {
            // The pixels the viewer shows, and which token each decoded cell showed.
            let mut shown_decode: Option<(TokenCanvas, Vec<u8>)> = None;
            let mut errs = Vec::new();
            let mut shown = Vec::new();
            for (s, canvas) in states.iter().enumerate() {
                let palette = if k == 0 { &alone } else { &in_context };
                shown = palette.render(&canvas.cells, g, g);
                if every > 0 && ((s + 1) % every == 0 || s + 1 == states.len()) {
                    if let Some(full) = canvas.filled_nearest() {
                        shown_decode = Some((canvas.clone(), models.decode(&full)?));
                    }
                }
                if let Some((at, rgb)) = &shown_decode {
                    let w = g * p;
                    for (i, t) in at.cells.iter().enumerate() {
                        if t.is_some() && *t == canvas.cells[i] {
                            let (r, c) = (i / g, i % g);
                            for y in r * p..(r + 1) * p {
                                let row = (y * w + c * p) * 3;
                                shown[row..row + p * 3].copy_from_slice(&rgb[row..row + p * 3]);
                            }
                        }
                    }
                }
                let decided: Vec<usize> =
                    (0..g * g).filter(|&i| canvas.cells[i].is_some()).collect();
                errs.push(patch_err(&shown, decoded, &decided, g));
            }
            let all: Vec<usize> = (0..g * g).collect();
            at_end[k].push(patch_err(&shown, decoded, &all, g));
            during[k].push(errs.iter().sum::<f64>() / errs.len().max(1) as f64);
        }
    }
    outln!()?;
    outln!(
        "| live preview vs the final decode (8-bit levels, median of {SEAM_SEEDS} seeds) | once \
         all tokens are decided | mean over the steps |"
    )?;
    outln!("|---|---|---|")?;
    for (k, (name, _)) in POLICIES.iter().enumerate() {
        outln!(
            "| {name} | {:.1} | {:.1} |",
            median(&at_end[k]),
            median(&during[k])
        )?;
    }
    Ok(())
}

/// Mean colour step between line `at - 1` and `at` (columns when `vertical`, else rows) over the
/// median step between every other pair of neighbouring lines.
fn seam_ratio(rgb: &[u8], w: usize, h: usize, vertical: bool, at: usize) -> f64 {
    let (lines, len) = if vertical { (w, h) } else { (h, w) };
    let px = |line: usize, i: usize, k: usize| {
        let (x, y) = if vertical { (line, i) } else { (i, line) };
        rgb[(y * w + x) * 3 + k] as f64
    };
    let steps: Vec<f64> = (1..lines)
        .map(|l| {
            let total: f64 = (0..len)
                .flat_map(|i| (0..3).map(move |k| (i, k)))
                .map(|(i, k)| (px(l, i, k) - px(l - 1, i, k)).abs())
                .sum();
            total / (len * 3) as f64
        })
        .collect();
    let seam = steps[at - 1];
    let others: Vec<f64> = steps
        .iter()
        .enumerate()
        .filter(|&(l, _)| l != at - 1)
        .map(|(_, &v)| v)
        .collect();
    seam / median(&others).max(1e-9)
}

/// The largest [`seam_ratio`] of the lines within `reach` of the seam line `at` (either side).
fn worst_line_near(rgb: &[u8], w: usize, h: usize, vertical: bool, at: usize, reach: usize) -> f64 {
    let lines = if vertical { w } else { h };
    (at.saturating_sub(reach).max(1)..(at + reach + 1).min(lines))
        .map(|l| seam_ratio(rgb, w, h, vertical, l))
        .fold(0.0, f64::max)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
