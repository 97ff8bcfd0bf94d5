//! The Jupyter front end: the five sockets of a connection file and the dispatch of requests.
//!
//! Shell requests are served one at a time, in order, as Jupyter expects. Control has its own
//! task so that an interrupt or a shutdown gets through while a cell runs. Heartbeat echoes on its
//! own task. Nothing a client sends can stop these loops: an undecodable or badly signed message
//! is logged and dropped. The kernel also ends when its client process does
//! ([`parent`]), stopping its engines on the way out as a shutdown request would.

mod abort;
mod gate;
mod handler;
mod kernel_info;
pub mod parent;
mod shell;

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use futures::FutureExt;
use jupyter_protocol::{ConnectionInfo, ExecutionState};
use rustpx_wire::{Signer, SocketError, SocketOptions, SocketType, WireMessage, ZmqSocket};
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};

use crate::drop_report::DropReport;
use crate::iopub::Publisher;
use gate::Gate;

pub use handler::{ControlHandler, Foresight, ShellHandler};
pub use shell::{Session, CELLS_LOG};

/// Why the kernel could not start serving.
#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("cannot read the connection file {path}: {source}")]
    ReadConnection {
        path: String,
        source: std::io::Error,
    },
    #[error("the connection file {path} is not valid: {source}")]
    ParseConnection {
        path: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Wire(#[from] rustpx_wire::WireError),
    #[error("cannot serve the {channel} channel: {source}")]
    Bind {
        channel: &'static str,
        source: SocketError,
    },
}

/// The largest frame a Jupyter client may send (a cell, a comm message's buffer). A peer that
/// announces a larger one is disconnected before anything is allocated; the kernel and every
/// other client go on.
pub const MAX_FRAME_BYTES: i64 = 256 << 20;

/// Reads a Jupyter connection file.
pub fn read_connection_file(path: &Path) -> Result<ConnectionInfo, FrontendError> {
    let text = std::fs::read_to_string(path).map_err(|source| FrontendError::ReadConnection {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| FrontendError::ParseConnection {
        path: path.display().to_string(),
        source,
    })
}

fn bind(kind: SocketType, channel: &'static str, url: String) -> Result<ZmqSocket, FrontendError> {
    ZmqSocket::bind(kind, &url, &channel_options(kind))
        .map_err(|source| FrontendError::Bind { channel, source })
}

/// The frame limit on every channel; ROUTERs hand a client's identity over to its newest
/// connection, as ipykernel's do, so a client that reconnects gets its replies.
fn channel_options(kind: SocketType) -> SocketOptions {
    SocketOptions {
        router_handover: kind == SocketType::ROUTER,
        send_queue: (kind == SocketType::PUB).then_some(IOPUB_QUEUE_MESSAGES),
        ..SocketOptions::limited_to(MAX_FRAME_BYTES)
    }
}

/// Messages iopub holds for a subscriber that has not read them yet. A `%px` on 1,024 engines
/// publishes an output per engine at once, more than libzmq's default of 1,000, and a PUB
/// socket drops what does not fit, `idle` included, so the client would wait forever. Still
/// bounded: a subscriber that never reads (anyone on the machine may connect one) holds at
/// most this many of the kernel's messages.
const IOPUB_QUEUE_MESSAGES: i32 = 16_384;

/// Binds every socket of `connection` and serves the kernel's [`Session`] until a shutdown
/// request, or until the client named by `$JPY_PARENT_PID` is gone.
pub async fn serve(connection: ConnectionInfo) -> Result<(), FrontendError> {
    serve_with(connection, Session::new).await
}

/// [`serve`] for any session: `start` makes it once the sockets are bound, given the iopub
/// publisher (the kernel's starts evcxr and the hub; a test's answers as it is told).
pub async fn serve_with<H, Fut>(
    connection: ConnectionInfo,
    start: impl FnOnce(Publisher) -> Fut,
) -> Result<(), FrontendError>
where
    H: ShellHandler,
    Fut: Future<Output = H>,
{
    let client_gone = parent::client_gone();
    tokio::pin!(client_gone);
    let signer = Signer::new(&connection.signature_scheme, &connection.key)?;
    let shell = bind(SocketType::ROUTER, "shell", connection.shell_url())?;
    let control = bind(SocketType::ROUTER, "control", connection.control_url())?;
    let mut iopub = bind(SocketType::PUB, "iopub", connection.iopub_url())?;
    // stdin is bound so clients can connect; cells do not ask for input yet.
    let _stdin = bind(SocketType::ROUTER, "stdin", connection.stdin_url())?;
    rustpx_wire::socket::spawn_echo(
        &connection.hb_url(),
        &SocketOptions::limited_to(MAX_FRAME_BYTES),
    )
    .map_err(|source| FrontendError::Bind {
        channel: "heartbeat",
        source,
    })?;
    tracing::info!(
        "serving on {} (shell {}, iopub {}, control {}, hb {})",
        connection.ip,
        connection.shell_port,
        connection.iopub_port,
        connection.control_port,
        connection.hb_port
    );

    let (queue, mut outgoing) = mpsc::unbounded_channel::<WireMessage>();
    let publisher = Publisher::new(queue, uuid::Uuid::new_v4().to_string());
    let gate = Gate::new(signer);
    let iopub_gate = gate.clone();
    tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if let Err(error) = iopub.send(iopub_gate.seal(&message)).await {
                tracing::warn!("iopub send failed: {error}");
            }
        }
    });
    publisher.starting();

    let session = tokio::select! {
        session = start(publisher.clone()) => Arc::new(Mutex::new(session)),
        pid = &mut client_gone => {
            // No engine runs before the session exists.
            tracing::info!("the client (pid {pid}) is gone; exiting");
            return Ok(());
        }
    };
    let control_session = session.lock().await.control();
    let on_client_gone = control_session.clone();
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(1);
    tokio::spawn(control_loop(
        control,
        gate.clone(),
        control_session,
        publisher.clone(),
        shutdown_tx.clone(),
    ));
    tokio::spawn(shell_loop(shell, gate, session, publisher, shutdown_tx));
    ignore_ctrl_c();
    tokio::select! {
        _ = shutdown_rx.recv() => {}
        pid = &mut client_gone => {
            tracing::info!("the client (pid {pid}) is gone; stopping the engines and exiting");
            on_client_gone.shutdown().await;
        }
    }
    Ok(())
}

