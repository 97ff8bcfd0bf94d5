//! The bridge between the px evcxr context and the engines.
//!
//! evcxr runs compiled cells by writing `LOAD_AND_RUN <so> <fn>` to a child process and reading
//! markers back until `EVCXR_EXECUTION_COMPLETE`. For `%px` the kernel makes that child a tiny
//! relay (this binary in bridge mode) that forwards each line over a Unix socket in the kernel's
//! private directory ([`crate::private_dir`]) to the kernel, which runs the object on the engines of the group being compiled and answers with the
//! combined markers. So evcxr compiles once per group, and the engines run what it built.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustpx_runtime::markers::LOAD_AND_RUN;

/// Set in the bridge child's environment: `PATH TOKEN`.
pub const BRIDGE_ENV: &str = "RUSTPX_PX_BRIDGE";

/// How many bridge connections are served at once: evcxr has one child, and a restarted child
/// may overlap its predecessor for a moment. Others are closed at once, never given a thread.
const MAX_CONNECTIONS: usize = 4;

/// Answers one `LOAD_AND_RUN`: returns the lines evcxr should read, ending with completion.
pub type Dispatch = Arc<dyn Fn(&str, &str) -> Vec<String> + Send + Sync>;

/// If this process was started as the bridge, relays until evcxr closes it, and exits.
pub fn run_if_requested() {
    let Ok(spec) = std::env::var(BRIDGE_ENV) else {
        return;
    };
    let code = match relay(&spec) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("rustpx bridge: {error}");
            1
        }
    };
    std::process::exit(code);
}

fn relay(spec: &str) -> std::io::Result<()> {
    let (path, token) = crate::side_channel::split_spec(spec);
    let mut upstream = UnixStream::connect(path)?;
    writeln!(upstream, "{token}")?;
    let mut to_kernel = upstream.try_clone()?;
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if writeln!(to_kernel, "{line}").is_err() {
                break;
            }
        }
        // evcxr closed our stdin: it is done with us.
        std::process::exit(0);
    });
    let stdout = std::io::stdout();
    for line in BufReader::new(upstream).lines() {
        let line = line?;
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// The kernel's end: accepts bridge connections (one per evcxr child, which evcxr may restart)
/// and answers their `LOAD_AND_RUN` lines with `dispatch`.
pub fn serve(dispatch: Dispatch) -> std::io::Result<String> {
    let path = crate::private_dir::socket_path("px-bridge.sock")?;
    let listener = UnixListener::bind(&path)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let spec = format!("{} {token}", path.display());
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("px-bridge".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("px bridge: {MAX_CONNECTIONS} connections open; refused one");
                    continue;
                }
                let dispatch = dispatch.clone();
                let token = token.clone();
                let slot = open.clone();
                let spawned = std::thread::Builder::new()
                    .name("px-bridge-conn".into())
                    .spawn(move || {
                        if let Err(error) = answer(stream, &token, &dispatch) {
                            tracing::debug!("px bridge connection ended: {error}");
                        }
                        slot.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(error) = spawned {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("px bridge: cannot serve a connection: {error}");
                }
            }
        })?;
    Ok(spec)
}

fn answer(stream: UnixStream, token: &str, dispatch: &Dispatch) -> std::io::Result<()> {
    if let Err(error) = crate::side_channel::check_token(&stream, token) {
        tracing::warn!("px bridge: refused a connection: {error}");
        return Ok(());
    }
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let mut parts = line.splitn(3, ' ');
        let answer = match (parts.next(), parts.next(), parts.next()) {
            (Some(LOAD_AND_RUN), Some(so), Some(function)) => dispatch(so, function),
            _ => {
                tracing::warn!("px bridge: unexpected line from evcxr: {line:?}");
                // evcxr waits for input only after its input-request marker: answer empty.
                vec![String::new()]
            }
        };
        for reply in answer {
            writeln!(writer, "{reply}")?;
        }
        writer.flush()?;
    }
    Ok(())
}
