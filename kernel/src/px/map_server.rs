//! The load-balanced scheduler behind `%pxmap`: chunks of serialized items go to whichever engine
//! asks, two in flight per engine, and results come back by chunk index.
//!
//! Engines run a compiled-once cell (`rustpx::serve_map`) that connects here over a Unix socket
//! in the kernel's private directory ([`crate::private_dir`]) and stays for the whole map, so a task costs a frame each way and no compile. The scheduler
//! never decodes items or results (it has no types); the engine tells it which items failed and
//! the result type's name. A connection that drops with chunks in flight (an engine died) puts
//! them back in the queue for the others. Wire format: see the client crate's `map_worker`.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustpx_protocol::EngineId;

use super::lock;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Chunks each engine holds at once: one it works on and the next, already in its socket.
const IN_FLIGHT: usize = 2;
/// How much of one item's panic message the map keeps (the rest is read and dropped).
const MAX_PANIC_MESSAGE: u64 = 1 << 20;
/// Connections served at once: one per engine, with room for pools of thousands.
const MAX_CONNECTIONS: usize = 4096;
/// How long an engine has to say who it is, and how long each line of that may be.
pub(super) const HELLO_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
const HELLO_LINE_MAX: u64 = 1024;

/// One item that panicked on an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFailure {
    pub item: u64,
    pub engine: EngineId,
    pub message: String,
}

/// The state of one map, shared by the connections serving it.
#[derive(Debug, Default)]
pub struct MapJob {
    chunks: Vec<Vec<u8>>,
    /// The index of each chunk's first item.
    first_items: Vec<u64>,
    queue: VecDeque<usize>,
    results: Vec<Option<Vec<u8>>>,
    /// Which engine ran each item, by chunk.
    engines_by_chunk: Vec<Option<EngineId>>,
    pub failures: Vec<ItemFailure>,
    pub result_type: Option<String>,
    pub argument_type: Option<String>,
    pub started: Option<Instant>,
    /// Time spent on the engines per chunk, summed (ipyparallel's serial_time).
    pub serial_seconds: f64,
    done_chunks: usize,
    /// Items of each chunk (for per-item engine ids).
    chunk_lengths: Vec<u64>,
    /// Stopped by an interrupt: nothing more goes out.
    pub interrupted: bool,
}

/// Why a chunk file written by `rustpx::save_chunks` cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkFileError {
    #[error("the chunk file is truncated")]
    Truncated,
    #[error("a chunk without its item count")]
    NoItemCount,
}

