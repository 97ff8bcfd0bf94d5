//! The cell cache's directory: one entry per key, written whole or not at all, read only after
//! its owner, modes and content hashes are checked.
//!
//! `DIR/<key>/` holds the cell's object, its dep-info and rustc's output (the context's directory
//! replaced by a placeholder), and `manifest.json`: each file's SHA-256 and size, and what the
//! cell read (files with their hashes, environment variables with their values). The directory
//! and every entry are 0700 and this user's, the files 0600, this user's and regular (a link is
//! never followed); a file whose content does not match the manifest, or any other failed check,
//! is reported and its entry removed, and the cell is compiled instead. Entries are written in a
//! hidden directory beside their place and renamed, so a reader never sees half an entry.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use rustpx_protocol::user_dirs::{make_private_dir, my_uid, write_new_private};

use super::key::{file_hash, ReadInputs};

/// The files of an entry besides the manifest, in the order they are stored.
pub const FILES: [&str; 4] = ["object", "dep-info", "stdout", "stderr"];
const MANIFEST: &str = "manifest.json";
/// No entry file is read beyond this (a cell's object is tens of kB; a cell linking a large
/// crate statically could reach tens of MB).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// An entry's description of itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// (SHA-256, size) of each of [`FILES`], in order.
    pub files: Vec<(String, u64)>,
    /// Files the cell read, each with its content hash (paths may hold the placeholder).
    pub read_files: Vec<(String, String)>,
    /// Environment variables the cell read, with their values then.
    pub read_env: Vec<(String, Option<String>)>,
    /// rustc's exit code: evcxr learns a variable's type from a build that fails on purpose,
    /// so failed builds are kept too (without an object).
    #[serde(default)]
    pub exit_code: i32,
}

/// An entry's content, checked.
pub struct Entry {
    pub manifest: Manifest,
    /// The contents of [`FILES`], in order.
    pub contents: Vec<Vec<u8>>,
}

/// Why an entry was not used.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not a directory of this user closed to others")]
    NotPrivateDir(PathBuf),
    #[error("{0} is not a regular file of this user closed to others")]
    NotPrivateFile(PathBuf),
    #[error("{0} is larger than the cache accepts")]
    TooLarge(PathBuf),
    #[error("{0} does not match the hash its entry recorded")]
    Tampered(PathBuf),
    #[error("the manifest {0} cannot be read: {1}")]
    BadManifest(PathBuf, String),
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Whether `path` is a directory (not a link) of this user that nobody else may enter.
fn is_private_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.uid() == my_uid() && m.mode() & 0o077 == 0)
}

/// Creates `path` 0700 (parents too) or checks it: this user's directory is closed to others,
/// anything else is refused.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    make_private_dir(path, "remove it or point XDG_CACHE_HOME elsewhere")
}

