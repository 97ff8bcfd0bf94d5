//! The parallel magics: `%px`, `%%px`, `%pxresult`, `%pxconfig`, `%autopx`, `%engines`.
//!
//! [`PxService`] ties the pieces together for the front end: the [hub](hub) and its
//! [link](link), the [local pool](pool), the [compiler](compiler) and the [renderer](render).
//! Magic text is parsed by [`magics`] before anything is sent.

pub mod api;
mod bridge;
mod cell_commands;
mod cell_files;
mod client_crate;
mod compiler;
mod connection_file;
mod hub;
pub mod hub_address;
mod jobs;
mod link;
mod map_job;
mod map_relay;
mod map_server;
mod pool;
mod relay_routes;
mod restart_policy;
mod session;
mod shipping;
mod stale_files;

use thiserror::Error;

// The pure decisions live in rustpx-core; here under the names the px parts have always used.
pub use rustpx_core::{groups, magics, records, render, rustc_codes, targets, transfer};

/// Locks a mutex shared by the px parts. A poisoned lock only means a thread panicked while
/// holding it; the registry, pool and scheduler states stay usable, so their users go on.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub use bridge::run_if_requested as run_bridge_if_requested;
pub use session::{PxInterrupter, PxService};

/// Why the parallel machinery could not do what was asked.
#[derive(Debug, Error)]
pub enum PxError {
    #[error(transparent)]
    Wire(rustpx_wire::WireError),
    #[error("cannot bind the hub to {0}: {1}")]
    Bind(String, String),
    #[error("cannot start the engine binary {0}: {1}")]
    Spawn(String, String),
    #[error("the engine binary is missing at {0}; build it with `cargo build --release` or set RUSTPX_ENGINE_BIN")]
    NoEngineBinary(String),
    #[error(transparent)]
    Launch(crate::launch::LaunchError),
    #[error(transparent)]
    HubAddress(hub_address::HubAddressError),
}
