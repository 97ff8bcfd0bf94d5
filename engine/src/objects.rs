//! Where an engine finds the compiled cells it runs.
//!
//! An engine on the kernel's host loads each cell from the path the kernel's compiler wrote.
//! An engine on another host (or one told to behave as if it were) has neither those files nor a
//! Rust toolchain: it keeps a cache of objects by content hash, `DIR/<sha256>/<name>`, filled over
//! the engine link, so a host downloads libstd once however many engines and cells it runs. A
//! file is only put in the cache after its hash is checked, and it is written beside its place
//! and renamed, so engines sharing the cache never see half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustpx_protocol::{sha256_hex, EngineConnection, ObjectRef};

/// The content-addressed object cache of this host.
pub struct ObjectCache {
    dir: PathBuf,
}

impl ObjectCache {
    pub fn new(dir: PathBuf) -> ObjectCache {
        ObjectCache { dir }
    }

    /// `--cache-dir`, else `$XDG_CACHE_HOME/rustpx/objects`, else `~/.cache/rustpx/objects`.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("rustpx").join("objects")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `object` lives in the cache (whether or not it is there yet).
    pub fn path_of(&self, object: &ObjectRef) -> PathBuf {
        self.dir.join(&object.sha256).join(&object.name)
    }

    /// Whether the cache holds `object` (checked by size; the hash was checked on the way in).
    pub fn has(&self, object: &ObjectRef) -> bool {
        std::fs::metadata(self.path_of(object)).is_ok_and(|m| m.len() == object.size)
    }

    /// Checks `bytes` against `object`'s hash and size, then stores them.
    pub fn store(&self, object: &ObjectRef, bytes: &[u8]) -> Result<PathBuf, String> {
        if object.name.contains('/') || object.name.starts_with('.') || object.name.is_empty() {
            return Err(format!("refused an object named {:?}", object.name));
        }
        let hash = sha256_hex(bytes);
        if hash != object.sha256 || bytes.len() as u64 != object.size {
            return Err(format!(
                "object {} arrived damaged ({} bytes with hash {hash}, expected {} bytes with hash {})",
                object.name,
                bytes.len(),
                object.size,
                object.sha256
            ));
        }
        let dir = self.dir.join(&object.sha256);
        let write = || -> std::io::Result<PathBuf> {
            std::fs::create_dir_all(&dir)?;
            let partial = dir.join(format!(".{}.{}", object.name, std::process::id()));
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            let path = dir.join(&object.name);
            std::fs::rename(&partial, &path)?;
            Ok(path)
        };
        write().map_err(|e| {
            format!(
                "cannot write object {} into the cache {}: {e}",
                object.name,
                self.dir.display()
            )
        })
    }
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

    #[test]
    fn an_object_is_stored_under_its_hash_and_found_again() {
        let dir = std::env::temp_dir().join(format!("rustpx-cache-{}", std::process::id()));
        let cache = ObjectCache::new(dir.clone());
        let lib = object(b"\x7fELF fake", "libstd-abc.so");
        assert!(!cache.has(&lib));
        let path = cache.store(&lib, b"\x7fELF fake").unwrap();
        assert!(path.ends_with(format!("{}/libstd-abc.so", lib.sha256)));
        assert!(cache.has(&lib));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn damaged_or_badly_named_objects_are_refused() {
        let cache = ObjectCache::new(std::env::temp_dir().join("rustpx-cache-refused"));
        let lib = object(b"good", "lib.so");
        assert!(cache.store(&lib, b"evil").unwrap_err().contains("damaged"));
        let escape = object(b"x", "../x.so");
        assert!(cache.store(&escape, b"x").unwrap_err().contains("refused"));
    }
}
