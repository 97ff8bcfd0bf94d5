//! Captures what cells write to stdout and stderr, and reads evcxr's markers out of it.
//!
//! Compiled cells write straight to file descriptors 1 and 2 (each cell's shared object carries
//! its own copy of std, so there is no in-process hook to install). At start the engine points
//! both descriptors at pipes; one thread per pipe forwards the text live to the hub and keeps
//! evcxr's control lines (a caught panic, a displayed value, a `?` error) for the run's reply.
//!
//! Rich output (evcxr's `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT` blocks) is either a
//! display or the cell's value, which evcxr's generated code prints last. A display goes to the
//! hub the moment it is known to be one, in order with the text around it, so that a streamed
//! cell shows it while it runs: at once when the cell has no final expression (the kernel says so
//! with the run), otherwise when anything follows it (text, a block of a MIME type the pending
//! bundle already has, or the `()` of a unit value). What is pending when the run ends is the
//! value.
//! After a run, the runner ends it on each pipe: a reader that has already processed every byte
//! written to its pipe (it reads only while holding its state's lock, and the pipe says how much
//! is unread) is ended by the runner itself, without a wake-up; otherwise the runner writes a
//! sentinel line with a per-process nonce, and when the reader reads it every byte the run wrote
//! has been forwarded, in order. Whoever ends the run on the second pipe also queues the run's
//! reply (built by the runner's [`Finish`]): the runner does not wait for the readers, and a run
//! that wrote nothing to stderr (most do) never wakes the stderr reader (on a pool of hundreds
//! of engines on a few cores, each wake-up of each engine's threads is what a run costs).

use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use rustpx_protocol::{DisplayOutput, MimeBundle, StreamOutput};

use rustpx_runtime::fds;
// evcxr's control lines, as its generated code prints them.
use rustpx_runtime::markers::{
    BEGIN_CONTENT, CHANGED_TYPE, END_CONTENT, PANIC_NOTIFICATION, USER_ERROR,
};

/// How long a line may grow without a newline before its start is forwarded as text.
const LONG_LINE: usize = 64 * 1024;

/// What the capture forwards while a run goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Captured {
    Stream(StreamOutput),
    Display(DisplayOutput),
}

/// Where captured output goes: the link's outgoing queue.
pub type StreamSink = Arc<dyn Fn(Captured) + Send + Sync>;

/// The run that output belongs to now.
#[derive(Debug, Clone, Default)]
struct CurrentRun {
    run_id: String,
    /// False when the cell has no final expression: every rich block is a display.
    may_have_value: bool,
}

/// What the stdout reader learnt about one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StdoutReport {
    pub panicked: bool,
    pub user_error: bool,
    pub changed_type: Vec<String>,
    /// The rich blocks at the very end of the run, merged: the cell's value. (Displays were
    /// forwarded as they happened.)
    pub value: Option<MimeBundle>,
}

/// What the stderr reader learnt about one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StderrReport {
    /// Location and message of the first panic written during the run.
    pub panic: Option<(String, String)>,
}

/// Both readers' reports for one run.
#[derive(Debug, Default)]
pub struct RunReport {
    pub stdout: StdoutReport,
    pub stderr: StderrReport,
}

enum Done {
    Stdout(StdoutReport),
    Stderr(StderrReport),
}

/// Where a reader hands its report at the end of a run.
type DoneSink = Box<dyn Fn(Done) + Send>;

/// What is done with a run's two reports once both readers reached its end: the runner's reply.
pub type Finish = Box<dyn FnOnce(RunReport) + Send>;

/// The end of the current run as the readers reach it.
#[derive(Default)]
struct Ending {
    stdout: Option<StdoutReport>,
    stderr: Option<StderrReport>,
    finish: Option<Finish>,
}

impl Ending {
    /// Takes one reader's report; the second one runs the finish.
    fn reached(ending: &Mutex<Ending>, done: Done, settled: &mpsc::Sender<()>) {
        let mut state = ending.lock().unwrap_or_else(|p| p.into_inner());
        match done {
            Done::Stdout(report) => state.stdout = Some(report),
            Done::Stderr(report) => state.stderr = Some(report),
        }
        if state.stdout.is_none() || state.stderr.is_none() {
            return;
        }
        let report = RunReport {
            stdout: state.stdout.take().unwrap_or_default(),
            stderr: state.stderr.take().unwrap_or_default(),
        };
        let finish = state.finish.take();
        drop(state);
        if let Some(finish) = finish {
            finish(report);
        }
        let _ = settled.send(());
    }
}