/// A terminal's Ctrl-C reaches the kernel too when `jupyter console` runs in the foreground;
/// it must not kill the kernel. The control channel carries real interrupts.
fn ignore_ctrl_c() {
    tokio::spawn(async {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            tracing::info!("SIGINT received and ignored; interrupts arrive on the control channel");
        }
    });
}

/// Receives and verifies one message; `None` when it was dropped (counted in `drops`).
async fn receive(
    socket: &mut ZmqSocket,
    gate: &Gate,
    drops: &mut DropReport,
) -> Option<WireMessage> {
    let frames = match socket.recv().await {
        Ok(frames) => frames,
        Err(error) => {
            drops.dropped(&format_args!("receive failed: {error}"));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            return None;
        }
    };
    verified(frames, gate, drops)
}

/// A message that has already arrived, without waiting: `Some(None)` when one arrived but was
/// dropped, `None` when nothing is waiting.
fn receive_waiting(
    socket: &mut ZmqSocket,
    gate: &Gate,
    drops: &mut DropReport,
) -> Option<Option<WireMessage>> {
    match socket.try_recv() {
        Ok(Some(frames)) => Some(verified(frames, gate, drops)),
        Ok(None) => None,
        Err(error) => {
            drops.dropped(&format_args!("receive failed: {error}"));
            None
        }
    }
}

fn verified(frames: Vec<bytes::Bytes>, gate: &Gate, drops: &mut DropReport) -> Option<WireMessage> {
    match gate.admit(frames) {
        Ok(message) => Some(message),
        Err(error) => {
            drops.dropped(&error);
            None
        }
    }
}

/// How many requests the shell takes off its socket ahead of the one it serves (so that a
/// queued cell can be prepared for); beyond it they wait in libzmq's queue as before.
const READ_AHEAD_LIMIT: usize = 256;

