//! `arpg-studio`: the desktop app. With no arguments it opens on the shipped model.

use arpg_app::run::ModelArgs;
use arpg_app::studio::StudioApp;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "arpg-studio",
    version,
    about = "ARPG Studio: paint, generate, inpaint and outpaint with ARPG"
)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_inner_size([1200.0, 800.0])
            .with_title("ARPG Studio"),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    let model = args.model.spec();
    match eframe::run_native(
        "ARPG Studio",
        options,
        Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, model)))),
    ) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: could not open the window: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
