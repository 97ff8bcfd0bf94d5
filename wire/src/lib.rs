//! The wire layer of rustpx, shared by the kernel's Jupyter front end and the engine link.
//!
//! It knows how a Jupyter message is split into ZeroMQ frames (`<IDS|MSG>` framing) and how each
//! message is signed with HMAC-SHA256, and nothing about what the messages mean. Keeping signing
//! and framing in one crate means there is exactly one place where a signature is checked, so the
//! kernel and the engines cannot disagree on what a valid message is. The engine link, which may
//! cross a network, also seals its messages' content and buffers ([`LinkCipher`]).
//! Engines on the kernel's host read the hub's Unix socket with [`ZmtpDealer`], their own ZMTP
//! reader, instead of libzmq (one thread and two hand-offs per message fewer).

mod cipher;
mod error;
mod frame;
mod message;
pub mod replay;
mod sealed;
mod signing;
pub mod socket;
pub mod zmtp;

pub use cipher::{CipherError, LinkCipher};
pub use error::WireError;
pub use frame::{decode, decode_once, encode, DELIMITER};
pub use message::{new_header, WireMessage};
pub use replay::{address_to, check_addressed_to, SeenSignatures, SequenceCheck, Sequencer};
pub use sealed::{decode_sealed, encode_sealed, encode_sealed_carrying, SealedMessage};
pub use signing::Signer;
pub use socket::{Options as SocketOptions, SocketError, SocketType, ZmqSocket};
pub use zmtp::{ZmtpDealer, ZmtpError};

/// Typed Jupyter messages, re-exported so that users of the wire layer agree on one version.
pub use jupyter_protocol;
