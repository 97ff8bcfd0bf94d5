//! A DEALER that speaks ZMTP 3.0 (the NULL mechanism, as libzmq does on `ipc://`) over a plain
//! Unix stream, without libzmq: what an engine on the kernel's host dials the hub's Unix socket
//! with.
//!
//! Why: libzmq moves every message through an I/O thread of its own. Each message in or out of
//! an engine is then a hand-off between the engine's link thread and that thread (an eventfd
//! write, a wake-up, a context switch each way), once per engine per run; on a pool of hundreds
//! of engines on a few cores those wake-ups are what a run costs. Here the link thread reads
//! and writes the socket itself. The hub keeps its libzmq ROUTER and every check it makes: to
//! it this is one more DEALER, sending the same signed and sealed messages.
//!
//! Bounds, as libzmq's `ZMQ_MAXMSGSIZE` gives the zmq link: a frame whose announced size is over
//! the limit ends the connection before anything is allocated for it, and so does a message of
//! more than [`MAX_FRAMES`] frames, a command over [`MAX_COMMAND_BYTES`], or a peer whose
//! greeting or handshake is not ZMTP 3 with the NULL mechanism. The buffer grows as bytes
//! actually arrive (at most 4 MiB reserved ahead of them), and each frame header is parsed once
//! however many reads its message takes ([`decoder`]).

use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The most frames one message may have (the link's messages have a handful plus one per
/// buffer).
pub const MAX_FRAMES: usize = 1 << 16;

/// The largest command (`READY` and its properties) taken from the peer.
pub const MAX_COMMAND_BYTES: u64 = 64 * 1024;

const GREETING_BYTES: usize = 64;

/// Frames this large are written from their own buffer rather than copied with the headers.
const UNCOPIED_FRAME_BYTES: usize = 64 * 1024;

/// Why the stream to the hub failed or was ended.
#[derive(Debug, Error)]
pub enum ZmtpError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("the link to the hub failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the hub closed the connection")]
    Closed,
    #[error("the hub took nothing for {0:?}")]
    Stalled(Duration),
    #[error("the peer is not a ZMTP 3 socket with the NULL mechanism ({0})")]
    Handshake(String),
    #[error("the peer announced a frame of {0} bytes, over the limit of {1} bytes: disconnected")]
    FrameTooLarge(u64, u64),
    #[error("the peer broke ZMTP's framing: {0}")]
    Framing(String),
    #[error("the peer sent a message of more than {MAX_FRAMES} frames: disconnected")]
    TooManyFrames,
    #[error("a routing identity must be 1 to 255 bytes, not {0}")]
    Identity(usize),
}

/// A connected, greeted DEALER on a Unix stream.
pub struct ZmtpDealer {
    stream: UnixStream,
    decoder: Decoder,
}

impl ZmtpDealer {
    /// Connects to the socket at `path`, presents `identity` as the DEALER's routing identity,
    /// and completes ZMTP's handshake with the peer (a libzmq ROUTER).
    pub async fn connect(
        path: &Path,
        identity: &[u8],
        max_frame_bytes: u64,
    ) -> Result<ZmtpDealer, ZmtpError> {
        if identity.is_empty() || identity.len() > 255 {
            return Err(ZmtpError::Identity(identity.len()));
        }
        let stream = UnixStream::connect(path)
            .await
            .map_err(|error| ZmtpError::Connect(path.display().to_string(), error))?;
        let mut dealer = ZmtpDealer {
            stream,
            decoder: Decoder::new(max_frame_bytes),
        };
        dealer.handshake(identity).await?;
        Ok(dealer)
    }

    async fn handshake(&mut self, identity: &[u8]) -> Result<(), ZmtpError> {
        let mut hello = greeting();
        hello.extend_from_slice(&ready(identity));
        self.stream.write_all(&hello).await?;
        while self.decoder.buffered() < GREETING_BYTES {
            self.read_more().await?;
        }
        let theirs = self.decoder.take_raw(GREETING_BYTES);
        check_greeting(&theirs)?;
        loop {
            // Only a command may follow the greeting: anything else is refused on its first
            // byte, not after a message of any size has arrived.
            if self
                .decoder
                .next_flags()
                .is_some_and(|flags| flags & COMMAND == 0)
            {
                return Err(ZmtpError::Handshake(
                    "a message before the READY command".into(),
                ));
            }
            match self.decoder.next()? {
                Some(Decoded::Command(body)) => return check_ready(&body),
                Some(Decoded::Message(_)) => {
                    return Err(ZmtpError::Handshake(
                        "a message before the READY command".into(),
                    ))
                }
                None => self.read_more().await?,
            }
        }
    }

