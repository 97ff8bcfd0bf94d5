//! The read end of a capture pipe, non-blocking: its reader waits with `poll` and reads only
//! while it holds its state's lock, so whoever holds that lock sees every byte read so far
//! already processed, and can ask the pipe how many bytes are still unread.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

/// Makes reads of `pipe` return `WouldBlock` instead of waiting.
pub fn set_nonblocking(pipe: &File) -> std::io::Result<()> {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` has bytes or its writers are gone; false if it cannot be waited on.
pub fn wait_readable(fd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, -1) };
        if ready > 0 {
            return true;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Bytes written to the pipe and not read yet (unknown counts as some).
pub fn unread(pipe: &File) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call.
    let status = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut count) };
    if status < 0 {
        return 1;
    }
    usize::try_from(count).unwrap_or(1)
}
