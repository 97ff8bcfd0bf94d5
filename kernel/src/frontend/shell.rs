//! What each shell and control request does.

use std::future::Future;
use std::sync::Arc;

use jupyter_protocol::{CompleteRequest, ExecuteRequest, InspectRequest, JupyterMessageContent};
use rustpx_wire::WireMessage;
use serde_json::{json, Value};

use super::{kernel_info, ControlHandler, Foresight, ShellHandler};
use crate::evaluator::{ErrorReport, Evaluator, Interrupter, Outcome};
use crate::history::History;
use crate::iopub::Publisher;
use crate::is_complete::{self, Completeness};
use crate::px::api::interrupt::{self, ApiInterrupt};
use crate::px::magics::{self, Magic, PxOptions};
use crate::px::{PxInterrupter, PxService};

/// The state of one kernel session: the execution counter, the Rust context, the engines and
/// the input history.
pub struct Session {
    publisher: Publisher,
    evaluator: Evaluator,
    px: PxService,
    history: History,
    execution_count: u32,
    /// The Rust API's requests from plain cells (None if its socket could not be opened).
    api_calls: Option<tokio::sync::mpsc::Receiver<crate::px::api::ApiCall>>,
    /// The last cell run: the parent of what API calls made between cells show (a thread
    /// that outlives its cell still belongs to it).
    last_cell: Option<WireMessage>,
}

impl Session {
    pub async fn new(publisher: Publisher) -> Session {
        let history = History::start();
        let px = PxService::start(publisher.clone()).await;
        let (api_calls, runtime_env) = match crate::px::api::serve() {
            Ok(channel) => (
                Some(channel.calls),
                vec![(crate::px::api::API_ENV.to_owned(), channel.spec)],
            ),
            Err(error) => {
                tracing::warn!("the Rust API is unavailable: {error}");
                (None, Vec::new())
            }
        };
        let evaluator = Evaluator::spawn(publisher.clone(), runtime_env);
        Session {
            publisher,
            evaluator,
            px,
            history,
            execution_count: 0,
            api_calls,
            last_cell: None,
        }
    }

    /// Stops the engines and ends the history session before the kernel exits.
    pub async fn shutdown(&self) {
        self.px.shutdown();
        self.history.end_session().await;
    }

    /// Routes a cell: a magic to the px service, plain Rust to the evaluator (or to the engines
    /// while `%autopx` is on).
    async fn run_cell(&mut self, request: &WireMessage, code: &str, count: u32) -> Outcome {
        match magics::parse_cell(code) {
            Err(error) => {
                let report = ErrorReport::usage(error.0);
                self.publisher.error(request, &report);
                Outcome::Error(report)
            }
            Ok(Some(Magic::Px { options, code })) if options.local => {
                let outcome = self
                    .px
                    .run(
                        request,
                        Magic::Px {
                            options,
                            code: code.clone(),
                        },
                        count,
                        &self.evaluator,
                    )
                    .await;
                let local = self.evaluator.execute(request, &code, count).await;
                if matches!(local, Outcome::Ok) {
                    self.px.note_plain_cell(&code);
                }
                match outcome {
                    Outcome::Ok => local,
                    error => error,
                }
            }
            Ok(Some(magic)) => self.px.run(request, magic, count, &self.evaluator).await,
            Ok(None) if self.px.autopx() => {
                let magic = Magic::Px {
                    options: PxOptions::default(),
                    code: code.to_owned(),
                };
                self.px.run(request, magic, count, &self.evaluator).await
            }
            Ok(None) => self.run_plain(request, code, count).await,
        }
    }

