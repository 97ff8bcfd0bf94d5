//! The machine's cache of built `:dep` crates, shared by the plain context, the px compiler and
//! every later kernel of this user.
//!
//! Why evcxr's own cache (`:cache SIZE`), kept where evcxr keeps it (`$XDG_CACHE_HOME/evcxr`):
//! evcxr's rustc wrapper (this binary, re-executed by cargo) keys each build of a registry crate
//! by its exact rustc command line with the context's temporary directory taken out, so version,
//! features, flags, dependencies and toolchain (the path of libstd is on the line) are all in
//! the key, and a hit copies the crate's outputs into the context instead of running rustc. The
//! crates stay rlibs linked the way they were before, so nothing changes for engines. Keeping
//! evcxr's place means `:cache` (limit and statistics) and `:clear_cache` report on the very
//! directory used; a different place would need the kernel's own `XDG_CACHE_HOME` changed,
//! which user code and engines would inherit.
//!
//! evcxr creates that directory and its entries with the process umask and trusts what it finds
//! there. rustpx makes it private before any context uses it: the directory is created 0700 or,
//! if it is this user's, closed to others; an entry that is not a directory of this user with
//! regular files nobody else can write is removed; and every rustc wrapper runs with umask 077
//! and checks the directory again (recreating it if it was deleted under a running kernel), or
//! builds without the cache when the directory is not this user's.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The size bound in MiB for a new kernel (evcxr's `:cache N` changes it for the session).
pub const SIZE_ENV: &str = "RUSTPX_DEP_CACHE_MB";
/// The bound when [`SIZE_ENV`] is unset: room for a few large crates (a polars build is about a
/// gigabyte) without growing without end.
pub const DEFAULT_MIB: u64 = 2048;

/// evcxr's variables for its rustc wrapper: set when cargo runs this binary as the wrapper, and
/// when the cache is on for that build.
const WRAPPER_ENV: &str = "EVCXR_RUSTC_WRAPPER";
const CACHE_ENABLED_ENV: &str = "EVCXR_CACHE_ENABLED";

/// Why the cache cannot be used (dependencies are then built without it).
#[derive(Debug, thiserror::Error)]
pub enum DepCacheError {
    #[error("no cache directory: neither $XDG_CACHE_HOME nor a home directory is known")]
    NoHome,
    #[error("{0} is not a directory of this user; dependencies are built without the cache (remove it, or point XDG_CACHE_HOME elsewhere)")]
    NotOurs(PathBuf),
    #[error("cannot prepare the dependency cache {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Where evcxr keeps its crate cache: `$XDG_CACHE_HOME/evcxr`, else `~/.cache/evcxr` (the
/// place evcxr's `dirs::cache_dir()` gives on Linux).
pub fn dir() -> Option<PathBuf> {
    rustpx_protocol::user_dirs::cache_home().map(|base| base.join("evcxr"))
}

static BYTES: OnceLock<AtomicU64> = OnceLock::new();

fn bytes_cell() -> &'static AtomicU64 {
    BYTES.get_or_init(|| AtomicU64::new(configured_mib() * 1024 * 1024))
}

/// [`SIZE_ENV`] in MiB, else [`DEFAULT_MIB`]; a value that is not a whole number is reported
/// and the default used.
fn configured_mib() -> u64 {
    match std::env::var(SIZE_ENV) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(
                "{SIZE_ENV}={text:?} is not a whole number of MiB; using {DEFAULT_MIB} (0 turns the dependency cache off)"
            );
            DEFAULT_MIB
        }),
        Err(_) => DEFAULT_MIB,
    }
}

/// The size bound both contexts use now, in bytes (0: no cache).
pub fn bytes() -> u64 {
    bytes_cell().load(Ordering::Relaxed)
}

/// Follows a plain cell's `:cache N` (evcxr's command, which sets the bound of the plain
/// context) so that the px compiler uses the same bound from its next cell on.
pub fn note_plain_cell(code: &str) {
    for line in code.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(":cache") {
            continue;
        }
        // evcxr takes a whole number of MiB; anything else only shows the statistics.
        if let Some(Ok(mib)) = words.next().map(str::parse::<u64>) {
            bytes_cell().store(mib.saturating_mul(1024 * 1024), Ordering::Relaxed);
        }
    }
}