impl MapJob {
    /// A job over chunks as `rustpx::save_chunks` wrote them (length-prefixed bincode, whose
    /// first eight bytes are the chunk's item count).
    pub fn from_chunk_file(bytes: &[u8]) -> Result<MapJob, ChunkFileError> {
        let mut job = MapJob::default();
        let mut rest = bytes;
        let mut first_item = 0u64;
        while !rest.is_empty() {
            let (len, tail) = rest.split_at_checked(8).ok_or(ChunkFileError::Truncated)?;
            let len = len
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| ChunkFileError::Truncated)?;
            let chunk = usize::try_from(len)
                .ok()
                .and_then(|len| tail.get(..len))
                .ok_or(ChunkFileError::Truncated)?;
            let items = chunk
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(ChunkFileError::NoItemCount)?;
            job.chunks.push(chunk.to_vec());
            job.first_items.push(first_item);
            job.chunk_lengths.push(items);
            first_item += items;
            rest = &tail[chunk.len()..];
        }
        let n = job.chunks.len();
        job.queue = (0..n).collect();
        job.results = vec![None; n];
        job.engines_by_chunk = vec![None; n];
        Ok(job)
    }

    pub fn total_chunks(&self) -> usize {
        self.chunks.len()
    }

    pub fn total_items(&self) -> u64 {
        self.chunk_lengths.iter().sum()
    }

    pub fn done_items(&self) -> u64 {
        self.results
            .iter()
            .zip(&self.chunk_lengths)
            .filter(|(r, _)| r.is_some())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn is_done(&self) -> bool {
        self.done_chunks == self.chunks.len()
    }

    /// The engine that ran each item, in input order (`None` for items not run yet).
    pub fn item_engines(&self) -> Vec<Option<EngineId>> {
        self.engines_by_chunk
            .iter()
            .zip(&self.chunk_lengths)
            .flat_map(|(engine, n)| std::iter::repeat_n(*engine, *n as usize))
            .collect()
    }

    /// The results file for `rustpx::load_results`, once every chunk is back.
    pub fn results_file(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        for result in &self.results {
            let result = result.as_ref()?;
            bytes.extend_from_slice(&(result.len() as u64).to_le_bytes());
            bytes.extend_from_slice(result);
        }
        Some(bytes)
    }

    /// No more chunks go out; what engines hold still comes back.
    pub fn stop(&mut self) {
        self.queue.clear();
        self.interrupted = true;
    }

    pub(super) fn next_chunk(&mut self) -> Option<(usize, u64, Vec<u8>)> {
        if self.interrupted {
            return None;
        }
        let index = self.queue.pop_front()?;
        Some((index, self.first_items[index], self.chunks[index].clone()))
    }

    pub(super) fn complete(
        &mut self,
        index: usize,
        engine: EngineId,
        failures: Vec<(u64, String)>,
        bytes: Vec<u8>,
        seconds: f64,
    ) {
        if self.results.get(index).is_none_or(Option::is_some) {
            return;
        }
        self.results[index] = Some(bytes);
        self.engines_by_chunk[index] = Some(engine);
        self.failures
            .extend(failures.into_iter().map(|(item, message)| ItemFailure {
                item,
                engine,
                message,
            }));
        self.serial_seconds += seconds;
        self.done_chunks += 1;
    }

    pub(super) fn requeue(&mut self, chunks: impl IntoIterator<Item = usize>) {
        for index in chunks {
            if self.results.get(index).is_some_and(Option::is_none) {
                self.queue.push_front(index);
            }
        }
    }
}

/// The lines an engine opens with (token, engine id, result and argument type names), up to the
/// empty line: at most 8 lines of [`HELLO_LINE_MAX`] bytes each.
pub(super) async fn read_hello(
    read: &mut BufReader<OwnedReadHalf>,
) -> std::io::Result<Vec<String>> {
    let mut hello = Vec::new();
    while hello.len() < 8 {
        let mut line = Vec::new();
        (&mut *read)
            .take(HELLO_LINE_MAX)
            .read_until(b'\n', &mut line)
            .await?;
        if line.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a hello line that is too long or cut off",
            ));
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        hello.push(line);
    }
    Ok(hello)
}