    /// Runs a plain cell, answering the Rust API's requests while it runs: the cell waits for
    /// them, so they cannot wait for it.
    async fn run_plain(&mut self, request: &WireMessage, code: &str, count: u32) -> Outcome {
        if code.contains("rustpx::") {
            if let Err(report) = self.px.prepare_api(request, &self.evaluator).await {
                self.publisher.error(request, &report);
                return Outcome::Error(report);
            }
        }
        let waits = self.px.api_interrupt();
        waits.cell_started();
        let outcome = self.run_plain_serving_api(request, code, count).await;
        waits.cell_ended();
        if matches!(outcome, Outcome::Ok) {
            // Its structs and enums are the context's now: the API compares them with the
            // engines' before a value crosses.
            self.px.note_plain_cell(code);
        }
        match outcome {
            // The cell handled the interrupted wait's error itself: an interrupt still ends
            // the cell as an error, so Run All stops there.
            Outcome::Ok if waits.is_interrupted() => {
                let report = ErrorReport::new(
                    rustpx_core::ErrorKind::KeyboardInterrupt,
                    "interrupted while waiting on the Rust API; the calls go on and the variables are kept",
                );
                self.publisher.error(request, &report);
                Outcome::Error(report)
            }
            outcome => outcome,
        }
    }

    async fn run_plain_serving_api(
        &mut self,
        request: &WireMessage,
        code: &str,
        count: u32,
    ) -> Outcome {
        let Session {
            evaluator,
            px,
            api_calls,
            ..
        } = self;
        let execution = evaluator.execute(request, code, count);
        tokio::pin!(execution);
        loop {
            let Some(calls) = api_calls.as_mut() else {
                return execution.await;
            };
            tokio::select! {
                outcome = &mut execution => return outcome,
                call = calls.recv() => match call {
                    Some(call) => {
                        let reply = px.answer_api(request, call.request).await;
                        let _ = call.reply.send(reply);
                    }
                    None => *api_calls = None,
                },
            }
        }
    }

    /// Serves one shell request; `None` for message types we log and drop.
    async fn answer(&mut self, request: &WireMessage) -> Option<WireMessage> {
        if request.msg_type() == "history_request" {
            // Read by our own lenient parser: jupyter-protocol's type rejects the requests of
            // some clients (fields they leave out or send as null).
            let content = self.history.reply(&request.content).await;
            return Some(WireMessage::reply_to(request, "history_reply", content));
        }
        let typed = typed(request)?;
        let content = match typed {
            JupyterMessageContent::KernelInfoRequest(_) => kernel_info::content(),
            JupyterMessageContent::ExecuteRequest(execute) => self.execute(request, execute).await,
            JupyterMessageContent::IsCompleteRequest(check) => is_complete_reply(&check.code),
            JupyterMessageContent::CompleteRequest(complete) => self.complete(&complete).await,
            JupyterMessageContent::InspectRequest(inspect) => self.inspect(&inspect).await,
            JupyterMessageContent::CommInfoRequest(_) => json!({"status": "ok", "comms": {}}),
            JupyterMessageContent::CommOpen(open) => {
                // No comm targets are registered: close it at once, as the protocol asks.
                self.publisher.comm_close(request, &open.comm_id.0);
                return None;
            }
            JupyterMessageContent::CommMsg(_) | JupyterMessageContent::CommClose(_) => return None,
            JupyterMessageContent::ShutdownRequest(shutdown) => {
                self.shutdown().await;
                json!({"status": "ok", "restart": shutdown.restart})
            }
            _ => {
                tracing::warn!(
                    "shell: unknown message type {:?} dropped",
                    request.msg_type()
                );
                return None;
            }
        };
        let reply_type = reply_type(request.msg_type());
        Some(WireMessage::reply_to(request, &reply_type, content))
    }