/// The bound to give a context now: [`bytes`], or 0 (no cache) when the directory cannot be
/// made private, which is then logged once per context.
pub fn bytes_for_context() -> u64 {
    if bytes() == 0 {
        return 0;
    }
    match make_private() {
        Ok(_) => bytes(),
        Err(error) => {
            tracing::warn!("{error}");
            0
        }
    }
}

/// Creates `path` 0700 (parents too), or checks it: a directory of this user is closed to
/// others; anything else is refused.
fn private_directory(path: &Path) -> Result<(), DepCacheError> {
    let io = |error| DepCacheError::Io(path.to_owned(), error);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io)?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.is_dir() || meta.uid() != my_uid() {
        return Err(DepCacheError::NotOurs(path.to_owned()));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Makes the cache directory private and removes every entry that is not wholly this user's
/// (see the module's documentation). Returns the directory.
pub fn make_private() -> Result<PathBuf, DepCacheError> {
    let dir = dir().ok_or(DepCacheError::NoHome)?;
    private_directory(&dir)?;
    let entries = std::fs::read_dir(&dir).map_err(|e| DepCacheError::Io(dir.clone(), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry_is_ours(&path) {
            tracing::warn!(
                "removing {} from the dependency cache: not a directory of this user with files nobody else can write",
                path.display()
            );
            remove_entry(&path);
        }
    }
    Ok(dir)
}

/// Whether a cache entry is a directory of this user holding only regular files of this user
/// that nobody else may write; entries written under a looser umask are closed to others.
fn entry_is_ours(path: &Path) -> bool {
    let owned = |meta: &std::fs::Metadata| meta.uid() == my_uid() && meta.mode() & 0o022 == 0;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_dir() || !owned(&meta) {
        return false;
    }
    let Ok(files) = std::fs::read_dir(path) else {
        return false;
    };
    for file in files {
        let Ok(file) = file else { return false };
        match std::fs::symlink_metadata(file.path()) {
            Ok(meta) if meta.is_file() && owned(&meta) => {
                if meta.mode() & 0o077 != 0 {
                    let _ = std::fs::set_permissions(
                        file.path(),
                        std::fs::Permissions::from_mode(0o600),
                    );
                }
            }
            _ => return false,
        }
    }
    if meta.mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    }
    true
}

/// Removes an entry without following a link in its place.
fn remove_entry(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(error) = result {
        tracing::warn!("cannot remove {}: {error}", path.display());
    }
}

/// Runs first in `main`: when cargo started this binary as evcxr's rustc wrapper with the cache
/// on, new cache files are made private (umask 077) and the directory is checked or recreated
/// (it may have been deleted under the running kernel); a directory that is not this user's
/// turns the cache off for this rustc, which then simply builds. Runs before any thread exists.
pub fn prepare_rustc_wrapper() {
    if std::env::var_os(WRAPPER_ENV).is_none() || std::env::var_os(CACHE_ENABLED_ENV).is_none() {
        return;
    }
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    let usable = dir().is_some_and(|dir| private_directory(&dir).is_ok());
    if !usable {
        // Single-threaded here: nothing reads the environment concurrently.
        std::env::remove_var(CACHE_ENABLED_ENV);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lines_set_the_bound_and_other_lines_do_not() {
        note_plain_cell("let x = 1;\n:cache 64\n");
        assert_eq!(bytes(), 64 * 1024 * 1024);
        note_plain_cell(":cache");
        note_plain_cell(":cache lots");
        note_plain_cell("// :cache 1");
        assert_eq!(bytes(), 64 * 1024 * 1024);
        note_plain_cell("  :cache 0");
        assert_eq!(bytes(), 0);
    }

    #[test]
    fn a_foreign_or_writable_entry_is_not_ours() {
        let base =
            std::env::temp_dir().join(format!("rustpx-dep-cache-test-{}", std::process::id()));
        let entry = base.join("123");
        std::fs::create_dir_all(&entry).unwrap();
        std::fs::write(entry.join("stderr"), "").unwrap();
        std::fs::set_permissions(entry.join("stderr"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(
            entry_is_ours(&entry),
            "readable by others is closed, not refused"
        );
        assert_eq!(
            std::fs::metadata(entry.join("stderr")).unwrap().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(entry.join("stderr"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        assert!(!entry_is_ours(&entry), "a file others may write is refused");
        std::fs::remove_file(entry.join("stderr")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", entry.join("stderr")).unwrap();
        assert!(!entry_is_ours(&entry), "a link is refused");
        remove_entry(&entry);
        assert!(!entry.exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
