//! The frames between a plain cell's [`crate::Client`] and the kernel's px service (the kernel
//! end is `kernel/src/px/api/`). Defined here once and used by both ends, so they cannot drift.
//!
//! The plain context's runtime child finds the kernel's socket and token in [`API_ENV`]
//! (`PATH TOKEN`, set by the kernel when it creates the context). A connection opens with the
//! token on a line of its own; then each request gets exactly one reply. A frame is its length
//! (u64, little-endian), then the length of its header (u32), the header (bincode of a tuple)
//! and a raw payload (chunks of items, or results), which is never copied through serde.
//!
//! The kernel bounds what it reads: a request over [`MAX_REQUEST`] bytes closes the connection
//! before anything is allocated for it; a header that does not decode gets an error reply.

use std::io::{Read, Write};

use crate::api_tasks::{TaskOptions, TaskOptionsWire};

/// Set in the plain context's runtime child: `PATH TOKEN` of the kernel's API socket.
pub const API_ENV: &str = "RUSTPX_API";
/// The largest request the kernel reads (items of a map travel in one request).
pub const MAX_REQUEST: u64 = 1 << 30;
/// The largest header inside a request (a reply's header carries an engine id per item of a
/// map, so the client reads replies with no header limit of its own).
pub const MAX_HEADER: u32 = 1 << 20;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The live engine ids (a local pool is started if there is none).
    Ids = 0,
    /// Run a function defined on the engines over the chunks in the payload.
    Submit = 1,
    /// Progress of a submission, at once.
    Status = 2,
    /// Progress of a submission once it is done, or after `wait_millis` (capped by the kernel).
    Wait = 3,
    /// The results of a finished submission, in the payload.
    Results = 4,
    /// The submission's results are no longer needed.
    Forget = 5,
    /// Run a cell (the code in `function`) on the target engines, as `%px` does.
    Execute = 6,
    /// As `Wait`, drawing the submission's progress bar under the cell as it goes.
    WaitInteractive = 48,
    /// Tasks of a submission not yet started never start.
    Abort = 32,
    /// Each task's engine, times, attempts and error (payload: `api_tasks::MetadataWire`s).
    Metadata = 33,
    /// Tasks completed since the cursor in the payload (u64), once there are some or after
    /// `wait_millis` (payload of the reply: `api_tasks::PartialWire`).
    Partial = 34,
    /// The direct view's `apply`: the function in `function`, its argument (one chunk of one
    /// item) in the payload, run once on each target; answered like a Submit.
    DirectApply = 16,
    /// Values to bind on the targets: the payload holds [`crate::api_payload::encode_named`] entries.
    Push = 17,
    /// The variable `function` of each target, with the caller's type in `result_type`; the
    /// reply's payload holds each engine's value ([`crate::api_payload::encode_parts`]), `ids` the engines.
    Pull = 18,
    /// `function` bound on each target (in `targets` order) to one part of a sequence: the
    /// payload holds one [`crate::api_payload::encode_parts`] part per target; `argument_type` is the element type.
    Scatter = 19,
    /// Each target's `Vec` named `function`, element type `result_type`; replied as a Pull.
    Gather = 20,
}

impl Kind {
    pub fn from_u8(byte: u8) -> Option<Kind> {
        [
            Kind::Ids,
            Kind::Submit,
            Kind::Status,
            Kind::Wait,
            Kind::Results,
            Kind::Forget,
            Kind::Execute,
            Kind::WaitInteractive,
            Kind::Abort,
            Kind::Metadata,
            Kind::Partial,
            Kind::DirectApply,
            Kind::Push,
            Kind::Pull,
            Kind::Scatter,
            Kind::Gather,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == byte)
    }
}

/// One request from a plain cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub kind: Kind,
    /// The submission asked about (Status, Wait, Results, Forget).
    pub job: u64,
    pub wait_millis: u64,
    /// Submit: the engine function, as code (a name or a closure) placed in the engines'
    /// serving cell. Execute: the cell's code.
    pub function: String,
    /// `std::any::type_name` of the argument and the result on the calling side.
    pub argument_type: String,
    pub result_type: String,
    /// Engine ids; `None` for every live engine.
    pub targets: Option<Vec<u32>>,
    /// Submit: chunks as `rustpx::encode_chunks` writes them.
    pub payload: Vec<u8>,
    /// Submit: retries, dependencies, timeout and order of the tasks.
    pub tasks: TaskOptions,
}