    async fn execute(&mut self, request: &WireMessage, execute: ExecuteRequest) -> Value {
        let ExecuteRequest {
            code,
            silent,
            store_history,
            ..
        } = execute;
        if store_history && !silent {
            self.execution_count += 1;
            if !code.trim().is_empty() {
                // Stored before it runs, so a cell that kills the kernel is in the history.
                self.history.record(self.execution_count, &code);
            }
        }
        let count = self.execution_count;
        if !silent {
            self.publisher.execute_input(request, &code, count);
        }
        self.last_cell = Some(request.clone());
        if code.trim().is_empty() {
            return ok_reply(count);
        }
        // One line per cell in the kernel's log: what a failure report needs to tell a cell that
        // never arrived from one that never finished.
        tracing::info!(target: CELLS_LOG, "cell {count}: running ({} bytes)", code.len());
        let started = std::time::Instant::now();
        let outcome = self.run_cell(request, &code, count).await;
        match &outcome {
            Outcome::Ok => {
                tracing::info!(target: CELLS_LOG, "cell {count}: ok in {:.2?}", started.elapsed())
            }
            Outcome::Error(report) => tracing::info!(
                target: CELLS_LOG,
                "cell {count}: {} in {:.2?}",
                report.ename(),
                started.elapsed()
            ),
        }
        match outcome {
            Outcome::Ok => ok_reply(count),
            Outcome::Error(report) => json!({
                "status": "error",
                "execution_count": count,
                "ename": report.ename(),
                "evalue": report.evalue,
                "traceback": report.traceback,
            }),
        }
    }

    async fn complete(&self, request: &CompleteRequest) -> Value {
        let list = self
            .evaluator
            .complete(&request.code, request.cursor_pos)
            .await;
        json!({
            "status": "ok",
            "matches": list.matches,
            "cursor_start": list.cursor_start,
            "cursor_end": list.cursor_end,
            "metadata": {},
        })
    }

    async fn inspect(&self, request: &InspectRequest) -> Value {
        match self
            .evaluator
            .inspect(&request.code, request.cursor_pos)
            .await
        {
            Some(data) => json!({"status": "ok", "found": true, "data": data, "metadata": {}}),
            None => json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
        }
    }
}

/// What control needs without waiting for the shell's lock (a cell may be running).
#[derive(Clone)]
pub struct ControlHandle {
    interrupter: Interrupter,
    api_waits: ApiInterrupt,
    px: PxInterrupter,
    stop_engines: Arc<dyn Fn() + Send + Sync>,
    history: History,
}

impl ShellHandler for Session {
    type Control = ControlHandle;

    fn handle_shell(
        &mut self,
        request: &WireMessage,
    ) -> impl Future<Output = Option<WireMessage>> + Send {
        self.answer(request)
    }

    /// An API call made between cells, or `None` when a call waiting for its dependencies
    /// may start (checked every [`DEPENDENCY_TICK`] while one waits).
    type Idle = Option<crate::px::api::ApiCall>;

    async fn idle_work(&mut self) -> Self::Idle {
        let tick = self.px.api_calls_waiting();
        let Some(calls) = self.api_calls.as_mut() else {
            return idle_tick(tick).await;
        };
        tokio::select! {
            call = calls.recv() => match call {
                Some(call) => Some(call),
                None => {
                    self.api_calls = None;
                    None
                }
            },
            none = idle_tick(tick) => none,
        }
    }

    async fn do_idle(&mut self, work: Self::Idle) {
        match (work, self.last_cell.clone()) {
            (Some(call), Some(cell)) => {
                let reply = self.px.answer_api(&cell, call.request).await;
                let _ = call.reply.send(reply);
            }
            // Only a cell makes calls, so there is always a last cell; without one the call is
            // dropped and its caller sees the connection end.
            (Some(_), None) => {}
            (None, _) => self.px.api_start_resolved(),
        }
    }

    /// A queued cell that will want engine code starts the px compiler's context at once, so
    /// that under Run All it comes up beside the plain context instead of after it.
    fn foresight(&self) -> Foresight {
        let Some(compiler) = self.px.compiler() else {
            return Arc::new(|_: &WireMessage| {});
        };
        Arc::new(move |request: &WireMessage| {
            let code = (request.msg_type() == "execute_request")
                .then(|| request.content.get("code").and_then(Value::as_str))
                .flatten();
            let wants = code.is_some_and(|code| {
                matches!(magics::parse_cell(code), Ok(Some(magic)) if magic.wants_engine_code())
            });
            if wants {
                compiler.warm_up();
            }
        })
    }

    fn control(&self) -> ControlHandle {
        let px = self.px.interrupter();
        let stopper = px.clone();
        ControlHandle {
            interrupter: self.evaluator.interrupter.clone(),
            api_waits: self.px.api_interrupt(),
            px,
            stop_engines: Arc::new(move || stopper.stop_engines()),
            history: self.history.clone(),
        }
    }
}

