//! Task records: what happened on each engine for one `%px` cell, with its times.
//!
//! The hub fills these in as messages arrive; the renderer reads them. A record outlives the cell
//! (non-blocking results, `%pxresult`, `-o NAME`) until the session ends.

use std::collections::BTreeMap;

use crate::{EngineId, ErrorKind, MimeBundle};
use chrono::{DateTime, Utc};

/// An engine's failure as the user sees it: `[N:execute]Ename: evalue` and a traceback.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub evalue: String,
    pub traceback: Vec<String>,
    /// Every engine that has this very error, in id order, when one compile served a whole
    /// group: the error is shown once, labelled with all of them (`[0-31:execute]`). Empty
    /// when the error is this engine's own (a panic, a death).
    pub shared_by: Vec<EngineId>,
    /// rustc's error codes when this is a compile error (`E0425`, ...): what the kernel reads
    /// to explain a failure, never the compiler's English text.
    pub codes: Vec<String>,
}

impl EngineError {
    /// The name Jupyter shows.
    pub fn ename(&self) -> &'static str {
        self.kind.ename()
    }

    /// `Ename: evalue`, the one line a report about several engines shows for each.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.kind.ename(), self.evalue)
    }
}

impl From<crate::ErrorReport> for EngineError {
    fn from(report: crate::ErrorReport) -> Self {
        EngineError {
            kind: report.kind,
            evalue: report.evalue,
            traceback: report.traceback,
            shared_by: Vec::new(),
            codes: report.codes,
        }
    }
}

impl From<EngineError> for crate::ErrorReport {
    fn from(error: EngineError) -> Self {
        crate::ErrorReport {
            kind: error.kind,
            evalue: error.evalue,
            traceback: error.traceback,
            codes: error.codes,
        }
    }
}

/// Where one engine's part of a cell stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Running,
    Done,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Done => "done",
        }
    }
}

/// One engine's part of a cell.
#[derive(Debug, Clone)]
pub struct EngineRecord {
    pub engine: EngineId,
    /// The id of this engine's task, shown in errors and used for display ids.
    pub task_id: String,
    pub state: TaskState,
    pub stdout: String,
    pub stderr: String,
    pub displays: Vec<MimeBundle>,
    pub value: Option<MimeBundle>,
    pub execution_count: Option<u32>,
    pub error: Option<EngineError>,
    pub submitted: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub completed: Option<DateTime<Utc>>,
    pub received: Option<DateTime<Utc>>,
}

impl EngineRecord {
    pub fn new(engine: EngineId, cell_id: &str, submitted: DateTime<Utc>) -> Self {
        EngineRecord {
            engine,
            task_id: format!("{cell_id}_{engine}"),
            state: TaskState::Queued,
            stdout: String::new(),
            stderr: String::new(),
            displays: Vec::new(),
            value: None,
            execution_count: None,
            error: None,
            submitted,
            started: None,
            completed: None,
            received: None,
        }
    }

    /// Marks the task finished (once), with `error` if it failed.
    pub fn finish(&mut self, error: Option<EngineError>) {
        if self.state == TaskState::Done {
            return;
        }
        let now = Utc::now();
        self.state = TaskState::Done;
        self.completed.get_or_insert(now);
        self.received = Some(now);
        if error.is_some() {
            self.error = error;
        }
    }

    pub fn status(&self) -> &'static str {
        match (self.state, &self.error) {
            (TaskState::Done, None) => "ok",
            (TaskState::Done, Some(_)) => "error",
            (state, _) => state.name(),
        }
    }
}

/// One `%px` cell across its engines.
#[derive(Debug, Clone)]
pub struct CellRecord {
    pub cell_id: String,
    pub code: String,
    /// Target order for rendering (duplicates removed; each engine runs a cell once).
    pub targets: Vec<EngineId>,
    /// Run with a single-int target (`-t 1`): no headers, the engine's own error.
    pub single: bool,
    pub submitted: DateTime<Utc>,
    pub engines: BTreeMap<EngineId, EngineRecord>,
    /// What the px compiler says about the cell itself, each text ending in a newline: what
    /// the evcxr commands in it (`:opt`, `:vars`, `:timing`) answered, per engine group.
    pub notes: Vec<String>,
}

impl CellRecord {
    pub fn new(cell_id: String, code: String, targets: Vec<EngineId>, single: bool) -> Self {
        let submitted = Utc::now();
        let mut seen = std::collections::BTreeSet::new();
        let unique: Vec<EngineId> = targets.into_iter().filter(|id| seen.insert(*id)).collect();
        let engines = unique
            .iter()
            .map(|&id| (id, EngineRecord::new(id, &cell_id, submitted)))
            .collect();
        CellRecord {
            cell_id,
            code,
            targets: unique,
            single,
            submitted,
            engines,
            notes: Vec::new(),
        }
    }

    /// Engine records in target order.
    pub fn in_order(&self) -> impl Iterator<Item = &EngineRecord> {
        self.targets.iter().filter_map(|id| self.engines.get(id))
    }

    pub fn done_count(&self) -> usize {
        self.engines
            .values()
            .filter(|r| r.state == TaskState::Done)
            .count()
    }

    pub fn is_done(&self) -> bool {
        self.done_count() == self.engines.len()
    }

    pub fn failures(&self) -> Vec<&EngineRecord> {
        self.in_order().filter(|r| r.error.is_some()).collect()
    }

    /// Seconds from submission until the last engine finished (or until now).
    pub fn wall_time(&self) -> f64 {
        let end = self
            .engines
            .values()
            .filter_map(|r| r.received)
            .max()
            .filter(|_| self.is_done())
            .unwrap_or_else(Utc::now);
        seconds(end - self.submitted)
    }

    /// The sum of the engines' own running times.
    pub fn serial_time(&self) -> f64 {
        self.engines
            .values()
            .filter_map(|r| Some(seconds(r.completed? - r.started?)))
            .sum()
    }
}

fn seconds(delta: chrono::TimeDelta) -> f64 {
    delta.num_microseconds().unwrap_or(0) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_done_when_every_engine_finished() {
        let mut cell = CellRecord::new("c".into(), "1".into(), vec![1, 0, 1], false);
        assert_eq!(cell.targets, vec![1, 0]);
        assert!(!cell.is_done());
        for record in cell.engines.values_mut() {
            record.finish(None);
        }
        assert!(cell.is_done());
        assert!(cell.failures().is_empty());
        assert_eq!(cell.engines[&0].status(), "ok");
        assert_eq!(cell.engines[&1].task_id, "c_1");
    }
}
