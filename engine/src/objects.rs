//! Where an engine finds the compiled cells it runs.
//!
//! An engine on the kernel's host loads each cell from the path the kernel's compiler wrote.
//! An engine on another host (or one told to behave as if it were) has neither those files nor a
//! Rust toolchain: it keeps a cache of objects by content hash, `DIR/<sha256>/<name>`, filled over
//! the engine link, so a host downloads libstd once however many engines and cells it runs. A
//! file is only put in the cache after its hash is checked, and it is written beside its place
//! and renamed, so engines sharing the cache never see half a file.
//!
//! What is in the cache is loaded into the engine, so nothing there is trusted for its name:
//! before a file is used its content is hashed again (once per file and process; a changed file
//! is hashed anew), it must be a regular file of this user that nobody else may write, in a
//! directory of this user that nobody else may enter. The cache is created 0700, its files 0600.
//! A file that fails is fetched again and replaces it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rustpx_protocol::user_dirs::{make_private_dir, my_uid};
use rustpx_protocol::{sha256_hex, EngineConnection, ObjectRef};

/// What identifies a file's content as it was when its hash was checked.
type Stamp = (u64, u64, u64, i64, i64);

/// The content-addressed object cache of this host.
pub struct ObjectCache {
    dir: PathBuf,
    /// Files whose content was hashed and matched, as they were then.
    verified: Mutex<HashMap<PathBuf, Stamp>>,
}

/// Whether `path` is a directory of this user that nobody else can write to or enter.
fn private_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.uid() == my_uid() && m.mode() & 0o077 == 0)
}

/// Creates `path` (mode 0700, parents too) or checks it (see
/// [`rustpx_protocol::user_dirs::make_private_dir`]).
fn make_private(path: &Path) -> std::io::Result<()> {
    make_private_dir(path, "choose another cache with --cache-dir")
}

impl ObjectCache {
    pub fn new(dir: PathBuf) -> ObjectCache {
        ObjectCache {
            dir,
            verified: Mutex::default(),
        }
    }

    /// `--cache-dir`, else `$XDG_CACHE_HOME/rustpx/objects`, else `~/.cache/rustpx/objects`, the
    /// home coming from `$HOME` or, when that is unset, the password database (as Jupyter finds
    /// it). Never a shared name under /tmp that another user could have made first: without any
    /// home, `$TMPDIR/rustpx-objects-UID`, which is used only if it is this user's and private.
    pub fn default_dir() -> PathBuf {
        match rustpx_protocol::user_dirs::cache_home() {
            Some(base) => base.join("rustpx").join("objects"),
            None => std::env::temp_dir().join(format!("rustpx-objects-{}", my_uid())),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `object` lives in the cache (whether or not it is there yet).
    pub fn path_of(&self, object: &ObjectRef) -> PathBuf {
        self.dir.join(&object.sha256).join(&object.name)
    }

    /// Whether the cache holds `object`, intact: see the module's documentation.
    pub fn has(&self, object: &ObjectRef) -> bool {
        let path = self.path_of(object);
        match self.intact(&path, object) {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    "{} is not the object it is named for (content, owner or mode); fetching it again",
                    path.display()
                );
                false
            }
            Err(_) => false, // not there yet
        }
    }

    fn intact(&self, path: &Path, object: &ObjectRef) -> std::io::Result<bool> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        let owned = meta.is_file() && meta.uid() == my_uid() && meta.mode() & 0o022 == 0;
        let dirs_private = path.parent().is_some_and(private_dir) && private_dir(&self.dir);
        if !owned || !dirs_private || meta.len() != object.size {
            return Ok(false);
        }
        let stamp = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.get(path) == Some(&stamp) {
            return Ok(true);
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)?;
        if sha256_hex(&bytes) != object.sha256 {
            return Ok(false);
        }
        verified.insert(path.to_owned(), stamp);
        Ok(true)
    }

    /// Checks `bytes` against `object`'s hash and size, then stores them.
    pub fn store(&self, object: &ObjectRef, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        if object.name.contains('/') || object.name.starts_with('.') || object.name.is_empty() {
            return Err(StoreError::BadName(object.name.clone()));
        }
        let hash = sha256_hex(bytes);
        if hash != object.sha256 || bytes.len() as u64 != object.size {
            return Err(StoreError::Damaged {
                name: object.name.clone(),
                size: bytes.len(),
                hash,
                expected_size: object.size,
                expected_hash: object.sha256.clone(),
            });
        }
        let dir = self.dir.join(&object.sha256);
        let write = || -> std::io::Result<PathBuf> {
            make_private(&self.dir)?;
            make_private(&dir)?;
            let partial = dir.join(format!(".{}.{}", object.name, std::process::id()));
            let _ = std::fs::remove_file(&partial); // a crashed engine of the same pid
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&partial)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            let path = dir.join(&object.name);
            std::fs::rename(&partial, &path)?;
            Ok(path)
        };
        write().map_err(|source| StoreError::Write {
            name: object.name.clone(),
            cache: self.dir.clone(),
            source,
        })
    }
}

