//! [`BmpClient`]: one BMP over UDP. It numbers requests, matches replies by seq, resends on
//! silence and on the transient return codes, and knows that power-on is slow.
//!
//! One request is outstanding at a time (a BMP is a small microcontroller, and the device has
//! one caller anyway). The socket is bound lazily, on an ephemeral port, and connected to the
//! BMP, so the kernel drops datagrams from anyone else.
//!
//! Cancel safety: a request holds the socket's lock only while it runs. If the caller drops it
//! half-way, the lock is released and the reply may still arrive later; the next request has
//! a new seq, so that stale reply is read and discarded.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::wire::{
    self, command, command_name, info, AdcInfo, ReturnCode, ScpReply, ScpRequest, VersionInfo,
    MAX_DATAGRAM_LEN,
};
use crate::device::HalError;

/// How long to wait for one reply, and how many times to send the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub attempts: u32,
}

/// The client's patience. Defaults are rig's (0.5 s x 5) and a 10 s power-on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    pub timeout: Duration,
    pub attempts: u32,
    /// Power-on replies only after the FPGAs have loaded: one attempt, this long.
    pub power_on_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(500),
            attempts: 5,
            power_on_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientOptions {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: self.timeout,
            attempts: self.attempts.max(1),
        }
    }

    /// No blind retries: a resent power-on would restart the FPGA load it is waiting for.
    pub fn power_on_policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: self.power_on_timeout,
            attempts: 1,
        }
    }
}

/// Counters of what the client has done, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientStats {
    pub requests: u64,
    pub datagrams_sent: u64,
    /// Sends after the first for the same request.
    pub retries: u64,
    /// Datagrams received that were not the outstanding reply: late duplicates, stale
    /// replies to cancelled requests, garbage.
    pub ignored: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    datagrams_sent: AtomicU64,
    retries: AtomicU64,
    ignored: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub struct BmpClient {
    address: SocketAddr,
    options: ClientOptions,
    next_seq: AtomicU16,
    socket: Mutex<Option<UdpSocket>>,
    counters: Counters,
}

/// How one attempt ended without a good reply.
enum Miss {
    Silence,
    Retryable(ReturnCode),
}

impl BmpClient {
    /// A client for the BMP at `address`. Nothing is sent or bound until the first request.
    pub fn new(address: SocketAddr, options: ClientOptions) -> BmpClient {
        BmpClient {
            address,
            options,
            next_seq: AtomicU16::new(0),
            socket: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn options(&self) -> ClientOptions {
        self.options
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            ignored: c.ignored.load(Ordering::Relaxed),
        }
    }

    /// Sends `command` to `board` with the default retry policy; returns the reply payload.
    pub async fn request(
        &self,
        board: u8,
        command: u16,
        args: [u32; 3],
        data: &[u8],
    ) -> Result<Vec<u8>, HalError> {
        self.request_with(board, command, args, data, self.options.policy())
            .await
    }

    /// Sends `command` to `board`; resends the identical bytes (same seq) on silence and on a
    /// retryable return code, up to `policy.attempts` sends. Any other error code is final.
    pub async fn request_with(
        &self,
        board: u8,
        command: u16,
        args: [u32; 3],
        data: &[u8],
        policy: RetryPolicy,
    ) -> Result<Vec<u8>, HalError> {
        let what = format!(
            "BMP {} board {board}: {}",
            self.address,
            command_name(command)
        );
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut req = ScpRequest::new(board, command, seq, args);
        req.data = data.to_vec();
        let bytes = req
            .encode()
            .map_err(|e| HalError::InvalidArgument(format!("{what}: {e}")))?;
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(HalError::InvalidArgument(format!(
                "{what}: request of {} bytes exceeds the BMP's {MAX_DATAGRAM_LEN}-byte datagram limit",
                bytes.len()
            )));
        }
        bump(&self.counters.requests);

        let mut guard = self.socket.lock().await;
        if guard.is_none() {
            *guard = Some(self.bind().await?);
        }
        let Some(socket) = guard.as_ref() else {
            return Err(HalError::Io(format!("{what}: no socket")));
        };
        self.exchange(socket, &what, &bytes, seq, policy).await
    }

