//! Where rustpx keeps per-kernel files: Jupyter's runtime directory.

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
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/jupyter/runtime")
}

/// The log file of this kernel process (engines started by it append to it too).
pub fn log_file() -> PathBuf {
    runtime_dir().join(format!("rustpx-kernel-{}.log", std::process::id()))
}

/// Set for engines so that their own log lines land in the kernel's log file.
pub const LOG_FILE_ENV: &str = "RUSTPX_LOG_FILE";
