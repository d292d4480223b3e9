//! Every user action, with its label and shortcut: one registry drives buttons, menus, the
//! shortcut list and the keyboard.

use eframe::egui::{Key, KeyboardShortcut, Modifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiCommand {
    Generate,
    Inpaint,
    OutpaintLeft,
    OutpaintRight,
    OutpaintTop,
    OutpaintBottom,
    Expand,
    Cancel,
    Fork,
    Undo,
    Redo,
    Brush,
    Eraser,
    BrushSmaller,
    BrushLarger,
    BrushMuchSmaller,
    BrushMuchLarger,
    InvertMask,
    ClearMask,
    FillMask,
    RandomClass,
    OpenImage,
    SavePng,
    OpenModel,
    ToggleGrid,
    ZoomToFit,
    ShowShortcuts,
}

impl UiCommand {
    /// In the order shortcuts are matched (more specific first).
    pub const ALL: [UiCommand; 27] = [
        Self::Redo,
        Self::Undo,
        Self::Generate,
        Self::Inpaint,
        Self::OutpaintLeft,
        Self::OutpaintRight,
        Self::OutpaintTop,
        Self::OutpaintBottom,
        Self::Expand,
        Self::Cancel,
        Self::Fork,
        Self::Brush,
        Self::Eraser,
        Self::BrushMuchSmaller,
        Self::BrushMuchLarger,
        Self::BrushSmaller,
        Self::BrushLarger,
        Self::InvertMask,
        Self::ClearMask,
        Self::FillMask,
        Self::RandomClass,
        Self::OpenImage,
        Self::SavePng,
        Self::OpenModel,
        Self::ToggleGrid,
        Self::ZoomToFit,
        Self::ShowShortcuts,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Generate => "Generate",
            Self::Inpaint => "Inpaint mask",
            Self::OutpaintLeft => "Outpaint left",
            Self::OutpaintRight => "Outpaint right",
            Self::OutpaintTop => "Outpaint top",
            Self::OutpaintBottom => "Outpaint bottom",
            Self::Expand => "Expand resolution",
            Self::Cancel => "Cancel",
            Self::Fork => "Fork with new seed",
            Self::Undo => "Undo stroke",
            Self::Redo => "Redo stroke",
            Self::Brush => "Brush",
            Self::Eraser => "Eraser",
            Self::BrushSmaller => "Smaller brush",
            Self::BrushLarger => "Larger brush",
            Self::BrushMuchSmaller => "Much smaller brush",
            Self::BrushMuchLarger => "Much larger brush",
            Self::InvertMask => "Invert mask",
            Self::ClearMask => "Clear mask",
            Self::FillMask => "Fill mask",
            Self::RandomClass => "Random class",
            Self::OpenImage => "Open image…",
            Self::SavePng => "Save PNG…",
            Self::OpenModel => "Open checkpoints…",
            Self::ToggleGrid => "Token grid",
            Self::ZoomToFit => "Zoom to fit",
            Self::ShowShortcuts => "Keyboard shortcuts",
        }
    }

    pub fn shortcut(self) -> Option<KeyboardShortcut> {
        let k = |m: Modifiers, key: Key| Some(KeyboardShortcut::new(m, key));
        let none = Modifiers::NONE;
        match self {
            Self::Generate => k(Modifiers::COMMAND, Key::Enter),
            Self::Inpaint => k(Modifiers::COMMAND, Key::I),
            Self::Expand => k(Modifiers::COMMAND, Key::E),
            Self::Cancel => k(none, Key::Escape),
            Self::Fork => k(Modifiers::COMMAND, Key::F),
            Self::Undo => k(Modifiers::COMMAND, Key::Z),
            Self::Redo => k(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z),
            Self::Brush => k(none, Key::B),
            Self::Eraser => k(none, Key::E),
            Self::BrushSmaller => k(none, Key::OpenBracket),
            Self::BrushLarger => k(none, Key::CloseBracket),
            Self::BrushMuchSmaller => k(Modifiers::SHIFT, Key::OpenBracket),
            Self::BrushMuchLarger => k(Modifiers::SHIFT, Key::CloseBracket),
            Self::InvertMask => k(Modifiers::COMMAND | Modifiers::SHIFT, Key::I),
            Self::ClearMask => k(none, Key::Delete),
            Self::RandomClass => k(none, Key::R),
            Self::OpenImage => k(Modifiers::COMMAND, Key::O),
            Self::SavePng => k(Modifiers::COMMAND, Key::S),
            Self::ToggleGrid => k(none, Key::G),
            Self::ZoomToFit => k(none, Key::Num0),
            Self::ShowShortcuts => k(none, Key::F1),
            _ => None,
        }
    }
}
