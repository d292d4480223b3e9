//! A procedural, seeded, class-conditional image dataset: ten kinds of spatial scenes with random
//! colours, positions and scales, so a model must learn a distribution, not a template. Scenes are
//! chosen so that inpainting and outpainting mean something (horizons continue, stripes keep their
//! period, tiles their grid). Sample `i` of class `c` under seed `s` is always the same image.

use crate::sampler::Rng;

/// Class names, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "horizon",
    "sunset",
    "night_sky",
    "stripes",
    "checks",
    "plaid",
    "tiled_floor",
    "bubbles",
    "blocks",
    "mountains",
];

/// Version of what [`render`] draws; bumped whenever a sample changes, so that anything cached
/// from the dataset (a trained judge) is not reused for another one.
pub const VERSION: u32 = 6;

type Rgb = [f32; 3];

/// A float RGB canvas in `[0, 1]`.
struct Canvas {
    size: usize,
    px: Vec<Rgb>,
}

impl Canvas {
    fn new(size: usize, fill: Rgb) -> Self {
        Self {
            size,
            px: vec![fill; size * size],
        }
    }

    fn set(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        if x < self.size && y < self.size {
            let p = &mut self.px[y * self.size + x];
            for k in 0..3 {
                p[k] = p[k] * (1.0 - alpha) + c[k] * alpha;
            }
        }
    }

    /// Paints every pixel where `f(x, y)` (pixel-centre coordinates in `[0, 1)`) gives an alpha.
    fn paint(&mut self, c: Rgb, f: impl Fn(f32, f32) -> f32) {
        let s = self.size as f32;
        for y in 0..self.size {
            for x in 0..self.size {
                let a = f((x as f32 + 0.5) / s, (y as f32 + 0.5) / s).clamp(0.0, 1.0);
                if a > 0.0 {
                    self.set(x, y, c, a);
                }
            }
        }
    }

    fn vertical_gradient(&mut self, top: Rgb, bottom: Rgb, y0: f32, y1: f32) {
        let s = self.size as f32;
        for y in 0..self.size {
            let v = (y as f32 + 0.5) / s;
            if v < y0 || v >= y1 {
                continue;
            }
            let t = (v - y0) / (y1 - y0).max(1e-6);
            let c = mix(top, bottom, t);
            for x in 0..self.size {
                self.px[y * self.size + x] = c;
            }
        }
    }

    fn to_rgb8(&self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|p| p.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect()
    }
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|k| a[k] * (1.0 - t) + b[k] * t)
}

fn scale(a: Rgb, f: f32) -> Rgb {
    a.map(|v| v * f)
}

/// Soft edge of width ~1 px for a signed distance in normalised units.
fn edge(d: f32, size: usize) -> f32 {
    (0.5 - d * size as f32).clamp(0.0, 1.0)
}

fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f64() as f32
}

/// `uniform(lo, hi)` snapped to a grid of `steps` levels per unit (kept inside the range).
fn level(rng: &mut Rng, lo: f32, hi: f32, steps: f32) -> f32 {
    ((uniform(rng, lo, hi) * steps).round() / steps).clamp(lo.min(hi), lo.max(hi))
}

