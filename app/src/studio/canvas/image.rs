//! The canvas image as the GPU shows it: an RGBA8 mirror of the canvas texture, the per-cell
//! state texture (undecided, latest step), and the uploads that bring the GPU up to date. Steps
//! paint only the cells they decided (a code's preview tile from the palette); a finished or
//! opened document replaces the whole image.

use arpg_core::canvas::TokenCanvas;
use arpg_core::vq::Palette;

use super::cell_map::{CellMap, CellRecord};
use crate::studio::gpu::{Extent, Target, Upload};

/// Colour of a cell not decided yet.
const UNDECIDED: [u8; 3] = [20, 22, 26];

pub struct CanvasImage {
    /// RGBA8, `extent.width x extent.height`.
    rgba: Vec<u8>,
    uploads: Vec<Upload>,
    extent: Extent,
    /// Pixels per token side.
    patch: usize,
}

impl Default for CanvasImage {
    fn default() -> Self {
        Self {
            rgba: vec![0, 0, 0, 255],
            uploads: Vec::new(),
            extent: Extent {
                width: 1,
                height: 1,
                rows: 1,
                cols: 1,
            },
            patch: 1,
        }
    }
}

impl CanvasImage {
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// The RGBA8 mirror of the canvas texture, `extent.width x extent.height`.
    pub fn rgba(&self) -> &[u8] {
        &self.rgba
    }

    /// The uploads queued since the last call (the paint callback applies them).
    pub fn take_uploads(&mut self) -> Vec<Upload> {
        std::mem::take(&mut self.uploads)
    }

    /// Queues an upload of another texture (the mask's).
    pub fn push(&mut self, upload: Upload) {
        self.uploads.push(upload);
    }

    /// Resizes the image to `rows x cols` cells of `patch` px; returns whether it changed (the
    /// image is then blank and pending uploads are dropped).
    pub fn set_extent(&mut self, rows: usize, cols: usize, patch: usize) -> bool {
        let extent = Extent {
            width: (cols * patch) as u32,
            height: (rows * patch) as u32,
            rows: rows as u32,
            cols: cols as u32,
        };
        if extent == self.extent && patch == self.patch {
            return false;
        }
        self.extent = extent;
        self.patch = patch;
        self.rgba = vec![0; cols * patch * rows * patch * 4];
        self.uploads.clear();
        true
    }

    /// Shows a whole document: `rgb` (RGB8 of the extent) uploaded at once, no undecided cells.
    pub fn show(&mut self, canvas: &TokenCanvas, rgb: &[u8], map: &CellMap) {
        if rgb.len() * 4 == self.rgba.len() * 3 {
            for (dst, src) in self.rgba.chunks_exact_mut(4).zip(rgb.chunks_exact(3)) {
                dst.copy_from_slice(&[src[0], src[1], src[2], 255]);
            }
        }
        self.upload_image();
        self.upload_state(canvas, &[], map);
    }

    /// Before a job's first step: its known cells from the palette, pixel-exact where the base
    /// document (`canvas`, `rgb`) lines up inside the new canvas; undecided cells dark.
    pub fn paint_known(
        &mut self,
        canvas: &TokenCanvas,
        base: Option<(&TokenCanvas, &[u8])>,
        palette: Option<&Palette>,
    ) {
        let p = self.patch;
        let w = canvas.cols * p;
        for r in 0..canvas.rows {
            for c in 0..canvas.cols {
                match (canvas.get(r, c), palette) {
                    (Some(t), Some(palette)) => self.paint_tile(r, c, t, palette),
                    _ => self.fill_cell(r, c, UNDECIDED),
                }
            }
        }
        if let Some((doc, rgb)) = base {
            if let Some((r0, c0)) = canvas.locate(doc) {
                let bw = doc.cols * p;
                for y in 0..doc.rows * p {
                    for x in 0..bw {
                        let (r, c) = (r0 + y / p, c0 + x / p);
                        if canvas.get(r, c).is_some() && rgb.len() >= (y * bw + x + 1) * 3 {
                            let s = &rgb[(y * bw + x) * 3..(y * bw + x) * 3 + 3];
                            let d = ((r0 * p + y) * w + c0 * p + x) * 4;
                            self.rgba[d..d + 4].copy_from_slice(&[s[0], s[1], s[2], 255]);
                        }
                    }
                }
            }
        }
        self.upload_image();
    }

