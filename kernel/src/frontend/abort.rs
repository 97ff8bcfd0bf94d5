//! `stop_on_error`: which failures abort the queue, and what an aborted request is answered.
//!
//! Jupyter clients run a notebook's cells by sending one `execute_request` per cell without
//! waiting; each carries `stop_on_error` (true unless the client says otherwise). When a cell
//! fails, the cells queued behind it must not run: the kernel answers them `aborted`.

use rustpx_wire::WireMessage;
use serde_json::{json, Value};

/// True when `request` was an execute request whose failure stops the cells queued after it:
/// it failed, was not silent, and did not turn `stop_on_error` off.
pub fn stops_the_queue(request: &WireMessage, reply: &WireMessage) -> bool {
    if request.msg_type() != "execute_request" {
        return false;
    }
    let asked = |field: &str, default: bool| {
        request
            .content
            .get(field)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let failed = reply.content.get("status").and_then(Value::as_str) == Some("error");
    failed && asked("stop_on_error", true) && !asked("silent", false)
}

/// The reply to an execute request that was not run because an earlier cell failed.
pub fn aborted_reply(request: &WireMessage) -> WireMessage {
    let mut reply = WireMessage::reply_to(request, "execute_reply", json!({"status": "aborted"}));
    reply.metadata = json!({"status": "aborted"});
    reply
}

/// The reply to a request whose handler panicked: an error the client shows, instead of a
/// shell loop that never answers again. The kernel goes on serving.
pub fn panicked_reply(request: &WireMessage, panic: &(dyn std::any::Any + Send)) -> WireMessage {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    tracing::error!("the {} handler panicked: {what}", request.msg_type());
    let evalue = format!(
        "rustpx failed while handling this {} ({what}); the kernel keeps running. Please report this as a bug.",
        request.msg_type()
    );
    WireMessage::reply_to(
        request,
        &super::shell::reply_type(request.msg_type()),
        json!({"status": "error", "ename": "KernelError", "evalue": evalue, "traceback": [format!("KernelError: {evalue}")]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(content: Value) -> WireMessage {
        WireMessage::new("execute_request", "session", content)
    }

    fn reply(status: &str) -> WireMessage {
        let request = execute(json!({}));
        WireMessage::reply_to(&request, "execute_reply", json!({ "status": status }))
    }

    #[test]
    fn a_failed_cell_stops_the_queue_by_default() {
        assert!(stops_the_queue(
            &execute(json!({"code": "panic!()"})),
            &reply("error")
        ));
    }

    #[test]
    fn a_successful_cell_does_not() {
        assert!(!stops_the_queue(&execute(json!({})), &reply("ok")));
    }

    #[test]
    fn the_client_can_turn_it_off_and_silent_cells_never_stop_it() {
        let off = execute(json!({"stop_on_error": false}));
        assert!(!stops_the_queue(&off, &reply("error")));
        let silent = execute(json!({"silent": true}));
        assert!(!stops_the_queue(&silent, &reply("error")));
    }

    #[test]
    fn other_requests_never_stop_it() {
        let info = WireMessage::new("kernel_info_request", "session", json!({}));
        assert!(!stops_the_queue(&info, &reply("error")));
    }

    #[test]
    fn a_panicking_handler_becomes_an_error_reply() {
        let request = execute(json!({"code": "%%px -t 1::9"}));
        let payload: Box<dyn std::any::Any + Send> = Box::new("attempt to add with overflow");
        let reply = panicked_reply(&request, payload.as_ref());
        assert_eq!(reply.msg_type(), "execute_reply");
        assert_eq!(reply.content["status"], "error");
        assert_eq!(reply.content["ename"], "KernelError");
        assert!(reply.content["evalue"]
            .as_str()
            .unwrap()
            .contains("attempt to add with overflow"));
    }

    #[test]
    fn an_aborted_reply_says_so_in_content_and_metadata() {
        let request = execute(json!({"code": "1"}));
        let reply = aborted_reply(&request);
        assert_eq!(reply.msg_type(), "execute_reply");
        assert_eq!(reply.content, json!({"status": "aborted"}));
        assert_eq!(reply.metadata["status"], "aborted");
        assert_eq!(reply.parent_id(), request.header.msg_id);
    }
}
