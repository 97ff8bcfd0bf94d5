//! Large link messages travel in pieces.
//!
//! A `%pull` of a large value, a `%push` to an engine on another host, or a cell's object sent
//! to it used to be one message. On a slow network one message can take longer than the silence
//! either end allows (the hub's 5 s without a heartbeat, the engine's `--hub-silence`), because
//! nothing else passes on the connection until it is through: a live engine was declared dead.
//! And both ends had to accept frames of up to 1 GiB from a peer not yet authenticated.
//!
//! So a message whose sealed frames come to more than [`WHOLE_MESSAGE_BYTES`] is cut into
//! [`Piece`]s of [`PIECE_BYTES`], each its own signed, sealed and numbered message: each one
//! that arrives is a sign of life, other messages pass between them, and the sockets on both
//! ends refuse any frame over [`MAX_FRAME_BYTES`] before allocating it. The receiver checks
//! each piece like any message before it keeps a byte of it, puts one message at a time
//! together ([`Assembler`]) within [`MAX_MESSAGE_BYTES`] and [`MAX_FRAMES`], and then checks the
//! whole message's own signature. The whole message's sequence number is not checked: it was
//! taken before its pieces' numbers, and every piece's number was.

use bytes::Bytes;
use rustpx_wire::{LinkCipher, SealedMessage, WireError, WireMessage};
use thiserror::Error;

use crate::{LinkMessage, Piece};

/// The most of a message's frames one piece carries.
pub const PIECE_BYTES: usize = 256 << 10;

/// Messages up to this size travel whole (a `%pxmap` relay's 256 KiB with its envelope is one).
pub const WHOLE_MESSAGE_BYTES: usize = PIECE_BYTES + (64 << 10);

/// The largest frame either end takes from its socket: no frame of a whole message or of a
/// piece is larger. A peer that announces more is disconnected before anything is allocated.
pub const MAX_FRAME_BYTES: usize = WHOLE_MESSAGE_BYTES;

/// The largest message put together from pieces (pushed and pulled values, compiled objects).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 30;

/// The most the buffers of one message may carry (values pushed or pulled at once), leaving
/// room within [`MAX_MESSAGE_BYTES`] for its envelope and the buffers' seals. Senders check it
/// before they read anything: a larger message would be refused on arrival.
pub const MAX_CARRIED_BYTES: u64 = MAX_MESSAGE_BYTES - (1 << 20);

/// The bytes the files at `paths` hold (missing ones count nothing): what a message carrying
/// them would carry, checked against [`MAX_CARRIED_BYTES`] before anything is read.
pub fn carried_bytes(paths: &[String]) -> u64 {
    paths
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// The most frames a message put together from pieces may have: each costs a record beside
/// its bytes, so empty frames must not be free.
pub const MAX_FRAMES: usize = 1 << 16;

/// Opens a verified link message: a piece's buffers stay as they came (they are the sealed and
/// signed frames of the message it carries, sent with `encode_sealed_carrying` and checked
/// when that message is whole), every other message's are decrypted.
pub fn open(sealed: SealedMessage, cipher: &LinkCipher) -> Result<WireMessage, WireError> {
    if sealed.envelope().msg_type() == Piece::MSG_TYPE {
        sealed.open_carrying(cipher)
    } else {
        sealed.open(cipher)
    }
}

/// Whether `frames` (one sealed message) must travel in pieces.
pub fn needs_pieces(frames: &[Bytes]) -> bool {
    frames.iter().map(Bytes::len).sum::<usize>() > WHOLE_MESSAGE_BYTES
}

/// `frames` cut into pieces: each piece's description and its buffers, which are slices of the
/// frames (nothing is copied). A frame may end in one piece and go on in the next.
pub fn split(frames: &[Bytes]) -> Vec<(Piece, Vec<Bytes>)> {
    let total = frames.iter().map(Bytes::len).sum::<usize>() as u64;
    let mut pieces: Vec<(bool, Vec<Bytes>)> = Vec::new();
    let mut current = Vec::new();
    let mut room = PIECE_BYTES;
    for frame in frames {
        let mut rest = frame.clone();
        loop {
            let taken = rest.split_to(rest.len().min(room));
            room -= taken.len();
            current.push(taken);
            if rest.is_empty() {
                break;
            }
            // The piece is full in the middle of this frame.
            pieces.push((true, std::mem::take(&mut current)));
            room = PIECE_BYTES;
        }
        if room == 0 {
            pieces.push((false, std::mem::take(&mut current)));
            room = PIECE_BYTES;
        }
    }
    if !current.is_empty() {
        pieces.push((false, current));
    }
    let count = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, (last_continues, buffers))| {
            let piece = Piece {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                count,
                total,
                last_continues,
            };
            (piece, buffers)
        })
        .collect()
}