/// The capture of fds 1 and 2, installed once at engine start.
pub struct Capture {
    sentinel: String,
    current_run: Arc<Mutex<CurrentRun>>,
    ending: Arc<Mutex<Ending>>,
    /// A message per run both readers finished.
    settled: Receiver<()>,
    /// Whether a run was finished whose end the readers may not have reached yet.
    outstanding: Cell<bool>,
    /// The stdout and stderr readers, in the order of their descriptors (1, 2).
    readers: [SharedReader; 2],
}

/// A reader's state and its pipe, locked by its thread while it reads and by the runner when
/// it ends a run without waking that thread.
struct Shared {
    reader: StreamReader,
    pipe: File,
}

type SharedReader = Arc<Mutex<Shared>>;

impl Capture {
    /// Redirects fds 1 and 2 into pipes and starts their readers. Returns the capture and a
    /// duplicate of the original stderr for the engine's own log.
    pub fn install(sink: StreamSink) -> std::io::Result<(Capture, File)> {
        let log = fds::duplicate(2)?;
        let stdout_reader = fds::redirect_to_pipe(1)?;
        let stderr_reader = fds::redirect_to_pipe(2)?;
        let sentinel = format!("\u{1}RUSTPX_RUN_DONE {}", uuid::Uuid::new_v4().simple());
        let current_run = Arc::new(Mutex::new(CurrentRun::default()));
        let ending = Arc::new(Mutex::new(Ending::default()));
        let (settled_tx, settled) = mpsc::channel();
        let readers = [("stdout", stdout_reader), ("stderr", stderr_reader)].map(|(name, pipe)| {
            let ending = ending.clone();
            let settled_tx = settled_tx.clone();
            let done: DoneSink = Box::new(move |done| Ending::reached(&ending, done, &settled_tx));
            let reader = StreamReader::new(
                name,
                sentinel.clone(),
                current_run.clone(),
                sink.clone(),
                done,
            );
            Arc::new(Mutex::new(Shared { reader, pipe }))
        });
        for shared in &readers {
            pipe::set_nonblocking(&lock(shared).pipe)?;
            spawn_reader(shared.clone());
        }
        Ok((
            Capture {
                sentinel,
                current_run,
                ending,
                settled,
                outstanding: Cell::new(false),
                readers,
            },
            log,
        ))
    }

    /// Output from now on belongs to `run_id`; `may_have_value` is false when the cell has no
    /// final expression (its rich output is all displays). Waits first until the readers are
    /// through with the run before (usually long done).
    pub fn begin(&self, run_id: &str, may_have_value: bool) {
        if self.outstanding.replace(false) {
            // An error means a reader is gone (its pipe closed): nothing more will come.
            let _ = self.settled.recv();
        }
        *self.current_run.lock().unwrap_or_else(|p| p.into_inner()) = CurrentRun {
            run_id: run_id.to_owned(),
            may_have_value,
        };
    }

    /// Marks the end of the run on both pipes and returns at once; the reader that reaches the
    /// mark last calls `finish` with both readers' reports, after it forwarded every byte the
    /// run wrote.
    pub fn finish(&self, finish: Finish) {
        self.ending.lock().unwrap_or_else(|p| p.into_inner()).finish = Some(finish);
        self.outstanding.set(true);
        let line = format!("{}\n", self.sentinel);
        for (fd, shared) in [1, 2].into_iter().zip(&self.readers) {
            // A reader that is not reading now and has nothing unread is caught up: the run
            // ends here. Otherwise (or busy) the sentinel tells it where the run ends.
            if let Ok(mut shared) = shared.try_lock() {
                let Shared { reader, pipe } = &mut *shared;
                if reader.partial.is_empty() && pipe::unread(pipe) == 0 {
                    reader.end_of_run();
                    continue;
                }
            }
            fds::write_all(fd, line.as_bytes());
        }
    }
}

