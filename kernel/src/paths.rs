//! Where rustpx keeps its files: Jupyter's runtime directory for per-kernel files, the XDG data
//! directory for what outlives a kernel (the input history).

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

pub use rustpx_protocol::user_dirs::home_dir;

/// `$XDG_DATA_HOME` when set and absolute (the XDG spec says to ignore a relative one), else
/// `~/.local/share`.
pub fn data_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => Some(dir),
        _ => home_dir().map(|home| home.join(".local/share")),
    }
}
