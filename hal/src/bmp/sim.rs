//! [`BmpSimulator`]: a frame of SpiNN-5 boards behind a simulated BMP, served over UDP as the
//! firmware does, so [`super::BmpBoard`], the agent's `--simulate` default and tests all run
//! the real client and wire code. What each command does is in [`super::sim_frame`].
//!
//! Like a real BMP on a real network it can lose datagrams (each one, in either direction,
//! with `packet_loss`) and deliver a reply twice (`late_duplicate_probability`, the copy
//! arriving `late_duplicate_delay` later); both default to 0 and use a seeded RNG, so a test
//! run repeats. Datagrams longer than 280 bytes are dropped; shorter than a request header,
//! answered with RC_LEN. The power-on reply waits for the FPGA load (`fpga_load_delay`),
//! without stopping the server from answering other requests meanwhile.
//!
//! Faults ([`BmpSimulator::faults`]) change the firmware: `overheat` (cooling fails),
//! `hang` and `vanish` (nothing is answered or done: at the wire level the two look the same),
//! `failing-reset` (power-on and reset pulses are answered but the boards stay dark), `drift`
//! (no effect: SpiNNaker has no calibration), `clear`.
//!
//! The server runs on its own task, returned by [`BmpSimulator::start`]; it ends when that task
//! is aborted or [`BmpSimulator::stop`] is called. Dropping the handle does not stop it, so an
//! agent may keep only the fault handle and the address.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sim_frame::{Frame, SimBoardState, SimFaults};
use super::wire::{reply_seq, ReturnCode, ScpReply, ScpRequest, MAX_DATAGRAM_LEN};
use crate::device::FaultInjector;

/// How the simulated frame starts and how its network behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct BmpSimOptions {
    /// Boards in the frame, 1..=24; all start powered and warm.
    pub boards: u8,
    /// Power-on replies come only after this long.
    pub fpga_load_delay: Duration,
    /// Probability that any one datagram, request or reply, is lost.
    pub packet_loss: f64,
    /// Probability that a reply is sent a second time, `late_duplicate_delay` later.
    pub late_duplicate_probability: f64,
    pub late_duplicate_delay: Duration,
    /// Seeds the sensor noise, the losses and the duplicates.
    pub seed: u64,
}

impl Default for BmpSimOptions {
    fn default() -> Self {
        BmpSimOptions {
            boards: 1,
            fpga_load_delay: Duration::from_millis(1500),
            packet_loss: 0.0,
            late_duplicate_probability: 0.0,
            late_duplicate_delay: Duration::from_millis(50),
            seed: 0x5917_5B3F,
        }
    }
}

impl BmpSimOptions {
    fn check(&self) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        if !(1..=24).contains(&self.boards) {
            return bad(format!("boards: expected 1 to 24, found {}", self.boards));
        }
        for (name, p) in [
            ("packet_loss", self.packet_loss),
            (
                "late_duplicate_probability",
                self.late_duplicate_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name}: expected 0 to 1, found {p}"));
            }
        }
        Ok(())
    }
}

