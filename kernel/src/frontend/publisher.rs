//! The single path to iopub: every output of the kernel goes through one ordered queue.
//!
//! Because the cell's streams, its result and its `idle` status all enter the same FIFO, output
//! can never overtake the `idle` that closes its cell.

use bytes::Bytes;
use rustpx_wire::WireMessage;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

/// A cloneable handle that queues messages for the iopub socket; usable from any thread.
#[derive(Clone)]
pub struct Publisher {
    queue: UnboundedSender<WireMessage>,
    session: String,
}

impl Publisher {
    pub fn new(queue: UnboundedSender<WireMessage>, session: String) -> Self {
        Publisher { queue, session }
    }

    /// Queues a message of `msg_type` caused by `parent`.
    pub fn publish(&self, parent: &WireMessage, msg_type: &str, content: Value) {
        let mut message = WireMessage::reply_to(parent, msg_type, content);
        // On iopub the routing frame is a topic; clients subscribe to everything.
        message.identities = vec![Bytes::from(format!("kernel.{msg_type}"))];
        self.send(message);
    }

    /// Queues a message with no parent (the kernel's own `starting` status).
    pub fn publish_orphan(&self, msg_type: &str, content: Value) {
        let mut message = WireMessage::new(msg_type, &self.session, content);
        message.identities = vec![Bytes::from(format!("kernel.{msg_type}"))];
        self.send(message);
    }

    /// `status` busy / idle for `parent`.
    pub fn status(&self, parent: &WireMessage, state: &str) {
        self.publish(parent, "status", json!({ "execution_state": state }));
    }

    fn send(&self, message: WireMessage) {
        if self.queue.send(message).is_err() {
            tracing::debug!("iopub queue closed; message dropped during shutdown");
        }
    }
}
