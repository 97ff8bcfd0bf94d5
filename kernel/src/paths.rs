//! Where rustpx keeps its files: Jupyter's runtime directory for per-kernel files, the XDG data
//! directory for what outlives a kernel (the input history).

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// `$JUPYTER_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/jupyter`, else `~/.local/share/jupyter/runtime`
/// (the order Jupyter itself uses on Linux).
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("JUPYTER_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("jupyter");
    }
    match home_dir() {
        Some(home) => home.join(".local/share/jupyter/runtime"),
        // No home at all: this kernel's private directory, never a shared name under /tmp.
        None => crate::private_dir::dir()
            .map(|dir| dir.join("runtime"))
            .unwrap_or_else(|_| PathBuf::from("/nonexistent/rustpx-runtime")),
    }
}

/// The log file of this kernel process (engines started by it append to it too).
pub fn log_file() -> PathBuf {
    runtime_dir().join(format!("rustpx-kernel-{}.log", std::process::id()))
}

/// Set for engines so that their own log lines land in the kernel's log file.
pub const LOG_FILE_ENV: &str = "RUSTPX_LOG_FILE";

/// The user's home: `$HOME` when set and absolute, else the password database's entry for this
/// user (what Jupyter does too, so a kernel started by a service without `HOME` finds the same
/// files as the user's own shell).
pub fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Some(home),
        _ => home_from_passwd(),
    }
}

/// `$XDG_DATA_HOME` when set and absolute (the XDG spec says to ignore a relative one), else
/// `~/.local/share`.
pub fn data_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => Some(dir),
        _ => home_dir().map(|home| home.join(".local/share")),
    }
}

/// The home directory of the effective user, from `getpwuid_r`.
fn home_from_passwd() -> Option<PathBuf> {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut buffer = vec![0_u8; 4096];
    loop {
        // SAFETY: `passwd` is plain data that getpwuid_r fills; every pointer it sets points
        // into `buffer`, which outlives their use below.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let status = unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        if status == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if status != 0 || found.is_null() || entry.pw_dir.is_null() {
            return None;
        }
        // SAFETY: pw_dir is a NUL-terminated string inside `buffer`.
        let dir = unsafe { CStr::from_ptr(entry.pw_dir) }.to_bytes().to_vec();
        let dir = PathBuf::from(OsString::from_vec(dir));
        return dir.is_absolute().then_some(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_database_knows_this_users_home() {
        let home = home_from_passwd().expect("an entry for the current user");
        assert!(home.is_absolute());
    }
}
