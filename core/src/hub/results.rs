//! The results store: a record per `%px` cell, watched while it runs, and kept (the newest
//! [`KEPT_RESULTS`]) for `%pxresult` once it is done.

use super::{CellEvent, Effect, Hub, KEPT_RESULTS};
use crate::records::{CellRecord, EngineError, TaskState};
use crate::EngineId;

impl Hub {
    pub fn add_cell(&mut self, cell: CellRecord) {
        self.cell_order.push_back(cell.cell_id.clone());
        self.cells.insert(cell.cell_id.clone(), cell);
        self.drop_oldest_results();
    }

    /// Past [`KEPT_RESULTS`] cells, drops the oldest finished ones (a cell still running stays,
    /// however old). `%pxresult` says when a name's result was dropped.
    fn drop_oldest_results(&mut self) {
        let mut index = 0;
        while self.cells.len() > KEPT_RESULTS && index < self.cell_order.len() {
            let id = &self.cell_order[index];
            if self.cells.get(id).is_none_or(CellRecord::is_done) {
                self.cells.remove(id);
                if let Some(cell_id) = self.cell_order.remove(index) {
                    self.effects.push(Effect::Forget { cell_id });
                }
            } else {
                index += 1;
            }
        }
    }

    pub fn cell(&self, cell_id: &str) -> Option<&CellRecord> {
        self.cells.get(cell_id)
    }

    /// Finishes one engine's part of a cell (compile errors, or success after its runs).
    pub fn finish_engine(&mut self, cell_id: &str, engine: EngineId, error: Option<EngineError>) {
        let changed = match self
            .cells
            .get_mut(cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            Some(record) if record.state != TaskState::Done => {
                record.finish(error);
                true
            }
            _ => false,
        };
        if changed {
            self.notify(cell_id, CellEvent::EngineDone { engine });
        }
    }

    /// Every engine of the cell finished.
    pub fn finish_cell(&mut self, cell_id: &str) {
        let engines: Vec<EngineId> = self
            .cells
            .get(cell_id)
            .map(|c| c.engines.keys().copied().collect())
            .unwrap_or_default();
        for engine in engines {
            self.finish_engine(cell_id, engine, None);
        }
        self.notify(cell_id, CellEvent::CellDone);
    }
}
