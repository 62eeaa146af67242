//! [`ScpiClient`]: one SCPI instrument over a raw TCP socket (port 5025 by convention).
//!
//! Every command is followed by draining the instrument's error queue with `SYST:ERR?`, because
//! SCPI reports a bad command only there: an unknown command gets no reply at all. A client
//! that only waited for replies would time out on every typo and never learn why. Draining
//! stops at code 0 or after [`MAX_ERROR_READS`] reads, so a babbling instrument cannot hold
//! the client forever.
//!
//! Every connect, write and read is bounded by the configured timeout, and every reply by
//! [`MAX_LINE`] bytes.
//!
//! Cancel safety: an exchange takes the connection out of its slot and puts it back only when
//! the exchange finished with the stream in step (a reply read for every query sent). If the
//! caller drops the call half-way (the agent's deadline), the connection is dropped with it and
//! closed; it may have held a reply that was still on its way, and reading that as the answer
//! to the next command would be worse than reconnecting. The empty slot is the "dirty" mark:
//! the next call connects afresh. The same happens after a timeout, a reset connection or an
//! over-long line.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::line::{self, LineError, MAX_LINE};
use super::wire::{self, ErrorEntry, WireError};
use crate::device::HalError;

/// Upper bound on `SYST:ERR?` reads after one command. Real queues hold 10 to 30 entries.
pub const MAX_ERROR_READS: usize = 32;

/// What one command produced: its reply (for queries) and the errors it left in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub reply: Option<String>,
    /// Non-zero entries, oldest first.
    pub errors: Vec<ErrorEntry>,
    /// False when the queue still was not empty after [`MAX_ERROR_READS`] reads.
    pub queue_drained: bool,
}

struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// How an exchange failed. `Stale` is a reused connection that the instrument had already
/// closed before any byte of this exchange came back (instruments drop idle sockets, or were
/// restarted): the command most likely never ran, so it is retried once on a fresh connection.
enum Failure {
    Stale(HalError),
    Fatal(HalError),
}

pub struct ScpiClient {
    address: String,
    timeout: Duration,
    slot: Mutex<Option<Connection>>,
}

