//! The fleet-wide blast radius of automatic remediation: before a destructive step (hard
//! reset, power cycle, disable, killing a process) an agent's remediation engine asks this
//! collector for a lease, and acts only with one. [`LeaseBudget`] decides; the gRPC service
//! (`service.rs`) converts requests and answers, logs every decision and counts it for
//! `/metrics`.
//!
//! The rules, checked in this order for each request:
//!
//! 1. The same `(node, device, request_id)` as an active lease (a retry after a lost reply)
//!    gets that lease again, whatever else holds.
//! 2. Circuit breaker: when more distinct devices ask within `window` than the window budget
//!    allows, more devices are failing at once than automation should touch (a bad firmware
//!    push, a cooling failure, a fault in the collector's own view): the breaker opens and
//!    every request is refused until `cooldown` after the storm ends. The storm has ended when
//!    no request has found the excess for `cooldown`; the engine retries a refused device
//!    every second, so a storm lasts while more devices than the budget are still failing,
//!    and a device that recovered stops counting once its last request leaves the window.
//!    (NVIDIA's NVSentinel trips on a share of nodes within a window; Kubernetes' node
//!    healthcheck waits a storm cooldown after health returns. This does both.)
//! 3. A device holding an active lease gets no second one (`busy`).
//! 4. At most `max_concurrent` leases at once.
//! 5. At most `window_budget = max(1, floor(max_fraction × devices held))` grants within
//!    the sliding `window`; released leases still count, since the point is the rate.
//!
//! A lease not released within `ttl` is freed (its agent may have died mid-step). Expiry is
//! lazy: every call first drops what has expired, so nothing needs a timer.
//!
//! Time is a parameter (`now`) of every method, never read here, so the tests run the clock
//! forward by adding to an `Instant` instead of sleeping. The budget lives in memory: a
//! restarted collector starts with no leases and a closed breaker (agents holding leases of
//! the old process finish their steps; their releases are answered `released = false`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::LeasesConfig;

/// Distinct devices remembered as asking within the window. Beyond this many, a new device is
/// counted as a storm without being remembered: no real fleet has that many devices failing at
/// once, and the memory of a misbehaving client stays bounded.
const MAX_TRACKED_ASKERS: usize = 100_000;

/// What a destructive step asks for; the fields are checked (non-empty, bounded) by the
/// service before they get here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAsk {
    pub node: String,
    pub device: String,
    pub policy: String,
    pub action: String,
    pub request_id: String,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub node: String,
    pub device: String,
    pub policy: String,
    pub action: String,
    pub request_id: String,
    pub granted_at: Instant,
    pub expires_at: Instant,
}

/// Why a request was refused; `label` is the `reason` label on
/// `health_collector_lease_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConcurrent,
    Window,
    Breaker,
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::MaxConcurrent,
        Refusal::Window,
        Refusal::Breaker,
        Refusal::Busy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConcurrent => "max_concurrent",
            Refusal::Window => "window",
            Refusal::Breaker => "breaker",
            Refusal::Busy => "busy",
        }
    }

    fn index(self) -> usize {
        match self {
            Refusal::MaxConcurrent => 0,
            Refusal::Window => 1,
            Refusal::Breaker => 2,
            Refusal::Busy => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `again`: the same request was granted earlier and the lease is still active.
    Granted {
        lease_id: String,
        ttl: Duration,
        again: bool,
    },
    Refused {
        why: Refusal,
        reason: String,
    },
}

/// The verdict and the state of the budget after it, for the agent's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub active: usize,
    pub max_concurrent: usize,
    pub granted_in_window: usize,
    pub window_budget: usize,
    pub breaker_open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    Released(Lease),
    /// Not active: already released, expired, or granted by an earlier collector process.
    Unknown,
    /// Active, but held by another node: not released (a stale id from before a collector
    /// restart must not free another node's lease).
    OtherNode {
        holder: String,
    },
}

/// What `/metrics` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub active: usize,
    pub breaker_open: bool,
    pub grants_total: u64,
    /// Per refusal reason, in [`Refusal::ALL`] order.
    pub refusals_total: [(Refusal, u64); 4],
}

