//! A data magic's files on an engine that cannot see the kernel's: written before the run from
//! the request's buffers, and read back after it for the reply.
//!
//! The generated cells read and write fixed paths in the kernel's transfer directory
//! (`/dev/shm/rustpx-transfer-…`); on another host the same path is made here, private to this
//! user, so the cell runs unchanged.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use rustpx_protocol::pieces::{carried_bytes, MAX_CARRIED_BYTES};
use rustpx_protocol::{sha256_hex, ShippedFile};

/// Directories this engine created for data magics (and its map socket): removed when it exits
/// normally, so an engine host's /dev/shm does not keep a kernel's values.
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A data magic's input file that could not be put where its cell reads it.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    path: PathBuf,
    source: std::io::Error,
}

/// Writes each `(path, bytes)`, creating its directory (mode 0700) when missing.
pub fn write_inputs(files: &[(String, Bytes)]) -> Result<(), WriteError> {
    for (path, bytes) in files {
        let path = Path::new(path);
        let fail = |source| WriteError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(fail)?;
            if let Ok(mut created) = CREATED.lock() {
                created.push(dir.to_owned());
            }
        }
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        let mut file = std::fs::File::create(&partial).map_err(fail)?;
        file.write_all(bytes).map_err(fail)?;
        drop(file);
        std::fs::rename(&partial, path).map_err(fail)?;
    }
    Ok(())
}

/// Adds a directory this engine made (such as its map socket's) to those removed at exit.
pub fn remember_created(dir: PathBuf) {
    if let Ok(mut created) = CREATED.lock() {
        created.push(dir);
    }
}

/// Removes the directories this engine created (at exit).
pub fn remove_created() {
    if let Ok(mut created) = CREATED.lock() {
        for dir in created.drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes what an earlier run left at `paths`, so that only this run's output goes back.
pub fn clear(paths: &[String]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// The files of `paths` that exist, with their hashes and bytes (a run that failed wrote none).
pub fn read_outputs(paths: &[String]) -> Result<(Vec<ShippedFile>, Vec<Bytes>), TooLarge> {
    // Checked before anything is read: the hub would refuse a larger reply.
    let size = carried_bytes(paths);
    if size > MAX_CARRIED_BYTES {
        return Err(TooLarge(size));
    }
    let mut found = Vec::new();
    let mut contents = Vec::new();
    for path in paths {
        match std::fs::read(path) {
            Ok(bytes) => {
                found.push(ShippedFile {
                    path: path.clone(),
                    sha256: sha256_hex(&bytes),
                });
                contents.push(Bytes::from(bytes));
            }
            Err(error) => tracing::debug!("{path} was not written by the run: {error}"),
        }
    }
    Ok((found, contents))
}

/// Values to send back that one reply cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("the values to pull from this engine come to {0} bytes, more than the {MAX_CARRIED_BYTES} bytes one reply to the kernel may carry; pull fewer at a time (a single value that large must be split, e.g. with %scatter and %gather)")]
pub struct TooLarge(u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_written_in_a_private_directory_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rustpx-files-{}", std::process::id()));
        let path = dir.join("x.push.bin").display().to_string();
        write_inputs(&[(path.clone(), Bytes::from_static(b"value"))]).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let missing = dir.join("y.pull.0.bin").display().to_string();
        let (found, contents) = read_outputs(&[path.clone(), missing]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, path);
        assert_eq!(found[0].sha256, sha256_hex(b"value"));
        assert_eq!(contents[0].as_ref(), b"value");
        let _ = std::fs::remove_dir_all(dir);
    }
}