    /// The next whole message. Cancel-safe: what was read stays in the buffer for the next
    /// call, so it can wait in a `select!` with other work.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, ZmtpError> {
        loop {
            match self.decoder.next()? {
                Some(Decoded::Message(frames)) => return Ok(frames),
                // A command after the handshake (a PING of ZMTP 3.1) asks nothing of a 3.0
                // peer: skipped.
                Some(Decoded::Command(_)) => continue,
                None => self.read_more().await?,
            }
        }
    }

    /// Sends one message (at least one frame). Frames of 64 KiB or more are written from where
    /// they are, not copied. Fails with [`ZmtpError::Stalled`] when the peer takes no byte for
    /// `patience`: a hub that stops reading must not hold the caller in a write for good, while
    /// a large message to a hub that keeps reading may take as long as it takes. After any
    /// error the stream may end in the middle of a frame: drop the dealer, never send again.
    pub async fn send(&mut self, frames: Vec<Bytes>, patience: Duration) -> Result<(), ZmtpError> {
        let mut pending = Vec::with_capacity(16 * 1024);
        let last = frames.len().saturating_sub(1);
        for (index, frame) in frames.iter().enumerate() {
            let more = if index < last { MORE } else { 0 };
            put_header(&mut pending, more, frame.len());
            if frame.len() < UNCOPIED_FRAME_BYTES {
                pending.extend_from_slice(frame);
            } else {
                self.write_patiently(&pending, patience).await?;
                pending.clear();
                self.write_patiently(frame, patience).await?;
            }
        }
        self.write_patiently(&pending, patience).await
    }

    async fn write_patiently(
        &mut self,
        mut bytes: &[u8],
        patience: Duration,
    ) -> Result<(), ZmtpError> {
        while !bytes.is_empty() {
            match tokio::time::timeout(patience, self.stream.write(bytes)).await {
                Err(_) => return Err(ZmtpError::Stalled(patience)),
                Ok(Ok(0)) => return Err(ZmtpError::Closed),
                Ok(Ok(written)) => bytes = &bytes[written..],
                Ok(Err(error)) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn read_more(&mut self) -> Result<(), ZmtpError> {
        if self.stream.read_buf(self.decoder.room()).await? == 0 {
            return Err(ZmtpError::Closed);
        }
        Ok(())
    }
}

fn put_frame(out: &mut Vec<u8>, flags: u8, body: &[u8]) {
    put_header(out, flags, body.len());
    out.extend_from_slice(body);
}

/// A frame's flags and size, in ZMTP's short form when the size fits a byte.
fn put_header(out: &mut Vec<u8>, flags: u8, size: usize) {
    match u8::try_from(size) {
        Ok(size) => {
            out.push(flags);
            out.push(size);
        }
        Err(_) => {
            out.push(flags | LONG);
            out.put_u64(size as u64);
        }
    }
}

/// ZMTP 3.0's greeting: signature, version 3.0, the NULL mechanism, not the server.
fn greeting() -> Vec<u8> {
    let mut greeting = vec![0u8; GREETING_BYTES];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[11] = 0;
    greeting[12..16].copy_from_slice(b"NULL");
    greeting
}

fn check_greeting(theirs: &[u8]) -> Result<(), ZmtpError> {
    if theirs[0] != 0xff || theirs[9] != 0x7f {
        return Err(ZmtpError::Handshake("no ZMTP signature".into()));
    }
    if theirs[10] < 3 {
        return Err(ZmtpError::Handshake(format!("version {}", theirs[10])));
    }
    let mechanism = &theirs[12..32];
    if !mechanism.starts_with(b"NULL") || mechanism[4..].iter().any(|b| *b != 0) {
        return Err(ZmtpError::Handshake(format!(
            "mechanism {:?}",
            String::from_utf8_lossy(mechanism).trim_end_matches('\0')
        )));
    }
    Ok(())
}

/// The READY command of a DEALER with routing identity `identity`.
fn ready(identity: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(5);
    body.extend_from_slice(b"READY");
    for (name, value) in [
        (&b"Socket-Type"[..], &b"DEALER"[..]),
        (b"Identity", identity),
    ] {
        body.push(name.len() as u8);
        body.extend_from_slice(name);
        body.put_u32(value.len() as u32);
        body.extend_from_slice(value);
    }
    let mut out = Vec::new();
    put_frame(&mut out, COMMAND, &body);
    out
}

/// Checks the peer's READY command names a ROUTER (once): the only peer a DEALER of the link has.
fn check_ready(body: &[u8]) -> Result<(), ZmtpError> {
    let bad = |why: &str| Err(ZmtpError::Handshake(why.to_owned()));
    let Some((&name_len, rest)) = body.split_first() else {
        return bad("an empty command");
    };
    let Some((name, mut properties)) = rest.split_at_checked(usize::from(name_len)) else {
        return bad("a truncated command");
    };
    if name != b"READY" {
        return bad("a command other than READY");
    }
    let mut router = false;
    while let Some((&key_len, rest)) = properties.split_first() {
        let Some((key, rest)) = rest.split_at_checked(usize::from(key_len)) else {
            return bad("a truncated property");
        };
        let Some((size, rest)) = rest.split_at_checked(4) else {
            return bad("a truncated property");
        };
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let Some((value, rest)) = rest.split_at_checked(size) else {
            return bad("a truncated property");
        };
        if key.eq_ignore_ascii_case(b"Socket-Type") {
            if value != b"ROUTER" || router {
                return bad("the peer is not a ROUTER");
            }
            router = true;
        }
        properties = rest;
    }
    if !router {
        return bad("the peer did not say it is a ROUTER");
    }
    Ok(())
}

mod decoder;
#[cfg(test)]
mod tests;

use decoder::{Decoded, Decoder, COMMAND, LONG, MORE};