/// The budget: active leases, the window's grants and askers, the breaker, and the counters.
pub struct LeaseBudget {
    limits: LeasesConfig,
    /// Makes lease ids unique across collector restarts.
    id_prefix: String,
    next_id: u64,
    /// By lease id; at most `max_concurrent` entries, so scanning it is cheap.
    active: BTreeMap<String, Lease>,
    /// When each grant within the window was made, oldest first.
    grants: VecDeque<Instant>,
    /// The last request of each device that asked within the window.
    askers: HashMap<(String, String), Instant>,
    /// The last request that found more devices asking than the window budget.
    storm_last: Option<Instant>,
    /// Whether the breaker was open at the last call, to log when it closes.
    breaker_was_open: bool,
    grants_total: u64,
    refusals_total: [u64; 4],
}

impl LeaseBudget {
    /// `id_prefix` goes in front of every lease id; make it differ between collector runs.
    pub fn new(limits: LeasesConfig, id_prefix: &str) -> Self {
        LeaseBudget {
            limits,
            id_prefix: id_prefix.to_string(),
            next_id: 0,
            active: BTreeMap::new(),
            grants: VecDeque::new(),
            askers: HashMap::new(),
            storm_last: None,
            breaker_was_open: false,
            grants_total: 0,
            refusals_total: [0; 4],
        }
    }

    /// `max(1, floor(max_fraction × devices))`: at least one, so a small fleet can still heal.
    pub fn window_budget(&self, devices_held: usize) -> usize {
        // Exact for any fleet the collector can hold (well below 2^52 devices).
        let share = (self.limits.max_fraction.get() * devices_held as f64).floor() as usize;
        share.max(1)
    }

    /// Decides one request; `devices_held` is how many devices the collector holds now.
    pub fn acquire(&mut self, ask: &LeaseAsk, devices_held: usize, now: Instant) -> Decision {
        self.expire(now);
        let budget = self.window_budget(devices_held);
        let verdict = self.verdict(ask, budget, devices_held, now);
        match &verdict {
            Verdict::Granted { again: false, .. } => self.grants_total += 1,
            Verdict::Granted { again: true, .. } => {}
            Verdict::Refused { why, .. } => self.refusals_total[why.index()] += 1,
        }
        Decision {
            verdict,
            active: self.active.len(),
            max_concurrent: self.limits.max_concurrent,
            granted_in_window: self.grants.len(),
            window_budget: budget,
            breaker_open: self.breaker_open(now),
        }
    }

    fn verdict(&mut self, ask: &LeaseAsk, budget: usize, devices: usize, now: Instant) -> Verdict {
        if let Some(lease) = self.active.values().find(|l| {
            l.node == ask.node && l.device == ask.device && l.request_id == ask.request_id
        }) {
            return Verdict::Granted {
                lease_id: lease.id.clone(),
                ttl: lease.expires_at.saturating_duration_since(now),
                again: true,
            };
        }
        let asking = self.note_asker(ask, now);
        if asking > budget {
            if self
                .storm_last
                .is_none_or(|t| !self.within_cooldown(t, now))
            {
                tracing::warn!(target: "leases", devices_asking = asking, window_budget = budget,
                    window = %fmt(self.limits.window), "circuit breaker open: more devices asking for leases than the window budget");
            }
            self.storm_last = Some(now);
            self.breaker_was_open = true;
        }
        if let Some(storm_last) = self
            .storm_last
            .filter(|t| *t == now || self.within_cooldown(*t, now))
        {
            let closes_in = (storm_last + self.limits.cooldown).saturating_duration_since(now);
            return refuse(
                Refusal::Breaker,
                format!(
                    "circuit breaker open: {asking} devices asked for leases within {}, more \
                     than the window budget of {budget} (max_fraction {} of {devices} devices); \
                     no new lease until {} after the storm ends, so not for {} at the earliest",
                    fmt(self.limits.window),
                    self.limits.max_fraction.get(),
                    fmt(self.limits.cooldown),
                    fmt(closes_in)
                ),
            );
        }
        if let Some(held) = self
            .active
            .values()
            .find(|l| l.node == ask.node && l.device == ask.device)
        {
            return refuse(
                Refusal::Busy,
                format!(
                    "device {}/{} already holds lease {} (policy {}, {}, request {}) for \
                     another {}; release it first",
                    held.node,
                    held.device,
                    held.id,
                    held.policy,
                    held.action,
                    held.request_id,
                    fmt(held.expires_at.saturating_duration_since(now))
                ),
            );
        }
        if self.active.len() >= self.limits.max_concurrent {
            let mut holders = String::new();
            for l in self.active.values() {
                let sep = if holders.is_empty() { "" } else { ", " };
                let _ = write!(holders, "{sep}{}/{} {}", l.node, l.device, l.action);
            }
            return refuse(
                Refusal::MaxConcurrent,
                format!(
                    "max_concurrent {} reached: {} leases held now ({holders})",
                    self.limits.max_concurrent,
                    self.active.len()
                ),
            );
        }
        if self.grants.len() >= budget {
            let frees_in = self.grants.front().map_or(Duration::ZERO, |oldest| {
                (*oldest + self.limits.window).saturating_duration_since(now)
            });
            return refuse(
                Refusal::Window,
                format!(
                    "window budget reached: {} leases granted within {}, the budget is {budget} \
                     (max_fraction {} of {devices} devices); the oldest leaves the window in {}",
                    self.grants.len(),
                    fmt(self.limits.window),
                    self.limits.max_fraction.get(),
                    fmt(frees_in)
                ),
            );
        }
        self.grant(ask, now)
    }