/// Why an object that arrived over the link was not put in the cache.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name that could leave the object's directory or hide in it: never written.
    #[error("refused an object named {0:?}")]
    BadName(String),
    /// The bytes are not what the kernel described.
    #[error(
        "object {name} arrived damaged ({size} bytes with hash {hash}, expected {expected_size} bytes with hash {expected_hash})"
    )]
    Damaged {
        name: String,
        size: usize,
        hash: String,
        expected_size: u64,
        expected_hash: String,
    },
    /// The cache directory or the file could not be written.
    #[error("cannot write object {name} into the cache {}: {source}", cache.display())]
    Write {
        name: String,
        cache: PathBuf,
        source: std::io::Error,
    },
}

/// Whether this engine sees the kernel's files: the connection file the kernel wrote is readable
/// here and holds the same key (a host with a stale file of that name holds another key).
pub fn shares_kernel_files(connection: &EngineConnection) -> bool {
    let Some(path) = &connection.kernel_file else {
        return false;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<EngineConnection>(&text).ok())
        .is_some_and(|theirs| theirs.key == connection.key)
}

/// The reference to `bytes` under `name`, as the kernel would describe them (for tests).
#[cfg(test)]
pub fn object(bytes: &[u8], name: &str) -> ObjectRef {
    ObjectRef {
        name: name.into(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_object_is_stored_under_its_hash_and_found_again() {
        let dir = std::env::temp_dir().join(format!("rustpx-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = ObjectCache::new(dir.clone());
        let lib = object(b"\x7fELF fake", "libstd-abc.so");
        assert!(!cache.has(&lib));
        let path = cache.store(&lib, b"\x7fELF fake").unwrap();
        assert!(path.ends_with(format!("{}/libstd-abc.so", lib.sha256)));
        assert!(cache.has(&lib));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_planted_file_is_not_taken_for_the_object() {
        let dir = std::env::temp_dir().join(format!("rustpx-cache-planted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = ObjectCache::new(dir.clone());
        let lib = object(b"the real library", "libstd-abc.so");
        cache.store(&lib, b"the real library").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&cache.path_of(&lib)), 0o600);
        assert!(cache.has(&lib));
        // Same name and size, other content: refused, though it was verified before.
        std::fs::write(cache.path_of(&lib), b"the fake library").unwrap();
        assert!(!cache.has(&lib));
        // A symlink to the right content is not followed.
        let elsewhere = dir.join("elsewhere.so");
        std::fs::write(&elsewhere, b"the real library").unwrap();
        std::fs::remove_file(cache.path_of(&lib)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cache.path_of(&lib)).unwrap();
        assert!(!cache.has(&lib));
        // Writable by others: refused; stored again, it is whole and private.
        std::fs::remove_file(cache.path_of(&lib)).unwrap();
        cache.store(&lib, b"the real library").unwrap();
        std::fs::set_permissions(cache.path_of(&lib), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        assert!(!cache.has(&lib));
        cache.store(&lib, b"the real library").unwrap();
        assert!(cache.has(&lib));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn damaged_or_badly_named_objects_are_refused() {
        let cache = ObjectCache::new(std::env::temp_dir().join("rustpx-cache-refused"));
        let lib = object(b"good", "lib.so");
        assert!(matches!(
            cache.store(&lib, b"evil"),
            Err(StoreError::Damaged { .. })
        ));
        let escape = object(b"x", "../x.so");
        assert!(matches!(
            cache.store(&escape, b"x"),
            Err(StoreError::BadName(_))
        ));
    }
}
