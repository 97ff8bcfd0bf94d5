//! The front end served in process with a session of the test's own: real ZeroMQ sockets and
//! signed frames on the client side, no evcxr. What it shows is the front end's part: replies
//! on shell and control, the signature gate, Run All's aborts, and a shutdown that ends `serve`.

use std::time::Duration;

use jupyter_protocol::{ConnectionInfo, Transport};
use rustpx_wire::{decode, encode, Signer, SocketOptions, SocketType, WireMessage, ZmqSocket};
use serde_json::{json, Value};

use super::shell::reply_type;
use super::{kernel_info, serve_with, ControlHandler, ShellHandler};
use crate::iopub::Publisher;

/// Answers `execute_request`s by their code: `fail` fails, `slow` takes a moment, anything else
/// succeeds; remembers what it ran.
struct Scripted {
    ran: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct Control;

impl ShellHandler for Scripted {
    type Control = Control;

    async fn handle_shell(&mut self, request: &WireMessage) -> Option<WireMessage> {
        let content = match request.msg_type() {
            "kernel_info_request" => kernel_info::content(),
            "execute_request" => {
                let code = request.content["code"].as_str().unwrap_or("").to_owned();
                self.ran.lock().unwrap().push(code.clone());
                if code == "slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if code == "fail" {
                    json!({"status": "error", "execution_count": 1, "ename": "Panic", "evalue": "no", "traceback": []})
                } else {
                    json!({"status": "ok", "execution_count": 1, "user_expressions": {}, "payload": []})
                }
            }
            "shutdown_request" => json!({"status": "ok", "restart": false}),
            _ => return None,
        };
        let reply_type = reply_type(request.msg_type());
        Some(WireMessage::reply_to(request, &reply_type, content))
    }

    fn control(&self) -> Control {
        Control
    }

    type Idle = ();

    async fn idle_work(&mut self) {
        std::future::pending::<()>().await
    }

    async fn do_idle(&mut self, (): ()) {}
}

impl ControlHandler for Control {
    async fn handle(&self, request: &WireMessage) -> Option<WireMessage> {
        (request.msg_type() == "kernel_info_request")
            .then(|| WireMessage::reply_to(request, "kernel_info_reply", kernel_info::content()))
    }

    async fn shutdown(&self) {}
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn connection() -> ConnectionInfo {
    ConnectionInfo {
        ip: "127.0.0.1".into(),
        transport: Transport::TCP,
        shell_port: free_port(),
        iopub_port: free_port(),
        stdin_port: free_port(),
        control_port: free_port(),
        hb_port: free_port(),
        key: "a-test-key".into(),
        signature_scheme: "hmac-sha256".into(),
        kernel_name: None,
    }
}

struct Client {
    shell: ZmqSocket,
    control: ZmqSocket,
    signer: Signer,
}

impl Client {
    fn connect(connection: &ConnectionInfo) -> Client {
        let options = SocketOptions::limited_to(1 << 20);
        Client {
            shell: ZmqSocket::connect(SocketType::DEALER, &connection.shell_url(), &options)
                .unwrap(),
            control: ZmqSocket::connect(SocketType::DEALER, &connection.control_url(), &options)
                .unwrap(),
            signer: Signer::new(&connection.signature_scheme, &connection.key).unwrap(),
        }
    }

    fn request(msg_type: &str, content: Value) -> WireMessage {
        WireMessage::new(msg_type, "test-client", content)
    }

    async fn send_shell(&mut self, message: &WireMessage) {
        self.shell
            .send(encode(message, &self.signer))
            .await
            .unwrap();
    }

    async fn shell_reply(&mut self, wait: Duration) -> Option<WireMessage> {
        let frames = tokio::time::timeout(wait, self.shell.recv())
            .await
            .ok()?
            .ok()?;
        Some(decode(frames, &self.signer).expect("replies are signed"))
    }
}

fn execute(code: &str) -> WireMessage {
    Client::request(
        "execute_request",
        json!({"code": code, "silent": false, "store_history": true, "user_expressions": {},
               "allow_stdin": false, "stop_on_error": true}),
    )
}

const ANSWER: Duration = Duration::from_secs(10);

#[tokio::test]
async fn served_in_process_it_answers_aborts_behind_a_failure_and_shuts_down() {
    let connection = connection();
    let ran = std::sync::Arc::default();
    let session_ran = std::sync::Arc::clone(&ran);
    let served = tokio::spawn(serve_with(
        connection.clone(),
        move |_: Publisher| async move { Scripted { ran: session_ran } },
    ));
    let mut client = Client::connect(&connection);

    // kernel_info on shell and on control.
    client
        .send_shell(&Client::request("kernel_info_request", json!({})))
        .await;
    let info = client
        .shell_reply(ANSWER)
        .await
        .expect("a kernel_info reply");
    assert_eq!(info.msg_type(), "kernel_info_reply");
    assert_eq!(info.content["implementation"], "rustpx");
    let request = Client::request("kernel_info_request", json!({}));
    client
        .control
        .send(encode(&request, &client.signer))
        .await
        .unwrap();
    let frames = tokio::time::timeout(ANSWER, client.control.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        decode(frames, &client.signer).unwrap().msg_type(),
        "kernel_info_reply"
    );

    // A wrongly signed request gets nothing; the next one is answered.
    let forged = Signer::new("hmac-sha256", "not-the-key").unwrap();
    client
        .shell
        .send(encode(&execute("forged"), &forged))
        .await
        .unwrap();
    client.send_shell(&execute("after")).await;
    let after = client.shell_reply(ANSWER).await.expect("a reply");
    assert_eq!(after.content["status"], "ok");

    // Run All: a slow cell, then a failing one, then two more sent at once: the two behind the
    // failure are answered `aborted` and never run.
    for code in ["slow", "fail", "behind-1", "behind-2"] {
        client.send_shell(&execute(code)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = client.shell_reply(ANSWER).await.expect("a reply");
        statuses.push(reply.content["status"].clone());
    }
    assert_eq!(
        statuses,
        [
            json!("ok"),
            json!("error"),
            json!("aborted"),
            json!("aborted")
        ]
    );
    assert_eq!(*ran.lock().unwrap(), ["after", "slow", "fail"]);

    // A shutdown request ends serve.
    client
        .send_shell(&Client::request(
            "shutdown_request",
            json!({"restart": false}),
        ))
        .await;
    assert_eq!(
        client
            .shell_reply(ANSWER)
            .await
            .expect("a reply")
            .msg_type(),
        "shutdown_reply"
    );
    let ended = tokio::time::timeout(ANSWER, served).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "serve did not end: {ended:?}"
    );
}
