//! Where the history database lives, and making sure it is this user's alone.
//!
//! The history holds everything a user typed (keys and passwords included), so the file is
//! private (0600) in a directory nobody else can write (0700 when rustpx creates it), and a
//! symbolic link someone planted at the file's name is refused rather than followed.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Set to a file path to keep the history there instead (tests point it at a temporary file).
pub const HISTORY_FILE_ENV: &str = "RUSTPX_HISTORY_FILE";

/// Why the history file cannot be used; each message names the fix.
#[derive(Debug, Error)]
pub enum LocationError {
    #[error(
        "no home directory (HOME is unset and the password database has no entry for this \
         user); set {HISTORY_FILE_ENV} to a file in a private directory"
    )]
    NoHome,
    #[error("cannot create {path}: {source}; create it (mode 0700) or set {HISTORY_FILE_ENV}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot use {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error(
        "{path} belongs to another user (uid {owner}); rustpx keeps history only in files and \
         directories you own: remove it or set {HISTORY_FILE_ENV}"
    )]
    NotOwned { path: PathBuf, owner: u32 },
    #[error(
        "the directory {path} can be written by other users (mode {mode:o}), who could plant \
         the database's journal files; run `chmod go-w {path}` or set {HISTORY_FILE_ENV} to a \
         file in a private directory",
        path = path.display()
    )]
    SharedDir { path: PathBuf, mode: u32 },
    #[error(
        "{path} is a symbolic link; rustpx does not follow links to its history: replace it \
         with the file itself or set {HISTORY_FILE_ENV} to the real path"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file; remove it or set {HISTORY_FILE_ENV}")]
    NotAFile { path: PathBuf },
}

/// `$RUSTPX_HISTORY_FILE`, else `$XDG_DATA_HOME/rustpx/history.sqlite`, else
/// `~/.local/share/rustpx/history.sqlite`.
pub fn history_file() -> Result<PathBuf, LocationError> {
    match std::env::var_os(HISTORY_FILE_ENV) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => crate::paths::data_home()
            .map(|dir| dir.join("rustpx").join("history.sqlite"))
            .ok_or(LocationError::NoHome),
    }
}

/// Makes `path` ready for SQLite: its directory exists (created 0700), is ours and writable by
/// nobody else; the file exists (created 0600), is a regular file of ours, not a link, and is
/// private. Returns the path to open, through the directory's resolved path.
pub fn prepare(path: &Path) -> Result<PathBuf, LocationError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| LocationError::NotAFile {
        path: path.to_owned(),
    })?;
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LocationError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    // Resolved once: from here on every path goes through a directory only we can change.
    let dir = dir
        .canonicalize()
        .map_err(|source| LocationError::Inspect {
            path: dir.to_owned(),
            source,
        })?;
    check_dir(&dir)?;
    let file = dir.join(name);
    let opened = open_private(&file)?;
    check_file(&file, &opened)?;
    Ok(file)
}

fn inspect(path: &Path) -> impl FnOnce(io::Error) -> LocationError + '_ {
    move |source| LocationError::Inspect {
        path: path.to_owned(),
        source,
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn check_dir(dir: &Path) -> Result<(), LocationError> {
    let meta = std::fs::metadata(dir).map_err(inspect(dir))?;
    if meta.uid() != euid() {
        return Err(LocationError::NotOwned {
            path: dir.to_owned(),
            owner: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(LocationError::SharedDir {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Opens (creating with mode 0600) without following a link at the file's own name.
fn open_private(file: &Path) -> Result<File, LocationError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                LocationError::Symlink {
                    path: file.to_owned(),
                }
            } else {
                LocationError::Inspect {
                    path: file.to_owned(),
                    source,
                }
            }
        })
}

fn check_file(path: &Path, file: &File) -> Result<(), LocationError> {
    let meta = file.metadata().map_err(inspect(path))?;
    if !meta.is_file() {
        return Err(LocationError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.uid() != euid() {
        return Err(LocationError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(inspect(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_missing_directory_is_created_0700_and_the_file_0600() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data/rustpx/history.sqlite");
        let ready = prepare(&path).unwrap();
        assert_eq!(
            ready,
            root.path()
                .canonicalize()
                .unwrap()
                .join("data/rustpx/history.sqlite")
        );
        assert_eq!(mode(&root.path().join("data/rustpx")), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);
        assert_eq!(mode(&ready), 0o600);
    }

    #[test]
    fn a_file_readable_by_others_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("history.sqlite");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        prepare(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_link_at_the_files_name_is_refused_and_its_target_untouched() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("elsewhere");
        std::fs::write(&target, b"not history").unwrap();
        let path = root.path().join("history.sqlite");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let error = prepare(&path).unwrap_err();
        assert!(matches!(error, LocationError::Symlink { .. }), "{error}");
        assert!(error.to_string().contains(HISTORY_FILE_ENV));
        assert_eq!(std::fs::read(&target).unwrap(), b"not history");
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o777)).unwrap();
        let error = prepare(&shared.join("history.sqlite")).unwrap_err();
        assert!(
            matches!(error, LocationError::SharedDir { mode: 0o777, .. }),
            "{error}"
        );
        assert!(!shared.join("history.sqlite").exists());
    }

    #[test]
    fn a_directory_at_the_files_name_is_not_a_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("history.sqlite");
        std::fs::create_dir(&path).unwrap();
        assert!(prepare(&path).is_err());
    }
}
