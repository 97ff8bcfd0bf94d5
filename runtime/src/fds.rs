//! File-descriptor plumbing for capturing what cells write.
//!
//! A compiled cell carries its own copy of std, so its `println!` cannot be hooked in-process:
//! its output can only be taken where it lands, at descriptors 1 and 2. An engine points them at
//! pipes for good ([`redirect_to_pipe`]); the kernel's runtime child points its stdout at a
//! memory file for the length of one re-run ([`capture`]), because evcxr is not reading then.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Why output could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A system call needed before the run failed; nothing ran and `fd` is unchanged.
    #[error("{call}: {source}")]
    Setup {
        call: &'static str,
        source: std::io::Error,
    },
    /// The original descriptor could not be put back: the process's `fd` now points at the
    /// capture, and whoever reads the original will never see another line.
    #[error("cannot restore descriptor {fd}: {source}")]
    Restore { fd: RawFd, source: std::io::Error },
    /// The run happened but what it wrote could not be read back.
    #[error("reading the captured output: {0}")]
    Read(std::io::Error),
}

/// A new descriptor for what `fd` refers to, owned by the returned file.
pub fn duplicate(fd: RawFd) -> std::io::Result<File> {
    // SAFETY: dup has no memory-safety preconditions; we own the new descriptor.
    let copy = unsafe { libc::dup(fd) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(copy) })
}

/// Points `fd` at the write end of a new pipe for good; returns the read end.
pub fn redirect_to_pipe(fd: RawFd) -> std::io::Result<File> {
    let mut ends = [0 as RawFd; 2];
    // SAFETY: `ends` has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(ends.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both ends were just created and are owned by nobody else.
    let (read, write) = unsafe { (File::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    point(fd, &write)?;
    // `write` closes here: `fd` is now the pipe's only write end.
    Ok(read)
}

/// Writes all of `bytes` to `fd`, giving up quietly if the descriptor stops taking them (a
/// closed pipe must not stop the writer).
pub fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice to a descriptor we own.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written <= 0 {
            return;
        }
        bytes = &bytes[written as usize..];
    }
}

/// Runs `run` with `fd` pointed at a memory file, puts `fd` back, and returns what `run`
/// returned and the bytes written to `fd` meanwhile. Flush any buffered writer of `fd` first.
pub fn capture<T>(fd: RawFd, run: impl FnOnce() -> T) -> Result<(T, Vec<u8>), CaptureError> {
    let setup = |call| move |source| CaptureError::Setup { call, source };
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is checked below.
    let memory = unsafe { libc::memfd_create(c"rustpx-capture".as_ptr(), libc::MFD_CLOEXEC) };
    if memory < 0 {
        return Err(setup("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: `memory` was just created and is owned by nobody else.
    let memory = unsafe { File::from_raw_fd(memory) };
    let saved = duplicate(fd).map_err(setup("dup"))?;
    point(fd, &memory).map_err(setup("dup2"))?;
    let outcome = run();
    point(fd, &saved).map_err(|source| CaptureError::Restore { fd, source })?;
    let mut memory = memory;
    let mut captured = Vec::new();
    memory
        .rewind()
        .and_then(|_| memory.read_to_end(&mut captured))
        .map_err(CaptureError::Read)?;
    Ok((outcome, captured))
}

/// Makes `fd` refer to what `target` refers to (dup2, atomically).
fn point(fd: RawFd, target: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: both descriptors are open; dup2 replaces `fd` atomically.
    if unsafe { libc::dup2(target.as_raw_fd(), fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn capture_takes_what_was_written_and_puts_the_descriptor_back() {
        // A descriptor of our own, not the test harness's stdout.
        let (mut read, write) = {
            let mut ends = [0 as RawFd; 2];
            // SAFETY: as in redirect_to_pipe.
            assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
            // SAFETY: fresh descriptors.
            unsafe { (File::from_raw_fd(ends[0]), File::from_raw_fd(ends[1])) }
        };
        let fd = write.as_raw_fd();
        let (answer, captured) = capture(fd, || {
            write_all(fd, b"inside\n");
            42
        })
        .unwrap();
        assert_eq!((answer, captured.as_slice()), (42, &b"inside\n"[..]));
        let mut write = write;
        write.write_all(b"after\n").unwrap();
        drop(write);
        let mut rest = String::new();
        read.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "after\n");
    }
}
