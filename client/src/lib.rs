//! Typed values between the rustpx kernel's own Rust context and its engines.
//!
//! The kernel's `%push`, `%pull`, `%scatter` and `%gather` magics generate small cells that call
//! these functions on each side; values cross as bincode bytes in files under the kernel's
//! transfer directory (shared memory when the machine has it), so no payload passes through the
//! Jupyter or engine sockets and each side needs only the value's type to read it back.
//!
//! A type crosses when it implements serde's `Serialize` (to leave) and `Deserialize` (to
//! arrive); the compiler names the type and the missing trait otherwise.
//!
//! Vectors and slices of fixed-size numbers (`u8` to `u64`, `i8` to `i64`, `usize`, `isize`,
//! `f32`, `f64`) skip serde: their bincode encoding is their length followed by their
//! little-endian memory, so they are written and read with one copy. This matters because the
//! generic code of a cell is compiled unoptimised, where serde walks a 10 MiB `Vec<u8>` byte by
//! byte; the files stay plain bincode either way.

use std::any::{Any, TypeId};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
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
pub fn save<T: Serialize + ?Sized + 'static>(value: &T, path: &str) -> Result<(), TransferError> {
    if let Some((count, memory)) = numbers::as_bytes(value) {
        return write_atomically(path, &[&(count as u64).to_le_bytes(), memory]);
    }
    let bytes = bincode::serialize(value).map_err(|error| TransferError::Encode {
        type_name: std::any::type_name::<T>(),
        error,
    })?;
    write_atomically(path, &[&bytes])
}

/// Reads the value of type `T` that [`save`] wrote to `path`.
pub fn load<T: DeserializeOwned + 'static>(path: &str) -> Result<T, TransferError> {
    if let Some(numbers) = numbers::read::<T>(path) {
        return numbers;
    }
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

mod numbers;

/// One value from each path, in order (`%pull` on several engines).
pub fn collect<T: DeserializeOwned + 'static>(paths: &[&str]) -> Result<Vec<T>, TransferError> {
    paths.iter().map(|path| load(path)).collect()
}

/// Splits `items` into one contiguous chunk per path, in order; chunk sizes differ by at most
/// one and the first chunks take the remainder, as ipyparallel's scatter does.
pub fn scatter<T: Serialize + 'static>(items: &[T], paths: &[&str]) -> Result<(), TransferError> {
    for (path, range) in paths.iter().zip(chunk_ranges(items.len(), paths.len())) {
        save(&items[range], path)?;
    }
    Ok(())
}

/// The chunks that [`scatter`] wrote (or engines saved), concatenated in path order.
pub fn concat<T: DeserializeOwned + 'static>(paths: &[&str]) -> Result<Vec<T>, TransferError> {
    let mut all = Vec::new();
    for path in paths {
        let mut chunk = load::<Vec<T>>(path)?;
        all.append(&mut chunk);
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

/// Writes `items` as chunks of `chunk_size` for the kernel's map scheduler: for each chunk, its
/// byte length (u64, little-endian) and the bincode of that slice. The kernel hands chunks out
/// without knowing their type.
pub fn save_chunks<T: Serialize>(
    items: &[T],
    chunk_size: usize,
    path: &str,
) -> Result<(), TransferError> {
    write_atomically(path, &[&encode_chunks(items, chunk_size)?])
}

/// The bytes [`save_chunks`] writes: for each chunk its byte length (u64) and its bincode.
pub fn encode_chunks<T: Serialize>(
    items: &[T],
    chunk_size: usize,
) -> Result<Vec<u8>, TransferError> {
    let mut bytes = Vec::new();
    for chunk in items.chunks(chunk_size.max(1)) {
        let encoded = bincode::serialize(chunk).map_err(|error| TransferError::Encode {
            type_name: std::any::type_name::<T>(),
            error,
        })?;
        bytes.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&encoded);
    }
    Ok(bytes)
}

/// `%pxmap`'s chunk size when none is given. Measured (bench/run.py, 1,000,000 u64 on 4 engines,
/// 2 cores): chunks of 1,000 to 250,000 items all took 1.24 to 1.38 s, since a chunk costs about
/// 40 µs; so the default favours balance and progress: about 16 chunks per engine, at most
/// 10,000 items each.
pub fn default_chunk_size(len: usize, engines: usize) -> usize {
    let parts = engines.max(1) * 16;
    len.div_ceil(parts).clamp(1, 10_000)
}

/// Reads the results the kernel gathered from a map, in input order: for each chunk its byte
/// length and the bincode of a `Vec<Result<R, String>>` (an error names the panic of its item).
pub fn load_results<R: DeserializeOwned>(
    path: &str,
) -> Result<Vec<Result<R, String>>, TransferError> {
    let bytes = fs::read(path).map_err(|error| TransferError::Io {
        path: path.to_owned(),
        error,
    })?;
    decode_results(&bytes, path)
}

