//! The decisions of rustpx's parallel magics, with no I/O: what a magic's text asks for
//! ([`magics`], [`targets`], [`launch_options`]), which engines share a compile ([`groups`]),
//! what happened on each engine ([`records`]), the hub's rules as events and effects ([`hub`])
//! over the link's message types ([`link_messages`]), how ipyparallel shows it ([`render`]), and what
//! rustc's error codes mean for a transfer or a map ([`rustc_codes`]).
//!
//! The kernel performs what these decide (sockets, processes, evcxr); keeping them here, free of
//! tokio, evcxr and zeromq, lets their tests run in seconds and lets the kernel's parts change
//! without touching ipyparallel's shapes.

use std::collections::BTreeMap;

pub use errors::{ErrorKind, ErrorReport};

pub mod batch_job;
pub mod cell_files;
pub mod errors;
pub mod groups;
pub mod hub;
pub mod launch_options;
pub mod link_messages;
pub mod magics;
pub mod records;
pub mod render;
pub mod rustc_codes;
pub mod targets;
pub mod transfer;

/// An engine's id in the pool: its place in every output label (`[stdout:N]`, `Out[N:C]`).
pub type EngineId = u32;

/// A display's data by MIME type (`text/plain`, `text/html`, `image/svg+xml`, ...).
pub type MimeBundle = BTreeMap<String, String>;
