//! Output fences: how the kernel knows it has every line a cell wrote before it says `idle`.
//!
//! evcxr reads its child's stdout on the evaluating thread (a cell ends when the completion
//! marker arrives there), but relays the child's stderr on a thread of its own, so a cell's last
//! `eprintln!` can reach the kernel after the cell has ended. The kernel's runtime therefore
//! writes a numbered fence line on stderr after each run (and on stdout before the completion
//! marker); the output pump waits until the stderr fence matching the stdout one has come
//! through, so nothing is published late under the next cell or dropped.

/// The start of a fence line; the rest is `PID N`.
pub const PREFIX: &str = "RUSTPX_OUTPUT_FENCE ";

/// One fence: the runtime process and its run count (a restarted runtime starts again at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub pid: u32,
    pub n: u64,
}

impl Fence {
    /// The line the runtime writes.
    pub fn line(&self) -> String {
        format!("{PREFIX}{} {}", self.pid, self.n)
    }

    /// The fence in `line`, if it is one.
    pub fn parse(line: &str) -> Option<Fence> {
        let rest = line.trim_end().strip_prefix(PREFIX)?;
        let (pid, n) = rest.split_once(' ')?;
        Some(Fence {
            pid: pid.parse().ok()?,
            n: n.parse().ok()?,
        })
    }

    /// Whether having seen `self` means `target` has come through too.
    pub fn covers(&self, target: &Fence) -> bool {
        self.pid == target.pid && self.n >= target.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_round_trips_and_covers_earlier_ones_of_its_process() {
        let fence = Fence { pid: 42, n: 7 };
        assert_eq!(Fence::parse(&fence.line()), Some(fence));
        assert_eq!(Fence::parse("RUSTPX_OUTPUT_FENCE x 1"), None);
        assert_eq!(Fence::parse("hello"), None);
        assert!(fence.covers(&Fence { pid: 42, n: 6 }));
        assert!(!fence.covers(&Fence { pid: 42, n: 8 }));
        assert!(!fence.covers(&Fence { pid: 43, n: 1 }));
    }
}
