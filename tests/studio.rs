//! ARPG Studio driven through egui_kittest with the wgpu renderer (headless; lavapipe in CI):
//! generate, paint and undo, cancel mid-run, outpaint, and errors that leave the app usable.

mod common;
mod hub_server;
#[path = "common/texture.rs"]
mod texture;

use std::time::{Duration, Instant};

use arpg_app::studio::StudioApp;
use arpg_core::pair::ModelSpec;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

/// The shipped model (`assets/`), as `cargo run` opens it.
fn model_args() -> ModelSpec {
    ModelSpec::shipped()
}

fn harness() -> Harness<'static, StudioApp> {
    // One sampler thread: the software renderer needs the other core.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let args = model_args();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1100.0, 760.0))
        .wgpu()
        .build_eframe(move |cc| StudioApp::new(cc, args));
    wait(&mut h, "the model to load", |app| app.model.is_some());
    h
}

/// Steps the UI until `done` holds (the worker runs in its own thread meanwhile).
fn wait(h: &mut Harness<'static, StudioApp>, what: &str, done: impl Fn(&StudioApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}; errors: {:?}",
            h.state().errors
        );
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.step();
}

/// Mean absolute difference of two renders inside `rect` (points == pixels here).
fn region_diff(a: &image::RgbaImage, b: &image::RgbaImage, rect: egui::Rect) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in rect.top().max(0.0) as u32..(rect.bottom() as u32).min(a.height()) {
        for x in rect.left().max(0.0) as u32..(rect.right() as u32).min(a.width()) {
            let (p, q) = (a.get_pixel(x, y), b.get_pixel(x, y));
            sum += (0..3)
                .map(|k| (p[k] as i32 - q[k] as i32).unsigned_abs() as u64)
                .sum::<u64>();
            n += 3;
        }
    }
    sum as f64 / n.max(1) as f64
}

/// The app with the shipped model loaded on its window's own adapter (lavapipe in CI, where
/// `WGPU_BACKEND` pins Vulkan), and that adapter's name.
fn on_the_windows_gpu() -> (Harness<'static, StudioApp>, String) {
    let mut h = harness();
    let adapter = h
        .state()
        .gpu
        .as_ref()
        .map(|g| g.adapter().name.clone())
        .expect("the harness renders with wgpu");
    h.state_mut().load_models(ModelSpec {
        device: "wgpu".into(),
        ..ModelSpec::shipped()
    });
    wait(&mut h, "the model on the GPU", |app| {
        app.model
            .as_ref()
            .is_some_and(|m| m.device.contains(&adapter))
    });
    (h, adapter)
}

/// The shipped transformer on the CPU, f32 (to make again what the app made).
fn shipped_on_cpu() -> arpg_core::loader::LoadedArpg {
    arpg_core::loader::load_arpg(
        arpg_core::shipped::arpg_path(),
        None,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("shipped model")
}

fn generate(h: &mut Harness<'static, StudioApp>) {
    let before = h.state().history.items.len();
    h.get_by_label("Generate").click();
    wait(h, "the generation", |app| {
        app.history.items.len() > before && !app.is_running()
    });
}

#[test]
fn pick_a_class_generate_and_see_the_canvas_change() {
    let mut h = harness();
    h.get_by_label("3: stripes").click();
    h.step();
    assert_eq!(h.state().class, 3);
    let before = h.render().expect("render");
    generate(&mut h);
    let after = h.render().expect("render");
    let app = h.state();
    assert_eq!(app.history.items.len(), 1);
    assert_eq!(app.history.items[0].class, Some(3));
    assert!(!app.history.items[0].partial);
    let doc = app.doc.as_ref().expect("a document");
    assert_eq!(doc.canvas.unknown_count(), 0);
    let rect = app.canvas_screen_rect().expect("canvas drawn");
    assert!(rect.width() > 100.0, "canvas is {rect:?}");
    let diff = region_diff(&before, &after, rect);
    assert!(diff > 5.0, "the canvas did not change (mean diff {diff})");
}

#[test]
fn paint_a_stroke_and_undo_it() {
    let mut h = harness();
    // Generate from the keyboard this time.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait(&mut h, "the generation", |app| {
        app.history.items.len() == 1 && !app.is_running()
    });
    stroke(&mut h);
    assert!(!h.state().mask.is_empty(), "the stroke painted nothing");
    assert!(h.state().mask.can_undo());
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.step();
    h.step();
    assert!(h.state().mask.is_empty(), "Ctrl+Z did not undo the stroke");
    h.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::Z,
    );
    h.step();
    h.step();
    assert!(
        !h.state().mask.is_empty(),
        "Ctrl+Shift+Z did not redo the stroke"
    );
}

#[test]
fn cancel_mid_run_keeps_the_partial_image() {
    let mut h = harness();
    {
        let app = h.state_mut();
        app.settings.settings.steps = 64;
        app.settings.step_delay_ms = 40;
    }
    h.get_by_label("Generate").click();
    wait(&mut h, "a few steps", |app| {
        app.status.step.is_some_and(|(k, _)| k >= 3)
    });
    h.key_press(egui::Key::Escape);
    wait(&mut h, "the cancel", |app| !app.is_running());
    let app = h.state();
    let item = app
        .history
        .items
        .last()
        .expect("the partial result is in the history");
    assert!(item.partial);
    let decided = item.canvas.cells.iter().filter(|c| c.is_some()).count();
    assert!((3..64).contains(&decided), "decided {decided} of 64 tokens");
    let doc = app.doc.as_ref().expect("partial document on the canvas");
    assert_eq!(doc.canvas.cells, item.canvas.cells);
    assert!(
        app.status.message.contains("cancelled"),
        "{}",
        app.status.message
    );
}

#[test]
fn outpaint_one_side_grows_the_canvas_and_keeps_the_original() {
    let mut h = harness();
    generate(&mut h);
    let original = h.state().doc.as_ref().expect("doc").canvas.clone();
    h.state_mut().settings.outpaint_px = 16;
    h.get_by_label("Outpaint right").click();
    wait(&mut h, "the outpaint", |app| {
        app.history.items.len() == 2 && !app.is_running()
    });
    let doc = h.state().doc.as_ref().expect("doc").canvas.clone();
    // 16 px = 4 tokens of the shipped tokenizer's 4 px.
    assert_eq!((doc.rows, doc.cols), (original.rows, original.cols + 4));
    assert_eq!(doc.unknown_count(), 0);
    for r in 0..original.rows {
        for c in 0..original.cols {
            assert_eq!(
                doc.get(r, c),
                original.get(r, c),
                "original cell ({r}, {c}) changed"
            );
        }
    }
}

