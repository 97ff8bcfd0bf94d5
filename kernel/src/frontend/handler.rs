//! What the front end serves: a session that answers shell requests one at a time, and a control
//! side that answers while a cell runs. The kernel's [`Session`](super::Session) is one; a test
//! can serve its own, so the sockets, the signature gate and Run All's aborts are tested in
//! process without evcxr.

use std::future::Future;
use std::sync::Arc;

use rustpx_wire::WireMessage;

/// The shell side: requests in order, each answered (or not, for comm messages) before the next.
pub trait ShellHandler: Send + 'static {
    type Control: ControlHandler;

    /// The reply to `request`, `None` for messages that get none.
    fn handle_shell(
        &mut self,
        request: &WireMessage,
    ) -> impl Future<Output = Option<WireMessage>> + Send;

    /// The control side, taken once when serving starts.
    fn control(&self) -> Self::Control;

    /// What to prepare for a request that has arrived but waits behind a running one, taken
    /// once when serving starts (the kernel: start the px compiler's context for a queued
    /// `%px` cell while an earlier cell still runs). Nothing, unless a session says otherwise.
    fn foresight(&self) -> Foresight {
        Arc::new(|_: &WireMessage| {})
    }

    /// What the session does between requests (the kernel: the Rust API's calls from threads
    /// that outlive their cell).
    type Idle: Send;

    /// Waits for work to do between requests. It must be cancel-safe: it is dropped, losing
    /// nothing, the moment a request arrives.
    fn idle_work(&mut self) -> impl Future<Output = Self::Idle> + Send;

    /// Does work `idle_work` gave, to its end (the next request waits for it).
    fn do_idle(&mut self, work: Self::Idle) -> impl Future<Output = ()> + Send;
}

/// Called, without the session's lock, for each request taken ahead off the shell socket; it
/// must be quick and must not answer anything (the request is served in its turn).
pub type Foresight = Arc<dyn Fn(&WireMessage) + Send + Sync>;

/// The control side: interrupts, shutdown and kernel_info while the shell is busy.
pub trait ControlHandler: Clone + Send + Sync + 'static {
    fn handle(&self, request: &WireMessage) -> impl Future<Output = Option<WireMessage>> + Send;

    /// Stops what the session started (engines) and ends it: a shutdown, or the client is gone.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}
