//! Waiting in one place: the `%px: k/n tasks` display a long wait shows, and how a wait ended.

use std::time::Instant;

use rustpx_wire::WireMessage;

use super::PxService;
use crate::px::render;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Waited {
    Done,
    StoppedWaiting,
}

/// The `%px: k/n tasks` display, shown once the wait passes `--progress-after`.
pub(super) struct Progress {
    request: WireMessage,
    after: f64,
    label: &'static str,
    /// What is counted: `tasks` (engines) or `items` (a map).
    unit: &'static str,
    shown: bool,
    last: Option<(usize, u64)>,
}

impl Progress {
    pub(super) fn new(request: &WireMessage, after: f64, label: &'static str) -> Self {
        Progress {
            request: request.clone(),
            after,
            label,
            unit: "tasks",
            shown: false,
            last: None,
        }
    }

    pub(super) fn counting(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    pub(super) fn display_id(&self) -> String {
        format!("{}-progress", self.request.header.msg_id)
    }

    pub(super) fn tick(&mut self, px: &PxService, done: usize, total: usize, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        if self.after < 0.0 || elapsed < self.after {
            return;
        }
        // Redraw when the count changes, or every second for the clock.
        let key = (done, elapsed as u64);
        if self.last == Some(key) {
            return;
        }
        self.last = Some(key);
        let data = render::progress(self.label, self.unit, done, total, elapsed);
        px.display(&self.request, data, Some(&self.display_id()), self.shown);
        self.shown = true;
    }

    pub(super) fn finish(&mut self, px: &PxService, done: usize, total: usize, started: Instant) {
        // Draw the final state once: a tick may already have shown it.
        let already_final = self.last.is_some_and(|(shown_done, _)| shown_done == done);
        if self.shown && !already_final {
            let data = render::progress(
                self.label,
                self.unit,
                done,
                total,
                started.elapsed().as_secs_f64(),
            );
            px.display(&self.request, data, Some(&self.display_id()), true);
        }
    }
}