    fn grant(&mut self, ask: &LeaseAsk, now: Instant) -> Verdict {
        self.next_id += 1;
        let id = format!("{}-{}", self.id_prefix, self.next_id);
        let ttl = self.limits.ttl;
        self.active.insert(
            id.clone(),
            Lease {
                id: id.clone(),
                node: ask.node.clone(),
                device: ask.device.clone(),
                policy: ask.policy.clone(),
                action: ask.action.clone(),
                request_id: ask.request_id.clone(),
                granted_at: now,
                expires_at: now + ttl,
            },
        );
        self.grants.push_back(now);
        Verdict::Granted {
            lease_id: id,
            ttl,
            again: false,
        }
    }

    /// Remembers that this device asked now; returns how many distinct devices asked within
    /// the window.
    fn note_asker(&mut self, ask: &LeaseAsk, now: Instant) -> usize {
        let key = (ask.node.clone(), ask.device.clone());
        if self.askers.len() < MAX_TRACKED_ASKERS || self.askers.contains_key(&key) {
            self.askers.insert(key, now);
            self.askers.len()
        } else {
            usize::MAX
        }
    }

    /// Frees the lease if `node` holds it.
    pub fn release(&mut self, lease_id: &str, node: &str, now: Instant) -> Release {
        self.expire(now);
        match self.active.get(lease_id) {
            None => Release::Unknown,
            Some(lease) if lease.node != node => Release::OtherNode {
                holder: lease.node.clone(),
            },
            Some(_) => self
                .active
                .remove(lease_id)
                .map_or(Release::Unknown, Release::Released),
        }
    }

    pub fn status(&mut self, now: Instant) -> LeaseStatus {
        self.expire(now);
        let count = |why: Refusal| (why, self.refusals_total[why.index()]);
        LeaseStatus {
            active: self.active.len(),
            breaker_open: self.breaker_open(now),
            grants_total: self.grants_total,
            refusals_total: Refusal::ALL.map(count),
        }
    }

    fn breaker_open(&self, now: Instant) -> bool {
        self.storm_last
            .is_some_and(|t| t == now || self.within_cooldown(t, now))
    }

    fn within_cooldown(&self, storm_last: Instant, now: Instant) -> bool {
        now.saturating_duration_since(storm_last) < self.limits.cooldown
    }

    /// Drops expired leases, and grants and askers older than the window; logs a breaker that
    /// has closed since the last call.
    fn expire(&mut self, now: Instant) {
        let window = self.limits.window;
        let expired: Vec<String> = self
            .active
            .values()
            .filter(|l| l.expires_at <= now)
            .map(|l| l.id.clone())
            .collect();
        for id in expired {
            if let Some(l) = self.active.remove(&id) {
                tracing::warn!(target: "leases", lease = %l.id, node = %l.node, device = %l.device,
                    action = %l.action, ttl = %fmt(self.limits.ttl),
                    "lease expired without a release (the agent may have stopped mid-step): freed");
            }
        }
        while self
            .grants
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.grants.pop_front();
        }
        self.askers
            .retain(|_, asked| now.saturating_duration_since(*asked) < window);
        if self.breaker_was_open && !self.breaker_open(now) {
            self.breaker_was_open = false;
            tracing::info!(target: "leases", cooldown = %fmt(self.limits.cooldown),
                "circuit breaker closed: the storm ended a cooldown ago");
        }
    }
}