impl ScpiClient {
    /// A client for `address` (`host:port`). Connects lazily, on the first command.
    pub fn new(address: impl Into<String>, timeout: Duration) -> ScpiClient {
        ScpiClient {
            address: address.into(),
            timeout,
            slot: Mutex::new(None),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `command`, reads its reply if it is a query, then drains the error queue. The
    /// instrument's errors are returned, not raised; [`Self::write`] and [`Self::query`] raise
    /// them.
    pub async fn exchange(&self, command: &str) -> Result<Exchange, HalError> {
        self.check_command(command)?;
        let mut slot = self.slot.lock().await;
        let mut retried = false;
        loop {
            let (mut conn, reused) = match slot.take() {
                Some(c) => (c, true),
                None => (self.open().await?, false),
            };
            match self.run(&mut conn, command).await {
                Ok(ex) => {
                    *slot = Some(conn);
                    return Ok(ex);
                }
                Err(Failure::Stale(_)) if reused && !retried => retried = true,
                Err(Failure::Stale(e) | Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// A command without a reply; any error it raised is a [`HalError::Protocol`].
    pub async fn write(&self, command: &str) -> Result<(), HalError> {
        let ex = self.exchange(command).await?;
        self.raise(command, &ex)
    }

    /// A query; its one-line reply without the terminator.
    pub async fn query(&self, command: &str) -> Result<String, HalError> {
        if !expects_reply(command) {
            return Err(HalError::InvalidArgument(format!(
                "{command:?} is not a query (a query ends in '?')"
            )));
        }
        let ex = self.exchange(command).await?;
        self.raise(command, &ex)?;
        ex.reply
            .ok_or_else(|| HalError::Protocol(format!("{}: no reply to {command}", self.address)))
    }

    pub async fn query_number(&self, command: &str) -> Result<f64, HalError> {
        let reply = self.query(command).await?;
        wire::parse_number(&reply).map_err(|e| self.malformed(command, e))
    }

    pub async fn query_integer(&self, command: &str) -> Result<i64, HalError> {
        let reply = self.query(command).await?;
        wire::parse_integer(&reply).map_err(|e| self.malformed(command, e))
    }

    pub async fn query_bool(&self, command: &str) -> Result<bool, HalError> {
        let reply = self.query(command).await?;
        wire::parse_bool(&reply).map_err(|e| self.malformed(command, e))
    }

    pub async fn query_idn(&self) -> Result<wire::Identity, HalError> {
        let reply = self.query("*IDN?").await?;
        wire::parse_idn(&reply).map_err(|e| self.malformed("*IDN?", e))
    }

    /// Drops the connection, if any; the next command reconnects.
    pub async fn disconnect(&self) {
        self.slot.lock().await.take();
    }

    fn check_command(&self, command: &str) -> Result<(), HalError> {
        if command.contains(['\n', '\r']) {
            return Err(HalError::InvalidArgument(format!(
                "{command:?}: a command must be one line"
            )));
        }
        if command.trim().is_empty() || command.len() > MAX_LINE {
            return Err(HalError::InvalidArgument(format!(
                "a command must have 1 to {MAX_LINE} bytes, found {}",
                command.len()
            )));
        }
        Ok(())
    }

    fn raise(&self, command: &str, ex: &Exchange) -> Result<(), HalError> {
        if ex.errors.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = ex.errors.iter().map(ErrorEntry::to_string).collect();
        let more = if ex.queue_drained { "" } else { " (and more)" };
        Err(HalError::Protocol(format!(
            "{}: {command} raised {}{more}",
            self.address,
            list.join("; ")
        )))
    }

    fn malformed(&self, command: &str, e: WireError) -> HalError {
        HalError::Protocol(format!("{}: reply to {command}: {e}", self.address))
    }

    fn ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    async fn open(&self) -> Result<Connection, HalError> {
        let stream =
            match tokio::time::timeout(self.timeout, TcpStream::connect(&self.address)).await {
                Err(_) => {
                    return Err(HalError::Timeout(format!(
                        "{}: connect not answered within {} ms",
                        self.address,
                        self.ms()
                    )))
                }
                Ok(Err(e)) => return Err(self.connect_error(e)),
                Ok(Ok(s)) => s,
            };
        // Commands are small and each waits for its answer: Nagle's delay would only add
        // latency to every round trip.
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(Connection {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    fn connect_error(&self, e: std::io::Error) -> HalError {
        match e.kind() {
            ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::ConnectionReset => {
                HalError::Vanished(format!("{}: connect: {e}", self.address))
            }
            _ => HalError::Io(format!("{}: connect: {e}", self.address)),
        }
    }

    async fn run(&self, conn: &mut Connection, command: &str) -> Result<Exchange, Failure> {
        // Until the first byte of an answer arrives, a closed connection is "stale".
        let mut first = true;
        self.send(conn, command).await?;
        let reply = if expects_reply(command) {
            let r = self.receive(conn, command, first).await?;
            first = false;
            Some(r)
        } else {
            None
        };
        let mut errors = Vec::new();
        for _ in 0..MAX_ERROR_READS {
            self.send(conn, "SYST:ERR?").await?;
            let line = self.receive(conn, "SYST:ERR?", first).await?;
            first = false;
            let entry = wire::parse_error_entry(&line)
                .map_err(|e| Failure::Fatal(self.malformed("SYST:ERR?", e)))?;
            if entry.is_empty_queue() {
                return Ok(Exchange {
                    reply,
                    errors,
                    queue_drained: true,
                });
            }
            errors.push(entry);
        }
        Ok(Exchange {
            reply,
            errors,
            queue_drained: false,
        })
    }

    async fn send(&self, conn: &mut Connection, command: &str) -> Result<(), Failure> {
        let mut buf = Vec::with_capacity(command.len() + 1);
        buf.extend_from_slice(command.as_bytes());
        buf.push(b'\n');
        match tokio::time::timeout(self.timeout, conn.writer.write_all(&buf)).await {
            Err(_) => Err(Failure::Fatal(HalError::Timeout(format!(
                "{}: instrument did not take {command} within {} ms",
                self.address,
                self.ms()
            )))),
            Ok(Err(e)) => Err(self.io_failure(command, e, true)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn receive(
        &self,
        conn: &mut Connection,
        command: &str,
        first: bool,
    ) -> Result<String, Failure> {
        let read = line::read_line(&mut conn.reader, MAX_LINE);
        let bytes = match tokio::time::timeout(self.timeout, read).await {
            Err(_) => {
                return Err(Failure::Fatal(HalError::Timeout(format!(
                    "{}: no reply to {command} within {} ms",
                    self.address,
                    self.ms()
                ))))
            }
            Ok(Err(LineError::Closed { partial })) => {
                let e = HalError::Vanished(format!(
                    "{}: connection closed by the instrument while waiting for the reply to {command}",
                    self.address
                ));
                return Err(if first && partial == 0 {
                    Failure::Stale(e)
                } else {
                    Failure::Fatal(e)
                });
            }
            Ok(Err(LineError::TooLong { max })) => {
                return Err(Failure::Fatal(HalError::Protocol(format!(
                    "{}: reply to {command} is longer than {max} bytes",
                    self.address
                ))))
            }
            Ok(Err(LineError::Io(e))) => return Err(self.io_failure(command, e, first)),
            Ok(Ok(bytes)) => bytes,
        };
        match String::from_utf8(bytes) {
            Ok(s) => Ok(wire::strip_line(&s).to_string()),
            Err(e) => Err(Failure::Fatal(HalError::Protocol(format!(
                "{}: reply to {command} is not text: {}",
                self.address,
                wire::quote(&String::from_utf8_lossy(e.as_bytes()))
            )))),
        }
    }

    fn io_failure(&self, command: &str, e: std::io::Error, first: bool) -> Failure {
        match e.kind() {
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => {
                let err = HalError::Vanished(format!(
                    "{}: connection lost during {command}: {e}",
                    self.address
                ));
                if first {
                    Failure::Stale(err)
                } else {
                    Failure::Fatal(err)
                }
            }
            _ => Failure::Fatal(HalError::Io(format!("{}: {command}: {e}", self.address))),
        }
    }
}

/// Whether an instrument answers `command`: a line with a query (a header ending in `?`) among
/// its `;`-separated commands gets exactly one reply line.
pub fn expects_reply(command: &str) -> bool {
    command.split(';').any(|part| {
        part.split_whitespace()
            .next()
            .is_some_and(|header| header.ends_with('?'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_recognised_by_their_header() {
        assert!(expects_reply("*IDN?"));
        assert!(expects_reply("TEC:T?"));
        assert!(expects_reply("TEC:T 25;TEC:T?"));
        assert!(expects_reply(" SENS:CORR:WAV? "));
        assert!(!expects_reply("TEC:T 25"));
        assert!(!expects_reply("*RST;*CLS"));
        assert!(!expects_reply("SYST:COMM \"x?\""));
    }
}
