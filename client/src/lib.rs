//! Typed values between the rustpx kernel's own Rust context and its engines.
//!
//! The kernel's `%push`, `%pull`, `%scatter` and `%gather` magics generate small cells that call
//! these functions on each side; values cross as bincode bytes in files under the kernel's
//! transfer directory (shared memory when the machine has it), so no payload passes through the
//! Jupyter or engine sockets and each side needs only the value's type to read it back.
//!
//! A type crosses when it implements serde's `Serialize` (to leave) and `Deserialize` (to
//! arrive); the compiler names the type and the missing trait otherwise.

use std::fmt;
use std::fs;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The environment variable each engine sets to its own id before running a cell.
pub const ENGINE_ID_ENV: &str = "RUSTPX_ENGINE_ID";

/// Why a value could not be written or read.
#[derive(Debug)]
pub enum TransferError {
    /// The file could not be written or read.
    Io { path: String, error: std::io::Error },
    /// The bytes do not hold a value of the expected type.
    Decode {
        path: String,
        type_name: &'static str,
        error: bincode::Error,
    },
    /// The value could not be encoded.
    Encode {
        type_name: &'static str,
        error: bincode::Error,
    },
    /// A per-engine call ran outside an engine.
    NotOnAnEngine,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Io { path, error } => write!(f, "{path}: {error}"),
            TransferError::Decode { path, type_name, error } => write!(
                f,
                "the value in {path} is not a {type_name} ({error}); the sending side used another type"
            ),
            TransferError::Encode { type_name, error } => {
                write!(f, "cannot encode a {type_name}: {error}")
            }
            TransferError::NotOnAnEngine => write!(
                f,
                "{ENGINE_ID_ENV} is not set: this call only works in a %px cell on an engine"
            ),
        }
    }
}

impl std::error::Error for TransferError {}

/// Writes `value` to `path`, replacing the file atomically so a reader never sees half a value.
pub fn save<T: Serialize + ?Sized>(value: &T, path: &str) -> Result<(), TransferError> {
    let bytes = bincode::serialize(value).map_err(|error| TransferError::Encode {
        type_name: std::any::type_name::<T>(),
        error,
    })?;
    write_atomically(path, &bytes)
}

/// Reads the value of type `T` that [`save`] wrote to `path`.
pub fn load<T: DeserializeOwned>(path: &str) -> Result<T, TransferError> {
    let bytes = fs::read(path).map_err(|error| TransferError::Io {
        path: path.to_owned(),
        error,
    })?;
    bincode::deserialize(&bytes).map_err(|error| TransferError::Decode {
        path: path.to_owned(),
        type_name: std::any::type_name::<T>(),
        error,
    })
}

/// One value from each path, in order (`%pull` on several engines).
pub fn collect<T: DeserializeOwned>(paths: &[&str]) -> Result<Vec<T>, TransferError> {
    paths.iter().map(|path| load(path)).collect()
}

/// Splits `items` into one contiguous chunk per path, in order; chunk sizes differ by at most
/// one and the first chunks take the remainder, as ipyparallel's scatter does.
pub fn scatter<T: Serialize>(items: &[T], paths: &[&str]) -> Result<(), TransferError> {
    for (path, range) in paths.iter().zip(chunk_ranges(items.len(), paths.len())) {
        save(&items[range], path)?;
    }
    Ok(())
}

/// The chunks that [`scatter`] wrote (or engines saved), concatenated in path order.
pub fn concat<T: DeserializeOwned>(paths: &[&str]) -> Result<Vec<T>, TransferError> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(load::<Vec<T>>(path)?);
    }
    Ok(all)
}

/// The index ranges of `parts` contiguous chunks of `len` items.
pub fn chunk_ranges(len: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (len / parts, len % parts);
    let mut start = 0;
    (0..parts)
        .map(|index| {
            let size = base + usize::from(index < extra);
            let range = start..start + size;
            start += size;
            range
        })
        .collect()
}

/// The id of the engine running this cell.
pub fn engine_id() -> Result<u32, TransferError> {
    std::env::var(ENGINE_ID_ENV)
        .ok()
        .and_then(|id| id.parse().ok())
        .ok_or(TransferError::NotOnAnEngine)
}

/// `{prefix}.{engine id}.bin`: the file of this engine in a per-engine transfer.
pub fn engine_path(prefix: &str) -> Result<String, TransferError> {
    Ok(format!("{prefix}.{}.bin", engine_id()?))
}

fn write_atomically(path: &str, bytes: &[u8]) -> Result<(), TransferError> {
    let io = |error| TransferError::Io {
        path: path.to_owned(),
        error,
    };
    let partial = format!("{path}.partial-{}", std::process::id());
    fs::write(&partial, bytes).map_err(io)?;
    fs::rename(&partial, Path::new(path)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: f64,
        label: String,
    }

    fn dir() -> (tempdir::Dir, String) {
        let dir = tempdir::Dir::new();
        let path = dir.0.to_string_lossy().into_owned();
        (dir, path)
    }

    mod tempdir {
        /// A directory removed on drop (std only, to keep the crate's dependencies at two).
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = std::env::temp_dir()
                    .join(format!("rustpx-client-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).expect("create test dir");
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn values_of_several_types_round_trip() {
        let (_guard, dir) = dir();
        let path = format!("{dir}/v.bin");
        save(&42u64, &path).unwrap();
        assert_eq!(load::<u64>(&path).unwrap(), 42);
        save("text", &path).unwrap();
        assert_eq!(load::<String>(&path).unwrap(), "text");
        let point = Point {
            x: 1.5,
            label: "p".into(),
        };
        save(&point, &path).unwrap();
        assert_eq!(load::<Point>(&path).unwrap(), point);
    }

    #[test]
    fn reading_as_another_type_names_the_type() {
        let (_guard, dir) = dir();
        let path = format!("{dir}/v.bin");
        save(&1u8, &path).unwrap();
        let error = load::<Point>(&path).unwrap_err().to_string();
        assert!(error.contains("Point"), "{error}");
    }

    #[test]
    fn scatter_then_concat_is_the_identity_with_chunks_within_one() {
        let (_guard, dir) = dir();
        let paths: Vec<String> = (0..4).map(|i| format!("{dir}/c{i}.bin")).collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let items: Vec<u64> = (0..10).collect();
        scatter(&items, &paths).unwrap();
        let sizes: Vec<usize> = paths
            .iter()
            .map(|p| load::<Vec<u64>>(p).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![3, 3, 2, 2]);
        assert_eq!(concat::<u64>(&paths).unwrap(), items);
    }

    #[test]
    fn chunk_ranges_cover_everything_in_order() {
        for len in 0..40 {
            for parts in 1..9 {
                let ranges = chunk_ranges(len, parts);
                assert_eq!(ranges.len(), parts);
                assert_eq!(ranges.first().map(|r| r.start), Some(0));
                assert_eq!(ranges.last().map(|r| r.end), Some(len));
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn engine_path_needs_an_engine() {
        std::env::remove_var(ENGINE_ID_ENV);
        assert!(matches!(
            engine_path("x"),
            Err(TransferError::NotOnAnEngine)
        ));
    }
}