#[test]
fn a_bad_checkpoint_or_image_shows_an_error_and_the_app_stays_usable() {
    let mut h = harness();
    let tiny = common::tiny();
    let field = common::fixtures().join("../field");
    // Model -> Open model... with a checkpoint holding a NaN (what the menu does once both files
    // are picked).
    h.state_mut().load_models(ModelSpec {
        gpt: Some(field.join("gpt_nan_in_head.pt")),
        vq: Some(tiny.join("tiny_vq.pt")),
        config: Some(tiny.join("manifest.json")),
        ..model_args()
    });
    wait(&mut h, "the load error", |app| !app.errors.is_empty());
    let err = h.state().errors.last().cloned().expect("an error");
    assert!(err.contains("head.weight"), "{err}");
    h.get_by_label(&err);
    assert!(
        h.state().status.message.contains("still using"),
        "{}",
        h.state().status.message
    );

    // An image file that is not an image, dropped onto the window.
    let dir = common::temp_dir("studio-bad-image");
    let bad = dir.join("holiday.png");
    std::fs::write(&bad, "not a picture").expect("write");
    drop_file(&mut h, bad);
    wait(&mut h, "the image error", |app| app.errors.len() >= 2);
    let err = h.state().errors.last().cloned().expect("an error");
    assert!(err.contains("not an image"), "{err}");
    h.get_by_label(&err);

    // Still usable: the previous model generates.
    generate(&mut h);
    let app = h.state();
    assert_eq!(app.history.items.len(), 1);
    assert!(!app.history.items[0].partial);
}

/// A file dropped onto the window, as the windowing integration hands it to egui.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// One brush stroke across the canvas, from 20%/30% to 70%/60% of its size.
fn stroke(h: &mut Harness<'static, StudioApp>) {
    let rect = h.state().canvas_screen_rect().expect("canvas");
    let (a, b) = (
        rect.lerp_inside(egui::vec2(0.2, 0.3)),
        rect.lerp_inside(egui::vec2(0.7, 0.6)),
    );
    let points: Vec<egui::Pos2> = (0..=10).map(|t| a + (b - a) * (t as f32 / 10.0)).collect();
    drag(h, &points);
}

/// Drops a file onto the window, as the windowing integration hands it to egui.
fn drop_file(h: &mut Harness<'static, StudioApp>, path: std::path::PathBuf) {
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(path)));
}

#[test]
fn a_large_photo_opens_at_the_working_size_with_a_notice_and_inpaints() {
    let mut h = harness();
    drop_file(
        &mut h,
        common::fixtures().join("../field/photo_1000x700.jpg"),
    );
    wait(&mut h, "the photo", |app| app.doc.is_some());
    let notice = h.state().errors.last().cloned().expect("a notice");
    assert!(notice.contains("scaled down to 128x90"), "{notice}");
    h.get_by_label(&notice);
    let doc = h.state().doc.as_ref().expect("doc").canvas.clone();
    // 128x90 px in 4 px tokens, the last row padded.
    assert_eq!((doc.rows, doc.cols), (23, 32));
    stroke(&mut h);
    assert!(!h.state().mask.is_empty(), "the stroke painted nothing");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::I);
    wait(&mut h, "the inpainting", |app| {
        app.history.items.len() == 1 && !app.is_running()
    });
    let after = h.state().doc.as_ref().expect("doc").canvas.clone();
    assert_eq!((after.rows, after.cols), (23, 32));
    assert_eq!(after.unknown_count(), 0);
    assert_ne!(after.cells, doc.cells, "nothing was inpainted");
    // Saved at the user's size, as the CLI writes it: the padding is not the image.
    let doc = h.state().doc.clone().expect("doc");
    assert_eq!(doc.size, [128, 90]);
    let path = common::temp_dir("studio-size").join("inpainted.png");
    h.state().save_png(&path, &doc).expect("save");
    let saved = image::open(&path).expect("png");
    assert_eq!((saved.width(), saved.height()), (128, 90));
    let meta = arpg_core::document::read_metadata(&std::fs::read(&path).expect("read"))
        .expect("metadata")
        .expect("an arpg chunk");
    assert_eq!(meta.size, Some([128, 90]));
    assert_eq!(meta.grid, [23, 32]);
}

/// A fork continues the stopped generation's class, whatever the picker shows when Fork is
/// pressed: its PNG regenerates with `arpg generate --from`.
#[test]
fn a_fork_records_the_class_it_continues_and_regenerates_from_its_png() {
    let mut h = harness();
    h.get_by_label("3: stripes").click();
    {
        let app = h.state_mut();
        app.settings.settings.steps = 64;
        app.settings.step_delay_ms = 40;
    }
    h.get_by_label("Generate").click();
    wait(&mut h, "a few steps", |app| {
        app.status.step.is_some_and(|(k, _)| k >= 3)
    });
    h.key_press(egui::Key::Escape);
    wait(&mut h, "the cancel", |app| !app.is_running());
    // The user picks another class, then forks the stopped generation.
    h.get_by_label("5: plaid").click();
    h.step();
    assert_eq!(h.state().class, 5);
    h.state_mut().settings.step_delay_ms = 0;
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::F);
    wait(&mut h, "the fork", |app| {
        app.history.items.len() == 2 && !app.is_running()
    });
    let doc = h.state().doc.clone().expect("the fork's document");
    assert_eq!(doc.class, Some(3), "the fork continues class 3");
    assert_eq!(doc.canvas.unknown_count(), 0);
    let dir = common::temp_dir("studio-fork");
    let path = dir.join("fork.png");
    h.state().save_png(&path, &doc).expect("save");
    let again = dir.join("again.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arpg"))
        .args(["generate", "--from"])
        .arg(&path)
        .arg("--out")
        .arg(&again)
        .arg("--quiet")
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &std::path::Path| {
        arpg_core::document::read_metadata(&std::fs::read(p).expect("read"))
            .expect("metadata")
            .expect("an arpg chunk")
    };
    let (fork, regenerated) = (read(&path), read(&again));
    assert_eq!(fork.class, Some(3));
    assert_eq!(
        regenerated.tokens, fork.tokens,
        "the fork's PNG regenerates"
    );
}

