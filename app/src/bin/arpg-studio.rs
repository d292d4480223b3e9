//! `arpg-studio`: the desktop app. With no arguments it opens on the shipped model.

use arpg_app::commands::ModelArgs;
use arpg_app::studio::StudioApp;
use arpg_core::pair::ModelSpec;
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
    let mut args = Args::parse();
    // Without --device the app chooses: its window's GPU when that is a hardware one.
    let device_given = std::env::args_os().any(|a| {
        a.to_str()
            .is_some_and(|a| a == "--device" || a.starts_with("--device="))
    });
    if !device_given {
        args.model.device = arpg_app::studio::app::AUTO_DEVICE.into();
    }
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_inner_size([1200.0, 800.0])
            .with_maximized(true)
            .with_title("ARPG Studio"),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: wgpu_options(),
        ..Default::default()
    };
    // With no checkpoint given, the last model that loaded (if its files are still there).
    let remember = last_model_path();
    let remembered = remember
        .as_ref()
        .and_then(|p| arpg_core::text::read(p, arpg_core::text::MAX_CONFIG_BYTES).ok())
        .and_then(|t| serde_json::from_str::<arpg_core::pair::ModelSpec>(&t).ok())
        .filter(|s| s.gpt.iter().chain(&s.vq).all(|p| p.exists()));
    let model = match (&args.model.gpt, &args.model.vq, remembered) {
        (None, None, Some(last)) => ModelSpec {
            device: args.model.device.clone(),
            dtype: args.model.dtype.clone(),
            vq_dtype: args.model.vq_dtype.clone(),
            max_side: args.model.max_side,
            ..last
        },
        _ => match arpg_app::hub::resolve_names(args.model.spec()) {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    match eframe::run_native(
        "ARPG Studio",
        options,
        Box::new(move |cc| {
            let mut app = StudioApp::new(cc, model);
            app.remember = remember;
            Ok(Box::new(app))
        }),
    ) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: could not open the window: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// eframe's device, asking for the largest storage buffers the adapter allows: the tokenizer's
/// decoder shares this device, and its tile grows with them (eframe's own limits otherwise).
fn wgpu_options() -> eframe::egui_wgpu::WgpuConfiguration {
    use eframe::egui_wgpu::{wgpu, WgpuConfiguration, WgpuSetup};
    let mut options = WgpuConfiguration::default();
    if let WgpuSetup::CreateNew(create) = &mut options.wgpu_setup {
        let eframe_default = create.device_descriptor.clone();
        create.device_descriptor = std::sync::Arc::new(move |adapter: &wgpu::Adapter| {
            let mut desc = eframe_default(adapter);
            let best = adapter.limits();
            if adapter.get_info().backend != wgpu::Backend::Gl {
                desc.required_limits.max_storage_buffer_binding_size =
                    best.max_storage_buffer_binding_size;
                desc.required_limits.max_buffer_size = best.max_buffer_size;
            }
            desc
        });
    }
    options
}

/// `$XDG_CONFIG_HOME/arpg-studio/last_model.json` (or under `~/.config`).
fn last_model_path() -> Option<std::path::PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))
        .map(|d| d.join("arpg-studio").join("last_model.json"))
}