/// Serves shell requests in order. When an `execute_request` that asked for `stop_on_error`
/// (every client's default, so that "Run All" stops at a failure) fails, the requests that have
/// already arrived are taken off the socket at that moment, before its reply is sent: the
/// execute requests among them are answered `aborted` without running, the others are served
/// as usual. That is ipykernel's snapshot of its queue; a request sent after the client saw the
/// failure (or an `aborted` reply) is not in it, and runs.
///
/// While a request is served, the ones arriving behind it are taken off the socket (up to
/// [`READ_AHEAD_LIMIT`], verified like any other) and shown to the session's [`Foresight`]:
/// Run All sends every cell at once, and a later `%px` cell's compiler can start while the
/// first cell runs. They are served in order, exactly as if they had waited on the socket. (A
/// `%px` cell that is then aborted has still started the px context; it stays for the session.)
async fn shell_loop<H: ShellHandler>(
    mut socket: ZmqSocket,
    gate: Gate,
    session: Arc<Mutex<H>>,
    publisher: Publisher,
    shutdown: mpsc::Sender<()>,
) {
    // Requests taken off the socket when a cell failed, oldest first.
    let mut behind_a_failure: VecDeque<WireMessage> = VecDeque::new();
    // Requests taken off the socket while another was served, oldest first.
    let mut ahead: VecDeque<WireMessage> = VecDeque::new();
    let foresight = session.lock().await.foresight();
    let mut drops = DropReport::new("shell");
    loop {
        let (request, aborting) = match behind_a_failure.pop_front() {
            Some(request) => (request, true),
            None => match ahead.pop_front() {
                Some(request) => (request, false),
                None => {
                    // Between requests the session may have work of its own; a request that
                    // arrives ends the wait for it (both futures are cancel-safe), never the
                    // work.
                    let arrived = {
                        let mut idle = session.lock().await;
                        tokio::select! {
                            biased;
                            request = receive(&mut socket, &gate, &mut drops) => Ok(request),
                            work = idle.idle_work() => Err(work),
                        }
                    };
                    match arrived {
                        Ok(Some(request)) => (request, false),
                        Ok(None) => continue,
                        Err(work) => {
                            session.lock().await.do_idle(work).await;
                            continue;
                        }
                    }
                }
            },
        };
        publisher.status(&request, ExecutionState::Busy);
        if aborting && request.msg_type() == "execute_request" {
            tracing::info!("execute request aborted: an earlier cell failed (stop_on_error)");
            let reply = abort::aborted_reply(&request);
            if let Err(error) = socket.send(gate.seal(&reply)).await {
                tracing::warn!("shell: aborted reply failed: {error}");
            }
            publisher.status(&request, ExecutionState::Idle);
            continue;
        }
        let reply = {
            let served = async {
                let mut session = session.lock().await;
                std::panic::AssertUnwindSafe(session.handle_shell(&request))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Some(abort::panicked_reply(&request, panic.as_ref())))
            };
            tokio::pin!(served);
            loop {
                tokio::select! {
                    biased;
                    reply = &mut served => break reply,
                    arrived = receive(&mut socket, &gate, &mut drops), if ahead.len() < READ_AHEAD_LIMIT => {
                        match arrived {
                            Some(arrived) => {
                                foresight(&arrived);
                                ahead.push_back(arrived);
                            }
                            // A stream of messages that fail the gate must not keep this task
                            // from yielding while the cell it serves runs.
                            None => tokio::task::yield_now().await,
                        }
                    }
                }
            }
        };
        let stop = request.msg_type() == "shutdown_request";
        if reply
            .as_ref()
            .is_some_and(|reply| abort::stops_the_queue(&request, reply))
        {
            // What arrived before this failure: taken ahead already, then straight from
            // libzmq's queue, no waiting.
            behind_a_failure.extend(ahead.drain(..));
            while let Some(received) = receive_waiting(&mut socket, &gate, &mut drops) {
                behind_a_failure.extend(received);
            }
        }
        if let Some(reply) = reply {
            if let Err(error) = socket.send(gate.seal(&reply)).await {
                tracing::warn!("shell: reply to {} failed: {error}", request.msg_type());
            }
        }
        publisher.status(&request, ExecutionState::Idle);
        if stop {
            finish(&shutdown).await;
        }
    }
}

async fn control_loop<C: ControlHandler>(
    mut socket: ZmqSocket,
    gate: Gate,
    control: C,
    publisher: Publisher,
    shutdown: mpsc::Sender<()>,
) {
    let mut drops = DropReport::new("control");
    loop {
        let Some(request) = receive(&mut socket, &gate, &mut drops).await else {
            continue;
        };
        publisher.status(&request, ExecutionState::Busy);
        let reply = control.handle(&request).await;
        if let Some(reply) = reply {
            if let Err(error) = socket.send(gate.seal(&reply)).await {
                tracing::warn!("control: reply to {} failed: {error}", request.msg_type());
            }
        }
        publisher.status(&request, ExecutionState::Idle);
        if request.msg_type() == "shutdown_request" {
            finish(&shutdown).await;
        }
    }
}

/// Lets the iopub queue drain, then ends `serve`.
async fn finish(shutdown: &mpsc::Sender<()>) {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _ = shutdown.send(()).await;
}

#[cfg(test)]
mod tests;