/// An app batch: each candidate records the seed it was made with (image_seed of the panel's
/// seed, as in the CLI), its PNG regenerates it from its metadata alone, the seed field then
/// shows the next run's seed, and opening the PNG restores its settings.
#[test]
fn every_app_batch_image_regenerates_from_its_metadata_and_reopens_with_its_settings() {
    use arpg_core::{document, provenance, sampler};
    let mut h = harness();
    h.state_mut().settings.batch = 2;
    h.state_mut().settings.settings.seed = 42;
    h.get_by_label("Generate").click();
    wait(&mut h, "the batch", |app| {
        app.history.items.len() == 2 && !app.is_running()
    });
    let next = h.state().settings.settings.seed;
    assert_ne!(next, 42, "the seed field shows the next run's seed");
    let dir = common::temp_dir("studio-batch-regen");
    let arpg = shipped_on_cpu();
    for i in 0..2 {
        let item = &h.state().history.items[i];
        assert_eq!(item.settings.seed, sampler::image_seed(42, i as u64));
        assert_eq!(
            item.provenance.batch.map(|b| (b.seed, b.index)),
            Some((42, i))
        );
        let doc = arpg_app::studio::app::Document {
            canvas: item.canvas.clone(),
            rgb: item.rgb.clone(),
            size: item.size,
            class: item.class,
            settings: Some(item.settings.clone()),
            provenance: Some(item.provenance.clone()),
        };
        let path = dir.join(format!("c{i}.png"));
        h.state().save_png(&path, &doc).expect("save");
        let meta = document::read_metadata(&std::fs::read(&path).expect("read"))
            .expect("metadata")
            .expect("an arpg chunk");
        let settings = meta.settings.expect("settings");
        let prov = meta.provenance.expect("provenance");
        let again = provenance::regenerate(&arpg.model, meta.class, &settings, &prov)
            .expect("regenerate")
            .run()
            .expect("run");
        assert_eq!(again[0], meta.tokens, "candidate {i}");
    }
    // Reopening candidate 1 makes its settings the next run's.
    drop_file(&mut h, dir.join("c1.png"));
    wait(&mut h, "the reopened image", |app| {
        app.settings.settings.seed == sampler::image_seed(42, 1)
    });
    assert!(
        h.state().status.message.contains("settings are restored"),
        "{}",
        h.state().status.message
    );
}

/// With "Keep full size on open", a large photo stays at full size and Inpaint works by region:
/// the document keeps its size, and every pixel outside the painted mask keeps its value.
#[test]
fn a_full_size_photo_is_inpainted_by_region_and_keeps_every_unmasked_pixel() {
    let mut h = harness();
    h.state_mut().keep_full_size = true;
    drop_file(
        &mut h,
        common::fixtures().join("../field/photo_1000x700.jpg"),
    );
    wait(&mut h, "the photo", |app| app.doc.is_some());
    let before = h.state().doc.clone().expect("doc");
    // 1000x700 px in 4 px tokens.
    assert_eq!((before.canvas.rows, before.canvas.cols), (175, 250));
    stroke(&mut h);
    let mask = h.state().mask.pixels.clone();
    assert!(mask.iter().any(|&m| m > 127), "the stroke painted nothing");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::I);
    wait(&mut h, "the region inpainting", |app| {
        app.history.items.len() == 1 && !app.is_running()
    });
    let app = h.state();
    assert_eq!(app.history.items[0].label, "Inpaint region");
    let after = app.doc.clone().expect("doc");
    assert_eq!((after.canvas.rows, after.canvas.cols), (175, 250));
    assert_eq!(after.rgb.len(), before.rgb.len());
    let mut changed = 0;
    for (i, &m) in mask.iter().enumerate() {
        let (a, b) = (&before.rgb[i * 3..i * 3 + 3], &after.rgb[i * 3..i * 3 + 3]);
        if m == 0 {
            assert_eq!(a, b, "pixel {i} outside the mask changed");
        } else if a != b {
            changed += 1;
        }
    }
    assert!(changed > 100, "only {changed} masked pixels changed");
}

/// Model → Official models: Download fetches the checkpoint and the tokenizer from the hub (a
/// loopback stand-in here) with their state in the menu, then loads them; a file that is not a
/// checkpoint shows its error and the shipped model stays in use.
#[test]
fn the_model_menu_downloads_an_official_model_and_tries_to_load_it() {
    let server = hub_server::Server::start(&[
        ("hp-l33/ARPG/arpg_300m.pt", hub_server::payload(150_000, 3)),
        (
            "FoundationVision/LlamaGen/vq_ds16_c2i.pt",
            hub_server::payload(90_000, 4),
        ),
    ]);
    let home = common::temp_dir("studio-hub");
    std::env::set_var("HF_ENDPOINT", &server.endpoint);
    std::env::set_var("HF_HOME", &home);
    let mut h = harness();
    h.state_mut().downloads.refresh();
    assert_eq!(
        h.state().downloads.status("arpg-l"),
        arpg_app::studio::downloads::Status::NotDownloaded
    );
    h.get_by_label("Model").click();
    h.run();
    h.get_by_label_contains("ARPG-L (320M) · not downloaded");
    h.get_all_by_label("Download")
        .next()
        .expect("a Download button")
        .click();
    wait(&mut h, "the downloads and the load attempt", |app| {
        !app.errors.is_empty() && app.downloads.ready("vq-16").is_some()
    });
    let path = h.state().downloads.ready("arpg-l").expect("downloaded");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        server.bytes("arpg_300m.pt")
    );
    assert!(path.starts_with(&home));
    let err = h.state().errors.last().cloned().expect("the load error");
    assert!(err.contains("arpg_300m.pt"), "{err}");
    let app = h.state();
    assert_eq!(
        app.model.as_ref().map(|m| m.name.as_str()),
        Some("shipped model")
    );
}

