//! The direct view's `apply` of the Rust API: the load-balanced scheduler's submission, with
//! one task per target engine pinned to it ([`Submission::pinned`]), so that it shares the
//! serving cell, the type check and the results of `apply` and `map`. What only a pinned task
//! needs is here: its tasks, and failing a task whose engine died, since no other engine may
//! take it.
//!
//! [`Submission::pinned`]: super::super::api::scheduler::Submission::pinned

use rustpx_protocol::EngineId;

use super::super::api::scheduler::Scheduler;
use super::super::lock;
use super::super::map_server::MapJob;
use super::PxService;

impl PxService {
    /// The tasks of a direct `apply`: the payload's one chunk of one argument, once per engine,
    /// and each engine with the incarnation it has now.
    pub(super) fn direct_tasks(
        &self,
        payload: &[u8],
        engines: &[EngineId],
    ) -> Result<(MapJob, Vec<(EngineId, u64)>), String> {
        let one = MapJob::from_chunk_file(payload)
            .map_err(|error| format!("the call's argument: {error}"))?;
        if one.total_chunks() != 1 || one.total_items() != 1 {
            return Err(format!(
                "a direct apply sends one argument, not {} in {} chunks",
                one.total_items(),
                one.total_chunks()
            ));
        }
        // One chunk of a bounded request repeated per engine: at most engines × 1 GiB would be
        // too much, so the repeated argument is bounded on its own.
        let total = (payload.len() as u64).saturating_mul(engines.len() as u64);
        if total > MAX_REPEATED {
            return Err(format!(
                "the argument ({} bytes) sent to {} engines would hold {total} bytes in the kernel, over its {} MiB limit; push the value once with push_sync and apply a function that reads it",
                payload.len(),
                engines.len(),
                MAX_REPEATED >> 20
            ));
        }
        let job = MapJob::from_chunk_file(&payload.repeat(engines.len()))
            .map_err(|error| format!("the call's argument: {error}"))?;
        let live = self.incarnations(engines).map_err(|r| r.evalue)?;
        if live.len() != engines.len() {
            let gone: Vec<String> = engines
                .iter()
                .filter(|id| !live.iter().any(|(live, _)| live == *id))
                .map(ToString::to_string)
                .collect();
            return Err(format!(
                "EngineError: engine {} is not running",
                gone.join(", ")
            ));
        }
        Ok((job, live))
    }

    /// Fails each pinned task of submission `id` whose engine died or restarted since.
    pub(super) fn api_fail_lost_pinned(
        &mut self,
        scheduler: &Scheduler,
        id: u64,
    ) -> Result<(), String> {
        // Asked at every turn of every wait: the hub's engines are read only for a direct
        // `apply` still running.
        let pinned_and_running = lock(&scheduler.book)
            .submissions
            .get(&id)
            .is_some_and(|s| s.pinned.is_some() && !s.ready());
        if !pinned_and_running {
            return Ok(());
        }
        let live = self
            .machinery()
            .map_err(|r| r.evalue)?
            .hub
            .live_incarnations();
        if lock(&scheduler.book).fail_lost_pinned(id, &live) {
            scheduler.changed.notify_waiters();
        }
        Ok(())
    }
}

/// The most a direct `apply`'s argument may take once repeated for every engine.
const MAX_REPEATED: u64 = 1 << 30;