    async fn bind(&self) -> Result<UdpSocket, HalError> {
        let local: IpAddr = match self.address {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let io = |e: std::io::Error| HalError::Io(format!("BMP {}: {e}", self.address));
        let socket = UdpSocket::bind(SocketAddr::new(local, 0))
            .await
            .map_err(io)?;
        socket.connect(self.address).await.map_err(io)?;
        Ok(socket)
    }

    async fn send(&self, socket: &UdpSocket, what: &str, bytes: &[u8]) -> Result<bool, HalError> {
        // A connected UDP socket reports an earlier ICMP "port unreachable" on the next call,
        // without sending: note it and send again.
        let mut refused = false;
        for _ in 0..2 {
            match socket.send(bytes).await {
                Ok(_) => {
                    bump(&self.counters.datagrams_sent);
                    return Ok(refused);
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
                Err(e) => return Err(HalError::Io(format!("{what}: send: {e}"))),
            }
        }
        Ok(refused)
    }

    async fn exchange(
        &self,
        socket: &UdpSocket,
        what: &str,
        bytes: &[u8],
        seq: u16,
        policy: RetryPolicy,
    ) -> Result<Vec<u8>, HalError> {
        // Room for any datagram up to the limit and then some, so an oversized one is seen
        // as oversized rather than silently truncated into something plausible.
        let mut buf = [0u8; 2 * MAX_DATAGRAM_LEN];
        let attempts = policy.attempts.max(1);
        let mut last_rc = None;
        let mut malformed = None;
        let mut refused_every_time = true;
        for attempt in 0..attempts {
            if attempt > 0 {
                bump(&self.counters.retries);
            }
            let mut refused = self.send(socket, what, bytes).await?;
            let deadline = Instant::now() + policy.timeout;
            let miss = loop {
                let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break Miss::Silence,
                    Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                        refused = true;
                        continue;
                    }
                    Ok(Err(e)) => return Err(HalError::Io(format!("{what}: receive: {e}"))),
                    Ok(Ok(n)) => n,
                };
                let datagram = buf.get(..n).unwrap_or_default();
                if n > MAX_DATAGRAM_LEN || wire::reply_seq(datagram) != Some(seq) {
                    bump(&self.counters.ignored);
                    continue;
                }
                match ScpReply::parse(datagram) {
                    Ok(r) if r.rc == ReturnCode::Ok => return Ok(r.payload),
                    Ok(r) if r.rc.is_retryable() => break Miss::Retryable(r.rc),
                    Ok(r) => {
                        return Err(HalError::Protocol(format!("{what}: BMP answered {}", r.rc)))
                    }
                    Err(e) => {
                        // Our seq but not a reply we can read: keep listening for a good one
                        // (it may be corruption), and report it if none comes.
                        bump(&self.counters.ignored);
                        malformed = Some(e);
                    }
                }
            };
            match miss {
                Miss::Retryable(rc) => {
                    last_rc = Some(rc);
                    refused_every_time = false;
                }
                Miss::Silence => refused_every_time &= refused,
            }
        }
        let tried = format!(
            "after {attempts} attempt{} of {} ms",
            if attempts == 1 { "" } else { "s" },
            policy.timeout.as_millis()
        );
        if let Some(e) = malformed {
            return Err(HalError::Protocol(format!(
                "{what}: malformed reply ({e}) and no good one {tried}"
            )));
        }
        if let Some(rc) = last_rc {
            return Err(HalError::Protocol(format!(
                "{what}: BMP still answered {rc} {tried}"
            )));
        }
        if refused_every_time {
            return Err(HalError::Vanished(format!(
                "{what}: nothing listening (ICMP port unreachable) {tried}"
            )));
        }
        Err(HalError::Timeout(format!("{what}: no reply {tried}")))
    }

    pub async fn version(&self, board: u8) -> Result<VersionInfo, HalError> {
        let p = self.request(board, command::VER, [0; 3], &[]).await?;
        VersionInfo::parse(&p)
            .map_err(|e| HalError::Protocol(format!("BMP {} board {board}: {e}", self.address)))
    }

    pub async fn adc(&self, board: u8) -> Result<AdcInfo, HalError> {
        let p = self
            .request(board, command::BMP_INFO, [info::ADC, 0, 0], &[])
            .await?;
        AdcInfo::parse(&p)
            .map_err(|e| HalError::Protocol(format!("BMP {} board {board}: {e}", self.address)))
    }

    /// Powers the boards in `mask` on: addressed to board 0 (a firmware bug otherwise), sent
    /// once, and waited for as long as the FPGAs take to load.
    pub async fn power_on(&self, mask: u32) -> Result<(), HalError> {
        self.request_with(
            0,
            command::POWER,
            [1, mask, 0],
            &[],
            self.options.power_on_policy(),
        )
        .await
        .map(drop)
    }

    /// Powers the boards in `mask` off. Idempotent and answered at once, so it is retried.
    pub async fn power_off(&self, mask: u32) -> Result<(), HalError> {
        self.request(0, command::POWER, [0, mask, 0], &[])
            .await
            .map(drop)
    }

    /// CMD_RESET on the boards in `mask`, sent to `board`: `code` 0 release, 1 hold, 2 pulse,
    /// plus 4 to reset the FPGAs too.
    pub async fn reset(&self, board: u8, mask: u32, code: u32) -> Result<(), HalError> {
        self.request(board, command::RESET, [code, mask, 0], &[])
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmp::sim::{BmpSimOptions, BmpSimulator};

    #[tokio::test]
    async fn seq_numbers_wrap_and_requests_keep_matching() {
        let (sim, task) =
            BmpSimulator::start("127.0.0.1:0".parse().unwrap(), BmpSimOptions::default())
                .await
                .unwrap();
        let c = BmpClient::new(sim.local_addr(), ClientOptions::default());
        c.next_seq.store(0xFFFE, Ordering::Relaxed);
        for _ in 0..4 {
            c.adc(0).await.unwrap();
        }
        assert_eq!(c.next_seq.load(Ordering::Relaxed), 2);
        assert_eq!(c.stats().retries, 0);
        task.abort();
    }

    #[test]
    fn power_on_is_never_retried() {
        let o = ClientOptions {
            attempts: 0,
            ..ClientOptions::default()
        };
        assert_eq!(o.policy().attempts, 1);
        assert_eq!(
            o.power_on_policy(),
            RetryPolicy {
                timeout: Duration::from_secs(10),
                attempts: 1
            }
        );
    }
}
