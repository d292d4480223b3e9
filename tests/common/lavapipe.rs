//! The software GPU the wgpu tests name (tests that need the engine's `gpu` module include this).

/// The lavapipe adapter's index in `arpg info --devices` (CI installs Mesa's software Vulkan).
pub fn lavapipe() -> usize {
    arpg_core::gpu::adapters()
        .into_iter()
        .find(|a| a.name.contains("llvmpipe") && a.backend == "Vulkan")
        .map(|a| a.index)
        .expect("no lavapipe adapter: install mesa-vulkan-drivers (CI does)")
}