/// How often, between cells, calls waiting for their dependencies are looked at.
const DEPENDENCY_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// `None` after [`DEPENDENCY_TICK`] when calls wait for their dependencies; never otherwise.
async fn idle_tick(calls_waiting: bool) -> Option<crate::px::api::ApiCall> {
    if calls_waiting {
        tokio::time::sleep(DEPENDENCY_TICK).await;
    } else {
        std::future::pending::<()>().await;
    }
    None
}

impl ControlHandle {
    /// Interrupts the running plain cell: a cell waiting on the Rust API gets its wait ended
    /// (its variables and tasks stay), and is killed only if it still runs a moment later; any
    /// other cell's runtime child is killed, as evcxr has no other interrupt.
    fn interrupt_plain(&self) -> bool {
        let Some(cell) = self.api_waits.interrupt_waits() else {
            return self.interrupter.interrupt();
        };
        let (waits, interrupter) = (self.api_waits.clone(), self.interrupter.clone());
        tokio::spawn(async move {
            tokio::time::sleep(interrupt::ESCALATE_AFTER).await;
            if waits.still_running(cell) {
                tracing::info!(
                    "the interrupted cell still runs after its API wait ended: killing its runtime"
                );
                interrupter.interrupt();
            }
        });
        true
    }
}

impl ControlHandler for ControlHandle {
    /// Stops the engines and ends the history session (a shutdown request on control, or the
    /// client is gone).
    async fn shutdown(&self) {
        (self.stop_engines)();
        self.history.end_session().await;
    }

    async fn handle(&self, request: &WireMessage) -> Option<WireMessage> {
        let content = match typed(request)? {
            JupyterMessageContent::KernelInfoRequest(_) => kernel_info::content(),
            JupyterMessageContent::InterruptRequest(_) => {
                let plain = self.interrupt_plain();
                let px = self.px.interrupt();
                tracing::info!(
                    "interrupt request (plain cell running: {plain}, %px cell running: {px})"
                );
                json!({"status": "ok"})
            }
            JupyterMessageContent::ShutdownRequest(shutdown) => {
                self.shutdown().await;
                json!({"status": "ok", "restart": shutdown.restart})
            }
            _ => {
                tracing::warn!(
                    "control: unknown message type {:?} dropped",
                    request.msg_type()
                );
                return None;
            }
        };
        Some(WireMessage::reply_to(
            request,
            &reply_type(request.msg_type()),
            content,
        ))
    }
}

/// `kernel_info_request` -> `kernel_info_reply`.
pub(super) fn reply_type(request_type: &str) -> String {
    format!(
        "{}_reply",
        request_type
            .strip_suffix("_request")
            .unwrap_or(request_type)
    )
}

/// The log target of the one line per cell: kept in the kernel's log file, not echoed to the
/// terminal of the Jupyter server (ipykernel prints nothing there per cell).
pub const CELLS_LOG: &str = "rustpx_kernel::cells";

fn ok_reply(count: u32) -> Value {
    json!({"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []})
}

/// The request's content as jupyter-protocol's typed message; `None` (logged) when it does not
/// have the shape its type requires.
fn typed(request: &WireMessage) -> Option<JupyterMessageContent> {
    match JupyterMessageContent::from_type_and_content(request.msg_type(), request.content.clone())
    {
        Ok(content) => Some(content),
        Err(error) => {
            tracing::warn!("dropped a malformed {}: {error}", request.msg_type());
            None
        }
    }
}

fn is_complete_reply(code: &str) -> Value {
    match is_complete::check(code) {
        Completeness::Complete => json!({"status": "complete"}),
        Completeness::Incomplete { indent } => json!({"status": "incomplete", "indent": indent}),
        Completeness::Invalid => json!({"status": "invalid"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_types_follow_request_types() {
        assert_eq!(reply_type("kernel_info_request"), "kernel_info_reply");
        assert_eq!(reply_type("is_complete_request"), "is_complete_reply");
    }
}