    /// Copies the pixels of `cells` from `rgb` (RGB8 of the whole extent: a live decode of the
    /// partial canvas) and queues one upload of their bounding box; returns whether anything
    /// was painted.
    pub fn paint_decoded(&mut self, cells: &[(usize, usize)], rgb: &[u8]) -> bool {
        let (p, w) = (self.patch, self.extent.width as usize);
        let (rows, cols) = (self.extent.rows as usize, self.extent.cols as usize);
        if cells.is_empty()
            || rgb.len() * 4 != self.rgba.len() * 3
            || cells.iter().any(|&(r, c)| r >= rows || c >= cols)
        {
            return false;
        }
        let (mut r0, mut c0, mut r1, mut c1) = (usize::MAX, usize::MAX, 0, 0);
        for &(r, c) in cells {
            for y in r * p..(r + 1) * p {
                for x in c * p..(c + 1) * p {
                    let (s, d) = ((y * w + x) * 3, (y * w + x) * 4);
                    self.rgba[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
                    self.rgba[d + 3] = 255;
                }
            }
            (r0, c0, r1, c1) = (r0.min(r), c0.min(c), r1.max(r + 1), c1.max(c + 1));
        }
        let (x, y) = (c0 * p, r0 * p);
        let (bw, bh) = ((c1 - c0) * p, (r1 - r0) * p);
        let mut bytes = Vec::with_capacity(bw * bh * 4);
        for yy in y..y + bh {
            bytes.extend_from_slice(&self.rgba[(yy * w + x) * 4..(yy * w + x + bw) * 4]);
        }
        self.uploads.push(Upload {
            target: Target::Image,
            x: x as u32,
            y: y as u32,
            w: bw as u32,
            h: bh as u32,
            bytes,
        });
        true
    }

    /// Pastes a code's preview tile into cell `(r, c)` and queues that cell's upload.
    pub fn paint_cell(&mut self, r: usize, c: usize, token: u32, palette: &Palette) {
        if palette.patch != self.patch {
            return;
        }
        self.paint_tile(r, c, token, palette);
        let p = self.patch;
        let w = self.extent.width as usize;
        let mut bytes = Vec::with_capacity(p * p * 4);
        for y in 0..p {
            let row = ((r * p + y) * w + c * p) * 4;
            bytes.extend_from_slice(&self.rgba[row..row + p * 4]);
        }
        self.uploads.push(Upload {
            target: Target::Image,
            x: (c * p) as u32,
            y: (r * p) as u32,
            w: p as u32,
            h: p as u32,
            bytes,
        });
    }

    /// The whole per-cell state: undecided cells, the `latest` step's cells highlighted, and
    /// each cell's recorded probability and step (`map`, for the confidence and order maps).
    pub fn upload_state(&mut self, canvas: &TokenCanvas, latest: &[(usize, usize)], map: &CellMap) {
        self.upload_state_with(canvas, map, |r, c, _| (false, latest.contains(&(r, c))));
    }

    /// The per-cell state as it was after step `step` of the run `map` recorded (the replay
    /// timeline): cells that run decided later are shown undecided, the step's own cells
    /// highlighted; cells it did not decide (context) stay as they are.
    pub fn upload_replay(&mut self, canvas: &TokenCanvas, map: &CellMap, step: usize) {
        self.upload_state_with(canvas, map, |_, _, rec| {
            let rec = rec.filter(|rec| rec.run == map.latest);
            (
                rec.is_some_and(|rec| rec.step > step),
                rec.is_some_and(|rec| rec.step == step),
            )
        });
    }

    /// Uploads the state texture; `cell(r, c, record)` says whether a decided cell is shown
    /// undecided (`.0`, its record hidden too) and whether it is highlighted (`.1`).
    fn upload_state_with(
        &mut self,
        canvas: &TokenCanvas,
        map: &CellMap,
        cell: impl Fn(usize, usize, Option<CellRecord>) -> (bool, bool),
    ) {
        let mut bytes = Vec::with_capacity(canvas.cells.len() * 4);
        for r in 0..canvas.rows {
            for c in 0..canvas.cols {
                let (hidden, fresh) = cell(r, c, map.get(r, c));
                let undecided = canvas.get(r, c).is_none() || hidden;
                let [prob, order] = if hidden { [0, 0] } else { map.texel(r, c) };
                let flag = |on: bool| if on { 255 } else { 0 };
                bytes.extend_from_slice(&[flag(undecided), flag(fresh), prob, order]);
            }
        }
        self.uploads.push(Upload {
            target: Target::State,
            x: 0,
            y: 0,
            w: canvas.cols as u32,
            h: canvas.rows as u32,
            bytes,
        });
    }

    /// One decided cell's state: highlighted when `fresh`; `texel`: [`CellMap::texel`].
    pub fn upload_cell_state(&mut self, r: usize, c: usize, fresh: bool, texel: [u8; 2]) {
        self.uploads.push(Upload {
            target: Target::State,
            x: c as u32,
            y: r as u32,
            w: 1,
            h: 1,
            bytes: vec![0, if fresh { 255 } else { 0 }, texel[0], texel[1]],
        });
    }

    fn paint_tile(&mut self, r: usize, c: usize, token: u32, palette: &Palette) {
        if palette.patch != self.patch {
            return self.fill_cell(r, c, UNDECIDED);
        }
        let p = self.patch;
        let w = self.extent.width as usize;
        let tile = palette.tile(token);
        for y in 0..p {
            for x in 0..p {
                let s = &tile[(y * p + x) * 3..(y * p + x) * 3 + 3];
                let d = ((r * p + y) * w + c * p + x) * 4;
                if d + 4 <= self.rgba.len() {
                    self.rgba[d..d + 4].copy_from_slice(&[s[0], s[1], s[2], 255]);
                }
            }
        }
    }

    fn fill_cell(&mut self, r: usize, c: usize, rgb: [u8; 3]) {
        let p = self.patch;
        let w = self.extent.width as usize;
        for y in 0..p {
            for x in 0..p {
                let d = ((r * p + y) * w + c * p + x) * 4;
                if d + 4 <= self.rgba.len() {
                    self.rgba[d..d + 4].copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
                }
            }
        }
    }

    fn upload_image(&mut self) {
        self.uploads.push(Upload {
            target: Target::Image,
            x: 0,
            y: 0,
            w: self.extent.width,
            h: self.extent.height,
            bytes: self.rgba.clone(),
        });
    }
}
