//! Files: saving the document as a PNG and choosing or loading models.

use super::*;

impl StudioApp {
    pub(super) fn save_dialog(&mut self) {
        let Some(doc) = self.doc.clone() else {
            self.errors.push("Nothing to save yet.".into());
            return;
        };
        let Some(path) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name("arpg.png")
            .save_file()
        else {
            return;
        };
        if let Err(e) = self.save_png(&path, &doc) {
            self.errors.push(format!("{e:#}"));
        }
    }

    /// Writes the document as a PNG with its tokens and settings.
    pub fn save_png(&self, path: &std::path::Path, doc: &Document) -> anyhow::Result<()> {
        let p = self.patch();
        let model = self.model.as_ref().map_or("", |m| m.name.as_str());
        let mut meta = crate::document::Metadata::new(
            &doc.canvas,
            doc.class,
            doc.settings.as_ref(),
            p,
            model,
        )?;
        meta.provenance = doc.provenance.clone();
        meta.tokenizer = self.model.as_ref().map(|m| m.tokenizer.clone());
        // Made by sampling here (an opened picture without settings was only encoded).
        meta.transformer = doc
            .settings
            .as_ref()
            .and(self.model.as_ref())
            .map(|m| m.transformer.clone());
        // The user's size, as the CLI writes it: the padding to whole tokens is not the image.
        let (pw, ph) = (doc.canvas.cols * p, doc.canvas.rows * p);
        let [w, h] = doc.size;
        let rgb = if [w, h] == [pw, ph] {
            std::borrow::Cow::Borrowed(&doc.rgb)
        } else {
            std::borrow::Cow::Owned(arpg_core::pixels::crop(&doc.rgb, pw, 3, (0, 0), (w, h)))
        };
        crate::document::write_png(path, w, h, &rgb, Some(&meta))?;
        Ok(())
    }

    pub(super) fn open_model_dialog(&mut self) {
        let Some(gpt) = rfd::FileDialog::new()
            .set_title("ARPG checkpoint")
            .add_filter("Checkpoints", &["pt", "pth", "safetensors", "gguf"])
            .pick_file()
        else {
            return;
        };
        let Some(vq) = rfd::FileDialog::new()
            .set_title("VQ tokenizer checkpoint")
            .add_filter("Checkpoints", &["pt", "pth", "safetensors"])
            .pick_file()
        else {
            return;
        };
        self.load_models(ModelSpec {
            gpt: Some(gpt),
            vq: Some(vq),
            ..self.model_args.clone()
        });
    }

    /// Loads an official checkpoint with the official tokenizer (both downloaded).
    pub fn load_official(&mut self, gpt: std::path::PathBuf, vq: std::path::PathBuf) {
        let args = ModelSpec {
            gpt: Some(gpt),
            vq: Some(vq),
            config: None,
            ..self.model_args.clone()
        };
        self.load_models(args);
    }

    pub fn load_models(&mut self, args: ModelSpec) {
        self.loading = Some(args.clone());
        self.status.message = "Loading model…".into();
        self.send(WorkerCommand::LoadModels(args));
    }
}
