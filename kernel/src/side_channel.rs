//! The opening of a local side channel (the evaluator's re-run door, the px bridge): one token
//! line, bounded in length and in time.
//!
//! Only this user can reach the sockets (see [`crate::private_dir`]); the bounds make sure that
//! even a confused or hostile process of the same user cannot make the kernel hold memory or a
//! thread for a line that never ends.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The longest token line taken (tokens are 32 hex digits).
pub const TOKEN_LINE_MAX: usize = 128;

/// How long the whole token line may take to arrive.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);

/// Why a connection was not let in.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no token line within {0:?}")]
    TooSlow(Duration),
    #[error("a token line longer than {TOKEN_LINE_MAX} bytes")]
    TooLong,
    #[error("a wrong token")]
    WrongToken,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads the first line of `stream` (byte by byte, so nothing after it is consumed) and checks
/// it against `token`, within [`HANDSHAKE_DEADLINE`] for the whole line.
pub fn check_token(stream: &UnixStream, token: &str) -> Result<(), HandshakeError> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let mut line = Vec::with_capacity(64);
    let mut reader = stream;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(HandshakeError::TooSlow(HANDSHAKE_DEADLINE))?;
        stream.set_read_timeout(Some(left))?;
        let mut byte = [0u8; 1];
        match reader.read(&mut byte) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= TOKEN_LINE_MAX => return Err(HandshakeError::TooLong),
            Ok(_) => line.push(byte[0]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HandshakeError::TooSlow(HANDSHAKE_DEADLINE))
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    stream.set_read_timeout(None)?;
    if line.strip_suffix(b"\r").unwrap_or(&line) == token.as_bytes() {
        Ok(())
    } else {
        Err(HandshakeError::WrongToken)
    }
}

/// Splits a channel's `PATH TOKEN` spec (the path may hold spaces; the token never does).
pub fn split_spec(spec: &str) -> (&str, &str) {
    spec.rsplit_once(' ').unwrap_or((spec, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_right_token_opens_and_the_rest_of_the_stream_is_untouched() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"secret\nLOAD_AND_RUN a b\n").unwrap();
        check_token(&server, "secret").unwrap();
        let mut rest = String::new();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        (&server).read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "LOAD_AND_RUN a b\n");
    }

    #[test]
    fn a_wrong_long_or_slow_token_is_refused() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"guess\n").unwrap();
        assert!(matches!(
            check_token(&server, "secret"),
            Err(HandshakeError::WrongToken)
        ));
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(&[b'x'; 4096]).unwrap();
        assert!(matches!(
            check_token(&server, "secret"),
            Err(HandshakeError::TooLong)
        ));
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"sec").unwrap();
        let started = Instant::now();
        assert!(matches!(
            check_token(&server, "secret"),
            Err(HandshakeError::TooSlow(_))
        ));
        assert!(started.elapsed() < HANDSHAKE_DEADLINE + Duration::from_secs(1));
    }

    #[test]
    fn a_spec_splits_at_its_last_space() {
        assert_eq!(
            split_spec("/tmp/a b/c.sock tok"),
            ("/tmp/a b/c.sock", "tok")
        );
    }
}