type RequestHeader = (
    u8,
    u64,
    u64,
    String,
    String,
    String,
    Option<Vec<u32>>,
    TaskOptionsWire,
);

impl Request {
    pub fn new(kind: Kind) -> Request {
        Request {
            kind,
            job: 0,
            wait_millis: 0,
            function: String::new(),
            argument_type: String::new(),
            result_type: String::new(),
            targets: None,
            payload: Vec::new(),
            tasks: TaskOptions::default(),
        }
    }

    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let header: RequestHeader = (
            self.kind as u8,
            self.job,
            self.wait_millis,
            self.function.clone(),
            self.argument_type.clone(),
            self.result_type.clone(),
            self.targets.clone(),
            self.tasks.to_wire(),
        );
        write_frame(out, &encode(&header)?, &self.payload)
    }

    /// Decodes a frame's header and payload; the error says what is wrong with it.
    pub fn decode(header: &[u8], payload: Vec<u8>) -> Result<Request, String> {
        let (kind, job, wait_millis, function, argument_type, result_type, targets, tasks): RequestHeader =
            bincode::deserialize(header).map_err(|error| format!("a malformed request: {error}"))?;
        let kind = Kind::from_u8(kind).ok_or_else(|| format!("an unknown request kind {kind}"))?;
        Ok(Request {
            kind,
            job,
            wait_millis,
            function,
            argument_type,
            result_type,
            targets,
            payload,
            tasks: TaskOptions::from_wire(tasks),
        })
    }
}

/// One item that failed on an engine: its index in the submission, the engine, the message.
pub type Failure = (u64, u32, String);

/// The kernel's answer to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// Why the request failed (the submission itself may still be fine).
    pub error: Option<String>,
    /// Ids: the engines; Results: the engine of each item.
    pub ids: Vec<u32>,
    pub job: u64,
    pub done_items: u64,
    pub total_items: u64,
    pub ready: bool,
    pub elapsed: f64,
    pub serial: f64,
    /// Why the whole submission failed (a type mismatch, a function the engines lack).
    pub failed: Option<String>,
    pub failures: Vec<Failure>,
    /// Results: per chunk, its byte length (u64) and the bincode of `Vec<Result<R, String>>`;
    /// for an Execute, the bincode of `Vec<EngineOutput>`.
    pub payload: Vec<u8>,
}

/// What one engine did with an executed cell: (engine, stdout, stderr, the value's text/plain,
/// the error's one-line summary).
pub type EngineOutput = (u32, String, String, Option<String>, Option<String>);

/// The payload of an Execute's results.
pub fn encode_outputs(outputs: &[EngineOutput]) -> std::io::Result<Vec<u8>> {
    encode(&outputs)
}

/// The outputs [`encode_outputs`] wrote.
pub fn decode_outputs(payload: &[u8]) -> Result<Vec<EngineOutput>, String> {
    bincode::deserialize(payload).map_err(|error| format!("malformed outputs: {error}"))
}

/// The start of a reply's error when the cell's wait was interrupted (the tasks go on).
pub const INTERRUPTED: &str = "KeyboardInterrupt";

/// Ids of executions are above this; below it, submissions of `apply` and `map`.
pub const EXECUTION_IDS: u64 = 1 << 48;

type ReplyHeader = (
    Option<String>,
    Vec<u32>,
    u64,
    u64,
    u64,
    bool,
    f64,
    f64,
    Option<String>,
    Vec<Failure>,
);

impl Reply {
    pub fn error(message: impl Into<String>) -> Reply {
        Reply {
            error: Some(message.into()),
            ..Reply::default()
        }
    }

    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let header: ReplyHeader = (
            self.error.clone(),
            self.ids.clone(),
            self.job,
            self.done_items,
            self.total_items,
            self.ready,
            self.elapsed,
            self.serial,
            self.failed.clone(),
            self.failures.clone(),
        );
        write_frame(out, &encode(&header)?, &self.payload)
    }

    pub fn decode(header: &[u8], payload: Vec<u8>) -> Result<Reply, String> {
        let (error, ids, job, done_items, total_items, ready, elapsed, serial, failed, failures): ReplyHeader =
            bincode::deserialize(header).map_err(|error| format!("a malformed reply: {error}"))?;
        Ok(Reply {
            error,
            ids,
            job,
            done_items,
            total_items,
            ready,
            elapsed,
            serial,
            failed,
            failures,
            payload,
        })
    }
}

