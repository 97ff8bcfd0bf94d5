//! The plain context's child process: evcxr's runtime protocol, plus a side door for re-runs.
//!
//! evcxr runs each compiled cell by writing `LOAD_AND_RUN <so> <fn>` to its child's stdin and
//! reading the child's stdout until `EVCXR_EXECUTION_COMPLETE`. Started with
//! [`RUNTIME_ENV`]` = "ADDRESS TOKEN"`, this binary speaks that protocol and also serves the
//! kernel over a loopback socket ([`super::rerun`] is the other end):
//!
//! - `LAST` answers `LAST <runs> <so> <fn>`: how many cells evcxr has run here, and the last one.
//! - `RUN <so> <fn>` runs that object's function again against the same variables and answers
//!   `DONE <n>` and the `n` bytes the cell wrote to stdout, which are captured because evcxr is
//!   not reading then (it would take a stray marker for the next cell's), or `FAILED <reason>`.
//!
//! One thread holds the variable store and serves both, so a re-run never overlaps a cell; it
//! reads stdin without buffering, because a running cell reads its own input (evcxr's
//! `input` requests) from the same descriptor.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustpx_runtime::fds::{self, CaptureError};
use rustpx_runtime::markers::{EXECUTION_COMPLETE, LOAD_AND_RUN};
use rustpx_runtime::LoadError;

use super::fence::Fence;

/// Set in the child's environment by the evaluator: `ADDRESS TOKEN` of its re-run listener.
pub const RUNTIME_ENV: &str = "RUSTPX_PLAIN_RUNTIME";

/// If this process is the plain context's child, serves until evcxr closes stdin, and exits.
pub fn run_if_requested() {
    let Ok(spec) = std::env::var(RUNTIME_ENV) else {
        return;
    };
    let code = match serve(&spec) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("rustpx runtime: {error}");
            99
        }
    };
    std::process::exit(code);
}

/// The variables and every object loaded (the runtime crate's), and the last cell run.
struct Cells {
    cells: rustpx_runtime::Cells,
    runs: u64,
    last: Option<(String, String)>,
    /// Fences written so far (one per run, either way it ran).
    fences: u64,
    /// Whether the kernel asked for fences on stdout too (`FENCES`): only once its output pump
    /// runs, because evcxr waits after each run until its stdout channel has been drained, and
    /// nothing drains it while evcxr warms the context up.
    fences_on_stdout: bool,
}

impl Cells {
    /// Writes the next fence on stderr (see [`super::fence`]) and returns it.
    fn fence_stderr(&mut self) -> Fence {
        self.fences += 1;
        let fence = Fence {
            pid: std::process::id(),
            n: self.fences,
        };
        eprintln!("{}", fence.line());
        fence
    }
}

impl Cells {
    fn run(&mut self, so_path: &str, fn_name: &str) -> Result<(), LoadError> {
        self.cells.run(Path::new(so_path), fn_name)
    }
}

/// Why a re-run (`RUN`) did not happen or its output was lost; the kernel then compiles.
#[derive(Debug, thiserror::Error)]
enum RerunFailure {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

fn serve(spec: &str) -> std::io::Result<()> {
    let (path, token) = crate::side_channel::split_spec(spec);
    let mut side = UnixStream::connect(path)?;
    writeln!(side, "{token}")?;
    let mut side_open = true;
    let mut cells = Cells {
        cells: rustpx_runtime::Cells::new(),
        runs: 0,
        last: None,
        fences: 0,
        fences_on_stdout: false,
    };
    loop {
        let (stdin_ready, side_ready) = wait_readable(0, side_open.then(|| side.as_raw_fd()))?;
        if stdin_ready {
            let Some(line) = read_line(0)? else {
                return Ok(()); // evcxr is done with us
            };
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some(LOAD_AND_RUN), Some(so), Some(function)) => {
                    if let Err(error) = cells.run(so, function) {
                        // As evcxr's own runtime: end, so evcxr reports the cell as failed and
                        // restarts us, instead of recording variables that were never stored.
                        eprintln!("{error}");
                        std::process::exit(99);
                    }
                    cells.runs += 1;
                    cells.last = Some((so.to_owned(), function.to_owned()));
                    // stderr's fence first: when evcxr has stdout's, stderr's is on its way.
                    let fence = cells.fence_stderr();
                    let mut stdout = std::io::stdout().lock();
                    if cells.fences_on_stdout {
                        writeln!(stdout, "{}", fence.line())?;
                    }
                    writeln!(stdout, "{EXECUTION_COMPLETE}")?;
                    stdout.flush()?;
                }
                _ => eprintln!("rustpx runtime: unrecognised instruction {line:?}"),
            }
        }
        if side_ready {
            match read_line(side.as_raw_fd())? {
                Some(request) => answer(&mut cells, &request, &mut side)?,
                // The kernel went away; evcxr still owns us until it closes stdin.
                None => side_open = false,
            }
        }
    }
}

fn answer(cells: &mut Cells, request: &str, side: &mut UnixStream) -> std::io::Result<()> {
    let mut words = request.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("LAST"), None, None) => {
            let (so, function) = cells
                .last
                .clone()
                .unwrap_or_else(|| ("-".into(), "-".into()));
            writeln!(side, "LAST {} {so} {function}", cells.runs)
        }
        (Some("FENCES"), None, None) => {
            cells.fences_on_stdout = true;
            writeln!(side, "FENCES ON")
        }
        (Some("RUN"), Some(so), Some(function)) => {
            match run_capturing_stdout(cells, so, function) {
                Ok(stdout) => {
                    let fence = cells.fence_stderr();
                    writeln!(side, "DONE {} {} {}", stdout.len(), fence.pid, fence.n)?;
                    side.write_all(&stdout)
                }
                Err(error) => writeln!(side, "FAILED {}", error.to_string().replace('\n', " ")),
            }
        }
        _ => writeln!(side, "FAILED unknown request {request:?}"),
    }
}

/// Runs a cell with file descriptor 1 pointed at a memory file, and returns what it wrote.
fn run_capturing_stdout(
    cells: &mut Cells,
    so: &str,
    function: &str,
) -> Result<Vec<u8>, RerunFailure> {
    let _ = std::io::stdout().flush();
    match fds::capture(1, || cells.run(so, function)) {
        Ok((outcome, stdout)) => {
            outcome?;
            Ok(stdout)
        }
        Err(CaptureError::Restore { source, .. }) => {
            // Without its stdout evcxr cannot run another cell; let it see the process end.
            eprintln!("rustpx runtime: cannot restore stdout: {source}");
            std::process::exit(98);
        }
        Err(error) => Err(error.into()),
    }
}

/// Waits until stdin or the side socket (when open) has something to read.
fn wait_readable(stdin: RawFd, side: Option<RawFd>) -> std::io::Result<(bool, bool)> {
    let mut fds = vec![libc::pollfd {
        fd: stdin,
        events: libc::POLLIN,
        revents: 0,
    }];
    if let Some(fd) = side {
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` entries for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready >= 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let readable =
        |entry: &libc::pollfd| entry.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
    Ok((readable(&fds[0]), fds.get(1).is_some_and(readable)))
}

/// One line from `fd`, read a byte at a time so nothing past the newline is consumed; `None`
/// at end of file.
fn read_line(fd: RawFd) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`.
        let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        match n {
            1 if byte == b'\n' => break,
            1 => line.push(byte),
            0 if line.is_empty() => return Ok(None),
            0 => break,
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}
