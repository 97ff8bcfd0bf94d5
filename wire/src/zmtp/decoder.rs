//! ZMTP's framing without I/O: bytes go in as they arrive, whole commands and messages come out.
//!
//! Why apart from the socket: every byte here comes from the peer before anything is
//! authenticated, so the parser is kept where a property test can feed it any bytes, split at
//! any points, without a socket (`tests.rs`).
//!
//! Why it remembers where it stopped: a message can arrive over many reads. Scanning it from its
//! start on each read would cost its frame count per read, quadratic in a message of
//! [`MAX_FRAMES`] small frames trickled in a few bytes at a time; here each frame header is read
//! once, and a frame whose body is not all there is looked at again only for its header.

use bytes::{Buf, Bytes, BytesMut};

use super::{ZmtpError, MAX_COMMAND_BYTES, MAX_FRAMES};

pub(super) const MORE: u8 = 0x01;
pub(super) const LONG: u8 = 0x02;
pub(super) const COMMAND: u8 = 0x04;

/// The most a read reserves ahead of the bytes that arrived: a frame announced as large (up to
/// the limit) gets its room as its body comes in, not all at once on the peer's word.
const MOST_RESERVED_AHEAD: usize = 4 << 20;

/// A message at least this large leaves the buffer with its allocation: what is read after it
/// goes to a fresh buffer, and its frames under [`PINNING_FRAME_BYTES`] are copied out, so the
/// large allocation is freed when the message's large frames are, not kept as the buffer's
/// capacity or by a small frame held on to.
const LARGE_MESSAGE_BYTES: usize = 1 << 20;
const PINNING_FRAME_BYTES: usize = 64 * 1024;

const INITIAL_BYTES: usize = 16 * 1024;

/// Flag bits ZMTP reserves: a peer must send them clear.
const RESERVED: u8 = !(MORE | LONG | COMMAND);

/// What the peer sent, whole.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    /// A command's body (its name's length, its name, its data).
    Command(Bytes),
    /// A message's frames.
    Message(Vec<Bytes>),
}

/// The bytes read from the peer and how far they have been parsed.
pub(super) struct Decoder {
    buffer: BytesMut,
    max_frame_bytes: u64,
    /// The whole frames of the message being read, as offsets into `buffer`.
    spans: Vec<(usize, usize)>,
    /// Where the next frame's header starts in `buffer`.
    at: usize,
    /// How many bytes `buffer` must hold before parsing can go on.
    needed: usize,
}

impl Decoder {
    /// A decoder that refuses frames over `max_frame_bytes` (commands over
    /// [`MAX_COMMAND_BYTES`]).
    pub(super) fn new(max_frame_bytes: u64) -> Decoder {
        Decoder {
            buffer: BytesMut::with_capacity(INITIAL_BYTES),
            max_frame_bytes,
            spans: Vec::new(),
            at: 0,
            needed: 1,
        }
    }

    /// How many bytes have arrived and are not yet taken.
    pub(super) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The buffer to read more bytes into, with room for the next read: up to what the frame
    /// being read still needs, at most [`MOST_RESERVED_AHEAD`] at a time.
    pub(super) fn room(&mut self) -> &mut BytesMut {
        let missing = self.needed.saturating_sub(self.buffer.len());
        let wanted = missing.clamp(4096, MOST_RESERVED_AHEAD);
        if self.buffer.capacity() - self.buffer.len() < wanted {
            self.buffer.reserve(wanted);
        }
        &mut self.buffer
    }

    /// The flags of the next frame, once its first byte has arrived.
    pub(super) fn next_flags(&self) -> Option<u8> {
        self.buffer.get(self.at).copied()
    }

    /// Takes `count` raw bytes off the front (the greeting, which is not framed). Only before
    /// any frame was parsed.
    pub(super) fn take_raw(&mut self, count: usize) -> BytesMut {
        debug_assert!(self.at == 0 && self.spans.is_empty());
        self.buffer.split_to(count.min(self.buffer.len()))
    }

    /// The next whole command or message, or `None` until more bytes arrive. An error means the
    /// peer broke a bound or the protocol: the connection must end.
    pub(super) fn next(&mut self) -> Result<Option<Decoded>, ZmtpError> {
        loop {
            let at = self.at;
            let Some(&flags) = self.buffer.get(at) else {
                return Ok(self.wait_for(at + 1));
            };
            let (size, header) = if flags & LONG != 0 {
                let Some(mut size) = self.buffer.get(at + 1..at + 9) else {
                    return Ok(self.wait_for(at + 9));
                };
                (size.get_u64(), 9)
            } else {
                let Some(&size) = self.buffer.get(at + 1) else {
                    return Ok(self.wait_for(at + 2));
                };
                (u64::from(size), 2)
            };
            if flags & RESERVED != 0 {
                return Err(ZmtpError::Framing(format!(
                    "reserved flag bits set ({flags:#04x})"
                )));
            }
            let command = flags & COMMAND != 0;
            if command && flags & MORE != 0 {
                return Err(ZmtpError::Framing(
                    "a command marked as one of several frames".into(),
                ));
            }
            let limit = if command {
                MAX_COMMAND_BYTES
            } else {
                self.max_frame_bytes
            };
            if size > limit {
                return Err(ZmtpError::FrameTooLarge(size, limit));
            }
            if command && !self.spans.is_empty() {
                return Err(ZmtpError::Handshake("a command inside a message".into()));
            }
            if !command && self.spans.len() == MAX_FRAMES {
                return Err(ZmtpError::TooManyFrames);
            }
            let start = at + header;
            // Within the limit, so it fits a usize on the platforms the engine runs on.
            let end = usize::try_from(size)
                .ok()
                .and_then(|size| start.checked_add(size))
                .ok_or(ZmtpError::FrameTooLarge(size, limit))?;
            if self.buffer.len() < end {
                return Ok(self.wait_for(end));
            }
            if command {
                let whole = self.take(end);
                return Ok(Some(Decoded::Command(whole.slice(start..end))));
            }
            self.spans.push((start, end));
            self.at = end;
            if flags & MORE == 0 {
                let spans = std::mem::take(&mut self.spans);
                let whole = self.take(end);
                let large = whole.len() >= LARGE_MESSAGE_BYTES;
                let frames = spans
                    .into_iter()
                    .map(|(s, e)| {
                        if large && e - s < PINNING_FRAME_BYTES {
                            Bytes::copy_from_slice(&whole[s..e])
                        } else {
                            whole.slice(s..e)
                        }
                    })
                    .collect();
                return Ok(Some(Decoded::Message(frames)));
            }
        }
    }

    fn wait_for(&mut self, needed: usize) -> Option<Decoded> {
        self.needed = needed;
        None
    }

    /// Takes what was parsed off the buffer, and starts the next parse at the new front.
    fn take(&mut self, end: usize) -> Bytes {
        self.at = 0;
        self.needed = 1;
        let whole = self.buffer.split_to(end).freeze();
        if whole.len() >= LARGE_MESSAGE_BYTES {
            let mut fresh = BytesMut::with_capacity(self.buffer.len().max(INITIAL_BYTES));
            fresh.extend_from_slice(&self.buffer);
            self.buffer = fresh;
        }
        whole
    }
}