#[test]
fn confidence_and_order_maps_toggle_and_reroll_changes_only_the_least_confident_cells() {
    use arpg_app::studio::canvas::cell_map::Overlay;
    use arpg_app::studio::commands::UiCommand;
    let mut h = harness();
    generate(&mut h);
    let rect = h.state().canvas_screen_rect().expect("canvas drawn");
    let plain = h.render().expect("render");
    // Every decided cell has a probability and a step.
    let map = h.state().cell_map.clone();
    let doc = h.state().doc.clone().expect("doc");
    assert_eq!((map.rows, map.cols), (doc.canvas.rows, doc.canvas.cols));
    assert!(map
        .cells
        .iter()
        .all(|c| c.is_some_and(|r| (0.0..=1.0).contains(&r.prob))));
    let steps: std::collections::BTreeSet<usize> =
        map.cells.iter().flatten().map(|r| r.step).collect();
    assert!(steps.len() > 1, "every cell decided at one step: {steps:?}");

    h.state_mut().execute(UiCommand::ToggleConfidence);
    h.step();
    h.step();
    assert_eq!(h.state().tools.overlay, Overlay::Confidence);
    let confidence = h.render().expect("render");
    let d = region_diff(&plain, &confidence, rect);
    assert!(d > 10.0, "the confidence map does not show (diff {d})");
    h.state_mut().execute(UiCommand::ToggleOrderMap);
    h.step();
    h.step();
    assert_eq!(h.state().tools.overlay, Overlay::Order);
    let order = h.render().expect("render");
    let d = region_diff(&confidence, &order, rect);
    assert!(
        d > 5.0,
        "the order map looks like the confidence map (diff {d})"
    );
    h.state_mut().execute(UiCommand::ToggleOrderMap);
    h.step();
    h.step();
    assert_eq!(h.state().tools.overlay, Overlay::None);
    let back = h.render().expect("render");
    let d = region_diff(&plain, &back, rect);
    assert!(d < 1.0, "the image did not come back (diff {d})");

    // Re-roll the least confident 10%: every other token stays.
    let chosen = map.least_confident(0.1);
    assert!(!chosen.is_empty());
    let before = h.state().history.items.len();
    h.state_mut().execute(UiCommand::RerollLeastConfident);
    wait(&mut h, "the re-roll", |app| {
        app.history.items.len() > before && !app.is_running()
    });
    let after = h.state().doc.clone().expect("doc").canvas;
    assert_eq!((after.rows, after.cols), (doc.canvas.rows, doc.canvas.cols));
    assert_eq!(after.unknown_count(), 0);
    for r in 0..after.rows {
        for c in 0..after.cols {
            if !chosen.contains(&(r, c)) {
                assert_eq!(
                    after.get(r, c),
                    doc.canvas.get(r, c),
                    "cell ({r}, {c}) changed"
                );
            }
        }
    }
    // The re-rolled cells have new records; the others keep theirs.
    let map2 = h.state().cell_map.clone();
    for (i, (a, b)) in map.cells.iter().zip(&map2.cells).enumerate() {
        let cell = (i / map.cols, i % map.cols);
        if !chosen.contains(&cell) {
            assert_eq!(a, b, "record of {cell:?} changed");
        }
    }
    // Listed with its shortcut by F1.
    assert!(UiCommand::ALL.contains(&UiCommand::RerollLeastConfident));
    assert!(UiCommand::RerollLeastConfident.shortcut().is_some());
}

/// A primary-button drag through `points` (screen positions), one frame per point.
fn drag(h: &mut Harness<'static, StudioApp>, points: &[egui::Pos2]) {
    let (first, last) = (points[0], points[points.len() - 1]);
    h.hover_at(first);
    h.step();
    h.event(egui::Event::PointerButton {
        pos: first,
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: egui::Modifiers::NONE,
    });
    h.step();
    for &p in &points[1..] {
        h.hover_at(p);
        h.step();
    }
    h.event(egui::Event::PointerButton {
        pos: last,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    h.step();
    h.step();
}

/// A click (press and release without moving) at `pos`.
fn click_at(h: &mut Harness<'static, StudioApp>, pos: egui::Pos2) {
    h.hover_at(pos);
    h.step();
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::NONE,
        });
        h.step();
    }
    h.step();
}

/// The screen rectangle of token cell `(r, c)` of the document on the canvas.
fn cell_screen_rect(h: &Harness<'static, StudioApp>, r: usize, c: usize) -> egui::Rect {
    let app = h.state();
    let rect = app.canvas_screen_rect().expect("canvas");
    let doc = app.doc.as_ref().expect("doc");
    let (w, hgt) = (
        rect.width() / doc.canvas.cols as f32,
        rect.height() / doc.canvas.rows as f32,
    );
    egui::Rect::from_min_size(
        rect.min + egui::vec2(c as f32 * w, r as f32 * hgt),
        egui::vec2(w, hgt),
    )
}

#[test]
fn the_cell_picker_rerolls_exactly_the_clicked_cells() {
    use arpg_app::studio::commands::UiCommand;
    use arpg_app::studio::ui::tools_panel::Tool;
    let mut h = harness();
    generate(&mut h);
    let doc = h.state().doc.clone().expect("doc");
    let map = h.state().cell_map.clone();
    h.key_press(egui::Key::K);
    h.step();
    assert_eq!(h.state().tools.tool, Tool::Cells);
    let g = doc.canvas.cols;
    let picked = [(1usize, 2usize), (g - 2, g - 3)];
    for &(r, c) in &picked {
        let at = cell_screen_rect(&h, r, c).center();
        click_at(&mut h, at);
    }
    // Each click masked its whole cell and nothing else.
    let app = h.state();
    let p = app.model.as_ref().expect("model").patch;
    let w = app.mask.width;
    for (i, &m) in app.mask.pixels.iter().enumerate() {
        let cell = ((i / w) / p, (i % w) / p);
        let expect = if picked.contains(&cell) { 255 } else { 0 };
        assert_eq!(m, expect, "mask pixel {i} in cell {cell:?}");
    }
    let both = Some([1, 2, g - 1, g - 2]);
    assert_eq!(app.regenerate_box, both);
    // A second click unmasks a picked cell; undo brings it back.
    let at = cell_screen_rect(&h, g - 2, g - 3).center();
    click_at(&mut h, at);
    assert_eq!(h.state().regenerate_box, Some([1, 2, 2, 3]));
    h.state_mut().execute(UiCommand::Undo);
    h.step();
    h.step();
    assert_eq!(h.state().regenerate_box, both);

    let before = h.state().history.items.len();
    let shown = h.render().expect("render");
    h.key_press_modifiers(egui::Modifiers::SHIFT, egui::Key::K);
    wait(&mut h, "the re-roll", |app| {
        app.history.items.len() > before && !app.is_running()
    });
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    assert_eq!(
        h.state().history.items.last().expect("item").label,
        "Re-roll cells"
    );
    let after = h.state().doc.clone().expect("doc").canvas;
    let map2 = h.state().cell_map.clone();
    for r in 0..after.rows {
        for c in 0..after.cols {
            if picked.contains(&(r, c)) {
                // Drawn again with the rest as context: a new record.
                let (a, b) = (map.get(r, c), map2.get(r, c));
                assert!(b.is_some() && a != b, "cell ({r}, {c}) was not drawn again");
            } else {
                assert_eq!(after.get(r, c), doc.canvas.get(r, c), "cell ({r}, {c})");
            }
        }
    }
    // On the canvas, every other cell's pixels are as they were.
    let rerolled = h.render().expect("render");
    for r in 0..after.rows {
        for c in 0..after.cols {
            if !picked.contains(&(r, c)) {
                let cell = cell_screen_rect(&h, r, c).shrink(2.0);
                let d = region_diff(&shown, &rerolled, cell);
                assert!(d < 1.0, "cell ({r}, {c}) changed on the canvas (diff {d})");
            }
        }
    }
    assert!(UiCommand::RerollMasked.shortcut().is_some());
    assert!(UiCommand::CellPicker.shortcut().is_some());
}

