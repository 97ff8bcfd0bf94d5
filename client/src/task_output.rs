//! What one task of the Rust API printed, for its `metadata()` (ipyparallel keeps each task's
//! stdout and stderr with its result).
//!
//! The tasks of a call run inside one long engine cell (`serve_tasks`), whose own output the
//! kernel does not show, and compiled cells write straight to file descriptors 1 and 2 (each
//! cell's shared object has its own std, so there is no print hook to swap). So around each task
//! the worker points descriptors 1 and 2 at two anonymous in-memory files and reads them back
//! afterwards. Text a task leaves in a std buffer without a newline (`print!` of an earlier
//! cell's function) shows up with a later task: each std copy flushes only on its own schedule.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most of one stream of one task that is kept; the rest is counted and dropped, so a task
/// that prints in a loop cannot fill the kernel's memory.
pub const MAX_TASK_OUTPUT: usize = 256 * 1024;

extern "C" {
    fn dup2(old: RawFd, new: RawFd) -> RawFd;
    fn memfd_create(name: *const std::ffi::c_char, flags: std::ffi::c_uint) -> RawFd;
}
/// `MFD_CLOEXEC`: the files are not inherited by processes a task starts.
const MFD_CLOEXEC: std::ffi::c_uint = 1;

/// One task's output, each stream cut at [`MAX_TASK_OUTPUT`] with a note saying how much went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TaskOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The descriptors swapped (1 and 2 in an engine), what they referred to, and the files tasks
/// write to instead.
pub struct Capture {
    targets: [RawFd; 2],
    saved: [OwnedFd; 2],
    files: [File; 2],
}

impl Capture {
    /// `None` where descriptors cannot be swapped (no memfd): tasks then print where the
    /// serving cell prints, and their metadata has no output.
    pub fn new() -> Option<Capture> {
        Capture::of_descriptors([1, 2])
    }

    /// A capture of two other descriptors, open for as long as the capture lives: the unit test
    /// uses its own, because the test harness prints other tests' results on descriptor 1 from
    /// other threads while it runs.
    fn of_descriptors(targets: [RawFd; 2]) -> Option<Capture> {
        let file = |name: &std::ffi::CStr| {
            // SAFETY: memfd_create takes a NUL-terminated name and returns a new descriptor
            // or -1; a new descriptor is ours alone.
            let fd = unsafe { memfd_create(name.as_ptr(), MFD_CLOEXEC) };
            (fd >= 0).then(|| File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
        };
        let saved = |fd: RawFd| {
            // SAFETY: the targets are open for the capture's life (1 and 2 are the engine's
            // capture pipes); the borrow lasts only for the duplication.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            borrowed.try_clone_to_owned().ok()
        };
        Some(Capture {
            targets,
            saved: [saved(targets[0])?, saved(targets[1])?],
            files: [file(c"rustpx-task-stdout")?, file(c"rustpx-task-stderr")?],
        })
    }

    /// Runs `task` with descriptors 1 and 2 pointing at empty files, then puts them back and
    /// returns what it wrote.
    pub fn run<T>(&mut self, task: impl FnOnce() -> T) -> (T, TaskOutput) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        for file in &mut self.files {
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
        }
        let [out, err] = self.targets;
        let swapped = point(out, &self.files[0]) && point(err, &self.files[1]);
        let value = task();
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        point(out, &self.saved[0]);
        point(err, &self.saved[1]);
        if !swapped {
            return (value, TaskOutput::default());
        }
        let [stdout, stderr] = &mut self.files;
        let output = TaskOutput {
            stdout: read_bounded(stdout),
            stderr: read_bounded(stderr),
        };
        (value, output)
    }
}

/// Makes descriptor `fd` refer to what `to` refers to.
fn point(fd: RawFd, to: &impl AsRawFd) -> bool {
    // SAFETY: dup2 on two open descriptors; `fd` (a capture target) stays open either way.
    unsafe { dup2(to.as_raw_fd(), fd) == fd }
}

/// The file's first [`MAX_TASK_OUTPUT`] bytes, and a line saying how many more there were.
fn read_bounded(file: &mut File) -> Vec<u8> {
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut kept = Vec::new();
    if file.seek(SeekFrom::Start(0)).is_err() {
        return kept;
    }
    let _ = Read::by_ref(file)
        .take(MAX_TASK_OUTPUT as u64)
        .read_to_end(&mut kept);
    let dropped = written.saturating_sub(kept.len() as u64);
    if dropped > 0 {
        kept.extend_from_slice(
            format!("\n[rustpx: {dropped} more bytes of this task's output were dropped]\n")
                .as_bytes(),
        );
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open descriptor of the test's own, standing for 1 or 2: the harness writes other
    /// tests' results to the real descriptor 1 from other threads meanwhile.
    fn own_descriptor() -> File {
        // SAFETY: as in Capture::new.
        let fd = unsafe { memfd_create(c"rustpx-test-target".as_ptr(), MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create works on Linux");
        File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Everything written to `file` so far.
    fn contents(file: &mut File) -> Vec<u8> {
        let mut all = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("a memfd seeks");
        file.read_to_end(&mut all).expect("a memfd reads");
        all
    }

    #[test]
    fn a_task_s_output_is_kept_apart_and_bounded() {
        let (mut stdout, stderr) = (own_descriptor(), own_descriptor());
        let targets = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let mut capture = Capture::of_descriptors(targets).expect("memfd and dup work on Linux");
        let (value, output) = capture.run(|| {
            // Straight to the descriptors, as a compiled cell's own std writes to 1 and 2.
            let mut out = unsafe { File::from_raw_fd(targets[0]) };
            let _ = out.write_all(b"to stdout\n");
            std::mem::forget(out);
            let mut err = unsafe { File::from_raw_fd(targets[1]) };
            let _ = err.write_all(&vec![b'e'; MAX_TASK_OUTPUT + 10]);
            std::mem::forget(err);
            7
        });
        assert_eq!(value, 7);
        assert_eq!(output.stdout, b"to stdout\n");
        let note = "\n[rustpx: 10 more bytes of this task's output were dropped]\n";
        assert_eq!(output.stderr.len(), MAX_TASK_OUTPUT + note.len());
        assert!(output.stderr.ends_with(note.as_bytes()));
        // The next task starts empty.
        let ((), output) = capture.run(|| ());
        assert_eq!(output, TaskOutput::default());
        // The descriptors are put back: what is written now reaches the original file, which
        // got none of the tasks' output.
        stdout.seek(SeekFrom::End(0)).expect("a memfd seeks");
        stdout.write_all(b"after\n").expect("a memfd takes writes");
        assert_eq!(contents(&mut stdout), b"after\n");
    }
}
