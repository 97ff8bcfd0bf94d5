//! The results store: a record per `%px` cell, watched while it runs, and kept (the newest
//! [`KEPT_RESULTS`]) for `%pxresult` once it is done.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};

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

    /// Adds a note of the compiler's to a cell (shown after the engines' outputs).
    pub fn add_note(&mut self, cell_id: &str, text: String) {
        if let Some(cell) = self.cells.get_mut(cell_id) {
            cell.notes.push(text);
        }
    }

    /// The live engines of a cell whose run has gone on for `limit` or longer at `now` and that
    /// were not interrupted yet: what its `--timeout` interrupts. An engine whose run already
    /// replied only waits for the rest of its group, so it is not overdue.
    pub fn overdue(&self, cell_id: &str, limit: TimeDelta, now: DateTime<Utc>) -> Vec<EngineId> {
        let running: HashSet<EngineId> = self
            .runs
            .values()
            .filter(|run| run.cell_id == cell_id)
            .map(|run| run.engine)
            .collect();
        let Some(cell) = self.cells.get(cell_id) else {
            return Vec::new();
        };
        cell.engines
            .values()
            .filter(|r| r.state == TaskState::Running && running.contains(&r.engine))
            .filter(|r| r.started.is_some_and(|started| now - started >= limit))
            .map(|r| r.engine)
            .filter(|id| {
                self.engines
                    .get(id)
                    .is_some_and(|e| e.alive() && self.interrupted.get(id) != Some(&e.incarnation))
            })
            .collect()
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