/// A colour from HSV ranges. Hue, saturation and value are drawn on a grid (12 hues, 5 levels):
/// colours stay random per sample, but a flat region is one of a couple of hundred colours a
/// small tokenizer can name exactly, rather than a continuum it can only approximate, and a
/// small transformer can keep one colour over a whole image.
fn hsv(rng: &mut Rng, h: (f32, f32), s: (f32, f32), v: (f32, f32)) -> Rgb {
    let h = level(rng, h.0, h.1, 12.0).rem_euclid(1.0) * 6.0;
    let s = level(rng, s.0, s.1, 5.0);
    let v = level(rng, v.0, v.1, 5.0);
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

fn any_colour(rng: &mut Rng) -> Rgb {
    hsv(rng, (0.0, 1.0), (0.4, 1.0), (0.35, 1.0))
}

/// Perceived brightness (Rec. 601 luma).
fn luma(c: Rgb) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// A colour that stands out against `a` (a pattern of two near-equal colours is not a pattern).
fn contrasting(rng: &mut Rng, a: Rgb) -> Rgb {
    let mut best = any_colour(rng);
    for _ in 0..8 {
        let dist = |c: Rgb| {
            (luma(c) - luma(a)).abs()
                + 0.3 * c.iter().zip(&a).map(|(x, y)| (x - y).abs()).sum::<f32>()
        };
        if dist(best) > 0.35 {
            break;
        }
        let next = any_colour(rng);
        if dist(next) > dist(best) {
            best = next;
        }
    }
    best
}

/// Renders sample `index` of `class` as `size x size` interleaved RGB8.
pub fn render(class: usize, index: u64, seed: u64, size: usize) -> Vec<u8> {
    let mut rng = Rng::stream(seed, crate::sampler::stream::DATASET + class as u64, index);
    let r = &mut rng;
    let mut c = Canvas::new(size, [0.0; 3]);
    match class % CLASS_NAMES.len() {
        0 => {
            // Horizon: sky gradient over a darker ground, horizon at a random height.
            let hy = uniform(r, 0.3, 0.7);
            let sky_top = hsv(r, (0.5, 0.7), (0.3, 0.8), (0.6, 1.0));
            let sky_low = mix(sky_top, [1.0; 3], uniform(r, 0.2, 0.6));
            let ground = hsv(r, (0.05, 0.4), (0.4, 0.9), (0.25, 0.6));
            c.vertical_gradient(sky_top, sky_low, 0.0, hy);
            c.vertical_gradient(ground, scale(ground, 0.6), hy, 1.0);
        }
        1 => {
            // Sunset: warm gradient, a sun disc sitting low, dark ground.
            let hy = uniform(r, 0.55, 0.8);
            let top = hsv(r, (0.7, 0.95), (0.4, 0.8), (0.3, 0.6));
            let low = hsv(r, (0.0, 0.12), (0.6, 1.0), (0.8, 1.0));
            c.vertical_gradient(top, low, 0.0, hy);
            let (sx, sy, rad) = (
                uniform(r, 0.2, 0.8),
                hy - uniform(r, 0.0, 0.2),
                uniform(r, 0.08, 0.2),
            );
            let sun = hsv(r, (0.1, 0.17), (0.3, 0.8), (0.95, 1.0));
            c.paint(sun, |x, y| {
                if y < hy {
                    edge(((x - sx).hypot(y - sy)) - rad, size)
                } else {
                    0.0
                }
            });
            let ground = hsv(r, (0.0, 1.0), (0.2, 0.6), (0.05, 0.25));
            c.vertical_gradient(ground, scale(ground, 0.5), hy, 1.0);
        }
        2 => {
            // Night sky: dark gradient, stars, a crescent moon.
            let top = hsv(r, (0.6, 0.72), (0.5, 1.0), (0.02, 0.15));
            c.vertical_gradient(top, scale(top, 2.5), 0.0, 1.0);
            for _ in 0..(4 + r.below(10)) {
                let (x, y) = (r.below(size), r.below(size));
                c.set(x, y, [1.0, 1.0, 0.9], uniform(r, 0.5, 1.0));
            }
            let (mx, my, rad) = (
                uniform(r, 0.25, 0.75),
                uniform(r, 0.25, 0.6),
                uniform(r, 0.14, 0.25),
            );
            let (dx, dy) = (uniform(r, -0.6, 0.6) * rad, uniform(r, -0.6, 0.6) * rad);
            c.paint([0.95, 0.95, 0.8], |x, y| {
                let inside = edge((x - mx).hypot(y - my) - rad, size);
                let bite = edge((x - mx - dx).hypot(y - my - dy) - rad * 0.9, size);
                inside * (1.0 - bite)
            });
        }
        3 => {
            // Stripes: two colours, random orientation, period and phase. Periods are 8, 12
            // or 16 px at 32 px (2-4 tokens of 4 px) and phases whole pixels, so the pattern
            // repeats exactly on the token grid.
            let a = any_colour(r);
            let b = contrasting(r, a);
            let half = ((4 + 2 * r.below(3)) * size / 32).max(1);
            let phase = r.below(2 * half);
            let vertical = r.below(2) == 0;
            let px = |t: f32| (t * size as f32) as usize;
            c.paint(a, |_, _| 1.0);
            c.paint(b, |x, y| {
                let t = px(if vertical { x } else { y }) + phase;
                if (t / half).is_multiple_of(2) {
                    1.0
                } else {
                    0.0
                }
            });
        }
        4 => {
            // Checks: a two-colour checkerboard, cells of 6, 8 or 10 px (at 32 px; 4 px cells
            // alias with the 4 px tokens) at a whole-pixel offset.
            let a = any_colour(r);
            let b = contrasting(r, a);
            let cell = ((6 + 2 * r.below(3)) * size / 32).max(1);
            let (ox, oy) = (r.below(cell), r.below(cell));
            let px = |t: f32| (t * size as f32) as usize;
            c.paint(a, |_, _| 1.0);
            c.paint(b, |x, y| {
                if ((px(x) + ox) / cell + (px(y) + oy) / cell).is_multiple_of(2) {
                    1.0
                } else {
                    0.0
                }
            });
        }
        5 => {
            // Plaid: a base with translucent horizontal and vertical bands.
            let base = any_colour(r);
            let band = contrasting(r, base);
            let cross = contrasting(r, base);
            let period = uniform(r, 0.25, 0.5);
            let width = uniform(r, 0.25, 0.45);
            let (ox, oy) = (uniform(r, 0.0, 1.0), uniform(r, 0.0, 1.0));
            c.paint(base, |_, _| 1.0);
            c.paint(band, |_, y| {
                if (y / period + oy).fract() < width {
                    0.55
                } else {
                    0.0
                }
            });
            c.paint(cross, |x, _| {
                if (x / period + ox).fract() < width {
                    0.55
                } else {
                    0.0
                }
            });
        }
        6 => {
            // Tiled floor: tiles with per-tile shade and grout lines 2 px wide, on tiles of 8 or
            // 12 px at 32 px, offset by whole 4 px tokens: the grout always falls on a token's
            // top or left edge, which the tokenizer keeps (1 px lines at any pixel it blurs away).
            let tile = any_colour(r);
            let grout = scale(tile, uniform(r, 0.2, 0.45));
            let token = (size / 8).max(1);
            let step = (2 + r.below(2)) * token;
            let off = r.below(step / token) * token;
            let n = size / step + 1;
            let grout_width = (size / 16).max(1);
            let shades: Vec<f32> = (0..(n + 2) * (n + 2))
                .map(|_| uniform(r, 0.8, 1.1))
                .collect();
            for y in 0..size {
                for x in 0..size {
                    let (tx, ty) = ((x + off) / step, (y + off) / step);
                    let on_grout = (x + off) % step < grout_width || (y + off) % step < grout_width;
                    let col = if on_grout {
                        grout
                    } else {
                        scale(tile, shades[ty * (n + 2) + tx])
                    };
                    c.set(x, y, col, 1.0);
                }
            }
        }
        7 => {
            // Bubbles: saturated discs of random colours and sizes on a pale, flat background.
            let bg = hsv(r, (0.0, 1.0), (0.05, 0.3), (0.75, 0.95));
            c.paint(bg, |_, _| 1.0);
            for _ in 0..(2 + r.below(4)) {
                let (cx, cy, rad) = (
                    uniform(r, 0.1, 0.9),
                    uniform(r, 0.1, 0.9),
                    uniform(r, 0.1, 0.22),
                );
                let col = hsv(r, (0.0, 1.0), (0.7, 1.0), (0.5, 0.9));
                c.paint(col, |x, y| edge((x - cx).hypot(y - cy) - rad, size));
            }
        }
        8 => {
            // Blocks: bright axis-aligned rectangles on a dark, smooth horizontal gradient.
            let (a, b) = (any_colour(r), any_colour(r));
            let s = size as f32;
            for x in 0..size {
                let col = mix(a, b, x as f32 / s);
                for y in 0..size {
                    c.set(x, y, scale(col, 0.45), 1.0);
                }
            }
            for _ in 0..(2 + r.below(3)) {
                let (x0, y0) = (uniform(r, 0.0, 0.7), uniform(r, 0.0, 0.7));
                let (w, h) = (uniform(r, 0.15, 0.4), uniform(r, 0.15, 0.4));
                let col = hsv(r, (0.0, 1.0), (0.6, 1.0), (0.6, 1.0));
                c.paint(col, |x, y| {
                    if x >= x0 && x < x0 + w && y >= y0 && y < y0 + h {
                        1.0
                    } else {
                        0.0
                    }
                });
            }
        }
        _ => {
            // Mountains: sky gradient, then up to three ridges, nearer ones darker and lower.
            let top = hsv(r, (0.5, 0.65), (0.2, 0.6), (0.7, 1.0));
            c.vertical_gradient(top, mix(top, [1.0; 3], 0.5), 0.0, 1.0);
            let rock = hsv(r, (0.55, 0.8), (0.2, 0.5), (0.4, 0.7));
            let layers = 1 + r.below(3);
            for l in 0..layers {
                let base = 0.45 + 0.15 * l as f32 + uniform(r, -0.05, 0.05);
                let peaks: Vec<(f32, f32)> = (0..(2 + r.below(2)))
                    .map(|_| (uniform(r, -0.1, 1.1), uniform(r, 0.15, 0.35)))
                    .collect();
                let col = scale(rock, 1.0 - 0.3 * l as f32);
                c.paint(col, |x, y| {
                    let ridge = peaks
                        .iter()
                        .map(|&(px, h)| base - h + 1.3 * (x - px).abs())
                        .fold(f32::INFINITY, f32::min)
                        .min(base);
                    edge(ridge - y, size)
                });
            }
        }
    }
    c.to_rgb8()
}

/// A labelled batch for training: `n` samples with classes cycling through all labels, drawn
/// from sample indices `start..`.
pub fn batch(start: u64, n: usize, seed: u64, size: usize) -> (Vec<Vec<u8>>, Vec<usize>) {
    let k = CLASS_NAMES.len() as u64;
    (0..n as u64)
        .map(|i| {
            let global = start + i;
            let class = (global % k) as usize;
            (render(class, global / k, seed, size), class)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_varied() {
        for class in 0..CLASS_NAMES.len() {
            let a = render(class, 3, 9, 32);
            assert_eq!(a, render(class, 3, 9, 32));
            assert_ne!(a, render(class, 4, 9, 32), "class {class} repeats itself");
            assert_eq!(a.len(), 32 * 32 * 3);
        }
    }

    #[test]
    fn classes_differ_on_average() {
        let mean = |class: usize| -> Vec<f32> {
            let mut m = vec![0f32; 32 * 32 * 3];
            for i in 0..20 {
                for (acc, v) in m.iter_mut().zip(render(class, i, 1, 32)) {
                    *acc += v as f32 / 20.0;
                }
            }
            m
        };
        let means: Vec<Vec<f32>> = (0..CLASS_NAMES.len()).map(mean).collect();
        for a in 0..means.len() {
            for b in a + 1..means.len() {
                let d: f32 = means[a]
                    .iter()
                    .zip(&means[b])
                    .map(|(x, y)| (x - y).abs())
                    .sum();
                assert!(d > 0.0, "classes {a} and {b} have identical means");
            }
        }
    }

    #[test]
    fn tiled_floor_grout_lies_on_token_edges() {
        // Rows and columns made entirely of grout (the darkest colour) start a 4 px token or
        // follow such a row: grout is 2 px wide and aligned, and every sample has some.
        for i in 0..50 {
            let img = render(6, i, 3, 32);
            let px = |x: usize, y: usize| {
                let o = (y * 32 + x) * 3;
                [img[o], img[o + 1], img[o + 2]]
            };
            let darkest = (0..32 * 32)
                .map(|p| px(p % 32, p / 32))
                .min_by_key(|c| c.iter().map(|&v| v as u32).sum::<u32>())
                .expect("pixels");
            let rows: Vec<usize> = (0..32)
                .filter(|&y| (0..32).all(|x| px(x, y) == darkest))
                .collect();
            let cols: Vec<usize> = (0..32)
                .filter(|&x| (0..32).all(|y| px(x, y) == darkest))
                .collect();
            for lines in [&rows, &cols] {
                assert!(lines.len() >= 4, "sample {i}: grout lines {lines:?}");
                assert!(
                    lines.iter().all(|l| l % 4 < 2),
                    "sample {i}: grout off the token grid at {lines:?}"
                );
            }
        }
    }

    #[test]
    fn two_colour_patterns_have_contrast() {
        // Stripes and checks: the two colours of a sample differ clearly (summed RGB distance of
        // the darkest and brightest pixel), at most a rare sample is low-contrast.
        for class in [3, 4] {
            let low = (0..100)
                .filter(|&i| {
                    let px: Vec<Rgb> = render(class, i, 2, 32)
                        .chunks(3)
                        .map(|c| [c[0], c[1], c[2]].map(|v| v as f32 / 255.0))
                        .collect();
                    let by_luma = |a: &&Rgb, b: &&Rgb| luma(**a).total_cmp(&luma(**b));
                    let (Some(lo), Some(hi)) =
                        (px.iter().min_by(by_luma), px.iter().max_by(by_luma))
                    else {
                        return true;
                    };
                    lo.iter().zip(hi).map(|(a, b)| (a - b).abs()).sum::<f32>() < 0.3
                })
                .count();
            assert!(
                low <= 3,
                "class {class}: {low} of 100 samples are low-contrast"
            );
        }
    }
}