/// Why pieces could not be put together; the message they belonged to is dropped.
#[derive(Debug, Error, PartialEq)]
pub enum PieceError {
    #[error("piece {index} of {count} arrived where piece {expected} was due")]
    OutOfOrder {
        index: u32,
        count: u32,
        expected: u32,
    },
    #[error("a piece says the message has {count} pieces and {total} bytes, but an earlier one said {was_count} and {was_total}")]
    Inconsistent {
        count: u32,
        total: u64,
        was_count: u32,
        was_total: u64,
    },
    #[error("a message of {0} bytes is larger than the {MAX_MESSAGE_BYTES} bytes allowed")]
    TooLarge(u64),
    #[error("a piece carries {0} bytes, more than the {PIECE_BYTES} a piece may")]
    PieceTooLarge(usize),
    #[error("a piece carries no buffer")]
    Empty,
    #[error("the pieces carry more bytes than the {0} the message was said to have")]
    Overrun(u64),
    #[error("the pieces ended after {received} of the {total} bytes the message was said to have")]
    Short { received: u64, total: u64 },
    #[error("the message has more than {MAX_FRAMES} frames")]
    TooManyFrames,
}

/// Puts one sender's pieces back together, one message at a time, in order.
#[derive(Debug, Default)]
pub struct Assembler {
    current: Option<InProgress>,
}

/// A message partly received.
#[derive(Debug)]
struct InProgress {
    count: u32,
    total: u64,
    next: u32,
    received: u64,
    frames: Vec<Bytes>,
    /// The start of a frame that goes on in the next piece.
    partial: Vec<u8>,
}

impl Assembler {
    /// Takes the next piece (already verified and opened) with its buffers; the whole message's
    /// frames once its last piece is in. On an error the message in progress is dropped, and
    /// the next message starts at its piece 0.
    pub fn add(
        &mut self,
        piece: &Piece,
        buffers: Vec<Bytes>,
    ) -> Result<Option<Vec<Bytes>>, PieceError> {
        let result = self.take(piece, buffers);
        if !matches!(result, Ok(None)) {
            self.current = None;
        }
        result
    }

    /// Whether part of a message has arrived and the rest has not.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    fn take(
        &mut self,
        piece: &Piece,
        buffers: Vec<Bytes>,
    ) -> Result<Option<Vec<Bytes>>, PieceError> {
        if piece.index == 0 {
            if piece.total > MAX_MESSAGE_BYTES {
                return Err(PieceError::TooLarge(piece.total));
            }
            // An unfinished message before it is abandoned (its sender gave up on it).
            self.current = Some(InProgress {
                count: piece.count,
                total: piece.total,
                next: 0,
                received: 0,
                frames: Vec::new(),
                partial: Vec::new(),
            });
        }
        if piece.index >= piece.count {
            return Err(PieceError::OutOfOrder {
                index: piece.index,
                count: piece.count,
                expected: self.current.as_ref().map_or(0, |m| m.next),
            });
        }
        let Some(message) = self.current.as_mut() else {
            return Err(PieceError::OutOfOrder {
                index: piece.index,
                count: piece.count,
                expected: 0,
            });
        };
        if piece.count != message.count || piece.total != message.total {
            return Err(PieceError::Inconsistent {
                count: piece.count,
                total: piece.total,
                was_count: message.count,
                was_total: message.total,
            });
        }
        if piece.index != message.next {
            return Err(PieceError::OutOfOrder {
                index: piece.index,
                count: piece.count,
                expected: message.next,
            });
        }
        let bytes: usize = buffers.iter().map(Bytes::len).sum();
        if bytes > PIECE_BYTES {
            return Err(PieceError::PieceTooLarge(bytes));
        }
        if buffers.is_empty() {
            return Err(PieceError::Empty);
        }
        message.received += bytes as u64;
        if message.received > message.total {
            return Err(PieceError::Overrun(message.total));
        }
        if message.frames.len() + buffers.len() > MAX_FRAMES {
            return Err(PieceError::TooManyFrames);
        }
        let last = buffers.len() - 1;
        for (i, buffer) in buffers.into_iter().enumerate() {
            let goes_on = i == last && piece.last_continues;
            if message.partial.is_empty() && !goes_on {
                // A whole frame in one buffer keeps its own allocation.
                message.frames.push(buffer);
                continue;
            }
            message.partial.extend_from_slice(&buffer);
            if !goes_on {
                message
                    .frames
                    .push(Bytes::from(std::mem::take(&mut message.partial)));
            }
        }
        message.next += 1;
        if message.next < message.count {
            return Ok(None);
        }
        if message.received != message.total || !message.partial.is_empty() {
            return Err(PieceError::Short {
                received: message.received,
                total: message.total,
            });
        }
        Ok(Some(std::mem::take(&mut message.frames)))
    }
}

#[cfg(test)]
mod tests;
