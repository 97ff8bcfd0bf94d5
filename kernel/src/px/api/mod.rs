//! The kernel's end of the Rust API (`rustpx::client()` in a plain cell; the client end is the
//! client crate's `api` and `api_wire`).
//!
//! [`serve`] listens on a Unix socket in the kernel's private directory
//! ([`crate::private_dir`]); the plain context's runtime child learns its path and token from the
//! environment the kernel gives it ([`API_ENV`]), never from a command line. Each connection
//! gets a thread that checks the token line ([`crate::side_channel`]) before reading anything
//! else, then reads bounded frames: a frame announcing more than [`MAX_REQUEST`] bytes closes the
//! connection before anything is allocated for it; a frame whose lengths do not add up gets an
//! error reply and is closed (its end is unknown); a header that does not decode gets an error
//! reply and the connection goes on. A well-formed request goes to the session as an
//! [`ApiCall`], which answers it while the plain cell that sent it runs (the session's task
//! waits for the cell and for these calls at once: `frontend/shell.rs`).

pub mod book;
pub mod interrupt;
pub mod scheduler;
pub mod tasks;

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustpx_client::api_wire::{read_frame, FrameError};
pub use rustpx_client::api_wire::{Kind, Reply, Request, API_ENV, MAX_HEADER, MAX_REQUEST};
use tokio::sync::{mpsc, oneshot};

/// Connections served at once: a cell has one per `Client`, and threads of a cell may each
/// make one. Others are closed unread.
const MAX_CONNECTIONS: usize = 16;
/// Requests waiting for the session, across connections.
const QUEUE: usize = 64;

/// One request for the session, and where its reply goes.
pub struct ApiCall {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// The listening socket: `spec` (`PATH TOKEN`) for the runtime child's environment, and the
/// requests that arrive.
pub struct ApiChannel {
    pub spec: String,
    pub calls: mpsc::Receiver<ApiCall>,
}

/// Binds the API socket and serves its connections on threads of their own.
pub fn serve() -> std::io::Result<ApiChannel> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let path = crate::private_dir::socket_path(&format!("api-{}.sock", &token[..8]))?;
    let listener = UnixListener::bind(&path)?;
    let spec = format!("{} {token}", path.display());
    let (calls_in, calls) = mpsc::channel(QUEUE);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("api-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("api: {MAX_CONNECTIONS} connections open; refused one");
                    continue;
                }
                let (token, calls_in, slot) = (token.clone(), calls_in.clone(), open.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("api-conn".into())
                        .spawn(move || {
                            if let Err(error) = answer(stream, &token, &calls_in) {
                                tracing::debug!("api connection ended: {error}");
                            }
                            slot.fetch_sub(1, Ordering::SeqCst);
                        });
                if let Err(error) = spawned {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("api: cannot serve a connection: {error}");
                }
            }
        })?;
    Ok(ApiChannel { spec, calls })
}

/// Serves one connection until it closes or breaks the rules.
fn answer(
    mut stream: UnixStream,
    token: &str,
    calls: &mpsc::Sender<ApiCall>,
) -> std::io::Result<()> {
    if let Err(error) = crate::side_channel::check_token(&stream, token) {
        tracing::warn!("api: refused a connection: {error}");
        return Ok(());
    }
    loop {
        let reply = match read_frame(&mut stream, MAX_REQUEST, MAX_HEADER) {
            Ok((header, payload)) => match Request::decode(&header, payload) {
                Ok(request) => call(calls, request),
                Err(why) => Reply::error(format!("rustpx API: {why}")),
            },
            Err(FrameError::Io(error)) => return Err(error),
            Err(FrameError::TooLarge(len)) => {
                tracing::warn!("api: a request of {len} bytes refused; connection closed");
                return Ok(());
            }
            Err(error @ FrameError::Malformed(_)) => {
                tracing::warn!("api: {error}; connection closed");
                return Reply::error(format!("rustpx API: {error}")).write_to(&mut stream);
            }
        };
        reply.write_to(&mut stream)?;
    }
}

/// Hands a request to the session and waits for its answer.
fn call(calls: &mpsc::Sender<ApiCall>, request: Request) -> Reply {
    let (reply, answer) = oneshot::channel();
    if calls.blocking_send(ApiCall { request, reply }).is_err() {
        return Reply::error("rustpx API: the kernel's session has ended");
    }
    answer
        .blocking_recv()
        .unwrap_or_else(|_| Reply::error("rustpx API: the kernel dropped the request"))
}
