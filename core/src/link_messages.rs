//! The messages of the engine link, as types: what the hub and an engine say to each other.
//!
//! Types only, no transport (as `jupyter-protocol` keeps Jupyter's message types apart from its
//! connections): the pure hub in [`crate::hub`] reads and writes these, and `rustpx-protocol`
//! turns them into signed wire messages. Each is a `msg_type` plus a JSON content that
//! (de)serialises to one of these structs, so both ends agree on shapes through the compiler.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{EngineId, MimeBundle};

/// What an engine's host can load: compiled cells are native code for one platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Platform {
    /// `std::env::consts::ARCH`, e.g. `x86_64`.
    pub arch: String,
    /// `std::env::consts::OS`, e.g. `linux`.
    pub os: String,
    /// The C library's version (`gnu_get_libc_version`), when it is glibc.
    pub glibc: Option<String>,
}

impl Platform {
    /// Why an engine on `self` cannot load objects built on `kernel`, in one line, or `None`.
    pub fn incompatibility(&self, kernel: &Platform) -> Option<String> {
        if self.arch != kernel.arch || self.os != kernel.os {
            return Some(format!(
                "the engine's host is {}-{}, but cells are compiled for {}-{}",
                self.arch, self.os, kernel.arch, kernel.os
            ));
        }
        match (&self.glibc, &kernel.glibc) {
            (Some(engine), Some(needed)) if version_less(engine, needed) => Some(format!(
                "the engine's host has glibc {engine}, older than the kernel's {needed} that cells are linked against"
            )),
            (None, Some(needed)) => Some(format!(
                "the engine's host has no glibc; cells are linked against glibc {needed}"
            )),
            _ => None,
        }
    }
}

/// Compares dotted version numbers (`2.31` < `2.36`) numerically, part by part.
fn version_less(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(a) < parts(b)
}

/// A data magic's file carried in a message buffer, with the hash that vouches for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShippedFile {
    pub path: String,
    pub sha256: String,
}

/// A file a compiled cell needs on the engine's host: the cell's object or a library it links
/// (libstd, dependencies), named by the hash of its content so that a host caches it once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The file name the object must have (a library is found by its name).
    pub name: String,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
    pub size: u64,
}

/// A message type with a fixed `msg_type` on the link.
pub trait LinkMessage: Serialize + DeserializeOwned {
    const MSG_TYPE: &'static str;
}

macro_rules! link_message {
    ($type:ty, $name:literal) => {
        impl LinkMessage for $type {
            const MSG_TYPE: &'static str = $name;
        }
    };
}

/// The version of the link's messages this build speaks. An engine of another build that
/// speaks another one would miss or misread messages (an engine before 2 drops the pieces a
/// large value travels in, and its run waits for good), so the hub refuses it with the reason.
/// 2: large messages in pieces ([`Piece`]).
pub const LINK_VERSION: u32 = 2;

/// Engine to hub, first message: who I am.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterRequest {
    /// The id this engine was started for (local pool, MPI rank); the hub may refuse it.
    pub requested_id: Option<EngineId>,
    pub pid: u32,
    pub hostname: String,
    pub version: String,
    #[serde(default)]
    pub platform: Platform,
    /// Whether the engine reads compiled cells from the kernel's paths (same filesystem) rather
    /// than fetching them over the link.
    #[serde(default)]
    pub shares_files: bool,
    /// The engine's [`LINK_VERSION`]; engines from before it was sent say nothing (0).
    #[serde(default)]
    pub link_version: u32,
}
link_message!(RegisterRequest, "register_request");

/// Hub to engine: accepted with an id, or refused with a reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterReply {
    pub engine_id: Option<EngineId>,
    pub refused: Option<String>,
}
link_message!(RegisterReply, "register_reply");

/// Both ways, every heartbeat period: I am alive. The hub's answer carries the period the
/// engine should keep (it grows with the pool; see `hub::heartbeats`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Heartbeat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<u64>,
}
link_message!(Heartbeat, "heartbeat");

/// Hub to engine: load this compiled cell and run it against your variables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRequest {
    /// One run of one compiled object on this engine.
    pub run_id: String,
    /// The `%px` cell this run belongs to; a cell may need more than one run.
    pub cell_id: String,
    pub so_path: String,
    pub fn_name: String,
    /// What the run needs on a host that does not share the kernel's files: the libraries the
    /// cell links first (in load order), the cell's own object last.
    #[serde(default)]
    pub objects: Vec<ObjectRef>,
    /// Files to write on the engine's host before the run (a data magic's values for an
    /// engine that cannot see the kernel's files): absolute paths, their bytes in the
    /// message's buffers in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_in: Vec<ShippedFile>,
    /// Files the run writes that the kernel wants back (in the reply's buffers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_out: Vec<String>,
    /// Whether the cell ends in an expression whose value evcxr's generated code displays last.
    /// When it does not, every rich display the run prints is a display, and the engine sends
    /// each one the moment it is complete; when it does, a display is only known not to be the
    /// value once something follows it. A hub that does not say is taken to mean "it may".
    #[serde(default = "may_have_value_by_default")]
    pub may_have_value: bool,
}
link_message!(RunRequest, "run_request");

fn may_have_value_by_default() -> bool {
    true
}

/// Engine to hub: send me these objects (by hash); my host does not have them yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRequest {
    pub sha256: Vec<String>,
}
link_message!(ObjectRequest, "object_request");

