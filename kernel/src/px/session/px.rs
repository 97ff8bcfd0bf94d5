//! `%px` / `%%px`: a cell compiled once per engine group, sent, waited for with live output and
//! progress, and rendered in ipyparallel's shapes; what an interrupt leaves behind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jupyter_protocol::Stdio;
use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::progress::Timeout;
use super::{usage, ActiveCell, Config, Progress, PxService, Waited};
use crate::evaluator::ErrorReport;
use crate::px::compiler::CompileJob;
use crate::px::hub::CellEvent;
use crate::px::lock;
use crate::px::magics::{Grouping, PxOptions};
use crate::px::records::CellRecord;
use crate::px::render::{self, Output};
use crate::px::targets::{self, Targets};
use rustpx_core::ErrorKind;

impl PxService {
    pub(super) async fn px(
        &mut self,
        request: &WireMessage,
        options: &PxOptions,
        code: &str,
        count: u32,
    ) -> Result<(), ErrorReport> {
        // A refused evcxr command fails before anything is sent, like a bad option.
        crate::px::cell_commands::split(code).map_err(usage)?;
        let config = self.config.with(&options.exec);
        let live = self.ensure_engines(request).await?;
        let engines = targets::resolve(&config.targets, &live).map_err(|missing| {
            ErrorReport::headline(
                ErrorKind::NoSuchEngine,
                format!("No such engine: {}", missing.0),
            )
        })?;
        if engines.is_empty() {
            return Err(usage(format!(
                "the targets {} select no engine (live engines: {live:?})",
                config.targets
            )));
        }
        let (hub, compiler) = {
            let m = self.machinery()?;
            (m.hub.clone(), m.compiler.clone())
        };
        let single = matches!(config.targets, Targets::Single(_));
        let cell_id = uuid::Uuid::new_v4().simple().to_string();
        let record = CellRecord::new(cell_id.clone(), code.to_owned(), engines.clone(), single);
        let (observer, mut events) = mpsc::unbounded_channel();
        hub.add_cell(record, config.block.then_some(observer));
        if !compiler.submit(CompileJob {
            cell_id: cell_id.clone(),
            code: code.to_owned(),
            engines,
            files: Default::default(),
        }) {
            return Err(ErrorReport::new(
                ErrorKind::Kernel,
                "the px compiler has stopped; restart the kernel",
            ));
        }
        self.last = Some(cell_id.clone());
        self.map_is_last = false;
        self.api_is_last = None;
        if let Some(name) = &options.out {
            self.named.insert(name.clone(), cell_id.clone());
        }
        if !config.block {
            self.publisher
                .text_result(request, count, "<AsyncResult(%px): pending>");
            return Ok(());
        }
        *lock(&self.active) = Some(ActiveCell {
            request: request.clone(),
            cell_id: cell_id.clone(),
            signal: config.signal_on_interrupt,
            interrupted: Vec::new(),
            stop_waiting: false,
            timed_out: false,
        });
        let waited = self
            .wait_streaming(request, &cell_id, &config, &mut events)
            .await;
        hub.unobserve(&cell_id);
        let active = lock(&self.active).take();
        if waited == Waited::StoppedWaiting {
            return Err(ErrorReport {
                kind: ErrorKind::KeyboardInterrupt,
                evalue: "stopped waiting; the engines were not signalled and keep running".into(),
                traceback: vec!["KeyboardInterrupt: stopped waiting for %px (--signal-on-interrupt 0); the engines keep running: %pxresult shows the result when it is ready".into()],
                codes: Vec::new(),
            });
        }
        let cell = hub.cell(&cell_id);
        let Some(cell) = cell else {
            return Ok(());
        };
        self.note_px_cell(&cell);
        let grouping = options.group_outputs.unwrap_or_default();
        let (interrupted, timed_out) = active
            .map(|a| (a.interrupted, a.timed_out))
            .unwrap_or_default();
        if !interrupted.is_empty() {
            let timeout = timed_out.then_some(config.timeout);
            return self
                .after_interrupt(request, &cell, &config, grouping, &interrupted, timeout)
                .await;
        }
        let error = if config.stream {
            self.publish_outputs(request, render::streamed_values(&cell));
            render::already_displayed(&cell)
        } else {
            self.publish_outputs(request, render::non_streamed(&cell, grouping));
            render::final_error(&cell)
        };
        if options.local {
            // --local: the kernel's own context runs the cell too; its outputs follow.
            return Ok(());
        }
        match error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// After an interrupt or a timeout: the outputs so far, which engines lost what, and the
    /// engines back up. A timeout (`Some(seconds)`) then fails the cell with a `TimeoutError`
    /// naming the engines, as an unattended run must not look like it succeeded.
    pub(super) async fn after_interrupt(
        &self,
        request: &WireMessage,
        cell: &CellRecord,
        config: &Config,
        grouping: Grouping,
        interrupted: &[(EngineId, Vec<String>)],
        timeout: Option<f64>,
    ) -> Result<(), ErrorReport> {
        if config.stream {
            self.publish_outputs(request, render::streamed_values(cell));
        } else {
            self.publish_outputs(request, render::non_streamed(cell, grouping));
        }
        let m = self.machinery()?;
        let mut text = String::new();
        let mut restarting = Vec::new();
        let what = match timeout {
            Some(seconds) => format!(
                "still running after {} s: interrupted",
                seconds_text(seconds)
            ),
            None => "interrupted".to_owned(),
        };
        for (engine, variables) in interrupted {
            let lost = if variables.is_empty() {
                "it held no variables".to_owned()
            } else {
                format!("variables lost: {}", variables.join(", "))
            };
            if m.pool.started_here(*engine) {
                restarting.push(*engine);
                text.push_str(&format!(
                    "[{engine}:execute] {what}; engine {engine} was restarted ({lost})\n"
                ));
            } else {
                text.push_str(&format!(
                    "[{engine}:execute] {what}; engine {engine} exited ({lost}). It was started outside this kernel: start it again where it ran (rustpx-engine --connect FILE)\n"
                ));
            }
        }
        self.publisher.stream(request, Stdio::Stderr, text);
        self.wait_registered(
            request,
            &restarting,
            &format!("restarting {} engines", restarting.len()),
        )
        .await?;
        match timeout {
            Some(seconds) => Err(timeout_error(cell, interrupted, seconds)),
            None => Ok(()),
        }
    }

    pub(super) async fn wait_streaming(
        &self,
        request: &WireMessage,
        cell_id: &str,
        config: &Config,
        events: &mut mpsc::UnboundedReceiver<CellEvent>,
    ) -> Waited {
        let Ok(m) = self.machinery() else {
            return Waited::Done;
        };
        let started = Instant::now();
        let mut shown: HashMap<String, bool> = HashMap::new();
        let mut progress = Progress::new(request, config.progress_after, "%px");
        let mut timeout = Timeout::new(config);
        // Calls of the Rust API waiting for dependencies start while the cell runs too.
        let mut dependency_ticks = tokio::time::interval(Duration::from_millis(50));
        dependency_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let waiting = self.api_calls_waiting();
            let event = tokio::select! {
                event = events.recv() => event,
                _ = dependency_ticks.tick(), if waiting => {
                    self.api_start_resolved();
                    // Also the quiet turn's checks below (timeout, progress): while calls wait,
                    // this branch comes first and the 250 ms one would never fire.
                    Some(CellEvent::Stream { engine: u32::MAX, name: String::new() })
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => Some(CellEvent::Stream { engine: u32::MAX, name: String::new() }),
                _ = self.wake.notified() => {
                    if lock(&self.active).as_ref().is_some_and(|a| a.stop_waiting) {
                        return Waited::StoppedWaiting;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            timeout.check(self);
            // Engines an interrupt signalled are reported once, with their restart.
            let signalled = match &event {
                CellEvent::EngineDone { engine } => lock(&self.active)
                    .as_ref()
                    .is_some_and(|a| a.interrupted.iter().any(|(id, _)| id == engine)),
                _ => false,
            };
            // Counting walks every engine's record: only done when the progress display needs it.
            let count = progress.needs_count(started);
            let Some((shown_now, done, total)) = m.hub.with_cell(cell_id, |cell| {
                let shown_now = config
                    .stream
                    .then(|| what_to_show(cell, &event, signalled))
                    .flatten();
                let done = if count { cell.done_count() } else { 0 };
                (shown_now, done, cell.engines.len())
            }) else {
                break;
            };
            match shown_now {
                Some(Shown::Stream { display_id, text }) => {
                    let mut data = Map::new();
                    data.insert("text/plain".into(), Value::String(text));
                    let update = shown.insert(display_id.clone(), true).is_some();
                    self.display(request, data, Some(&display_id), update);
                }
                Some(Shown::Outputs(outputs)) => self.publish_outputs(request, outputs),
                Some(Shown::Failure(text)) => self.publisher.stream(request, Stdio::Stderr, text),
                None => {}
            }
            if matches!(event, CellEvent::CellDone) {
                progress.finish(self, done, total, started);
                return Waited::Done;
            }
            if count {
                progress.tick(self, done, total, started);
            }
        }
        Waited::Done
    }

    pub(super) async fn wait_done(
        &self,
        request: &WireMessage,
        cell_id: &str,
    ) -> Option<CellRecord> {
        let m = self.machinery().ok()?;
        let started = Instant::now();
        let mut progress = Progress::new(request, self.config.progress_after, "%pxresult");
        loop {
            let cell = m.hub.cell(cell_id)?;
            if cell.is_done() {
                progress.finish(self, cell.done_count(), cell.engines.len(), started);
                return Some(cell);
            }
            progress.tick(self, cell.done_count(), cell.engines.len(), started);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What one engine's event adds to a streaming cell's output.
enum Shown {
    /// The engine's stream so far, shown in (or updating) its own display.
    Stream { display_id: String, text: String },
    /// A rich output with its `[output:N]` header.
    Outputs(Vec<Output>),
    /// An engine's failure, on stderr as soon as it finished.
    Failure(String),
}

/// What `event` shows, read from the cell's record while the hub is locked; only the engine the
/// event is about is looked at.
fn what_to_show(cell: &CellRecord, event: &CellEvent, signalled: bool) -> Option<Shown> {
    match event {
        CellEvent::Stream { engine, name } if *engine != u32::MAX => {
            let record = cell.engines.get(engine)?;
            let text = if name == "stderr" {
                &record.stderr
            } else {
                &record.stdout
            };
            Some(Shown::Stream {
                display_id: format!("{}-{name}", record.task_id),
                text: render::stream_display_text(*engine, name, text),
            })
        }
        CellEvent::Display { engine, index } => {
            let bundle = cell.engines.get(engine)?.displays.get(*index)?;
            Some(Shown::Outputs(vec![
                render::output_header(*engine),
                render::rich_output(*engine, bundle),
            ]))
        }
        CellEvent::EngineDone { engine } => cell
            .engines
            .get(engine)
            .filter(|r| r.error.is_some() && !signalled)
            .map(|record| Shown::Failure(render::streamed_failure(record))),
        _ => None,
    }
}

/// Seconds as a user typed them: `2`, not `2.0`; `0.5` stays.
pub(super) fn seconds_text(seconds: f64) -> String {
    format!("{seconds}")
}

/// The error of a cell whose engines ran past its `--timeout`: which engines, after how long,
/// and what each lost, in the shape of ipyparallel's errors (`[N:execute]` lines).
fn timeout_error(
    cell: &CellRecord,
    interrupted: &[(EngineId, Vec<String>)],
    seconds: f64,
) -> ErrorReport {
    let ids: Vec<EngineId> = interrupted.iter().map(|(id, _)| *id).collect();
    let (noun, verb) = if ids.len() == 1 {
        ("Engine", "was")
    } else {
        ("Engines", "were")
    };
    let evalue = format!(
        "{noun} {} still running %px after {} s {verb} interrupted",
        super::join(&ids),
        seconds_text(seconds)
    );
    let mut traceback = vec![format!("TimeoutError: {evalue}")];
    for (engine, variables) in interrupted {
        let task = cell
            .engines
            .get(engine)
            .map(|r| r.task_id.as_str())
            .unwrap_or("?");
        let lost = if variables.is_empty() {
            "it held no variables".to_owned()
        } else {
            format!("variables lost: {}", variables.join(", "))
        };
        traceback.push(format!(
            "[{engine}:execute] task '{task}' timed out ({lost})"
        ));
    }
    ErrorReport {
        kind: ErrorKind::Timeout,
        evalue,
        traceback,
        codes: Vec::new(),
    }
}
