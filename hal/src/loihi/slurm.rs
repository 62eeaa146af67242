//! A board's state in SLURM, read with `sinfo -N -h -n NODE -o "%N %T"`.
//!
//! Where Loihi 2 boards are scheduled through SLURM (Lava's `slurm.py` reads them with
//! `sinfo -N` and refuses boards marked down), the scheduler's view is part of the board's
//! health: a board SLURM has drained takes no work, whatever its sensors say. `sinfo` runs
//! through the plugin [`runner`](crate::plugin::runner), so the same deadline, process-group
//! kill and output caps apply: a `sinfo` stuck on an unreachable controller cannot stall the
//! agent or leave processes behind.
//!
//! A state is a base state, optionally several joined by `+` (`idle+drain`), in long (`%T`:
//! `allocated`, `drained`) or short (`%t`: `alloc`, `drain`) form, followed by flag characters:
//!
//! | flag | meaning (sinfo(1), NODE STATE CODES) |
//! |---|---|
//! | `*` | not responding; gets no new work |
//! | `~` | powered off (power saving) |
//! | `#` | being powered up or configured |
//! | `!` | pending power down |
//! | `%` | being powered down |
//! | `$` | in a maintenance reservation |
//! | `@` | pending reboot |
//! | `^` | reboot issued |
//! | `-` | planned by the backfill scheduler for a higher-priority job |
//!
//! Judgement: a board someone took out of service on purpose, `drain`/`drained`/`draining`, the
//! `maint` base state or the `$` flag (a maintenance reservation), → MAINTENANCE at info
//! severity, whatever else the state says (`down+drain` is the usual way to take a board for
//! repairs): shown, never paged, and the agent's policies leave the board alone. Otherwise
//! `down` or `fail`/`failing` → DEVICE_UNRESPONSIVE, critical; a usable state (`idle`, `alloc`,
//! `mix`, `comp`, `resv`, `plnd`) is fine unless flagged `*` (not responding:
//! DEVICE_UNRESPONSIVE, warning); anything else (`future`, power and reboot states, `unknown`,
//! names this code does not know) → DEVICE_ERROR at info severity, so it is shown but does not
//! change the board's health. The MAINTENANCE message names the SLURM state as printed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::device::HalError;
use crate::model::{Condition, ConditionCode, Severity};
use crate::plugin::runner::{VendorCommand, Verdict};

pub const DEFAULT_SINFO: &str = "/usr/bin/sinfo";
/// `sinfo`'s answer for one node is one short line per partition.
const MAX_SINFO_OUTPUT: usize = 64 * 1024;

/// A base node state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BaseState {
    Idle,
    Allocated,
    Mixed,
    Completing,
    Reserved,
    Planned,
    Down,
    Drained,
    Draining,
    Fail,
    Failing,
    Maintenance,
    Future,
    PoweredDown,
    PoweringDown,
    PoweringUp,
    Rebooting,
    Invalid,
    Blocked,
    Unknown,
    /// A name this code does not know (a newer SLURM), lower-cased.
    Other(String),
}

impl BaseState {
    pub fn parse(name: &str) -> BaseState {
        match name.to_ascii_lowercase().as_str() {
            "idle" => BaseState::Idle,
            "alloc" | "allocated" => BaseState::Allocated,
            "mix" | "mixed" => BaseState::Mixed,
            "comp" | "completing" => BaseState::Completing,
            "resv" | "reserved" => BaseState::Reserved,
            "plnd" | "planned" => BaseState::Planned,
            "down" => BaseState::Down,
            "drain" | "drained" => BaseState::Drained,
            "drng" | "draining" => BaseState::Draining,
            "fail" => BaseState::Fail,
            "failg" | "failing" => BaseState::Failing,
            "maint" => BaseState::Maintenance,
            "futr" | "future" => BaseState::Future,
            "pow_dn" | "power_down" | "powered_down" => BaseState::PoweredDown,
            "powering_down" => BaseState::PoweringDown,
            "pow_up" | "powering_up" => BaseState::PoweringUp,
            "boot" | "reboot" | "reboot_issued" | "reboot_requested" => BaseState::Rebooting,
            "inval" | "invalid" => BaseState::Invalid,
            "block" | "blocked" => BaseState::Blocked,
            "unk" | "unknown" => BaseState::Unknown,
            other => BaseState::Other(other.to_string()),
        }
    }

