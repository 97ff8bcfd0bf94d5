//! The user's directories, found the same way by the kernel and the engine.
//!
//! Jupyter finds home from `$HOME`, else the password database, so a kernel started by a service
//! without `HOME` uses the same files as the user's shell. Nothing here falls back to a shared
//! name under /tmp: the callers decide what to use when there is no home at all.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `$HOME` when set, else this user's entry in the password database. A relative home is no
/// home.
pub fn home_dir() -> Option<PathBuf> {
    std::env::home_dir().filter(|home| home.is_absolute())
}

/// `$XDG_CACHE_HOME` when set and absolute (the XDG spec says to ignore a relative one), else
/// `~/.cache`.
pub fn cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| home_dir().map(|home| home.join(".cache")))
}

/// The effective user id: the owner every private file and directory must have.
pub fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `path` (mode 0700, parents too) or checks it: a directory of another user, or not a
/// directory, is refused with `fix` as the way out; one of this user that others may enter is
/// closed to them.
pub fn make_private_dir(path: &Path, fix: &str) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() || meta.uid() != my_uid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a directory of this user; {fix}", path.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to a new file of ours at `path`, mode 0600, never one that was there: a
/// planted file or symlink would be handed a secret, so whatever has the name is removed,
/// then the file is created exclusively without following a link.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_users_home_is_known_and_absolute() {
        assert!(home_dir().is_some_and(|home| home.is_absolute()));
    }
}
