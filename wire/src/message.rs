//! A Jupyter message as it travels: header, parent header, metadata and content as JSON.

use bytes::Bytes;
use jupyter_protocol::Header;
use serde_json::Value;

/// One message, decoded from frames and with a verified signature, or about to be encoded.
///
/// The content stays JSON here: the wire layer does not decide what a message means. Callers turn
/// it into a typed `jupyter_protocol::JupyterMessageContent` (or an engine-link type) themselves.
#[derive(Debug, Clone)]
pub struct WireMessage {
    /// ZeroMQ routing identities (the frames before `<IDS|MSG>`), echoed back on replies.
    pub identities: Vec<Bytes>,
    pub header: Header,
    pub parent_header: Option<Header>,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

impl WireMessage {
    /// A new message of `msg_type` in `session`, with no parent.
    pub fn new(msg_type: &str, session: &str, content: Value) -> Self {
        WireMessage {
            identities: Vec::new(),
            header: new_header(msg_type, session),
            parent_header: None,
            metadata: Value::Object(Default::default()),
            content,
            buffers: Vec::new(),
        }
    }

    /// A message caused by `parent`: same session, parent header set, and routed to the same peer.
    pub fn reply_to(parent: &WireMessage, msg_type: &str, content: Value) -> Self {
        WireMessage {
            identities: parent.identities.clone(),
            header: new_header(msg_type, &parent.header.session),
            parent_header: Some(parent.header.clone()),
            metadata: Value::Object(Default::default()),
            content,
            buffers: Vec::new(),
        }
    }

    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// The `msg_id` of the parent header, or "" for a message without a parent.
    pub fn parent_id(&self) -> &str {
        self.parent_header
            .as_ref()
            .map(|h| h.msg_id.as_str())
            .unwrap_or("")
    }
}

/// A fresh header with a random message id, the current time and protocol version 5.3.
pub fn new_header(msg_type: &str, session: &str) -> Header {
    Header {
        msg_id: uuid::Uuid::new_v4().to_string(),
        username: "rustpx".to_owned(),
        session: session.to_owned(),
        date: chrono::Utc::now(),
        msg_type: msg_type.to_owned(),
        version: "5.3".to_owned(),
    }
}