/// Reads a file of an entry: regular, this user's, 0600 at most, at most `limit` bytes.
fn read_private(path: &Path, limit: u64) -> Result<Vec<u8>, Refused> {
    let io = |e| Refused::Io(path.to_owned(), e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|_| Refused::NotPrivateFile(path.to_owned()))?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() || meta.uid() != my_uid() || meta.mode() & 0o077 != 0 {
        return Err(Refused::NotPrivateFile(path.to_owned()));
    }
    if meta.len() > limit {
        return Err(Refused::TooLarge(path.to_owned()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// The cache directory and its size bound.
pub struct Store {
    pub dir: PathBuf,
    pub bound_bytes: u64,
}

impl Store {
    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The entry for `key`: `Ok(None)` when there is none; `Err` when there is one that failed a
    /// check (the caller reports it and removes it with [`Store::remove`]).
    pub fn load(&self, key: &str) -> Result<Option<Entry>, Refused> {
        let dir = self.entry_dir(key);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        for private in [&self.dir, &dir] {
            if !is_private_dir(private) {
                return Err(Refused::NotPrivateDir(private.clone()));
            }
        }
        let manifest_path = dir.join(MANIFEST);
        let manifest: Manifest =
            serde_json::from_slice(&read_private(&manifest_path, MAX_MANIFEST_BYTES)?)
                .map_err(|e| Refused::BadManifest(manifest_path.clone(), e.to_string()))?;
        if manifest.files.len() != FILES.len() {
            return Err(Refused::BadManifest(
                manifest_path,
                "wrong file count".into(),
            ));
        }
        let mut contents = Vec::new();
        for (name, (sha256, size)) in FILES.iter().zip(&manifest.files) {
            let path = dir.join(name);
            let bytes = read_private(&path, MAX_FILE_BYTES)?;
            if bytes.len() as u64 != *size || rustpx_protocol::sha256_hex(&bytes) != *sha256 {
                return Err(Refused::Tampered(path));
            }
            contents.push(bytes);
        }
        // Recently used entries are the last to go when the bound is reached.
        let _ =
            std::fs::File::open(&dir).and_then(|d| d.set_modified(std::time::SystemTime::now()));
        Ok(Some(Entry { manifest, contents }))
    }

    /// Removes an entry (a link in its place is removed, never followed).
    pub fn remove(&self, key: &str) {
        remove_path(&self.entry_dir(key));
    }

    /// Writes an entry whole: in a hidden directory, then renamed into place. An entry another
    /// context wrote first for the same key stays.
    pub fn save(
        &self,
        key: &str,
        contents: &[Vec<u8>],
        read: ReadInputs,
        exit_code: i32,
        localize: impl Fn(&str) -> PathBuf,
    ) -> std::io::Result<()> {
        make_private(&self.dir)?;
        let partial = self.dir.join(format!(".{key}.{}", std::process::id()));
        remove_path(&partial);
        std::fs::DirBuilder::new().mode(0o700).create(&partial)?;
        let written = (|| {
            let mut files = Vec::new();
            for (name, bytes) in FILES.iter().zip(contents) {
                write_new_private(&partial.join(name), bytes)?;
                files.push((rustpx_protocol::sha256_hex(bytes), bytes.len() as u64));
            }
            let mut read_files = Vec::new();
            for path in read.files {
                let hash = file_hash(&localize(&path)).map_err(std::io::Error::other)?;
                read_files.push((path, hash));
            }
            let manifest = Manifest {
                files,
                read_files,
                read_env: read.env,
                exit_code,
            };
            write_new_private(&partial.join(MANIFEST), &serde_json::to_vec(&manifest)?)?;
            std::fs::rename(&partial, self.entry_dir(key))
        })();
        if written.is_err() {
            remove_path(&partial);
        }
        match written {
            // Another context stored the same key first: its entry is as good.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTEMPTY)
                    || e.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Removes the least recently used entries until the cache is within its bound; stray
    /// partial entries of dead writers older than a minute go too. Returns how many were removed.
    pub fn trim(&self) -> usize {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
        let mut removed = 0;
        for entry in listing.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                let old = modified.elapsed().is_ok_and(|age| age.as_secs() > 60);
                if old {
                    remove_path(&path);
                    removed += 1;
                }
                continue;
            }
            entries.push((modified, dir_bytes(&path), path));
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        for (_, bytes, path) in entries {
            if total <= self.bound_bytes {
                break;
            }
            remove_path(&path);
            total = total.saturating_sub(bytes);
            removed += 1;
        }
        removed
    }
}

/// The bytes of the files directly in `dir` (entries have no subdirectories).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|files| {
            files
                .flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn remove_path(path: &Path) {
    let _ = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store(name: &str, bound_bytes: u64) -> Store {
        let dir =
            std::env::temp_dir().join(format!("rustpx-cell-store-{name}-{}", std::process::id()));
        remove_path(&dir);
        Store { dir, bound_bytes }
    }

    fn contents(tag: &str) -> Vec<Vec<u8>> {
        FILES
            .iter()
            .map(|f| format!("{f} of {tag}").into_bytes())
            .collect()
    }

    #[test]
    fn an_entry_is_found_whole_and_a_changed_byte_is_refused() {
        let store = store("tamper", 1 << 20);
        assert!(store.load("k1").unwrap().is_none());
        store
            .save("k1", &contents("a"), ReadInputs::default(), 0, |p: &str| {
                PathBuf::from(p)
            })
            .unwrap();
        let entry = store.load("k1").unwrap().unwrap();
        assert_eq!(entry.contents, contents("a"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.dir), 0o700);
        assert_eq!(mode(&store.dir.join("k1")), 0o700);
        assert_eq!(mode(&store.dir.join("k1/object")), 0o600);
        // Same size, one byte changed.
        std::fs::write(store.dir.join("k1/object"), b"object of b").unwrap();
        assert!(matches!(store.load("k1"), Err(Refused::Tampered(_))));
        // Readable by others: refused before its content is read.
        store.remove("k1");
        store
            .save("k1", &contents("a"), ReadInputs::default(), 0, |p: &str| {
                PathBuf::from(p)
            })
            .unwrap();
        std::fs::set_permissions(
            store.dir.join("k1/stderr"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(store.load("k1"), Err(Refused::NotPrivateFile(_))));
        // A link in place of a file is not followed.
        std::fs::remove_file(store.dir.join("k1/stderr")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", store.dir.join("k1/stderr")).unwrap();
        assert!(matches!(store.load("k1"), Err(Refused::NotPrivateFile(_))));
        remove_path(&store.dir);
    }

    #[test]
    fn trimming_keeps_the_most_recently_used_within_the_bound() {
        let store = store("trim", 600);
        for key in ["k1", "k2", "k3"] {
            store
                .save(key, &contents(key), ReadInputs::default(), 0, |p: &str| {
                    PathBuf::from(p)
                })
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        store.load("k1").unwrap().unwrap(); // used: now the newest
                                            // Each entry is about 60 bytes of files and a manifest of about 350: one fits under 600.
        assert!(store.trim() >= 2);
        assert!(store.load("k1").unwrap().is_some());
        assert!(store.load("k2").unwrap().is_none());
        remove_path(&store.dir);
    }
}