#[test]
fn the_priority_brush_makes_painted_cells_decide_first() {
    use arpg_app::studio::commands::UiCommand;
    use arpg_app::studio::ui::tools_panel::Tool;
    let mut h = harness();
    generate(&mut h);
    let rect = h.state().canvas_screen_rect().expect("canvas");
    let plain = h.render().expect("render");
    h.key_press(egui::Key::P);
    h.step();
    assert_eq!(h.state().tools.tool, Tool::Priority);
    h.state_mut().tools.radius = 4.0;
    // A stroke along the top quarter: painted cells turn orange.
    let (a, b) = (
        rect.lerp_inside(egui::vec2(0.1, 0.2)),
        rect.lerp_inside(egui::vec2(0.9, 0.2)),
    );
    let points: Vec<egui::Pos2> = (0..=12).map(|t| a + (b - a) * (t as f32 / 12.0)).collect();
    drag(&mut h, &points);
    let levels = h.state().priority.levels.clone();
    let painted: Vec<usize> = (0..levels.len()).filter(|&i| levels[i] > 0).collect();
    assert!(
        painted.len() >= 8 && painted.len() < levels.len() / 2,
        "{} cells painted",
        painted.len()
    );
    let shown = h.render().expect("render");
    let d = region_diff(&plain, &shown, rect);
    assert!(d > 1.0, "the painted priorities do not show (diff {d})");

    // The next generation decides every painted cell before any other (without the
    // model's revisits, which draw some cells again at later steps).
    h.state_mut().settings.settings.settle = 0;
    h.state_mut().settings.settings.polish = 0;
    let before = h.state().history.items.len();
    h.state_mut().execute(UiCommand::Generate);
    wait(&mut h, "the generation", |app| {
        app.history.items.len() > before && !app.is_running()
    });
    let map = h.state().cell_map.clone();
    let step = |i: usize| map.cells[i].expect("recorded").step;
    let last_painted = painted.iter().map(|&i| step(i)).max().expect("painted");
    let first_other = (0..levels.len())
        .filter(|i| !painted.contains(i))
        .map(step)
        .min()
        .expect("others");
    assert!(
        last_painted <= first_other,
        "painted cells decided until step {last_painted}, others from step {first_other}"
    );
    let item = h.state().history.items.last().expect("item");
    assert_eq!(item.provenance.priority.as_ref(), Some(&levels));
    // Clearing it gives the chosen order back.
    h.state_mut().execute(UiCommand::ClearPriority);
    assert!(h.state().priority.is_empty());
}

#[test]
fn the_replay_timeline_shows_each_steps_tokens() {
    use arpg_app::studio::commands::UiCommand;
    let mut h = harness();
    generate(&mut h);
    let plain = h.render().expect("render");
    let map = h.state().cell_map.clone();
    let last = map.last_step().expect("steps recorded");
    assert!(last >= 4);
    let k = last / 2;
    // Step back with the keyboard to step k.
    while h.state().tools.replay != Some(k) {
        h.key_press(egui::Key::Comma);
        h.step();
    }
    h.step();
    let shown = h.render().expect("render");
    let (mut later, mut earlier) = (Vec::new(), Vec::new());
    for r in 0..map.rows {
        for c in 0..map.cols {
            let rec = map.get(r, c).expect("recorded");
            let d = region_diff(&plain, &shown, cell_screen_rect(&h, r, c).shrink(2.0));
            if rec.step > k {
                later.push(d);
            } else if rec.step < k {
                earlier.push(d);
            }
        }
    }
    assert!(!later.is_empty() && !earlier.is_empty());
    // Cells decided after step k are veiled as undecided; those before are the image.
    let min_later = later.iter().copied().fold(f64::MAX, f64::min);
    let max_earlier = earlier.iter().copied().fold(0.0, f64::max);
    assert!(
        min_later > 5.0,
        "a later cell is shown decided (diff {min_later})"
    );
    assert!(
        max_earlier < 1.0,
        "an earlier cell changed (diff {max_earlier})"
    );
    // Stepping forward past the last step shows the result again.
    for _ in 0..=last {
        h.state_mut().execute(UiCommand::ReplayForward);
    }
    h.step();
    h.step();
    assert_eq!(h.state().tools.replay, None);
    let back = h.render().expect("render");
    let rect = h.state().canvas_screen_rect().expect("canvas");
    let d = region_diff(&plain, &back, rect);
    assert!(d < 1.0, "the result did not come back (diff {d})");
}

