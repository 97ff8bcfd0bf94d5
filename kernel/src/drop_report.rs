//! Reporting of messages dropped before they were authenticated, at a bounded rate.
//!
//! Anyone who can reach a port can send it messages that fail their signature check. Logging each
//! one (about 150 bytes at WARN) let one peer write gigabytes an hour into the user's home. A
//! channel now logs the first drop of each minute with its reason, and when that minute is over
//! and more came, one line that counts them: at most two lines a minute per channel, whatever the
//! peer sends.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long one report covers.
const WINDOW: Duration = Duration::from_secs(60);

/// The drops of one channel (a Jupyter socket, the engine hub).
pub struct DropReport {
    channel: &'static str,
    window_start: Option<Instant>,
    /// Drops in the current window, the first (already logged) included.
    count: u64,
}

impl DropReport {
    pub fn new(channel: &'static str) -> DropReport {
        DropReport {
            channel,
            window_start: None,
            count: 0,
        }
    }

    /// Counts one dropped message and logs what is due.
    pub fn dropped(&mut self, why: &dyn Display) {
        for line in self.lines_at(Instant::now(), why) {
            tracing::warn!("{line}");
        }
    }

    /// The lines a drop at `now` logs: the summary of the window that ended (if more than its
    /// first drop came), then this drop's reason if it opens a new window.
    fn lines_at(&mut self, now: Instant, why: &dyn Display) -> Vec<String> {
        let open = self
            .window_start
            .is_some_and(|start| now.duration_since(start) < WINDOW);
        if open {
            self.count += 1;
            return Vec::new();
        }
        let mut lines = Vec::new();
        if self.count > 1 {
            lines.push(format!(
                "{}: dropped {} more messages that failed authentication or decoding in the last minute",
                self.channel,
                self.count - 1
            ));
        }
        lines.push(format!(
            "{}: dropped a message: {why} (further drops in the next minute are counted, not logged)",
            self.channel
        ));
        self.window_start = Some(now);
        self.count = 1;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_drop_is_logged_with_its_reason_and_the_rest_are_counted() {
        let mut report = DropReport::new("shell");
        let start = Instant::now();
        let first = report.lines_at(start, &"bad signature");
        assert_eq!(first.len(), 1);
        assert!(first[0].starts_with("shell: dropped a message: bad signature"));
        for i in 1..20_000u64 {
            let at = start + Duration::from_millis(i % 59_000);
            assert!(report.lines_at(at, &"bad signature").is_empty());
        }
        let next = report.lines_at(start + WINDOW, &"bad signature");
        assert_eq!(
            next[0],
            "shell: dropped 19999 more messages that failed authentication or decoding in the last minute"
        );
        assert_eq!(next.len(), 2);
    }

    #[test]
    fn a_lone_drop_after_a_quiet_minute_has_no_summary() {
        let mut report = DropReport::new("hub");
        let start = Instant::now();
        report.lines_at(start, &"x");
        let later = report.lines_at(start + WINDOW * 2, &"y");
        assert_eq!(later.len(), 1);
        assert!(later[0].contains(": y "));
    }
}
