//! The load-balanced scheduler behind `%pxmap`: chunks of serialized items go to whichever engine
//! asks, two in flight per engine, and results come back by chunk index.
//!
//! Engines run a compiled-once cell (`rustpx::serve_map`) that connects here and stays for the
//! whole map, so a task costs a frame each way and no compile. An engine on this host connects
//! over a Unix socket in the kernel's private directory ([`crate::private_dir`]); an engine on
//! another host connects to its own engine process, which relays the connection over the
//! engine link ([`super::map_relay`]) into the same code here. The scheduler never decodes items
//! or results (it has no types); the engine tells it which items failed and the result type's
//! name. A connection that drops with chunks in flight (an engine died) puts them back in the
//! queue for the others. Wire format: see the client crate's `map_worker`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustpx_protocol::EngineId;

use super::lock;
pub use super::map_job::MapJob;
use super::map_relay::MapRelay;
use super::relay_routes::serve_relayed;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

/// Chunks each engine holds at once: one it works on and the next, already in its socket.
const IN_FLIGHT: usize = 2;
/// How much of one item's panic message the map keeps (the rest is read and dropped).
const MAX_PANIC_MESSAGE: u64 = 1 << 20;
/// The largest result of one chunk taken from an engine, checked before anything is read for
/// it: an engine on another host must not make the kernel hold whatever length it claims (the
/// engine link's own frame limit).
pub const MAX_RESULT_BYTES: u64 = 1 << 30;
/// Connections served at once: one per engine, with room for pools of thousands.
const MAX_CONNECTIONS: usize = 4096;
/// How long an engine has to say who it is, and how long each line of that may be.
pub(super) const HELLO_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
pub(super) const HELLO_LINE_MAX: u64 = 1024;

/// The lines an engine opens with (token, engine id, result and argument type names), up to the
/// empty line: at most 8 lines of [`HELLO_LINE_MAX`] bytes each.
pub(super) async fn read_hello<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
) -> std::io::Result<Vec<String>> {
    let mut hello = Vec::new();
    while hello.len() < 8 {
        let mut line = Vec::new();
        (&mut *read)
            .take(HELLO_LINE_MAX)
            .read_until(b'\n', &mut line)
            .await?;
        if line.last() != Some(&b'\n') {
            return Err(invalid("a hello line that is too long or cut off".into()));
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        hello.push(line);
    }
    Ok(hello)
}

/// The hello of a connection that opens with `token` and has at least `lines` lines, read
/// within [`HELLO_DEADLINE`]; `None` for one that does not (logged, naming `server`), which the
/// caller then closes unserved.
pub(super) async fn checked_hello<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    token: &str,
    lines: usize,
    server: &str,
) -> std::io::Result<Option<Vec<String>>> {
    let Ok(hello) = tokio::time::timeout(HELLO_DEADLINE, read_hello(read)).await else {
        tracing::warn!("{server}: a connection refused: no hello within {HELLO_DEADLINE:?}");
        return Ok(None);
    };
    let hello = hello?;
    if hello.first().map(String::as_str) != Some(token) || hello.len() < lines {
        tracing::warn!("{server}: a connection with a wrong token or hello refused");
        return Ok(None);
    }
    Ok(Some(hello))
}