/// The budget shared by the service (requests) and `/metrics` (scrapes), on the wall clock.
pub struct Leases {
    budget: Mutex<LeaseBudget>,
}

impl Leases {
    pub fn new(limits: LeasesConfig) -> Self {
        // Seconds since the epoch in hex: short, and different for each collector start.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Leases {
            budget: Mutex::new(LeaseBudget::new(limits, &format!("lease-{started:x}"))),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, LeaseBudget> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn acquire(&self, ask: &LeaseAsk, devices_held: usize) -> Decision {
        self.budget().acquire(ask, devices_held, Instant::now())
    }

    pub fn release(&self, lease_id: &str, node: &str) -> Release {
        self.budget().release(lease_id, node, Instant::now())
    }

    pub fn status(&self) -> LeaseStatus {
        self.budget().status(Instant::now())
    }
}

/// A share greater than 0 and at most 1. Never NaN, which is what makes it `Eq`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fraction(f64);

impl Eq for Fraction {}

impl Fraction {
    /// The `[leases] max_fraction` default: a tenth of the fleet.
    pub const DEFAULT: Fraction = Fraction(0.1);

    pub fn new(value: f64) -> Option<Fraction> {
        (value > 0.0 && value <= 1.0).then_some(Fraction(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

fn refuse(why: Refusal, reason: String) -> Verdict {
    Verdict::Refused { why, reason }
}

/// A duration for people: whole seconds ("4m 59s"), or milliseconds below one second.
fn fmt(d: Duration) -> String {
    let shown = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
    };
    humantime::format_duration(shown).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn limits(max_concurrent: usize, max_fraction: f64) -> LeasesConfig {
        LeasesConfig {
            max_concurrent,
            max_fraction: Fraction::new(max_fraction).expect("a valid fraction"),
            window: 5 * MIN,
            cooldown: 5 * MIN,
            ttl: 10 * MIN,
        }
    }

    fn ask(node: &str, device: &str, request_id: &str) -> LeaseAsk {
        LeaseAsk {
            node: node.to_string(),
            device: device.to_string(),
            policy: "thermal".to_string(),
            action: "reset-hard".to_string(),
            request_id: request_id.to_string(),
        }
    }

    /// The lease id of a grant; panics with the reason of a refusal.
    fn granted(d: &Decision) -> String {
        match &d.verdict {
            Verdict::Granted { lease_id, .. } => lease_id.clone(),
            Verdict::Refused { reason, .. } => panic!("refused: {reason}"),
        }
    }

    fn refused(d: &Decision) -> (Refusal, String) {
        match &d.verdict {
            Verdict::Refused { why, reason } => (*why, reason.clone()),
            Verdict::Granted { lease_id, .. } => panic!("granted {lease_id}"),
        }
    }

    #[test]
    fn the_window_budget_is_the_fraction_of_devices_rounded_down_and_at_least_one() {
        let b = LeaseBudget::new(limits(4, 0.1), "t");
        assert_eq!(b.window_budget(0), 1);
        assert_eq!(b.window_budget(9), 1);
        assert_eq!(b.window_budget(19), 1);
        assert_eq!(b.window_budget(20), 2);
        assert_eq!(b.window_budget(1000), 100);
        let all = LeaseBudget::new(limits(4, 1.0), "t");
        assert_eq!(all.window_budget(7), 7);
    }

    #[test]
    fn max_concurrent_is_respected_and_a_release_frees_a_slot() {
        // A large fleet, so only max_concurrent binds.
        let mut b = LeaseBudget::new(limits(2, 1.0), "t");
        let t0 = Instant::now();
        let first = granted(&b.acquire(&ask("n1", "d0", "r0"), 100, t0));
        let second = b.acquire(&ask("n2", "d0", "r0"), 100, t0);
        granted(&second);
        assert_eq!(second.active, 2);
        let third = b.acquire(&ask("n3", "d0", "r0"), 100, t0);
        let (why, reason) = refused(&third);
        assert_eq!(why, Refusal::MaxConcurrent);
        assert!(reason.starts_with("max_concurrent 2 reached"), "{reason}");
        assert!(reason.contains("n1/d0 reset-hard"), "{reason}");
        assert!(!third.breaker_open);

        assert!(matches!(
            b.release(&first, "n1", t0 + MIN),
            Release::Released(l) if l.device == "d0" && l.node == "n1"
        ));
        granted(&b.acquire(&ask("n3", "d0", "r0"), 100, t0 + MIN));
        let status = b.status(t0 + MIN);
        assert_eq!(status.active, 2);
        assert_eq!(status.grants_total, 3);
        assert_eq!(status.refusals_total[0], (Refusal::MaxConcurrent, 1));
    }

    #[test]
    fn released_leases_still_count_against_the_window_until_they_leave_it() {
        // 20 devices at 0.1: two grants per five minutes; one device asks for rung after rung.
        let mut b = LeaseBudget::new(limits(4, 0.1), "t");
        let t0 = Instant::now();
        let a = granted(&b.acquire(&ask("n1", "d0", "rung0"), 20, t0));
        b.release(&a, "n1", t0 + MIN);
        let c = granted(&b.acquire(&ask("n1", "d0", "rung1"), 20, t0 + MIN));
        b.release(&c, "n1", t0 + 2 * MIN);
        let refusal = b.acquire(&ask("n1", "d0", "rung2"), 20, t0 + 2 * MIN);
        let (why, reason) = refused(&refusal);
        assert_eq!(why, Refusal::Window, "{reason}");
        assert!(reason.contains("2 leases granted within 5m"), "{reason}");
        assert!(
            reason.contains("the oldest leaves the window in 3m"),
            "{reason}"
        );
        assert_eq!(refusal.granted_in_window, 2);
        assert_eq!(refusal.window_budget, 2);
        assert_eq!(refusal.active, 0);
        // One device asking again is no storm.
        assert!(!refusal.breaker_open);
        // Once the first grant is five minutes old, there is room again.
        granted(&b.acquire(&ask("n1", "d0", "rung2"), 20, t0 + 5 * MIN));
    }

    #[test]
    fn a_storm_opens_the_breaker_until_a_cooldown_after_its_last_request() {
        // Budget 2 (20 devices at 0.1); three devices failing at once are a storm.
        let mut b = LeaseBudget::new(limits(4, 0.1), "t");
        let t0 = Instant::now();
        granted(&b.acquire(&ask("n1", "d0", "r"), 20, t0));
        granted(&b.acquire(&ask("n2", "d0", "r"), 20, t0));
        let third = b.acquire(&ask("n3", "d0", "r"), 20, t0 + Duration::from_secs(10));
        let (why, reason) = refused(&third);
        assert_eq!(why, Refusal::Breaker);
        assert!(third.breaker_open);
        assert!(
            reason
                .contains("3 devices asked for leases within 5m, more than the window budget of 2"),
            "{reason}"
        );
        assert!(reason.contains("not for 5m at the earliest"), "{reason}");

        // n3 keeps retrying, and so does a fourth device: the storm goes on while more than two
        // devices ask within the window, and every request is refused.
        let mut t = t0 + Duration::from_secs(10);
        for _ in 0..4 {
            t += MIN;
            assert_eq!(
                refused(&b.acquire(&ask("n3", "d0", "r"), 20, t)).0,
                Refusal::Breaker
            );
            assert_eq!(
                refused(&b.acquire(&ask("n4", "d0", "r"), 20, t)).0,
                Refusal::Breaker
            );
        }
        // At t0 + 5m10s n1 and n2 (last asked at t0) have left the window; n3 and n4 alone are
        // within the budget, so the storm ended with the requests at t0 + 4m10s. Requests after
        // it are refused but no longer extend it.
        let storm_end = t;
        assert_eq!(
            refused(&b.acquire(&ask("n3", "d0", "r"), 20, storm_end + MIN)).0,
            Refusal::Breaker
        );
        // Not closed a second before the cooldown after the storm's end is over...
        assert!(
            b.status(storm_end + 5 * MIN - Duration::from_secs(1))
                .breaker_open
        );
        // ...and closed at it.
        assert!(!b.status(storm_end + 5 * MIN).breaker_open);
        let after = b.acquire(&ask("n3", "d0", "r"), 20, storm_end + 5 * MIN);
        granted(&after);
        assert!(!after.breaker_open);
        assert_eq!(
            b.status(storm_end + 5 * MIN).refusals_total[2],
            (Refusal::Breaker, 10)
        );
    }

    #[test]
    fn with_no_cooldown_the_breaker_is_open_exactly_while_the_storm_lasts() {
        let mut b = LeaseBudget::new(
            LeasesConfig {
                cooldown: Duration::ZERO,
                ..limits(4, 0.1)
            },
            "t",
        );
        let t0 = Instant::now();
        granted(&b.acquire(&ask("n1", "d0", "r"), 10, t0));
        assert_eq!(
            refused(&b.acquire(&ask("n2", "d0", "r"), 10, t0)).0,
            Refusal::Breaker
        );
        assert!(!b.status(t0 + Duration::from_secs(1)).breaker_open);
        // n1 still asked within the window: n2 asking again is still a storm of two.
        assert_eq!(
            refused(&b.acquire(&ask("n2", "d0", "r"), 10, t0 + MIN)).0,
            Refusal::Breaker
        );
        granted(&b.acquire(&ask("n2", "d0", "r"), 10, t0 + 5 * MIN));
    }

    #[test]
    fn a_lease_not_released_within_its_ttl_is_freed() {
        let mut b = LeaseBudget::new(limits(1, 1.0), "t");
        let t0 = Instant::now();
        let lease = b.acquire(&ask("n1", "d0", "r"), 10, t0);
        assert!(matches!(&lease.verdict, Verdict::Granted { ttl, .. } if *ttl == 10 * MIN));
        let before = b.acquire(
            &ask("n2", "d0", "r"),
            10,
            t0 + 10 * MIN - Duration::from_secs(1),
        );
        assert_eq!(refused(&before).0, Refusal::MaxConcurrent);
        assert_eq!(b.status(t0 + 10 * MIN).active, 0);
        granted(&b.acquire(&ask("n2", "d0", "r"), 10, t0 + 10 * MIN));
        // The expired id is gone: releasing it now frees nothing.
        assert_eq!(
            b.release(&granted(&lease), "n1", t0 + 11 * MIN),
            Release::Unknown
        );
    }

    #[test]
    fn the_same_request_again_gets_the_same_lease_and_another_one_is_busy() {
        let mut b = LeaseBudget::new(limits(1, 1.0), "t");
        let t0 = Instant::now();
        let first = b.acquire(&ask("n1", "d0", "r1"), 10, t0);
        let id = granted(&first);
        let again = b.acquire(&ask("n1", "d0", "r1"), 10, t0 + MIN);
        assert_eq!(
            again.verdict,
            Verdict::Granted {
                lease_id: id.clone(),
                ttl: 9 * MIN,
                again: true
            }
        );
        // Counted once, and the retry did not take a second slot.
        assert_eq!(b.status(t0 + MIN).grants_total, 1);
        assert_eq!(again.active, 1);

        let (why, reason) = refused(&b.acquire(&ask("n1", "d0", "r2"), 10, t0 + MIN));
        assert_eq!(why, Refusal::Busy);
        assert!(
            reason.starts_with(&format!("device n1/d0 already holds lease {id}")),
            "{reason}"
        );
        // Another node's request id is another request, even when the id is the same.
        let (why, _) = refused(&b.acquire(&ask("n2", "d0", "r1"), 10, t0 + MIN));
        assert_eq!(why, Refusal::MaxConcurrent);

        // Once released, the same request id is a new request.
        assert!(matches!(
            b.release(&id, "n1", t0 + 2 * MIN),
            Release::Released(_)
        ));
        let renewed = granted(&b.acquire(&ask("n1", "d0", "r1"), 10, t0 + 2 * MIN));
        assert_ne!(renewed, id);
    }

    #[test]
    fn only_the_holding_node_releases_and_unknown_ids_are_fine() {
        let mut b = LeaseBudget::new(limits(4, 1.0), "run7");
        let t0 = Instant::now();
        let id = granted(&b.acquire(&ask("n1", "d0", "r"), 10, t0));
        assert!(id.starts_with("run7-"), "{id}");
        assert_eq!(
            b.release(&id, "n2", t0),
            Release::OtherNode {
                holder: "n1".to_string()
            }
        );
        assert_eq!(b.status(t0).active, 1);
        assert_eq!(b.release("run6-1", "n1", t0), Release::Unknown);
        assert!(matches!(b.release(&id, "n1", t0), Release::Released(_)));
        assert_eq!(b.release(&id, "n1", t0), Release::Unknown);
    }
}
