//! Heartbeats: how often engines send them, and when silence means an engine is gone.
//!
//! Every heartbeat costs the hub a verified, opened message and a signed, sealed answer. At a
//! fixed half second that is 4,000 messages a second for 1,024 engines, as much work as a
//! `%px` on all of them every half second, on a machine that may have two cores. So the period
//! grows with the pool (the hub tells each engine in its answer), and the time after which a
//! silent engine is declared dead grows with it, as ipyparallel's heart monitor allows ten
//! missed beats.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Hub, ToEngine};
use crate::EngineId;

/// An engine not heard from for this long is declared dead, in a pool small enough for
/// heartbeats every half second.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The period of a small pool: an engine that stops answering is noticed within seconds.
const SHORTEST_PERIOD: Duration = Duration::from_millis(500);
/// The period of the largest pools: one heartbeat in and out per engine every 3 s.
const LONGEST_PERIOD: Duration = Duration::from_secs(3);
/// The period grows by this much per live engine (500 ms at 128 engines, 1 s at 256).
const PER_ENGINE: Duration = Duration::from_millis(4);
/// Heartbeats an engine may miss before it is declared dead.
const MISSED_BEATS: u32 = 10;

/// The heartbeat period for a pool of `live` engines.
pub fn heartbeat_period(live: usize) -> Duration {
    let live = u32::try_from(live).unwrap_or(u32::MAX);
    PER_ENGINE
        .saturating_mul(live)
        .clamp(SHORTEST_PERIOD, LONGEST_PERIOD)
}

/// How long an engine may be silent at `period` before it is declared dead.
fn silence_allowed(period: Duration) -> Duration {
    HEARTBEAT_TIMEOUT.max(period.saturating_mul(MISSED_BEATS))
}

impl Hub {
    /// Declares dead the engines not heard from within [`HEARTBEAT_TIMEOUT`] (more in a large
    /// pool) of `now`; they are among the departures ([`Hub::take_departures`]), to be killed
    /// by the pool. Also sets the period the next heartbeat answers ask for.
    pub fn check_heartbeats(&mut self, now: Instant) {
        let live = self.engines.values().filter(|e| e.alive()).count();
        // A pool that just grew keeps the longer allowance until its engines heard of the
        // new period; one that shrank allows the longer of the two for the same reason.
        let period = heartbeat_period(live);
        let allowed = silence_allowed(self.heartbeat_period.max(period));
        self.heartbeat_period = period;
        let silent: Vec<(EngineId, f64)> = self
            .engines
            .values()
            .filter(|e| e.alive() && now.duration_since(e.last_seen) > allowed)
            .map(|e| (e.id, now.duration_since(e.last_seen).as_secs_f64()))
            .collect();
        for (id, seconds) in silent {
            self.departed(
                id,
                &format!(
                    "no heartbeat for {seconds:.1} s; the process is hung or stopped, or its host is unreachable"
                ),
            );
        }
    }

    /// Answers a sign of life from the engine at `identity` with the heartbeat period to keep.
    pub(super) fn answer_heartbeat(&mut self, identity: &Bytes, now: Instant) {
        if let Some(engine) = self
            .engine_by_identity(identity)
            .and_then(|id| self.engines.get_mut(&id))
        {
            engine.last_answered = now;
        }
        let period = self.heartbeat_period;
        self.send(identity, ToEngine::Heartbeat { period });
    }

    /// A piece of a large message from engine `id`: while it drains, the engine's heartbeats
    /// wait behind it, so the pieces are answered in their place, at most once a period, and the
    /// engine hears the hub too.
    pub(super) fn piece_arrived(&mut self, id: EngineId, identity: &Bytes, now: Instant) {
        let due = self
            .engines
            .get(&id)
            .is_some_and(|e| now.duration_since(e.last_answered) >= self.heartbeat_period);
        if due {
            self.answer_heartbeat(identity, now);
        }
    }

    /// The period heartbeat answers currently ask for.
    pub fn heartbeat_period(&self) -> Duration {
        self.heartbeat_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pools_beat_every_half_second_and_large_ones_slower_up_to_three_seconds() {
        assert_eq!(heartbeat_period(1), Duration::from_millis(500));
        assert_eq!(heartbeat_period(64), Duration::from_millis(500));
        assert_eq!(heartbeat_period(256), Duration::from_millis(1024));
        assert_eq!(heartbeat_period(1024), Duration::from_secs(3));
        assert_eq!(heartbeat_period(usize::MAX), Duration::from_secs(3));
    }

    #[test]
    fn silence_allowed_is_ten_periods_and_never_under_five_seconds() {
        assert_eq!(
            silence_allowed(Duration::from_millis(500)),
            HEARTBEAT_TIMEOUT
        );
        assert_eq!(
            silence_allowed(Duration::from_secs(3)),
            Duration::from_secs(30)
        );
    }
}
