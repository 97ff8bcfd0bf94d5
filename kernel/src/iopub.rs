//! The single path to iopub: every output of the kernel goes through one ordered queue, as one
//! of Jupyter's iopub message types built from `jupyter_protocol`'s content types here and
//! nowhere else.
//!
//! Because the cell's streams, its result and its `idle` status all enter the same FIFO, output
//! can never overtake the `idle` that closes its cell. The front end owns the socket; the
//! evaluator and the px service only hold a [`Publisher`], so neither depends on the front end.

use bytes::Bytes;
use jupyter_protocol::{
    CommClose, CommId, DisplayData, ErrorOutput, ExecuteInput, ExecuteResult, ExecutionCount,
    ExecutionState, Media, MediaType, Status, Stdio, StreamContent, Transient, UpdateDisplayData,
};
use rustpx_core::ErrorReport;
use rustpx_wire::WireMessage;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

/// A cloneable handle that queues messages for the iopub socket; usable from any thread.
#[derive(Clone)]
pub struct Publisher {
    queue: UnboundedSender<WireMessage>,
    session: String,
}

/// The stream a text line belongs to, by the name the pumps and renderers use.
pub fn stdio(name: &str) -> Stdio {
    if name == "stderr" {
        Stdio::Stderr
    } else {
        Stdio::Stdout
    }
}

/// A MIME bundle as Jupyter's `data`, each value kept exactly as given (no re-parsing).
fn media(data: Map<String, Value>) -> Media {
    Media::new(
        data.into_iter()
            .map(|(mime, value)| MediaType::Other((mime, value)))
            .collect(),
    )
}

impl Publisher {
    pub fn new(queue: UnboundedSender<WireMessage>, session: String) -> Self {
        Publisher { queue, session }
    }

    /// The kernel's own `starting` status, which no request caused.
    pub fn starting(&self) {
        let content = Status {
            execution_state: ExecutionState::Starting,
        };
        let mut message = WireMessage::new("status", &self.session, to_json(&content));
        message.identities = vec![Bytes::from_static(b"kernel.status")];
        self.send(message);
    }

    /// `status` busy or idle for `parent`.
    pub fn status(&self, parent: &WireMessage, execution_state: ExecutionState) {
        self.emit(parent, "status", &Status { execution_state });
    }

    /// Text on stdout or stderr.
    pub fn stream(&self, parent: &WireMessage, name: Stdio, text: impl Into<String>) {
        let text = text.into();
        self.emit(parent, "stream", &StreamContent { name, text });
    }

    /// The cell being run, with its count, as every client echoes it.
    pub fn execute_input(&self, parent: &WireMessage, code: &str, count: u32) {
        let content = ExecuteInput {
            code: code.to_owned(),
            execution_count: ExecutionCount::new(count as usize),
        };
        self.emit(parent, "execute_input", &content);
    }

    /// A cell's value (`Out[N]`).
    pub fn execute_result(&self, parent: &WireMessage, count: u32, data: Map<String, Value>) {
        let content = ExecuteResult {
            execution_count: ExecutionCount::new(count as usize),
            data: media(data),
            metadata: Map::new(),
            transient: None,
        };
        self.emit(parent, "execute_result", &content);
    }

    /// A value that is only text, such as `<AsyncResult(%px): pending>`.
    pub fn text_result(&self, parent: &WireMessage, count: u32, text: &str) {
        let mut data = Map::new();
        data.insert("text/plain".into(), Value::String(text.to_owned()));
        self.execute_result(parent, count, data);
    }

    /// A failure as Jupyter shows it: the name, the value and the traceback.
    pub fn error(&self, parent: &WireMessage, report: &ErrorReport) {
        let content = ErrorOutput {
            ename: report.ename().to_owned(),
            evalue: report.evalue.clone(),
            traceback: report.traceback.clone(),
        };
        self.emit(parent, "error", &content);
    }

    /// A display; with a `display_id` it can be replaced later (`update`), as a progress bar is.
    pub fn display(
        &self,
        parent: &WireMessage,
        data: Map<String, Value>,
        metadata: Map<String, Value>,
        display_id: Option<&str>,
        update: bool,
    ) {
        let transient = display_id.map(|id| Transient {
            display_id: Some(id.to_owned()),
        });
        match transient {
            Some(transient) if update => {
                let content = UpdateDisplayData {
                    data: media(data),
                    metadata,
                    transient,
                };
                self.emit(parent, "update_display_data", &content);
            }
            transient => {
                let content = DisplayData {
                    data: media(data),
                    metadata,
                    transient,
                };
                self.emit(parent, "display_data", &content);
            }
        }
    }

    /// Closes a comm the kernel has no target for.
    pub fn comm_close(&self, parent: &WireMessage, comm_id: &str) {
        let content = CommClose {
            comm_id: CommId(comm_id.to_owned()),
            data: Map::new(),
        };
        self.emit(parent, "comm_close", &content);
    }

    fn emit(&self, parent: &WireMessage, msg_type: &str, content: &impl Serialize) {
        let mut message = WireMessage::reply_to(parent, msg_type, to_json(content));
        // On iopub the routing frame is a topic; clients subscribe to everything.
        message.identities = vec![Bytes::from(format!("kernel.{msg_type}"))];
        self.send(message);
    }

    fn send(&self, message: WireMessage) {
        if self.queue.send(message).is_err() {
            tracing::debug!("iopub queue closed; message dropped during shutdown");
        }
    }
}

/// The content as Jupyter sends it. jupyter_protocol writes an absent optional field as `null`
/// (`ExecuteResult::transient`), which the message schema refuses (`transient` must be an
/// object); an absent field is left out instead, as ipykernel does. Serializing plain data
/// cannot fail.
fn to_json(content: &impl Serialize) -> Value {
    let mut value = serde_json::to_value(content).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.retain(|_, field| !field.is_null());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::mpsc::unbounded_channel;

    fn published(publish: impl FnOnce(&Publisher, &WireMessage)) -> WireMessage {
        let (queue, mut out) = unbounded_channel();
        let publisher = Publisher::new(queue, "s".into());
        let parent = WireMessage::new("execute_request", "client", json!({}));
        publish(&publisher, &parent);
        out.try_recv().expect("a message")
    }

    #[test]
    fn each_message_has_jupyters_shape() {
        let stream = published(|p, r| p.stream(r, Stdio::Stderr, "x\n"));
        assert_eq!(stream.header.msg_type, "stream");
        assert_eq!(stream.content, json!({"name": "stderr", "text": "x\n"}));
        assert_eq!(stream.identities, [Bytes::from_static(b"kernel.stream")]);

        let result = published(|p, r| p.text_result(r, 3, "<pending>"));
        assert_eq!(
            result.content,
            json!({"execution_count": 3, "data": {"text/plain": "<pending>"}, "metadata": {}})
        );

        let mut data = Map::new();
        data.insert("image/svg+xml".into(), json!("<svg/>"));
        let update = published(|p, r| p.display(r, data, Map::new(), Some("d"), true));
        assert_eq!(update.header.msg_type, "update_display_data");
        assert_eq!(
            update.content,
            json!({"data": {"image/svg+xml": "<svg/>"}, "metadata": {}, "transient": {"display_id": "d"}})
        );

        let plain = published(|p, r| p.display(r, Map::new(), Map::new(), None, true));
        assert_eq!(plain.header.msg_type, "display_data");
        assert_eq!(plain.content, json!({"data": {}, "metadata": {}}));

        let status = published(|p, r| p.status(r, ExecutionState::Busy));
        assert_eq!(status.content, json!({"execution_state": "busy"}));
    }
}
