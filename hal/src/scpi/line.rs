//! Reading one `\n`-terminated line with a length bound, shared by the client and the simulator.
//!
//! `AsyncBufReadExt::read_line` grows its buffer without limit, so a peer that never sends a
//! newline could make either side allocate without bound. Here a line longer than `max` bytes
//! is an error and the caller drops the connection: after an over-long line there is no
//! trustworthy framing left to resume from.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// SCPI messages are short; 4 KiB is far above any reply this project reads.
pub const MAX_LINE: usize = 4096;

#[derive(Debug)]
pub enum LineError {
    /// The peer closed the connection; `partial` bytes of an unfinished line had arrived.
    Closed {
        partial: usize,
    },
    /// More than `max` bytes arrived without a newline.
    TooLong {
        max: usize,
    },
    Io(std::io::Error),
}

/// The next line without its `\n` (a trailing `\r` is left for [`super::wire::strip_line`]).
/// Not cancel-safe: a caller that drops it mid-line must drop the connection too, which both
/// the client and the simulator do.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await.map_err(LineError::Io)?;
        if buf.is_empty() {
            return Err(LineError::Closed {
                partial: line.len(),
            });
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            if line.len() + pos > max {
                return Err(LineError::TooLong { max });
            }
            line.extend_from_slice(&buf[..pos]);
            reader.consume(pos + 1);
            return Ok(line);
        }
        let n = buf.len();
        if line.len() + n > max {
            return Err(LineError::TooLong { max });
        }
        line.extend_from_slice(buf);
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let mut r: &[u8] = b"one\r\ntwo\nxxxxxxxxxx\n";
        assert_eq!(read_line(&mut r, 8).await.unwrap(), b"one\r");
        assert_eq!(read_line(&mut r, 8).await.unwrap(), b"two");
        assert!(matches!(
            read_line(&mut r, 8).await,
            Err(LineError::TooLong { max: 8 })
        ));
        let mut r: &[u8] = b"abc";
        assert!(matches!(
            read_line(&mut r, 8).await,
            Err(LineError::Closed { partial: 3 })
        ));
        let mut r: &[u8] = b"12345678\n";
        assert_eq!(read_line(&mut r, 8).await.unwrap(), b"12345678");
    }
}
