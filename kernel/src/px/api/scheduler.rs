//! The Rust API's load-balanced scheduler: many submissions (each `apply` or `map`, filed in
//! the [`Book`]) at once, served to engines running `rustpx::serve_tasks(FUNCTION, LABEL, …)`,
//! whose hello names the function by label and its argument and result types. Engines on this
//! host connect to its Unix socket; engines on other hosts to their own engine process, which
//! relays the connection over the engine link ([`super::super::map_relay`]) into the same code.
//! The frames are `%pxmap`'s ([`super::super::map_server`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustpx_protocol::EngineId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{Notify, Semaphore};

use super::super::lock;
use super::super::map_relay::MapRelay;
use super::super::map_server::{checked_hello, read_result, write_chunk};
use super::super::relay_routes::serve_relayed;
pub use super::book::{Book, Submission, MAX_SUBMISSIONS};

/// Chunks each engine holds at once, as `%pxmap`.
const IN_FLIGHT: usize = 2;
/// How long an engine with nothing to do keeps serving its function: a loop of calls finds it
/// still connected and runs no cell, while a `%px` after the calls waits at most this long.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);
/// Engine connections served at once.
const MAX_CONNECTIONS: usize = 4096;

/// The scheduler's socket and book.
#[derive(Clone)]
pub struct Scheduler {
    pub book: Arc<Mutex<Book>>,
    pub changed: Arc<Notify>,
    pub server_file: PathBuf,
}

impl Scheduler {
    /// Listens on a Unix socket in the private directory and writes `path\ntoken` to
    /// `server_file` (in the private transfer directory), which the serving cells read; takes
    /// the connections `relay` brings from engines on other hosts (which get the same file,
    /// token included, with their serving cell).
    pub async fn start(server_file: &Path, relay: &MapRelay) -> std::io::Result<Scheduler> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let path = crate::private_dir::socket_path(&format!("api-tasks-{}.sock", &token[..8]))?;
        let listener = UnixListener::bind(&path)?;
        write_private(server_file, &format!("{}\n{token}\n", path.display()))?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let scheduler = Scheduler {
            book: Arc::default(),
            changed: Arc::default(),
            server_file: server_file.to_owned(),
        };
        let (accepting, local_slots, local_token) =
            (scheduler.clone(), slots.clone(), token.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(slot) = local_slots.clone().try_acquire_owned() else {
                    tracing::warn!("api tasks: {MAX_CONNECTIONS} connections open; refused one");
                    continue;
                };
                let scheduler = accepting.clone();
                let token = local_token.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    if let Err(error) = scheduler.serve(read, &mut write, &token, None).await {
                        tracing::debug!("api task connection ended: {error}");
                    }
                    drop(slot);
                });
            }
        });
        let accepting = scheduler.clone();
        serve_relayed(
            relay.attach(&token),
            slots,
            "the API's scheduler",
            move |engine, read, mut write| {
                let (scheduler, token) = (accepting.clone(), token.clone());
                async move {
                    let outcome = scheduler
                        .serve(read, &mut write, &token, Some(engine))
                        .await;
                    (write, outcome)
                }
            },
        );
        Ok(scheduler)
    }

    /// Serves one engine's connection until it leaves, breaks a rule or drops; its chunks in
    /// flight then go back to the queue. `engine` is who the link says the peer is (a relayed
    /// connection); a local one names itself in its hello.
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
        let Some(hello) = checked_hello(&mut read, token, 5, "api tasks").await? else {
            return Ok(());
        };
        let engine: EngineId = engine.unwrap_or_else(|| hello[1].parse().unwrap_or(u32::MAX));
        let (result_type, argument_type, label) = (&hello[2], &hello[3], &hello[4]);
        *lock(&self.book)
            .serving
            .entry((label.clone(), engine))
            .or_default() += 1;
        let mut in_flight: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut registered = true;
        let outcome = self
            .exchange(
                &mut read,
                write,
                (engine, label, argument_type, result_type),
                &mut in_flight,
                &mut registered,
            )
            .await;
        {
            let mut book = lock(&self.book);
            book.requeue(in_flight.keys().copied());
            if registered {
                book.stop_serving(label, engine);
            }
        }
        self.changed.notify_waiters();
        outcome
    }

    async fn exchange<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        read: &mut BufReader<R>,
        write: &mut W,
        (engine, label, argument_type, result_type): (EngineId, &str, &str, &str),
        in_flight: &mut BTreeMap<u64, Instant>,
        registered: &mut bool,
    ) -> std::io::Result<()> {
        let mut last_result = Instant::now();
        let mut last_work = Instant::now();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            while in_flight.len() < IN_FLIGHT {
                let next = lock(&self.book).next_chunk(label, engine, argument_type, result_type);
                let Some((index, first_item, bytes)) = next else {
                    break;
                };
                write_chunk(write, index, first_item, &bytes).await?;
                in_flight.insert(index, Instant::now());
            }
            if in_flight.is_empty() {
                let idle = last_work.elapsed();
                // Leaving is decided under the lock a submission is filed under, so a new
                // submission either finds this engine gone (and sends the cell) or is seen.
                let leave = {
                    let mut book = lock(&self.book);
                    if book.has_work(label, engine) {
                        last_work = Instant::now();
                        false
                    } else if idle >= LINGER {
                        book.stop_serving(label, engine);
                        true
                    } else {
                        false
                    }
                };
                if leave {
                    *registered = false;
                    write_chunk_end(write).await?;
                    return Ok(());
                }
                // Others hold the rest (stay, in case one dies and its chunks come back), or
                // lingering for the next call.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(100).min(LINGER),
                    changed,
                )
                .await;
                continue;
            }
            last_work = Instant::now();
            // The failure count is bounded by the chunk's items in `%pxmap`; here the length of
            // the result and the chunk being held are checked.
            let result = read_result(read, in_flight, |_| Some(u64::MAX)).await?;
            let index = result.index;
            let seconds = in_flight
                .remove(&index)
                .map(|sent| sent.max(last_result).elapsed().as_secs_f64())
                .unwrap_or_default();
            last_result = Instant::now();
            let mut book = lock(&self.book);
            book.keep_output(index, &result.stdout, &result.stderr);
            book.complete(index, engine, result.failures, result.bytes, seconds);
            drop(book);
            self.changed.notify_waiters();
        }
    }
}

async fn write_chunk_end<W: AsyncWrite + Unpin>(write: &mut W) -> std::io::Result<()> {
    write.write_all(&[1u8]).await
}

/// Writes a file only this user can read (mode 0600 from its creation).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}