fn lock(shared: &SharedReader) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn_reader(shared: SharedReader) {
    let name = lock(&shared).reader.name;
    let spawned = std::thread::Builder::new()
        .name(format!("capture-{name}"))
        .spawn(move || serve(&shared));
    if let Err(error) = spawned {
        tracing::error!("cannot start the {name} capture thread: {error}");
    }
}

/// A reader's thread: waits for bytes outside the lock, reads and processes them inside it.
fn serve(shared: &SharedReader) {
    let fd = lock(shared).pipe.as_raw_fd();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // The descriptor stays open: `shared`, which owns it, lives as long as this thread.
        if !pipe::wait_readable(fd) {
            return;
        }
        let mut shared = lock(shared);
        let Shared { reader, pipe } = &mut *shared;
        if !reader.drain(pipe, &mut chunk) {
            return;
        }
    }
}

/// One pipe's reader: text to the sink in batches, markers into the run's report.
struct StreamReader {
    name: &'static str,
    sentinel: String,
    current_run: Arc<Mutex<CurrentRun>>,
    sink: StreamSink,
    done: DoneSink,
    pending: String,
    stdout: StdoutReport,
    stderr: StderrReport,
    /// The rich display being read: its MIME type and lines so far.
    content: Option<(String, Vec<String>)>,
    /// Bytes read after the last newline.
    partial: Vec<u8>,
    /// The start of the current line was already forwarded as text (it grew past
    /// [`LONG_LINE`]): the rest of it is text too, never a marker.
    mid_line: bool,
    /// Rich blocks since the last text line, merged: the value if the run ends now.
    trailing: MimeBundle,
    expecting_panic_message: bool,
}

impl StreamReader {
    fn new(
        name: &'static str,
        sentinel: String,
        current_run: Arc<Mutex<CurrentRun>>,
        sink: StreamSink,
        done: DoneSink,
    ) -> Self {
        StreamReader {
            name,
            sentinel,
            current_run,
            sink,
            done,
            pending: String::new(),
            stdout: StdoutReport::default(),
            stderr: StderrReport::default(),
            content: None,
            partial: Vec::new(),
            mid_line: false,
            trailing: MimeBundle::new(),
            expecting_panic_message: false,
        }
    }

