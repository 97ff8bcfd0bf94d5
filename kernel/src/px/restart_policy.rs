//! `%pxconfig --restart-dead [N]`: which dead engines the pool starts again, and what the
//! notebook is told about it.
//!
//! Off by default, as in ipyparallel: an engine that dies is reported and leaves `all`. When
//! on, an engine that dies on its own (not stopped, restarted or interrupted by the kernel) is
//! started again with the same id and launcher, at most N times per id, so that a run nobody
//! watches keeps its engines while an engine that dies at every start is given up on.

use std::collections::HashMap;

use rustpx_protocol::EngineId;

/// What happened when a dead engine came under the policy: shown on the next magic.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartNotice {
    pub id: EngineId,
    /// Whether a new process was started (the kernel waits for it to register).
    pub restarted: bool,
    pub text: String,
}

/// The restart limit, the restarts used per id, and the notices not shown yet.
#[derive(Debug, Default)]
pub struct RestartPolicy {
    /// Restarts allowed per engine id; 0 is off.
    limit: u32,
    used: HashMap<EngineId, u32>,
    notices: Vec<RestartNotice>,
}

/// The most notices kept unshown: a crash loop of many engines must not grow memory while
/// nobody runs a cell.
const MAX_NOTICES: usize = 4096;

impl RestartPolicy {
    /// Sets the limit; the restarts already used are forgotten, so a new limit is a fresh start.
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
        self.used.clear();
    }

    /// Engine `id` died on its own (`why`, holding `lost`): whether to start it again, which
    /// counts against its limit. Records the notice either way once the policy is on.
    pub fn on_death(&mut self, id: EngineId, why: &str, lost: &[String]) -> bool {
        if self.limit == 0 {
            return false;
        }
        let used = self.used.entry(id).or_default();
        let lost = if lost.is_empty() {
            "it held no variables".to_owned()
        } else {
            format!("variables lost: {}", lost.join(", "))
        };
        let restart = *used < self.limit;
        let text = if restart {
            *used += 1;
            format!(
                "engine {id} died ({why}; {lost}): restarted it with the same id (restart {} of {}, --restart-dead)",
                *used, self.limit
            )
        } else {
            format!(
                "engine {id} died ({why}; {lost}) and was restarted {} times already: not restarting it again (%pxconfig --restart-dead N sets a new limit; %engines restart {id} starts it by hand)",
                self.limit
            )
        };
        self.push(RestartNotice {
            id,
            restarted: restart,
            text,
        });
        restart
    }

    /// A restart the policy decided on could not be started.
    pub fn restart_failed(&mut self, id: EngineId, error: &str) {
        self.push(RestartNotice {
            id,
            restarted: false,
            text: format!("engine {id} could not be restarted: {error}"),
        });
    }

    fn push(&mut self, notice: RestartNotice) {
        if self.notices.len() < MAX_NOTICES {
            self.notices.push(notice);
        }
    }

    pub fn take_notices(&mut self) -> Vec<RestartNotice> {
        std::mem::take(&mut self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_says_nothing() {
        let mut policy = RestartPolicy::default();
        assert!(!policy.on_death(1, "killed by signal 9", &[]));
        assert!(policy.take_notices().is_empty());
    }

    #[test]
    fn restarts_each_id_up_to_the_limit_then_says_it_stopped() {
        let mut policy = RestartPolicy::default();
        policy.set_limit(2);
        assert!(policy.on_death(1, "killed by signal 9", &["x".into()]));
        assert!(policy.on_death(0, "exited with status 3", &[]));
        assert!(policy.on_death(1, "killed by signal 9", &[]));
        assert!(!policy.on_death(1, "killed by signal 9", &[]));
        let notices = policy.take_notices();
        assert_eq!(
            notices[0].text,
            "engine 1 died (killed by signal 9; variables lost: x): restarted it with the same id (restart 1 of 2, --restart-dead)"
        );
        assert!(notices[2].text.contains("restart 2 of 2"));
        assert!(!notices[3].restarted);
        assert!(notices[3].text.contains("not restarting it again"));
        // A new limit starts the count again.
        policy.set_limit(1);
        assert!(policy.on_death(1, "killed by signal 9", &[]));
    }
}
