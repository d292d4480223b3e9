//! Every user action, with its label and shortcut: one registry drives buttons, menus, the
//! shortcut list and the keyboard.

use eframe::egui::{Key, KeyboardShortcut, Modifiers};

/// What the user asked of the history strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryAction {
    Restore(usize),
    Discard(usize),
    Accept,
}

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
    Pause,
    Resume,
    Undo,
    Redo,
    Brush,
    Eraser,
    CellPicker,
    RectangleMask,
    LassoMask,
    PriorityBrush,
    ClearPriority,
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
    ToggleConfidence,
    ToggleOrderMap,
    RerollLeastConfident,
    RerollMasked,
    ReplayBack,
    ReplayForward,
    ZoomToFit,
    ShowShortcuts,
    /// What the history strip asked (restore, discard, accept); no label or shortcut of its own.
    History(HistoryAction),
}

impl UiCommand {
    /// In the order shortcuts are matched: egui ignores extra Shift when matching, so a
    /// shortcut with Shift comes before the same key without it.
    pub const ALL: [UiCommand; 40] = [
        Self::Redo,
        Self::Undo,
        Self::InvertMask,
        Self::Generate,
        Self::Inpaint,
        Self::OutpaintLeft,
        Self::OutpaintRight,
        Self::OutpaintTop,
        Self::OutpaintBottom,
        Self::Expand,
        Self::Cancel,
        Self::Fork,
        Self::Resume,
        Self::Pause,
        Self::RerollLeastConfident,
        Self::RerollMasked,
        Self::ClearPriority,
        Self::BrushMuchSmaller,
        Self::BrushMuchLarger,
        Self::Brush,
        Self::Eraser,
        Self::CellPicker,
        Self::RectangleMask,
        Self::LassoMask,
        Self::PriorityBrush,
        Self::BrushSmaller,
        Self::BrushLarger,
        Self::ClearMask,
        Self::FillMask,
        Self::RandomClass,
        Self::OpenImage,
        Self::SavePng,
        Self::OpenModel,
        Self::ToggleGrid,
        Self::ToggleConfidence,
        Self::ToggleOrderMap,
        Self::ReplayBack,
        Self::ReplayForward,
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
            Self::Pause => "Pause",
            Self::Resume => "Resume (erase masked cells)",
            Self::Undo => "Undo stroke",
            Self::Redo => "Redo stroke",
            Self::Brush => "Brush",
            Self::Eraser => "Eraser",
            Self::CellPicker => "Cell picker",
            Self::RectangleMask => "Rectangle mask",
            Self::LassoMask => "Lasso mask",
            Self::PriorityBrush => "Priority brush",
            Self::ClearPriority => "Clear priority",
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
            Self::ToggleConfidence => "Confidence map",
            Self::ToggleOrderMap => "Generation order map",
            Self::RerollLeastConfident => "Re-roll least confident",
            Self::RerollMasked => "Re-roll masked cells",
            Self::ReplayBack => "Replay: step back",
            Self::ReplayForward => "Replay: step forward",
            Self::ZoomToFit => "Zoom to fit",
            Self::ShowShortcuts => "Keyboard shortcuts",
            Self::History(_) => "History",
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
            Self::Pause => k(Modifiers::COMMAND, Key::P),
            Self::Resume => k(Modifiers::COMMAND | Modifiers::SHIFT, Key::P),
            Self::Undo => k(Modifiers::COMMAND, Key::Z),
            Self::Redo => k(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z),
            Self::Brush => k(none, Key::B),
            Self::Eraser => k(none, Key::E),
            Self::CellPicker => k(none, Key::K),
            Self::RectangleMask => k(none, Key::M),
            Self::LassoMask => k(none, Key::L),
            Self::PriorityBrush => k(none, Key::P),
            Self::ClearPriority => k(Modifiers::SHIFT, Key::P),
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
            Self::ToggleConfidence => k(none, Key::C),
            Self::ToggleOrderMap => k(none, Key::O),
            Self::RerollLeastConfident => k(Modifiers::SHIFT, Key::R),
            Self::RerollMasked => k(Modifiers::SHIFT, Key::K),
            Self::ReplayBack => k(none, Key::Comma),
            Self::ReplayForward => k(none, Key::Period),
            Self::ZoomToFit => k(none, Key::Num0),
            Self::ShowShortcuts => k(none, Key::F1),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_are_unique_and_shift_variants_match_first() {
        let all: Vec<(usize, KeyboardShortcut)> = UiCommand::ALL
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.shortcut().map(|s| (i, s)))
            .collect();
        for &(i, a) in &all {
            for &(j, b) in &all {
                if i == j {
                    continue;
                }
                assert_ne!(a, b, "{:?} and {:?}", UiCommand::ALL[i], UiCommand::ALL[j]);
                // `b` would also fire on `a`'s keys: it must be tried after `a`.
                if a.logical_key == b.logical_key && a.modifiers.matches_logically(b.modifiers) {
                    assert!(
                        i < j,
                        "{:?} is shadowed by {:?}",
                        UiCommand::ALL[i],
                        UiCommand::ALL[j]
                    );
                }
            }
        }
        let distinct: std::collections::HashSet<_> =
            UiCommand::ALL.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(distinct.len(), UiCommand::ALL.len());
    }
}
