//! Interrupting a plain cell that waits on the Rust API (`get()`, `wait()`,
//! `wait_interactive()`), without killing the plain context.
//!
//! evcxr has no interrupt: the kernel kills the runtime child, and every variable of the plain
//! context goes with it, including the `AsyncResult`s whose tasks still run on the engines. A
//! cell blocked in an API wait is in the kernel's hands, though: its wait is a request this
//! kernel answers. So an interrupt that finds the running plain cell waiting on the API (in a
//! wait now, or between two slices of one) answers that wait with [`INTERRUPTED`] instead; the
//! client turns it into `ApiError::Interrupted`, the cell ends, and the variables and the tasks
//! stay. Every later wait of the same cell is answered the same way at once, so a cell that
//! loops over several results still ends. A cell that is not waiting on the API, or that goes on
//! running [`ESCALATE_AFTER`] after such an answer, is interrupted the old way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use rustpx_client::api_wire::INTERRUPTED;

/// How recently a wait must have ended to count as "between two slices" of one wait (the
/// client asks again within microseconds; a cell doing other work is not waiting).
const BETWEEN_SLICES: Duration = Duration::from_millis(200);
/// How long a cell whose wait was interrupted may go on before its runtime child is killed.
pub const ESCALATE_AFTER: Duration = Duration::from_secs(2);

/// The state shared by the session (which answers waits) and the control channel (which gets
/// interrupts while a cell runs).
#[derive(Clone, Default)]
pub struct ApiInterrupt {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Plain cells begun so far: an escalation only kills the cell it was meant for.
    cell: AtomicU64,
    /// Whether a plain cell runs now.
    running: AtomicBool,
    /// API waits being answered now.
    waiting: AtomicUsize,
    /// When the last API wait of this cell ended.
    last_wait: Mutex<Option<Instant>>,
    /// The running cell was interrupted: its waits end at once.
    interrupted: AtomicBool,
    wake: Notify,
}

impl ApiInterrupt {
    /// A plain cell begins: nothing of an earlier cell's interrupt applies to it.
    pub fn cell_started(&self) {
        self.inner.cell.fetch_add(1, Ordering::SeqCst);
        self.inner.interrupted.store(false, Ordering::SeqCst);
        *self.last_wait() = None;
        self.inner.running.store(true, Ordering::SeqCst);
    }

    pub fn cell_ended(&self) {
        self.inner.running.store(false, Ordering::SeqCst);
    }

    fn last_wait(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.inner
            .last_wait
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the running cell's interrupt was answered through its API waits.
    pub fn is_interrupted(&self) -> bool {
        self.inner.interrupted.load(Ordering::SeqCst)
    }

    /// An interrupt request: if the running plain cell is waiting on the API, its waits are
    /// ended and the cell's number is returned (the caller kills the child if that cell still
    /// runs [`ESCALATE_AFTER`] later); `None` when the cell must be interrupted the old way.
    pub fn interrupt_waits(&self) -> Option<u64> {
        let inner = &self.inner;
        if !inner.running.load(Ordering::SeqCst) || inner.interrupted.load(Ordering::SeqCst) {
            // Nothing runs, or a second interrupt: the user means it.
            return None;
        }
        let waiting_now = inner.waiting.load(Ordering::SeqCst) > 0;
        let between_slices = self
            .last_wait()
            .is_some_and(|ended| ended.elapsed() < BETWEEN_SLICES);
        if !waiting_now && !between_slices {
            return None;
        }
        inner.interrupted.store(true, Ordering::SeqCst);
        inner.wake.notify_waiters();
        Some(inner.cell.load(Ordering::SeqCst))
    }

    /// Whether cell number `cell` still runs (then an interrupted wait did not end it).
    pub fn still_running(&self, cell: u64) -> bool {
        self.inner.running.load(Ordering::SeqCst) && self.inner.cell.load(Ordering::SeqCst) == cell
    }

    /// Runs one API wait, ending it early with `None` if the cell is interrupted.
    pub async fn wait<T>(&self, wait: impl std::future::Future<Output = T>) -> Option<T> {
        if self.is_interrupted() {
            return None;
        }
        let woken = self.inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        self.inner.waiting.fetch_add(1, Ordering::SeqCst);
        // Checked again now that a wake-up cannot be missed.
        let outcome = if self.is_interrupted() {
            None
        } else {
            tokio::select! {
                value = wait => Some(value),
                () = woken => None,
            }
        };
        self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        *self.last_wait() = Some(Instant::now());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_interrupt_ends_a_wait_in_progress_and_every_later_one() {
        let api = ApiInterrupt::default();
        api.cell_started();
        assert_eq!(api.interrupt_waits(), None, "a cell not waiting is killed");
        let waiting = api.clone();
        let wait = tokio::spawn(async move {
            waiting
                .wait(tokio::time::sleep(Duration::from_secs(30)))
                .await
        });
        while api.inner.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let cell = api
            .interrupt_waits()
            .expect("the waiting cell is interrupted softly");
        assert_eq!(wait.await.unwrap(), None);
        assert_eq!(api.wait(async { 1 }).await, None, "later waits end at once");
        assert!(api.still_running(cell));
        assert_eq!(api.interrupt_waits(), None, "a second interrupt kills");
        api.cell_ended();
        assert!(!api.still_running(cell));
        api.cell_started();
        assert_eq!(
            api.wait(async { 2 }).await,
            Some(2),
            "a new cell starts afresh"
        );
    }

    #[tokio::test]
    async fn a_cell_between_two_slices_of_a_wait_counts_as_waiting() {
        let api = ApiInterrupt::default();
        api.cell_started();
        assert_eq!(api.wait(async { 3 }).await, Some(3));
        assert!(api.interrupt_waits().is_some());
    }
}