    /// Its long name, as `%T` prints it.
    pub fn name(&self) -> &str {
        match self {
            BaseState::Idle => "idle",
            BaseState::Allocated => "allocated",
            BaseState::Mixed => "mixed",
            BaseState::Completing => "completing",
            BaseState::Reserved => "reserved",
            BaseState::Planned => "planned",
            BaseState::Down => "down",
            BaseState::Drained => "drained",
            BaseState::Draining => "draining",
            BaseState::Fail => "fail",
            BaseState::Failing => "failing",
            BaseState::Maintenance => "maint",
            BaseState::Future => "future",
            BaseState::PoweredDown => "powered_down",
            BaseState::PoweringDown => "powering_down",
            BaseState::PoweringUp => "powering_up",
            BaseState::Rebooting => "reboot",
            BaseState::Invalid => "inval",
            BaseState::Blocked => "blocked",
            BaseState::Unknown => "unknown",
            BaseState::Other(name) => name,
        }
    }

    fn usable(&self) -> bool {
        matches!(
            self,
            BaseState::Idle
                | BaseState::Allocated
                | BaseState::Mixed
                | BaseState::Completing
                | BaseState::Reserved
                | BaseState::Planned
        )
    }
}

/// A flag character after the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateFlag {
    NotResponding,
    PoweredOff,
    PoweringUp,
    PendingPowerDown,
    PoweringDown,
    MaintenanceReservation,
    PendingReboot,
    RebootIssued,
    PlannedByBackfill,
}

impl StateFlag {
    pub fn from_char(c: char) -> Option<StateFlag> {
        Some(match c {
            '*' => StateFlag::NotResponding,
            '~' => StateFlag::PoweredOff,
            '#' => StateFlag::PoweringUp,
            '!' => StateFlag::PendingPowerDown,
            '%' => StateFlag::PoweringDown,
            '$' => StateFlag::MaintenanceReservation,
            '@' => StateFlag::PendingReboot,
            '^' => StateFlag::RebootIssued,
            '-' => StateFlag::PlannedByBackfill,
            _ => return None,
        })
    }

    pub fn as_char(self) -> char {
        match self {
            StateFlag::NotResponding => '*',
            StateFlag::PoweredOff => '~',
            StateFlag::PoweringUp => '#',
            StateFlag::PendingPowerDown => '!',
            StateFlag::PoweringDown => '%',
            StateFlag::MaintenanceReservation => '$',
            StateFlag::PendingReboot => '@',
            StateFlag::RebootIssued => '^',
            StateFlag::PlannedByBackfill => '-',
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            StateFlag::NotResponding => "not responding, gets no new work",
            StateFlag::PoweredOff => "powered off by power saving",
            StateFlag::PoweringUp => "being powered up or configured",
            StateFlag::PendingPowerDown => "pending power down",
            StateFlag::PoweringDown => "being powered down",
            StateFlag::MaintenanceReservation => "in a maintenance reservation",
            StateFlag::PendingReboot => "pending reboot",
            StateFlag::RebootIssued => "reboot issued",
            StateFlag::PlannedByBackfill => "planned by the backfill scheduler",
        }
    }
}

/// A node's state as `sinfo` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub node: String,
    /// The state word as printed, e.g. `drain*`.
    pub raw: String,
    /// Base states, in order (`idle+drain` gives two).
    pub states: Vec<BaseState>,
    /// Flags after the state, in order, without repeats.
    pub flags: Vec<StateFlag>,
}

/// Parses one state word such as `down*`, `idle~`, `mixed+drain-`.
pub fn parse_state(node: &str, word: &str) -> Result<NodeState, String> {
    let base = word.trim_end_matches(|c| StateFlag::from_char(c).is_some());
    let mut flags = Vec::new();
    for c in word[base.len()..].chars() {
        if let Some(f) = StateFlag::from_char(c) {
            if !flags.contains(&f) {
                flags.push(f);
            }
        }
    }
    if base.is_empty() {
        return Err(format!("state {word:?} of node {node:?} has no base state"));
    }
    if let Some(bad) = base
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '+'))
    {
        return Err(format!(
            "state {word:?} of node {node:?} has an unexpected character {bad:?}"
        ));
    }
    let parts: Vec<&str> = base.split('+').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("state {word:?} of node {node:?} has an empty part"));
    }
    Ok(NodeState {
        node: node.to_string(),
        raw: word.to_string(),
        states: parts.into_iter().map(BaseState::parse).collect(),
        flags,
    })
}

/// Picks `node`'s state from `sinfo -N -h -o "%N %T"` output: one `NODE STATE` line per
/// partition the node is in; when they differ, the worst is kept.
pub fn parse_sinfo(stdout: &str, node: &str) -> Result<NodeState, String> {
    let mut worst: Option<(u8, NodeState)> = None;
    for (i, line) in stdout.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, word] = fields[..] else {
            return Err(format!(
                "line {}: expected \"NODE STATE\", found {:?}",
                i + 1,
                line.chars().take(80).collect::<String>()
            ));
        };
        if name != node {
            continue;
        }
        let state = parse_state(node, word).map_err(|e| format!("line {}: {e}", i + 1))?;
        let rank = state.rank();
        if worst.as_ref().is_none_or(|(r, _)| rank > *r) {
            worst = Some((rank, state));
        }
    }
    worst.map(|(_, s)| s).ok_or_else(|| {
        format!("sinfo printed no line for node {node:?}: SLURM does not know this node")
    })
}

