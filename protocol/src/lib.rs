//! The engine link's transport side: how the hub's messages become signed wire messages and
//! back, how an engine finds the hub, and what platform this process is.
//!
//! Engines are kernels in spirit, so the link reuses the Jupyter framing and signing of the wire
//! crate (`<IDS|MSG>`, HMAC-SHA256 with the pool's key). The message types themselves live in
//! the pure core ([`rustpx_core::link_messages`]) and are re-exported here.

pub mod pieces;
pub mod user_dirs;

use rustpx_wire::WireMessage;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use rustpx_core::hub::{FromEngine, ToEngine};
pub use rustpx_core::link_messages::*;
/// An engine's id and a MIME bundle (MIME type to its text; evcxr produces text for every
/// type), as the kernel's pure core names them.
pub use rustpx_core::{EngineId, MimeBundle};

/// The environment variable that carries the connection blob (JSON of [`EngineConnection`]).
pub const CONNECTION_ENV: &str = "RUSTPX_ENGINE_CONNECTION";

/// Everything an engine needs to dial the hub: written by the kernel as a file or an env var.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineConnection {
    /// The address engines dial, e.g. `tcp://127.0.0.1:40123`.
    pub url: String,
    /// The pool's HMAC key (fresh and random for every pool).
    pub key: String,
    pub signature_scheme: String,
    /// Where the kernel wrote this blob as a file. An engine that can read the same key there
    /// shares the kernel's filesystem and loads compiled cells from the kernel's paths; any
    /// other engine fetches them over the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_file: Option<String>,
    /// The Unix socket (`ipc://PATH`, in the kernel's 0700 directory) that engines the kernel
    /// starts on its own host dial instead of `url`: the same hub, the same signed and sealed
    /// messages, without TCP's cost on loopback. The kernel's own knowledge: never written
    /// into a blob, since an engine elsewhere (another host, a batch job) could not reach it.
    #[serde(skip)]
    pub local_url: Option<String>,
}

/// The platform this process runs on, with the C library's version (objects are linked against
/// it): what an engine reports at registration and what the hub compiles for.
pub fn this_platform() -> Platform {
    #[cfg(target_env = "gnu")]
    let glibc = {
        // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        Some(version.to_string_lossy().into_owned())
    };
    #[cfg(not(target_env = "gnu"))]
    let glibc = None;
    Platform {
        arch: std::env::consts::ARCH.to_owned(),
        os: std::env::consts::OS.to_owned(),
        glibc,
    }
}

/// SHA-256 of `bytes` as lower-case hex: how objects and files on the link are named and
/// checked (message buffers are not covered by the HMAC signature; their hashes in the signed
/// content are).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A link message that did not have the expected shape.
#[derive(Debug, Error)]
#[error("a {msg_type} message has an invalid content: {source}")]
pub struct ContentError {
    pub msg_type: String,
    #[source]
    pub source: serde_json::Error,
}

/// Builds the wire message for `content`.
pub fn to_wire<M: LinkMessage>(session: &str, content: &M) -> WireMessage {
    let value = serde_json::to_value(content).unwrap_or(serde_json::Value::Null);
    WireMessage::new(M::MSG_TYPE, session, value)
}

/// Reads `message` as an `M` (the caller has matched its `msg_type`).
pub fn from_wire<M: LinkMessage>(message: &WireMessage) -> Result<M, ContentError> {
    serde_json::from_value(message.content.clone()).map_err(|source| ContentError {
        msg_type: message.msg_type().to_owned(),
        source,
    })
}

/// The wire message for a hub's message to an engine.
pub fn to_engine_wire(session: &str, message: ToEngine) -> WireMessage {
    match message {
        ToEngine::Registered(reply) => to_wire(session, &reply),
        ToEngine::Heartbeat { period } => to_wire(
            session,
            &Heartbeat {
                period_ms: Some(u64::try_from(period.as_millis()).unwrap_or(u64::MAX)),
            },
        ),
        ToEngine::Run(request, buffers) => {
            let mut wire = to_wire(session, &request);
            wire.buffers = buffers;
            wire
        }
        ToEngine::Signal(signal) => to_wire(session, &signal),
        ToEngine::Shutdown => to_wire(session, &ShutdownRequest {}),
    }
}

/// Reads an engine's message for the hub; `None` for a type the hub does not take.
pub fn from_engine_wire(message: &WireMessage) -> Result<Option<FromEngine>, ContentError> {
    Ok(Some(match message.msg_type() {
        RegisterRequest::MSG_TYPE => FromEngine::Register(from_wire(message)?),
        Heartbeat::MSG_TYPE => FromEngine::Heartbeat,
        StreamOutput::MSG_TYPE => FromEngine::Stream(from_wire(message)?),
        DisplayOutput::MSG_TYPE => FromEngine::Display(from_wire(message)?),
        RunReply::MSG_TYPE => FromEngine::RunReply(from_wire(message)?),
        EngineExit::MSG_TYPE => FromEngine::Exit(from_wire(message)?),
        ObjectRequest::MSG_TYPE => FromEngine::ObjectRequest(from_wire(message)?),
        Piece::MSG_TYPE => FromEngine::Piece,
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reply_round_trips_with_its_status_inline() {
        let reply = RunReply {
            run_id: "r1".into(),
            execution_count: 3,
            status: RunStatus::Panic {
                message: "boom".into(),
                location: "src/lib.rs:1:1".into(),
            },
            value: None,
            changed_type: vec![],
            started: "t0".into(),
            completed: "t1".into(),
            files: vec![],
        };
        let wire = to_wire("s", &reply);
        assert_eq!(wire.msg_type(), "run_reply");
        assert_eq!(wire.content["status"], "panic");
        let back: RunReply = from_wire(&wire).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn the_sha256_of_abc_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_malformed_content_is_an_error_naming_the_type() {
        let wire = WireMessage::new("run_request", "s", serde_json::json!({"run_id": 5}));
        let error = from_wire::<RunRequest>(&wire).unwrap_err();
        assert!(error.to_string().contains("run_request"));
    }
}

/// Recognises rust's panic headline, `thread 'NAME' panicked at FILE:LINE:COL:` (since Rust
/// 1.89 with the thread id: `thread 'NAME' (ID) panicked at …`), and returns the location. The
/// message is on the line after it. Used on engine and kernel stderr alike.
pub fn panic_location(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("thread '")?;
    let (_, location) = rest.split_once(" panicked at ")?;
    Some(location.trim_end().trim_end_matches(':'))
}

#[cfg(test)]
mod panic_tests {
    use super::panic_location;

    #[test]
    fn the_panic_headline_gives_its_location() {
        assert_eq!(
            panic_location("thread '<unnamed>' panicked at src/lib.rs:40:1:"),
            Some("src/lib.rs:40:1")
        );
        assert_eq!(
            panic_location("thread '<unnamed>' (9803) panicked at src/lib.rs:98:1:"),
            Some("src/lib.rs:98:1")
        );
        assert_eq!(
            panic_location("thread 'main' has overflowed its stack"),
            None
        );
        assert_eq!(panic_location("warning: unused"), None);
    }
}