#[test]
fn rectangle_and_lasso_mask_what_they_enclose() {
    use arpg_app::studio::commands::UiCommand;
    use arpg_app::studio::ui::tools_panel::Tool;
    let mut h = harness();
    generate(&mut h);
    let rect = h.state().canvas_screen_rect().expect("canvas");
    let plain = h.render().expect("render");
    h.key_press(egui::Key::M);
    h.step();
    assert_eq!(h.state().tools.tool, Tool::Rectangle);
    let (a, b) = (
        rect.lerp_inside(egui::vec2(0.25, 0.25)),
        rect.lerp_inside(egui::vec2(0.5, 0.75)),
    );
    let points: Vec<egui::Pos2> = (0..=8).map(|t| a + (b - a) * (t as f32 / 8.0)).collect();
    drag(&mut h, &points);
    let app = h.state();
    let (w, hh) = (app.mask.width, app.mask.height);
    let at = |fx: f32, fy: f32| {
        app.mask.pixels[(fy * hh as f32) as usize * w + (fx * w as f32) as usize]
    };
    assert_eq!(at(0.375, 0.5), 255, "inside the rectangle");
    for (fx, fy) in [(0.2, 0.5), (0.55, 0.5), (0.375, 0.2), (0.375, 0.8)] {
        assert_eq!(at(fx, fy), 0, "outside the rectangle at {fx}, {fy}");
    }
    // The box of cells the next inpaint regenerates: the rectangle's cells.
    let g = app.doc.as_ref().expect("doc").canvas.cols;
    let [r0, c0, r1, c1] = app.regenerate_box.expect("a box");
    assert!(r0 <= g / 4 && r1 >= 3 * g / 4 && c0 <= g / 4 && c1 >= g / 2 && c1 <= g / 2 + 2);
    let boxed = h.render().expect("render");
    assert!(
        region_diff(&plain, &boxed, rect) > 1.0,
        "the mask does not show"
    );
    // Dilating the mask by one cell grows the box with it, without another stroke.
    let dilate = h.state().settings.mask.dilate;
    h.state_mut().settings.mask.dilate = dilate + 1;
    h.step();
    h.step();
    let grown = h.state().regenerate_box.expect("a box");
    assert_eq!(
        grown,
        [
            r0.saturating_sub(1),
            c0.saturating_sub(1),
            (r1 + 1).min(g),
            (c1 + 1).min(g)
        ]
    );
    h.state_mut().settings.mask.dilate = dilate;
    h.state_mut().execute(UiCommand::Undo);
    h.step();
    assert!(h.state().mask.is_empty(), "the rectangle is one undo step");
    h.step();
    assert_eq!(h.state().regenerate_box, None);

    // A lasso: a triangle on the right half.
    h.key_press(egui::Key::L);
    h.step();
    assert_eq!(h.state().tools.tool, Tool::Lasso);
    let corners = [
        rect.lerp_inside(egui::vec2(0.6, 0.2)),
        rect.lerp_inside(egui::vec2(0.9, 0.8)),
        rect.lerp_inside(egui::vec2(0.6, 0.8)),
    ];
    let mut path = Vec::new();
    for i in 0..3 {
        let (p, q) = (corners[i], corners[(i + 1) % 3]);
        path.extend((0..6).map(|t| p + (q - p) * (t as f32 / 6.0)));
    }
    drag(&mut h, &path);
    let app = h.state();
    let at = |fx: f32, fy: f32| {
        app.mask.pixels[(fy * hh as f32) as usize * w + (fx * w as f32) as usize]
    };
    assert_eq!(at(0.65, 0.7), 255, "inside the lasso");
    assert_eq!(at(0.85, 0.3), 0, "beside the lasso's slanted side");
    assert_eq!(at(0.3, 0.5), 0, "left half");

    // Hovering an Outpaint button outlines what it adds, beside the canvas.
    let plain = h.render().expect("render");
    h.get_by_label("Outpaint right").hover();
    h.step();
    h.step();
    let cells = h.state().settings.outpaint_px.div_ceil(w / g).max(1);
    assert_eq!(h.state().outpaint_cells(), Some([0, cells, 0, 0]));
    let hovered = h.render().expect("render");
    let beside = egui::Rect::from_min_max(
        egui::pos2(rect.right() + 4.0, rect.top() - 20.0),
        egui::pos2(rect.right() + rect.width(), rect.bottom() + 4.0),
    );
    assert!(
        region_diff(&plain, &hovered, beside) > 0.05,
        "the outpaint outline does not show"
    );
    for cmd in [UiCommand::RectangleMask, UiCommand::LassoMask] {
        assert!(UiCommand::ALL.contains(&cmd) && cmd.shortcut().is_some());
    }
}

#[test]
fn pause_erase_and_resume_keeps_every_unerased_token() {
    use arpg_app::studio::commands::UiCommand;
    let mut h = harness();
    // Slow motion, and no revisits: the kept tokens are compared one by one. A batch of two:
    // pausing the first drops the second, rather than leaving it queued behind the pause.
    h.state_mut().settings.batch = 2;
    h.state_mut().settings.step_delay_ms = 150;
    h.state_mut().settings.settings.settle = 0;
    h.state_mut().settings.settings.polish = 0;
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    wait(&mut h, "a few steps", |app| {
        app.status.step.is_some_and(|(k, _)| k >= 3)
    });
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::P);
    wait(&mut h, "the pause", |app| !app.is_running());
    assert!(h.state().paused.is_some(), "{:?}", h.state().errors);
    let paused = h.state().doc.clone().expect("doc").canvas;
    let decided: Vec<usize> = (0..paused.cells.len())
        .filter(|&i| paused.cells[i].is_some())
        .collect();
    assert!(decided.len() >= 2 && paused.unknown_count() > 0);
    let paused_px = h.render().expect("render");
    // Erase two decided cells with the cell picker.
    let g = paused.cols;
    let erased = [decided[0], decided[decided.len() - 1]];
    h.key_press(egui::Key::K);
    h.step();
    for &i in &erased {
        let at = cell_screen_rect(&h, i / g, i % g).center();
        click_at(&mut h, at);
    }
    let before = h.state().history.items.len();
    h.state_mut().settings.step_delay_ms = 0;
    h.state_mut().execute(UiCommand::Resume);
    wait(&mut h, "the resumed run", |app| {
        app.history.items.len() > before && !app.is_running()
    });
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    let app = h.state();
    let done = app.doc.as_ref().expect("doc");
    assert_eq!(done.canvas.unknown_count(), 0, "the resumed run finished");
    for &i in &decided {
        if !erased.contains(&i) {
            assert_eq!(
                done.canvas.cells[i], paused.cells[i],
                "kept cell {i} changed"
            );
        }
    }
    // The erased cells were drawn by the resumed run, first.
    let map = &app.cell_map;
    for &i in &erased {
        let rec = map.cells[i].expect("erased cell drawn again");
        assert_eq!(rec.step, 0, "erased cell {i} was not drawn first");
    }
    let item = app.history.items.last().expect("item");
    assert_eq!(item.provenance.task, arpg_core::provenance::Task::Resume);
    // On the canvas, the cells undecided at the pause were dark and are now drawn.
    let resumed_px = h.render().expect("render");
    let undecided = (0..paused.cells.len())
        .find(|&i| paused.cells[i].is_none())
        .expect("an undecided cell");
    let cell = cell_screen_rect(&h, undecided / g, undecided % g).shrink(2.0);
    let d = region_diff(&paused_px, &resumed_px, cell);
    assert!(
        d > 5.0,
        "the undecided cell looks the same after resuming (diff {d})"
    );
    let app = h.state();
    assert!(app.mask.is_empty(), "the erase mask was used up");
    assert!(UiCommand::Pause.shortcut().is_some() && UiCommand::Resume.shortcut().is_some());
}

