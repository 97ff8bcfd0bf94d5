//! The kernel's own Rust context: plain cells run here, through evcxr.
//!
//! evcxr is synchronous and owns a child process, so one dedicated thread owns the context and
//! takes jobs from a channel; the async front end awaits each job's answer. Interrupts cannot wait
//! for that thread (it is busy with the cell), so [`Interrupter`] kills the child directly, as
//! evcxr_jupyter does: evcxr then restarts it, and we tell the user which variables that cost.

mod diagnostics;
pub mod fence;
mod output_pump;
mod rerun;
pub mod runtime;
mod worker;

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use rustpx_wire::WireMessage;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::iopub::Publisher;
use rustpx_core::ErrorKind;
/// A compile error as Jupyter shows it: the first message, and each error drawn on `cell`.
pub fn compile_error_report(errors: &[evcxr::CompilationError], cell: &str) -> ErrorReport {
    ErrorReport {
        kind: ErrorKind::Compilation,
        evalue: errors
            .first()
            .map(|e| e.message())
            .unwrap_or_else(|| "compilation failed".into()),
        traceback: errors
            .iter()
            .map(|e| diagnostics::render(e, cell))
            .collect(),
        codes: errors
            .iter()
            .filter_map(|e| e.code().map(str::to_owned))
            .collect(),
    }
}

/// What a finished execution reports in its `execute_reply`.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok,
    Error(ErrorReport),
}

pub use rustpx_core::ErrorReport;

/// Completion matches with the code-point range they replace.
#[derive(Debug, Clone, Default)]
pub struct CompletionList {
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
}

/// Work for the evaluator thread.
enum Job {
    Execute {
        request: Box<WireMessage>,
        code: String,
        execution_count: u32,
        reply: oneshot::Sender<Outcome>,
    },
    Complete {
        code: String,
        cursor_pos: usize,
        reply: oneshot::Sender<CompletionList>,
    },
    Inspect {
        code: String,
        cursor_pos: usize,
        reply: oneshot::Sender<Option<Map<String, Value>>>,
    },
    /// Code the kernel generated (the data magics): nothing is published, errors come back.
    Hidden {
        code: String,
        reusable: bool,
        reply: oneshot::Sender<Result<(), ErrorReport>>,
    },
    /// The context's variables and their types.
    Variables {
        reply: oneshot::Sender<Vec<(String, String)>>,
    },
}

/// Kills the running cell's child process from outside the evaluator thread, or, when the
/// user's cell is still waiting for the thread (behind the analyser's warm-up or a hidden
/// cell), makes sure it never starts.
#[derive(Clone, Default)]
pub struct Interrupter {
    child: Arc<Mutex<Option<Arc<Mutex<Child>>>>>,
    requested: Arc<AtomicBool>,
    /// Plain cells sent to the evaluator thread that it has not begun.
    waiting: Arc<AtomicUsize>,
    /// An interrupt came while a cell was waiting: the next cell to begin is not run.
    cancel_next: Arc<AtomicBool>,
}