struct Shared {
    frame: Mutex<Frame>,
    faults: Arc<SimFaults>,
    /// Requests that reached the socket, by command (before loss and faults).
    requests: Mutex<BTreeMap<u16, u64>>,
    datagrams: Mutex<u64>,
    stop: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update of plain numbers: keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct BmpSimulator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl BmpSimulator {
    /// Binds `bind` (port 0 picks a free one) and starts serving on a new task.
    pub async fn start(
        bind: SocketAddr,
        options: BmpSimOptions,
    ) -> io::Result<(BmpSimulator, JoinHandle<()>)> {
        options.check()?;
        let socket = UdpSocket::bind(bind).await?;
        let local_addr = socket.local_addr()?;
        let faults = Arc::new(SimFaults::default());
        let shared = Arc::new(Shared {
            frame: Mutex::new(Frame::new(
                options.boards,
                options.fpga_load_delay,
                options.seed,
                faults.clone(),
            )),
            faults,
            requests: Mutex::new(BTreeMap::new()),
            datagrams: Mutex::new(0),
            stop: Notify::new(),
        });
        let server = Server {
            socket,
            shared: shared.clone(),
            rng: SmallRng::seed_from_u64(options.seed ^ 0xD1CE),
            options,
            pending: Vec::new(),
        };
        let task = tokio::spawn(server.run());
        Ok((BmpSimulator { shared, local_addr }, task))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fault handle; it works while the firmware hangs.
    pub fn faults(&self) -> Arc<dyn FaultInjector> {
        self.shared.faults.clone()
    }

    /// Stops the server; its task ends and the socket closes.
    pub fn stop(&self) {
        self.shared.stop.notify_one();
    }

    /// Requests with `command` that reached the simulator, including any then lost or
    /// ignored by a hung firmware: what a client sent.
    pub fn requests(&self, command: u16) -> u64 {
        lock(&self.shared.requests)
            .get(&command)
            .copied()
            .unwrap_or(0)
    }

    /// Every datagram received, well-formed or not.
    pub fn datagrams_received(&self) -> u64 {
        *lock(&self.shared.datagrams)
    }

    /// A board's true state now, to compare with what a client reports.
    pub fn board(&self, board: u8) -> Option<SimBoardState> {
        lock(&self.shared.frame).board_state(board, Instant::now())
    }
}

/// A reply to send later: a power-on waiting for its FPGAs, or a late duplicate.
struct Pending {
    at: Instant,
    peer: SocketAddr,
    bytes: Vec<u8>,
    duplicate: bool,
}

struct Server {
    socket: UdpSocket,
    shared: Arc<Shared>,
    rng: SmallRng,
    options: BmpSimOptions,
    pending: Vec<Pending>,
}

impl Server {
    async fn run(mut self) {
        // Larger than any datagram the BMP accepts, so an oversized one is seen as such.
        let mut buf = vec![0u8; 4 * MAX_DATAGRAM_LEN];
        loop {
            let next = self.pending.iter().map(|p| p.at).min();
            tokio::select! {
                _ = self.shared.stop.notified() => return,
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.send_due().await;
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, peer)) => {
                        let datagram = buf.get(..n).unwrap_or_default().to_vec();
                        self.receive(&datagram, peer).await;
                    }
                    // An ICMP error from an earlier reply to a client that has gone: nothing
                    // to do. Pause a moment so a persistent error cannot spin the loop.
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                },
            }
        }
    }

    fn lost(&mut self) -> bool {
        self.options.packet_loss > 0.0 && self.rng.random::<f64>() < self.options.packet_loss
    }

    async fn receive(&mut self, datagram: &[u8], peer: SocketAddr) {
        *lock(&self.shared.datagrams) += 1;
        if datagram.len() > MAX_DATAGRAM_LEN {
            return;
        }
        let parsed = ScpRequest::parse(datagram).ok();
        if let Some(req) = &parsed {
            *lock(&self.shared.requests).entry(req.command).or_insert(0) += 1;
        }
        if !lock(&self.shared.frame).answers() || self.lost() {
            return;
        }
        let Some(req) = parsed else {
            // Too short for a request: RC_LEN, echoing whatever seq it carried.
            let seq = reply_seq(datagram).unwrap_or(0);
            let reply = ScpReply {
                rc: ReturnCode::Len,
                seq,
                payload: Vec::new(),
            };
            self.deliver(peer, reply.encode(Some(datagram)), false)
                .await;
            return;
        };
        let response = lock(&self.shared.frame).execute(&req, Instant::now());
        if !ScpRequest::reply_expected(datagram) {
            return;
        }
        let payload = if response.rc == ReturnCode::Ok {
            response.payload
        } else {
            Vec::new()
        };
        let bytes = ScpReply {
            rc: response.rc,
            seq: req.seq,
            payload,
        }
        .encode(Some(datagram));
        if response.delay.is_zero() {
            self.deliver(peer, bytes, false).await;
        } else {
            self.pending.push(Pending {
                at: Instant::now() + response.delay,
                peer,
                bytes,
                duplicate: false,
            });
        }
    }

    async fn send_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.at <= now);
        self.pending = later;
        for p in due {
            self.deliver(p.peer, p.bytes, p.duplicate).await;
        }
    }

    /// Sends a reply, unless the firmware now hangs or the network loses it; maybe schedules
    /// a late duplicate of it.
    async fn deliver(&mut self, peer: SocketAddr, bytes: Vec<u8>, duplicate: bool) {
        if !lock(&self.shared.frame).answers() || self.lost() {
            return;
        }
        // A send error (the client's port closed) is the client's problem, as on a real BMP.
        let _ = self.socket.send_to(&bytes, peer).await;
        let p = self.options.late_duplicate_probability;
        if !duplicate && p > 0.0 && self.rng.random::<f64>() < p {
            self.pending.push(Pending {
                at: Instant::now() + self.options.late_duplicate_delay,
                peer,
                bytes,
                duplicate: true,
            });
        }
    }
}
