//! The kernel's log file, bounded: whatever a client or a peer makes the kernel log, the file
//! stops growing at [`LOG_LIMIT_BYTES`] with one line that says so, instead of filling the
//! user's disk. (Dropped messages are already summarised: see [`crate::drop_report`].)

use std::io::Write;

/// How large a kernel's log file may grow.
pub const LOG_LIMIT_BYTES: u64 = 64 << 20;

/// A log file that takes writes until it holds `limit` bytes, then only says that it is full.
pub struct BoundedLog<W> {
    inner: W,
    written: u64,
    limit: u64,
    full: bool,
}

impl<W: Write> BoundedLog<W> {
    /// `already` is what the file holds when it is opened (it is appended to).
    pub fn new(inner: W, already: u64, limit: u64) -> Self {
        BoundedLog {
            inner,
            written: already,
            limit,
            full: false,
        }
    }
}

impl<W: Write> Write for BoundedLog<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.full {
            return Ok(buf.len());
        }
        if self.written + buf.len() as u64 > self.limit {
            self.full = true;
            writeln!(
                self.inner,
                "rustpx: this log reached its limit of {} MiB; later lines go to stderr only",
                self.limit >> 20
            )?;
            return Ok(buf.len());
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_stops_at_its_limit_with_one_line_that_says_so() {
        let mut log = BoundedLog::new(Vec::new(), 10, 64);
        for _ in 0..100 {
            log.write_all(b"0123456789\n").unwrap();
        }
        let text = String::from_utf8(log.inner).unwrap();
        assert_eq!(text.matches("0123456789").count(), 4);
        assert_eq!(text.matches("reached its limit").count(), 1);
        assert!(text.len() < 200);
    }
}
