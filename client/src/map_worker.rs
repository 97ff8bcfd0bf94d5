//! The engine end of the map protocol (the kernel end is `kernel/src/px/map_server.rs`), over
//! the kernel's Unix socket, or on another host over the engine's own socket, which the engine
//! relays to the kernel byte for byte.
//!
//! Engine to kernel: a hello (`token\n engine id\n result type\n argument type\n`, for the
//! Rust API's scheduler the function's label on a line, then an empty line), then one result frame per chunk: chunk index (u64), failure count (u32),
//! each failure as item index (u64), message length (u32) and message, then the bincode of
//! `Vec<Result<R, String>>` with its length (u64), then what the chunk printed: stdout and stderr,
//! each as a length (u32) and bytes (empty for `%pxmap`, whose items print live with its cell;
//! for the API at most [`crate::MAX_TASK_OUTPUT`] bytes and a note each). Kernel to engine: chunk frames (tag 0,
//! chunk index, first item index, byte length, bytes) and a final tag 1.
use super::*;
use crate::task_output::{Capture, TaskOutput};
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};

/// Set by an engine that does not share the kernel's files to the Unix socket it relays map
/// connections from (the engine crate's `map_relay`).
const RELAY_ENV: &str = "RUSTPX_MAP_RELAY";

fn io(path: &str) -> impl Fn(std::io::Error) -> TransferError + '_ {
    move |error| TransferError::Io {
        path: path.to_owned(),
        error,
    }
}

pub fn serve<A, R, F>(f: F, server_file: &str, label: Option<&str>) -> Result<usize, TransferError>
where
    A: DeserializeOwned,
    R: Serialize,
    F: Fn(A) -> R,
{
    let server = fs::read_to_string(server_file).map_err(io(server_file))?;
    let mut lines = server.lines();
    let (address, token) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    // An engine on another host cannot reach the kernel's socket: it serves one of its own and
    // relays the connection over the engine link.
    let relay = std::env::var(RELAY_ENV).ok();
    let address = relay.as_deref().unwrap_or(address);
    let stream = UnixStream::connect(address).map_err(io(address))?;
    let mut writer = stream.try_clone().map_err(io(address))?;
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut hello = format!(
        "{token}\n{}\n{}\n{}\n",
        engine_id().unwrap_or(u32::MAX),
        std::any::type_name::<R>(),
        std::any::type_name::<A>()
    );
    if let Some(label) = label {
        hello.push_str(label);
        hello.push('\n');
    }
    hello.push('\n');
    writer.write_all(hello.as_bytes()).map_err(io(address))?;
    // Item panics are results here, not noise on the engine's stderr.
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    // The API's tasks keep what they print for their metadata; `%pxmap`'s items print live.
    let mut capture = label.and_then(|_| Capture::new());
    let outcome = work(&f, &mut reader, &mut writer, address, capture.as_mut());
    panic::set_hook(previous_hook);
    outcome
}

fn work<A, R, F>(
    f: &F,
    reader: &mut BufReader<UnixStream>,
    writer: &mut UnixStream,
    address: &str,
    mut capture: Option<&mut Capture>,
) -> Result<usize, TransferError>
where
    A: DeserializeOwned,
    R: Serialize,
    F: Fn(A) -> R,
{
    let mut items_done = 0;
    let mut frame = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        if reader.read_exact(&mut tag).is_err() || tag[0] != 0 {
            return Ok(items_done);
        }
        let mut header = [0u8; 24];
        reader.read_exact(&mut header).map_err(io(address))?;
        let word =
            |i: usize| u64::from_le_bytes(header[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (chunk_index, first_item, len) = (word(0), word(1), word(2) as usize);
        frame.resize(len, 0);
        reader.read_exact(&mut frame).map_err(io(address))?;
        let run_items = |items: Vec<A>| -> Vec<Result<R, String>> {
            items
                .into_iter()
                .map(|item| {
                    panic::catch_unwind(AssertUnwindSafe(|| f(item))).map_err(|payload| {
                        payload
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "the item panicked".into())
                    })
                })
                .collect()
        };
        let (results, output) = match bincode::deserialize::<Vec<A>>(&frame) {
            Ok(items) => match capture.as_deref_mut() {
                Some(capture) => capture.run(|| run_items(items)),
                None => (run_items(items), TaskOutput::default()),
            },
            Err(error) => {
                let count = count_items(&frame);
                let results = (0..count)
                    .map(|_| {
                        Err(format!(
                            "the items are not of the function's argument type {} ({error})",
                            std::any::type_name::<A>()
                        ))
                    })
                    .collect();
                (results, TaskOutput::default())
            }
        };
        items_done += results.len();
        let encoded = bincode::serialize(&results).map_err(|error| TransferError::Encode {
            type_name: std::any::type_name::<R>(),
            error,
        })?;
        let mut out = Vec::with_capacity(encoded.len() + 64);
        out.extend_from_slice(&chunk_index.to_le_bytes());
        let failures: Vec<(u64, &String)> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (first_item + i as u64, e)))
            .collect();
        out.extend_from_slice(&(failures.len() as u32).to_le_bytes());
        for (item, message) in failures {
            out.extend_from_slice(&item.to_le_bytes());
            out.extend_from_slice(&(message.len() as u32).to_le_bytes());
            out.extend_from_slice(message.as_bytes());
        }
        out.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
        out.extend_from_slice(&encoded);
        for stream in [&output.stdout, &output.stderr] {
            out.extend_from_slice(&(stream.len() as u32).to_le_bytes());
            out.extend_from_slice(stream);
        }
        writer.write_all(&out).map_err(io(address))?;
    }
}

/// bincode writes a sequence's length first; used to fail every item of a chunk that does
/// not decode as the function's argument type.
fn count_items(frame: &[u8]) -> usize {
    frame
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b| u64::from_le_bytes(b) as usize)
        .unwrap_or(0)
        .min(frame.len())
}