/// The results of [`load_results`] from their bytes; `origin` names where they came from.
pub fn decode_results<R: DeserializeOwned>(
    bytes: &[u8],
    origin: &str,
) -> Result<Vec<Result<R, String>>, TransferError> {
    let decode_error = |error| TransferError::Decode {
        path: origin.to_owned(),
        type_name: std::any::type_name::<R>(),
        error,
    };
    let mut results = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let (len, tail) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let chunk = tail.get(..len).ok_or_else(|| {
            decode_error(Box::new(bincode::ErrorKind::Custom(
                "truncated results".into(),
            )))
        })?;
        results
            .extend(bincode::deserialize::<Vec<Result<R, String>>>(chunk).map_err(decode_error)?);
        rest = &tail[len..];
    }
    Ok(results)
}

/// The values of a map that the kernel has checked has no errors.
pub fn values<R>(results: Vec<Result<R, String>>) -> Vec<R> {
    results.into_iter().filter_map(Result::ok).collect()
}

/// An engine's side of a load-balanced map: connects to the kernel's scheduler (address and
/// token in `server_file`), takes chunks of items as they come, applies `f` to each item, and
/// sends each chunk's results back, until the scheduler has no more. A panicking item becomes an
/// error for that item only. The scheduler keeps two chunks in flight per engine, so the next
/// chunk is already here when one is done.
pub fn serve_map<A, R, F>(f: F, server_file: &str) -> Result<usize, TransferError>
where
    A: DeserializeOwned,
    R: Serialize,
    F: Fn(A) -> R,
{
    map_worker::serve(f, server_file, None)
}

/// [`serve_map`] for the Rust API's scheduler: `label` tells it which function this engine
/// serves, so that it hands this engine only that function's tasks.
pub fn serve_tasks<A, R, F>(f: F, label: &str, server_file: &str) -> Result<usize, TransferError>
where
    A: DeserializeOwned,
    R: Serialize,
    F: Fn(A) -> R,
{
    map_worker::serve(f, server_file, Some(label))
}

mod map_worker;
mod task_output;
mod values;
pub use task_output::MAX_TASK_OUTPUT;

mod api;
mod api_direct;
#[doc(hidden)]
pub mod api_payload;
mod api_results;
#[doc(hidden)]
pub mod api_tasks;
#[doc(hidden)]
pub mod api_wire;
#[doc(hidden)]
pub mod type_names;
pub use api::{
    client, ApiError, AsyncExecute, AsyncMapResult, AsyncResult, Client, DirectView, EngineOutput,
    LoadBalancedView, Targets, TaskFailure,
};
pub use api_direct::{vars, AsyncData, AsyncDirectResult, Vars};
pub use api_tasks::{Dependency, TaskIter, TaskMetadata, TaskOptions};

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

fn write_atomically(path: &str, parts: &[&[u8]]) -> Result<(), TransferError> {
    let io = |error| TransferError::Io {
        path: path.to_owned(),
        error,
    };
    let partial = format!("{path}.partial-{}", std::process::id());
    let mut file = fs::File::create(&partial).map_err(io)?;
    for part in parts {
        file.write_all(part).map_err(io)?;
    }
    drop(file);
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
    fn vectors_of_numbers_take_the_one_copy_path_and_stay_bincode() {
        let (_guard, dir) = dir();
        let path = format!("{dir}/n.bin");
        let bytes: Vec<u8> = (0..=255).cycle().take(100_003).collect();
        save(&bytes, &path).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            bincode::serialize(&bytes).unwrap()
        );
        assert_eq!(load::<Vec<u8>>(&path).unwrap(), bytes);
        let floats = vec![1.5f64, -0.0, f64::MAX, 3.25];
        fs::write(&path, bincode::serialize(&floats).unwrap()).unwrap();
        assert_eq!(load::<Vec<f64>>(&path).unwrap(), floats);
        let sizes: Vec<usize> = vec![usize::MAX, 0, 7];
        save(&sizes[1..], &path).unwrap();
        assert_eq!(
            bincode::deserialize::<Vec<usize>>(&fs::read(&path).unwrap()).unwrap(),
            [0, 7]
        );
        let empty: Vec<i32> = Vec::new();
        save(&empty, &path).unwrap();
        assert_eq!(load::<Vec<i32>>(&path).unwrap(), empty);
    }

    #[test]
    fn a_truncated_vector_of_numbers_is_a_decode_error_not_a_short_vector() {
        let (_guard, dir) = dir();
        let path = format!("{dir}/n.bin");
        let mut bytes = bincode::serialize(&vec![1u64, 2, 3]).unwrap();
        bytes.pop();
        fs::write(&path, bytes).unwrap();
        let error = load::<Vec<u64>>(&path).unwrap_err().to_string();
        assert!(error.contains("is not a alloc::vec::Vec<u64>"), "{error}");
        assert!(
            error.contains("3 items of 8 bytes do not fill 31 bytes"),
            "{error}"
        );
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
    fn default_chunks_balance_small_inputs_and_cap_large_ones() {
        assert_eq!(default_chunk_size(0, 4), 1);
        assert_eq!(default_chunk_size(640, 4), 10);
        assert_eq!(default_chunk_size(1_000_000, 4), 10_000);
        assert_eq!(default_chunk_size(5, 0), 1);
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
