//! The structs and enums the kernel's context and each engine defined
//! ([`crate::type_definitions`]), kept so that an API call whose types have the same names but
//! other definitions on its engines is refused before anything is sent or decoded.

use crate::px::records::CellRecord;
use rustpx_protocol::EngineId;

use super::PxService;
use crate::cell_text::may_define_items;
use crate::type_definitions::first_difference;

impl PxService {
    /// A plain cell ran without error: its structs and enums are the kernel context's now.
    pub fn note_plain_cell(&mut self, code: &str) {
        if may_define_items(code) {
            self.plain_definitions.note(code);
        }
    }

    /// A `%px` cell finished: its structs and enums are those of each engine it ran on without
    /// error (an engine restarted since is a new incarnation, with none).
    pub(super) fn note_px_cell(&mut self, cell: &CellRecord) {
        if !may_define_items(&cell.code) {
            return;
        }
        let ran: Vec<EngineId> = cell
            .engines
            .values()
            .filter(|record| record.completed.is_some() && record.error.is_none())
            .map(|record| record.engine)
            .collect();
        for engine in self.incarnations(&ran).unwrap_or_default() {
            self.engine_definitions
                .entry(engine)
                .or_default()
                .note(&cell.code);
        }
    }

    /// Refuses a call whose types (`std::any::type_name`s) reach a struct or enum that the
    /// kernel's context and one of `engines` define differently.
    pub(super) fn check_definitions(
        &self,
        what: &str,
        types: &[&str],
        engines: &[EngineId],
    ) -> Result<(), String> {
        for engine in self.incarnations(engines).unwrap_or_default() {
            let Some(theirs) = self.engine_definitions.get(&engine) else {
                continue;
            };
            if let Some(difference) = first_difference(types, &self.plain_definitions, theirs) {
                return Err(format!(
                    "TypeError: {what}: `{}` is defined one way in this kernel and another on engine {}, and a value of one would be read as the other: here `{}`, on engine {} `{}`; define it the same way in a plain cell and a %%px cell",
                    difference.name, engine.0, difference.ours, engine.0, difference.theirs
                ));
            }
        }
        Ok(())
    }
}
