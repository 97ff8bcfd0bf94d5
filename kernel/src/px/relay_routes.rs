//! Which server a relayed connection goes to. Engines on other hosts reach two servers over the
//! engine link: `%pxmap`'s scheduler ([`super::map_server`]) and the Rust API's
//! ([`super::api::scheduler`]). A worker opens either with a hello whose first line is that
//! server's token (which it read from the server file shipped with its cell), so the route reads
//! that one line, bounded in size and time, and hands the connection to the server holding the
//! token with the line put back in front: each server then checks the whole hello exactly as it
//! does for a connection on its Unix socket.

use std::future::Future;
use std::sync::{Arc, Mutex};

use rustpx_protocol::EngineId;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, DuplexStream, WriteHalf};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use super::lock;
use super::map_relay::StreamEnding;
use super::map_server::{HELLO_DEADLINE, HELLO_LINE_MAX};

/// A relayed connection's bytes from the engine, its first line included.
pub type RelayedRead = Box<dyn AsyncRead + Send + Unpin>;

/// A relayed connection for a server: who is at the other end (as the link authenticated it),
/// the connection, and where the server leaves why it ended it (told to the engine when the
/// connection closes).
pub struct RelayedConnection {
    pub engine: EngineId,
    pub read: RelayedRead,
    pub write: WriteHalf<DuplexStream>,
    pub ending: StreamEnding,
}

impl RelayedConnection {
    /// Ends the connection unserved, telling the engine why.
    pub fn refuse(self, reason: String) {
        self.ending.set(reason);
    }
}

/// A server that takes relayed connections: its token, and where its connections go.
type Route = (String, UnboundedSender<RelayedConnection>);

/// The servers that take relayed connections.
#[derive(Clone, Default)]
pub struct Routes(Arc<Mutex<Vec<Route>>>);

impl Routes {
    /// Connections whose first line is `token` arrive on the receiver from now on.
    pub fn attach(&self, token: &str) -> UnboundedReceiver<RelayedConnection> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut routes = lock(&self.0);
        routes.retain(|(_, server)| !server.is_closed());
        routes.push((token.to_owned(), sender));
        receiver
    }

    /// Whether any server takes relayed connections now.
    pub fn any(&self) -> bool {
        lock(&self.0).iter().any(|(_, server)| !server.is_closed())
    }

    /// Reads the connection's first line and hands it to the server whose token it is. A
    /// connection with no line within the deadline, or an unknown token, is ended with the reason
    /// (set before the connection drops, so the engine is told it).
    pub async fn route(
        &self,
        engine: EngineId,
        stream: DuplexStream,
        ending: StreamEnding,
    ) -> Result<(), String> {
        let (read, write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let refuse = |reason: String| {
            ending.set(reason.clone());
            Err(reason)
        };
        let mut line = Vec::new();
        let mut limited = (&mut read).take(HELLO_LINE_MAX);
        let reading = limited.read_until(b'\n', &mut line);
        match tokio::time::timeout(HELLO_DEADLINE, reading).await {
            Err(_) => return refuse(format!("no hello within {HELLO_DEADLINE:?}")),
            Ok(Err(error)) => return refuse(format!("the hello could not be read: {error}")),
            Ok(Ok(_)) if line.last() != Some(&b'\n') => {
                return refuse("a hello line that is too long or cut off".into())
            }
            Ok(Ok(_)) => {}
        }
        let token = String::from_utf8_lossy(&line).trim_end().to_owned();
        let server = lock(&self.0)
            .iter()
            .find(|(held, _)| *held == token)
            .map(|(_, server)| server.clone());
        let Some(server) = server else {
            return refuse("a connection whose token no running %pxmap or API call holds".into());
        };
        let connection = RelayedConnection {
            engine,
            read: Box::new(std::io::Cursor::new(line).chain(read)),
            write,
            ending: ending.clone(),
        };
        if let Err(mpsc::error::SendError(connection)) = server.send(connection) {
            let reason = "that server has stopped".to_owned();
            connection.refuse(reason.clone());
            return Err(reason);
        }
        Ok(())
    }
}

/// Serves each connection that arrives on `relayed` on a task of its own with `serve(engine,
/// read, write)`, at most as many at once as `slots` holds (the rest are refused, naming
/// `server`). `serve` hands the write half back with its outcome, so that an error is set as the
/// stream's ending before the connection drops, and the engine is told why.
pub fn serve_relayed<F, Fut>(
    mut relayed: UnboundedReceiver<RelayedConnection>,
    slots: Arc<Semaphore>,
    server: &'static str,
    serve: F,
) where
    F: Fn(EngineId, RelayedRead, WriteHalf<DuplexStream>) -> Fut + Send + 'static,
    Fut: Future<Output = (WriteHalf<DuplexStream>, std::io::Result<()>)> + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(connection) = relayed.recv().await {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                connection.refuse(format!(
                    "{server} serves as many connections as it may already"
                ));
                continue;
            };
            let RelayedConnection {
                engine,
                read,
                write,
                ending,
            } = connection;
            let served = serve(engine, read, write);
            tokio::spawn(async move {
                let (write, outcome) = served.await;
                if let Err(error) = outcome {
                    tracing::info!("{server}: engine {engine}'s relayed connection ended: {error}");
                    ending.set(error.to_string());
                }
                drop(write);
                drop(slot);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn routed(routes: &Routes, sent: &[u8]) -> (Result<(), String>, StreamEnding) {
        let (mut ours, theirs) = tokio::io::duplex(4096);
        ours.write_all(sent).await.unwrap();
        let ending = StreamEnding::default();
        (routes.route(7, theirs, ending.clone()).await, ending)
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_server_of_its_token_with_its_first_line_intact() {
        let routes = Routes::default();
        let mut map = routes.attach("map-token");
        let mut api = routes.attach("api-token");
        let (outcome, _) = routed(&routes, b"api-token\n7\nu64\n").await;
        assert_eq!(outcome, Ok(()));
        assert!(map.try_recv().is_err());
        let mut connection = api.try_recv().expect("the API's server has it");
        assert_eq!(connection.engine, 7);
        let mut first = vec![0u8; 16];
        connection.read.read_exact(&mut first).await.unwrap();
        assert_eq!(first, b"api-token\n7\nu64\n");
    }

    #[tokio::test]
    async fn unknown_tokens_and_endless_lines_are_refused() {
        let routes = Routes::default();
        let _map = routes.attach("map-token");
        let (outcome, ending) = routed(&routes, b"guess\n").await;
        let reason = "a connection whose token no running %pxmap or API call holds";
        assert_eq!(outcome, Err(reason.into()));
        assert_eq!(
            ending.take().as_deref(),
            Some(reason),
            "the engine is told why"
        );
        let long = vec![b'x'; HELLO_LINE_MAX as usize + 10];
        let (outcome, _) = routed(&routes, &long).await;
        assert_eq!(
            outcome,
            Err("a hello line that is too long or cut off".into())
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_ended_at_the_deadline() {
        let routes = Routes::default();
        let _map = routes.attach("map-token");
        let (outcome, _) = routed(&routes, b"map-to").await;
        assert_eq!(outcome, Err(format!("no hello within {HELLO_DEADLINE:?}")));
    }
}
