//! Class picker: a searchable list and a random-class button.

use eframe::egui;

use crate::studio::commands::UiCommand;

#[derive(Default)]
pub struct ClassPanel {
    pub search: String,
}

impl ClassPanel {
    /// Returns true when the class changed.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        names: &[String],
        synonyms: &[Vec<String>],
        class: &mut usize,
        commands: &mut Vec<UiCommand>,
    ) -> bool {
        let before = *class;
        ui.heading("Class");
        ui.horizontal(|ui| {
            let l = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut self.search)
                    .hint_text("name, synonym or index")
                    .desired_width(110.0),
            )
            .labelled_by(l.id);
            if ui
                .button("Random")
                .on_hover_text("Pick a random class (R)")
                .clicked()
            {
                commands.push(UiCommand::RandomClass);
            }
        });
        let needle = self.search.to_lowercase();
        egui::ScrollArea::vertical()
            .id_salt("classes")
            .max_height(180.0)
            .show(ui, |ui| {
                for (i, name) in names.iter().enumerate() {
                    let synonym = synonyms
                        .get(i)
                        .is_some_and(|s| s.iter().any(|s| s.to_lowercase().contains(&needle)));
                    if !needle.is_empty()
                        && !name.to_lowercase().contains(&needle)
                        && !synonym
                        && !i.to_string().starts_with(&needle)
                    {
                        continue;
                    }
                    if ui
                        .selectable_label(*class == i, format!("{i}: {name}"))
                        .clicked()
                    {
                        *class = i;
                    }
                }
            });
        *class != before
    }
}
