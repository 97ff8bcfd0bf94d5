//! What the two processes that run compiled cells share: the kernel's plain-cell runtime child
//! and every engine.
//!
//! Both implement the runtime half of evcxr's contract: load the shared object evcxr built, call
//! its `extern "C"` cell function with the variable store, and speak evcxr's marker lines. They
//! differ in how instructions arrive (evcxr's stdin and a side socket, or the hub's link) and in
//! what they do with a cell's output (evcxr reads the child's pipes; an engine forwards them to
//! the hub), so those parts stay with each binary. This crate keeps to `libc`, `libloading` and
//! `thiserror` so that the engine stays a thin runtime.

pub mod cells;
pub mod fds;
pub mod markers;

pub use cells::{Cells, LoadError};
