//! Forwards the user's stdout and stderr from evcxr to iopub while a cell runs.
//!
//! evcxr hands us one line at a time on two channels. Two threads publish them as `stream`
//! messages under the parent of the running cell, so output shows live, not at the end. Before a
//! cell's result and its `idle` go out, [`OutputPump::flush`] asks each thread to publish what it
//! has: stdout first, which evcxr forwards before the cell ends, and which names the runtime's
//! last [fence](super::fence); then stderr, whose thread keeps reading until that fence arrives
//! (evcxr relays stderr on a thread of its own, so it can lag). The threads block on their
//! channels without holding a lock, and a flush costs no polling delay.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use rustpx_wire::WireMessage;

use super::fence::Fence;
use crate::iopub::{self, Publisher};

/// How long a flush waits for stderr to catch up with its fence (a runtime that died wrote no
/// fence; its stderr is published as it comes).
const FENCE_WAIT: Duration = Duration::from_secs(2);

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
    /// The last fence this stream's thread published past.
    fence: Option<Fence>,
}

/// A flush asked of one stream's thread: publish everything, reading on until `until` has come
/// through; answer with the stream's last fence and the panic it saw.
struct FlushRequest {
    until: Option<Fence>,
    answer: Sender<(Option<Fence>, Option<PanicReport>)>,
}

/// One stream (stdout or stderr): its state and the way to ask its thread for a flush.
struct Stream {
    name: &'static str,
    state: Mutex<StreamState>,
    flushes: Sender<FlushRequest>,
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
        let (stdout_flushes, stdout_requests) = crossbeam_channel::unbounded();
        let (stderr_flushes, stderr_requests) = crossbeam_channel::unbounded();
        let streams = Arc::new([
            Stream {
                name: "stdout",
                state: Mutex::default(),
                flushes: stdout_flushes,
            },
            Stream {
                name: "stderr",
                state: Mutex::default(),
                flushes: stderr_flushes,
            },
        ]);
        let pump = OutputPump { streams, publisher };
        for (index, (lines, requests)) in [(stdout, stdout_requests), (stderr, stderr_requests)]
            .into_iter()
            .enumerate()
        {
            let pump = pump.clone();
            std::thread::Builder::new()
                .name(format!("pump-{}", pump.streams[index].name))
                .spawn(move || pump.run(index, lines, requests))
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

    /// Publishes everything the cell wrote and returns the panic seen during it, if any.
    pub fn flush(&self) -> Option<PanicReport> {
        self.flush_until(None)
    }

    /// As [`flush`](Self::flush), with the stderr fence to wait for given (a cell run through
    /// the side door writes no stdout fence); without it, stdout's last fence.
    pub fn flush_until(&self, stderr_fence: Option<Fence>) -> Option<PanicReport> {
        let (stdout_fence, stdout_panic) = self.ask(0, None);
        let (_, stderr_panic) = self.ask(1, stderr_fence.or(stdout_fence));
        stderr_panic.or(stdout_panic)
    }

    fn ask(&self, index: usize, until: Option<Fence>) -> (Option<Fence>, Option<PanicReport>) {
        let (answer, answered) = crossbeam_channel::bounded(1);
        let request = FlushRequest { until, answer };
        if self.streams[index].flushes.send(request).is_err() {
            return (None, None);
        }
        answered
            .recv_timeout(FENCE_WAIT + Duration::from_secs(1))
            .unwrap_or((None, None))
    }

    fn run(&self, index: usize, lines: Receiver<String>, requests: Receiver<FlushRequest>) {
        let stream = &self.streams[index];
        loop {
            select! {
                recv(lines) -> line => {
                    let Ok(first) = line else { return };
                    let mut batch = vec![first];
                    batch.extend(lines.try_iter());
                    self.publish(stream.name, &mut lock(&stream.state), batch);
                }
                recv(requests) -> request => {
                    let Ok(request) = request else { return };
                    self.answer(stream, &lines, request);
                }
            }
        }
    }

    /// Publishes what is queued, then keeps reading (up to [`FENCE_WAIT`]) until the fence.
    fn answer(&self, stream: &Stream, lines: &Receiver<String>, request: FlushRequest) {
        let deadline = Instant::now() + FENCE_WAIT;
        let batch: Vec<String> = lines.try_iter().collect();
        self.publish(stream.name, &mut lock(&stream.state), batch);
        if let Some(target) = request.until {
            while !lock(&stream.state).fence.is_some_and(|f| f.covers(&target)) {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(first) => {
                        let mut batch = vec![first];
                        batch.extend(lines.try_iter());
                        self.publish(stream.name, &mut lock(&stream.state), batch);
                    }
                    Err(_) => {
                        tracing::debug!("{} fence {target:?} did not arrive", stream.name);
                        break;
                    }
                }
            }
        }
        let mut state = lock(&stream.state);
        let _ = request.answer.send((state.fence, state.panic.take()));
    }

    fn publish(&self, name: &str, state: &mut StreamState, batch: Vec<String>) {
        let mut shown = Vec::with_capacity(batch.len());
        for line in batch {
            match Fence::parse(&line) {
                Some(fence) => state.fence = Some(fence),
                None => shown.push(line),
            }
        }
        if shown.is_empty() {
            return;
        }
        if name == "stderr" {
            for line in &shown {
                note_panic(state, line);
            }
        }
        let Some(parent) = &state.parent else {
            return;
        };
        let mut text = shown.join("\n");
        text.push('\n');
        self.publisher.stream(parent, iopub::stdio(name), text);
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