fn encode<T: serde::Serialize>(header: &T) -> std::io::Result<Vec<u8>> {
    bincode::serialize(header).map_err(|error| std::io::Error::other(error.to_string()))
}

fn write_frame(out: &mut impl Write, header: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let total = 4 + header.len() as u64 + payload.len() as u64;
    let mut head = Vec::with_capacity(12 + header.len());
    head.extend_from_slice(&total.to_le_bytes());
    head.extend_from_slice(&(header.len() as u32).to_le_bytes());
    head.extend_from_slice(header);
    out.write_all(&head)?;
    out.write_all(payload)?;
    out.flush()
}

/// Why a frame was not read.
#[derive(Debug)]
pub enum FrameError {
    /// The stream ended or failed.
    Io(std::io::Error),
    /// The frame announced more than the reader takes; nothing of it was read.
    TooLarge(u64),
    /// The frame's own lengths do not add up.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(error) => write!(f, "{error}"),
            FrameError::TooLarge(len) => write!(f, "a frame of {len} bytes is over the limit"),
            FrameError::Malformed(why) => write!(f, "a malformed frame: {why}"),
        }
    }
}

/// Reads one frame of at most `max` bytes with a header of at most `max_header`: (header,
/// payload). Memory grows with the bytes that really arrive, never with the length announced.
pub fn read_frame(
    input: &mut impl Read,
    max: u64,
    max_header: u32,
) -> Result<(Vec<u8>, Vec<u8>), FrameError> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len).map_err(FrameError::Io)?;
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    if len < 4 {
        return Err(FrameError::Malformed(format!(
            "{len} bytes hold no header length"
        )));
    }
    let mut header_len = [0u8; 4];
    input.read_exact(&mut header_len).map_err(FrameError::Io)?;
    let header_len = u32::from_le_bytes(header_len);
    if header_len > max_header || u64::from(header_len) > len - 4 {
        return Err(FrameError::Malformed(format!(
            "a header of {header_len} bytes in a frame of {len}"
        )));
    }
    let mut header = Vec::new();
    let got = input
        .take(u64::from(header_len))
        .read_to_end(&mut header)
        .map_err(FrameError::Io)?;
    let payload_len = len - 4 - u64::from(header_len);
    let mut payload = Vec::new();
    let got_payload = input
        .take(payload_len)
        .read_to_end(&mut payload)
        .map_err(FrameError::Io)?;
    if got as u64 != u64::from(header_len) || got_payload as u64 != payload_len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_through_frames() {
        let mut request = Request::new(Kind::Submit);
        request.function = "square".into();
        request.argument_type = "u64".into();
        request.targets = Some(vec![0, 2]);
        request.payload = vec![1, 2, 3];
        request.tasks.retries = 2;
        request.tasks.after = vec![7];
        let mut bytes = Vec::new();
        request.write_to(&mut bytes).unwrap();
        let (header, payload) = read_frame(&mut &bytes[..], MAX_REQUEST, MAX_HEADER).unwrap();
        assert_eq!(Request::decode(&header, payload).unwrap(), request);

        let reply = Reply {
            failures: vec![(3, 1, "boom".into())],
            ready: true,
            payload: vec![9; 10],
            ..Reply::default()
        };
        let mut bytes = Vec::new();
        reply.write_to(&mut bytes).unwrap();
        let (header, payload) = read_frame(&mut &bytes[..], u64::MAX, u32::MAX).unwrap();
        assert_eq!(Reply::decode(&header, payload).unwrap(), reply);
    }

    #[test]
    fn an_oversized_or_inconsistent_frame_is_refused_before_reading_it() {
        let mut bytes = (MAX_REQUEST + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 64]);
        assert!(matches!(
            read_frame(&mut &bytes[..], MAX_REQUEST, MAX_HEADER),
            Err(FrameError::TooLarge(_))
        ));
        let mut bytes = 10u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &bytes[..], MAX_REQUEST, MAX_HEADER),
            Err(FrameError::Malformed(_))
        ));
        let mut bytes = 6u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&[7, 7]);
        let (header, payload) = read_frame(&mut &bytes[..], MAX_REQUEST, MAX_HEADER).unwrap();
        assert!(Request::decode(&header, payload).is_err());
    }
}