/// The session's scheduler: one Unix socket; a job while `%pxmap` runs.
#[derive(Clone)]
pub struct MapServer {
    pub job: Arc<Mutex<Option<MapJob>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl MapServer {
    /// Listens on a Unix socket in the private directory and writes `path\ntoken` to
    /// `server_file` (mode 0600 in the private transfer directory), which the engine cells read.
    pub async fn start(server_file: &Path) -> std::io::Result<MapServer> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let path = crate::private_dir::socket_path(&format!("pxmap-{}.sock", &token[..8]))?;
        let listener = UnixListener::bind(&path)?;
        std::fs::write(server_file, format!("{}\n{token}\n", path.display()))?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let server = MapServer {
            job: Arc::default(),
            changed: Arc::default(),
        };
        let accepting = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("map: {MAX_CONNECTIONS} connections open; refused one");
                    continue;
                };
                let server = accepting.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    if let Err(error) = server.serve(stream, &token).await {
                        tracing::debug!("map connection ended: {error}");
                    }
                    drop(slot);
                });
            }
        });
        Ok(server)
    }

    /// Stops the running map (an interrupt).
    pub fn stop(&self) {
        if let Some(job) = lock(&self.job).as_mut() {
            job.stop();
        }
        self.changed.notify_waiters();
    }

    async fn serve(&self, stream: UnixStream, token: &str) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::with_capacity(1 << 16, read);
        let Ok(hello) = tokio::time::timeout(HELLO_DEADLINE, read_hello(&mut read)).await else {
            tracing::warn!("map connection refused: no hello within {HELLO_DEADLINE:?}");
            return Ok(());
        };
        let hello = hello?;
        if hello.first().map(String::as_str) != Some(token) {
            tracing::warn!("map connection with a wrong token refused");
            return Ok(());
        }
        let engine: EngineId = hello
            .get(1)
            .and_then(|id| id.parse().ok())
            .unwrap_or(u32::MAX);
        {
            let mut job = lock(&self.job);
            if let Some(job) = job.as_mut() {
                job.result_type = hello.get(2).cloned();
                job.argument_type = hello.get(3).cloned();
                job.started.get_or_insert_with(Instant::now);
            }
        }
        let mut in_flight: BTreeMap<usize, Instant> = BTreeMap::new();
        let outcome = self
            .exchange(&mut read, &mut write, engine, &mut in_flight)
            .await;
        if !in_flight.is_empty() {
            if let Some(job) = lock(&self.job).as_mut() {
                job.requeue(in_flight.keys().copied());
            }
        }
        self.changed.notify_waiters();
        outcome
    }

    async fn exchange(
        &self,
        read: &mut BufReader<OwnedReadHalf>,
        write: &mut OwnedWriteHalf,
        engine: EngineId,
        in_flight: &mut BTreeMap<usize, Instant>,
    ) -> std::io::Result<()> {
        // A chunk's engine time starts when it was sent or when the engine finished the one
        // before it, whichever is later: the second chunk in flight waits in the socket.
        let mut last_result = Instant::now();
        loop {
            while in_flight.len() < IN_FLIGHT {
                let next = lock(&self.job).as_mut().and_then(MapJob::next_chunk);
                let Some((index, first_item, bytes)) = next else {
                    break;
                };
                write_chunk(write, index as u64, first_item, &bytes).await?;
                in_flight.insert(index, Instant::now());
            }
            if in_flight.is_empty() {
                let finished = lock(&self.job)
                    .as_ref()
                    .is_none_or(|job| job.is_done() || job.interrupted);
                if finished {
                    write.write_all(&[1u8]).await?;
                    return Ok(());
                }
                // Nothing queued, but another engine still holds chunks: stay, in case it dies
                // and they come back to the queue.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(100),
                    self.changed.notified(),
                )
                .await;
                continue;
            }
            let (index, failures, bytes) = read_result(read).await?;
            let index = index as usize;
            let seconds = in_flight
                .remove(&index)
                .map(|sent| sent.max(last_result).elapsed().as_secs_f64())
                .unwrap_or_default();
            last_result = Instant::now();
            if let Some(job) = lock(&self.job).as_mut() {
                job.complete(index, engine, failures, bytes, seconds);
            }
            self.changed.notify_waiters();
        }
    }
}

/// Sends one chunk to an engine: tag 0, chunk index, first item's index, length, bytes.
pub(super) async fn write_chunk(
    write: &mut OwnedWriteHalf,
    index: u64,
    first_item: u64,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(bytes.len() + 25);
    frame.push(0u8);
    frame.extend_from_slice(&index.to_le_bytes());
    frame.extend_from_slice(&first_item.to_le_bytes());
    frame.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    frame.extend_from_slice(bytes);
    write.write_all(&frame).await
}

/// A chunk's failures: (item index, panic message).
pub(super) type ChunkFailures = Vec<(u64, String)>;

