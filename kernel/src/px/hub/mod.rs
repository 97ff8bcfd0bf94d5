//! The hub in the kernel: the pure rules of [`rustpx_core::hub`] behind one lock, and the
//! kernel's side of their effects (messages into the link's outbox, watchers and waiters told,
//! shipped objects and returned files read and written outside the lock).
//!
//! The rest of the kernel reaches it only through [`HubHandle`].

use bytes::Bytes;
use rustpx_wire::WireMessage;

pub use rustpx_core::hub::{CellEvent, Departure, EngineEntry, EngineState, RunEnd, KEPT_RESULTS};

/// A message for one engine, by its ZeroMQ identity.
pub type Outgoing = (Bytes, WireMessage);

mod handle;
mod shipping_files;

pub use handle::{HubHandle, StartedEngineEnd};
