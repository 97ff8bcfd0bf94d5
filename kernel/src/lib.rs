//! The rustpx kernel: a Jupyter kernel for Rust with ipyparallel's parallel magics.
//!
//! Layers (see ARCHITECTURE.md): [`frontend`] speaks Jupyter over ZeroMQ through the shared wire
//! crate; [`evaluator`] runs plain cells in the kernel's own evcxr context; [`install`] writes the
//! kernelspec; [`history`] keeps the input history in SQLite. Pure helpers such as [`is_complete`] have no I/O at all.

pub mod cell_cache;
pub mod cell_objects;
pub mod cell_text;
pub mod dep_cache;
pub mod drop_report;
pub mod evaluator;
pub mod frontend;
pub mod history;
pub mod install;
pub mod iopub;
pub mod is_complete;
pub mod launch;
pub mod log_file;
pub mod paths;
pub mod private_dir;
pub mod px;
pub mod side_channel;
pub mod std_sources;
pub mod type_definitions;