#[test]
fn the_decoded_live_preview_paints_decodes_and_never_changes_the_tokens() {
    use arpg_app::studio::ui::tools_panel::LivePreview;
    let mut h = harness();
    // The shipped decoder is fast: Auto decodes live.
    wait(&mut h, "the decode timing", |app| {
        app.model.as_ref().is_some_and(|m| m.decode_ms.is_some())
    });
    let decode_ms = h
        .state()
        .model
        .as_ref()
        .and_then(|m| m.decode_ms)
        .expect("timed");
    assert!(decode_ms > 0.0);
    assert_eq!(
        h.state().live_decode(),
        decode_ms <= arpg_app::studio::ui::tools_panel::AUTO_DECODE_MS
    );
    let mut tokens = Vec::new();
    for mode in [LivePreview::Tiles, LivePreview::Decoded] {
        let app = h.state_mut();
        app.tools.live_preview = mode;
        app.settings.lock_seed = true;
        app.settings.settings.seed = 4242;
        app.settings.step_delay_ms = 40;
        let shown = app.previews_shown;
        let before = app.history.items.len();
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
        wait(&mut h, "the generation", |app| {
            app.history.items.len() > before && !app.is_running()
        });
        let app = h.state();
        assert!(app.errors.is_empty(), "{:?}", app.errors);
        let painted = app.previews_shown - shown;
        match mode {
            LivePreview::Tiles => assert_eq!(painted, 0, "tiles only, no decode"),
            _ => assert!(painted > 0, "no live decode was painted"),
        }
        tokens.push(app.doc.as_ref().expect("doc").canvas.clone());
    }
    assert_eq!(tokens[0], tokens[1], "the preview changed the sampling");
}

/// An image with transparent pixels opens over white with a notice, and its wholly transparent
/// area becomes the mask: what Inpaint fills, as in the CLI.
#[test]
fn a_transparent_area_is_the_mask_when_an_image_opens() {
    let mut h = harness();
    let mut img = image::open(common::fixtures().join("../field/photo_32x32.png"))
        .expect("photo")
        .to_rgba8();
    for (x, _, p) in img.enumerate_pixels_mut() {
        if x < 8 {
            *p = image::Rgba([255, 0, 0, 0]);
        }
    }
    let path = common::temp_dir("studio-transparent").join("cut-out.png");
    img.save(&path).expect("save");
    drop_file(&mut h, path);
    wait(&mut h, "the image", |app| app.doc.is_some());
    let notice = h.state().errors.last().cloned().expect("a notice");
    assert!(notice.contains("transparent"), "{notice}");
    let app = h.state();
    let doc = app.doc.as_ref().expect("doc");
    assert_eq!(doc.size, [32, 32]);
    for y in 0..32 {
        for x in 0..32 {
            let masked = app.mask.pixels[y * 32 + x] > 127;
            assert_eq!(masked, x < 8, "mask at ({x}, {y})");
            if x < 8 {
                let i = (y * 32 + x) * 3;
                assert_eq!(&doc.rgb[i..i + 3], &[255, 255, 255], "the hidden red shows");
            }
        }
    }
}

/// Another tokenizer loaded while an image is open: the image is kept as pixels and encoded
/// again with it (its old tokens are the previous tokenizer's codes), never decoded by it.
#[test]
fn an_open_image_is_encoded_again_when_the_tokenizer_changes() {
    let mut h = harness();
    generate(&mut h);
    let before = h.state().doc.clone().expect("doc");
    let shipped = h.state().model.as_ref().expect("model").tokenizer.clone();
    let tiny = common::tiny();
    h.state_mut().load_models(ModelSpec {
        gpt: Some(tiny.join("tiny_gpt.pt")),
        vq: Some(tiny.join("tiny_vq.pt")),
        config: Some(tiny.join("manifest.json")),
        ..model_args()
    });
    wait(
        &mut h,
        "the new tokenizer and the image encoded again",
        |app| app.model.as_ref().is_some_and(|m| m.tokenizer != shipped) && app.doc.is_some(),
    );
    let app = h.state();
    let notice = app.errors.last().cloned().expect("a notice");
    assert!(notice.contains("tokenizer changed"), "{notice}");
    let doc = app.doc.as_ref().expect("doc");
    assert_eq!(doc.size, before.size, "the image keeps its size");
    // Its tokens are the new tokenizer's encoding of the kept pixels.
    let vq = arpg_core::loader::load_vq(tiny.join("tiny_vq.pt"), None, &candle_core::Device::Cpu)
        .expect("tiny vq");
    let p = vq.config().downsample();
    let (w, h_px) = (doc.canvas.cols * p, doc.canvas.rows * p);
    let [sw, sh] = before.size;
    let padded = arpg_core::pixels::pad_edge(&before.rgb, sw, sh, 3, w, h_px);
    assert_eq!(doc.rgb, padded, "the pixels are kept");
    let tokens = vq
        .encode_rgb8(&padded, w, h_px, arpg_core::vq::Tiling::default())
        .expect("encode");
    assert_eq!(doc.canvas.tokens().expect("all known"), tokens);
}

