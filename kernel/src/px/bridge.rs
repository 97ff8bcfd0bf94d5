//! The bridge between the px evcxr context and the engines.
//!
//! evcxr runs compiled cells by writing `LOAD_AND_RUN <so> <fn>` to a child process and reading
//! markers back until `EVCXR_EXECUTION_COMPLETE`. For `%px` the kernel makes that child a tiny
//! relay (this binary in bridge mode) that forwards each line over a loopback socket to the
//! kernel, which runs the object on the engines of the group being compiled and answers with the
//! combined markers. So evcxr compiles once per group, and the engines run what it built.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// Set in the bridge child's environment: `ADDRESS TOKEN`.
pub const BRIDGE_ENV: &str = "RUSTPX_PX_BRIDGE";

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
    let (address, token) = spec.split_once(' ').unwrap_or((spec, ""));
    let mut upstream = TcpStream::connect(address)?;
    upstream.set_nodelay(true)?;
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
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let spec = format!("{} {token}", listener.local_addr()?);
    std::thread::Builder::new()
        .name("px-bridge".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let dispatch = dispatch.clone();
                let token = token.clone();
                std::thread::spawn(move || {
                    if let Err(error) = answer(stream, &token, &dispatch) {
                        tracing::debug!("px bridge connection ended: {error}");
                    }
                });
            }
        })?;
    Ok(spec)
}

fn answer(stream: TcpStream, token: &str, dispatch: &Dispatch) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut lines = BufReader::new(stream).lines();
    match lines.next() {
        Some(Ok(given)) if given == token => {}
        _ => {
            tracing::warn!("px bridge: refused a connection with a wrong token");
            return Ok(());
        }
    }
    for line in lines {
        let line = line?;
        let mut parts = line.splitn(3, ' ');
        let answer = match (parts.next(), parts.next(), parts.next()) {
            (Some("LOAD_AND_RUN"), Some(so), Some(function)) => dispatch(so, function),
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
