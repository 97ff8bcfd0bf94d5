//! Forwards the user's stdout and stderr from evcxr to iopub while a cell runs.
//!
//! evcxr hands us one line at a time on two channels. Two threads publish them as `stream`
//! messages under the parent of the running cell, so output shows live, not at the end. Before a
//! cell's result and its `idle` go out, [`OutputPump::flush`] makes sure every line taken off the
//! channels has been published: each thread only takes lines while holding its stream's lock, so
//! holding both locks means nothing is in flight.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rustpx_wire::WireMessage;
use serde_json::json;

use crate::frontend::Publisher;

/// How long a pump thread waits for a line before letting a flush in.
const POLL: Duration = Duration::from_millis(15);

/// A panic seen on the cell's stderr: rust prints `thread '…' panicked at FILE:L:C:` then the
/// message on the next line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PanicReport {
    pub location: String,
    pub message: String,
}

#[derive(Default)]
struct StreamState {
    parent: Option<WireMessage>,
    panic: Option<PanicReport>,
    expecting_panic_message: bool,
}

/// One stream (stdout or stderr): its channel and the lock that makes flushing exact.
struct Stream {
    name: &'static str,
    lines: Receiver<String>,
    state: Mutex<StreamState>,
}

/// The two pump threads and their shared state.
#[derive(Clone)]
pub struct OutputPump {
    streams: Arc<[Stream; 2]>,
    publisher: Publisher,
}

impl OutputPump {
    /// Starts one thread per stream.
    pub fn start(
        stdout: Receiver<String>,
        stderr: Receiver<String>,
        publisher: Publisher,
    ) -> OutputPump {
        let streams = Arc::new([
            Stream {
                name: "stdout",
                lines: stdout,
                state: Mutex::default(),
            },
            Stream {
                name: "stderr",
                lines: stderr,
                state: Mutex::default(),
            },
        ]);
        let pump = OutputPump { streams, publisher };
        for index in 0..2 {
            let pump = pump.clone();
            std::thread::Builder::new()
                .name(format!("pump-{}", pump.streams[index].name))
                .spawn(move || pump.run(index))
                .ok();
        }
        pump
    }

    /// Output from now on belongs to `parent` (or is dropped with `None`, between cells).
    pub fn set_parent(&self, parent: Option<WireMessage>) {
        for stream in self.streams.iter() {
            let mut state = lock(&stream.state);
            state.parent = parent.clone();
            state.panic = None;
            state.expecting_panic_message = false;
        }
    }

    /// The panic the stderr pump has seen so far, without taking it (a panic's message line
    /// follows its headline, and may not have been read yet).
    pub fn panic_so_far(&self) -> Option<PanicReport> {
        self.streams
            .iter()
            .find_map(|stream| lock(&stream.state).panic.clone())
    }

    /// Publishes everything still queued and returns the panic seen during the cell, if any.
    pub fn flush(&self) -> Option<PanicReport> {
        let mut panic = None;
        for stream in self.streams.iter() {
            let mut state = lock(&stream.state);
            let batch: Vec<String> = stream.lines.try_iter().collect();
            self.publish(stream.name, &mut state, batch);
            if let Some(report) = state.panic.take() {
                panic = Some(report);
            }
        }
        panic
    }

    fn run(&self, index: usize) {
        let stream = &self.streams[index];
        loop {
            let mut state = lock(&stream.state);
            match stream.lines.recv_timeout(POLL) {
                Ok(first) => {
                    let mut batch = vec![first];
                    batch.extend(stream.lines.try_iter());
                    self.publish(stream.name, &mut state, batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            drop(state);
            // Let a flush take the lock between polls.
            std::thread::yield_now();
        }
    }

    fn publish(&self, name: &str, state: &mut StreamState, batch: Vec<String>) {
        if batch.is_empty() {
            return;
        }
        if name == "stderr" {
            for line in &batch {
                note_panic(state, line);
            }
        }
        let Some(parent) = &state.parent else {
            return;
        };
        let mut text = batch.join("\n");
        text.push('\n');
        self.publisher
            .publish(parent, "stream", json!({"name": name, "text": text}));
    }
}

/// Recognises rust's panic headline and the message line after it.
fn note_panic(state: &mut StreamState, line: &str) {
    if state.expecting_panic_message {
        state.expecting_panic_message = false;
        if let Some(report) = &mut state.panic {
            report.message = line.to_owned();
        }
        return;
    }
    if let Some(location) = rustpx_protocol::panic_location(line) {
        state.panic = Some(PanicReport {
            location: location.to_owned(),
            message: String::new(),
        });
        state.expecting_panic_message = true;
    }
}

fn lock(state: &Mutex<StreamState>) -> MutexGuard<'_, StreamState> {
    // A poisoned lock only means a pump thread panicked mid-publish; the state is still usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_headline_and_message_are_recognised() {
        let mut state = StreamState::default();
        note_panic(
            &mut state,
            "thread '<unnamed>' panicked at src/lib.rs:40:1:",
        );
        note_panic(&mut state, "boom");
        note_panic(&mut state, "note: run with `RUST_BACKTRACE=1`");
        assert_eq!(
            state.panic,
            Some(PanicReport {
                location: "src/lib.rs:40:1".into(),
                message: "boom".into()
            })
        );
    }

    #[test]
    fn ordinary_stderr_is_not_a_panic() {
        let mut state = StreamState::default();
        note_panic(&mut state, "warning: something");
        assert!(state.panic.is_none());
    }
}