/// Hub to engine: one object's bytes, in the message's first buffer (buffers are not signed;
/// the engine checks them against the signed hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectData {
    pub object: ObjectRef,
    /// Set instead of the bytes when the kernel cannot read the object.
    pub missing: Option<String>,
}
link_message!(ObjectData, "object_data");

/// Hub to engine: raise this signal in yourself (an interrupt of an engine the kernel cannot
/// signal directly, such as one on another host).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignalRequest {
    pub signal: i32,
}
link_message!(SignalRequest, "signal_request");

/// Engine to hub: text the cell wrote, as it is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamOutput {
    pub run_id: String,
    /// `stdout` or `stderr`.
    pub name: String,
    pub text: String,
}
link_message!(StreamOutput, "stream");

/// Engine to hub: a rich display the cell produced before its final value, sent as soon as the
/// engine knows it is one (in order with the run's stdout), so a streamed cell shows it live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DisplayOutput {
    pub run_id: String,
    pub data: MimeBundle,
}
link_message!(DisplayOutput, "display_data");

/// How a run ended on the engine (an engine that dies sends nothing: the hub sees it die).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    /// The cell panicked; evcxr's generated code caught it, the engine lives on.
    Panic {
        message: String,
        location: String,
    },
    /// A `?` in the cell returned an error early (the error text went to stderr).
    UserError,
    /// The engine could not load or call the compiled object.
    LoadFailed {
        message: String,
    },
}

/// Engine to hub: the run finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReply {
    pub run_id: String,
    /// The engine's own execution count for the cell (its `C` in `Out[N:C]`).
    pub execution_count: u32,
    #[serde(flatten)]
    pub status: RunStatus,
    /// The value of the cell's final expression, if it had one.
    pub value: Option<MimeBundle>,
    /// Variables evcxr reported as having changed type (and so lost).
    pub changed_type: Vec<String>,
    /// RFC 3339 times on the engine.
    pub started: String,
    pub completed: String,
    /// Which of the request's `files_out` the run wrote: their bytes are the message's
    /// buffers, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ShippedFile>,
}
link_message!(RunReply, "run_reply");

/// Engine to hub: I am exiting now, and why (a terminating signal request). Lets the hub
/// report an engine it cannot watch as a process at once, instead of after a heartbeat timeout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineExit {
    pub reason: String,
}
link_message!(EngineExit, "engine_exit");

/// The most a `%pxmap` worker on another host may send before the hub says it consumed it (see
/// [`MapCredit`]): what one relayed map connection can make the hub hold at once.
pub const MAP_WINDOW_BYTES: u64 = 4 << 20;

/// The largest piece of a relayed map connection one [`MapBytes`] may carry.
pub const MAP_PIECE_BYTES: u64 = 256 << 10;

/// Both ways: bytes of one `%pxmap` connection between a worker cell on an engine that cannot
/// reach the kernel's Unix socket and the kernel's map scheduler, in the message's only buffer.
/// The engine relays its cell's local connection `stream` (numbered by the engine) over the
/// link; the scheduler reads it as it would a Unix connection. Engine to hub, at most
/// [`MAP_PIECE_BYTES`] a message and [`MAP_WINDOW_BYTES`] not yet granted back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapBytes {
    pub stream: u64,
}
link_message!(MapBytes, "map_bytes");

/// Hub to engine: the scheduler has taken `bytes` more of `stream`, so the engine may send that
/// many more (back-pressure: a fast worker never makes the hub queue without bound).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapCredit {
    pub stream: u64,
    pub bytes: u64,
}
link_message!(MapCredit, "map_credit");

/// Both ways: `stream` is over, because its worker closed its connection or the scheduler ended
/// or refused it (then `reason` says why, for the engine's log and the worker's error).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapClose {
    pub stream: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
link_message!(MapClose, "map_close");

/// Both ways: one piece of a message too large to travel whole (its sealed frames in order,
/// cut into slices that are this message's buffers). Each piece is signed, sealed and numbered
/// like any message, so the receiver sees the sender alive while a large value crosses a slow
/// network, other messages pass between pieces, and nothing unauthenticated is held beyond one
/// piece. See `rustpx_protocol::pieces`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Piece {
    /// This piece's place, from 0, among `count`.
    pub index: u32,
    pub count: u32,
    /// The bytes of all the pieces together.
    pub total: u64,
    /// Whether the frame this piece's last buffer began goes on in the next piece; every other
    /// buffer ends a frame.
    pub last_continues: bool,
}
link_message!(Piece, "piece");

/// Hub to engine: exit now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ShutdownRequest {}
link_message!(ShutdownRequest, "shutdown_request");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_refused_for_another_architecture_or_an_older_glibc() {
        let kernel = Platform {
            arch: "x86_64".into(),
            os: "linux".into(),
            glibc: Some("2.36".into()),
        };
        let same = kernel.clone();
        assert_eq!(same.incompatibility(&kernel), None);
        let newer = Platform {
            glibc: Some("2.40".into()),
            ..kernel.clone()
        };
        assert_eq!(newer.incompatibility(&kernel), None);
        let older = Platform {
            glibc: Some("2.31".into()),
            ..kernel.clone()
        };
        assert!(older
            .incompatibility(&kernel)
            .unwrap()
            .contains("glibc 2.31"));
        let arm = Platform {
            arch: "aarch64".into(),
            ..kernel.clone()
        };
        assert!(arm
            .incompatibility(&kernel)
            .unwrap()
            .contains("aarch64-linux"));
        let musl = Platform {
            glibc: None,
            ..kernel.clone()
        };
        assert!(musl.incompatibility(&kernel).is_some());
    }
}
