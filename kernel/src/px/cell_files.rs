//! The files a data magic's engine cell reads and writes, for engines on other hosts.
//!
//! Data magics move values as bincode files in the kernel's transfer directory. An engine that
//! shares the kernel's filesystem reads and writes them in place; for any other engine the hub
//! sends the cell's input files with its run request and writes the output files the reply
//! brings back, at the same paths, before the kernel's side of the magic reads them. Paths may
//! name the engine as `{engine}` (scatter and gather have one file per engine).

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
pub use rustpx_core::cell_files::CellFiles;
use rustpx_protocol::{sha256_hex, ShippedFile};

/// Input files read and hashed once per version, however many engines they go to (a `%push`
/// sends the same file to every target).
/// A data magic's input file that could not be read to ship it to an engine.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path} to send it: {source}")]
pub struct InputError {
    path: String,
    source: std::io::Error,
}

#[derive(Default)]
pub struct InputCache {
    files: HashMap<String, (SystemTime, ShippedFile, Bytes)>,
}

impl InputCache {
    /// Each input file with its hash, and its bytes, in order.
    pub fn read(&mut self, paths: &[String]) -> Result<(Vec<ShippedFile>, Vec<Bytes>), InputError> {
        let mut files = Vec::new();
        let mut contents = Vec::new();
        for path in paths {
            let fail = |source| InputError {
                path: path.clone(),
                source,
            };
            let modified = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map_err(fail)?;
            let cached = self
                .files
                .get(path)
                .filter(|(seen, _, _)| *seen == modified)
                .map(|(_, file, bytes)| (file.clone(), bytes.clone()));
            let (file, bytes) = match cached {
                Some(hit) => hit,
                None => {
                    let bytes = Bytes::from(std::fs::read(path).map_err(fail)?);
                    let file = ShippedFile {
                        path: path.clone(),
                        sha256: sha256_hex(&bytes),
                    };
                    self.files
                        .insert(path.clone(), (modified, file.clone(), bytes.clone()));
                    (file, bytes)
                }
            };
            files.push(file);
            contents.push(bytes);
        }
        Ok((files, contents))
    }

    /// Forgets files that are gone (a magic's files are deleted when it ends).
    pub fn prune(&mut self) {
        self.files
            .retain(|path, _| std::path::Path::new(path).exists());
    }
}

/// Why a file an engine sent back was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    #[error("refused a file the run did not ask for: {0}")]
    NotAsked(String),
    #[error("{0} arrived damaged (its hash does not match)")]
    Damaged(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Writes a file an engine sent back, if the run asked for that path (an engine cannot make the
/// kernel write anywhere else) and it arrived intact.
pub fn write_output(
    expected: &[String],
    file: &ShippedFile,
    bytes: &[u8],
) -> Result<(), OutputFileError> {
    let path = &file.path;
    if !expected.iter().any(|p| p == path) {
        return Err(OutputFileError::NotAsked(path.clone()));
    }
    if sha256_hex(bytes) != file.sha256 {
        return Err(OutputFileError::Damaged(path.clone()));
    }
    let partial = format!("{path}.partial-{}", std::process::id());
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| OutputFileError::Write {
            path: path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_read_again_only_when_it_changed() {
        let dir = std::env::temp_dir().join(format!("rustpx-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.push.bin").display().to_string();
        std::fs::write(&path, b"one").unwrap();
        let mut cache = InputCache::default();
        let (files, bytes) = cache.read(std::slice::from_ref(&path)).unwrap();
        assert_eq!(files[0].sha256, sha256_hex(b"one"));
        assert_eq!(bytes[0].as_ref(), b"one");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"two").unwrap();
        let (files, _) = cache.read(std::slice::from_ref(&path)).unwrap();
        assert_eq!(files[0].sha256, sha256_hex(b"two"));
        std::fs::remove_file(&path).unwrap();
        cache.prune();
        assert!(cache.files.is_empty());
        assert!(cache.read(&[path]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn only_asked_for_outputs_are_written() {
        let dir = std::env::temp_dir().join(format!("rustpx-cell-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.pull.0.bin").display().to_string();
        let file = |path: &str, bytes: &[u8]| ShippedFile {
            path: path.into(),
            sha256: sha256_hex(bytes),
        };
        let expected = std::slice::from_ref(&path);
        write_output(expected, &file(&path, b"abc"), b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert!(matches!(
            write_output(expected, &file("/etc/passwd", b"x"), b"x"),
            Err(OutputFileError::NotAsked(_))
        ));
        let damaged = write_output(expected, &file(&path, b"abc"), b"abd").unwrap_err();
        assert!(matches!(damaged, OutputFileError::Damaged(_)));
        let _ = std::fs::remove_dir_all(dir);
    }
}