impl Interrupter {
    /// Interrupts the running plain cell, or the one waiting to run. Returns whether there was
    /// one.
    pub fn interrupt(&self) -> bool {
        let running = self.child.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match running {
            Some(child) => {
                self.requested.store(true, Ordering::SeqCst);
                let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(error) = child.kill() {
                    tracing::warn!("could not kill the evcxr child to interrupt: {error}");
                }
                true
            }
            None if self.waiting.load(Ordering::SeqCst) > 0 => {
                self.cancel_next.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// A plain cell was sent to the evaluator thread.
    fn cell_sent(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// The evaluator thread takes a plain cell: whether it was interrupted while it waited
    /// (then it must not run).
    fn cell_begins(&self) -> bool {
        let _ = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.cancel_next.swap(false, Ordering::SeqCst)
    }

    fn running(&self, child: Option<Arc<Mutex<Child>>>) {
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = child;
    }

    fn take_requested(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }
}

/// The front end's handle on the evaluator thread.
#[derive(Clone)]
pub struct Evaluator {
    jobs: mpsc::Sender<Job>,
    pub interrupter: Interrupter,
}

impl Evaluator {
    /// Starts the evaluator thread. evcxr starts (and warms up) at once in the background, ahead
    /// of anything else the kernel starts, because the first plain cell waits for it; jobs queue
    /// behind it, so the kernel answers `kernel_info` at once. (The px compiler's context is not
    /// started here: it starts with the first engines, so a kernel that never uses `%px` holds
    /// one evcxr context and one rust-analyzer, as evcxr_jupyter does.)
    ///
    /// `runtime_env` is added to the environment of the context's child process, where plain
    /// cells run (the Rust API's socket: never on a command line).
    pub fn spawn(publisher: Publisher, runtime_env: Vec<(String, String)>) -> Evaluator {
        let (jobs, receiver) = mpsc::channel();
        let interrupter = Interrupter::default();
        let thread_interrupter = interrupter.clone();
        std::thread::Builder::new()
            .name("evaluator".into())
            .spawn(move || worker::run(receiver, publisher, thread_interrupter, runtime_env))
            .ok();
        Evaluator { jobs, interrupter }
    }

    /// Runs a plain cell: its output goes to iopub under `request`, the outcome comes back.
    pub async fn execute(
        &self,
        request: &WireMessage,
        code: &str,
        execution_count: u32,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job::Execute {
            request: Box::new(request.clone()),
            code: code.to_owned(),
            execution_count,
            reply,
        };
        self.interrupter.cell_sent();
        if self.jobs.send(job).is_err() {
            self.interrupter.cell_begins();
            return Outcome::Error(evaluator_gone());
        }
        answer
            .await
            .unwrap_or_else(|_| Outcome::Error(evaluator_gone()))
    }

    pub async fn complete(&self, code: &str, cursor_pos: usize) -> CompletionList {
        let (reply, answer) = oneshot::channel();
        let job = Job::Complete {
            code: code.to_owned(),
            cursor_pos,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return CompletionList::default();
        }
        answer.await.unwrap_or_default()
    }

    pub async fn inspect(&self, code: &str, cursor_pos: usize) -> Option<Map<String, Value>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Inspect {
            code: code.to_owned(),
            cursor_pos,
            reply,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok().flatten()
    }
}

impl Evaluator {
    /// Runs kernel-generated code in the context without publishing anything; a compile error,
    /// panic or interrupt comes back as the report a cell would have shown.
    pub async fn run_hidden(&self, code: &str) -> Result<(), ErrorReport> {
        self.hidden(code, false).await
    }

    /// As [`Evaluator::run_hidden`], for a generated cell that may run again from its compiled
    /// object while its text and the context's variables are unchanged (see [`rerun`]).
    pub async fn run_generated(&self, code: &str) -> Result<(), ErrorReport> {
        self.hidden(code, true).await
    }

    async fn hidden(&self, code: &str, reusable: bool) -> Result<(), ErrorReport> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Hidden {
            code: code.to_owned(),
            reusable,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return Err(evaluator_gone());
        }
        answer.await.unwrap_or_else(|_| Err(evaluator_gone()))
    }

    /// The plain context's variables with their types as evcxr spells them.
    pub async fn variables(&self) -> Vec<(String, String)> {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Variables { reply }).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

fn evaluator_gone() -> ErrorReport {
    ErrorReport::new(
        ErrorKind::Kernel,
        "the Rust evaluator thread has stopped; restart the kernel",
    )
}

#[cfg(test)]
mod tests {
    use super::Interrupter;

    #[test]
    fn an_interrupt_with_nothing_sent_or_running_is_not_taken() {
        let interrupter = Interrupter::default();
        assert!(!interrupter.interrupt());
        interrupter.cell_sent();
        assert!(
            !interrupter.cell_begins(),
            "no interrupt came while it waited"
        );
    }

    #[test]
    fn an_interrupt_while_a_cell_waits_cancels_that_cell_only() {
        let interrupter = Interrupter::default();
        interrupter.cell_sent();
        interrupter.cell_sent();
        assert!(
            interrupter.interrupt(),
            "a waiting cell counts as the one to interrupt"
        );
        assert!(
            interrupter.cell_begins(),
            "the first cell to begin is cancelled"
        );
        assert!(!interrupter.cell_begins(), "the one after it runs");
        assert!(!interrupter.interrupt(), "nothing waits any more");
    }
}
