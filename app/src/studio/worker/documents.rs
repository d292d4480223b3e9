//! What the worker loads and opens: the model pair's facts and preview palette, class names
//! beside a checkpoint, and pictures made into documents.

use arpg_core::document;
use arpg_core::pixels;

use super::Worker;
use crate::studio::messages::{ImageOpened, WorkerEvent};

impl Worker {
    /// Shows a picture as the document: its canvas (its own tokens when they are trusted for
    /// these pixels and this tokenizer, else encoded), with what the user should know.
    pub(super) fn open_picture(
        &mut self,
        name: String,
        pic: document::Picture,
        mut notices: Vec<String>,
    ) -> anyhow::Result<()> {
        let models = self.models()?;
        let imported = models.canvas_of(&pic)?;
        let meta = pic.metadata.clone();
        let class = meta.as_ref().and_then(|m| m.class);
        let p = models.patch();
        let (pad_x, pad_y) = imported.padding(p);
        notices.extend(imported.warning);
        notices.extend(
            pic.transparency
                .as_ref()
                .map(|t| format!("{name}: {}.", upper_first(&t.notice()))),
        );
        // The wholly transparent area becomes the mask (padded as the canvas is): what
        // Inpaint fills unless the user paints another.
        let fill = pic
            .transparency
            .as_ref()
            .filter(|t| t.clear_pixels > 0)
            .map(|t| {
                pixels::pad_zero(
                    &t.clear,
                    pic.width,
                    pic.height,
                    pic.width + pad_x,
                    pic.height + pad_y,
                )
            });
        if pad_x > 0 || pad_y > 0 {
            notices.push(format!(
                "{}x{} px is not a whole number of {p}px tokens: the canvas is padded to \
                 {}x{} by repeating the right and bottom edges (no pixel is lost)",
                pic.width,
                pic.height,
                pic.width + pad_x,
                pic.height + pad_y
            ));
        }
        self.emit(WorkerEvent::ImageOpened(ImageOpened {
            name,
            canvas: imported.canvas,
            rgb: imported.rgb,
            size: [imported.width, imported.height],
            class,
            settings: meta.as_ref().and_then(|m| m.settings.clone()),
            provenance: meta.and_then(|m| m.provenance),
            notices,
            fill,
        }));
        Ok(())
    }
}

/// Reads class names from `<checkpoint>.classes.txt` or `classes.txt` beside a checkpoint (for
/// ImageNet checkpoints: the 1000 names in label order).
pub(super) fn class_names_beside(checkpoint: &std::path::Path, n: usize) -> Option<Vec<String>> {
    let dir = checkpoint.parent()?;
    [
        checkpoint.with_extension("classes.txt"),
        dir.join("classes.txt"),
    ]
    .iter()
    .find_map(|p| {
        let text = arpg_core::text::read(p, arpg_core::text::MAX_CONFIG_BYTES).ok()?;
        let names: Vec<String> = text
            .lines()
            .map(|l| l.trim().replace('_', " "))
            .filter(|l| !l.is_empty())
            .collect();
        (names.len() == n).then_some(names)
    })
}

/// `text` with its first letter in upper case (core's sentences start in lower case, to follow
/// a file name; the app shows them alone).
pub(super) fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
