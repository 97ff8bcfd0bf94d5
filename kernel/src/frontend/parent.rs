//! Jupyter's rule for kernels whose client dies: the client puts its pid in `JPY_PARENT_PID`,
//! and the kernel leaves when that process is gone. Without it a kernel whose notebook server or
//! console was killed (`kill -9`, a crashed terminal) would run on forever with its engines.
//!
//! A client that started the kernel itself is its parent: its death re-parents the kernel (to
//! init or a subreaper), so `getppid()` changing says it. Another process (a kernel started by a
//! launcher that names the real client) is watched by its pid, and by its start time so that a
//! recycled pid is not mistaken for the client.

use std::time::Duration;

/// The environment variable Jupyter clients set to their own pid.
pub const PARENT_PID_ENV: &str = "JPY_PARENT_PID";

/// How often the client is looked at: a dead client is noticed within this.
const POLL: Duration = Duration::from_millis(200);

/// The client process the kernel lives for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// Our own parent process: gone when `getppid()` no longer names it.
    Own(u32),
    /// Another process: gone when its pid no longer exists, is a zombie, or was reused.
    Other { pid: u32, start_time: u64 },
}

impl Parent {
    /// The client named by `$JPY_PARENT_PID`, if there is one to watch. Pid 1 is never watched
    /// (init does not go away); an unusable value is logged and ignored.
    pub fn from_env() -> Option<Parent> {
        let value = std::env::var(PARENT_PID_ENV).ok()?;
        let parsed = Parent::from_value(&value, own_parent());
        if parsed.is_none() && !value.trim().is_empty() && value.trim() != "1" {
            tracing::info!(
                "{PARENT_PID_ENV}={value:?} names no live process; the kernel will not exit with its client"
            );
        }
        parsed
    }

    fn from_value(value: &str, own_parent: u32) -> Option<Parent> {
        let pid: u32 = value.trim().parse().ok()?;
        if pid <= 1 {
            return None;
        }
        if pid == own_parent {
            return Some(Parent::Own(pid));
        }
        let (_, start_time) = process_stat(pid)?;
        Some(Parent::Other { pid, start_time })
    }

    pub fn pid(&self) -> u32 {
        match self {
            Parent::Own(pid) | Parent::Other { pid, .. } => *pid,
        }
    }

    /// Whether the client has ended.
    pub fn is_gone(&self) -> bool {
        match self {
            Parent::Own(pid) => own_parent() != *pid,
            Parent::Other { pid, start_time } => match process_stat(*pid) {
                Some((state, started)) => state == 'Z' || state == 'X' || started != *start_time,
                None => true,
            },
        }
    }

    /// Resolves once the client has ended.
    pub async fn gone(self) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.is_gone() {
                return;
            }
        }
    }
}

/// Resolves when the client named by `$JPY_PARENT_PID` has ended; never when there is none.
pub async fn client_gone() -> u32 {
    match Parent::from_env() {
        Some(parent) => {
            tracing::debug!("watching the client process {}", parent.pid());
            let pid = parent.pid();
            parent.gone().await;
            pid
        }
        None => std::future::pending().await,
    }
}

fn own_parent() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let pid = unsafe { libc::getppid() };
    u32::try_from(pid).unwrap_or(0)
}

/// The state letter and start time (clock ticks since boot) of process `pid`, from
/// `/proc/PID/stat`; `None` when there is no such process.
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// The command name in field 2 may hold spaces and parentheses: fields are counted after the
/// last `)`. There the state is the first field and the start time the twentieth (field 22).
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_parent_is_watched_by_getppid() {
        let own = own_parent();
        assert_eq!(
            Parent::from_value(&own.to_string(), own),
            Some(Parent::Own(own))
        );
        assert!(!Parent::Own(own).is_gone());
        assert!(Parent::Own(own + 1).is_gone());
    }

    #[test]
    fn init_and_nonsense_are_not_watched() {
        assert_eq!(Parent::from_value("1", 77), None);
        assert_eq!(Parent::from_value("0", 77), None);
        assert_eq!(Parent::from_value("not a pid", 77), None);
    }

    #[test]
    fn another_process_is_gone_once_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let parent = Parent::from_value(&child.id().to_string(), own_parent())
            .expect("a live process is watched");
        assert!(matches!(parent, Parent::Other { .. }));
        assert!(!parent.is_gone());
        child.kill().expect("kill sleep");
        // Unreaped, it is a zombie: gone already.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !parent.is_gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(parent.is_gone());
        child.wait().expect("reap sleep");
        assert!(parent.is_gone());
    }

    #[test]
    fn a_recycled_pid_is_not_the_client() {
        let own = std::process::id();
        let (_, start_time) = process_stat(own).expect("our own stat");
        let recycled = Parent::Other {
            pid: own,
            start_time: start_time + 1,
        };
        assert!(recycled.is_gone());
        let same = Parent::Other {
            pid: own,
            start_time,
        };
        assert!(!same.is_gone());
    }
}
