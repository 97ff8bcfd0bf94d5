//! The Rust API's waits: `wait`/`get` (one slice of a wait per request), `wait_interactive`
//! (the same, drawing a live progress bar under the cell), and the interrupt that ends a wait
//! without killing the plain context ([`crate::px::api::interrupt`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustpx_client::api_wire::EXECUTION_IDS;
use rustpx_wire::WireMessage;

use super::super::api::interrupt::INTERRUPTED;
use super::super::api::{Kind, Reply, Request};
use super::{Progress, PxService};

/// How long one `Wait` may hold the session (the client repeats it).
const WAIT_LIMIT: Duration = Duration::from_secs(1);
/// How often a live progress bar is redrawn while its result runs.
const REDRAW: Duration = Duration::from_millis(100);

/// The progress bars drawn by `wait_interactive`, by call id (kept across the slices of one wait
/// so each redraws the same display).
#[derive(Default)]
pub(super) struct ProgressBars {
    bars: HashMap<(String, u64), Progress>,
}

impl PxService {
    /// Answers a `Wait` or `WaitInteractive` of the plain cell `cell`; an interrupt of the cell
    /// ends it with [`INTERRUPTED`] (the call goes on).
    pub(super) async fn api_wait(&mut self, cell: &WireMessage, request: &Request) -> Reply {
        let wait = Duration::from_millis(request.wait_millis).min(WAIT_LIMIT);
        let interrupt = self.api_interrupt.clone();
        let interactive = request.kind == Kind::WaitInteractive;
        let id = request.job;
        // The client names what it waits for: `apply`, `map` or `execute`.
        let label = match request.function.as_str() {
            "apply" => "apply",
            "execute" => "execute",
            _ => "map",
        };
        let waited = interrupt
            .wait(async {
                if interactive {
                    self.api_wait_drawing(cell, id, label, wait).await
                } else {
                    self.api_wait_slice(id, wait).await
                }
            })
            .await;
        match waited {
            Some(Ok(reply)) => reply,
            Some(Err(why)) => Reply::error(why),
            None => interrupted(id),
        }
    }

    /// Answers a `Partial` (the next results of `iter()`), which waits as `Wait` does.
    pub(super) async fn api_partial_interruptible(&mut self, request: &Request) -> Reply {
        let interrupt = self.api_interrupt.clone();
        match interrupt.wait(self.api_partial(request)).await {
            Some(Ok(reply)) => reply,
            Some(Err(why)) => Reply::error(why),
            None => interrupted(request.job),
        }
    }

    async fn api_wait_slice(&mut self, id: u64, wait: Duration) -> Result<Reply, String> {
        if id >= EXECUTION_IDS {
            self.api_execution_wait(id, wait).await
        } else {
            self.api_status(id, wait).await
        }
    }

    /// Waits in short slices, redrawing the call's progress bar between them.
    async fn api_wait_drawing(
        &mut self,
        cell: &WireMessage,
        id: u64,
        label: &'static str,
        wait: Duration,
    ) -> Result<Reply, String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.api_wait_slice(id, left.min(REDRAW)).await?;
            self.draw_progress(cell, id, label, &reply);
            if reply.ready || left.is_zero() {
                return Ok(reply);
            }
        }
    }

    /// Draws call `id`'s bar (`k/n tasks` for `apply` and `execute`, items for `map`), and
    /// its final state once it is ready.
    fn draw_progress(&mut self, cell: &WireMessage, id: u64, label: &'static str, reply: &Reply) {
        let unit = if label == "map" { "items" } else { "tasks" };
        let key = (cell.header.msg_id.clone(), id);
        // Bars of earlier cells are drawn no more.
        self.api_progress
            .bars
            .retain(|(msg_id, _), _| *msg_id == key.0);
        let mut bar = self.api_progress.bars.remove(&key).unwrap_or_else(|| {
            Progress::new(cell, 0.0, label)
                .counting(unit)
                .keyed(format!("api-{id}"))
        });
        let started = Instant::now()
            .checked_sub(Duration::from_secs_f64(reply.elapsed.max(0.0)))
            .unwrap_or_else(Instant::now);
        let (done, total) = (reply.done_items as usize, reply.total_items as usize);
        bar.tick(self, done, total, started);
        if reply.ready {
            bar.finish(self, done, total, started);
        } else {
            self.api_progress.bars.insert(key, bar);
        }
    }
}

fn interrupted(id: u64) -> Reply {
    Reply::error(format!(
        "{INTERRUPTED}: the wait was interrupted; call {id} goes on: wait for it or get() its results again"
    ))
}
