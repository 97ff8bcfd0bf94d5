//! Waiting in one place: the `%px: k/n tasks` display a long wait shows, the `--timeout` that
//! ends a wait nobody watches, and how a wait ended.

use std::time::{Duration, Instant};

use jupyter_protocol::Stdio;

use rustpx_wire::WireMessage;

use rustpx_protocol::EngineId;

use super::{lock, signal_name, Config, PxService};
use crate::px::records::TaskState;
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
    /// Tells this display from others under the same cell (one per API result waited on).
    key: String,
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
            key: "progress".into(),
        }
    }

    /// A display of its own under the cell, named `key`.
    pub(super) fn keyed(mut self, key: String) -> Self {
        self.key = key;
        self
    }

    pub(super) fn counting(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    pub(super) fn display_id(&self) -> String {
        format!("{}-{}", self.request.header.msg_id, self.key)
    }

    /// Whether the next `tick` or `finish` reads its count: only a display that is (or is about
    /// to be) on screen does. A wait calls this before counting, so a cell on 1024 engines does
    /// not walk every engine's record at each of their 1024 events.
    pub(super) fn needs_count(&self, started: Instant) -> bool {
        self.shown || (self.after >= 0.0 && started.elapsed().as_secs_f64() >= self.after)
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

/// How long engines a timeout signalled get to end before they are killed: an engine ends
/// within milliseconds of SIGINT unless the signal is caught or blocked.
const KILL_AFTER_SIGNAL: Duration = Duration::from_secs(5);

/// A blocking `%px` cell's `--timeout`, checked at every turn of the wait: an engine that has
/// run the cell that long is signalled as an interrupt would signal it (its death expected, the
/// pool starting it again), and killed if it still runs [`KILL_AFTER_SIGNAL`] later.
pub(super) struct Timeout {
    limit: Option<Duration>,
    seconds: f64,
    signal: i32,
    /// Engines signalled, with when; `None` once killed.
    signalled: Vec<(EngineId, Option<Instant>)>,
}

impl Timeout {
    pub(super) fn new(config: &Config) -> Timeout {
        let limit = (config.timeout > 0.0)
            .then(|| Duration::try_from_secs_f64(config.timeout).ok())
            .flatten();
        // `--signal-on-interrupt 0` is about interrupts someone watches; a timeout must stop
        // the engines, so it sends SIGINT then.
        let signal = match config.signal_on_interrupt {
            0 => libc::SIGINT,
            signal => signal,
        };
        Timeout {
            limit,
            seconds: config.timeout,
            signal,
            signalled: Vec::new(),
        }
    }

    /// Signals the engines past the limit, and kills those that outlived their signal.
    pub(super) fn check(&mut self, px: &PxService) {
        let Some(limit) = self.limit else {
            return;
        };
        let Ok(m) = px.machinery() else {
            return;
        };
        let mut active = lock(&px.active);
        let Some(cell) = active.as_mut() else {
            return;
        };
        let overdue = m.hub.interrupt_overdue(&cell.cell_id, limit);
        if !overdue.is_empty() {
            cell.timed_out = true;
            let ids: Vec<String> = overdue.iter().map(|(id, _)| id.to_string()).collect();
            px.publisher.stream(
                &cell.request,
                Stdio::Stderr,
                format!(
                    "Timeout: {} s passed. Sending signal {} to engines {}...\n",
                    super::px::seconds_text(self.seconds),
                    signal_name(self.signal),
                    ids.join(", ")
                ),
            );
            for (engine, variables) in overdue {
                m.pool.signal_engine(engine, self.signal);
                cell.interrupted.push((engine, variables));
                self.signalled.push((engine, Some(Instant::now())));
            }
        }
        let late: Vec<EngineId> = self
            .signalled
            .iter()
            .filter(|(_, at)| at.is_some_and(|at| at.elapsed() >= KILL_AFTER_SIGNAL))
            .map(|(engine, _)| *engine)
            .collect();
        if late.is_empty() {
            return;
        }
        let record = m.hub.cell(&cell.cell_id);
        for engine in late {
            let running = record
                .as_ref()
                .and_then(|r| r.engines.get(&engine))
                .is_some_and(|r| r.state != TaskState::Done);
            if running {
                tracing::warn!(
                    "engine {engine} still runs {} s after the timeout's signal; killing it",
                    KILL_AFTER_SIGNAL.as_secs()
                );
                m.pool.kill_engine(engine);
            }
            for entry in self.signalled.iter_mut().filter(|(id, _)| *id == engine) {
                entry.1 = None;
            }
        }
    }
}