impl NodeState {
    /// The condition this state means for `subject` (the board), if any.
    pub fn condition(&self, subject: &str, now: SystemTime) -> Option<Condition> {
        let (code, severity) = self.judgement()?;
        Some(Condition::new(
            code,
            severity,
            subject,
            self.describe(),
            now,
        ))
    }

    fn judgement(&self) -> Option<(ConditionCode, Severity)> {
        let has = |f: &dyn Fn(&BaseState) -> bool| self.states.iter().any(f);
        if self.in_maintenance() {
            return Some((ConditionCode::Maintenance, Severity::Info));
        }
        if has(&|s| matches!(s, BaseState::Down | BaseState::Fail | BaseState::Failing)) {
            return Some((ConditionCode::DeviceUnresponsive, Severity::Critical));
        }
        if self.states.iter().all(BaseState::usable) {
            if self.flags.contains(&StateFlag::NotResponding) {
                return Some((ConditionCode::DeviceUnresponsive, Severity::Warning));
            }
            return None;
        }
        Some((ConditionCode::DeviceError, Severity::Info))
    }

    /// Taken out of service on purpose: drained or draining, `maint`, or in a maintenance
    /// reservation (`$`).
    pub fn in_maintenance(&self) -> bool {
        self.flags.contains(&StateFlag::MaintenanceReservation)
            || self.states.iter().any(|s| {
                matches!(
                    s,
                    BaseState::Drained | BaseState::Draining | BaseState::Maintenance
                )
            })
    }

    /// Worst first: 0 fine, 1 info, 2 warning, 3 critical.
    fn rank(&self) -> u8 {
        match self.judgement() {
            None => 0,
            Some((_, Severity::Info)) => 1,
            Some((_, Severity::Warning)) => 2,
            Some((_, Severity::Critical)) => 3,
        }
    }

    /// E.g. `SLURM marks node node01 "drain*": drained; *: not responding, gets no new work`.
    pub fn describe(&self) -> String {
        let states: Vec<String> = self
            .states
            .iter()
            .map(|s| match s {
                BaseState::Other(name) => format!("{name} (a state this agent does not know)"),
                known => known.name().to_string(),
            })
            .collect();
        let mut text = format!(
            "SLURM marks node {} {:?}: {}",
            self.node,
            self.raw,
            states.join(" + ")
        );
        for f in &self.flags {
            text.push_str(&format!("; {}: {}", f.as_char(), f.explain()));
        }
        text
    }
}

/// Checks a SLURM node name before it becomes an argument: not empty, not an option, and
/// nothing `sinfo` would read as a list or a pattern.
pub fn check_node_name(node: &str) -> Result<(), String> {
    if node.is_empty() {
        return Err("expected a SLURM node name, found an empty string".into());
    }
    if node.starts_with('-') {
        return Err(format!(
            "expected a SLURM node name, found {node:?} (starts with '-', would be read as an option)"
        ));
    }
    if let Some(c) = node
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "expected a SLURM node name (letters, digits, '-', '_', '.'), found {node:?} with {c:?}"
        ));
    }
    Ok(())
}