/// A broken rule of the map protocol: the connection ends with this, its chunks go back.
fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// The session's scheduler: one Unix socket and the connections the engine link relays; a job
/// while `%pxmap` runs.
#[derive(Clone)]
pub struct MapServer {
    pub job: Arc<Mutex<Option<MapJob>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl MapServer {
    /// Listens on a Unix socket in the private directory and writes `path\ntoken` to
    /// `server_file` (mode 0600 in the private transfer directory), which the engine cells read;
    /// takes the connections `relay` brings from engines on other hosts (which get the same
    /// file, token included, over the link).
    pub async fn start(server_file: &Path, relay: &MapRelay) -> std::io::Result<MapServer> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let path = crate::private_dir::socket_path(&format!("pxmap-{}.sock", &token[..8]))?;
        let listener = UnixListener::bind(&path)?;
        std::fs::write(server_file, format!("{}\n{token}\n", path.display()))?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let server = MapServer {
            job: Arc::default(),
            changed: Arc::default(),
        };
        let (accepting, local_slots, local_token) = (server.clone(), slots.clone(), token.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(slot) = local_slots.clone().try_acquire_owned() else {
                    tracing::warn!("map: {MAX_CONNECTIONS} connections open; refused one");
                    continue;
                };
                let server = accepting.clone();
                let token = local_token.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    if let Err(error) = server.serve(read, &mut write, &token, None).await {
                        tracing::debug!("map connection ended: {error}");
                    }
                    drop(slot);
                });
            }
        });
        let accepting = server.clone();
        serve_relayed(
            relay.attach(&token),
            slots,
            "the map scheduler",
            move |engine, read, mut write| {
                let (server, token) = (accepting.clone(), token.clone());
                async move {
                    let outcome = server.serve(read, &mut write, &token, Some(engine)).await;
                    (write, outcome)
                }
            },
        );
        Ok(server)
    }

    /// Stops the running map (an interrupt).
    pub fn stop(&self) {
        if let Some(job) = lock(&self.job).as_mut() {
            job.stop();
        }
        self.changed.notify_waiters();
    }

    /// Serves one engine's connection until the map is done or the connection breaks a rule or
    /// drops; its chunks in flight then go back to the queue. `engine` is who the link says the
    /// peer is (a relayed connection); a local one names itself in its hello.
    async fn serve<R, W>(
        &self,
        read: R,
        write: &mut W,
        token: &str,
        engine: Option<EngineId>,
    ) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut read = BufReader::with_capacity(1 << 16, read);
        let Some(hello) = checked_hello(&mut read, token, 1, "map").await? else {
            return Ok(());
        };
        let engine = engine.unwrap_or_else(|| {
            hello
                .get(1)
                .and_then(|id| id.parse().ok())
                .unwrap_or(u32::MAX)
        });
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
            .exchange(&mut read, write, engine, &mut in_flight)
            .await;
        if !in_flight.is_empty() {
            if let Some(job) = lock(&self.job).as_mut() {
                job.requeue(in_flight.keys().copied());
            }
        }
        self.changed.notify_waiters();
        outcome
    }

    async fn exchange<R, W>(
        &self,
        read: &mut BufReader<R>,
        write: &mut W,
        engine: EngineId,
        in_flight: &mut BTreeMap<usize, Instant>,
    ) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
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
                write.flush().await?;
                in_flight.insert(index, Instant::now());
            }
            if in_flight.is_empty() {
                let finished = lock(&self.job)
                    .as_ref()
                    .is_none_or(|job| job.is_done() || job.interrupted);
                if finished {
                    write.write_all(&[1u8]).await?;
                    write.flush().await?;
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
            // `%pxmap`'s items print live with its cell, so its frames carry no output.
            let ChunkResult {
                index,
                failures,
                bytes,
                ..
            } = read_result(read, in_flight, |index| {
                lock(&self.job)
                    .as_ref()
                    .and_then(|job| job.chunk_items(index))
            })
            .await?;
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

/// A chunk's failures as (item, panic message).
pub(super) type Failures = Vec<(u64, String)>;

/// One chunk's result frame as read.
#[derive(Debug, PartialEq)]
pub(super) struct ChunkResult<K> {
    pub index: K,
    pub failures: Failures,
    /// The bincode of the chunk's `Vec<Result<R, String>>`, never decoded here.
    pub bytes: Vec<u8>,
    /// What the chunk printed (the API's tasks; empty for `%pxmap`).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The longest stdout or stderr a chunk's frame may carry: the engine's bound and its note.
const MAX_OUTPUT_BYTES: u32 = rustpx_client::MAX_TASK_OUTPUT as u32 + 1024;

/// Reads one result frame, checking each length it announces before reading what it covers:
/// the chunk must be one this connection holds, with no more failures than it has items, a
/// result no longer than [`MAX_RESULT_BYTES`] and output no longer than the engine's bound.
/// Memory grows with the bytes that really arrive. Chunks are keyed by `K`: `usize` for
/// `%pxmap`, `u64` (call and chunk) for the Rust API.
pub(super) async fn read_result<
    R: AsyncRead + Unpin,
    K: TryFrom<u64> + Ord + Copy + std::fmt::Display,
>(
    read: &mut BufReader<R>,
    in_flight: &BTreeMap<K, Instant>,
    items_of: impl Fn(K) -> Option<u64>,
) -> std::io::Result<ChunkResult<K>> {
    let index = read.read_u64_le().await?;
    let held = K::try_from(index)
        .ok()
        .filter(|index| in_flight.contains_key(index));
    let Some(index) = held else {
        return Err(invalid(format!(
            "a result for chunk {index}, which this connection does not hold"
        )));
    };
    let failure_count = read.read_u32_le().await?;
    let items = items_of(index).unwrap_or(0);
    if u64::from(failure_count) > items {
        return Err(invalid(format!(
            "{failure_count} failures for chunk {index}, which has {items} items"
        )));
    }
    let mut failures = Vec::new();
    for _ in 0..failure_count {
        let item = read.read_u64_le().await?;
        let len = u64::from(read.read_u32_le().await?);
        // The whole message is consumed, so the next frame starts where it should; only its
        // first MiB is kept.
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
    if len > MAX_RESULT_BYTES {
        return Err(invalid(format!(
            "a result of {len} bytes for chunk {index}, over the limit of {MAX_RESULT_BYTES}"
        )));
    }
    let bytes = read_exactly(read, len).await?;
    let mut output = [Vec::new(), Vec::new()];
    for (stream, name) in output.iter_mut().zip(["stdout", "stderr"]) {
        let len = read.read_u32_le().await?;
        if len > MAX_OUTPUT_BYTES {
            return Err(invalid(format!(
                "{len} bytes of {name} for chunk {index}, over the limit of {MAX_OUTPUT_BYTES}"
            )));
        }
        *stream = read_exactly(read, u64::from(len)).await?;
    }
    let [stdout, stderr] = output;
    Ok(ChunkResult {
        index,
        failures,
        bytes,
        stdout,
        stderr,
    })
}

/// The next `len` bytes (already checked against their bound), or an error if the stream ends
/// first.
async fn read_exactly<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    len: u64,
) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if (&mut *read).take(len).read_to_end(&mut bytes).await? as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(bytes)
}

/// Sends one chunk to an engine: tag 0, chunk index, first item's index, length, bytes.
pub(super) async fn write_chunk<W: AsyncWrite + Unpin>(
    write: &mut W,
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

    /// What `read_result` makes of `frame`, with chunk 0 (of 10 items) in flight.
    async fn read_frame(frame: &[u8]) -> std::io::Result<ChunkResult<usize>> {
        let (mut engine, kernel) = tokio::io::duplex(1 << 16);
        engine.write_all(frame).await.unwrap();
        let in_flight = BTreeMap::from([(0usize, Instant::now())]);
        let mut read = BufReader::new(kernel);
        read_result(&mut read, &in_flight, |_| Some(10)).await
    }

    fn header(index: u64, failures: u32, len: u64) -> Vec<u8> {
        let mut frame = index.to_le_bytes().to_vec();
        frame.extend_from_slice(&failures.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame
    }

    #[tokio::test]
    async fn a_result_claiming_a_huge_length_is_refused_before_it_is_read() {
        // Nothing follows the header: a reader that waited for the bytes would hang here.
        let error = read_frame(&header(0, 0, 1 << 62)).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(
            error.to_string(),
            format!(
                "a result of {} bytes for chunk 0, over the limit of {MAX_RESULT_BYTES}",
                1u64 << 62
            )
        );
    }

    #[tokio::test]
    async fn results_for_chunks_not_held_or_with_too_many_failures_are_refused() {
        let error = read_frame(&header(5, 0, 0)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "a result for chunk 5, which this connection does not hold"
        );
        let mut frame = 0u64.to_le_bytes().to_vec();
        frame.extend_from_slice(&11u32.to_le_bytes());
        let error = read_frame(&frame).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "11 failures for chunk 0, which has 10 items"
        );
        let mut good = header(0, 0, 3);
        good.extend_from_slice(b"abc");
        good.extend_from_slice(&2u32.to_le_bytes());
        good.extend_from_slice(b"hi");
        good.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            read_frame(&good).await.unwrap(),
            ChunkResult {
                index: 0,
                failures: vec![],
                bytes: b"abc".to_vec(),
                stdout: b"hi".to_vec(),
                stderr: vec![],
            }
        );
    }

    #[tokio::test]
    async fn output_claiming_more_than_the_engine_s_bound_is_refused_before_it_is_read() {
        let mut frame = header(0, 0, 0);
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = read_frame(&frame).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} bytes of stderr for chunk 0, over the limit of {MAX_OUTPUT_BYTES}",
                u32::MAX
            )
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
