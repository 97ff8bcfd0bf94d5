//! A directory only this user can enter, holding the kernel's local side channels.
//!
//! The evaluator's re-run door, the px bridge and the `%pxmap` scheduler are Unix sockets in
//! here rather than loopback ports: a loopback port is reachable by every local user, who could
//! hold a connection open, feed it without end or open hundreds, while the directory's mode
//! (0700, set as it is created, under a fresh random name: never a directory someone else made)
//! keeps them out before any byte is read. The tokens the channels still check are a second
//! lock, not the only one.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The name's prefix; the kernel's pid follows, so a later kernel can sweep what a killed one
/// left.
pub const PREFIX: &str = "rustpx-sockets-";

static DIR: OnceLock<std::io::Result<PathBuf>> = OnceLock::new();

/// Creates a directory of a fresh random name with mode 0700; an existing name (someone
/// else's, or a collision) is never used, another name is tried.
fn create_private() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut last_error = None;
    for _ in 0..16 {
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let path = base.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                last_error = Some(error)
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free name")))
}

/// This kernel's private directory, created (mode 0700) on first use in the system's temporary
/// directory: a short path, as Unix socket addresses are limited to 107 bytes.
pub fn dir() -> std::io::Result<&'static Path> {
    match DIR.get_or_init(create_private) {
        Ok(dir) => Ok(dir),
        Err(error) => Err(std::io::Error::new(
            error.kind(),
            format!(
                "cannot create a private directory in {}: {error}",
                std::env::temp_dir().display()
            ),
        )),
    }
}

/// The path of the socket `name` in the private directory.
pub fn socket_path(name: &str) -> std::io::Result<PathBuf> {
    Ok(dir()?.join(name))
}

/// Removes the directory and its sockets, when the kernel exits.
pub fn remove() {
    if let Some(Ok(dir)) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_directory_is_new_and_only_ours() {
        let path = socket_path("probe.sock").unwrap();
        let dir = path.parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{PREFIX}{}-", std::process::id())));
        assert!(path.as_os_str().len() < 100, "{}", path.display());
        remove();
        assert!(!dir.exists());
    }
}