/// Runs `sinfo -N -h -n NODE -o "%N %T"` under `deadline` and returns the node's state.
pub async fn node_state(
    sinfo: &Path,
    node: &str,
    deadline: Duration,
) -> Result<NodeState, HalError> {
    check_node_name(node).map_err(HalError::InvalidArgument)?;
    if !sinfo.exists() {
        return Err(HalError::Io(format!(
            "SLURM's sinfo not found at {}: install the SLURM client tools, set `sinfo` to its \
             path, or remove `slurm_node` from the config",
            sinfo.display()
        )));
    }
    let cmd = VendorCommand::new(sinfo, Vec::new(), deadline, MAX_SINFO_OUTPUT);
    let args: Vec<String> = ["-N", "-h", "-n", node, "-o", "%N %T"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = cmd.run(&args, None).await?;
    if out.verdict == Verdict::Problem {
        // sinfo exits 1 when it cannot reach slurmctld or the request is refused.
        return Err(HalError::Failed(format!(
            "{}: {}",
            cmd.display(&args),
            out.stderr_line()
                .unwrap_or_else(|| "exited with status 1".into())
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_sinfo(&text, node).map_err(|e| HalError::Protocol(format!("{}: {e}", cmd.display(&args))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(word: &str) -> NodeState {
        parse_state("n1", word).unwrap()
    }

    fn judged(word: &str) -> Option<(ConditionCode, Severity)> {
        state(word).judgement()
    }

    #[test]
    fn states_and_flags_parse() {
        let s = state("down*");
        assert_eq!(s.states, [BaseState::Down]);
        assert_eq!(s.flags, [StateFlag::NotResponding]);
        let s = state("MIXED+DRAIN-~");
        assert_eq!(s.states, [BaseState::Mixed, BaseState::Drained]);
        assert_eq!(
            s.flags,
            [StateFlag::PlannedByBackfill, StateFlag::PoweredOff]
        );
        assert_eq!(state("idle**").flags, [StateFlag::NotResponding]);
        assert_eq!(
            state("frobnicated").states,
            [BaseState::Other("frobnicated".into())]
        );
        for bad in ["", "*", "+idle", "idle+", "id le", "idle(x)"] {
            assert!(parse_state("n1", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_are_judged() {
        use ConditionCode::*;
        use Severity::*;
        for ok in [
            "idle",
            "alloc",
            "allocated",
            "mix",
            "mixed-",
            "comp",
            "resv",
            "plnd",
            "idle~",
        ] {
            assert_eq!(judged(ok), None, "{ok}");
        }
        for (word, want) in [
            ("down", (DeviceUnresponsive, Critical)),
            ("down*", (DeviceUnresponsive, Critical)),
            ("fail", (DeviceUnresponsive, Critical)),
            ("failing", (DeviceUnresponsive, Critical)),
            ("drain", (Maintenance, Info)),
            ("drained*", (Maintenance, Info)),
            ("drng", (Maintenance, Info)),
            ("draining", (Maintenance, Info)),
            ("idle+drain", (Maintenance, Info)),
            ("down+drain", (Maintenance, Info)),
            ("maint", (Maintenance, Info)),
            ("idle+maint", (Maintenance, Info)),
            ("idle$", (Maintenance, Info)),
            ("down$", (Maintenance, Info)),
            ("resv$", (Maintenance, Info)),
            ("idle*", (DeviceUnresponsive, Warning)),
            ("future", (DeviceError, Info)),
            ("unknown", (DeviceError, Info)),
            ("frobnicated", (DeviceError, Info)),
        ] {
            assert_eq!(judged(word), Some(want), "{word}");
        }
    }

    #[test]
    fn the_message_explains_the_flags() {
        let c = state("drain*")
            .condition("loihi-0", SystemTime::now())
            .unwrap();
        assert_eq!(c.subject, "loihi-0");
        assert_eq!(
            c.message,
            r#"SLURM marks node n1 "drain*": drained; *: not responding, gets no new work"#
        );
    }

    #[test]
    fn a_drain_or_reservation_is_maintenance_not_a_page() {
        for (word, names) in [
            ("drain", r#""drain": drained"#),
            ("maint", r#""maint": maint"#),
            ("idle$", r#""idle$": idle; $: in a maintenance reservation"#),
        ] {
            let c = state(word).condition("loihi-0", SystemTime::now()).unwrap();
            assert_eq!(c.code, ConditionCode::Maintenance, "{word}");
            assert_eq!(c.severity, Severity::Info, "{word}");
            assert!(c.message.contains(names), "{word}: {}", c.message);
            assert_eq!(c.severity.health(), crate::model::HealthState::Ok);
        }
        assert!(!state("idle").in_maintenance());
        assert!(!state("down*").in_maintenance());
    }

    #[test]
    fn the_worst_partition_line_wins() {
        let out = "n2 down\nn1 idle\n\nn1 drained\nn1 mixed\n";
        let s = parse_sinfo(out, "n1").unwrap();
        assert_eq!(s.raw, "drained");
        let s = parse_sinfo("n1 drained\nn1 idle*\n", "n1").unwrap();
        assert_eq!(s.raw, "idle*", "a warning outranks maintenance (info)");
        assert!(parse_sinfo(out, "n3")
            .unwrap_err()
            .contains("does not know"));
        assert!(parse_sinfo("", "n1").is_err());
        assert!(parse_sinfo("n1 idle extra", "n1")
            .unwrap_err()
            .contains("expected \"NODE STATE\""));
    }

    #[test]
    fn node_names_are_checked() {
        assert!(check_node_name("ncl-ext-og-01").is_ok());
        assert!(check_node_name("node01.cluster").is_ok());
        for bad in ["", "-n", "node[01-02]", "a b", "a,b"] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }
}