/// A VQ-16-shaped tokenizer (16384 codes, random weights) with a small transformer: its preview
/// palette takes minutes on a CPU, so it is computed in the background while the app is idle;
/// the model is usable as soon as its weights are in and generates before any palette exists.
#[test]
fn a_vq16_shaped_tokenizer_generates_before_its_palette_exists() {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    let dir = common::temp_dir("studio-vq16");
    let vq_path = dir.join("vq16.safetensors");
    let varmap = VarMap::new();
    arpg_core::VqModel::new(
        &arpg_core::VqConfig::vq_16(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("a VQ-16-shaped tokenizer");
    varmap.save(&vq_path).expect("save vq");
    let cfg = arpg_core::ArpgConfig {
        dim: 64,
        n_layer: 2,
        n_head: 2,
        num_classes: 10,
        multiple_of: 32,
        ..arpg_core::ArpgConfig::arpg_l()
    };
    let gpt_path = dir.join("small.safetensors");
    let varmap = VarMap::new();
    arpg_core::Arpg::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("a small transformer");
    varmap.save(&gpt_path).expect("save gpt");
    std::fs::write(
        dir.join("small.json"),
        serde_json::to_string(&cfg).expect("json"),
    )
    .expect("config");

    let mut h = harness();
    h.state_mut().load_models(ModelSpec {
        gpt: Some(gpt_path),
        vq: Some(vq_path),
        config: None,
        ..model_args()
    });
    wait(&mut h, "the VQ-16-shaped model", |app| {
        app.model.as_ref().is_some_and(|m| m.codebook_size == 16384)
    });
    assert!(
        h.state().status.palette.is_some(),
        "the palette is being computed in the background"
    );
    h.state_mut().settings.settings.steps = 4;
    generate(&mut h);
    let app = h.state();
    let doc = app.doc.as_ref().expect("a generated image");
    assert_eq!((doc.canvas.rows, doc.canvas.cols), (16, 16));
    assert_eq!(doc.canvas.unknown_count(), 0);
    assert_eq!(
        doc.rgb.len(),
        256 * 256 * 3,
        "decoded by the VQ-16-shaped tokenizer"
    );
    assert!(
        app.status.palette.is_some_and(|(done, total)| done < total),
        "the image came before the palette: {:?}",
        app.status.palette
    );
}

/// The tokenizer's decoder on the window's own GPU (lavapipe here): the status bar names it,
/// the live preview writes the decoded partial canvas straight into the canvas texture at every
/// step (nothing read back), and what the texture holds then is the CPU decode of the same
/// partial grid.
#[test]
fn on_the_gpu_the_live_preview_is_the_decoded_canvas_at_every_step() {
    use arpg_app::studio::ui::tools_panel::LivePreview;
    let (mut h, adapter) = on_the_windows_gpu();
    assert!(h.state().model.as_ref().is_some_and(|m| m.gpu_preview));
    // The transformer and the decoder both run there.
    assert_eq!(h.state().status.device, adapter);
    let steps = 4;
    let app = h.state_mut();
    app.tools.live_preview = LivePreview::Decoded;
    app.settings.settings.steps = steps;
    app.settings.settings.settle = 0;
    app.settings.settings.polish = 0;
    // Long enough to read the texture between two previews.
    app.settings.step_delay_ms = 1500;
    let before = app.history.items.len();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    // Painted frames size the canvas texture; the previews write into it.
    let start = Instant::now();
    while h.state().gpu_previews < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no GPU preview; errors: {:?}",
            h.state().errors
        );
        h.step();
        h.render().expect("render");
    }
    let app = h.state();
    let canvas = app.last_gpu_preview.clone().expect("a GPU preview");
    let gpu = app.gpu.clone().expect("the window's GPU");
    let texture = app.gpu_canvas.texture().expect("the canvas texture");
    let got = texture::read_rgba(&gpu, &texture);
    let cpu = arpg_core::Tokenizer::from(
        arpg_core::loader::load_vq(
            arpg_core::shipped::vq_path(),
            None,
            &candle_core::Device::Cpu,
        )
        .expect("shipped tokenizer"),
    );
    let full = canvas.filled_nearest().expect("some cells decided");
    let want = cpu
        .decode_rgb8(&full.tokens().expect("filled"), full.rows, full.cols)
        .expect("cpu decode");
    let p = h.state().model.as_ref().map_or(4, |m| m.patch);
    let w = canvas.cols * p;
    assert_eq!(
        got.len(),
        w * canvas.rows * p * 4,
        "texture of the canvas size"
    );
    let (mut diff, mut n) = (0u64, 0u64);
    for y in 0..canvas.rows * p {
        for x in 0..w {
            if canvas.cells[(y / p) * canvas.cols + x / p].is_some() {
                for k in 0..3 {
                    diff += got[(y * w + x) * 4 + k].abs_diff(want[(y * w + x) * 3 + k]) as u64;
                    n += 1;
                }
            }
        }
    }
    assert!(n > 0);
    let mean = diff as f64 / n as f64;
    assert!(
        mean <= 1.0,
        "the texture differs from the CPU decode by {mean} levels"
    );
    wait(&mut h, "the generation", |app| {
        app.history.items.len() > before && !app.is_running()
    });
    let app = h.state();
    assert!(app.errors.is_empty(), "{:?}", app.errors);
    assert!(
        app.gpu_previews + 1 >= steps,
        "{} GPU previews for {steps} steps",
        app.gpu_previews
    );
}

/// On the window's GPU (lavapipe in CI) the transformer's forwards run there too: the app
/// generates (the tokens the CPU makes again from the image's metadata), inpaints a painted
/// stroke and outpaints a side, with no fault and no fallback.
#[test]
fn on_the_gpu_the_app_generates_inpaints_and_outpaints() {
    use arpg_core::provenance;
    let (mut h, adapter) = on_the_windows_gpu();
    assert_eq!(h.state().status.device, adapter, "transformer and decoder");
    let app = h.state_mut();
    app.settings.settings.steps = 8;
    app.settings.settings.seed = 7;
    app.settings.settings.polish = 1;
    generate(&mut h);
    let item = &h.state().history.items[0];
    let (class, settings, prov, canvas) = (
        item.class,
        item.settings.clone(),
        item.provenance.clone(),
        item.canvas.clone(),
    );
    let arpg = shipped_on_cpu();
    let again = provenance::regenerate(&arpg.model, class, &settings, &prov)
        .expect("regenerate")
        .run()
        .expect("run");
    let tokens = canvas.tokens().expect("a whole canvas");
    let same = again[0].iter().zip(&tokens).filter(|(a, b)| a == b).count();
    assert!(
        same * 100 >= tokens.len() * 99,
        "{same} of {} cells as the CPU makes them",
        tokens.len()
    );

    let original = h.state().doc.as_ref().expect("doc").canvas.clone();
    stroke(&mut h);
    assert!(!h.state().mask.is_empty(), "the stroke painted nothing");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::I);
    wait(&mut h, "the inpainting", |app| {
        app.history.items.len() == 2 && !app.is_running()
    });
    let inpainted = h.state().doc.as_ref().expect("doc").canvas.clone();
    assert_eq!(inpainted.unknown_count(), 0);
    assert_ne!(inpainted.cells, original.cells, "nothing was inpainted");

    h.state_mut().settings.outpaint_px = 16;
    h.get_by_label("Outpaint right").click();
    wait(&mut h, "the outpaint", |app| {
        app.history.items.len() == 3 && !app.is_running()
    });
    let grown = h.state().doc.as_ref().expect("doc").canvas.clone();
    assert_eq!(
        (grown.rows, grown.cols),
        (inpainted.rows, inpainted.cols + 4)
    );
    assert_eq!(grown.unknown_count(), 0);
    for r in 0..inpainted.rows {
        for c in 0..inpainted.cols {
            assert_eq!(
                grown.get(r, c),
                inpainted.get(r, c),
                "cell ({r}, {c}) changed"
            );
        }
    }
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    assert_eq!(h.state().status.device, adapter, "no fallback to the CPU");
}
