//! The task requests of the Rust API (abort, metadata, results as they complete) and the start
//! of calls whose dependencies were met (the rules: [`crate::px::api::tasks`]).
//!
//! A call that waits for dependencies has no serving cell on the engines (an engine serving one
//! function could not run another's cell meanwhile); once its dependencies are met, it is sent
//! at the next API request, or within 50 ms between cells or during a `%px` wait.

use std::time::Duration;

use rustpx_client::api_tasks::encode_metadata;

use super::super::api::{Reply, Request};
use super::api::status_reply;
use super::{lock, PxService};

/// How long one Partial request may hold the session (the client repeats it).
const PARTIAL_WAIT_LIMIT: Duration = Duration::from_secs(1);

impl PxService {
    /// Whether calls wait for their dependencies (then the shell looks between cells, see
    /// [`Self::api_start_resolved`]).
    pub fn api_calls_waiting(&self) -> bool {
        self.api_scheduler
            .as_ref()
            .is_some_and(|scheduler| lock(&scheduler.book).has_waiting())
    }

    /// Sends the serving cells of calls that waited for dependencies now met (and fails those
    /// whose dependencies failed or whose timeout passed): at each API request, between cells,
    /// and while a `%px` cell is waited for (it needs the session only to read).
    pub fn api_start_resolved(&self) {
        let Some(scheduler) = self.api_scheduler.clone() else {
            return;
        };
        let ids = lock(&scheduler.book).take_to_start();
        if ids.is_empty() {
            return;
        }
        for id in ids {
            if let Err(why) = self.api_watch(&scheduler, id) {
                tracing::warn!("api: cannot start call {id}: {why}");
            }
        }
        scheduler.changed.notify_waiters();
    }

    pub(super) fn api_abort(&mut self, id: u64) -> Result<Reply, String> {
        let scheduler = self.api_scheduler_of(id)?;
        lock(&scheduler.book).abort(id)?;
        scheduler.changed.notify_waiters();
        Ok(Reply {
            job: id,
            ..Reply::default()
        })
    }

    pub(super) fn api_metadata(&mut self, id: u64) -> Result<Reply, String> {
        let scheduler = self.api_scheduler_of(id)?;
        let tasks = lock(&scheduler.book).metadata(id)?;
        Ok(Reply {
            job: id,
            payload: encode_metadata(&tasks),
            ..Reply::default()
        })
    }

    /// The tasks of a call completed after the cursor (the request's payload), once there is
    /// one, the call is ready, or the wait passed.
    pub(super) async fn api_partial(&mut self, request: &Request) -> Result<Reply, String> {
        let id = request.job;
        let cursor = request
            .payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or("a Partial request carries its cursor as 8 bytes")?;
        let wait = Duration::from_millis(request.wait_millis).min(PARTIAL_WAIT_LIMIT);
        self.api_poll(id, wait, |book, submission, left| {
            let completed = submission.tasks.completion_order.len() as u64;
            if completed <= cursor && !submission.ready() && !left.is_zero() {
                return Ok(None);
            }
            Ok(Some(Reply {
                payload: book.partial(id, cursor)?,
                ..status_reply(id, submission)
            }))
        })
        .await
    }
}