/// Reads one result frame of an engine: chunk index, the items that failed, the results' bytes.
pub(super) async fn read_result(
    read: &mut BufReader<OwnedReadHalf>,
) -> std::io::Result<(u64, ChunkFailures, Vec<u8>)> {
    let index = read.read_u64_le().await?;
    let failure_count = read.read_u32_le().await?;
    let mut failures = Vec::new();
    for _ in 0..failure_count.min(1 << 24) {
        let item = read.read_u64_le().await?;
        let len = u64::from(read.read_u32_le().await?);
        // The whole message is consumed, so the next frame starts where it should; only
        // its first MiB is kept.
        let mut message = Vec::new();
        (&mut *read)
            .take(len.min(MAX_PANIC_MESSAGE))
            .read_to_end(&mut message)
            .await?;
        let rest = len.saturating_sub(MAX_PANIC_MESSAGE);
        if tokio::io::copy(&mut (&mut *read).take(rest), &mut tokio::io::sink()).await? != rest {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        failures.push((item, String::from_utf8_lossy(&message).into_owned()));
    }
    let len = read.read_u64_le().await?;
    // Memory grows with the bytes that really arrive, never with the length announced.
    let mut bytes = Vec::new();
    if (&mut *read).take(len).read_to_end(&mut bytes).await? as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((index, failures, bytes))
}

/// `alloc::vec::Vec<alloc::string::String>` → `Vec<String>`: the names a cell can use for a
/// type `std::any::type_name` spelled with its full paths.
pub fn short_type_name(full: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let last = word.rsplit("::").next().unwrap_or("").to_owned();
        out.push_str(&last);
        word.clear();
    };
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_file(chunks: &[&[u64]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for chunk in chunks {
            let mut encoded = (chunk.len() as u64).to_le_bytes().to_vec();
            for item in *chunk {
                encoded.extend_from_slice(&item.to_le_bytes());
            }
            bytes.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&encoded);
        }
        bytes
    }

    #[test]
    fn chunks_are_handed_out_once_and_requeued_when_an_engine_drops() {
        let mut job = MapJob::from_chunk_file(&chunk_file(&[&[1, 2], &[3, 4], &[5]])).unwrap();
        assert_eq!((job.total_chunks(), job.total_items()), (3, 5));
        let (first, first_item, _) = job.next_chunk().unwrap();
        let (second, second_item, _) = job.next_chunk().unwrap();
        assert_eq!((first, first_item, second, second_item), (0, 0, 1, 2));
        job.requeue([second]);
        assert!(!job.interrupted);
        job.complete(first, 3, vec![(1, "boom".into())], vec![9], 0.5);
        assert_eq!(job.next_chunk().map(|c| c.0), Some(1));
        job.complete(1, 2, vec![], vec![8], 0.25);
        job.complete(1, 2, vec![], vec![7], 0.25);
        assert!(!job.is_done());
        assert_eq!(job.next_chunk().map(|c| c.0), Some(2));
        job.complete(2, 2, vec![], vec![6], 0.25);
        assert!(job.is_done());
        assert_eq!(job.done_items(), 5);
        assert_eq!(
            job.item_engines(),
            vec![Some(3), Some(3), Some(2), Some(2), Some(2)]
        );
        assert_eq!(
            job.failures,
            vec![ItemFailure {
                item: 1,
                engine: 3,
                message: "boom".into()
            }]
        );
        assert_eq!(job.serial_seconds, 1.0);
        let results = job.results_file().unwrap();
        assert_eq!(results.len(), 3 * 9);
    }

    #[test]
    fn a_stopped_job_hands_out_nothing_more() {
        let mut job = MapJob::from_chunk_file(&chunk_file(&[&[1], &[2], &[3]])).unwrap();
        let (first, _, _) = job.next_chunk().unwrap();
        job.stop();
        assert!(job.next_chunk().is_none());
        job.requeue([first]);
        assert!(job.next_chunk().is_none());
        assert!(!job.is_done());
    }

    #[test]
    fn a_truncated_chunk_file_is_an_error() {
        let mut bytes = chunk_file(&[&[1, 2]]);
        bytes.pop();
        assert_eq!(
            MapJob::from_chunk_file(&bytes).unwrap_err(),
            ChunkFileError::Truncated
        );
    }

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_type_name("alloc::vec::Vec<alloc::string::String>"),
            "Vec<String>"
        );
        assert_eq!(short_type_name("(u64, code_12::Sample)"), "(u64, Sample)");
        assert_eq!(
            short_type_name("core::option::Option<[u8; 4]>"),
            "Option<[u8; 4]>"
        );
        assert_eq!(short_type_name("u64"), "u64");
    }
}
