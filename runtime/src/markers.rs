//! The control lines of evcxr's contract between its compiler and the process that runs cells.
//!
//! evcxr's generated code prints these on stdout or stderr, and its runtime child answers
//! `LOAD_AND_RUN` with the first. rustpx speaks the same contract in three places (the plain
//! context's runtime, the px compiler's bridge, and every engine), so the strings live here once.

/// Printed by the runtime after each `LOAD_AND_RUN`; evcxr waits for it.
pub const EXECUTION_COMPLETE: &str = "EVCXR_EXECUTION_COMPLETE";
/// Printed when the cell panicked; evcxr drops the cell's new variables.
pub const PANIC_NOTIFICATION: &str = "EVCXR_PANIC_NOTIFICATION";
/// Printed when user code returned early with `?`.
pub const USER_ERROR: &str = "EVCXR_ERROR_OCCURRED";
/// Printed, followed by the variable's name, when a variable's type changed.
pub const CHANGED_TYPE: &str = "EVCXR_VARIABLE_CHANGED_TYPE:";
/// Opens a rich output: followed by its MIME type, then the content lines.
pub const BEGIN_CONTENT: &str = "EVCXR_BEGIN_CONTENT ";
/// Closes a rich output.
pub const END_CONTENT: &str = "EVCXR_END_CONTENT";
/// The instruction evcxr writes to its runtime child's stdin: `LOAD_AND_RUN <so> <fn>`.
pub const LOAD_AND_RUN: &str = "LOAD_AND_RUN";