    /// Reads and processes what the pipe holds, then forwards the text; false when the pipe
    /// is closed (every writer gone) or broken.
    fn drain(&mut self, pipe: &mut File, chunk: &mut [u8]) -> bool {
        loop {
            match pipe.read(chunk) {
                Ok(0) => {
                    if !self.partial.is_empty() {
                        let rest = std::mem::take(&mut self.partial);
                        self.line(&String::from_utf8_lossy(&rest), false);
                    }
                    self.flush();
                    return false;
                }
                Ok(read) => self.bytes(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // Send what we have when nothing more is waiting, so output shows live.
        self.flush();
        true
    }

    /// Takes the complete lines in `data` (after what was read before it); keeps the rest.
    fn bytes(&mut self, mut data: &[u8]) {
        while let Some(at) = data.iter().position(|b| *b == b'\n') {
            let line = if self.partial.is_empty() {
                String::from_utf8_lossy(&data[..at]).into_owned()
            } else {
                self.partial.extend_from_slice(&data[..at]);
                let whole = std::mem::take(&mut self.partial);
                String::from_utf8_lossy(&whole).into_owned()
            };
            self.line(&line, true);
            data = &data[at + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > LONG_LINE && self.content.is_none() {
            self.forward_line_start();
        }
    }

    /// Forwards the start of a line that grew past [`LONG_LINE`] without a newline (a cell
    /// printing dots or a progress count with `print!`): it shows while the cell runs, and the
    /// engine does not keep it. The last bytes stay behind, as many as the sentinel has, so a
    /// sentinel written after the text is still whole at the line's end; the cut is at a
    /// character boundary. Lines inside a rich block (an image's base64) are kept whole.
    fn forward_line_start(&mut self) {
        let mut cut = self.partial.len().saturating_sub(self.sentinel.len());
        while cut > 0 && (self.partial[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        let start: Vec<u8> = self.partial.drain(..cut).collect();
        if !self.mid_line && self.name == "stdout" {
            // Blocks followed by ordinary output were displays, not the value.
            self.send_trailing();
        }
        self.mid_line = true;
        self.text(&String::from_utf8_lossy(&start), false);
    }

    fn line(&mut self, line: &str, newline: bool) {
        if let Some(before) = line.strip_suffix(self.sentinel.as_str()) {
            if !before.is_empty() {
                self.text(before, false);
            }
            self.end_of_run();
            return;
        }
        if std::mem::take(&mut self.mid_line) {
            self.text(line, newline);
            return;
        }
        if self.name == "stderr" {
            self.stderr_line(line);
            self.text(line, newline);
            return;
        }
        if let Some((mime, lines)) = &mut self.content {
            if line == END_CONTENT || line == PANIC_NOTIFICATION {
                let (mime, content) = (std::mem::take(mime), lines.join("\n"));
                self.content = None;
                self.block(mime, content);
                if line == PANIC_NOTIFICATION {
                    self.stdout.panicked = true;
                }
            } else {
                lines.push(line.to_owned());
            }
            return;
        }
        if let Some(mime) = line.strip_prefix(BEGIN_CONTENT) {
            self.content = Some((mime.trim().to_owned(), Vec::new()));
        } else if line == PANIC_NOTIFICATION {
            self.stdout.panicked = true;
        } else if line == USER_ERROR {
            self.stdout.user_error = true;
        } else if let Some(name) = line.strip_prefix(CHANGED_TYPE) {
            self.stdout.changed_type.push(name.to_owned());
        } else {
            // Blocks followed by ordinary output were displays, not the value.
            self.send_trailing();
            self.text(line, newline);
        }
    }

    /// One complete rich block: a display now, or part of what may be the value.
    fn block(&mut self, mime: String, content: String) {
        let may_have_value = self
            .current_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .may_have_value;
        if !may_have_value {
            self.send_display(MimeBundle::from([(mime, content)]));
            return;
        }
        // A bundle holds each type once, and a unit value (`()`, shown as nothing) ends the
        // cell: either way what was pending is followed by something, so it was a display.
        let unit = mime == "text/plain" && content == "()";
        if unit || self.trailing.contains_key(&mime) {
            self.send_trailing();
        }
        self.trailing.insert(mime, content);
    }

    fn send_trailing(&mut self) {
        if !self.trailing.is_empty() {
            let bundle = std::mem::take(&mut self.trailing);
            self.send_display(bundle);
        }
    }

    /// Forwards a display after the text written before it.
    fn send_display(&mut self, data: MimeBundle) {
        self.flush();
        let run_id = self.run_id();
        (self.sink)(Captured::Display(DisplayOutput { run_id, data }));
    }

    fn run_id(&self) -> String {
        self.current_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .run_id
            .clone()
    }

    fn stderr_line(&mut self, line: &str) {
        if self.expecting_panic_message {
            self.expecting_panic_message = false;
            if let Some((_, message)) = &mut self.stderr.panic {
                *message = line.to_owned();
            }
        } else if self.stderr.panic.is_none() {
            if let Some(location) = rustpx_protocol::panic_location(line) {
                self.stderr.panic = Some((location.to_owned(), String::new()));
                self.expecting_panic_message = true;
            }
        }
    }

    fn text(&mut self, text: &str, newline: bool) {
        self.pending.push_str(text);
        if newline {
            self.pending.push('\n');
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let run_id = self.run_id();
        (self.sink)(Captured::Stream(StreamOutput {
            run_id,
            name: self.name.to_owned(),
            text: std::mem::take(&mut self.pending),
        }));
    }

    fn end_of_run(&mut self) {
        self.mid_line = false;
        self.flush();
        let report = if self.name == "stderr" {
            self.expecting_panic_message = false;
            Done::Stderr(std::mem::take(&mut self.stderr))
        } else {
            let mut stdout = std::mem::take(&mut self.stdout);
            let trailing = std::mem::take(&mut self.trailing);
            if !trailing.is_empty() {
                stdout.value = Some(trailing);
            }
            self.content = None;
            Done::Stdout(stdout)
        };
        (self.done)(report);
    }
}

pub(crate) mod pipe;
#[cfg(test)]
mod tests;
